//! Shared helpers of the system tests: a real `berth up` in its own data directory,
//! the real `osc` binary, the real Docker engine and (for PostgreSQL) a database per test.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod cluster;
pub mod docker;
pub mod external;
pub mod openstack;

/// The image the test set-up builds (`scripts/build-test-image`).
pub const IMAGE: &str = "berth-test/busybox:latest";

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_berth"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Path of the `osc` binary (built by `cargo build --workspace --bins`).
pub fn osc_path() -> PathBuf {
    let p = bin_dir().join("osc");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (scripts/test does)",
        p.display()
    );
    p
}

/// A running `berth up`.
pub struct Berth {
    child: Option<Child>,
    pub data: tempfile::TempDir,
    pub database_url: Option<String>,
    pub url: String,
    pub instance: String,
    pub env: Vec<(String, String)>,
    /// The Docker endpoint's plain loopback listener, `tcp://127.0.0.1:PORT`.
    pub docker_host: String,
    /// The Docker endpoint's TLS listener, `tcp://127.0.0.1:PORT`.
    pub docker_tls_host: String,
    output: Arc<Mutex<Vec<String>>>,
    /// More `berth up` options, given on every (re)start.
    args: Vec<String>,
}

impl Berth {
    /// Starts `berth up` with SQLite in a fresh data directory.
    pub fn start() -> Berth {
        Berth::start_with(None)
    }

    /// Starts `berth up` with the given database (None: SQLite).
    pub fn start_with(database_url: Option<String>) -> Berth {
        Berth::start_with_args(database_url, &[])
    }

    /// Starts `berth up` with the given database (None: SQLite) and more options
    /// (e.g. `--instance-memory-mib 256`).
    pub fn start_with_args(database_url: Option<String>, args: &[&str]) -> Berth {
        let mut b = Berth {
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            data: tempfile::tempdir().unwrap(),
            database_url,
            url: String::new(),
            instance: String::new(),
            env: Vec::new(),
            docker_host: String::new(),
            docker_tls_host: String::new(),
            output: Arc::default(),
        };
        b.launch();
        b
    }

    fn launch(&mut self) {
        let _ = std::fs::remove_file(self.data.path().join("openrc"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        cmd.args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--relay-listen",
            "127.0.0.1:0",
            // Port 0: parallel tests never clash on 2375/2376.
            "--docker-listen",
            "127.0.0.1:0",
            "--docker-tls-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(self.data.path())
        .env("RUST_LOG", "info,berth_service=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(url) = &self.database_url {
            cmd.args(["--database-url", url]);
        }
        cmd.args(&self.args);
        let mut child = cmd.spawn().expect("berth up starts");
        let output = self.output.clone();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        self.child = Some(child);
        let instance = wait_for(
            "berth up to report its instance",
            Duration::from_secs(60),
            || {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("berth up exited with {status}:\n{}", self.log());
                }
                self.output.lock().unwrap().iter().find_map(|l| {
                    l.trim()
                        .strip_prefix("instance: ")
                        .map(|r| r.split(' ').next().unwrap().to_owned())
                })
            },
        );
        self.instance = instance;
        // The Docker endpoint's bound addresses, printed at start-up as
        // `  docker:   tcp://ADDR:PORT` and `  docker-tls: tcp://ADDR:PORT`.
        let (docker_host, docker_tls_host) = wait_for(
            "berth up to print its Docker listeners",
            Duration::from_secs(60),
            || {
                let output = self.output.lock().unwrap();
                let find = |key: &str| {
                    output.iter().find_map(|l| {
                        l.trim()
                            .strip_prefix(key)
                            .map(|r| r.trim().to_owned())
                            .filter(|r| r.starts_with("tcp://"))
                    })
                };
                Some((find("docker:")?, find("docker-tls:")?))
            },
        );
        self.docker_host = docker_host;
        self.docker_tls_host = docker_tls_host;
        let openrc =
            std::fs::read_to_string(self.data.path().join("openrc")).expect("openrc written");
        self.env = openrc
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        let auth = self.env("OS_AUTH_URL");
        self.url = auth.trim_end_matches("/identity/v3").to_owned();
        // Ready when the agent has reported in: a logs call on nothing would not tell,
        // so wait for the service to record the agent as connected.
        wait_for(
            "the local agent to connect",
            Duration::from_secs(60),
            || {
                self.output
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("agent connected with its full state"))
                    .then_some(())
            },
        );
    }

