//! Capsules (pods) end to end: a real `berth up` (its own agent reconciling pods on the
//! real engine) driven by the real `osc`. The admin project's pods land on the local
//! agent, whose crash-loop backoff the tests scale down with `berth up` flags (same
//! algorithm, shorter durations).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use support::{docker_lines, log_tail, wait_for_opt, Berth, IMAGE};

/// Backoff for these tests: 0 (immediate), then 1.5 s doubling to 6 s.
const BACKOFF_BASE_MS: u64 = 1500;
const BACKOFF_MAX_MS: u64 = 6000;

fn start() -> Berth {
    Berth::start_with_args(
        None,
        &[
            "--pod-backoff-base-ms",
            &BACKOFF_BASE_MS.to_string(),
            "--pod-backoff-max-ms",
            &BACKOFF_MAX_MS.to_string(),
            // The engine has no pause image offline; the test image blocks as well.
            "--pod-infra-image",
            IMAGE,
            "--pod-infra-command",
            "sleep 2147483647",
        ],
    )
}

/// Template files of one test.
struct Templates(tempfile::TempDir);

impl Templates {
    fn new() -> Templates {
        Templates(tempfile::tempdir().unwrap())
    }

    /// Writes `template` as YAML (a `.yaml` name) or JSON (anything else).
    fn write(&self, name: &str, template: &Value) -> PathBuf {
        let path = self.0.path().join(name);
        let text = if name.ends_with(".yaml") {
            serde_yaml::to_string(template).unwrap()
        } else {
            serde_json::to_string_pretty(template).unwrap()
        };
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn create(b: &Berth, file: &Path, wait: bool) -> Value {
    let file = file.to_str().unwrap();
    let mut args = vec!["capsule-create", "-f", file];
    if wait {
        args.push("--wait");
    }
    b.osc_json(&args)
}

fn show(b: &Berth, id: &str) -> Value {
    b.osc_json(&["capsule-show", id])
}

/// Polls `capsule-show` until `done` holds (120 s at most).
fn wait_capsule(b: &Berth, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    wait_for_opt(Duration::from_secs(120), || {
        let v = show(b, id);
        let ok = done(&v);
        last = v.clone();
        ok.then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "capsule {id}: timed out waiting for {what}; last seen:\n{}\nberth log (tail):\n{}",
            serde_json::to_string_pretty(&last).unwrap(),
            log_tail(&b.log(), 80)
        )
    })
}

fn uuid(v: &Value) -> String {
    v["uuid"]
        .as_str()
        .unwrap_or_else(|| panic!("no uuid in {v}"))
        .to_owned()
}

/// The status of container `name` (app or init) in a capsule view's `pod_status`.
fn container_status<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    ["container_statuses", "init_container_statuses"]
        .iter()
        .filter_map(|list| v["pod_status"][list].as_array())
        .flatten()
        .find(|c| c["name"] == name)
}

fn restart_count(v: &Value, name: &str) -> i64 {
    container_status(v, name)
        .and_then(|c| c["restart_count"].as_i64())
        .unwrap_or(0)
}

fn is_running(v: &Value, name: &str) -> bool {
    container_status(v, name).is_some_and(|c| c["state"]["running"].is_object())
}

fn phase(v: &Value) -> &str {
    v["pod_status"]["phase"].as_str().unwrap_or("")
}

/// The engine's containers of a pod: (name in the pod, engine id), infra included.
fn engine_containers(pod: &str) -> Vec<(String, String)> {
    docker_lines(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label=berth.pod={pod}"),
        "--format",
        "{{.Label \"berth.pod.container\"}} {{.ID}}",
    ])
    .into_iter()
    .filter_map(|l| {
        l.split_once(' ')
            .map(|(n, id)| (n.to_owned(), id.to_owned()))
    })
    .collect()
}

/// The engine id of the (single, newest) container `name` of a pod.
fn engine_id(pod: &str, name: &str) -> Option<String> {
    engine_containers(pod)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, id)| id)
}

fn docker_inspect(id: &str, format: &str) -> String {
    docker_lines(&["inspect", "--format", format, id]).join("\n")
}

fn docker_exec(id: &str, command: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("docker")
        .args(["exec", id])
        .args(command)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

/// A Kubernetes v1 Pod.
fn pod(name: &str, restart_policy: &str, containers: Value, volumes: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": restart_policy, "containers": containers, "volumes": volumes}
    })
}

