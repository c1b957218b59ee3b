//! The `nova` instance provider against a real Nova: keystone, placement, glance and
//! nova (fake virt driver) from `scripts/nova-bed`, which `scripts/test` starts and
//! whose variables (OS_*, BERTH_TEST_NOVA_*) these tests need.
//!
//! Each test runs berth-relay and berth-service (`instance_provider = "nova"`) as
//! separate processes, as a cloud deploys them, and drives them with `osc`. The fake
//! driver boots nothing, so the boot test plays the instance itself: it reads the
//! user_data Nova recorded for the server (as Nova's admin, microversion 2.3), writes
//! the agent.toml it contains, and runs berth-agent with exactly that file as a
//! container (berth-agent:dev, host network, the Docker socket mounted).

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use support::external::{bin, relay};
use support::{http, run_ok, wait_for, wait_for_opt, IMAGE};

const AGENT_IMAGE: &str = "berth-agent:dev";
const ADMIN_PASSWORD: &str = "pw-nova";

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: tests/nova.rs needs the Nova test bed; run it with scripts/test, or `eval \"$(scripts/nova-bed start)\"` first"
        )
    })
}

/// The bed's accounts and objects (scripts/nova-bed).
struct Bed {
    auth_url: String,
    compute_url: String,
    flavor: String,
    huge_flavor: String,
    image: String,
}

fn bed() -> Bed {
    Bed {
        auth_url: var("BERTH_TEST_NOVA_AUTH_URL"),
        compute_url: var("BERTH_TEST_NOVA_COMPUTE_URL"),
        flavor: var("BERTH_TEST_NOVA_FLAVOR"),
        huge_flavor: var("BERTH_TEST_NOVA_HUGE_FLAVOR"),
        image: var("BERTH_TEST_NOVA_IMAGE"),
    }
}

fn keystone_token(auth_url: &str, user: &str, password: &str, project: &str) -> String {
    let r = http()
        .post(format!("{auth_url}/auth/tokens"))
        .json(&json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "Keystone token for {user}: {r:?}");
    r.headers()["x-subject-token"].to_str().unwrap().to_owned()
}

/// Nova as its admin, to see what Berth made (all projects, user_data).
struct NovaAdmin {
    url: String,
    token: String,
}

