-- The rest of the Zun API (microversion 1.40).
--
-- container_action_events: Zun's action events. Each action gets one event, the
-- lifecycle's work on it, named as Zun names its compute event
-- (compute__do_container_<action>); triggers keep it in step with the action row
-- (started with it, finished with its result; the error message is the traceback,
-- which only admins see), so every code path that records an action records the event
-- in the same transaction.
-- registries: private registry credentials per project (Zun ≥ 1.30). The password is
-- stored sealed by the service (AES-256-GCM under its registry key; see 000012) and is
-- never returned by the API.
CREATE TABLE container_action_events (
    action_id TEXT NOT NULL REFERENCES container_actions (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    start_time TIMESTAMP NOT NULL,
    finish_time TIMESTAMP,
    result TEXT,
    traceback TEXT,
    PRIMARY KEY (action_id, event)
);

INSERT INTO container_action_events (action_id, event, start_time, finish_time, result, traceback)
SELECT id, 'compute__do_container_' || action, start_time, finish_time, result,
       CASE WHEN result = 'Error' THEN message END
FROM container_actions;

CREATE TABLE registries (
    id TEXT PRIMARY KEY NOT NULL,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    domain TEXT NOT NULL,
    username TEXT,
    password TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX registries_project ON registries (project_id);

CREATE FUNCTION container_actions_track_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO container_action_events (action_id, event, start_time, finish_time, result, traceback)
        VALUES (NEW.id, 'compute__do_container_' || NEW.action, NEW.start_time, NEW.finish_time,
                NEW.result, CASE WHEN NEW.result = 'Error' THEN NEW.message END);
    ELSE
        UPDATE container_action_events SET
            finish_time = NEW.finish_time,
            result = NEW.result,
            traceback = CASE WHEN NEW.result = 'Error' THEN NEW.message END
        WHERE action_id = NEW.id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER container_actions_event_insert AFTER INSERT ON container_actions
FOR EACH ROW EXECUTE FUNCTION container_actions_track_event();

CREATE TRIGGER container_actions_event_update
AFTER UPDATE OF finish_time, result, message ON container_actions
FOR EACH ROW EXECUTE FUNCTION container_actions_track_event();
