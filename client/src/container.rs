//! Container wire types (the Zun view and request bodies) and the small domain types
//! that parse user input before it is sent: [`PortSpec`], [`RestartPolicy`],
//! [`MemoryMib`] and [`KeyValue`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// A container as the API shows it (GET show, list items, create and update responses).
///
/// Fields the server leaves out get their default; fields this client does not know are
/// kept in `extra`, so a newer server never breaks an older client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerView {
    /// The container's id.
    pub uuid: Uuid,
    /// Name; not unique, but usable in place of the uuid.
    #[serde(default)]
    pub name: Option<String>,
    /// Image reference, e.g. `nginx:1.27`.
    #[serde(default)]
    pub image: Option<String>,
    /// Command (argv); empty means the image's default.
    #[serde(default, deserialize_with = "null_as_default")]
    pub command: Vec<String>,
    /// Lifecycle status.
    #[serde(default)]
    pub status: ContainerStatus,
    /// Why the container is in its status (set on errors).
    #[serde(default)]
    pub status_reason: Option<String>,
    /// Runtime detail, e.g. `Up 5 minutes`.
    #[serde(default)]
    pub status_detail: Option<String>,
    /// The operation in progress, e.g. `image_pulling`; null when idle.
    #[serde(default)]
    pub task_state: Option<String>,
    /// CPU share (1.0 = one core).
    #[serde(default)]
    pub cpu: Option<f64>,
    /// Memory limit in MiB, as a string (`"512"`), as Zun sends it.
    #[serde(default)]
    pub memory: Option<String>,
    /// Environment variables.
    #[serde(default, deserialize_with = "null_as_default")]
    pub environment: BTreeMap<String, String>,
    /// Labels.
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// Container-side ports.
    #[serde(default, deserialize_with = "null_as_default")]
    pub ports: Vec<u16>,
    /// Published ports with the host side the service assigned.
    #[serde(default, deserialize_with = "null_as_default")]
    pub published_ports: Vec<PublishedPort>,
    /// Network addresses (`{network: [{addr, version, ...}]}`), kept as sent.
    #[serde(default)]
    pub addresses: Value,
    /// Restart policy.
    #[serde(default)]
    pub restart_policy: Option<RestartPolicy>,
    /// Whether stdin is kept open.
    #[serde(default)]
    pub interactive: Option<bool>,
    /// Whether a TTY is allocated.
    #[serde(default)]
    pub tty: Option<bool>,
    /// Whether the container is removed when it exits.
    #[serde(default)]
    pub auto_remove: Option<bool>,
    /// The host running the container; shown to administrators only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Owning project.
    #[serde(default)]
    pub project_id: Option<String>,
    /// Creating user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Creation time as the server formats it.
    #[serde(default)]
    pub created_at: Option<String>,
    /// Last update time as the server formats it.
    #[serde(default)]
    pub updated_at: Option<String>,
    /// `self` and `bookmark` links.
    #[serde(default)]
    pub links: Value,
    /// Fields this client does not know about.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ContainerView {
    /// The published ports in the seed's short form, e.g. `127.0.0.1:8080` (UDP ports get a
    /// `/udp` suffix; a port without an assigned host side shows as `80/tcp`).
    pub fn port_summary(&self) -> Vec<String> {
        if self.published_ports.is_empty() {
            return self.ports.iter().map(u16::to_string).collect();
        }
        self.published_ports
            .iter()
            .map(PublishedPort::to_string)
            .collect()
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Lifecycle status of a container. Statuses this client does not know are kept verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ContainerStatus {
    /// Accepted; being scheduled, pulled or created.
    Creating,
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited or stopped.
    Stopped,
    /// Paused.
    Paused,
    /// Being restarted.
    Restarting,
    /// Being rebuilt.
    Rebuilding,
    /// Being deleted.
    Deleting,
    /// Deleted (auto-remove containers linger briefly in this state).
    Deleted,
    /// Failed; `status_reason` says why.
    Error,
    /// State unknown.
    #[default]
    Unknown,
    /// Dead.
    Dead,
    /// Any other status string.
    Other(String),
}

impl ContainerStatus {
    /// The status as the API spells it.
    pub fn as_str(&self) -> &str {
        match self {
            ContainerStatus::Creating => "Creating",
            ContainerStatus::Created => "Created",
            ContainerStatus::Running => "Running",
            ContainerStatus::Stopped => "Stopped",
            ContainerStatus::Paused => "Paused",
            ContainerStatus::Restarting => "Restarting",
            ContainerStatus::Rebuilding => "Rebuilding",
            ContainerStatus::Deleting => "Deleting",
            ContainerStatus::Deleted => "Deleted",
            ContainerStatus::Error => "Error",
            ContainerStatus::Unknown => "Unknown",
            ContainerStatus::Dead => "Dead",
            ContainerStatus::Other(other) => other,
        }
    }
}

impl From<String> for ContainerStatus {
    fn from(value: String) -> Self {
        match value.to_ascii_lowercase().as_str() {
            "creating" => ContainerStatus::Creating,
            "created" => ContainerStatus::Created,
            "running" => ContainerStatus::Running,
            "stopped" => ContainerStatus::Stopped,
            "paused" => ContainerStatus::Paused,
            "restarting" => ContainerStatus::Restarting,
            "rebuilding" => ContainerStatus::Rebuilding,
            "deleting" => ContainerStatus::Deleting,
            "deleted" => ContainerStatus::Deleted,
            "error" => ContainerStatus::Error,
            "unknown" => ContainerStatus::Unknown,
            "dead" => ContainerStatus::Dead,
            _ => ContainerStatus::Other(value),
        }
    }
}

impl From<ContainerStatus> for String {
    fn from(value: ContainerStatus) -> Self {
        match value {
            ContainerStatus::Other(other) => other,
            known => known.as_str().to_string(),
        }
    }
}

impl fmt::Display for ContainerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Host address the port is bound on.
    #[serde(default)]
    pub host_ip: Option<String>,
    /// Host port; null until the service assigned one.
    #[serde(default)]
    pub host_port: Option<u16>,
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

fn default_protocol() -> String {
    "tcp".to_string()
}

impl fmt::Display for PublishedPort {
    /// `HOST_IP:HOST_PORT` (with `/udp` for UDP), or `CONTAINER_PORT/PROTOCOL` while no
    /// host port is assigned, as `docker ps` shows unpublished ports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_port {
            Some(host_port) => {
                let ip = self.host_ip.as_deref().unwrap_or("0.0.0.0");
                write!(f, "{ip}:{host_port}")?;
                if !self.protocol.eq_ignore_ascii_case("tcp") {
                    write!(f, "/{}", self.protocol)?;
                }
                Ok(())
            }
            None => write!(f, "{}/{}", self.container_port, self.protocol),
        }
    }
}

