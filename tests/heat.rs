//! Heat drives Berth: the real heat-api and heat-engine (openstack-heat 27.0.1 from
//! PyPI) with the real Keystone of `scripts/nova-bed`, which lists Berth in its catalog
//! as `container` at `http://127.0.0.1:$BERTH_TEST_HEAT_BERTH_PORT/v1` and loads
//! `OS::Berth::Capsule` from client/heat/berth_heat. Each test runs berth-service,
//! berth-relay and an agent for the bed's tenant project on that port (one test at a
//! time: the catalog has one endpoint), then drives Heat over its REST API as the
//! tenant user.

mod support;

use std::fs::File;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Value};
use support::external::{ExternalOptions, ExternalStack};
use support::{docker_inspect, docker_lines, http, log_tail, wait_for, IMAGE};

/// The Heat bed, from the variables `scripts/nova-bed start` exports.
struct Bed {
    auth_url: String,
    heat_url: String,
    berth_port: u16,
    project: String,
    project_id: String,
    user: String,
    password: String,
    service_user: String,
    service_password: String,
    trustee_user: String,
    trustee_password: String,
}

fn bed() -> Bed {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: these tests need the Heat bed; run scripts/test, or \
                 `eval \"$(scripts/nova-bed start)\"` first"
            )
        })
    };
    Bed {
        auth_url: var("BERTH_TEST_NOVA_AUTH_URL"),
        heat_url: var("BERTH_TEST_HEAT_URL"),
        berth_port: var("BERTH_TEST_HEAT_BERTH_PORT").parse().unwrap(),
        project: var("BERTH_TEST_HEAT_PROJECT"),
        project_id: var("BERTH_TEST_HEAT_PROJECT_ID"),
        user: var("BERTH_TEST_HEAT_USER"),
        password: var("BERTH_TEST_HEAT_PASSWORD"),
        service_user: var("BERTH_TEST_HEAT_SERVICE_USER"),
        service_password: var("BERTH_TEST_HEAT_SERVICE_PASSWORD"),
        trustee_user: var("BERTH_TEST_HEAT_TRUSTEE_USER"),
        trustee_password: var("BERTH_TEST_HEAT_TRUSTEE_PASSWORD"),
    }
}

/// The label value of this test's engine containers: `berth.test=<tag>` on the Zun
/// containers, `heat-test=<tag>` on the pods' (pod labels may not start with `berth.`).
fn tag() -> &'static str {
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let run = std::env::var("BERTH_TEST_RUN_ID").unwrap_or_else(|_| "local".into());
        format!("{run}-heat-{}", suffix())
    })
}

/// Removes this test's engine containers however the test ends (a stack left behind
/// by a failed assertion goes with the bed).
struct EngineGuard;

