-- What a container's runtime reports and what the Docker endpoint needs to answer
-- `docker inspect` with what `docker create` was given.
--
-- exit_code, finished_at: the last run's end, as the agent observed it.
-- stdin_once: close the container's stdin when the first attached client detaches.
-- run_user: the user the command runs as (Docker `User`), none for the image's.
-- docker_config: JSON of the Config/HostConfig fields Berth does not model (the image
--   as typed, ExposedPorts, AttachStd*, StopSignal, …), echoed back by inspect.
-- privileges: JSON of the host access policy granted at create (privileged, host
--   namespaces, mounts, devices, capabilities, security options); none for almost
--   every container.
ALTER TABLE containers ADD COLUMN exit_code BIGINT;
ALTER TABLE containers ADD COLUMN finished_at TIMESTAMP;
ALTER TABLE containers ADD COLUMN stdin_once BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE containers ADD COLUMN run_user TEXT;
ALTER TABLE containers ADD COLUMN docker_config TEXT;
ALTER TABLE containers ADD COLUMN privileges TEXT;
