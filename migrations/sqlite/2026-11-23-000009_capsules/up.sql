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
    instance_id TEXT REFERENCES instances (id),
    cpu DOUBLE NOT NULL DEFAULT 0,
    memory_mib BIGINT NOT NULL DEFAULT 0,
    pod_status TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX capsules_project ON capsules (project_id, created_at);
CREATE INDEX capsules_instance ON capsules (instance_id);

-- Only on an instance of its own project (as containers, 000003: PostgreSQL has a
-- composite foreign key, SQLite these triggers).
CREATE TRIGGER capsules_instance_of_own_project_insert
BEFORE INSERT ON capsules
FOR EACH ROW WHEN NEW.instance_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM instances WHERE id = NEW.instance_id AND project_id = NEW.project_id
)
BEGIN
    SELECT RAISE(ABORT, 'capsules_instance_of_own_project: a capsule may only be placed on an instance of its own project');
END;

CREATE TRIGGER capsules_instance_of_own_project_update
BEFORE UPDATE OF instance_id, project_id ON capsules
FOR EACH ROW WHEN NEW.instance_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM instances WHERE id = NEW.instance_id AND project_id = NEW.project_id
)
BEGIN
    SELECT RAISE(ABORT, 'capsules_instance_of_own_project: a capsule may only be placed on an instance of its own project');
END;

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
CREATE TRIGGER capsules_usage_insert AFTER INSERT ON capsules
FOR EACH ROW WHEN NEW.instance_id IS NOT NULL
BEGIN
    UPDATE instances SET
        cpu_used = cpu_used + NEW.cpu,
        memory_used_mib = memory_used_mib + NEW.memory_mib,
        container_count = container_count + 1
    WHERE id = NEW.instance_id;
END;

CREATE TRIGGER capsules_usage_update
AFTER UPDATE OF instance_id, cpu, memory_mib ON capsules
FOR EACH ROW WHEN OLD.instance_id IS NOT NEW.instance_id
    OR OLD.cpu IS NOT NEW.cpu
    OR OLD.memory_mib IS NOT NEW.memory_mib
BEGIN
    UPDATE instances SET
        cpu_used = CASE WHEN container_count <= 1 THEN 0 ELSE cpu_used - OLD.cpu END,
        memory_used_mib = memory_used_mib - OLD.memory_mib,
        container_count = container_count - 1
    WHERE OLD.instance_id IS NOT NULL AND id = OLD.instance_id;
    UPDATE instances SET
        cpu_used = cpu_used + NEW.cpu,
        memory_used_mib = memory_used_mib + NEW.memory_mib,
        container_count = container_count + 1
    WHERE NEW.instance_id IS NOT NULL AND id = NEW.instance_id;
END;

CREATE TRIGGER capsules_usage_delete AFTER DELETE ON capsules
FOR EACH ROW WHEN OLD.instance_id IS NOT NULL
BEGIN
    UPDATE instances SET
        cpu_used = CASE WHEN container_count <= 1 THEN 0 ELSE cpu_used - OLD.cpu END,
        memory_used_mib = memory_used_mib - OLD.memory_mib,
        container_count = container_count - 1
    WHERE id = OLD.instance_id;
END;
