ALTER TABLE containers DROP COLUMN registry_id;