impl Drop for EngineGuard {
    fn drop(&mut self) {
        for filter in [
            format!("label=berth.test={}", tag()),
            format!("label=heat-test={}", tag()),
        ] {
            let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            else {
                continue;
            };
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f", "-v"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

/// A short unique suffix for stack and container names.
fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

impl Bed {
    /// Issues a token: (token, body of the token).
    fn authenticate(&self, auth: Value) -> (String, Value) {
        let r = http()
            .post(format!("{}/auth/tokens?nocatalog", self.auth_url))
            .json(&json!({ "auth": auth }))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "Keystone issues a token");
        let token = r.headers()["X-Subject-Token"].to_str().unwrap().to_owned();
        (token, r.json().unwrap())
    }

    fn password(user: &str, password: &str) -> Value {
        json!({"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}})
    }

    /// The tenant user's token for its project, and its user id.
    fn tenant_token(&self) -> (String, String) {
        let (token, body) = self.authenticate(json!({
            "identity": Bed::password(&self.user, &self.password),
            "scope": {"project": {"name": self.project, "domain": {"id": "default"}}},
        }));
        (
            token,
            body["token"]["user"]["id"].as_str().unwrap().to_owned(),
        )
    }

    /// Holds the catalog's Berth port for this test: tests take turns.
    fn take_turn(&self) -> File {
        let f =
            File::create(std::env::temp_dir().join(format!("berth-heat-{}.lock", self.berth_port)))
                .unwrap();
        f.lock().unwrap();
        f
    }

    /// Berth at the catalog's `container` endpoint, with a host for the tenant project.
    fn berth(&self) -> ExternalStack {
        let mut o = ExternalOptions::new(
            &self.auth_url,
            &self.service_user,
            &self.service_password,
            "service",
        );
        o.api_port = Some(self.berth_port);
        o.host_for = Some((&self.project_id, &self.project));
        o.agent_env = vec![
            // No registry here: the infra container is the test image, blocking.
            ("BERTH_AGENT_POD_INFRA_IMAGE", IMAGE.to_owned()),
            (
                "BERTH_AGENT_POD_INFRA_COMMAND",
                "sleep 2147483647".to_owned(),
            ),
            ("BERTH_AGENT_POD_BACKOFF_BASE_MS", "500".to_owned()),
            ("BERTH_AGENT_POD_BACKOFF_MAX_MS", "2000".to_owned()),
            ("BERTH_AGENT_POD_STOP_GRACE_SECS", "1".to_owned()),
        ];
        let stack = ExternalStack::start(o);
        // Ready when the agent has reported in.
        wait_for(
            "the tenant's agent to connect",
            Duration::from_secs(60),
            || {
                stack
                    .log()
                    .contains("agent connected with its full state")
                    .then_some(())
            },
        );
        stack
    }
}

/// Heat's REST API as the tenant user.
struct Heat {
    url: String,
    token: String,
}

impl Heat {
    fn new(bed: &Bed, token: &str) -> Heat {
        Heat {
            url: format!("{}/{}", bed.heat_url, bed.project_id),
            token: token.to_owned(),
        }
    }

    fn send(&self, r: reqwest::blocking::RequestBuilder) -> (u16, Value) {
        let r = r
            .header("X-Auth-Token", &self.token)
            .header("Accept", "application/json")
            .timeout(Duration::from_secs(60))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(json!(text)))
    }

    /// Creates a stack; returns `name/id`.
    fn create(&self, name: &str, template: &Value) -> String {
        let (status, body) = self.send(http().post(format!("{}/stacks", self.url)).json(&json!({
            "stack_name": name, "template": template, "timeout_mins": 10,
        })));
        assert_eq!(status, 201, "Heat accepts stack {name}: {body}");
        format!("{name}/{}", body["stack"]["id"].as_str().unwrap())
    }

    fn update(&self, stack: &str, template: &Value) {
        let (status, body) = self.send(
            http()
                .put(format!("{}/stacks/{stack}", self.url))
                .json(&json!({"template": template, "timeout_mins": 10})),
        );
        assert_eq!(status, 202, "Heat accepts the update of {stack}: {body}");
    }

    fn delete(&self, stack: &str) {
        let (status, body) = self.send(http().delete(format!("{}/stacks/{stack}", self.url)));
        assert_eq!(status, 204, "Heat accepts the delete of {stack}: {body}");
    }

    fn show(&self, stack: &str) -> Value {
        let (status, body) = self.send(http().get(format!("{}/stacks/{stack}", self.url)));
        assert_eq!(status, 200, "stack {stack}: {body}");
        body["stack"].clone()
    }

    /// Waits until the stack's action is over; returns the stack.
    fn settle(&self, stack: &str, berth: &ExternalStack) -> Value {
        let mut last = Value::Null;
        let found = support::wait_for_opt(Duration::from_secs(240), || {
            last = self.show(stack);
            let status = last["stack_status"].as_str().unwrap_or("");
            (!status.ends_with("_IN_PROGRESS")).then(|| last.clone())
        });
        found.unwrap_or_else(|| {
            panic!(
                "stack {stack} is still in progress: {last}\nberth-service log (end):\n{}",
                log_tail(&berth.log(), 40)
            )
        })
    }

    fn resource(&self, stack: &str, name: &str) -> Value {
        let (status, body) =
            self.send(http().get(format!("{}/stacks/{stack}/resources/{name}", self.url)));
        assert_eq!(status, 200, "resource {name} of {stack}: {body}");
        body["resource"].clone()
    }

    fn output(&self, stack: &Value, key: &str) -> Value {
        stack["outputs"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["output_key"] == key))
            .map(|o| o["output_value"].clone())
            .unwrap_or_else(|| panic!("stack has no output {key}: {stack}"))
    }
}

fn assert_status(stack: &Value, want: &str, berth: &ExternalStack) {
    assert_eq!(
        stack["stack_status"],
        want,
        "{}: {}\nberth-service log (end):\n{}",
        stack["stack_name"],
        stack["stack_status_reason"],
        log_tail(&berth.log(), 40)
    );
}

/// GET on Berth's API as the tenant (or with any token).
fn berth_get(berth: &ExternalStack, path: &str, token: &str) -> (u16, Value) {
    let r = http()
        .get(format!("{}/v1{path}", berth.api))
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", "container 1.40")
        .send()
        .unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// The engine's containers named `berth-<uuid>` (any state).
fn engine_has_container(uuid: &str) -> bool {
    !docker_lines(&[
        "ps",
        "-a",
        "-q",
        "--filter",
        &format!("name=^berth-{uuid}$"),
    ])
    .is_empty()
}

/// The engine's containers of pod `uuid` (infra included).
fn engine_pod_containers(uuid: &str) -> Vec<String> {
    docker_lines(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=berth.pod={uuid}"),
        "--format",
        "{{.Label \"berth.pod.container\"}} {{.ID}}",
    ])
}

fn zun_container(name: &str, cpu: f64, memory: u64) -> Value {
    json!({"type": "OS::Zun::Container", "properties": {
        "name": name, "image": IMAGE, "command": "sleep 3600",
        "cpu": cpu, "memory": memory,
        "environment": {"GREETING": "hello from heat"},
        "labels": {"berth.test": tag()},
    }})
}

#[test]
fn os_zun_container_creates_updates_in_place_fails_with_berths_reason_and_deletes() {
    let bed = bed();
    let _turn = bed.take_turn();
    let _cleanup = EngineGuard;
    let berth = bed.berth();
    let (token, user_id) = bed.tenant_token();
    let heat = Heat::new(&bed, &token);
    let s = suffix();

    // --- create: two containers, outputs resolve.
    let template = |web: &str, cpu: f64, memory: u64| {
        json!({
            "heat_template_version": "2018-08-31",
            "resources": {
                "web": zun_container(web, cpu, memory),
                "worker": zun_container(&format!("heat-worker-{s}"), 0.25, 32),
            },
            "outputs": {
                "web_name": {"value": {"get_attr": ["web", "name"]}},
                "web_addresses": {"value": {"get_attr": ["web", "addresses"]}},
            },
        })
    };
    let stack = heat.create(
        &format!("zun-{s}"),
        &template(&format!("heat-web-{s}"), 0.5, 64),
    );
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "CREATE_COMPLETE", &berth);
    assert_eq!(heat.output(&shown, "web_name"), format!("heat-web-{s}"));
    let addresses = heat.output(&shown, "web_addresses");
    assert!(
        addresses.as_object().is_some_and(|a| !a.is_empty()),
        "the addresses output resolves to Berth's addresses: {addresses}"
    );
    let web = heat.resource(&stack, "web")["physical_resource_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let worker = heat.resource(&stack, "worker")["physical_resource_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, c) = berth_get(&berth, &format!("/containers/{web}"), &token);
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["status"], "Running", "{c}");
    assert_eq!(c["project_id"], bed.project_id.as_str());
    assert_eq!(c["environment"]["GREETING"], "hello from heat", "{c}");
    assert_eq!(
        docker_inspect(&web, "{{.State.Running}}").as_deref(),
        Some("true"),
        "the engine runs the container"
    );

