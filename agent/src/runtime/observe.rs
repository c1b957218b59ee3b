//! Mapping what the engine reports (`docker inspect`) to [`ObservedContainer`].
//!
//! Pure functions only, so every quirk of the engine's answer (zero times, ports
//! listed once per address family, missing fields on old engines) is tested without one.

use std::collections::{BTreeSet, HashMap};

use berth_proto::container::Protocol;
use berth_proto::{ObservedContainer, PortBinding, RuntimeState};
use bollard::models::{
    ContainerInspectResponse, ContainerState, ContainerStateStatusEnum, PortMap,
};
use chrono::{DateTime, Datelike, Utc};
use uuid::Uuid;

/// The Berth uuid a container carries in its [`berth_proto::LABEL_CONTAINER`] label.
///
/// A pod's container (labelled [`berth_proto::pod::LABEL_POD`]) never has one: pods are
/// reported as pods, so the per-container observation must not see their containers
/// (the service would remove them as unknown).
pub(crate) fn container_uuid(labels: Option<&HashMap<String, String>>) -> Option<Uuid> {
    let labels = labels?;
    if labels.contains_key(berth_proto::pod::LABEL_POD) {
        return None;
    }
    labels
        .get(berth_proto::LABEL_CONTAINER)
        .and_then(|value| Uuid::parse_str(value).ok())
}

/// The instance a container carries in its [`berth_proto::LABEL_INSTANCE`] label.
pub(crate) fn container_instance(labels: Option<&HashMap<String, String>>) -> Option<Uuid> {
    labels?
        .get(berth_proto::LABEL_INSTANCE)
        .and_then(|value| Uuid::parse_str(value).ok())
}

/// The runtime state named by the engine's `State.Status`.
///
/// Old or odd engines may leave the status out; then the boolean flags decide, and a
/// container that is none of running, paused, restarting or dead has exited (or was
/// never started when it has no finish time).
pub(crate) fn runtime_state(state: &ContainerState) -> RuntimeState {
    use ContainerStateStatusEnum as S;
    match state.status {
        Some(S::CREATED) => RuntimeState::Created,
        // "stopping" only exists on newer engines; the process is still alive.
        Some(S::RUNNING) | Some(S::STOPPING) => RuntimeState::Running,
        Some(S::PAUSED) => RuntimeState::Paused,
        Some(S::RESTARTING) => RuntimeState::Restarting,
        Some(S::REMOVING) => RuntimeState::Removing,
        Some(S::EXITED) => RuntimeState::Exited,
        Some(S::DEAD) => RuntimeState::Dead,
        Some(S::EMPTY) | None => {
            let flag = |value: Option<bool>| value.unwrap_or(false);
            if flag(state.dead) {
                RuntimeState::Dead
            } else if flag(state.paused) {
                RuntimeState::Paused
            } else if flag(state.restarting) {
                RuntimeState::Restarting
            } else if flag(state.running) {
                RuntimeState::Running
            } else if docker_time(state.finished_at.as_deref()).is_some() {
                RuntimeState::Exited
            } else {
                RuntimeState::Created
            }
        }
    }
}

/// Whether a container in this state has (or is about to have) live processes.
pub(crate) fn is_live(state: RuntimeState) -> bool {
    matches!(
        state,
        RuntimeState::Running | RuntimeState::Paused | RuntimeState::Restarting
    )
}

/// A time from the engine, or `None` for Docker's "never" (`0001-01-01T00:00:00Z`),
/// an empty string or anything unparseable.
pub(crate) fn docker_time(value: Option<&str>) -> Option<DateTime<Utc>> {
    let parsed = DateTime::parse_from_rfc3339(value?.trim()).ok()?;
    // Go's zero time is year 1; no real container started before the Unix epoch.
    (parsed.year() > 1970).then(|| parsed.with_timezone(&Utc))
}

/// `80/tcp` → `(80, Tcp)`. Other protocols (sctp) have no place in the wire type.
pub(crate) fn parse_port_key(key: &str) -> Option<(u16, Protocol)> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, protocol))
}

/// The bindings in an engine port map, one per (host port, container port, protocol).
///
/// The engine lists a published port once per address family (`0.0.0.0` and `::`),
/// so duplicates are folded. An empty `HostPort` (engine chooses) becomes `None`;
/// exposed but unpublished ports (no bindings) are left out. Sorted, so two
/// observations of the same container compare equal.
pub(crate) fn ports_from_map(map: Option<&PortMap>) -> Vec<PortBinding> {
    let Some(map) = map else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    for (key, bindings) in map {
        let Some((container_port, protocol)) = parse_port_key(key) else {
            continue;
        };
        for binding in bindings.iter().flatten() {
            let host_port = binding
                .host_port
                .as_deref()
                .filter(|port| !port.is_empty())
                .and_then(|port| port.parse::<u16>().ok());
            seen.insert((container_port, protocol.as_str(), host_port));
        }
    }
    seen.into_iter()
        .map(|(container_port, protocol, host_port)| PortBinding {
            host_port,
            container_port,
            protocol: if protocol == "udp" {
                Protocol::Udp
            } else {
                Protocol::Tcp
            },
        })
        .collect()
}

