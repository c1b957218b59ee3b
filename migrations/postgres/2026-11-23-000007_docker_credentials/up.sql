-- Client certificates of the Docker endpoint, each registered to a user and project.
-- The key is the SHA-256 of the certificate's DER, which is what a TLS handshake
-- presents; deleting the row revokes the certificate at once. The user and project
-- names and the roles are a snapshot taken at issue: with the embedded identity they
-- are re-read on every call, with an external Keystone (which Berth cannot ask about a
-- user without a token) the snapshot is what the certificate carries.
CREATE TABLE docker_credentials (
    fingerprint TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    project_id TEXT NOT NULL,
    project_name TEXT NOT NULL,
    roles TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX docker_credentials_project ON docker_credentials (project_id);
