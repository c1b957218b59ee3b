//! Isolation between projects: each project's containers run on an instance of its own
//! (in `berth up`, a berth-agent container made by the `docker` provider on first use),
//! never on another project's, and no project sees another's containers.

mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::{docker_inspect, docker_lines, wait_for, wait_for_opt, Berth, ProjectUser, IMAGE};

fn create(berth: &Berth, user: &ProjectUser, name: &str) -> String {
    let v = berth.osc_json_as(
        user,
        &[
            "container-create",
            "--daemon",
            "--image",
            IMAGE,
            "--cmd",
            "sleep 600",
            "--name",
            name,
            "--label",
            "berth.test=isolation",
        ],
    );
    let id = v["uuid"]
        .as_str()
        .expect("create returns the uuid")
        .to_owned();
    // The project had no instance: the container is accepted and waits for one.
    assert_eq!(v["status"], "Creating", "{v}");
    assert_eq!(v["task_state"], "waiting_for_instance", "{v}");
    id
}

fn wait_running(berth: &Berth, user: &ProjectUser, id: &str) -> Value {
    let mut last = Value::Null;
    wait_for_opt(Duration::from_secs(120), || {
        let v = berth.osc_json_as(user, &["container-show", id]);
        last = v.clone();
        (v["status"] == "Running" && v["task_state"].is_null()).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "container {id} never ran; last seen: {last}\nberth log:\n{}",
            berth.log()
        )
    })
}

fn instance_label(id: &str) -> String {
    docker_inspect(id, "{{index .Config.Labels \"berth.instance\"}}")
        .unwrap_or_else(|| panic!("container berth-{id} exists on the engine"))
}

fn assert_not_found(out: Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        err.contains("404") || err.to_lowercase().contains("not found"),
        "{what}: expected not found, got: {err}"
    );
}