/// Body of `POST /containers`. Only the fields that are set are sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CreateContainer {
    /// Image reference (required).
    pub image: String,
    /// Command argv.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Container name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Environment variables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<BTreeMap<String, String>>,
    /// Labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// CPU share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory limit in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryMib>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Ports to publish, sent verbatim (`pub:8080:80`, `8081:81/udp`, `90`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub published_ports: Option<Vec<PortSpec>>,
    /// Restart policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Keep stdin open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    /// Remove the container when it exits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_remove: Option<bool>,
}

/// Body of `PATCH /containers/{id}`. Only the fields that are set are sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpdateContainer {
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New CPU share.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// New memory limit in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryMib>,
}

impl UpdateContainer {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.cpu.is_none() && self.memory.is_none()
    }
}

/// Query of `DELETE /containers/{id}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Delete whatever the state (administrators only in Zun).
    pub force: bool,
    /// Stop a running container first.
    pub stop: bool,
}

/// Query of `GET /containers/{id}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsOptions {
    /// Include stdout.
    pub stdout: bool,
    /// Include stderr.
    pub stderr: bool,
    /// Prefix lines with timestamps.
    pub timestamps: bool,
    /// Only the last N lines (`all` or a number).
    pub tail: Option<String>,
    /// Only lines since this time (epoch seconds or a timestamp).
    pub since: Option<String>,
}

/// Why a piece of user input was rejected before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(String);

impl InputError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        InputError(message.into())
    }
}

/// A port to publish: `pub:HOST:CONTAINER`, `HOST:CONTAINER` or `CONTAINER`, each with an
/// optional `/tcp` or `/udp`.
///
/// Parsing rejects malformed specs early; the spec is still sent exactly as written,
/// because the server is the authority on what it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    raw: String,
    public: bool,
    host_port: Option<u16>,
    container_port: u16,
    protocol: Protocol,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
}

