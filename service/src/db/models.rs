//! Rows as stored. These never derive `Serialize`: the API converts them to its own views.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::schema::*;

/// A project (tenant).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = projects)]
pub struct ProjectRow {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: String,
    pub enabled: bool,
    pub created_at: NaiveDateTime,
}

/// A user of the embedded identity service.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub password_hash: String,
    pub enabled: bool,
    pub default_project_id: Option<String>,
    pub created_at: NaiveDateTime,
}

/// A role a user holds in a project.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = role_assignments)]
pub struct RoleAssignmentRow {
    pub user_id: String,
    pub project_id: String,
    pub role: String,
}

/// A machine owned by one project, with an agent on it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = instances)]
pub struct InstanceRow {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub provider: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub address: String,
    pub availability_zone: String,
    pub cpus: f64,
    pub memory_mib: i64,
    pub disk_gb: i64,
    pub agent_connected: bool,
    pub agent_seen_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// vCPUs of the containers placed on it. This and the three counters below are kept
    /// by database triggers on `containers` (insert, resize, move, delete): insert a new
    /// instance with them at 0 and never write them from the code.
    pub cpu_used: f64,
    /// MiB of memory of the containers placed on it (trigger-kept).
    pub memory_used_mib: i64,
    /// GB of disk of the containers placed on it (trigger-kept).
    pub disk_used_gb: i64,
    /// How many containers are placed on it (trigger-kept).
    pub container_count: i64,
}

/// A container: what was asked for, where it is placed and what was last observed.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = containers)]
pub struct ContainerRow {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: String,
    pub image: String,
    /// JSON list of strings.
    pub command: String,
    /// JSON list of strings, or none to keep the image's.
    pub entrypoint: Option<String>,
    pub status: String,
    pub status_reason: Option<String>,
    pub status_detail: Option<String>,
    pub task_state: Option<String>,
    pub cpu: f64,
    pub memory_mib: i64,
    /// JSON object of strings.
    pub environment: String,
    /// JSON object of strings.
    pub labels: String,
    /// JSON list of `berth_proto::PortBinding` as asked for (host port optional).
    pub requested_ports: String,
    pub workdir: Option<String>,
    pub hostname: Option<String>,
    pub restart_policy: String,
    pub restart_max_retries: i64,
    pub interactive: bool,
    pub tty: bool,
    pub auto_remove: bool,
    /// Start the container once it is made (`run=true`).
    pub run_requested: bool,
    pub instance_id: Option<String>,
    pub runtime_id: Option<String>,
    pub started_at: Option<NaiveDateTime>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
    /// Exit code of the last run, once it has exited.
    pub exit_code: Option<i64>,
    /// When the last run ended.
    pub finished_at: Option<NaiveDateTime>,
    /// Close stdin when the first attached client detaches (Docker `StdinOnce`).
    pub stdin_once: bool,
    /// The user the command runs as (Docker `User`); none: the image's.
    pub run_user: Option<String>,
    /// JSON of the Docker create fields Berth does not model, echoed by inspect.
    pub docker_config: Option<String>,
    /// JSON `berth_proto::Privileges` granted by policy at create; none: no host access.
    pub privileges: Option<String>,
    /// Zun's `registry`: the uuid of the project's registry the image is pulled with.
    pub registry_id: Option<String>,
}

/// A host port published by a container on its instance.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = container_ports)]
pub struct PortRow {
    pub instance_id: String,
    pub protocol: String,
    pub host_port: i32,
    pub container_id: String,
    pub container_port: i32,
}

/// One mutating request on a container.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = container_actions)]
pub struct ActionRow {
    pub id: String,
    pub container_id: String,
    pub project_id: String,
    pub user_id: String,
    pub action: String,
    pub start_time: NaiveDateTime,
    pub finish_time: Option<NaiveDateTime>,
    pub result: Option<String>,
    pub message: Option<String>,
}

/// A capsule (pod): its template, the spec given to its instance's agent and the
/// status the agent last reported (JSON texts).
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = capsules)]
pub struct CapsuleRow {
    pub id: String,
    pub project_id: String,
    pub user_id: String,
    pub name: String,
    /// The template as submitted (JSON).
    pub template: String,
    /// `berth_proto::PodSpec` JSON, the desired state.
    pub spec: String,
    /// The spec before the last update (JSON).
    pub previous_spec: Option<String>,
    pub generation: i64,
    pub status: String,
    pub status_reason: Option<String>,
    pub instance_id: Option<String>,
    /// Summed vCPUs (trigger-counted on the instance).
    pub cpu: f64,
    /// Summed MiB (trigger-counted on the instance).
    pub memory_mib: i64,
    /// `berth_proto::PodStatus` JSON, last reported.
    pub pod_status: Option<String>,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A host port a capsule publishes on its instance.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = capsule_ports)]
pub struct CapsulePortRow {
    pub instance_id: String,
    pub protocol: String,
    pub host_port: i32,
    pub capsule_id: String,
    pub container_port: i32,
}
