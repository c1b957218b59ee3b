//! Policy and isolation between projects: another project's container is "not found"
//! on every route, by id and by name, and nothing changes; readers read, members act on
//! their own project's containers, admins also reach every project and force delete;
//! a policy file overrides single rules, and a bad one stops `berth up`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use support::{docker_inspect, wait_for, Berth, IMAGE};

/// Serialises starts that set `BERTH_POLICY_FILE`, in case the tests share a process.
static START: Mutex<()> = Mutex::new(());

fn start(policy_file: Option<&Path>) -> Berth {
    let _guard = START.lock().unwrap_or_else(|e| e.into_inner());
    match policy_file {
        Some(p) => std::env::set_var("BERTH_POLICY_FILE", p),
        None => std::env::remove_var("BERTH_POLICY_FILE"),
    }
    let berth = Berth::start();
    std::env::remove_var("BERTH_POLICY_FILE");
    berth
}

/// One caller of the raw API.
struct Api {
    url: String,
    token: String,
}

impl Api {
    fn login(berth: &Berth, user: &str, password: &str, project: &str) -> Api {
        let resp = support::http()
            .post(format!("{}/identity/v3/auth/tokens", berth.url))
            .json(&json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user, "domain": {"name": "Default"}, "password": password}}},
                "scope": {"project": {"name": project, "domain": {"name": "Default"}}}
            }}))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "login as {user}");
        let token = resp.headers()["X-Subject-Token"]
            .to_str()
            .unwrap()
            .to_owned();
        Api {
            url: berth.url.clone(),
            token,
        }
    }

    fn admin(berth: &Berth) -> Api {
        Api::login(berth, "admin", &berth.env("OS_PASSWORD"), "admin")
    }

    /// `user` (made with `role` in `project` through the identity API), logged in.
    fn user(berth: &Berth, project: &str, user: &str, role: &str) -> Api {
        berth.project_user(project, user, role);
        Api::login(berth, user, &format!("pw-{user}"), project)
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = support::http()
            .request(method, format!("{}/v1{path}", self.url))
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "container 1.40");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call(Method::GET, path, None)
    }

    /// Creates a running `sleep` container; returns its uuid.
    fn run(&self, name: &str) -> String {
        let (status, v) = self.call(
            Method::POST,
            "/containers?run=true",
            Some(json!({
                "image": IMAGE,
                "name": name,
                "command": ["sleep", "600"],
                "labels": {"berth.test": "policy"},
            })),
        );
        assert_eq!(status, 202, "create {name}: {v}");
        v["uuid"].as_str().unwrap().to_owned()
    }

    fn show(&self, id: &str) -> Value {
        let (status, v) = self.get(&format!("/containers/{id}"));
        assert_eq!(status, 200, "show {id}: {v}");
        v
    }

    /// Waits until the container has `status` and no task in progress.
    fn wait_status(&self, berth: &Berth, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        support::wait_for_opt(Duration::from_secs(60), || {
            let v = self.show(id);
            last = v.clone();
            (v["status"] == status && v["task_state"].is_null()).then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "container {id} never reached {status}; last: {last}\nberth log:\n{}",
                berth.log()
            )
        })
    }

    fn list_ids(&self, query: &str) -> Vec<String> {
        let (status, v) = self.get(&format!("/containers{query}"));
        assert_eq!(status, 200, "{v}");
        v["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["uuid"].as_str().unwrap().to_owned())
            .collect()
    }

    fn actions(&self, id: &str) -> usize {
        let (status, v) = self.get(&format!("/containers/{id}/container_actions"));
        assert_eq!(status, 200, "{v}");
        v["containerActions"].as_array().unwrap().len()
    }
}