#[test]
fn two_containers_reach_each_other_on_localhost_and_share_an_empty_dir() {
    let b = start();
    let t = Templates::new();
    let file = t.write(
        "pod.yaml",
        &pod(
            "pair",
            "Always",
            json!([
                {"name": "web", "image": IMAGE,
                 "command": sh("echo hello-from-web > /www/index.html && exec httpd -f -p 8080 -h /www"),
                 "ports": [{"containerPort": 8080}],
                 "volumeMounts": [{"name": "shared", "mountPath": "/www"}]},
                {"name": "client", "image": IMAGE,
                 "command": sh("while true; do wget -q -O /data/fetched.tmp http://127.0.0.1:8080/index.html && mv /data/fetched.tmp /data/fetched; sleep 1; done"),
                 "volumeMounts": [{"name": "shared", "mountPath": "/data"}]}
            ]),
            json!([{"name": "shared", "emptyDir": {}}]),
        ),
    );
    let created = create(&b, &file, true);
    assert_eq!(created["status"], "Running", "{created}");
    let id = uuid(&created);

    // The client fetched the page from web over localhost and wrote it into the shared
    // volume, where web sees it.
    let web = engine_id(&id, "web").expect("web container on the engine");
    let fetched = wait_for_opt(Duration::from_secs(60), || {
        let (ok, out) = docker_exec(&web, &["cat", "/www/fetched"]);
        (ok && out.contains("hello-from-web")).then_some(out)
    });
    assert!(
        fetched.is_some(),
        "web never saw /www/fetched written by client; engine containers: {:?}\nlog:\n{}",
        engine_containers(&id),
        log_tail(&b.log(), 60)
    );

    // Both app containers join the infra container's network namespace.
    let infra = engine_containers(&id)
        .into_iter()
        .find(|(n, _)| n != "web" && n != "client")
        .map(|(_, id)| id)
        .expect("an infra container holds the pod's namespace");
    for name in ["web", "client"] {
        let id_ = engine_id(&id, name).unwrap();
        let mode = docker_inspect(&id_, "{{.HostConfig.NetworkMode}}");
        assert_eq!(mode, format!("container:{infra}"), "{name}'s network mode");
    }

    // Show gives each container's runtime inspect data; list shows the capsule.
    let v = show(&b, &id);
    let containers = v["containers"].as_array().expect("containers in show");
    assert_eq!(containers.len(), 2, "{v}");
    for c in containers {
        assert!(
            c["inspect"]["Id"].is_string() || c["inspect"]["State"].is_object(),
            "no inspect data for {c}"
        );
    }
    let list = b.osc_json(&["capsule-list"]);
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["uuid"] == id.as_str()),
        "{list}"
    );
    let table = b.osc_ok(&["capsule-list"]);
    assert!(table.contains(&id) && table.contains("pair"), "{table}");
    let value = b.osc_ok(&["capsule-show", &id, "-f", "value", "-c", "status"]);
    assert_eq!(value.trim(), "Running");
}

#[test]
fn seed_v1beta2_two_container_manifest_runs() {
    let b = start();
    let t = Templates::new();
    let manifest = json!({
        "version": "v1beta2",
        "id": "guestbook",
        "containers": [
            {"name": "frontend", "image": IMAGE,
             "command": ["sh", "-c", "echo front > /srv/front && exec httpd -f -p 8081 -h /srv"],
             "ports": [{"containerPort": 8081}],
             "volumeMounts": [{"name": "data", "mountPath": "/srv"}]},
            {"name": "backend", "image": IMAGE,
             "command": ["sh", "-c", "while true; do wget -q -O /store/seen http://localhost:8081/front; sleep 1; done"],
             "env": [{"name": "ROLE", "value": "backend"}],
             "volumeMounts": [{"name": "data", "mountPath": "/store"}]}
        ],
        "volumes": [{"name": "data", "source": {"emptyDir": {}}}],
        "restartPolicy": {"always": {}}
    });
    let created = create(&b, &t.write("manifest.yaml", &manifest), true);
    assert_eq!(created["status"], "Running", "{created}");
    let id = uuid(&created);
    let v = wait_capsule(&b, &id, "both containers running", |v| {
        is_running(v, "frontend") && is_running(v, "backend")
    });
    assert_eq!(phase(&v), "Running");
    let backend = engine_id(&id, "backend").unwrap();
    let env = docker_inspect(&backend, "{{json .Config.Env}}");
    assert!(env.contains("ROLE=backend"), "{env}");
    let seen = wait_for_opt(Duration::from_secs(60), || {
        let (ok, out) = docker_exec(&backend, &["cat", "/store/seen"]);
        (ok && out.contains("front")).then_some(())
    });
    assert!(seen.is_some(), "backend never fetched frontend's page");
}