impl NovaAdmin {
    fn new(bed: &Bed) -> NovaAdmin {
        NovaAdmin {
            url: bed.compute_url.clone(),
            token: keystone_token(
                &bed.auth_url,
                "admin",
                &var("BERTH_TEST_NOVA_ADMIN_PASSWORD"),
                "admin",
            ),
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let r = http()
            .get(format!("{}{path}", self.url))
            .header("X-Auth-Token", &self.token)
            // ≥ 2.3 shows OS-EXT-SRV-ATTR:user_data to admins.
            .header("OpenStack-API-Version", "compute 2.3")
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// Berth's servers (named berth-<instance>) in every project.
    fn berth_servers(&self) -> Vec<Value> {
        let (status, body) = self.get("/servers/detail?all_tenants=1&name=%5Eberth-");
        assert_eq!(status, 200, "{body}");
        body["servers"].as_array().cloned().unwrap_or_default()
    }

    fn server(&self, id: &str) -> Option<Value> {
        let (status, body) = self.get(&format!("/servers/{id}"));
        match status {
            200 => Some(body["server"].clone()),
            404 => None,
            other => panic!("GET /servers/{id}: {other} {body}"),
        }
    }

    /// The `#cloud-config` Nova recorded for the server.
    fn user_data(&self, server: &Value) -> String {
        let b64 = server["OS-EXT-SRV-ATTR:user_data"]
            .as_str()
            .unwrap_or_else(|| panic!("Nova shows no user_data for {server}"));
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap()
    }

    fn set_instances_quota(&self, project_id: &str, instances: i64) {
        let r = http()
            .put(format!("{}/os-quota-sets/{project_id}", self.url))
            .header("X-Auth-Token", &self.token)
            .json(&json!({"quota_set": {"instances": instances}}))
            .send()
            .unwrap();
        assert!(r.status().is_success(), "setting the quota: {r:?}");
    }

    fn delete(&self, id: &str) {
        let _ = http()
            .delete(format!("{}/servers/{id}", self.url))
            .header("X-Auth-Token", &self.token)
            .send();
    }
}

/// berth-relay and berth-service with the nova provider, killed on drop; servers
/// this service made (found by the service URL in their user_data) are deleted too.
struct Stack {
    dir: tempfile::TempDir,
    procs: Vec<Child>,
    api_url: String,
    nova: NovaAdmin,
    agent_containers: Vec<String>,
}

impl Stack {
    /// `os` are the OS_* variables the service authenticates to Nova with.
    /// `boot_timeout` is `[nova] boot_timeout_secs`.
    fn start(bed: &Bed, flavor: &str, os: &[(&str, String)], boot_timeout: u64) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let (api_port, relay_port) = (support::free_port(), support::free_port());
        let api_url = format!("http://127.0.0.1:{api_port}");
        let config = dir.path().join("service.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen = "127.0.0.1:{api_port}"
database_url = "sqlite://{db}"
relay_url = "wss://127.0.0.1:{relay_port}"
keys_dir = "{keys}"
instance_provider = "nova"
# The instance goes back to Nova as soon as it holds no container.
instance_idle_grace = 1

[tls]
dir = "{pki}"

[nova]
image = "{image}"
flavor = "{flavor}"
boot_timeout_secs = {boot_timeout}
poll_interval_ms = 300
"#,
                db = dir.path().join("db.sqlite").display(),
                keys = dir.path().join("keys").display(),
                pki = dir.path().join("pki").display(),
                image = bed.image,
            ),
        )
        .unwrap();
        let service = |args: &[&str]| {
            let mut cmd = Command::new(bin("berth-service"));
            cmd.arg("--config").arg(&config).args(args);
            // Only the bed's account, whatever OS_* (OS_CLOUD…) the caller has.
            for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OS_")) {
                cmd.env_remove(k);
            }
            cmd.env("OS_AUTH_URL", &bed.auth_url)
                .env("OS_IDENTITY_API_VERSION", "3")
                .env("OS_REGION_NAME", "RegionOne")
                .env("OS_USER_DOMAIN_NAME", "Default")
                .env("OS_PROJECT_DOMAIN_NAME", "Default");
            for (k, v) in os {
                cmd.env(k, v);
            }
            cmd.env("BERTH_ADMIN_PASSWORD", ADMIN_PASSWORD);
            cmd
        };
        let run = |args: &[&str]| run_ok(&mut service(args), &format!("berth-service {args:?}"));
        // The deployment's CA and the relay's certificate (docs/TLS.md).
        run(&[
            "pki",
            "init",
            "--dir",
            dir.path().join("pki").to_str().unwrap(),
        ]);
        run(&["bootstrap"]);
        std::fs::write(dir.path().join("relay.pem"), run(&["relay-key"])).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let mut procs = vec![relay(
            relay_port,
            &dir.path().join("pki"),
            &dir.path().join("relay.pem"),
        )
        .stdout(Stdio::null())
        .stderr(log("relay.log"))
        .spawn()
        .unwrap()];
        procs.push(
            service(&["serve"])
                .stdout(Stdio::null())
                .stderr(log("service.log"))
                .spawn()
                .unwrap(),
        );
        let stack = Stack {
            dir,
            procs,
            api_url,
            nova: NovaAdmin::new(bed),
            agent_containers: Vec::new(),
        };
        wait_for("the API to answer", Duration::from_secs(60), || {
            stack
                .osc(&["container-list"])
                .status
                .success()
                .then_some(())
        });
        stack
    }

    fn osc(&self, args: &[&str]) -> std::process::Output {
        Command::new(support::osc_path())
            .args(args)
            .env_clear()
            .env("OS_AUTH_URL", format!("{}/identity/v3", self.api_url))
            .env("OS_USERNAME", "admin")
            .env("OS_PASSWORD", ADMIN_PASSWORD)
            .env("OS_PROJECT_NAME", "admin")
            .output()
            .unwrap()
    }

    fn osc_ok(&self, args: &[&str]) -> String {
        support::success_stdout(&format!("osc {args:?}"), self.osc(args), &self.log())
            .trim()
            .to_owned()
    }

    fn create(&self) -> String {
        self.osc_ok(&[
            "container-create",
            "--daemon",
            "--image",
            IMAGE,
            "--cmd",
            "sleep 300",
            "-f",
            "value",
            "-c",
            "uuid",
        ])
    }

    fn show(&self, uuid: &str) -> Value {
        serde_json::from_str(&self.osc_ok(&["container-show", uuid, "-f", "json"])).unwrap()
    }

    fn wait_status(&self, uuid: &str, status: &str, timeout: Duration) -> Value {
        wait_for_opt(timeout, || {
            let c = self.show(uuid);
            (c["status"] == status).then_some(c)
        })
        .unwrap_or_else(|| {
            panic!(
                "container {uuid} did not reach {status} within {timeout:?}: {}\n--- service log:\n{}",
                self.show(uuid),
                self.log()
            )
        })
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Nova servers whose user_data names this service: the ones it booted.
    fn my_servers(&self) -> Vec<Value> {
        self.nova
            .berth_servers()
            .into_iter()
            .filter(|s| {
                s["OS-EXT-SRV-ATTR:user_data"].is_string()
                    && self
                        .nova
                        .user_data(s)
                        .contains(&format!("service_url = \"{}\"", self.api_url))
            })
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for c in &self.agent_containers {
            let _ = Command::new("docker").args(["rm", "-f", "-v", c]).output();
        }
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for s in self.my_servers() {
            self.nova.delete(s["id"].as_str().unwrap_or_default());
        }
    }
}

