DROP TABLE capsule_ports;
DROP TABLE capsules;
DROP FUNCTION capsules_track_instance_usage();