#[test]
fn on_failure_and_never_differ_on_exit_zero_and_exit_one() {
    let b = start();
    let t = Templates::new();
    let one = |name: &str, policy: &str, code: u8| {
        let file = t.write(
            &format!("{name}.json"),
            &pod(
                name,
                policy,
                json!([{"name": "job", "image": IMAGE, "command": sh(&format!("sleep 1; exit {code}"))}]),
                json!([]),
            ),
        );
        uuid(&create(&b, &file, false))
    };
    let onfailure_ok = one("onfailure-ok", "OnFailure", 0);
    let onfailure_bad = one("onfailure-bad", "OnFailure", 1);
    let never_ok = one("never-ok", "Never", 0);
    let never_bad = one("never-bad", "Never", 1);

    // OnFailure, exit 1: restarted (the first restart at once, then with backoff).
    let v = wait_capsule(&b, &onfailure_bad, "a restart after exit 1", |v| {
        restart_count(v, "job") >= 2
    });
    assert_eq!(phase(&v), "Running", "a restarting pod is Running: {v}");

    // OnFailure, exit 0: Completed, Succeeded, never restarted.
    let v = wait_capsule(&b, &onfailure_ok, "Succeeded", |v| phase(v) == "Succeeded");
    let job = container_status(&v, "job").unwrap();
    assert_eq!(job["state"]["terminated"]["reason"], "Completed", "{v}");
    assert_eq!(job["state"]["terminated"]["exit_code"], 0);
    assert_eq!(job["restart_count"], 0);

    // Never, exit 0: Succeeded; exit 1: Failed with reason Error; neither restarted.
    let v = wait_capsule(&b, &never_ok, "Succeeded", |v| phase(v) == "Succeeded");
    assert_eq!(restart_count(&v, "job"), 0);
    let v = wait_capsule(&b, &never_bad, "Failed", |v| phase(v) == "Failed");
    let job = container_status(&v, "job").unwrap();
    assert_eq!(job["state"]["terminated"]["reason"], "Error", "{v}");
    assert_eq!(job["state"]["terminated"]["exit_code"], 1);
    assert_eq!(job["restart_count"], 0);

    // Still not restarted a few backoff periods later.
    std::thread::sleep(Duration::from_millis(3 * BACKOFF_BASE_MS));
    for id in [&onfailure_ok, &never_ok, &never_bad] {
        assert_eq!(restart_count(&show(&b, id), "job"), 0, "{id} was restarted");
    }
}