impl PortSpec {
    /// Parses a port spec; the error explains the accepted forms.
    pub fn parse(spec: &str) -> Result<Self, InputError> {
        let bad = |why: &str| {
            InputError::new(format!(
                "invalid port {spec:?}: {why}; expected pub:HOST:CONTAINER, HOST:CONTAINER or CONTAINER, optionally ending in /tcp or /udp (e.g. pub:222:22)"
            ))
        };
        if spec.trim().is_empty() {
            return Err(bad("it is empty"));
        }
        if spec.chars().any(char::is_whitespace) {
            return Err(bad("it contains whitespace"));
        }
        let (ports, protocol) = match spec.split_once('/') {
            None => (spec, Protocol::Tcp),
            Some((ports, "tcp")) => (ports, Protocol::Tcp),
            Some((ports, "udp")) => (ports, Protocol::Udp),
            Some((_, other)) => return Err(bad(&format!("unknown protocol {other:?}"))),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let number = |text: &str, which: &str| -> Result<u16, InputError> {
            if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit()) {
                return Err(bad(&format!("{text:?} is not a {which} port number")));
            }
            match text.parse::<u16>() {
                Ok(port) if port > 0 => Ok(port),
                _ => Err(bad(&format!("the {which} port must be 1-65535"))),
            }
        };
        let (public, host_port, container_port) = match parts.as_slice() {
            ["pub", _] => return Err(bad("pub: needs both a HOST and a CONTAINER port")),
            [container] => (false, None, number(container, "container")?),
            [host, container] => (
                false,
                Some(number(host, "host")?),
                number(container, "container")?,
            ),
            ["pub", host, container] => (
                true,
                Some(number(host, "host")?),
                number(container, "container")?,
            ),
            [prefix, _, _] => return Err(bad(&format!("the prefix {prefix:?} is not \"pub\""))),
            _ => return Err(bad("too many ':'")),
        };
        Ok(PortSpec {
            raw: spec.to_string(),
            public,
            host_port,
            container_port,
            protocol,
        })
    }

    /// The spec exactly as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// True for `pub:` specs (published on the instance's public address).
    pub fn is_public(&self) -> bool {
        self.public
    }

    /// The requested host port, if any.
    pub fn host_port(&self) -> Option<u16> {
        self.host_port
    }

    /// The port inside the container.
    pub fn container_port(&self) -> u16 {
        self.container_port
    }

    /// TCP or UDP.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

impl FromStr for PortSpec {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PortSpec::parse(s)
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for PortSpec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

/// Restart policy (`no`, `always`, `on-failure[:N]`, `unless-stopped`), in Docker's
/// wire shape `{"Name": "on-failure", "MaximumRetryCount": "3"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// Policy name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Retries for `on-failure` (`"0"` = unlimited); Zun sends it as a string.
    #[serde(
        rename = "MaximumRetryCount",
        default,
        deserialize_with = "string_or_number"
    )]
    pub maximum_retry_count: String,
}

impl RestartPolicy {
    /// Parses the command-line form, e.g. `on-failure:3`.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        let (name, count) = match text.split_once(':') {
            Some((name, count)) => (name, Some(count)),
            None => (text, None),
        };
        let known = ["no", "always", "on-failure", "unless-stopped"];
        if !known.contains(&name) {
            return Err(InputError::new(format!(
                "invalid restart policy {text:?}; expected no, always, on-failure[:N] or unless-stopped"
            )));
        }
        let count = match count {
            None => 0,
            Some(_) if name != "on-failure" => {
                return Err(InputError::new(format!(
                    "invalid restart policy {text:?}: only on-failure takes a retry count"
                )))
            }
            Some(count) => count.parse::<u32>().map_err(|_| {
                InputError::new(format!(
                    "invalid restart policy {text:?}: the retry count must be a whole number, e.g. on-failure:3"
                ))
            })?,
        };
        Ok(RestartPolicy {
            name: name.to_string(),
            maximum_retry_count: count.to_string(),
        })
    }
}

