-- Capsules (pods): several containers placed on one instance as a unit.
--
-- spec: the PodSpec JSON the agent is given (berth_proto::PodSpec), generation
--   included; previous_spec: the spec before the last update, for the record (the
--   agent rolls back on its own); template: the template as submitted (Zun's view
--   shows its labels and annotations).
-- cpu, memory_mib: the pod's sums as Zun counts them (Σ app containers, max with each
--   init container); placed on instance_id like a container, they count on the
--   instance's usage counters (triggers below, as for containers in 000006).
-- pod_status: the PodStatus JSON the agent last reported.
CREATE TABLE capsules (
    id TEXT PRIMARY KEY NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    template TEXT NOT NULL,
    spec TEXT NOT NULL,
    previous_spec TEXT,
    generation BIGINT NOT NULL DEFAULT 1,
    status TEXT NOT NULL,
    status_reason TEXT,
    instance_id TEXT,
    cpu DOUBLE PRECISION NOT NULL DEFAULT 0,
    memory_mib BIGINT NOT NULL DEFAULT 0,
    pod_status TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    -- Only on an instance of its own project (as containers).
    FOREIGN KEY (instance_id, project_id) REFERENCES instances (id, project_id)
);
CREATE INDEX capsules_project ON capsules (project_id, created_at);
CREATE INDEX capsules_instance ON capsules (instance_id);

-- Host ports a capsule publishes (held by its infra container). Placement reads them
-- with the containers' ports, so a port is never published twice on one instance.
CREATE TABLE capsule_ports (
    instance_id TEXT NOT NULL REFERENCES instances (id),
    protocol TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    capsule_id TEXT NOT NULL REFERENCES capsules (id) ON DELETE CASCADE,
    container_port INTEGER NOT NULL,
    PRIMARY KEY (instance_id, protocol, host_port)
);
CREATE INDEX capsule_ports_capsule ON capsule_ports (capsule_id);

-- A capsule on an instance counts as one placed unit with its summed cpu and memory.
CREATE FUNCTION capsules_track_instance_usage() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.instance_id IS NOT NULL THEN
        UPDATE instances SET
            cpu_used = CASE WHEN container_count <= 1 THEN 0 ELSE cpu_used - OLD.cpu END,
            memory_used_mib = memory_used_mib - OLD.memory_mib,
            container_count = container_count - 1
        WHERE id = OLD.instance_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.instance_id IS NOT NULL THEN
        UPDATE instances SET
            cpu_used = cpu_used + NEW.cpu,
            memory_used_mib = memory_used_mib + NEW.memory_mib,
            container_count = container_count + 1
        WHERE id = NEW.instance_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER capsules_usage_insert AFTER INSERT ON capsules
FOR EACH ROW EXECUTE FUNCTION capsules_track_instance_usage();

CREATE TRIGGER capsules_usage_update
AFTER UPDATE OF instance_id, cpu, memory_mib ON capsules
FOR EACH ROW WHEN (
    OLD.instance_id IS DISTINCT FROM NEW.instance_id
    OR OLD.cpu IS DISTINCT FROM NEW.cpu
    OR OLD.memory_mib IS DISTINCT FROM NEW.memory_mib
)
EXECUTE FUNCTION capsules_track_instance_usage();

CREATE TRIGGER capsules_usage_delete AFTER DELETE ON capsules
FOR EACH ROW EXECUTE FUNCTION capsules_track_instance_usage();
