DROP TABLE docker_credentials;
