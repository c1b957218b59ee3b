//! The container lifecycle end to end, through the real `osc`, service, relay, agent
//! and Docker engine.

mod support;

use std::time::Duration;

use support::{docker_inspect, free_port, wait_for, Berth, IMAGE};

fn create_web(berth: &Berth, port: u16) -> String {
    let v = berth.osc_json(&[
        "container-create",
        "--port",
        &format!("pub:{port}:80"),
        "--daemon",
        "--image",
        IMAGE,
        "--cmd",
        "httpd -f -p 80 -h /www",
        "--name",
        "web",
        "--label",
        "berth.test=lifecycle",
    ]);
    v["uuid"]
        .as_str()
        .expect("create returns the uuid")
        .to_owned()
}

fn fetch(port: u16) -> Option<String> {
    let resp = support::http()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .ok()?;
    resp.status()
        .is_success()
        .then(|| resp.text().unwrap_or_default())
}

fn lifecycle_works_end_to_end(berth: Berth) {
    let port = free_port();
    let id = create_web(&berth, port);
    let running = berth.wait_status(&id, "Running");
    assert_eq!(running["name"], "web");
    assert_eq!(
        docker_inspect(&id, "{{.State.Status}}").as_deref(),
        Some("running")
    );

    // The page comes through the published host port.
    let page = wait_for(
        "the page through the host port",
        Duration::from_secs(30),
        || fetch(port),
    );
    assert_eq!(page, "hello from berth");

    // container-show prints the ports as the seed does: [IP:HOSTPORT].
    let table = berth.osc_ok(&["container-show", "web"]);
    let ports_line = table
        .lines()
        .find(|l| l.contains("ports") && !l.contains("published"))
        .unwrap_or_default();
    assert!(
        ports_line.contains(&format!("[127.0.0.1:{port}]")),
        "show output:\n{table}"
    );

    // list shows it.
    let list = berth.osc_json(&["container-list"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["uuid"] == id.as_str()),
        "{list}"
    );

    // PATCH: rename, and change memory on the live container.
    berth.osc_ok(&[
        "container-update",
        "web",
        "--name",
        "web2",
        "--memory",
        "256",
    ]);
    let updated = berth.show(&id);
    assert_eq!(updated["name"], "web2");
    assert_eq!(updated["memory"], "256");
    assert_eq!(
        docker_inspect(&id, "{{.HostConfig.Memory}}").as_deref(),
        Some("268435456")
    );

    // stop → Stopped, and Docker agrees.
    berth.osc_ok(&["container-stop", &id, "--timeout", "1"]);
    berth.wait_status(&id, "Stopped");
    assert_eq!(
        docker_inspect(&id, "{{.State.Status}}").as_deref(),
        Some("exited")
    );

    // start → Running.
    berth.osc_ok(&["container-start", &id]);
    berth.wait_status(&id, "Running");
    let started_before = docker_inspect(&id, "{{.State.StartedAt}}").unwrap();

    // restart → Running again, with a new start time.
    berth.osc_ok(&["container-restart", &id, "--timeout", "1"]);
    wait_for(
        "the restart to take effect",
        Duration::from_secs(60),
        || {
            let v = berth.show(&id);
            let started = docker_inspect(&id, "{{.State.StartedAt}}").unwrap();
            (v["status"] == "Running" && v["task_state"].is_null() && started != started_before)
                .then_some(())
        },
    );

    // pause / unpause.
    berth.osc_ok(&["container-pause", &id]);
    berth.wait_status(&id, "Paused");
    assert_eq!(
        docker_inspect(&id, "{{.State.Status}}").as_deref(),
        Some("paused")
    );
    berth.osc_ok(&["container-unpause", &id]);
    berth.wait_status(&id, "Running");

    // logs: httpd logs nothing by default, so make a container that does.
    let talker = berth.osc_json(&[
        "container-create",
        "--daemon",
        "--image",
        IMAGE,
        "--cmd",
        "sh -c 'echo out-line; echo err-line >&2; sleep 300'",
        "--label",
        "berth.test=lifecycle",
    ]);
    let talker = talker["uuid"].as_str().unwrap().to_owned();
    berth.wait_status(&talker, "Running");
    let logs = wait_for("the logs", Duration::from_secs(20), || {
        let l = berth.osc_ok(&["container-logs", &talker]);
        (l.contains("out-line") && l.contains("err-line")).then_some(l)
    });
    assert!(logs.contains("out-line"));
    let only_err = berth.osc_ok(&["container-logs", &talker, "--stderr"]);
    assert!(
        only_err.contains("err-line") && !only_err.contains("out-line"),
        "{only_err}"
    );

    // kill → the process dies and the container is recorded as Stopped.
    berth.osc_ok(&["container-kill", &talker, "--signal", "SIGKILL"]);
    let killed = berth.wait_status(&talker, "Stopped");
    assert!(
        killed["status_detail"]
            .as_str()
            .unwrap_or_default()
            .contains("137"),
        "{killed}"
    );

    // delete: a running container needs --stop (or --force); afterwards Docker has nothing.
    let refused = berth.osc(&["container-delete", &id]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Running"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    berth.osc_ok(&["container-delete", &id, "--stop"]);
    berth.osc_ok(&["container-delete", &talker]);
    wait_for(
        "both containers to be gone",
        Duration::from_secs(60),
        || {
            let list = berth.osc_json(&["container-list"]);
            (list.as_array().unwrap().is_empty() && berth.docker_containers().is_empty())
                .then_some(())
        },
    );
    assert!(docker_inspect(&id, "{{.Id}}").is_none());
    let gone = berth.osc(&["container-show", &id]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("404"));
}

#[test]
fn lifecycle_works_end_to_end_on_sqlite() {
    lifecycle_works_end_to_end(Berth::start());
}

#[test]
fn lifecycle_works_end_to_end_on_postgresql() {
    let db = support::PgDatabase::create();
    lifecycle_works_end_to_end(Berth::start_with(Some(db.url.clone())));
}

#[test]
fn a_missing_image_ends_in_error_with_a_reason_and_leaves_no_docker_container() {
    let berth = Berth::start();
    let v = berth.osc_json(&[
        "container-create",
        "--daemon",
        "--image",
        "berth-test/no-such-image:1",
        "--cmd",
        "true",
    ]);
    let id = v["uuid"].as_str().unwrap().to_owned();
    let failed = berth.wait_status(&id, "Error");
    let reason = failed["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("berth-test/no-such-image:1"),
        "reason: {reason}"
    );
    assert!(berth.docker_containers().is_empty());
    assert!(docker_inspect(&id, "{{.Id}}").is_none());
    // It stays in Error: no retry loop.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(berth.show(&id)["status"], "Error");
}

#[test]
fn state_survives_sigkill_and_restart_including_exits_while_down() {
    let mut berth = Berth::start();
    let keep = berth.osc_json(&[
        "container-create",
        "--daemon",
        "--image",
        IMAGE,
        "--cmd",
        "sleep 600",
        "--name",
        "keep",
    ]);
    let keep = keep["uuid"].as_str().unwrap().to_owned();
    let exits = berth.osc_json(&[
        "container-create",
        "--daemon",
        "--image",
        IMAGE,
        "--cmd",
        "sleep 600",
        "--name",
        "exits",
    ]);
    let exits = exits["uuid"].as_str().unwrap().to_owned();
    let made = berth.osc_json(&[
        "container-create",
        "--image",
        IMAGE,
        "--cmd",
        "true",
        "--name",
        "made",
    ]);
    let made = made["uuid"].as_str().unwrap().to_owned();
    berth.wait_status(&keep, "Running");
    berth.wait_status(&exits, "Running");
    berth.wait_status(&made, "Created");

    berth.kill9();
    // While Berth is down, one container exits.
    support::docker_lines(&["kill", &format!("berth-{exits}")]);

    berth.restart();
    berth.wait_status(&keep, "Running");
    berth.wait_status(&exits, "Stopped");
    berth.wait_status(&made, "Created");
    let list = berth.osc_json(&["container-list"]);
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");
}
