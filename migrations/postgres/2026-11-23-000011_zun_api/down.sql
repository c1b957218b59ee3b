DROP TRIGGER container_actions_event_update ON container_actions;
DROP TRIGGER container_actions_event_insert ON container_actions;
DROP FUNCTION container_actions_track_event();
DROP TABLE registries;
DROP TABLE container_action_events;