/// Every container route, for the container `c`.
fn routes(c: &str) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, format!("/containers/{c}"), None),
        (
            Method::PATCH,
            format!("/containers/{c}"),
            Some(json!({"name": "renamed"})),
        ),
        (Method::DELETE, format!("/containers/{c}"), None),
        (Method::DELETE, format!("/containers/{c}?stop=True"), None),
        (Method::POST, format!("/containers/{c}/start"), None),
        (Method::POST, format!("/containers/{c}/stop"), None),
        (Method::POST, format!("/containers/{c}/reboot"), None),
        (Method::POST, format!("/containers/{c}/kill"), None),
        (Method::POST, format!("/containers/{c}/pause"), None),
        (Method::POST, format!("/containers/{c}/unpause"), None),
        (Method::GET, format!("/containers/{c}/logs"), None),
        (
            Method::GET,
            format!("/containers/{c}/container_actions"),
            None,
        ),
    ]
}

/// Asserts a Zun-format policy refusal of `action`.
fn assert_denied(got: &(u16, Value), action: &str) {
    let (status, body) = got;
    assert_eq!(*status, 403, "{action}: {body}");
    let err = &body["errors"][0];
    assert_eq!(err["code"], "container.policy-not-authorized", "{body}");
    let detail = err["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!("Policy doesn't allow {action} to be performed.")),
        "{detail}"
    );
    assert!(
        detail.contains("role"),
        "a hint of the role needed: {detail}"
    );
}

#[test]
fn another_projects_container_is_not_found_on_every_route_by_id_and_name_and_nothing_changes() {
    let berth = start(None);
    let admin = Api::admin(&berth);
    let secret = admin.run("secret-web");
    let before = admin.wait_status(&berth, &secret, "Running");
    let actions_before = admin.actions(&secret);

    for role in ["member", "reader"] {
        let other = Api::user(&berth, "tenant-b", &format!("b-{role}"), role);
        for ident in [secret.as_str(), "secret-web"] {
            for (method, path, body) in routes(ident) {
                let got = other.call(method.clone(), &path, body.clone());
                if role == "reader" && method != Method::GET {
                    // A reader may not change anything anywhere: refused before any
                    // lookup, so the answer is the same whether the container exists.
                    let missing = path.replace(ident, "no-such-container");
                    let for_missing = other.call(method.clone(), &missing, body);
                    assert_eq!(got.0, 403, "{role} {method} {path}: {}", got.1);
                    assert_eq!(for_missing.0, 403, "{role} {method} {missing}");
                    continue;
                }
                assert_eq!(got.0, 404, "{role} {method} {path}: {}", got.1);
                assert_eq!(
                    got.1["errors"][0]["code"], "container.container-not-found",
                    "{}",
                    got.1
                );
            }
        }
        // Listing never includes it, filtered by name or not.
        assert!(!other.list_ids("").contains(&secret));
        assert!(other.list_ids("?name=secret-web").is_empty());
        // all_projects is the admin's.
        assert_denied(
            &other.get("/containers?all_projects=True"),
            "container:get_all_all_projects",
        );
        assert_denied(
            &other.get(&format!("/containers/{secret}?all_projects=True")),
            "container:get_one_all_projects",
        );
        if role == "member" {
            assert_denied(
                &other.call(
                    Method::DELETE,
                    &format!("/containers/{secret}?all_projects=True"),
                    None,
                ),
                "container:delete_all_projects",
            );
        }
    }

    // Nothing changed: status, name, no task, no new action, Docker still running it.
    let after = admin.show(&secret);
    for key in ["status", "name", "task_state", "cpu", "memory"] {
        assert_eq!(after[key], before[key], "{key}: {after}");
    }
    assert_eq!(admin.actions(&secret), actions_before);
    assert_eq!(
        docker_inspect(&secret, "{{.State.Status}}").as_deref(),
        Some("running")
    );
    // The admin does see it across projects.
    assert!(admin.list_ids("?all_projects=True").contains(&secret));
}

