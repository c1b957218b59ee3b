-- Placement by capacity.

-- A project may have several instances being made at once: a container that fits none
-- of the project's instances (active or being made) gets a new one, bounded by the
-- project's `instances` quota. Placement runs under the project's lock, so concurrent
-- creates never start two machines where one would do.
DROP INDEX instances_one_building_per_project;

-- The disk a container asks for (Zun's `disk`, GB; 0: none asked), reserved on its
-- instance against the instance's disk_gb.
ALTER TABLE containers ADD COLUMN disk_gb BIGINT NOT NULL DEFAULT 0;

-- Placement sums what each of a project's instances holds on every create: this index
-- covers those sums (no table lookups).
CREATE INDEX containers_instance_usage
    ON containers (instance_id, cpu, memory_mib, disk_gb);
