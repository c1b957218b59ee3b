//! Berth as separate processes against an external Keystone: berth-service (SQLite, in a
//! temporary directory) and, for one Keystone project, a registered host with its
//! berth-relay and berth-agent. Used by tests/heat.rs (the Heat bed's Keystone).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, http, osc_path, run_ok, wait_for};

/// How to run berth-service against Keystone.
pub struct ExternalOptions<'a> {
    /// Keystone's `…/v3` URL.
    pub keystone_url: &'a str,
    /// Berth's service account (it needs the `service` role to validate tokens).
    pub service_user: &'a str,
    pub service_password: &'a str,
    pub service_project: &'a str,
    /// Token cache TTL in seconds.
    pub cache_ttl: u64,
    /// Keystone's JWS public keys, for the offline pre-check.
    pub jws_public_dir: Option<&'a Path>,
    /// The API port (None: a free one).
    pub api_port: Option<u16>,
    /// Register a host for this Keystone project (id, name) and run its agent.
    pub host_for: Option<(&'a str, &'a str)>,
    /// More environment for berth-agent (e.g. `BERTH_AGENT_POD_BACKOFF_BASE_MS`).
    pub agent_env: Vec<(&'a str, String)>,
}

impl<'a> ExternalOptions<'a> {
    pub fn new(
        keystone_url: &'a str,
        service_user: &'a str,
        service_password: &'a str,
        service_project: &'a str,
    ) -> Self {
        ExternalOptions {
            keystone_url,
            service_user,
            service_password,
            service_project,
            cache_ttl: 300,
            jws_public_dir: None,
            api_port: None,
            host_for: None,
            agent_env: Vec::new(),
        }
    }
}

/// Child processes, killed when the test ends however it ends.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A binary of the workspace, next to `osc` in target/.
pub fn bin(name: &str) -> PathBuf {
    let p = osc_path().with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build with `cargo build --workspace --bins`",
        p.display()
    );
    p
}

/// What `berth-service register-host` printed: `key=value` lines.
pub struct RegisteredHost(pub String);

impl RegisteredHost {
    /// The value of `key`; a panic if it was not printed.
    pub fn field(&self, key: &str) -> String {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("register-host printed no {key}: {}", self.0))
            .to_owned()
    }

    /// berth-agent of this host, connecting to the relay on `relay_port` with the
    /// instance, credential, service key and TLS that register-host printed.
    pub fn agent(&self, relay_port: u16) -> Command {
        let mut agent = Command::new(bin("berth-agent"));
        agent
            .env(
                "BERTH_AGENT_RELAY_URL",
                format!("wss://127.0.0.1:{relay_port}"),
            )
            .env("BERTH_AGENT_CREDENTIAL", self.field("credential"))
            .env("BERTH_AGENT_SERVICE_KEY", self.field("service_key"))
            .env("BERTH_AGENT_CA_CERT", self.field("ca_cert"))
            .env("BERTH_AGENT_TLS_CERT", self.field("tls_cert"))
            .env("BERTH_AGENT_TLS_KEY", self.field("tls_key"))
            .env("BERTH_AGENT_INSTANCE", self.field("instance"));
        agent
    }
}

/// berth-relay on `relay_port`, with the deployment's CA directory `pki` and the
/// service's credential public key `key` (`berth-service relay-key`).
pub fn relay(relay_port: u16, pki: &Path, key: &Path) -> Command {
    let mut relay = Command::new(bin("berth-relay"));
    relay
        .env("BERTH_RELAY_LISTEN", format!("127.0.0.1:{relay_port}"))
        .env("BERTH_RELAY_CREDENTIAL_PUBLIC_KEY", key)
        .env("BERTH_RELAY_TLS_DIR", pki);
    relay
}

/// berth-service (and, with a host, berth-relay and berth-agent) as separate processes.
pub struct ExternalStack {
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub api: String,
    /// The registered host's instance id.
    pub instance: Option<String>,
    _procs: Procs,
}

