-- Instances on demand and isolation between projects.

-- At most one instance is being made per project at a time: concurrent creates of the
-- same project wait for the same one instead of each starting a machine.
CREATE UNIQUE INDEX instances_one_building_per_project ON instances (project_id)
    WHERE status = 'building';

-- A container is placed only on an instance of its own project. Enforced by the
-- database so that no code path (not only the scheduler) can break it.
ALTER TABLE instances ADD CONSTRAINT instances_id_project UNIQUE (id, project_id);
ALTER TABLE containers ADD CONSTRAINT containers_instance_of_own_project
    FOREIGN KEY (instance_id, project_id) REFERENCES instances (id, project_id);