impl FromStr for RestartPolicy {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RestartPolicy::parse(s)
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// A memory size in MiB. Parses `256`, `256M`, `256MiB`, `1G` or `1GiB`; sent as the
/// digit string Zun expects (`"256"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMib(u64);

impl MemoryMib {
    /// Parses a size; a bare number is MiB.
    pub fn parse(text: &str) -> Result<Self, InputError> {
        let bad = || {
            InputError::new(format!(
                "invalid memory size {text:?}; expected a whole number of MiB such as 256 (or 256M, 1G)"
            ))
        };
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let number: u64 = digits.parse().map_err(|_| bad())?;
        let factor = match unit.to_ascii_lowercase().as_str() {
            "" | "m" | "mb" | "mi" | "mib" => 1,
            "g" | "gb" | "gi" | "gib" => 1024,
            _ => return Err(bad()),
        };
        let mib = number.checked_mul(factor).ok_or_else(bad)?;
        if mib == 0 {
            return Err(bad());
        }
        Ok(MemoryMib(mib))
    }

    /// The size in MiB.
    pub fn mib(self) -> u64 {
        self.0
    }
}

impl FromStr for MemoryMib {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MemoryMib::parse(s)
    }
}

impl Serialize for MemoryMib {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_string())
    }
}

/// A `KEY=VALUE` pair from the command line (environment variables, labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key; never empty.
    pub key: String,
    /// The value; may be empty (`KEY=`).
    pub value: String,
}

impl FromStr for KeyValue {
    type Err = InputError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => Ok(KeyValue {
                key: key.to_string(),
                value: value.to_string(),
            }),
            _ => Err(InputError::new(format!(
                "invalid {s:?}; expected KEY=VALUE"
            ))),
        }
    }
}