/// The `content` of the file at `path` in a `#cloud-config`'s write_files.
fn written_file(cloud_config: &str, path: &str) -> String {
    assert!(
        cloud_config.starts_with("#cloud-config\n"),
        "not a cloud-config: {cloud_config}"
    );
    let doc: serde_yaml::Value = serde_yaml::from_str(cloud_config).unwrap();
    doc["write_files"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|f| f["path"].as_str() == Some(path))
        .and_then(|f| f["content"].as_str())
        .unwrap_or_else(|| panic!("the user_data writes no {path}: {cloud_config}"))
        .to_owned()
}

fn docker(args: &[&str]) -> String {
    support::cluster::docker_ok(args).trim().to_owned()
}

#[test]
fn a_container_boots_a_nova_server_whose_user_data_enrolls_an_agent_that_runs_it_and_the_idle_server_is_deleted(
) {
    let bed = bed();
    let os = [
        ("OS_USERNAME", var("BERTH_TEST_NOVA_USER")),
        ("OS_PASSWORD", var("BERTH_TEST_NOVA_PASSWORD")),
        ("OS_PROJECT_NAME", var("BERTH_TEST_NOVA_PROJECT")),
    ];
    let mut stack = Stack::start(&bed, &bed.flavor, &os, 60);
    let uuid = stack.create();
    assert_eq!(stack.show(&uuid)["status"], "Creating");

    // Nova boots the server (the fake driver makes it ACTIVE within seconds).
    let server = wait_for(
        "a Nova server for the instance",
        Duration::from_secs(60),
        || stack.my_servers().into_iter().next(),
    );
    let server_id = server["id"].as_str().unwrap().to_owned();
    let server = wait_for(
        "the server to become ACTIVE",
        Duration::from_secs(60),
        || {
            let s = stack.nova.server(&server_id).expect("the server exists");
            assert_ne!(s["status"], "ERROR", "{s}");
            (s["status"] == "ACTIVE").then_some(s)
        },
    );
    assert_eq!(server["flavor"]["id"], bed.flavor.as_str(), "{server}");
    assert_eq!(server["image"]["id"], bed.image.as_str(), "{server}");

    // Play the instance: cloud-init would write this file and start the agent.
    let cloud_config = stack.nova.user_data(&server);
    let agent_toml = written_file(&cloud_config, "/etc/berth/agent.toml");
    let agent: toml::Table = agent_toml.parse().unwrap();
    let instance = agent["instance"].as_str().unwrap().to_owned();
    assert_eq!(server["name"], format!("berth-{instance}"));
    assert_eq!(server["metadata"]["berth_instance"], instance.as_str());
    assert!(agent["enrollment_token"]
        .as_str()
        .is_some_and(|t| !t.is_empty()));
    let etc = stack.dir.path().join("instance-etc");
    let state = stack.dir.path().join("instance-state");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(etc.join("agent.toml"), &agent_toml).unwrap();
    // And the deployment's CA, which agent.toml names, for verifying the relay.
    assert_eq!(agent["ca_cert"].as_str(), Some("/etc/berth/ca.pem"));
    let ca = written_file(&cloud_config, "/etc/berth/ca.pem");
    assert_eq!(
        ca,
        std::fs::read_to_string(stack.dir.path().join("pki").join("ca.pem")).unwrap()
    );
    std::fs::write(etc.join("ca.pem"), &ca).unwrap();
    let name = format!("berth-test-nova-agent-{}", &instance[..8]);
    let mount = |host: &Path, inside: &str| format!("{}:{inside}", host.display());
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "berth.test=nova",
        "--network",
        "host",
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-v",
        &mount(&etc, "/etc/berth"),
        "-v",
        &mount(&state, "/var/lib/berth"),
        AGENT_IMAGE,
        "--config",
        "/etc/berth/agent.toml",
    ]);
    stack.agent_containers.push(name.clone());

    // It enrolls, connects, and runs the tenant's container on its own engine.
    let running = stack.wait_status(&uuid, "Running", Duration::from_secs(90));
    assert_eq!(
        support::docker_inspect(&uuid, "{{index .Config.Labels \"berth.instance\"}}").as_deref(),
        Some(instance.as_str()),
        "the container runs on the Nova instance's agent: {running}"
    );
    assert_eq!(
        support::docker_inspect(&uuid, "{{.State.Running}}").as_deref(),
        Some("true")
    );
    let credential = std::fs::read_to_string(state.join("agent-credential"))
        .expect("the agent kept the credential it enrolled for");
    assert!(!credential.trim().is_empty());

    // Idle, the instance goes back to Nova: its server is deleted.
    stack.osc_ok(&["container-delete", "--force", &uuid]);
    wait_for_opt(Duration::from_secs(90), || {
        stack.nova.server(&server_id).is_none().then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the idle instance's server {server_id} was not deleted\n--- service log:\n{}",
            stack.log()
        )
    });
    let logs = docker(&["logs", &name]);
    assert!(
        !logs.contains(agent["enrollment_token"].as_str().unwrap()),
        "the agent logged its token"
    );
}