/// The container as the wire type describes it, from the engine's inspect answer.
///
/// `uuid` is passed in because the caller already knows it (from the name it asked
/// for or from the label it listed by).
pub(crate) fn observed(uuid: Uuid, inspect: &ContainerInspectResponse) -> ObservedContainer {
    let default_state = ContainerState::default();
    let state = inspect.state.as_ref().unwrap_or(&default_state);
    let runtime_state = runtime_state(state);

    // While the container runs, NetworkSettings holds the ports actually bound
    // (engine-chosen ones filled in); once it stops the engine clears them, and the
    // configured bindings are the best answer left.
    let live_ports = if is_live(runtime_state) {
        ports_from_map(
            inspect
                .network_settings
                .as_ref()
                .and_then(|settings| settings.ports.as_ref()),
        )
    } else {
        Vec::new()
    };
    let ports = if live_ports.is_empty() {
        ports_from_map(
            inspect
                .host_config
                .as_ref()
                .and_then(|config| config.port_bindings.as_ref()),
        )
    } else {
        live_ports
    };

    ObservedContainer {
        uuid,
        runtime_id: inspect.id.clone().unwrap_or_default(),
        state: runtime_state,
        exit_code: matches!(runtime_state, RuntimeState::Exited | RuntimeState::Dead)
            .then(|| state.exit_code.unwrap_or(0)),
        oom_killed: state.oom_killed.unwrap_or(false),
        error: state.error.clone().filter(|error| !error.trim().is_empty()),
        started_at: docker_time(state.started_at.as_deref()),
        finished_at: docker_time(state.finished_at.as_deref()),
        ports,
        restart_count: inspect.restart_count.unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{HostConfig, NetworkSettings, PortBinding as EnginePortBinding};

    fn binding(host_ip: &str, host_port: &str) -> EnginePortBinding {
        EnginePortBinding {
            host_ip: Some(host_ip.to_owned()),
            host_port: Some(host_port.to_owned()),
        }
    }

    fn status(status: ContainerStateStatusEnum) -> ContainerState {
        ContainerState {
            status: Some(status),
            ..Default::default()
        }
    }

    #[test]
    fn every_docker_status_maps_to_the_runtime_state_of_the_same_name() {
        use ContainerStateStatusEnum as S;
        let cases = [
            (S::CREATED, RuntimeState::Created),
            (S::RUNNING, RuntimeState::Running),
            (S::PAUSED, RuntimeState::Paused),
            (S::RESTARTING, RuntimeState::Restarting),
            (S::REMOVING, RuntimeState::Removing),
            (S::EXITED, RuntimeState::Exited),
            (S::DEAD, RuntimeState::Dead),
            (S::STOPPING, RuntimeState::Running),
        ];
        for (docker, expected) in cases {
            assert_eq!(runtime_state(&status(docker)), expected, "{docker:?}");
        }
    }

    #[test]
    fn a_missing_status_falls_back_to_the_state_flags() {
        let running = ContainerState {
            running: Some(true),
            ..Default::default()
        };
        assert_eq!(runtime_state(&running), RuntimeState::Running);
        let paused = ContainerState {
            running: Some(true),
            paused: Some(true),
            ..Default::default()
        };
        assert_eq!(runtime_state(&paused), RuntimeState::Paused);
        let never_started = ContainerState {
            finished_at: Some("0001-01-01T00:00:00Z".to_owned()),
            ..Default::default()
        };
        assert_eq!(runtime_state(&never_started), RuntimeState::Created);
        let finished = ContainerState {
            finished_at: Some("2024-05-01T10:00:00.5Z".to_owned()),
            ..Default::default()
        };
        assert_eq!(runtime_state(&finished), RuntimeState::Exited);
    }

    #[test]
    fn docker_zero_time_empty_and_garbage_are_no_time() {
        assert_eq!(docker_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(docker_time(Some("")), None);
        assert_eq!(docker_time(Some("yesterday")), None);
        assert_eq!(docker_time(None), None);
    }

    #[test]
    fn docker_times_with_nanoseconds_are_parsed_in_utc() {
        let parsed = docker_time(Some("2024-05-01T10:00:00.123456789Z")).unwrap();
        assert_eq!(parsed.to_rfc3339(), "2024-05-01T10:00:00.123456789+00:00");
    }

    #[test]
    fn port_keys_parse_tcp_and_udp_and_reject_sctp() {
        assert_eq!(parse_port_key("80/tcp"), Some((80, Protocol::Tcp)));
        assert_eq!(parse_port_key("53/udp"), Some((53, Protocol::Udp)));
        assert_eq!(parse_port_key("22"), Some((22, Protocol::Tcp)));
        assert_eq!(parse_port_key("9/sctp"), None);
        assert_eq!(parse_port_key("http/tcp"), None);
    }

    #[test]
    fn ports_listed_for_ipv4_and_ipv6_are_reported_once() {
        let map: PortMap = HashMap::from([(
            "22/tcp".to_owned(),
            Some(vec![binding("0.0.0.0", "2222"), binding("::", "2222")]),
        )]);
        assert_eq!(
            ports_from_map(Some(&map)),
            vec![PortBinding {
                host_port: Some(2222),
                container_port: 22,
                protocol: Protocol::Tcp
            }]
        );
    }

    #[test]
    fn exposed_but_unpublished_ports_are_left_out_and_empty_host_port_is_engine_chosen() {
        let map: PortMap = HashMap::from([
            ("80/tcp".to_owned(), None),
            ("53/udp".to_owned(), Some(vec![binding("0.0.0.0", "")])),
        ]);
        assert_eq!(
            ports_from_map(Some(&map)),
            vec![PortBinding {
                host_port: None,
                container_port: 53,
                protocol: Protocol::Udp
            }]
        );
    }

    fn inspect(status: ContainerStateStatusEnum) -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("abc123".to_owned()),
            restart_count: Some(2),
            state: Some(ContainerState {
                status: Some(status),
                exit_code: Some(137),
                oom_killed: Some(true),
                error: Some(String::new()),
                started_at: Some("2024-05-01T10:00:00Z".to_owned()),
                finished_at: Some("0001-01-01T00:00:00Z".to_owned()),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    "80/tcp".to_owned(),
                    Some(vec![binding("0.0.0.0", "")]),
                )])),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                ports: Some(HashMap::from([(
                    "80/tcp".to_owned(),
                    Some(vec![binding("0.0.0.0", "49153")]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_running_container_reports_the_host_port_the_engine_chose() {
        let uuid = Uuid::new_v4();
        let observed = observed(uuid, &inspect(ContainerStateStatusEnum::RUNNING));
        assert_eq!(observed.uuid, uuid);
        assert_eq!(observed.runtime_id, "abc123");
        assert_eq!(observed.state, RuntimeState::Running);
        assert_eq!(observed.exit_code, None);
        assert_eq!(observed.error, None);
        assert_eq!(observed.finished_at, None);
        assert!(observed.started_at.is_some());
        assert_eq!(observed.restart_count, 2);
        assert_eq!(observed.ports[0].host_port, Some(49153));
    }

    #[test]
    fn a_stopped_container_falls_back_to_its_configured_port_bindings() {
        let mut response = inspect(ContainerStateStatusEnum::EXITED);
        response.network_settings = Some(NetworkSettings::default());
        let observed = observed(Uuid::new_v4(), &response);
        assert_eq!(observed.state, RuntimeState::Exited);
        assert_eq!(observed.exit_code, Some(137));
        assert!(observed.oom_killed);
        assert_eq!(
            observed.ports,
            vec![PortBinding {
                host_port: None,
                container_port: 80,
                protocol: Protocol::Tcp
            }]
        );
    }

    #[test]
    fn a_start_error_from_the_engine_is_reported() {
        let mut response = inspect(ContainerStateStatusEnum::CREATED);
        response.state.as_mut().unwrap().error = Some("port is already allocated".to_owned());
        let observed = observed(Uuid::new_v4(), &response);
        assert_eq!(observed.state, RuntimeState::Created);
        assert_eq!(observed.error.as_deref(), Some("port is already allocated"));
    }

    #[test]
    fn labels_yield_the_container_uuid_and_instance_only_when_parseable() {
        let uuid = Uuid::new_v4();
        let labels = HashMap::from([
            (berth_proto::LABEL_CONTAINER.to_owned(), uuid.to_string()),
            (
                berth_proto::LABEL_INSTANCE.to_owned(),
                "not-a-uuid".to_owned(),
            ),
        ]);
        assert_eq!(container_uuid(Some(&labels)), Some(uuid));
        assert_eq!(container_instance(Some(&labels)), None);
        assert_eq!(container_uuid(None), None);
    }
}
