-- Zun's `registry` on container create (microversion 1.31): the private registry the
-- container's image is pulled with, recorded on the container. The lifecycle reads the
-- registry's credentials when it builds the create command, so a registry deleted
-- later only matters if the image must be pulled again.
--
-- From here on registries.password holds the password sealed with AES-256-GCM under
-- the service's registry key (keys_dir/registry-secrets.key), never the plain text.
ALTER TABLE containers ADD COLUMN registry_id TEXT;
