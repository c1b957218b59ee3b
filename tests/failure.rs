//! Lost instances: when an instance's machine fails (its agent container is killed) its
//! containers become Unknown with a reason naming the instance, and Error once the
//! machine is gone (its agent container removed); the admin sees why in
//! `GET /v1/hosts/{id}`. A machine that comes back restores the truth through its
//! agent's full state.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{docker_inspect, docker_lines, wait_for_opt, Berth, ProjectUser, IMAGE};

/// Waits until `check` accepts the container's view.
fn wait_container(
    berth: &Berth,
    user: &ProjectUser,
    id: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let mut last = Value::Null;
    wait_for_opt(Duration::from_secs(90), || {
        let v = berth.osc_json_as(user, &["container-show", id]);
        last = v.clone();
        check(&v).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "container {id} never became {what}; last seen: {last}\nberth log:\n{}",
            berth.log()
        )
    })
}

/// Removes what is left on the engine of the instance's containers: with the instance's
/// agent container gone, no agent and no `Berth` clean-up knows about them.
struct Leftovers(String);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let ids = docker_lines(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=berth.instance={}", self.0),
        ]);
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = std::process::Command::new("docker").args(&args).output();
        }
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &format!("berth-{}", self.0)])
            .output();
    }
}

fn a_killed_instance_marks_its_containers_unknown_then_error_once_it_is_gone(berth: Berth) {
    let user = berth.project_user("failure-alpha", "alice", "member");
    let created = berth.osc_json_as(
        &user,
        &[
            "container-create",
            "--daemon",
            "--image",
            IMAGE,
            "--cmd",
            "sleep 600",
            "--name",
            "doomed",
            "--label",
            "berth.test=failure",
        ],
    );
    let id = created["uuid"].as_str().unwrap().to_owned();
    wait_container(&berth, &user, &id, "Running", |v| {
        v["status"] == "Running" && v["task_state"].is_null()
    });
    let instances = berth.osc_json_as(&user, &["instance-list"]);
    let instance = instances[0]["uuid"].as_str().unwrap().to_owned();
    let _leftovers = Leftovers(instance.clone());
    assert_eq!(
        docker_inspect(&instance, "{{.State.Status}}").as_deref(),
        Some("running")
    );
    let h = berth.osc_json(&["host-show", &instance]);
    assert_eq!(h["status"], "active", "{h}");
    assert_eq!(h["agent_connected"], true, "{h}");

    // The machine fails: the container's state is unknown, and the reason names the
    // instance.
    docker_lines(&["kill", &format!("berth-{instance}")]);
    let unknown = wait_container(&berth, &user, &id, "Unknown", |v| v["status"] == "Unknown");
    let reason = unknown["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&instance) && reason.contains("exited"),
        "the reason says which instance and why: {reason}"
    );
    let h = berth.osc_json(&["host-show", &instance]);
    assert_eq!(h["status"], "error", "{h}");
    assert_eq!(h["agent_connected"], false, "{h}");
    assert!(h["agent_seen_at"].is_string(), "{h}");
    let why = h["status_reason"].as_str().unwrap_or_default();
    assert!(why.contains("exited"), "the admin sees why: {h}");
    let listed = berth.osc_json(&["host-list"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["uuid"] == instance.as_str())
        .unwrap_or_else(|| panic!("host-list shows the failed instance: {listed}"))
        .clone();
    assert_eq!(row["status"], "error");

    // The machine comes back: its agent reports its full state again, and the truth
    // is restored — the instance is active and the container Running.
    docker_lines(&["start", &format!("berth-{instance}")]);
    let back = wait_container(&berth, &user, &id, "Running again", |v| {
        v["status"] == "Running"
    });
    assert!(
        !back["status_reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&instance),
        "{back}"
    );
    let h = berth.osc_json(&["host-show", &instance]);
    assert_eq!(h["status"], "active", "{h}");
    assert_eq!(h["agent_connected"], true, "{h}");
    assert!(h["status_reason"].is_null(), "{h}");

    // It fails again, and this time it is gone: nothing of the container is left, so
    // it is in Error.
    docker_lines(&["kill", &format!("berth-{instance}")]);
    wait_container(&berth, &user, &id, "Unknown again", |v| {
        v["status"] == "Unknown"
    });
    docker_lines(&["rm", "-f", &format!("berth-{instance}")]);
    let error = wait_container(&berth, &user, &id, "Error", |v| v["status"] == "Error");
    let reason = error["status_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&instance) && reason.contains("gone"),
        "the reason says the instance is gone: {reason}"
    );
    let h = berth.osc_json(&["host-show", &instance]);
    assert_eq!(h["status"], "error", "{h}");
    assert!(
        h["status_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("no longer exists"),
        "{h}"
    );
    // The container in Error can be deleted, as its reason says.
    let out = berth.osc_as(&user, &["container-delete", &id]);
    assert!(
        out.status.success(),
        "{}\nberth log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        berth.log()
    );
    wait_for_opt(Duration::from_secs(60), || {
        (!berth
            .osc_as(&user, &["container-show", &id])
            .status
            .success())
        .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the container was never deleted\nberth log:\n{}",
            berth.log()
        )
    });
}

fn start(database_url: Option<String>) -> Berth {
    Berth::start_with_args(
        database_url,
        &["--instance-idle-grace", "300", "--agent-lost-after", "3"],
    )
}

#[test]
fn a_killed_instance_marks_its_containers_unknown_then_error_once_it_is_gone_on_sqlite() {
    a_killed_instance_marks_its_containers_unknown_then_error_once_it_is_gone(start(None));
}

#[test]
fn a_killed_instance_marks_its_containers_unknown_then_error_once_it_is_gone_on_postgresql() {
    let pg = support::PgDatabase::create();
    a_killed_instance_marks_its_containers_unknown_then_error_once_it_is_gone(start(Some(
        pg.url.clone(),
    )));
}
