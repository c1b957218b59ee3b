//! Translating Berth's [`ContainerSpec`] and resource updates into engine requests.
//!
//! Pure functions, so what the agent asks the engine for is tested without one.

use std::collections::HashMap;

use berth_proto::container::Protocol;
use berth_proto::ContainerSpec;
use bollard::models::{
    ContainerCreateBody, ContainerUpdateBody, HostConfig, PortBinding as EnginePortBinding,
    PortMap, RestartPolicy, RestartPolicyNameEnum,
};
use uuid::Uuid;

const MIB: i64 = 1024 * 1024;

/// The engine's key for a container port: `80/tcp`.
pub(crate) fn port_key(container_port: u16, protocol: Protocol) -> String {
    format!("{container_port}/{}", protocol.as_str())
}

/// Docker `NanoCpus` for a limit in cores; `None` (no limit) when not positive.
pub(crate) fn nano_cpus(cpu: f64) -> Option<i64> {
    (cpu.is_finite() && cpu > 0.0).then(|| (cpu * 1e9).round() as i64)
}

/// Docker `Memory` in bytes for a limit in MiB; `None` (no limit) when not positive.
pub(crate) fn memory_bytes(memory_mib: i64) -> Option<i64> {
    (memory_mib > 0).then(|| memory_mib.saturating_mul(MIB))
}

/// The engine's restart policy for Berth's name and retry count.
///
/// The engine refuses a retry count with any policy but `on-failure`, so it is sent
/// only there. An unknown name is passed as the engine's default (`no`); the service
/// validated it already.
pub(crate) fn restart_policy(name: &str, max_retries: i64) -> RestartPolicy {
    let name = match name {
        "always" => RestartPolicyNameEnum::ALWAYS,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "no" => RestartPolicyNameEnum::NO,
        _ => RestartPolicyNameEnum::EMPTY,
    };
    let maximum_retry_count =
        (name == RestartPolicyNameEnum::ON_FAILURE && max_retries > 0).then_some(max_retries);
    RestartPolicy {
        name: Some(name),
        maximum_retry_count,
    }
}

/// The labels a Berth container carries: the user's, then the agent's own on top, so
/// a user label cannot pose as another container or another instance.
pub(crate) fn labels(spec: &ContainerSpec, instance: Uuid) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec
        .labels
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    labels.insert(
        berth_proto::LABEL_CONTAINER.to_owned(),
        spec.uuid.to_string(),
    );
    labels.insert(berth_proto::LABEL_INSTANCE.to_owned(), instance.to_string());
    labels
}

