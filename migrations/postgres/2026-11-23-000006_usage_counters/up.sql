-- Usage counters on the instance row.
--
-- Placement reads, on every create, what each of the project's instances already
-- holds. Summing the containers placed on each instance made that read linear in the
-- project's containers; the counters make it one row per instance. A container row
-- placed on an instance uses its cpu, memory and disk whatever its status, until the
-- row is deleted or moved off the instance (see the scheduler). Triggers keep the
-- counters, so that every code path that inserts, resizes, moves or deletes a
-- container keeps them right, in the same transaction as the container row.
ALTER TABLE instances ADD COLUMN cpu_used DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN memory_used_mib BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN disk_used_gb BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN container_count BIGINT NOT NULL DEFAULT 0;

UPDATE instances SET
    cpu_used = COALESCE((SELECT SUM(c.cpu) FROM containers c WHERE c.instance_id = instances.id), 0),
    memory_used_mib = COALESCE((SELECT SUM(c.memory_mib) FROM containers c WHERE c.instance_id = instances.id), 0),
    disk_used_gb = COALESCE((SELECT SUM(c.disk_gb) FROM containers c WHERE c.instance_id = instances.id), 0),
    container_count = (SELECT COUNT(*) FROM containers c WHERE c.instance_id = instances.id);

-- The summing index is no longer read by placement.
DROP INDEX containers_instance_usage;

CREATE FUNCTION containers_track_instance_usage() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.instance_id IS NOT NULL THEN
        -- The last container off an instance leaves exactly 0 cpu: repeated float
        -- additions and subtractions would otherwise leave a residue.
        UPDATE instances SET
            cpu_used = CASE WHEN container_count <= 1 THEN 0 ELSE cpu_used - OLD.cpu END,
            memory_used_mib = memory_used_mib - OLD.memory_mib,
            disk_used_gb = disk_used_gb - OLD.disk_gb,
            container_count = container_count - 1
        WHERE id = OLD.instance_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.instance_id IS NOT NULL THEN
        UPDATE instances SET
            cpu_used = cpu_used + NEW.cpu,
            memory_used_mib = memory_used_mib + NEW.memory_mib,
            disk_used_gb = disk_used_gb + NEW.disk_gb,
            container_count = container_count + 1
        WHERE id = NEW.instance_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER containers_usage_insert AFTER INSERT ON containers
FOR EACH ROW EXECUTE FUNCTION containers_track_instance_usage();

CREATE TRIGGER containers_usage_update
AFTER UPDATE OF instance_id, cpu, memory_mib, disk_gb ON containers
FOR EACH ROW WHEN (
    OLD.instance_id IS DISTINCT FROM NEW.instance_id
    OR OLD.cpu IS DISTINCT FROM NEW.cpu
    OR OLD.memory_mib IS DISTINCT FROM NEW.memory_mib
    OR OLD.disk_gb IS DISTINCT FROM NEW.disk_gb
)
EXECUTE FUNCTION containers_track_instance_usage();

CREATE TRIGGER containers_usage_delete AFTER DELETE ON containers
FOR EACH ROW EXECUTE FUNCTION containers_track_instance_usage();