fn each_project_gets_an_instance_of_its_own_and_never_sees_another_projects_containers(
    berth: Berth,
) {
    let alice = berth.project_user("isolation-alpha", "alice", "member");
    let bob = berth.project_user("isolation-beta", "bob", "member");

    // Two concurrent creates of alpha (and one of beta): both of alpha's wait for the
    // same instance rather than each starting one.
    let (a1, a2, b1) = std::thread::scope(|s| {
        let a1 = s.spawn(|| create(&berth, &alice, "web"));
        let a2 = s.spawn(|| create(&berth, &alice, "only-alpha"));
        let b1 = s.spawn(|| create(&berth, &bob, "web"));
        (a1.join().unwrap(), a2.join().unwrap(), b1.join().unwrap())
    });

    for (user, id) in [(&alice, &a1), (&alice, &a2), (&bob, &b1)] {
        wait_running(&berth, user, id);
    }

    // Each tenant container carries its project's instance; the two projects' are
    // different, and neither is the admin's host.
    let (ia1, ia2, ib) = (
        instance_label(&a1),
        instance_label(&a2),
        instance_label(&b1),
    );
    assert_eq!(ia1, ia2, "alpha's containers share alpha's one instance");
    assert_ne!(ia1, ib, "alpha and beta must not share an instance");
    assert_ne!(ia1, berth.instance);
    assert_ne!(ib, berth.instance);

    // Each of those instances is a berth-agent container on the host, made through the
    // host's agent, running with the project's instance id.
    let mut made = berth.docker_instances();
    made.sort();
    let mut expected = vec![ia1.clone(), ib.clone()];
    expected.sort();
    assert_eq!(made, expected, "one agent container per project");
    for instance in &made {
        assert_eq!(
            docker_inspect(instance, "{{.State.Status}}").as_deref(),
            Some("running")
        );
        assert_eq!(
            docker_inspect(instance, "{{.HostConfig.NetworkMode}}").as_deref(),
            Some("host")
        );
    }
    // Tenant containers get neither host networking nor host mounts.
    for id in [&a1, &a2, &b1] {
        assert_ne!(
            docker_inspect(id, "{{.HostConfig.NetworkMode}}").as_deref(),
            Some("host")
        );
        assert_eq!(
            docker_inspect(id, "{{len .Mounts}}").as_deref(),
            Some("0"),
            "tenant container {id} has no mounts"
        );
    }

    // beta sees none of alpha's containers: not by id, not by name, not in a list.
    assert_not_found(
        berth.osc_as(&bob, &["container-show", &a1]),
        "beta showing alpha's container by id",
    );
    assert_not_found(
        berth.osc_as(&bob, &["container-show", "only-alpha"]),
        "beta showing alpha's container by name",
    );
    let beta_web = berth.osc_json_as(&bob, &["container-show", "web"]);
    assert_eq!(beta_web["uuid"], b1.as_str(), "beta's 'web' is its own");
    let listed: Vec<String> = berth
        .osc_json_as(&bob, &["container-list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["uuid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, vec![b1.clone()]);
    // And the other way round.
    assert_not_found(
        berth.osc_as(&alice, &["container-show", &b1]),
        "alpha showing beta's container by id",
    );
    let alpha_list = berth.osc_json_as(&alice, &["container-list"]);
    assert!(
        alpha_list
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["uuid"] != b1.as_str()),
        "{alpha_list}"
    );

    // A port published by a container on beta's instance is reached on the host's
    // address, as on any instance.
    let port = support::free_port();
    let site = berth.osc_json_as(
        &bob,
        &[
            "container-create",
            "--daemon",
            "--port",
            &format!("pub:{port}:80"),
            "--image",
            IMAGE,
            "--cmd",
            "httpd -f -p 80 -h /www",
            "--name",
            "site",
            "--label",
            "berth.test=isolation",
        ],
    );
    let site = site["uuid"].as_str().unwrap().to_owned();
    wait_running(&berth, &bob, &site);
    assert_eq!(
        instance_label(&site),
        ib,
        "beta's second container joins beta's instance"
    );
    let page = wait_for(
        "the page through the host port",
        Duration::from_secs(30),
        || {
            let resp = support::http()
                .get(format!("http://127.0.0.1:{port}/"))
                .send()
                .ok()?;
            resp.status()
                .is_success()
                .then(|| resp.text().unwrap_or_default())
        },
    );
    assert_eq!(page, "hello from berth");

    // A tenant cannot ask for the agent containers' privileges: the API has no field
    // for them, and refuses the body rather than ignore it.
    let token = berth.token_as(&bob);
    let refused = support::http()
        .post(format!("{}/v1/containers", berth.url))
        .header("X-Auth-Token", &token)
        .json(&serde_json::json!({
            "image": IMAGE,
            "command": ["sleep", "600"],
            "labels": {"berth.test": "isolation"},
            "infra": {
                "host_network": true,
                "binds": [{"host_path": "/var/run/docker.sock", "container_path": "/var/run/docker.sock"}]
            }
        }))
        .send()
        .unwrap();
    assert_eq!(
        refused.status().as_u16(),
        400,
        "{}",
        refused.text().unwrap()
    );
    let listed = berth.osc_json_as(&bob, &["container-list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    // When the deployment goes, so do the agent containers and their containers.
    drop(berth);
    for id in [&ia1, &ib, &a1, &a2, &b1] {
        let left = docker_lines(&["ps", "-aq", "--filter", &format!("name=^berth-{id}$")]);
        assert!(left.is_empty(), "berth-{id} was left on the engine");
    }
}

#[test]
fn each_project_gets_an_instance_of_its_own_and_never_sees_another_projects_containers_on_sqlite() {
    each_project_gets_an_instance_of_its_own_and_never_sees_another_projects_containers(
        Berth::start(),
    );
}

#[test]
fn each_project_gets_an_instance_of_its_own_and_never_sees_another_projects_containers_on_postgresql(
) {
    let pg = support::PgDatabase::create();
    each_project_gets_an_instance_of_its_own_and_never_sees_another_projects_containers(
        Berth::start_with(Some(pg.url.clone())),
    );
}

#[test]
fn the_admin_project_keeps_the_hosts_own_agent() {
    let berth = Berth::start();
    let v = berth.osc_json(&[
        "container-create",
        "--daemon",
        "--image",
        IMAGE,
        "--cmd",
        "sleep 600",
        "--label",
        "berth.test=isolation",
    ]);
    let id = v["uuid"].as_str().unwrap().to_owned();
    berth.wait_status(&id, "Running");
    assert_eq!(instance_label(&id), berth.instance);
    assert!(
        berth.docker_instances().is_empty(),
        "no instance is made for the admin project"
    );
    // It runs on the host's own engine, through the host's agent.
    wait_for(
        "the container on the engine",
        Duration::from_secs(5),
        || docker_inspect(&id, "{{.State.Running}}").filter(|s| s == "true"),
    );
}

#[test]
fn a_projects_instance_reconnects_after_berth_up_restarts_on_a_new_relay_port() {
    let mut berth = Berth::start();
    let carol = berth.project_user("isolation-gamma", "carol", "member");
    let id = create(&berth, &carol, "survivor");
    wait_running(&berth, &carol, &id);
    let instance = instance_label(&id);

    // The relay listens on port 0, so the restarted deployment's relay has another
    // address: the instance's agent must be started anew to reach it.
    berth.restart();
    // The API moved too: carol's environment must name its new address.
    let carol = berth.project_user("isolation-gamma", "carol", "member");
    wait_for(
        "the project's instance agent to reconnect",
        Duration::from_secs(60),
        || {
            berth
                .log()
                .lines()
                .any(|l| l.contains("agent connected with its full state") && l.contains(&instance))
                .then_some(())
        },
    );
    assert_eq!(berth.docker_instances(), vec![instance.clone()]);

    // Commands reach the container through the reconnected agent.
    let out = berth.osc_as(&carol, &["container-stop", &id, "--timeout", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the container to stop", Duration::from_secs(60), || {
        let v = berth.osc_json_as(&carol, &["container-show", &id]);
        (v["status"] == "Stopped" && v["task_state"].is_null()).then_some(())
    });
    assert_eq!(instance_label(&id), instance);
}

/// The database itself refuses to place a container on another project's instance,
/// whatever the code above it does.
fn the_database_refuses_a_cross_project_placement(db: &berth_service::db::Db) {
    use berth_service::db::containers as q;
    use berth_service::db::models::{ContainerRow, InstanceRow, ProjectRow};
    use berth_service::db::{identity, instances, now};
    let mut conn = db.conn().unwrap();
    for p in ["pa", "pb"] {
        identity::insert_project(
            &mut conn,
            &ProjectRow {
                id: p.into(),
                name: p.into(),
                domain_id: "default".into(),
                description: String::new(),
                enabled: true,
                created_at: now(),
            },
        )
        .unwrap();
    }
    instances::insert(
        &mut conn,
        &InstanceRow {
            id: "ia".into(),
            project_id: "pa".into(),
            name: "ia".into(),
            provider: "docker".into(),
            status: "active".into(),
            status_reason: None,
            address: "127.0.0.1".into(),
            availability_zone: "nova".into(),
            cpus: 1.0,
            memory_mib: 0,
            disk_gb: 0,
            agent_connected: true,
            agent_seen_at: None,
            created_at: now(),
            updated_at: now(),
            cpu_used: 0.0,
            memory_used_mib: 0,
            disk_used_gb: 0,
            container_count: 0,
        },
    )
    .unwrap();
    let container = |id: &str, project: &str| ContainerRow {
        id: id.into(),
        project_id: project.into(),
        user_id: "u".into(),
        name: id.into(),
        image: IMAGE.into(),
        command: "[]".into(),
        entrypoint: None,
        status: "Creating".into(),
        status_reason: None,
        status_detail: None,
        task_state: None,
        cpu: 0.0,
        memory_mib: 0,
        environment: "{}".into(),
        labels: "{}".into(),
        requested_ports: "[]".into(),
        workdir: None,
        hostname: None,
        restart_policy: "no".into(),
        restart_max_retries: 0,
        interactive: false,
        tty: false,
        auto_remove: false,
        run_requested: false,
        instance_id: Some("ia".into()),
        runtime_id: None,
        started_at: None,
        created_at: now(),
        updated_at: now(),
        exit_code: None,
        finished_at: None,
        stdin_once: false,
        run_user: None,
        docker_config: None,
        privileges: None,
        registry_id: None,
    };
    q::insert(&mut conn, &container("own", "pa"), &[]).unwrap();
    let err = q::insert(&mut conn, &container("foreign", "pb"), &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("containers_instance_of_own_project"),
        "{err}"
    );
    assert!(q::get(&mut conn, "foreign").unwrap().is_none());
}

#[test]
fn the_database_refuses_a_cross_project_placement_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = berth_service::db::Db::connect(&format!(
        "sqlite://{}",
        dir.path().join("t.sqlite").display()
    ))
    .unwrap();
    the_database_refuses_a_cross_project_placement(&db);
}

#[test]
fn the_database_refuses_a_cross_project_placement_on_postgresql() {
    let pg = support::PgDatabase::create();
    let db = berth_service::db::Db::connect(&pg.url).unwrap();
    the_database_refuses_a_cross_project_placement(&db);
    drop(db);
}
