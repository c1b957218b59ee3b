-- Quotas (Zun's DbQuotaDriver layout): a project's own limits, and limits of quota
-- classes (the class `default` stands in for projects without their own).
-- The limit of a resource is found in: the project's row, else the `default` class
-- row, else the built-in default; -1 means unlimited.
CREATE TABLE quotas (
    project_id TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (project_id, resource)
);

CREATE TABLE quota_classes (
    class_name TEXT NOT NULL,
    resource TEXT NOT NULL,
    hard_limit BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    PRIMARY KEY (class_name, resource)
);