    /// A variable from openrc.
    pub fn env(&self, key: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// Everything berth up printed so far.
    pub fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Kills berth up with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        self.output.lock().unwrap().clear();
    }

    /// Starts berth up again on the same data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.launch();
    }

    /// Runs `osc` with this deployment's openrc environment.
    pub fn osc(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(osc_path());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("osc runs")
    }

    /// Runs `osc` and expects success; returns stdout.
    pub fn osc_ok(&self, args: &[&str]) -> String {
        success_stdout(&format!("osc {args:?}"), self.osc(args), &self.log())
    }

    /// Runs `osc ... -f json` and parses the output.
    pub fn osc_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        let out = self.osc_ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("osc {args:?} printed non-JSON ({e}): {out}"))
    }

    /// The container's current view.
    pub fn show(&self, id: &str) -> Value {
        self.osc_json(&["container-show", id])
    }

    /// Waits until the container has `status` and no task in progress.
    pub fn wait_status(&self, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        let found = wait_for_opt(Duration::from_secs(60), || {
            let v = self.show(id);
            let done = v["status"] == status && v["task_state"].is_null();
            last = v.clone();
            done.then_some(v)
        });
        found.unwrap_or_else(|| {
            panic!(
                "container {id} never reached {status}; last seen: {last}\nberth log:\n{}",
                self.log()
            )
        })
    }

    /// A token for the admin, through `osc token-issue`.
    pub fn token(&self) -> String {
        self.osc_ok(&["token-issue", "-f", "value", "-c", "id"])
            .trim()
            .to_owned()
    }

    /// The instances this deployment made with the `docker` provider, by the agent
    /// containers on its host (whose Berth uuid is the instance id).
    pub fn docker_instances(&self) -> Vec<String> {
        docker_lines(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=berth.instance={}", self.instance),
            "--filter",
            "label=berth.role=instance-agent",
            "--format",
            "{{.Label \"berth.container\"}}",
        ])
    }

    /// The Docker containers this deployment's agent manages, by Berth uuid label.
    pub fn docker_containers(&self) -> Vec<String> {
        docker_lines(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=berth.instance={}", self.instance),
            "--format",
            "{{.Label \"berth.container\"}}",
        ])
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !self.instance.is_empty() {
            // Every instance this deployment made: its host, and each `docker` instance,
            // whose agent container runs on the host with the instance's id as its
            // berth.container label. The host's containers (agents included) go first,
            // so no agent is left to act on the instances' containers. A create the
            // engine was still finishing when berth up died shows up only afterwards,
            // so passes repeat until one finds nothing (at most three).
            let mut instances = vec![self.instance.clone()];
            for _ in 0..3 {
                for agent in docker_lines_quiet(&[
                    "ps",
                    "-a",
                    "--filter",
                    &format!("label=berth.instance={}", self.instance),
                    "--filter",
                    "label=berth.role=instance-agent",
                    "--format",
                    "{{.Label \"berth.container\"}}",
                ]) {
                    if !instances.contains(&agent) {
                        instances.push(agent);
                    }
                }
                let mut removed = false;
                for instance in &instances {
                    let ids = docker_lines_quiet(&[
                        "ps",
                        "-aq",
                        "--filter",
                        &format!("label=berth.instance={instance}"),
                    ]);
                    if !ids.is_empty() {
                        removed = true;
                        let mut args = vec!["rm", "-f"];
                        args.extend(ids.iter().map(String::as_str));
                        let _ = Command::new("docker").args(&args).output();
                    }
                }
                if !removed {
                    break;
                }
            }
        }
    }
}

/// Like [`docker_lines`], but never panics (for `Drop`): a failure gives no lines.
fn docker_lines_quiet(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Polls until `f` returns Some or the timeout passes.
pub fn wait_for_opt<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(150));
    }
}

/// Runs the docker CLI and returns its non-empty output lines.
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `docker inspect -f FORMAT` of a Berth container, by its Docker name.
pub fn docker_inspect(uuid: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, &format!("berth-{uuid}")])
        .output()
        .expect("docker CLI runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs `cmd` (`what` names it), which must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stdout of a client run (`what`) that had to succeed; otherwise a panic with its
/// output and `log` (the deployment's log, or the part of it that helps).
pub fn success_stdout(what: &str, out: Output, log: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}\nberth log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        log
    );
    String::from_utf8(out.stdout).expect("the client prints UTF-8")
}

