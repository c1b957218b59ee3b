-- Which relay each instance's agent is connected to right now, and how far its event
-- stream has been applied. Several relays may serve agents; every service replica
-- connects to all of them and sends an instance's commands through the relay this
-- row names. `relay_url` is NULL while the agent is connected nowhere (as far as the
-- service knows). `session` is the agent process's session id and `last_seq` the
-- highest event of that session already applied: a re-sent event at or below it is
-- acknowledged and dropped, so at-least-once delivery applies each event once.
CREATE TABLE agent_links (
    instance_id TEXT PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    relay_url TEXT,
    session TEXT,
    last_seq BIGINT NOT NULL DEFAULT 0,
    connected_at TIMESTAMP,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX agent_links_relay ON agent_links (relay_url);