#[test]
fn readers_read_members_act_on_their_own_project_and_only_admins_force_delete() {
    let berth = start(None);
    let admin = Api::admin(&berth);
    let reader = Api::user(&berth, "admin", "adm-reader", "reader");
    let member = Api::user(&berth, "admin", "adm-member", "member");
    let id = admin.run("shared-web");
    admin.wait_status(&berth, &id, "Running");

    // Reader: every read answers, every change is refused and changes nothing.
    assert_eq!(reader.show(&id)["uuid"], id.as_str());
    assert!(reader.list_ids("").contains(&id));
    assert_eq!(reader.get(&format!("/containers/{id}/logs")).0, 200);
    assert!(reader.actions(&id) >= 1);
    let create = reader.call(
        Method::POST,
        "/containers",
        Some(json!({"image": IMAGE, "labels": {"berth.test": "policy"}})),
    );
    assert_denied(&create, "container:create");
    for (method, path, body) in routes(&id) {
        if method == Method::GET {
            continue;
        }
        let action = match (method.as_str(), path.rsplit('/').next().unwrap()) {
            ("PATCH", _) => "container:update".to_owned(),
            ("DELETE", _) => "container:delete".to_owned(),
            (_, op) => format!("container:{op}"),
        };
        assert_denied(&reader.call(method, &path, body), &action);
    }
    let v = admin.show(&id);
    assert_eq!(
        (v["status"].as_str(), v["name"].as_str()),
        (Some("Running"), Some("shared-web"))
    );

    // Member: every route passes policy; the container goes through its states.
    let ok = |got: (u16, Value), what: &str| {
        assert!(
            got.0 == 200 || got.0 == 202 || got.0 == 204,
            "member {what}: {} {}",
            got.0,
            got.1
        );
    };
    let post = |op: &str| member.call(Method::POST, &format!("/containers/{id}/{op}"), None);
    ok(post("pause"), "pause");
    member.wait_status(&berth, &id, "Paused");
    ok(post("unpause"), "unpause");
    member.wait_status(&berth, &id, "Running");
    ok(post("stop"), "stop");
    member.wait_status(&berth, &id, "Stopped");
    ok(post("start"), "start");
    member.wait_status(&berth, &id, "Running");
    ok(post("reboot"), "reboot");
    member.wait_status(&berth, &id, "Running");
    ok(
        member.call(
            Method::PATCH,
            &format!("/containers/{id}"),
            Some(json!({"name": "member-renamed"})),
        ),
        "update",
    );
    ok(member.get(&format!("/containers/{id}/logs")), "logs");
    ok(post("kill"), "kill");
    member.wait_status(&berth, &id, "Stopped");
    let own = member.run("member-own");
    // Force delete and all_projects are the admin's.
    assert_denied(
        &member.call(
            Method::DELETE,
            &format!("/containers/{own}?force=True"),
            None,
        ),
        "container:delete_force",
    );
    assert_denied(
        &member.get("/containers?all_projects=True"),
        "container:get_all_all_projects",
    );
    ok(
        member.call(Method::DELETE, &format!("/containers/{id}"), None),
        "delete",
    );
    wait_for(
        "the deleted container to go",
        Duration::from_secs(60),
        || (admin.get(&format!("/containers/{id}")).0 == 404).then_some(()),
    );

    // Admin: force delete of a running container.
    admin.wait_status(&berth, &own, "Running");
    let (status, v) = admin.call(
        Method::DELETE,
        &format!("/containers/{own}?force=True"),
        None,
    );
    assert_eq!(status, 204, "{v}");
    wait_for(
        "the force-deleted container to go",
        Duration::from_secs(60),
        || {
            (admin.get(&format!("/containers/{own}")).0 == 404
                && docker_inspect(&own, "{{.State.Status}}").is_none())
            .then_some(())
        },
    );
}