/// The last `lines` lines of `log`.
pub fn log_tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A PostgreSQL database made for one test and dropped afterwards.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    /// Creates a fresh database on the test cluster (`BERTH_TEST_DATABASE_URL`).
    pub fn create() -> PgDatabase {
        use diesel::{Connection, RunQueryDsl};
        let admin_url = std::env::var("BERTH_TEST_DATABASE_URL").expect(
            "BERTH_TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
        );
        let name = format!("berth_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn =
            diesel::PgConnection::establish(&admin_url).expect("connect to the test cluster");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .unwrap();
        let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap();
        PgDatabase {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        use diesel::{Connection, RunQueryDsl};
        if let Ok(mut conn) = diesel::PgConnection::establish(&self.admin_url) {
            let _ = diesel::sql_query(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut conn);
        }
    }
}

/// HTTP helpers against the raw API.
pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A user of one project, made through the embedded Keystone API, with the OS_*
/// environment `osc` and `openstack` need to act as that user.
pub struct ProjectUser {
    pub project_id: String,
    pub user_id: String,
    pub env: Vec<(String, String)>,
}

impl Berth {
    /// Creates (or reuses) `project` and `user` with `role` (admin, member or reader)
    /// through the identity API, as the admin.
    pub fn project_user(&self, project: &str, user: &str, role: &str) -> ProjectUser {
        let admin = self.token();
        let client = http();
        let id_base = format!("{}/identity/v3", self.url);
        let find = |kind: &str, name: &str| -> Option<String> {
            let v: Value = client
                .get(format!("{id_base}/{kind}?name={name}"))
                .header("X-Auth-Token", &admin)
                .send()
                .unwrap()
                .json()
                .unwrap();
            v[kind][0]["id"].as_str().map(str::to_owned)
        };
        let project_id = find("projects", project).unwrap_or_else(|| {
            let r = client
                .post(format!("{id_base}/projects"))
                .header("X-Auth-Token", &admin)
                .json(&serde_json::json!({"project": {"name": project, "domain_id": "default"}}))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 201, "project create");
            r.json::<Value>().unwrap()["project"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        });
        let password = format!("pw-{user}");
        let user_id = find("users", user).unwrap_or_else(|| {
            let r = client
                .post(format!("{id_base}/users"))
                .header("X-Auth-Token", &admin)
                .json(&serde_json::json!({"user": {"name": user, "password": password, "domain_id": "default", "default_project_id": project_id}}))
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 201, "user create");
            r.json::<Value>().unwrap()["user"]["id"].as_str().unwrap().to_owned()
        });
        let role_id = find("roles", role).unwrap_or_else(|| panic!("role {role} exists"));
        let r = client
            .put(format!(
                "{id_base}/projects/{project_id}/users/{user_id}/roles/{role_id}"
            ))
            .header("X-Auth-Token", &admin)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "role assignment");
        let env = vec![
            ("OS_AUTH_URL".to_owned(), self.env("OS_AUTH_URL")),
            ("OS_USERNAME".to_owned(), user.to_owned()),
            ("OS_PASSWORD".to_owned(), password),
            ("OS_PROJECT_NAME".to_owned(), project.to_owned()),
            ("OS_USER_DOMAIN_NAME".to_owned(), "Default".to_owned()),
            ("OS_PROJECT_DOMAIN_NAME".to_owned(), "Default".to_owned()),
            ("OS_IDENTITY_API_VERSION".to_owned(), "3".to_owned()),
        ];
        ProjectUser {
            project_id,
            user_id,
            env,
        }
    }

    /// Runs `osc` as `user`.
    pub fn osc_as(&self, user: &ProjectUser, args: &[&str]) -> Output {
        let mut cmd = Command::new(osc_path());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &user.env {
            cmd.env(k, v);
        }
        cmd.output().expect("osc runs")
    }

    /// Runs `osc ... -f json` as `user`, which must succeed; returns the parsed output.
    pub fn osc_json_as(&self, user: &ProjectUser, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        let out = success_stdout(
            &format!("osc {args:?}"),
            self.osc_as(user, &all),
            &self.log(),
        );
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("osc {args:?} printed non-JSON ({e}): {out}"))
    }

    /// A token for `user`, through the identity API.
    pub fn token_as(&self, user: &ProjectUser) -> String {
        let out = self.osc_as(user, &["token-issue", "-f", "value", "-c", "id"]);
        success_stdout("osc token-issue", out, &self.log())
            .trim()
            .to_owned()
    }
}
