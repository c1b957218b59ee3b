DROP INDEX containers_instance_usage;
ALTER TABLE containers DROP COLUMN disk_gb;
-- Of several instances being made for one project, all but the oldest go to error,
-- so the index of one per project can be made again.
UPDATE instances SET status = 'error',
    status_reason = 'Given up when the placement migration was reverted; create the container again'
WHERE status = 'building' AND EXISTS (
    SELECT 1 FROM instances older
    WHERE older.project_id = instances.project_id AND older.status = 'building'
      AND (older.created_at < instances.created_at
           OR (older.created_at = instances.created_at AND older.id < instances.id))
);
CREATE UNIQUE INDEX instances_one_building_per_project ON instances (project_id)
    WHERE status = 'building';
