-- One-time enrollment tokens: a new instance's agent trades one for its credential.
-- Only the SHA-256 of a token is stored, so a database dump cannot be used to enroll.
CREATE TABLE enrollment_tokens (
    token_sha256 TEXT PRIMARY KEY,
    instance_id TEXT NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    expires_at TIMESTAMP NOT NULL,
    used_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX enrollment_tokens_instance ON enrollment_tokens (instance_id);

-- Instances whose agent credentials no longer work (the instance was deleted or
-- released). No foreign key: the row must outlive the instance's own row, since relays
-- learn the list from here on every service connection.
CREATE TABLE revoked_instances (
    instance_id TEXT PRIMARY KEY,
    revoked_at TIMESTAMP NOT NULL
);