    // --- Heat's trust: a token of Heat's trustee acting for the tenant through the
    // stack's trust (what Heat uses when it has no live user token) works on Berth.
    let r = http()
        .get(format!(
            "{}/OS-TRUST/trusts?trustor_user_id={user_id}",
            bed.auth_url
        ))
        .header("X-Auth-Token", &token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let trusts: Value = r.json().unwrap();
    let trust = trusts["trusts"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|t| t["project_id"] == bed.project_id.as_str())
        })
        .unwrap_or_else(|| panic!("Heat made a trust for the stack: {trusts}"))
        .clone();
    let trust = trust["id"].as_str().unwrap().to_owned();
    let (trust_token, body) = bed.authenticate(json!({
        "identity": Bed::password(&bed.trustee_user, &bed.trustee_password),
        "scope": {"OS-TRUST:trust": {"id": trust}},
    }));
    assert!(
        body["token"]["OS-TRUST:trust"].is_object(),
        "a trust-scoped token: {body}"
    );
    let (status, c) = berth_get(&berth, &format!("/containers/{web}"), &trust_token);
    assert_eq!(status, 200, "Berth accepts Heat's trust-scoped token: {c}");
    assert_eq!(c["uuid"], web.as_str());
    // The trust delegates the tenant's member role: it may create, in the tenant's
    // project.
    let r = http()
        .post(format!("{}/v1/containers", berth.api))
        .header("X-Auth-Token", &trust_token)
        .header("OpenStack-API-Version", "container 1.12")
        .json(&json!({"name": format!("heat-trust-{s}"), "image": IMAGE,
            "command": "sleep 60", "labels": {"berth.test": tag()}}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "create with the trust token");
    let made: Value = r.json().unwrap();
    assert_eq!(made["project_id"], bed.project_id.as_str(), "{made}");
    let made_path = format!("/containers/{}", made["uuid"].as_str().unwrap());
    wait_for(
        "the trust's container to be created",
        Duration::from_secs(60),
        || {
            let (_, c) = berth_get(&berth, &made_path, &trust_token);
            (c["status"] == "Created").then_some(())
        },
    );
    let r = http()
        .delete(format!(
            "{}/v1/containers/{}?stop=true",
            berth.api,
            made["uuid"].as_str().unwrap()
        ))
        .header("X-Auth-Token", &token)
        .header("OpenStack-API-Version", "container 1.12")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "the tenant deletes it");

    // --- update: name, cpu and memory change in place (same container).
    heat.update(&stack, &template(&format!("heat-web2-{s}"), 1.0, 128));
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "UPDATE_COMPLETE", &berth);
    assert_eq!(
        heat.resource(&stack, "web")["physical_resource_id"],
        web.as_str(),
        "updated in place"
    );
    assert_eq!(heat.output(&shown, "web_name"), format!("heat-web2-{s}"));
    let (_, c) = berth_get(&berth, &format!("/containers/{web}"), &token);
    assert_eq!(c["name"], format!("heat-web2-{s}"), "{c}");
    assert_eq!(c["cpu"].as_f64(), Some(1.0), "{c}");
    assert_eq!(c["memory"], "128", "{c}");
    assert_eq!(c["status"], "Running", "{c}");
    assert_eq!(
        docker_inspect(&web, "{{.HostConfig.Memory}}").as_deref(),
        Some("134217728"),
        "the engine's memory limit follows"
    );

    // --- delete: the stack goes, and so do the containers, in Berth and the engine.
    heat.delete(&stack);
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "DELETE_COMPLETE", &berth);
    for id in [&web, &worker] {
        let (status, body) = berth_get(&berth, &format!("/containers/{id}"), &token);
        assert_eq!(status, 404, "container {id} is gone: {body}");
        assert!(!engine_has_container(id), "the engine still has {id}");
    }

    // --- failures: the stack fails with Berth's status_reason, not a timeout.
    let stack = heat.create(
        &format!("zun-bad-image-{s}"),
        &json!({
            "heat_template_version": "2018-08-31",
            "resources": {"bad": {"type": "OS::Zun::Container", "properties": {
                "name": format!("heat-bad-{s}"),
                "image": "berth-test/does-not-exist:nope",
                "labels": {"berth.test": tag()},
            }}},
        }),
    );
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "CREATE_FAILED", &berth);
    let bad = heat.resource(&stack, "bad");
    let id = bad["physical_resource_id"].as_str().unwrap().to_owned();
    let (_, c) = berth_get(&berth, &format!("/containers/{id}"), &token);
    assert_eq!(c["status"], "Error", "{c}");
    let reason = c["status_reason"].as_str().unwrap_or("");
    assert!(!reason.is_empty(), "Berth says why: {c}");
    for (what, text) in [
        ("resource", &bad["resource_status_reason"]),
        ("stack", &shown["stack_status_reason"]),
    ] {
        assert!(
            text.as_str().unwrap_or("").contains(reason),
            "the {what}'s status reason carries Berth's ({reason}): {text}"
        );
    }
    heat.delete(&stack);
    assert_status(&heat.settle(&stack, &berth), "DELETE_COMPLETE", &berth);
    assert_eq!(
        berth_get(&berth, &format!("/containers/{id}"), &token).0,
        404
    );

    // An interactive container whose command exits: Heat expects it to keep running.
    let stack = heat.create(
        &format!("zun-exits-{s}"),
        &json!({
            "heat_template_version": "2018-08-31",
            "resources": {"quits": {"type": "OS::Zun::Container", "properties": {
                "name": format!("heat-quits-{s}"), "image": IMAGE,
                "command": "sh -c 'exit 3'", "interactive": true,
                "labels": {"berth.test": tag()},
            }}},
        }),
    );
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "CREATE_FAILED", &berth);
    let quits = heat.resource(&stack, "quits");
    let reason = quits["resource_status_reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("stopped running") || reason.contains("exit"),
        "the resource says the container stopped: {quits}"
    );
    let id = quits["physical_resource_id"].as_str().unwrap().to_owned();
    heat.delete(&stack);
    assert_status(&heat.settle(&stack, &berth), "DELETE_COMPLETE", &berth);
    assert!(!engine_has_container(&id), "the engine still has {id}");
}

