//! Release of idle instances: an instance made on demand that holds no container for
//! the idle grace period (`berth up --instance-idle-grace SECS`) is given back to its
//! provider — for the `docker` provider its agent container is removed — and never while
//! it holds a container, whatever that container's status.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{docker_inspect, wait_for_opt, Berth, ProjectUser, IMAGE};

/// The idle grace period the tests run with.
const GRACE: Duration = Duration::from_secs(4);

fn osc_json_as(berth: &Berth, user: &ProjectUser, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-f", "json"]);
    let out = berth.osc_as(user, &all);
    assert!(
        out.status.success(),
        "osc {args:?} failed:\nstdout: {}\nstderr: {}\nberth log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        berth.log()
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_container(berth: &Berth, user: &ProjectUser, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    wait_for_opt(Duration::from_secs(120), || {
        let v = osc_json_as(berth, user, &["container-show", id]);
        last = v.clone();
        (v["status"] == status && v["task_state"].is_null()).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "container {id} never reached {status}; last seen: {last}\nberth log:\n{}",
            berth.log()
        )
    })
}

/// The host view of `id`, as the admin sees it (`osc host-show`).
fn host(berth: &Berth, id: &str) -> Value {
    berth.osc_json(&["host-show", id])
}

fn an_idle_instance_is_released_after_the_grace_period_and_never_while_it_holds_a_container(
    berth: Berth,
) {
    let user = berth.project_user("release-alpha", "alice", "member");
    let created = osc_json_as(
        &berth,
        &user,
        &[
            "container-create",
            "--daemon",
            "--image",
            IMAGE,
            "--cmd",
            "sleep 600",
            "--name",
            "idle-test",
            "--label",
            "berth.test=release",
        ],
    );
    let id = created["uuid"].as_str().unwrap().to_owned();
    wait_container(&berth, &user, &id, "Running");
    let instances = osc_json_as(&berth, &user, &["instance-list"]);
    let instances = instances.as_array().unwrap();
    assert_eq!(instances.len(), 1, "{instances:?}");
    let instance = instances[0]["uuid"].as_str().unwrap().to_owned();
    assert_eq!(instances[0]["total_containers"], 1);

    // A stopped container still holds its instance: for several grace periods the
    // instance stays, with its agent container running.
    let out = berth.osc_as(&user, &["container-stop", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_container(&berth, &user, &id, "Stopped");
    let watch_until = Instant::now() + GRACE * 3;
    while Instant::now() < watch_until {
        let h = host(&berth, &instance);
        assert_eq!(
            h["status"], "active",
            "released while holding a container: {h}"
        );
        assert_eq!(
            docker_inspect(&instance, "{{.State.Status}}").as_deref(),
            Some("running"),
            "the agent container of an instance holding a container went away"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Once the container is deleted, the instance is released after the grace period:
    // its agent container is removed, it is no longer the project's, and the admin
    // sees it released.
    let out = berth.osc_as(&user, &["container-delete", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted = wait_for_opt(Duration::from_secs(60), || {
        let out = berth.osc_as(&user, &["container-show", &id]);
        (!out.status.success()).then(Instant::now)
    })
    .expect("the container is deleted");
    let released = wait_for_opt(GRACE + Duration::from_secs(60), || {
        let h = host(&berth, &instance);
        (h["status"] == "released" && docker_inspect(&instance, "{{.State.Status}}").is_none())
            .then(Instant::now)
    })
    .unwrap_or_else(|| {
        panic!(
            "the idle instance was never released: {}\nberth log:\n{}",
            host(&berth, &instance),
            berth.log()
        )
    });
    assert!(
        released.duration_since(deleted) + Duration::from_millis(500) >= GRACE,
        "released {:?} after its last container went, before the grace period of {GRACE:?}",
        released.duration_since(deleted)
    );
    let listed = osc_json_as(&berth, &user, &["instance-list"]);
    assert_eq!(
        listed,
        Value::Array(vec![]),
        "a released instance is not listed"
    );
    let hosts = berth.osc_json(&["host-list"]);
    assert!(
        hosts
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["uuid"] != instance.as_str()),
        "{hosts}"
    );
    // The admin's registered host holds nothing either, and is never released.
    assert_eq!(host(&berth, &berth.instance)["status"], "active");

    // The project's next container gets a new instance.
    let next = osc_json_as(
        &berth,
        &user,
        &[
            "container-create",
            "--daemon",
            "--image",
            IMAGE,
            "--cmd",
            "sleep 600",
            "--label",
            "berth.test=release",
        ],
    );
    let next_id = next["uuid"].as_str().unwrap().to_owned();
    wait_container(&berth, &user, &next_id, "Running");
    let now = osc_json_as(&berth, &user, &["instance-list"]);
    let now = now.as_array().unwrap();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0]["uuid"], instance.as_str());
}

fn start(database_url: Option<String>) -> Berth {
    Berth::start_with_args(
        database_url,
        &[
            "--instance-idle-grace",
            &GRACE.as_secs().to_string(),
            "--agent-lost-after",
            "120",
        ],
    )
}

#[test]
fn an_idle_instance_is_released_after_the_grace_period_and_never_while_it_holds_a_container_on_sqlite(
) {
    an_idle_instance_is_released_after_the_grace_period_and_never_while_it_holds_a_container(
        start(None),
    );
}

#[test]
fn an_idle_instance_is_released_after_the_grace_period_and_never_while_it_holds_a_container_on_postgresql(
) {
    let pg = support::PgDatabase::create();
    an_idle_instance_is_released_after_the_grace_period_and_never_while_it_holds_a_container(
        start(Some(pg.url.clone())),
    );
}
