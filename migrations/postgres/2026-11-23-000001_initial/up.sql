-- Identity: projects, users and their roles in projects (embedded Keystone subset).
CREATE TABLE projects (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    domain_id TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    enabled BOOLEAN NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    domain_id TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    enabled BOOLEAN NOT NULL,
    default_project_id TEXT,
    created_at TIMESTAMP NOT NULL
);

CREATE TABLE role_assignments (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    PRIMARY KEY (user_id, project_id, role)
);

-- An instance is a machine owned by exactly one project, with an agent on it.
CREATE TABLE instances (
    id TEXT PRIMARY KEY NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects (id),
    name TEXT NOT NULL,
    provider TEXT NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    address TEXT NOT NULL,
    availability_zone TEXT NOT NULL,
    cpus DOUBLE PRECISION NOT NULL,
    memory_mib BIGINT NOT NULL,
    disk_gb BIGINT NOT NULL,
    agent_connected BOOLEAN NOT NULL,
    agent_seen_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX instances_project ON instances (project_id);

CREATE TABLE containers (
    id TEXT PRIMARY KEY NOT NULL,
    project_id TEXT NOT NULL REFERENCES projects (id),
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    image TEXT NOT NULL,
    command TEXT NOT NULL,
    entrypoint TEXT,
    status TEXT NOT NULL,
    status_reason TEXT,
    status_detail TEXT,
    task_state TEXT,
    cpu DOUBLE PRECISION NOT NULL,
    memory_mib BIGINT NOT NULL,
    environment TEXT NOT NULL,
    labels TEXT NOT NULL,
    -- JSON list of the ports asked for ({host_port?, container_port, protocol}).
    requested_ports TEXT NOT NULL,
    workdir TEXT,
    hostname TEXT,
    restart_policy TEXT NOT NULL,
    restart_max_retries BIGINT NOT NULL,
    interactive BOOLEAN NOT NULL,
    tty BOOLEAN NOT NULL,
    auto_remove BOOLEAN NOT NULL,
    run_requested BOOLEAN NOT NULL,
    instance_id TEXT REFERENCES instances (id),
    runtime_id TEXT,
    started_at TIMESTAMP,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX containers_project ON containers (project_id);
CREATE INDEX containers_instance ON containers (instance_id);

-- A host port is published by at most one container per instance and protocol.
CREATE TABLE container_ports (
    instance_id TEXT NOT NULL REFERENCES instances (id),
    protocol TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    container_port INTEGER NOT NULL,
    PRIMARY KEY (instance_id, protocol, host_port)
);
CREATE INDEX container_ports_container ON container_ports (container_id);

-- Every mutating request is an action (Zun's container_actions).
CREATE TABLE container_actions (
    id TEXT PRIMARY KEY NOT NULL,
    container_id TEXT NOT NULL REFERENCES containers (id) ON DELETE CASCADE,
    project_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    action TEXT NOT NULL,
    start_time TIMESTAMP NOT NULL,
    finish_time TIMESTAMP,
    result TEXT,
    message TEXT
);
CREATE INDEX container_actions_container ON container_actions (container_id);
