DROP TABLE container_actions;
DROP TABLE container_ports;
DROP TABLE containers;
DROP TABLE instances;
DROP TABLE role_assignments;
DROP TABLE users;
DROP TABLE projects;