impl ExternalStack {
    pub fn start(o: ExternalOptions) -> ExternalStack {
        let dir = tempfile::tempdir().unwrap();
        let (api_port, relay_port) = (o.api_port.unwrap_or_else(free_port), free_port());
        let service = |args: &[&str]| {
            let mut cmd = Command::new(bin("berth-service"));
            cmd.args(args)
                .env("BERTH_SERVICE_LISTEN", format!("127.0.0.1:{api_port}"))
                .env(
                    "BERTH_SERVICE_DATABASE_URL",
                    format!("sqlite://{}", dir.path().join("db.sqlite").display()),
                )
                .env(
                    "BERTH_SERVICE_RELAY_URL",
                    format!("wss://127.0.0.1:{relay_port}"),
                )
                .env("BERTH_SERVICE_KEYS_DIR", dir.path().join("keys"))
                // Relay connections are mutual TLS of this CA (docs/TLS.md).
                .env("BERTH_SERVICE_TLS_DIR", dir.path().join("pki"))
                .env("BERTH_SERVICE_KEYSTONE_URL", o.keystone_url)
                .env("BERTH_SERVICE_KEYSTONE_USERNAME", o.service_user)
                .env("BERTH_SERVICE_KEYSTONE_PASSWORD", o.service_password)
                .env("BERTH_SERVICE_KEYSTONE_PROJECT", o.service_project)
                .env("BERTH_SERVICE_TOKEN_CACHE_TTL", o.cache_ttl.to_string())
                .env("RUST_LOG", "info,berth_service=debug");
            if let Some(d) = o.jws_public_dir {
                cmd.env("BERTH_SERVICE_JWS_PUBLIC_KEYS_DIR", d);
            }
            cmd
        };
        let run = |args: &[&str]| run_ok(&mut service(args), &format!("berth-service {args:?}"));
        let log = |name: &str| File::create(dir.path().join(name)).unwrap();
        let mut procs = Procs(Vec::new());
        let mut instance = None;
        let pki = dir.path().join("pki");
        run(&["pki", "init", "--dir", pki.to_str().unwrap()]);
        if let Some((project_id, project_name)) = o.host_for {
            std::fs::write(dir.path().join("relay.pem"), run(&["relay-key"])).unwrap();
            let agent_tls = dir.path().join("agent-tls");
            let host = run(&[
                "register-host",
                "--name",
                &format!("host-{project_name}"),
                "--address",
                "127.0.0.1",
                "--project-id",
                project_id,
                "--project-name",
                project_name,
                "--agent-tls-dir",
                agent_tls.to_str().unwrap(),
            ]);
            let host = RegisteredHost(host);
            let id = host.field("instance");
            procs.0.push(
                relay(relay_port, &pki, &dir.path().join("relay.pem"))
                    .stdout(Stdio::null())
                    .stderr(log("relay.log"))
                    .spawn()
                    .unwrap(),
            );
            let mut agent = host.agent(relay_port);
            agent
                .env("BERTH_AGENT_STATE_DIR", dir.path().join("agent-state"))
                .stdout(Stdio::null())
                .stderr(log("agent.log"));
            for (k, v) in &o.agent_env {
                agent.env(k, v);
            }
            procs.0.push(agent.spawn().unwrap());
            instance = Some(id);
        }
        procs.0.push(
            service(&["serve"])
                .stdout(Stdio::null())
                .stderr(log("service.log"))
                .spawn()
                .unwrap(),
        );
        let api = format!("http://127.0.0.1:{api_port}");
        // Up when it answers at all: a request without a token gets 401.
        wait_for("berth-service to listen", Duration::from_secs(30), || {
            http()
                .get(format!("{api}/v1/containers"))
                .send()
                .ok()
                .map(drop)
        });
        ExternalStack {
            dir,
            api,
            instance,
            _procs: procs,
        }
    }

    /// berth-service's log.
    pub fn log(&self) -> String {
        self.file("service.log")
    }

    /// A log file of the stack (`service.log`, `relay.log`, `agent.log`).
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }
}
