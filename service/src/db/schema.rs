//! Table definitions, mirrored by `migrations/sqlite` and `migrations/postgres`.

diesel::table! {
    projects (id) {
        id -> Text,
        name -> Text,
        domain_id -> Text,
        description -> Text,
        enabled -> Bool,
        created_at -> Timestamp,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        name -> Text,
        domain_id -> Text,
        password_hash -> Text,
        enabled -> Bool,
        default_project_id -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    role_assignments (user_id, project_id, role) {
        user_id -> Text,
        project_id -> Text,
        role -> Text,
    }
}

diesel::table! {
    instances (id) {
        id -> Text,
        project_id -> Text,
        name -> Text,
        provider -> Text,
        status -> Text,
        status_reason -> Nullable<Text>,
        address -> Text,
        availability_zone -> Text,
        cpus -> Double,
        memory_mib -> BigInt,
        disk_gb -> BigInt,
        agent_connected -> Bool,
        agent_seen_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        cpu_used -> Double,
        memory_used_mib -> BigInt,
        disk_used_gb -> BigInt,
        container_count -> BigInt,
    }
}

diesel::table! {
    containers (id) {
        id -> Text,
        project_id -> Text,
        user_id -> Text,
        name -> Text,
        image -> Text,
        command -> Text,
        entrypoint -> Nullable<Text>,
        status -> Text,
        status_reason -> Nullable<Text>,
        status_detail -> Nullable<Text>,
        task_state -> Nullable<Text>,
        cpu -> Double,
        memory_mib -> BigInt,
        environment -> Text,
        labels -> Text,
        requested_ports -> Text,
        workdir -> Nullable<Text>,
        hostname -> Nullable<Text>,
        restart_policy -> Text,
        restart_max_retries -> BigInt,
        interactive -> Bool,
        tty -> Bool,
        auto_remove -> Bool,
        run_requested -> Bool,
        instance_id -> Nullable<Text>,
        runtime_id -> Nullable<Text>,
        started_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        disk_gb -> BigInt,
        exit_code -> Nullable<BigInt>,
        finished_at -> Nullable<Timestamp>,
        stdin_once -> Bool,
        run_user -> Nullable<Text>,
        docker_config -> Nullable<Text>,
        privileges -> Nullable<Text>,
        registry_id -> Nullable<Text>,
    }
}

diesel::table! {
    container_ports (instance_id, protocol, host_port) {
        instance_id -> Text,
        protocol -> Text,
        host_port -> Integer,
        container_id -> Text,
        container_port -> Integer,
    }
}

diesel::table! {
    container_actions (id) {
        id -> Text,
        container_id -> Text,
        project_id -> Text,
        user_id -> Text,
        action -> Text,
        start_time -> Timestamp,
        finish_time -> Nullable<Timestamp>,
        result -> Nullable<Text>,
        message -> Nullable<Text>,
    }
}

diesel::joinable!(container_ports -> containers (container_id));
diesel::joinable!(containers -> instances (instance_id));
diesel::joinable!(role_assignments -> projects (project_id));
diesel::joinable!(role_assignments -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    projects,
    users,
    role_assignments,
    instances,
    containers,
    container_ports,
    container_actions,
);

diesel::table! {
    quotas (project_id, resource) {
        project_id -> Text,
        resource -> Text,
        hard_limit -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    quota_classes (class_name, resource) {
        class_name -> Text,
        resource -> Text,
        hard_limit -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    enrollment_tokens (token_sha256) {
        token_sha256 -> Text,
        instance_id -> Text,
        expires_at -> Timestamp,
        used_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    revoked_instances (instance_id) {
        instance_id -> Text,
        revoked_at -> Timestamp,
    }
}

diesel::table! {
    docker_credentials (fingerprint) {
        fingerprint -> Text,
        user_id -> Text,
        user_name -> Text,
        project_id -> Text,
        project_name -> Text,
        roles -> Text,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    capsules (id) {
        id -> Text,
        project_id -> Text,
        user_id -> Text,
        name -> Text,
        template -> Text,
        spec -> Text,
        previous_spec -> Nullable<Text>,
        generation -> BigInt,
        status -> Text,
        status_reason -> Nullable<Text>,
        instance_id -> Nullable<Text>,
        cpu -> Double,
        memory_mib -> BigInt,
        pod_status -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    capsule_ports (instance_id, protocol, host_port) {
        instance_id -> Text,
        protocol -> Text,
        host_port -> Integer,
        capsule_id -> Text,
        container_port -> Integer,
    }
}

diesel::joinable!(capsule_ports -> capsules (capsule_id));
diesel::allow_tables_to_appear_in_same_query!(capsules, capsule_ports, instances);

diesel::table! {
    container_action_events (action_id, event) {
        action_id -> Text,
        event -> Text,
        start_time -> Timestamp,
        finish_time -> Nullable<Timestamp>,
        result -> Nullable<Text>,
        traceback -> Nullable<Text>,
    }
}

diesel::table! {
    registries (id) {
        id -> Text,
        project_id -> Text,
        user_id -> Text,
        name -> Text,
        domain -> Text,
        username -> Nullable<Text>,
        password -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}