fn pod_template(web_command: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "from-the-template", "labels": {"app": "heat", "heat-test": tag()}},
        "spec": {
            "restartPolicy": "Always",
            "containers": [
                {"name": "web", "image": IMAGE, "command": ["sh", "-c", web_command],
                 "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}},
                {"name": "side", "image": IMAGE, "command": ["sh", "-c", "sleep 3600"]},
            ],
        },
    })
}

fn started_at(capsule: &Value, container: &str) -> Value {
    capsule["pod_status"]["container_statuses"]
        .as_array()
        .and_then(|s| s.iter().find(|c| c["name"] == container))
        .map(|c| c["state"]["running"]["started_at"].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn os_berth_capsule_creates_updates_rolls_back_and_deletes() {
    let bed = bed();
    let _turn = bed.take_turn();
    let _cleanup = EngineGuard;
    let berth = bed.berth();
    let (token, _) = bed.tenant_token();
    let heat = Heat::new(&bed, &token);
    let s = suffix();
    let name = format!("heat-pod-{s}");

    let template = |web_command: &str| {
        json!({
            "heat_template_version": "2018-08-31",
            "resources": {"pod": {"type": "OS::Berth::Capsule", "properties": {
                "name": name, "template": pod_template(web_command),
            }}},
            "outputs": {
                "status": {"value": {"get_attr": ["pod", "status"]}},
                "containers": {"value": {"get_attr": ["pod", "containers"]}},
                "addresses": {"value": {"get_attr": ["pod", "addresses"]}},
                "phase": {"value": {"get_attr": ["pod", "pod_status", "phase"]}},
            },
        })
    };

    // --- create: Running, attributes resolve.
    let stack = heat.create(&format!("pod-{s}"), &template("sleep 3600"));
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "CREATE_COMPLETE", &berth);
    assert_eq!(heat.output(&shown, "status"), "Running");
    assert_eq!(heat.output(&shown, "phase"), "Running");
    let containers = heat.output(&shown, "containers");
    let names: Vec<&str> = containers
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["web", "side"], "{containers}");
    assert!(
        containers
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["state"]["running"].is_object()),
        "every container runs: {containers}"
    );
    assert!(
        heat.output(&shown, "addresses")
            .as_object()
            .is_some_and(|a| !a.is_empty()),
        "addresses resolve"
    );
    let uuid = heat.resource(&stack, "pod")["physical_resource_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, capsule) = berth_get(&berth, &format!("/capsules/{uuid}"), &token);
    assert_eq!(status, 200, "{capsule}");
    assert_eq!(capsule["name"], name.as_str(), "the name property wins");
    let side_started = started_at(&capsule, "side");
    let web_started = started_at(&capsule, "web");
    assert!(side_started.is_string(), "{capsule}");

    // --- update: only the changed container restarts.
    heat.update(&stack, &template("sleep 3601"));
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "UPDATE_COMPLETE", &berth);
    assert_eq!(
        heat.resource(&stack, "pod")["physical_resource_id"],
        uuid.as_str()
    );
    let (_, capsule) = berth_get(&berth, &format!("/capsules/{uuid}"), &token);
    let web = capsule["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "web"))
        .cloned()
        .unwrap();
    assert_eq!(web["command"], json!(["sh", "-c", "sleep 3601"]), "{web}");
    assert_ne!(
        started_at(&capsule, "web"),
        web_started,
        "web restarted: {capsule}"
    );
    assert_eq!(
        started_at(&capsule, "side"),
        side_started,
        "side kept running: {capsule}"
    );
    let generation = capsule["generation"].as_i64().unwrap();

    // --- a failing update: Berth rolls it back, the stack fails with Berth's reason.
    heat.update(&stack, &template("echo broken; exit 1"));
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "UPDATE_FAILED", &berth);
    let (_, capsule) = berth_get(&berth, &format!("/capsules/{uuid}"), &token);
    let rollback = &capsule["pod_status"]["rollback"];
    assert_eq!(
        rollback["failed_generation"].as_i64(),
        Some(generation + 1),
        "{capsule}"
    );
    let why = rollback["reason"].as_str().unwrap();
    let reason = heat.resource(&stack, "pod")["resource_status_reason"].clone();
    assert!(
        reason.as_str().unwrap_or("").contains("rolled back")
            && reason.as_str().unwrap_or("").contains(why),
        "the resource fails with Berth's rollback reason ({why}): {reason}"
    );
    let (_, capsule) = wait_for(
        "the previous spec to run again",
        Duration::from_secs(60),
        || {
            let (s, c) = berth_get(&berth, &format!("/capsules/{uuid}"), &token);
            (c["status"] == "Running").then_some((s, c))
        },
    );
    assert_eq!(started_at(&capsule, "side"), side_started, "{capsule}");

    // --- a corrected update after the rolled-back one: in place again.
    heat.update(&stack, &template("sleep 3602"));
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "UPDATE_COMPLETE", &berth);
    assert_eq!(
        heat.resource(&stack, "pod")["physical_resource_id"],
        uuid.as_str(),
        "a rolled-back capsule is updated in place, not replaced"
    );
    let (_, capsule) = berth_get(&berth, &format!("/capsules/{uuid}"), &token);
    assert_eq!(started_at(&capsule, "side"), side_started, "{capsule}");

    // --- a new name is a new capsule: Heat replaces it.
    let renamed = format!("heat-pod2-{s}");
    let mut t = template("sleep 3602");
    t["resources"]["pod"]["properties"]["name"] = json!(renamed);
    heat.update(&stack, &t);
    assert_status(&heat.settle(&stack, &berth), "UPDATE_COMPLETE", &berth);
    let new_uuid = heat.resource(&stack, "pod")["physical_resource_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_uuid, uuid, "replaced");
    let (_, capsule) = berth_get(&berth, &format!("/capsules/{new_uuid}"), &token);
    assert_eq!(capsule["name"], renamed.as_str(), "{capsule}");
    assert_eq!(capsule["status"], "Running", "{capsule}");
    assert_eq!(
        berth_get(&berth, &format!("/capsules/{uuid}"), &token).0,
        404,
        "the replaced capsule is deleted"
    );
    assert_eq!(engine_pod_containers(&uuid), Vec::<String>::new());

    // --- delete: the pod is gone from Berth and the engine.
    heat.delete(&stack);
    assert_status(&heat.settle(&stack, &berth), "DELETE_COMPLETE", &berth);
    assert_eq!(
        berth_get(&berth, &format!("/capsules/{new_uuid}"), &token).0,
        404
    );
    assert_eq!(engine_pod_containers(&new_uuid), Vec::<String>::new());
}

