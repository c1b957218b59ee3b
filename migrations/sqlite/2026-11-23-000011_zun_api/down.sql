DROP TRIGGER container_actions_event_delete;
DROP TRIGGER container_actions_event_update;
DROP TRIGGER container_actions_event_insert;
DROP TABLE registries;
DROP TABLE container_action_events;