#[test]
fn members_of_another_project_pass_policy_on_their_own_containers() {
    let berth = start(None);
    let member = Api::user(&berth, "tenant-c", "c-member", "member");
    let reader = Api::user(&berth, "tenant-c", "c-reader", "reader");
    let (status, v) = member.call(
        Method::POST,
        "/containers",
        Some(
            json!({"image": IMAGE, "name": "c-own", "command": ["sleep", "600"],
                    "labels": {"berth.test": "policy"}}),
        ),
    );
    assert_eq!(status, 202, "{v}");
    let id = v["uuid"].as_str().unwrap().to_owned();
    // Until the project has an instance the container may end in Error; either way
    // the answers are policy's: never 403 for the member, 403 for the reader's changes.
    wait_for("the create to settle", Duration::from_secs(120), || {
        member.show(&id)["task_state"].is_null().then_some(())
    });
    for (method, path, body) in routes(&id) {
        if method == Method::DELETE {
            continue;
        }
        let got = member.call(method.clone(), &path, body.clone());
        assert_ne!(got.0, 403, "member {method} {path}: {}", got.1);
        assert_ne!(got.0, 404, "member {method} {path}: {}", got.1);
        if method != Method::GET {
            assert_eq!(
                reader.call(method.clone(), &path, body).0,
                403,
                "reader {method} {path}"
            );
        } else {
            let got = reader.call(method.clone(), &path, body);
            assert!(
                got.0 == 200 || got.0 == 409,
                "reader {method} {path}: {}",
                got.1
            );
        }
        // Let an accepted action finish before the next one.
        wait_for("the action to settle", Duration::from_secs(60), || {
            member.show(&id)["task_state"].is_null().then_some(())
        });
    }
    assert!(reader.list_ids("").contains(&id));
    let (status, v) = member.call(Method::DELETE, &format!("/containers/{id}?stop=True"), None);
    assert_eq!(status, 204, "{v}");
    wait_for(
        "the deleted container to go",
        Duration::from_secs(60),
        || (member.get(&format!("/containers/{id}")).0 == 404).then_some(()),
    );
}

#[test]
fn a_policy_file_overrides_one_rule_and_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.yaml");
    std::fs::write(
        &file,
        "# Readers may stop containers; nobody may read logs.\n\
         \"container:stop\": \"rule:admin_or_reader\"\n\
         \"container:logs\": \"!\"\n",
    )
    .unwrap();
    let berth = start(Some(&file));
    let admin = Api::admin(&berth);
    let reader = Api::user(&berth, "admin", "pf-reader", "reader");
    let id = admin.run("pf-web");
    admin.wait_status(&berth, &id, "Running");

    assert_denied(
        &admin.get(&format!("/containers/{id}/logs")),
        "container:logs",
    );
    let (status, v) = reader.call(Method::POST, &format!("/containers/{id}/stop"), None);
    assert_eq!(status, 202, "{v}");
    admin.wait_status(&berth, &id, "Stopped");
    // Rules the file does not name keep their defaults.
    assert_denied(
        &reader.call(Method::POST, &format!("/containers/{id}/start"), None),
        "container:start",
    );
    assert_eq!(reader.get(&format!("/containers/{id}")).0, 200);
}

#[test]
fn a_bad_policy_file_stops_berth_up_with_a_clear_message() {
    for (text, says) in [
        (
            "\"container:strat\": \"role:member\"\n",
            "unknown action 'container:strat'",
        ),
        (
            "\"container:start\": \"role:member or\"\n",
            "policy rule 'container:start'",
        ),
        (
            "\"container:start\": \"rule:no_such_rule\"\n",
            "rule:no_such_rule, which is not defined",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.yaml");
        std::fs::write(&file, text).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--relay-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--policy-file")
            .arg(&file)
            .env_remove("BERTH_POLICY_FILE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = child;
        // A good start never exits; give a refusal a deadline rather than wait for ever.
        let status = support::wait_for_opt(Duration::from_secs(60), || child.try_wait().unwrap());
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berth up kept running with policy {text:?}");
        };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success(), "berth up started with {text:?}");
        assert!(stderr.contains(says), "{text:?}: {stderr}");
        assert!(stderr.contains("loading the policy"), "{stderr}");
    }
}