#[test]
fn a_flavor_no_host_can_hold_ends_the_waiting_container_in_error_with_novas_fault_and_leaves_no_server(
) {
    let bed = bed();
    let os = [
        ("OS_USERNAME", var("BERTH_TEST_NOVA_USER")),
        ("OS_PASSWORD", var("BERTH_TEST_NOVA_PASSWORD")),
        ("OS_PROJECT_NAME", var("BERTH_TEST_NOVA_PROJECT")),
    ];
    let stack = Stack::start(&bed, &bed.huge_flavor, &os, 60);
    let uuid = stack.create();
    let failed = stack.wait_status(&uuid, "Error", Duration::from_secs(90));
    let reason = failed["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("No valid host was found"), "{failed}");
    assert!(reason.contains("went to ERROR"), "{failed}");
    // The reason names the server; Nova must no longer have it, nor any server of
    // this service.
    let server_id = reason
        .split("Nova server ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the reason names no server: {reason}"));
    assert_eq!(stack.nova.server(server_id), None, "{reason}");
    assert!(
        stack
            .nova
            .berth_servers()
            .iter()
            .all(|s| s["flavor"]["id"] != bed.huge_flavor.as_str()),
        "a server of the failed boot is left: {:?}",
        stack.nova.berth_servers()
    );
}

#[test]
fn an_exhausted_nova_quota_ends_the_waiting_container_in_error_with_the_quota_message_and_leaves_no_server(
) {
    let bed = bed();
    let project_id = var("BERTH_TEST_NOVA_QUOTA_PROJECT_ID");
    let admin = NovaAdmin::new(&bed);
    admin.set_instances_quota(&project_id, 0);
    let os = [
        ("OS_USERNAME", var("BERTH_TEST_NOVA_QUOTA_USER")),
        ("OS_PASSWORD", var("BERTH_TEST_NOVA_QUOTA_PASSWORD")),
        ("OS_PROJECT_NAME", var("BERTH_TEST_NOVA_QUOTA_PROJECT")),
    ];
    let stack = Stack::start(&bed, &bed.flavor, &os, 60);
    let uuid = stack.create();
    let failed = stack.wait_status(&uuid, "Error", Duration::from_secs(90));
    let reason = failed["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("Quota exceeded for instances"), "{failed}");
    assert!(reason.contains("Nova refused to boot"), "{failed}");
    let (status, body) = admin.get(&format!(
        "/servers/detail?all_tenants=1&project_id={project_id}"
    ));
    assert_eq!(status, 200);
    assert_eq!(
        body["servers"],
        json!([]),
        "no server is left in the project"
    );
}

#[test]
fn a_server_not_active_within_the_boot_timeout_is_deleted_and_the_container_ends_in_error() {
    let bed = bed();
    let os = [
        ("OS_USERNAME", var("BERTH_TEST_NOVA_USER")),
        ("OS_PASSWORD", var("BERTH_TEST_NOVA_PASSWORD")),
        ("OS_PROJECT_NAME", var("BERTH_TEST_NOVA_PROJECT")),
    ];
    // No server can be ACTIVE within 0 s: the first look finds it still in BUILD.
    let stack = Stack::start(&bed, &bed.flavor, &os, 0);
    let uuid = stack.create();
    let failed = stack.wait_status(&uuid, "Error", Duration::from_secs(90));
    let reason = failed["status_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("was not ACTIVE within 0 s"), "{failed}");
    assert!(reason.contains("no server was left behind"), "{failed}");
    let server_id = reason
        .split("Nova server ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the reason names no server: {reason}"));
    assert_eq!(stack.nova.server(server_id), None, "{reason}");
    assert_eq!(stack.my_servers(), Vec::<Value>::new());
}
