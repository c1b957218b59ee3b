ALTER TABLE containers DROP COLUMN privileges;
ALTER TABLE containers DROP COLUMN docker_config;
ALTER TABLE containers DROP COLUMN run_user;
ALTER TABLE containers DROP COLUMN stdin_once;
ALTER TABLE containers DROP COLUMN finished_at;
ALTER TABLE containers DROP COLUMN exit_code;
