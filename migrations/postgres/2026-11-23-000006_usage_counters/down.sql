DROP TRIGGER containers_usage_delete ON containers;
DROP TRIGGER containers_usage_update ON containers;
DROP TRIGGER containers_usage_insert ON containers;
DROP FUNCTION containers_track_instance_usage();
CREATE INDEX containers_instance_usage
    ON containers (instance_id, cpu, memory_mib, disk_gb);
ALTER TABLE instances DROP COLUMN container_count;
ALTER TABLE instances DROP COLUMN disk_used_gb;
ALTER TABLE instances DROP COLUMN memory_used_mib;
ALTER TABLE instances DROP COLUMN cpu_used;