#[test]
fn restart_backoff_doubles_from_the_configured_base() {
    let b = start();
    let t = Templates::new();
    let file = t.write(
        "crash.json",
        &pod(
            "crash",
            "Always",
            json!([{"name": "crash", "image": IMAGE, "command": sh("sleep 1; exit 3")}]),
            json!([]),
        ),
    );
    let id = uuid(&create(&b, &file, false));
    // Each run's (start, finish) as the status reports it; runs last ≥ 1 s, so polling
    // sees every one in `state` or `last_state`.
    let mut runs: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut saw_crash_loop = false;
    let deadline = Instant::now() + Duration::from_secs(150);
    while runs.len() < 5 && Instant::now() < deadline {
        let v = show(&b, &id);
        if let Some(c) = container_status(&v, "crash") {
            saw_crash_loop |= c["state"]["waiting"]["reason"] == "CrashLoopBackOff";
            for state in [&c["state"], &c["last_state"]] {
                let term = &state["terminated"];
                let (Some(s), Some(f)) =
                    (term["started_at"].as_str(), term["finished_at"].as_str())
                else {
                    continue;
                };
                let run = (s.parse().unwrap(), f.parse().unwrap());
                if !runs.contains(&run) {
                    runs.push(run);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    runs.sort();
    assert!(
        runs.len() >= 5,
        "only {} runs seen in 150 s: {runs:?}\nlog:\n{}",
        runs.len(),
        log_tail(&b.log(), 60)
    );
    assert!(
        saw_crash_loop,
        "the waiting reason was never CrashLoopBackOff"
    );
    // Delay before restart k = start of run k+1 − finish of run k.
    let delays: Vec<f64> = runs
        .windows(2)
        .map(|w| (w[1].0 - w[0].1).num_milliseconds() as f64 / 1000.0)
        .collect();
    let base = BACKOFF_BASE_MS as f64 / 1000.0;
    let max = BACKOFF_MAX_MS as f64 / 1000.0;
    // Kubelet: 0, base, 2·base, 4·base (= max here), max… Lower bounds are exact up to
    // the engine's timestamp granularity; upper bounds are generous for a loaded host.
    let expected = [0.0, base, 2.0 * base, (4.0 * base).min(max)];
    for (k, (got, want)) in delays.iter().zip(expected).enumerate() {
        assert!(
            *got >= want - 0.25,
            "restart {} came after {got:.2}s, before the backoff of {want:.2}s; delays {delays:?}",
            k + 1
        );
        assert!(
            *got <= want + 10.0,
            "restart {} came after {got:.2}s, far beyond the backoff of {want:.2}s; delays {delays:?}",
            k + 1
        );
    }
    assert!(
        delays[0] < delays[2],
        "the first restart is not at once: {delays:?}"
    );
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let b = start();
    let t = Templates::new();
    let file = t.write(
        "probe.yaml",
        &pod(
            "probed",
            "Always",
            json!([{"name": "app", "image": IMAGE,
                    "command": sh("touch /tmp/healthy; sleep 3; rm /tmp/healthy; exec sleep 3600"),
                    "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
                                      "periodSeconds": 1, "failureThreshold": 2}}]),
            json!([]),
        ),
    );
    let id = uuid(&create(&b, &file, true));
    let v = wait_capsule(&b, &id, "a restart by the liveness probe", |v| {
        restart_count(v, "app") >= 1
    });
    let app = container_status(&v, "app").unwrap();
    // The container did not exit on its own (it sleeps for an hour): it was killed.
    let last = &app["last_state"]["terminated"];
    assert!(last.is_object(), "no last_state after the restart: {v}");
    let (Some(s), Some(f)) = (last["started_at"].as_str(), last["finished_at"].as_str()) else {
        panic!("last_state without times: {v}");
    };
    let ran = f.parse::<DateTime<Utc>>().unwrap() - s.parse::<DateTime<Utc>>().unwrap();
    assert!(ran.num_milliseconds() >= 3000, "ran only {ran}: {v}");
}

#[test]
fn init_containers_run_in_order_before_app_containers() {
    let b = start();
    let t = Templates::new();
    let mut template = pod(
        "gated",
        "Always",
        json!([{"name": "app", "image": IMAGE,
                "command": sh("cp /work/order /work/seen-by-app; exec sleep 3600"),
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]}]),
        json!([{"name": "work", "emptyDir": {}}]),
    );
    template["spec"]["initContainers"] = json!([
        {"name": "first", "image": IMAGE, "command": sh("sleep 4; echo first >> /work/order"),
         "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
        {"name": "second", "image": IMAGE, "command": sh("echo second >> /work/order"),
         "volumeMounts": [{"name": "work", "mountPath": "/work"}]}
    ]);
    let id = uuid(&create(&b, &t.write("init.yaml", &template), false));

    // While the first init container runs, the app container is not started.
    let v = wait_capsule(&b, &id, "the first init container running", |v| {
        is_running(v, "first")
    });
    assert_eq!(phase(&v), "Pending", "{v}");
    assert!(!is_running(&v, "app"), "app runs before init finished: {v}");
    assert!(
        engine_id(&id, "app")
            .is_none_or(|app| docker_inspect(&app, "{{.State.Running}}") != "true"),
        "app container running on the engine during init"
    );

    let v = wait_capsule(&b, &id, "app running", |v| is_running(v, "app"));
    assert_eq!(phase(&v), "Running");
    for init in ["first", "second"] {
        let c = container_status(&v, init).unwrap();
        assert_eq!(c["state"]["terminated"]["reason"], "Completed", "{v}");
    }
    let app = engine_id(&id, "app").unwrap();
    let seen = wait_for_opt(Duration::from_secs(30), || {
        let (ok, out) = docker_exec(&app, &["cat", "/work/seen-by-app"]);
        ok.then_some(out)
    })
    .expect("app copied the init containers' file");
    assert_eq!(seen, "first\nsecond\n");

    // A failing init container with Never holds the app back for good.
    let mut failing = pod(
        "gated-fail",
        "Never",
        json!([{"name": "app", "image": IMAGE, "command": sh("exec sleep 3600")}]),
        json!([]),
    );
    failing["spec"]["initContainers"] =
        json!([{"name": "setup", "image": IMAGE, "command": sh("exit 2")}]);
    let id = uuid(&create(&b, &t.write("fail.json", &failing), false));
    let v = wait_capsule(&b, &id, "Failed", |v| phase(v) == "Failed");
    assert!(!is_running(&v, "app"), "{v}");
    assert!(engine_id(&id, "app").is_none(), "app was created: {v}");
}

/// A two-container pod whose `b` container's environment is `version`.
fn two(version: &str, b_command: &str) -> Value {
    pod(
        "upd",
        "Always",
        json!([
            {"name": "a", "image": IMAGE, "command": sh("exec sleep 3600")},
            {"name": "b", "image": IMAGE, "command": sh(b_command), "env": [{"name": "VERSION", "value": version}]}
        ]),
        json!([]),
    )
}

#[test]
fn an_update_restarts_only_the_changed_container() {
    let b = start();
    let t = Templates::new();
    let id = uuid(&create(
        &b,
        &t.write("v1.json", &two("1", "exec sleep 3600")),
        true,
    ));
    wait_capsule(&b, &id, "both running", |v| {
        is_running(v, "a") && is_running(v, "b")
    });
    let a_before = engine_id(&id, "a").unwrap();
    let a_started = docker_inspect(&a_before, "{{.State.StartedAt}}");
    let b_before = engine_id(&id, "b").unwrap();

    let file = t.write("v2.json", &two("2", "exec sleep 3600"));
    let updated = b.osc_json(&[
        "capsule-update",
        &id,
        "-f",
        file.to_str().unwrap(),
        "--wait",
    ]);
    assert_eq!(updated["status"], "Running", "{updated}");
    let v = wait_capsule(&b, &id, "b running at generation 2", |v| {
        v["pod_status"]["generation"].as_i64() >= Some(2) && is_running(v, "b")
    });

    let b_after = engine_id(&id, "b").unwrap();
    assert_ne!(b_after, b_before, "b was not replaced");
    let env = docker_inspect(&b_after, "{{json .Config.Env}}");
    assert!(env.contains("VERSION=2"), "{env}");
    assert_eq!(engine_id(&id, "a").as_deref(), Some(a_before.as_str()));
    assert_eq!(
        docker_inspect(&a_before, "{{.State.StartedAt}}"),
        a_started,
        "a was restarted"
    );
    assert_eq!(restart_count(&v, "a"), 0);
}

#[test]
fn a_bad_update_rolls_back_visibly() {
    let b = start();
    let t = Templates::new();
    let id = uuid(&create(
        &b,
        &t.write("good.json", &two("1", "exec sleep 3600")),
        true,
    ));
    let good = wait_capsule(&b, &id, "both running", |v| {
        is_running(v, "a") && is_running(v, "b")
    });
    let generation = good["pod_status"]["generation"].as_i64().unwrap();

    let file = t.write("bad.json", &two("2", "exit 1"));
    let out = b.osc(&[
        "capsule-update",
        &id,
        "-f",
        file.to_str().unwrap(),
        "--wait",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a crash-looping update succeeded");
    assert!(stderr.contains("rolled back"), "{stderr}");

    let v = wait_capsule(&b, &id, "the rollback", |v| {
        v["pod_status"]["rollback"].is_object() && is_running(v, "b")
    });
    let rollback = &v["pod_status"]["rollback"];
    assert_eq!(rollback["failed_generation"], generation + 1, "{v}");
    assert_eq!(rollback["restored_generation"], generation, "{v}");
    assert!(
        rollback["reason"].as_str().unwrap_or("").contains('b'),
        "{rollback}"
    );
    let b_now = engine_id(&id, "b").unwrap();
    let env = docker_inspect(&b_now, "{{json .Config.Env}}");
    assert!(
        env.contains("VERSION=1"),
        "b runs the old spec again: {env}"
    );
    let text = b.osc_ok(&["capsule-show", &id]);
    assert!(text.contains("rollback"), "{text}");
}

#[test]
fn restarting_berth_keeps_pods_and_their_restart_counts() {
    let mut b = start();
    let t = Templates::new();
    let file = t.write(
        "keep.json",
        &pod(
            "keep",
            "Always",
            json!([
                {"name": "steady", "image": IMAGE, "command": sh("exec sleep 3600")},
                {"name": "flaky", "image": IMAGE, "command": sh("sleep 1; exit 1")}
            ]),
            json!([]),
        ),
    );
    let id = uuid(&create(&b, &file, false));
    let v = wait_capsule(&b, &id, "two restarts of flaky", |v| {
        is_running(v, "steady") && restart_count(v, "flaky") >= 2
    });
    let before = restart_count(&v, "flaky");
    let steady = engine_id(&id, "steady").unwrap();

    b.restart();
    let v = wait_capsule(&b, &id, "the pod reported after the restart", |v| {
        is_running(v, "steady") && restart_count(v, "flaky") >= before
    });
    assert!(restart_count(&v, "flaky") >= before, "{v}");
    assert_eq!(
        engine_id(&id, "steady").as_deref(),
        Some(steady.as_str()),
        "steady was recreated"
    );
    let later = wait_capsule(&b, &id, "counting on after the restart", |v| {
        restart_count(v, "flaky") > before
    });
    assert!(restart_count(&later, "flaky") > before);
}

#[test]
fn invalid_manifests_are_refused_naming_the_field() {
    let b = start();
    let t = Templates::new();
    let k8s = |containers: Value, volumes: Value| pod("bad", "Always", containers, volumes);
    let c = |extra: Value| {
        let mut c = json!({"name": "app", "image": IMAGE});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "port out of range",
            k8s(
                json!([c(json!({"ports": [{"containerPort": 70000}]}))]),
                json!([]),
            ),
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            "missing image",
            k8s(json!([{"name": "app"}]), json!([])),
            "spec.containers[0].image",
        ),
        (
            "duplicate container names",
            k8s(json!([c(json!({})), c(json!({}))]), json!([])),
            "spec.containers[1].name",
        ),
        (
            "mount of an undefined volume",
            k8s(
                json!([c(
                    json!({"volumeMounts": [{"name": "nope", "mountPath": "/x"}]})
                )]),
                json!([]),
            ),
            "spec.containers[0].volumeMounts[0].name",
        ),
        (
            "hostPath volume",
            k8s(
                json!([c(json!({}))]),
                json!([{"name": "h", "hostPath": {"path": "/etc"}}]),
            ),
            "spec.volumes[0]",
        ),
        (
            "duplicate hostPort",
            k8s(
                json!([
                    c(json!({"ports": [{"containerPort": 80, "hostPort": 18080}]})),
                    {"name": "two", "image": IMAGE, "ports": [{"containerPort": 81, "hostPort": 18080}]}
                ]),
                json!([]),
            ),
            "spec.containers[1].ports[0].hostPort",
        ),
        (
            "bad restart policy",
            pod("bad", "Sometimes", json!([c(json!({}))]), json!([])),
            "spec.restartPolicy",
        ),
        (
            "unknown field in a Zun capsule container",
            json!({"kind": "capsule", "metadata": {"name": "zun-bad"},
                   "spec": {"containers": [{"image": IMAGE, "colour": "blue"}]}}),
            "colour",
        ),
        (
            "v1beta2 hostDir volume",
            json!({"version": "v1beta2", "id": "m",
                   "containers": [{"name": "app", "image": IMAGE}],
                   "volumes": [{"name": "h", "source": {"hostDir": {"path": "/"}}}]}),
            "volumes[0]",
        ),
        (
            "unknown kind",
            json!({"kind": "Deployment", "apiVersion": "apps/v1", "spec": {}}),
            "kind",
        ),
    ];
    for (i, (what, template, field)) in cases.iter().enumerate() {
        let file = t.write(&format!("bad{i}.yaml"), template);
        let out = b.osc(&["capsule-create", "-f", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: accepted");
        assert!(
            stderr.contains(field),
            "{what}: the error does not name {field}: {stderr}"
        );
    }
    let hostpath = {
        let file = t.write("hp.json", &cases[4].1);
        let out = b.osc(&["capsule-create", "-f", file.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(hostpath.contains("host path"), "{hostpath}");
    // A file that is not a template at all is refused before anything is sent.
    let junk = t.0.path().join("junk.yaml");
    std::fs::write(&junk, "- just\n- a list\n").unwrap();
    let out = b.osc(&["capsule-create", "-f", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("mapping"));
    // Nothing was created.
    let list = b.osc_json(&["capsule-list"]);
    assert_eq!(list, json!([]), "{list}");
}

#[test]
fn another_projects_capsule_is_not_found() {
    let b = start();
    let t = Templates::new();
    let file = t.write(
        "mine.json",
        &pod(
            "mine",
            "Always",
            json!([{"name": "app", "image": IMAGE, "command": sh("exec sleep 3600")}]),
            json!([]),
        ),
    );
    let id = uuid(&create(&b, &file, false));
    let other = b.project_user("other", "olga", "member");
    for args in [
        vec!["capsule-show", id.as_str()],
        vec!["capsule-show", "mine"],
        vec!["capsule-delete", id.as_str()],
        vec!["capsule-update", id.as_str(), "-f", file.to_str().unwrap()],
    ] {
        let out = b.osc_as(&other, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} succeeded for another project"
        );
        assert!(
            stderr.contains("404") || stderr.to_lowercase().contains("not found"),
            "{args:?}: {stderr}"
        );
    }
    let out = b.osc_as(&other, &["capsule-list", "-f", "json"]);
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list, json!([]));
    // Still there for its owner.
    assert_eq!(show(&b, &id)["uuid"], id.as_str());
}

#[test]
fn delete_leaves_no_container_on_the_engine() {
    let b = start();
    let t = Templates::new();
    let file = t.write(
        "gone.json",
        &pod(
            "gone",
            "Always",
            json!([
                {"name": "one", "image": IMAGE, "command": sh("exec sleep 3600")},
                {"name": "two", "image": IMAGE, "command": sh("exec sleep 3600")}
            ]),
            json!([{"name": "scratch", "emptyDir": {}}]),
        ),
    );
    let id = uuid(&create(&b, &file, true));
    assert!(
        engine_containers(&id).len() >= 3,
        "infra + two app containers expected: {:?}",
        engine_containers(&id)
    );
    b.osc_ok(&["capsule-delete", &id, "--wait"]);
    let out = b.osc(&["capsule-show", &id]);
    assert!(!out.status.success());
    let left = wait_for_opt(Duration::from_secs(60), || {
        engine_containers(&id).is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "containers left on the engine: {:?}",
        engine_containers(&id)
    );
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pods")
        .join(name)
}

#[test]
fn every_sample_manifest_runs_through_osc() {
    let b = start();
    // The seed's two-container v1beta2 shape, as a YAML file read by osc: web serves the
    // shared volume, writer fetches it over localhost into that volume.
    let created = create(&b, &fixture("v1beta2-two-containers.yaml"), true);
    assert_eq!(created["status"], "Running", "{created}");
    let id = uuid(&created);
    let web = engine_id(&id, "web").expect("web on the engine");
    let seen = wait_for_opt(Duration::from_secs(60), || {
        let (ok, out) = docker_exec(&web, &["cat", "/data/seen"]);
        (ok && out.contains("hello-from-writer")).then_some(())
    });
    assert!(seen.is_some(), "writer never fetched web's page");
    // The other formats, YAML and JSON.
    for name in [
        "capsule.yaml",
        "capsule.json",
        "pod-v1.yaml",
        "v1beta1.yaml",
    ] {
        let out = b.osc(&[
            "capsule-create",
            "-f",
            fixture(name).to_str().unwrap(),
            "--wait",
            "-f",
            "json",
        ]);
        assert!(
            out.status.success(),
            "{name}: {}\nlog:\n{}",
            String::from_utf8_lossy(&out.stderr),
            log_tail(&b.log(), 60)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["status"] == "Running" || phase(&v) == "Succeeded",
            "{name}: {v}"
        );
    }
}

#[test]
fn every_invalid_sample_manifest_is_refused_naming_its_field() {
    let b = start();
    let dir = fixture("");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("invalid-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let field = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name} has no '# expect: PATH' first line"))
            .trim()
            .to_owned();
        let out = b.osc(&["capsule-create", "-f", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(
            stderr.contains(&format!("{field}:")),
            "{name}: the error does not name {field}: {stderr}"
        );
        checked += 1;
    }
    assert!(
        checked >= 5,
        "only {checked} invalid samples in {}",
        dir.display()
    );
    assert_eq!(b.osc_json(&["capsule-list"]), json!([]));
}
