DROP TABLE revoked_instances;
DROP TABLE enrollment_tokens;