/// A CPU share: a finite number greater than zero.
pub fn parse_cpu(text: &str) -> Result<f64, InputError> {
    match text.trim().parse::<f64>() {
        Ok(cpu) if cpu.is_finite() && cpu > 0.0 => Ok(cpu),
        _ => Err(InputError::new(format!(
            "invalid cpu {text:?}; expected a number of cores greater than 0, e.g. 0.5"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn port_spec_with_pub_prefix_parses_host_and_container_ports() {
        let spec = PortSpec::parse("pub:222:22").unwrap();
        assert!(spec.is_public());
        assert_eq!(spec.host_port(), Some(222));
        assert_eq!(spec.container_port(), 22);
        assert_eq!(spec.protocol(), Protocol::Tcp);
        assert_eq!(spec.as_str(), "pub:222:22");
    }

    #[test]
    fn port_spec_host_container_with_udp_parses() {
        let spec = PortSpec::parse("8081:81/udp").unwrap();
        assert!(!spec.is_public());
        assert_eq!(spec.host_port(), Some(8081));
        assert_eq!(spec.container_port(), 81);
        assert_eq!(spec.protocol(), Protocol::Udp);
    }

    #[test]
    fn port_spec_container_only_has_no_host_port() {
        let spec = PortSpec::parse("90/tcp").unwrap();
        assert_eq!(spec.host_port(), None);
        assert_eq!(spec.container_port(), 90);
    }

    #[test]
    fn port_spec_is_serialized_verbatim() {
        let specs: Vec<PortSpec> = ["pub:8080:80", "8081:81/udp", "90"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(
            serde_json::to_value(&specs).unwrap(),
            json!(["pub:8080:80", "8081:81/udp", "90"])
        );
    }

    #[test]
    fn malformed_port_specs_are_rejected_with_the_accepted_forms() {
        for bad in [
            "", "abc", "pub:80", "0", "65536", "80:", ":80", "priv:1:2", "1:2:3:4", "80/sctp",
            "80/", "-1", "+80", "8 0",
        ] {
            let err = PortSpec::parse(bad).expect_err(bad);
            assert!(
                err.to_string().contains("pub:HOST:CONTAINER"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn restart_policy_on_failure_with_count_parses() {
        let policy = RestartPolicy::parse("on-failure:3").unwrap();
        assert_eq!(policy.name, "on-failure");
        assert_eq!(policy.maximum_retry_count, "3");
        assert_eq!(
            serde_json::to_value(&policy).unwrap(),
            json!({"Name": "on-failure", "MaximumRetryCount": "3"})
        );
    }

    #[test]
    fn restart_policy_without_count_sends_zero() {
        for name in ["no", "always", "on-failure", "unless-stopped"] {
            let policy = RestartPolicy::parse(name).unwrap();
            assert_eq!(policy.name, name);
            assert_eq!(policy.maximum_retry_count, "0");
        }
    }

    #[test]
    fn restart_policy_rejects_unknown_names_and_misplaced_counts() {
        assert!(RestartPolicy::parse("sometimes").is_err());
        assert!(RestartPolicy::parse("always:3").is_err());
        assert!(RestartPolicy::parse("on-failure:x").is_err());
        assert!(RestartPolicy::parse("on-failure:-1").is_err());
        assert!(RestartPolicy::parse("").is_err());
    }

    #[test]
    fn restart_policy_count_may_arrive_as_a_number() {
        let policy: RestartPolicy =
            serde_json::from_value(json!({"Name": "on-failure", "MaximumRetryCount": 5})).unwrap();
        assert_eq!(policy.maximum_retry_count, "5");
    }

    #[test]
    fn memory_accepts_mib_and_gib_suffixes() {
        assert_eq!(MemoryMib::parse("256").unwrap().mib(), 256);
        assert_eq!(MemoryMib::parse("256M").unwrap().mib(), 256);
        assert_eq!(MemoryMib::parse("1GiB").unwrap().mib(), 1024);
        assert_eq!(
            serde_json::to_value(MemoryMib::parse("512").unwrap()).unwrap(),
            json!("512")
        );
        for bad in ["", "0", "abc", "1.5", "12T", "-3"] {
            assert!(MemoryMib::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn key_value_splits_at_the_first_equals_sign() {
        let kv: KeyValue = "A=b=c".parse().unwrap();
        assert_eq!((kv.key.as_str(), kv.value.as_str()), ("A", "b=c"));
        let empty: KeyValue = "A=".parse().unwrap();
        assert_eq!(empty.value, "");
        assert!("A".parse::<KeyValue>().is_err());
        assert!("=b".parse::<KeyValue>().is_err());
    }

    #[test]
    fn cpu_must_be_a_positive_number() {
        assert_eq!(parse_cpu("0.5").unwrap(), 0.5);
        for bad in ["0", "-1", "abc", "NaN", "inf"] {
            assert!(parse_cpu(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn create_body_contains_only_the_fields_that_were_set() {
        let body = CreateContainer {
            image: "nginx".into(),
            published_ports: Some(vec![PortSpec::parse("pub:8080:80").unwrap()]),
            cpu: Some(0.5),
            memory: Some(MemoryMib::parse("256").unwrap()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"image": "nginx", "published_ports": ["pub:8080:80"], "cpu": 0.5, "memory": "256"})
        );
    }

    #[test]
    fn container_view_tolerates_missing_null_and_unknown_fields() {
        let view: ContainerView = serde_json::from_value(json!({
            "uuid": "6f1c7a4e-2d35-4c8b-9a57-0a1f3c7e9b21",
            "name": "web",
            "status": "Running",
            "command": null,
            "ports": [80],
            "published_ports": [{"host_ip": "127.0.0.1", "host_port": 8080, "container_port": 80, "protocol": "tcp"}],
            "restart_policy": {"Name": "no", "MaximumRetryCount": "0"},
            "disk": 10,
        }))
        .unwrap();
        assert_eq!(view.status, ContainerStatus::Running);
        assert!(view.command.is_empty());
        assert_eq!(view.port_summary(), vec!["127.0.0.1:8080"]);
        assert_eq!(view.extra.get("disk"), Some(&json!(10)));
        assert_eq!(view.host, None);
    }

    #[test]
    fn unknown_status_is_kept_verbatim() {
        let status: ContainerStatus = serde_json::from_value(json!("Hibernating")).unwrap();
        assert_eq!(status, ContainerStatus::Other("Hibernating".into()));
        assert_eq!(serde_json::to_value(&status).unwrap(), json!("Hibernating"));
    }

    #[test]
    fn port_summary_marks_udp_and_unassigned_ports() {
        let udp = PublishedPort {
            host_ip: Some("10.0.0.5".into()),
            host_port: Some(5353),
            container_port: 53,
            protocol: "udp".into(),
        };
        let pending = PublishedPort {
            host_ip: None,
            host_port: None,
            container_port: 90,
            protocol: "tcp".into(),
        };
        assert_eq!(udp.to_string(), "10.0.0.5:5353/udp");
        assert_eq!(pending.to_string(), "90/tcp");
    }
}
