DROP TABLE capsule_ports;
DROP TABLE capsules;
