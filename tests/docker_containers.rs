//! Host access through the Docker endpoint: every option that reaches beyond the
//! container is refused for tenants with a Docker-style error that names the option and
//! the policy rule that would grant it, and nothing is made; a policy file that grants
//! one makes it work, on the real engine.

mod support;

use serde_json::Value;
use support::docker::DockerCli;
use support::{docker_inspect, Berth, IMAGE};

/// The Berth uuid of a Docker id (its first 32 hex digits).
fn uuid_of(docker_id: &str) -> String {
    uuid::Uuid::try_parse(&docker_id[..32])
        .unwrap_or_else(|e| panic!("{docker_id:?} does not start with a uuid's digits: {e}"))
        .to_string()
}

#[test]
fn every_host_access_option_is_refused_for_a_tenant_and_nothing_is_made() {
    let berth = Berth::start();
    let user = berth.project_user("hostaccess", "hostaccess-member", "member");
    let docker = DockerCli::new(&berth, &berth.token_as(&user));
    // (docker run options, what the error must name, the rule that would grant it)
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["--privileged"],
            "--privileged",
            "container:create:privileged",
        ),
        (
            &["--network", "host"],
            "--network host",
            "container:create:host_network",
        ),
        (
            &["--pid", "host"],
            "--pid host",
            "container:create:host_namespaces",
        ),
        (
            &["--ipc", "host"],
            "--ipc host",
            "container:create:host_namespaces",
        ),
        (
            &["--uts", "host"],
            "--uts host",
            "container:create:host_namespaces",
        ),
        (
            &["--userns", "host"],
            "--userns host",
            "container:create:host_namespaces",
        ),
        (
            &["-v", "/etc:/host-etc"],
            "-v /etc:/host-etc",
            "container:create:host_mounts",
        ),
        (
            &["--mount", "type=bind,source=/etc,target=/host-etc"],
            "--mount type=bind,source=/etc,target=/host-etc",
            "container:create:host_mounts",
        ),
        (
            &["--device", "/dev/null"],
            "--device /dev/null",
            "container:create:devices",
        ),
        (
            &["--device-cgroup-rule", "c 1:3 rwm"],
            "--device-cgroup-rule c 1:3 rwm",
            "container:create:devices",
        ),
        (
            &["--cap-add", "SYS_ADMIN"],
            "SYS_ADMIN",
            "container:create:capabilities",
        ),
        (
            &["--cap-add", "ALL"],
            "--cap-add ALL",
            "container:create:capabilities",
        ),
        (
            &["--security-opt", "seccomp=unconfined"],
            "--security-opt seccomp=unconfined",
            "container:create:unconfined",
        ),
        (
            &["--security-opt", "apparmor=unconfined"],
            "--security-opt apparmor=unconfined",
            "container:create:unconfined",
        ),
        (
            &["--security-opt", "label=disable"],
            "--security-opt label=disable",
            "container:create:unconfined",
        ),
    ];
    for (options, names, rule) in cases {
        let mut args = vec!["run", "-d"];
        args.extend_from_slice(options);
        args.extend([IMAGE, "true"]);
        let ran = docker.fails(&args);
        assert!(
            ran.stderr.contains(names) && ran.stderr.contains(rule),
            "docker run {options:?}: the error names neither the option nor {rule}:\n{ran}"
        );
        assert!(ran.stderr.contains("is not allowed"), "{ran}");
    }
    // Nothing was recorded, and nothing reached an engine: the tenant's project never
    // even got an instance.
    let listed = berth.osc_as(&user, &["container-list", "-f", "json"]);
    assert!(listed.status.success(), "{listed:?}");
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed, Value::Array(vec![]), "containers were recorded");
    assert!(
        docker.ok(&["ps", "-a", "-q"]).trim().is_empty(),
        "docker ps -a shows containers"
    );
    assert!(
        berth.docker_instances().is_empty(),
        "an instance was made for a refused create"
    );
}

#[test]
fn a_policy_file_that_grants_privileged_to_admins_makes_a_privileged_container() {
    let data = tempfile::tempdir().unwrap();
    let policy = data.path().join("policy.yaml");
    std::fs::write(&policy, "\"container:create:privileged\": \"role:admin\"\n").unwrap();
    let berth = Berth::start_with_args(None, &["--policy-file", policy.to_str().unwrap()]);
    let admin = DockerCli::new(&berth, &berth.token());

    // `docker create`, not `run`: the engine of the test machines itself runs in a
    // confined container and cannot start a privileged one ("unable to apply caps"),
    // but it records what it was asked to make.
    let id = admin.ok(&["create", "--privileged", IMAGE, "sleep", "300"]);
    let id = id.trim().to_owned();
    let uuid = uuid_of(&id);
    assert_eq!(
        docker_inspect(&uuid, "{{.HostConfig.Privileged}}").as_deref(),
        Some("true"),
        "the engine's container is not privileged"
    );
    let inspect: Value = serde_json::from_str(&admin.ok(&["inspect", &id])).unwrap();
    assert_eq!(inspect[0]["HostConfig"]["Privileged"], Value::Bool(true));

    // The grant is the admin's only: a member of another project is still refused.
    let user = berth.project_user("nogrant", "nogrant-member", "member");
    let member = DockerCli::new(&berth, &berth.token_as(&user));
    let ran = member.fails(&["run", "-d", "--privileged", IMAGE, "true"]);
    assert!(ran.stderr.contains("container:create:privileged"), "{ran}");
    // And a grant of one rule grants nothing else.
    let ran = admin.fails(&["run", "-d", "--network", "host", IMAGE, "true"]);
    assert!(
        ran.stderr.contains("container:create:host_network"),
        "{ran}"
    );

    admin.ok(&["rm", "-f", &id]);
    assert_eq!(
        docker_inspect(&uuid, "{{.Id}}"),
        None,
        "rm -f left the container"
    );
}

#[test]
fn docker_update_changes_memory_cpus_and_the_restart_policy_on_the_engine() {
    let berth = Berth::start();
    let user = berth.project_user("updates", "updates-member", "member");
    let docker = DockerCli::new(&berth, &berth.token_as(&user));
    let id = docker.ok(&["run", "-d", "--name", "resized", IMAGE, "sleep", "300"]);
    let uuid = uuid_of(id.trim());

    docker.ok(&[
        "update",
        "--memory",
        "256m",
        "--memory-swap",
        "512m",
        "--cpus",
        "0.5",
        "--restart",
        "on-failure:3",
        "resized",
    ]);
    assert_eq!(
        docker_inspect(
            &uuid,
            "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}"
        )
        .as_deref(),
        Some("268435456 500000000 on-failure 3"),
        "the engine's container was not updated"
    );
    let inspect: Value = serde_json::from_str(&docker.ok(&["inspect", "resized"])).unwrap();
    let host = &inspect[0]["HostConfig"];
    assert_eq!(host["Memory"], 268435456);
    assert_eq!(host["NanoCpus"], 500000000);
    assert_eq!(host["RestartPolicy"]["Name"], "on-failure");
    // The Zun API sees the same container with its new size.
    let shown = berth.osc_as(&user, &["container-show", "resized", "-f", "json"]);
    assert!(shown.status.success(), "{shown:?}");
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["memory"], "256", "{shown}");
    docker.ok(&["rm", "-f", "resized"]);
}
