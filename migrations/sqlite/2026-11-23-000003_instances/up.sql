-- Instances on demand and isolation between projects.

-- At most one instance is being made per project at a time: concurrent creates of the
-- same project wait for the same one instead of each starting a machine.
CREATE UNIQUE INDEX instances_one_building_per_project ON instances (project_id)
    WHERE status = 'building';

-- A container is placed only on an instance of its own project. Enforced by the
-- database so that no code path (not only the scheduler) can break it. SQLite cannot
-- add a constraint to an existing table, so triggers do what PostgreSQL's composite
-- foreign key does.
CREATE TRIGGER containers_instance_of_own_project_insert
BEFORE INSERT ON containers
FOR EACH ROW WHEN NEW.instance_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM instances WHERE id = NEW.instance_id AND project_id = NEW.project_id
)
BEGIN
    SELECT RAISE(ABORT, 'containers_instance_of_own_project: a container may only be placed on an instance of its own project');
END;

CREATE TRIGGER containers_instance_of_own_project_update
BEFORE UPDATE OF instance_id, project_id ON containers
FOR EACH ROW WHEN NEW.instance_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM instances WHERE id = NEW.instance_id AND project_id = NEW.project_id
)
BEGIN
    SELECT RAISE(ABORT, 'containers_instance_of_own_project: a container may only be placed on an instance of its own project');
END;