#[test]
fn os_berth_capsule_takes_every_template_format_and_fails_with_berths_reason() {
    let bed = bed();
    let _turn = bed.take_turn();
    let _cleanup = EngineGuard;
    let berth = bed.berth();
    let (token, _) = bed.tenant_token();
    let heat = Heat::new(&bed, &token);
    let s = suffix();

    // A Google container manifest as a YAML string, a Zun capsule template as a map,
    // and no name property: the manifest's id and the template's name are used.
    let manifest = format!(
        "version: v1beta2\nid: heat-manifest-{s}\ncontainers:\n- name: app\n  image: {IMAGE}\n  command: [sh, -c, 'sleep 3600']\nrestartPolicy: {{always: {{}}}}\n"
    );
    let zun = json!({
        "kind": "capsule",
        "metadata": {"name": format!("heat-zun-{s}"), "labels": {"heat-test": tag()}},
        "spec": {"restartPolicy": "Always", "containers": [
            {"name": "app", "image": IMAGE, "command": ["sh", "-c"], "args": ["sleep 3600"],
             "resources": {"requests": {"cpu": 0.1, "memory": 32}}},
        ]},
    });
    let stack = heat.create(
        &format!("pods-{s}"),
        &json!({
            "heat_template_version": "2018-08-31",
            "resources": {
                "manifest": {"type": "OS::Berth::Capsule", "properties": {"template": manifest}},
                "zun": {"type": "OS::Berth::Capsule", "properties": {"template": zun}},
            },
        }),
    );
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "CREATE_COMPLETE", &berth);
    let mut uuids = Vec::new();
    for (resource, name) in [
        ("manifest", format!("heat-manifest-{s}")),
        ("zun", format!("heat-zun-{s}")),
    ] {
        let uuid = heat.resource(&stack, resource)["physical_resource_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (_, capsule) = berth_get(&berth, &format!("/capsules/{uuid}"), &token);
        assert_eq!(capsule["name"], name.as_str(), "{capsule}");
        assert_eq!(capsule["status"], "Running", "{capsule}");
        uuids.push(uuid);
    }
    heat.delete(&stack);
    assert_status(&heat.settle(&stack, &berth), "DELETE_COMPLETE", &berth);
    for uuid in &uuids {
        assert_eq!(
            berth_get(&berth, &format!("/capsules/{uuid}"), &token).0,
            404
        );
        assert_eq!(engine_pod_containers(uuid), Vec::<String>::new());
    }

    // A pod whose image does not exist: CREATE_FAILED with Berth's reason.
    let stack = heat.create(
        &format!("pod-bad-{s}"),
        &json!({
            "heat_template_version": "2018-08-31",
            "resources": {"pod": {"type": "OS::Berth::Capsule", "properties": {
                "name": format!("heat-bad-pod-{s}"),
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {},
                    "spec": {"containers": [{"name": "app",
                        "image": "berth-test/does-not-exist:nope"}]}},
            }}},
        }),
    );
    let shown = heat.settle(&stack, &berth);
    assert_status(&shown, "CREATE_FAILED", &berth);
    let pod = heat.resource(&stack, "pod");
    let uuid = pod["physical_resource_id"].as_str().unwrap().to_owned();
    let (_, capsule) = berth_get(&berth, &format!("/capsules/{uuid}"), &token);
    let reason = pod["resource_status_reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("app: ") && reason.contains("Image"),
        "the resource carries Berth's reason: {reason}; Berth: {}",
        capsule["status_reason"]
    );
    // A template Berth refuses: the create fails with Berth's 400 detail.
    let stack2 = heat.create(
        &format!("pod-refused-{s}"),
        &json!({
            "heat_template_version": "2018-08-31",
            "resources": {"pod": {"type": "OS::Berth::Capsule", "properties": {
                "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                    "spec": {"containers": [{"name": "app", "image": IMAGE,
                        "ports": [{"containerPort": 70000}]}]}},
            }}},
        }),
    );
    let shown2 = heat.settle(&stack2, &berth);
    assert_status(&shown2, "CREATE_FAILED", &berth);
    let reason = shown2["stack_status_reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("containerPort") && reason.contains("70000"),
        "the stack carries Berth's validation error: {reason}"
    );
    for st in [&stack, &stack2] {
        heat.delete(st);
        assert_status(&heat.settle(st, &berth), "DELETE_COMPLETE", &berth);
    }
    assert_eq!(
        berth_get(&berth, &format!("/capsules/{uuid}"), &token).0,
        404
    );
    assert_eq!(engine_pod_containers(&uuid), Vec::<String>::new());
}