/// The engine's port bindings for the spec's published ports, on all addresses.
/// An empty `HostPort` asks the engine to choose a free one.
pub(crate) fn port_bindings(spec: &ContainerSpec) -> PortMap {
    let mut map: PortMap = HashMap::new();
    for port in &spec.ports {
        let binding = EnginePortBinding {
            host_ip: Some("0.0.0.0".to_owned()),
            host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
        };
        map.entry(port_key(port.container_port, port.protocol))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    map
}

/// The body of the engine's create request for `spec` on `instance`.
pub(crate) fn create_body(spec: &ContainerSpec, instance: Uuid) -> ContainerCreateBody {
    let mut exposed: Vec<String> = spec
        .ports
        .iter()
        .map(|port| port_key(port.container_port, port.protocol))
        .collect();
    exposed.sort();
    exposed.dedup();

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        entrypoint: spec.entrypoint.clone(),
        env: Some(
            spec.environment
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect(),
        ),
        labels: Some(labels(spec, instance)),
        working_dir: spec.workdir.clone(),
        hostname: spec.hostname.clone(),
        tty: Some(spec.tty),
        open_stdin: Some(spec.interactive),
        attach_stdin: Some(spec.interactive),
        stdin_once: Some(spec.stdin_once),
        user: spec.user.clone().filter(|u| !u.is_empty()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(granted(
            spec,
            HostConfig {
                nano_cpus: nano_cpus(spec.cpu),
                memory: memory_bytes(spec.memory_mib),
                port_bindings: (!spec.ports.is_empty()).then(|| port_bindings(spec)),
                restart_policy: Some(restart_policy(
                    &spec.restart_policy,
                    spec.restart_max_retries,
                )),
                // The service removes an auto_remove container once it has recorded its
                // exit code; the engine removing it first would lose that code.
                auto_remove: Some(false),
                binds: infra_binds(spec),
                network_mode: spec
                    .infra
                    .as_ref()
                    .filter(|infra| infra.host_network)
                    .map(|_| "host".to_owned()),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

/// Applies the host access policy granted to a tenant's container (nothing for almost
/// every container: `spec.privileges` is `None` unless a policy rule allowed it).
fn granted(spec: &ContainerSpec, mut host: HostConfig) -> HostConfig {
    let Some(p) = &spec.privileges else {
        return host;
    };
    let some = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    if p.privileged {
        host.privileged = Some(true);
    }
    if p.network_mode.is_some() {
        host.network_mode = p.network_mode.clone();
    }
    host.pid_mode = p.pid_mode.clone().or(host.pid_mode);
    host.ipc_mode = p.ipc_mode.clone().or(host.ipc_mode);
    host.uts_mode = p.uts_mode.clone().or(host.uts_mode);
    host.userns_mode = p.userns_mode.clone().or(host.userns_mode);
    if !p.binds.is_empty() {
        host.binds
            .get_or_insert_with(Vec::new)
            .extend(p.binds.iter().cloned());
    }
    if !p.devices.is_empty() {
        host.devices = Some(
            p.devices
                .iter()
                .map(|d| bollard::models::DeviceMapping {
                    path_on_host: Some(d.path_on_host.clone()),
                    path_in_container: Some(d.path_in_container.clone()),
                    cgroup_permissions: Some(d.cgroup_permissions.clone()),
                })
                .collect(),
        );
    }
    host.device_cgroup_rules = some(&p.device_cgroup_rules).or(host.device_cgroup_rules);
    host.cap_add = some(&p.cap_add).or(host.cap_add);
    host.security_opt = some(&p.security_opt).or(host.security_opt);
    host
}

/// The engine's `Binds` for an infrastructure container's host mounts; `None` for every
/// tenant container (their specs never carry infra options).
fn infra_binds(spec: &ContainerSpec) -> Option<Vec<String>> {
    let infra = spec
        .infra
        .as_ref()
        .filter(|infra| !infra.binds.is_empty())?;
    Some(
        infra
            .binds
            .iter()
            .map(|b| {
                let mode = if b.read_only { ":ro" } else { "" };
                format!("{}:{}{mode}", b.host_path, b.container_path)
            })
            .collect(),
    )
}

/// The body of the engine's update request.
///
/// The engine refuses a memory limit above the container's current swap limit
/// ("Memory limit should be smaller than already set memoryswap limit"), and a create
/// without `MemorySwap` gets twice the memory; so swap is always set with memory, to
/// twice the new limit, which keeps the create-time behaviour and is never refused.
pub(crate) fn update_body(
    cpu: Option<f64>,
    memory_mib: Option<i64>,
    restart: Option<&(String, i64)>,
) -> ContainerUpdateBody {
    let memory = memory_mib.and_then(memory_bytes);
    ContainerUpdateBody {
        nano_cpus: cpu.and_then(nano_cpus),
        memory,
        memory_swap: memory.map(|bytes| bytes.saturating_mul(2)),
        restart_policy: restart.map(|(name, retries)| restart_policy(name, *retries)),
        ..Default::default()
    }
}

/// The reference to ask the engine to pull.
///
/// A name without tag or digest makes the engine pull every tag of the repository, so
/// `:latest` is added as the docker CLI does. A colon in the last path component is a
/// tag; one before a slash is a registry port.
pub(crate) fn pull_reference(image: &str) -> String {
    let last_component = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last_component.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::PortBinding;
    use std::collections::BTreeMap;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            uuid: Uuid::new_v4(),
            image: "berth-test/busybox:latest".to_owned(),
            command: vec!["sleep".to_owned(), "60".to_owned()],
            entrypoint: None,
            environment: BTreeMap::from([("A".to_owned(), "1".to_owned())]),
            labels: BTreeMap::from([
                ("app".to_owned(), "web".to_owned()),
                (berth_proto::LABEL_INSTANCE.to_owned(), "spoofed".to_owned()),
            ]),
            workdir: Some("/srv".to_owned()),
            hostname: None,
            cpu: 0.5,
            memory_mib: 64,
            ports: vec![
                PortBinding {
                    host_port: Some(2222),
                    container_port: 22,
                    protocol: Protocol::Tcp,
                },
                PortBinding {
                    host_port: None,
                    container_port: 22,
                    protocol: Protocol::Tcp,
                },
                PortBinding {
                    host_port: None,
                    container_port: 53,
                    protocol: Protocol::Udp,
                },
            ],
            restart_policy: "always".to_owned(),
            restart_max_retries: 3,
            interactive: true,
            tty: false,
            auto_remove: false,
            stdin_once: false,
            user: None,
            privileges: None,
            infra: None,
            registry_auth: None,
        }
    }

    #[test]
    fn a_tenant_spec_without_privileges_gets_no_host_access() {
        let body = create_body(&spec(), Uuid::nil());
        let host = body.host_config.unwrap();
        assert_eq!(host.privileged, None);
        assert_eq!(host.network_mode, None);
        assert_eq!(host.pid_mode, None);
        assert_eq!(host.binds, None);
        assert_eq!(host.cap_add, None);
        assert_eq!(host.devices, None);
        assert_eq!(host.security_opt, None);
    }

    #[test]
    fn an_update_may_change_the_restart_policy() {
        let body = update_body(None, None, Some(&("on-failure".to_owned(), 3)));
        let policy = body.restart_policy.unwrap();
        assert_eq!(policy.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(policy.maximum_retry_count, Some(3));
        assert_eq!(update_body(Some(1.0), None, None).restart_policy, None);
    }

    #[test]
    fn granted_privileges_reach_the_engine() {
        let mut s = spec();
        s.user = Some("1000:1000".into());
        s.stdin_once = true;
        s.auto_remove = true;
        s.privileges = Some(berth_proto::Privileges {
            privileged: true,
            network_mode: Some("host".into()),
            pid_mode: Some("host".into()),
            binds: vec!["/srv:/srv:ro".into()],
            cap_add: vec!["NET_ADMIN".into()],
            security_opt: vec!["seccomp=unconfined".into()],
            devices: vec![berth_proto::DeviceMapping {
                path_on_host: "/dev/fuse".into(),
                path_in_container: "/dev/fuse".into(),
                cgroup_permissions: "rwm".into(),
            }],
            ..Default::default()
        });
        let body = create_body(&s, Uuid::nil());
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.stdin_once, Some(true));
        let host = body.host_config.unwrap();
        // The service removes auto_remove containers after recording the exit code.
        assert_eq!(host.auto_remove, Some(false));
        assert_eq!(host.privileged, Some(true));
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.pid_mode.as_deref(), Some("host"));
        assert_eq!(host.binds, Some(vec!["/srv:/srv:ro".to_owned()]));
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_owned()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["seccomp=unconfined".to_owned()])
        );
        assert_eq!(
            host.devices.unwrap()[0].path_on_host.as_deref(),
            Some("/dev/fuse")
        );
    }

    #[test]
    fn cpu_cores_become_nano_cpus_and_zero_means_no_limit() {
        assert_eq!(nano_cpus(0.5), Some(500_000_000));
        assert_eq!(nano_cpus(2.0), Some(2_000_000_000));
        assert_eq!(nano_cpus(0.1), Some(100_000_000));
        assert_eq!(nano_cpus(0.0), None);
        assert_eq!(nano_cpus(f64::NAN), None);
    }

    #[test]
    fn memory_mib_becomes_bytes_and_zero_means_no_limit() {
        assert_eq!(memory_bytes(64), Some(64 * 1024 * 1024));
        assert_eq!(memory_bytes(0), None);
    }

    #[test]
    fn retry_count_is_sent_only_with_on_failure() {
        let always = restart_policy("always", 3);
        assert_eq!(always.name, Some(RestartPolicyNameEnum::ALWAYS));
        assert_eq!(always.maximum_retry_count, None);
        let on_failure = restart_policy("on-failure", 3);
        assert_eq!(on_failure.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(on_failure.maximum_retry_count, Some(3));
        assert_eq!(
            restart_policy("no", 0).name,
            Some(RestartPolicyNameEnum::NO)
        );
    }

    #[test]
    fn agent_labels_override_user_labels_of_the_same_name() {
        let spec = spec();
        let instance = Uuid::new_v4();
        let labels = labels(&spec, instance);
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[berth_proto::LABEL_INSTANCE], instance.to_string());
        assert_eq!(labels[berth_proto::LABEL_CONTAINER], spec.uuid.to_string());
    }

    #[test]
    fn create_body_carries_every_field_of_the_spec() {
        let spec = spec();
        let body = create_body(&spec, Uuid::new_v4());
        assert_eq!(body.image.as_deref(), Some("berth-test/busybox:latest"));
        assert_eq!(body.cmd, Some(vec!["sleep".to_owned(), "60".to_owned()]));
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.env, Some(vec!["A=1".to_owned()]));
        assert_eq!(body.working_dir.as_deref(), Some("/srv"));
        assert_eq!(body.open_stdin, Some(true));
        assert_eq!(body.attach_stdin, Some(true));
        assert_eq!(
            body.exposed_ports,
            Some(vec!["22/tcp".to_owned(), "53/udp".to_owned()])
        );
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.auto_remove, Some(false));
        let bindings = host.port_bindings.unwrap();
        let ssh = bindings["22/tcp"].as_ref().unwrap();
        assert_eq!(ssh.len(), 2);
        assert_eq!(ssh[0].host_port.as_deref(), Some("2222"));
        assert_eq!(ssh[1].host_port.as_deref(), Some(""));
        assert_eq!(ssh[0].host_ip.as_deref(), Some("0.0.0.0"));
    }

    #[test]
    fn a_tenant_spec_gets_no_host_mounts_and_no_host_network() {
        let host = create_body(&spec(), Uuid::new_v4()).host_config.unwrap();
        assert_eq!(host.binds, None);
        assert_eq!(host.network_mode, None);
    }

    #[test]
    fn infra_options_become_binds_and_host_networking() {
        let mut spec = spec();
        spec.infra = Some(berth_proto::InfraOptions {
            binds: vec![
                berth_proto::BindMount {
                    host_path: "/var/run/docker.sock".to_owned(),
                    container_path: "/var/run/docker.sock".to_owned(),
                    read_only: false,
                },
                berth_proto::BindMount {
                    host_path: "/etc/berth".to_owned(),
                    container_path: "/config".to_owned(),
                    read_only: true,
                },
            ],
            host_network: true,
        });
        let host = create_body(&spec, Uuid::new_v4()).host_config.unwrap();
        assert_eq!(
            host.binds,
            Some(vec![
                "/var/run/docker.sock:/var/run/docker.sock".to_owned(),
                "/etc/berth:/config:ro".to_owned(),
            ])
        );
        assert_eq!(host.network_mode.as_deref(), Some("host"));
    }

    #[test]
    fn an_empty_command_keeps_the_image_default() {
        let mut spec = spec();
        spec.command.clear();
        spec.ports.clear();
        let body = create_body(&spec, Uuid::new_v4());
        assert_eq!(body.cmd, None);
        assert_eq!(body.exposed_ports, None);
        assert_eq!(body.host_config.unwrap().port_bindings, None);
    }

    #[test]
    fn update_sets_swap_to_twice_the_memory_so_the_engine_never_refuses() {
        let body = update_body(Some(1.5), Some(128), None);
        assert_eq!(body.nano_cpus, Some(1_500_000_000));
        assert_eq!(body.memory, Some(128 * 1024 * 1024));
        assert_eq!(body.memory_swap, Some(256 * 1024 * 1024));
        let cpu_only = update_body(Some(1.0), None, None);
        assert_eq!(cpu_only.memory, None);
        assert_eq!(cpu_only.memory_swap, None);
    }

    #[test]
    fn pull_reference_adds_latest_only_when_there_is_no_tag_or_digest() {
        assert_eq!(pull_reference("busybox"), "busybox:latest");
        assert_eq!(pull_reference("nosuch:1"), "nosuch:1");
        assert_eq!(
            pull_reference("registry:5000/team/app"),
            "registry:5000/team/app:latest"
        );
        assert_eq!(
            pull_reference("registry:5000/team/app:2"),
            "registry:5000/team/app:2"
        );
        assert_eq!(pull_reference("app@sha256:abcd"), "app@sha256:abcd");
    }
}
