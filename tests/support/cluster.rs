//! A Berth deployment of separate processes for the fault drills: a PostgreSQL cluster
//! of its own (initdb into a temporary directory, its own port), two `berth-relay`s,
//! `berth-service serve` with the `docker` instance provider, and one `berth-agent` on
//! the host (a registered host of the admin project) that makes the instances' agent
//! containers. Those agent containers sit on a private Docker network of the cluster and
//! reach the relays and the service at the network's gateway address, so `docker network
//! disconnect` partitions one of them.
//!
//! Every process can be killed with SIGKILL and started again; PostgreSQL can be
//! restarted. Everything made is labelled `berth.test=drills` and `berth.drill=<id>`
//! (tenant containers, the network) or found through the cluster's instances (agent
//! containers), and removed when the cluster is dropped.
//!
//! The relays and the service listen on the gateway address of the private network
//! (reachable from the host and from containers on that network only). Relay
//! connections are mutual TLS (`wss://`): `berth-service pki init` makes the cluster's
//! CA and the relays' certificate for the gateway address; the host agent gets its
//! certificate from `register-host --agent-tls-dir`, the agent containers theirs at
//! enrollment. The service's `relay_url` and every agent's list name both relays.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::external::bin;
use super::{docker_lines, http, run_ok, IMAGE};

/// Label (value `drills`) on everything a cluster makes.
pub const LABEL_TEST: &str = "berth.test";
/// Label naming the cluster a tenant container or network belongs to.
pub const LABEL_DRILL: &str = "berth.drill";

/// How many log lines of each process a failure report shows.
const LOG_TAIL: usize = 80;

/// A process of the cluster, restartable with the same command line.
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Mutex<Option<Child>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn new(name: &str, program: PathBuf, args: Vec<String>, env: Vec<(String, String)>) -> Proc {
        Proc {
            name: name.to_owned(),
            program,
            args,
            env,
            child: Mutex::new(None),
            log: Arc::default(),
        }
    }

    /// Starts the process (it must not be running).
    pub fn start(&self) {
        let mut slot = self.child.lock().unwrap();
        assert!(slot.is_none(), "{} is already running", self.name);
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({}): {e}", self.name, self.program.display()));
        let pid = child.id();
        self.log
            .lock()
            .unwrap()
            .push(format!("--- {} started (pid {pid}) ---", self.name));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        *slot = Some(child);
    }

    /// Kills the process with SIGKILL (what `Child::kill` sends on Unix) and reaps it.
    pub fn kill9(&self) {
        let taken = self.child.lock().unwrap().take();
        if let Some(mut c) = taken {
            let pid = c.id();
            let _ = c.kill();
            let _ = c.wait();
            self.log.lock().unwrap().push(format!(
                "--- {} killed with SIGKILL (pid {pid}) ---",
                self.name
            ));
        }
    }

    /// Whether the process is running (panics with its log when it exited by itself).
    pub fn check_alive(&self) {
        if let Some(c) = self.child.lock().unwrap().as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                panic!(
                    "{} exited by itself with {status}:\n{}",
                    self.name,
                    self.tail(LOG_TAIL)
                );
            }
        }
    }

    /// Everything the process printed so far, across restarts.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Its last `n` lines.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        let from = log.len().saturating_sub(n);
        log[from..].join("\n")
    }

    /// Whether any line so far contains `text`.
    pub fn printed(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The cluster's own PostgreSQL (never the shared cluster of scripts/pg-test-cluster).
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    pub url: String,
}

impl Postgres {
    fn bin_dir() -> PathBuf {
        if let Ok(b) = std::env::var("BERTH_PG_BIN") {
            return PathBuf::from(b);
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path().join("bin"))
                    .filter(|p| p.join("initdb").exists())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found.pop().expect(
            "no PostgreSQL binaries under /usr/lib/postgresql/*/bin: install postgresql (scripts/pg-test-cluster says how), or set BERTH_PG_BIN",
        )
    }

    /// Runs a PostgreSQL tool as the cluster's owner (`postgres` when we are root,
    /// since PostgreSQL refuses to run as root).
    fn as_owner(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let program = self.bin.join(tool);
        let mut cmd = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        cmd.args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
    }

    /// initdb into a fresh directory under /tmp and start on a free port.
    fn start() -> Postgres {
        let bin = Postgres::bin_dir();
        // /tmp rather than $TMPDIR: the postgres user must reach it.
        let dir = tempfile::Builder::new()
            .prefix("berth-drill-pg.")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let mut pg = Postgres {
            bin,
            port: super::free_port(),
            url: String::new(),
            dir,
        };
        pg.url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
        let data = pg.dir.join("data");
        let out = pg.as_owner(
            "initdb",
            &[
                &format!("--pgdata={}", data.display()),
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.pg_ctl_start();
        pg
    }

    /// Server options. Commits stay synchronous: the drill stops the server as a crash
    /// does, and `synchronous_commit=off` would lose the last commits on purpose.
    /// `fsync=off` only matters when the machine itself crashes, which no drill does.
    fn options(&self) -> String {
        format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories='{}' -c max_connections=100 -c fsync=off",
            self.port,
            self.dir.display()
        )
    }

    fn pg_ctl_start(&self) {
        let out = self.as_owner(
            "pg_ctl",
            &[
                &format!("--pgdata={}", self.dir.join("data").display()),
                &format!("--log={}", self.dir.join("server.log").display()),
                "--wait",
                "--timeout=60",
                "-o",
                &self.options(),
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "PostgreSQL did not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }

    /// Stops the server at once (`-m immediate`: no clean shut-down, like a crash).
    pub fn stop_immediate(&self) {
        let out = self.as_owner(
            "pg_ctl",
            &[
                &format!("--pgdata={}", self.dir.join("data").display()),
                "--wait",
                "-m",
                "immediate",
                "stop",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the stopped server again on the same port and data.
    pub fn start_again(&self) {
        self.pg_ctl_start();
    }

    /// A connection to the `postgres` database.
    pub fn connect(&self) -> Result<diesel::PgConnection, diesel::ConnectionError> {
        use diesel::Connection;
        diesel::PgConnection::establish(&self.url)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.as_owner(
            "pg_ctl",
            &[
                &format!("--pgdata={}", self.dir.join("data").display()),
                "--wait",
                "-m",
                "immediate",
                "stop",
            ],
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A tenant: one project and a member of it, with a token.
pub struct Tenant {
    pub project_id: String,
    pub token: String,
}

/// A running multi-process deployment.
pub struct Cluster {
    /// Unique per cluster; the value of [`LABEL_DRILL`].
    pub id: String,
    dir: tempfile::TempDir,
    pub pg: Postgres,
    /// The private Docker network of the agent containers.
    pub network: String,
    /// Its gateway address: the host, as the agent containers reach it.
    pub gateway: String,
    pub relays: Vec<Proc>,
    relay_ports: Vec<u16>,
    pub service: Proc,
    pub host_agent: Proc,
    /// The API's base URL.
    pub url: String,
    /// The registered host instance whose agent makes the agent containers.
    pub host_instance: String,
    admin_password: String,
}

/// A free TCP port on `ip` (bound, then released).
fn free_port_on(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `docker` and expects success; returns stdout.
pub fn docker_ok(args: &[&str]) -> String {
    run_ok(
        Command::new("docker").args(args),
        &format!("docker {args:?}"),
    )
}

impl Cluster {
    /// Starts PostgreSQL, the network, two relays, the service (bootstrapped, with the
    /// docker provider on the network) and the host's agent, and waits until the host's
    /// agent is connected.
    pub fn start() -> Cluster {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let dir = tempfile::Builder::new()
            .prefix("berth-drill.")
            .tempdir()
            .unwrap();
        let pg = Postgres::start();

        let network = format!("berth-drill-{id}");
        docker_ok(&[
            "network",
            "create",
            "--label",
            &format!("{LABEL_TEST}=drills"),
            "--label",
            &format!("{LABEL_DRILL}={id}"),
            &network,
        ]);
        let gateway = docker_ok(&[
            "network",
            "inspect",
            "--format",
            "{{(index .IPAM.Config 0).Gateway}}",
            &network,
        ])
        .trim()
        .to_owned();
        assert!(
            gateway.parse::<std::net::IpAddr>().is_ok(),
            "network {network} has no IPv4 gateway: {gateway:?}"
        );

        let keys_dir = dir.path().join("keys");
        let relay_ports = vec![free_port_on(&gateway), free_port_on(&gateway)];
        let service_port = free_port_on(&gateway);
        let url = format!("http://{gateway}:{service_port}");
        let relay_urls: Vec<String> = relay_ports
            .iter()
            .map(|p| format!("wss://{gateway}:{p}"))
            .collect();

        // The deployment's PKI: a CA, the relays' certificate for the gateway address
        // (where everyone dials them), the service's client certificate.
        let service_bin = bin("berth-service");
        let pki_dir = dir.path().join("pki");
        run_ok(
            Command::new(&service_bin)
                .args(["pki", "init", "--dir"])
                .arg(&pki_dir)
                .args(["--relay-name", &gateway]),
            "berth-service pki init",
        );
        // Bootstrap without the provider: the admin account, the host instance, the
        // relays' public key.
        let base_config = format!(
            "listen = \"{gateway}:{service_port}\"\n\
             public_url = \"{url}\"\n\
             database_url = \"{db}\"\n\
             relay_url = \"{relay}\"\n\
             keys_dir = \"{keys}\"\n\
             agent_lost_after = 10\n",
            db = pg.url,
            relay = relay_urls.join(","),
            keys = keys_dir.display(),
        );
        let tls_section = format!("[tls]\ndir = \"{}\"\n", pki_dir.display());
        let bootstrap_config = dir.path().join("bootstrap.toml");
        std::fs::write(&bootstrap_config, format!("{base_config}{tls_section}")).unwrap();
        let admin_password = format!("drill-{id}");
        let one_shot = |args: &[&str]| -> String {
            run_ok(
                Command::new(&service_bin)
                    .arg("--config")
                    .arg(&bootstrap_config)
                    // Its own listener, so that nothing holds the serving port.
                    .args(["--listen", "127.0.0.1:0"])
                    .args(args)
                    .env("BERTH_ADMIN_PASSWORD", &admin_password)
                    .env("RUST_LOG", "warn"),
                &format!("berth-service {args:?}"),
            )
        };
        one_shot(&["bootstrap"]);
        let host_tls_dir = dir.path().join("host-agent-tls");
        let registered = one_shot(&[
            "register-host",
            "--name",
            "drill-host",
            "--address",
            &gateway,
            "--agent-tls-dir",
            &host_tls_dir.display().to_string(),
        ]);
        let registered = super::external::RegisteredHost(registered);
        let field = |k: &str| registered.field(k);
        let host_instance = field("instance");
        let credential = field("credential");
        let service_key = field("service_key");
        let (ca_cert, tls_cert, tls_key) = (field("ca_cert"), field("tls_cert"), field("tls_key"));
        let key_file = dir.path().join("relay-key.pem");
        std::fs::write(&key_file, one_shot(&["relay-key"])).unwrap();

        let relays: Vec<Proc> = relay_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                Proc::new(
                    &format!("relay-{i}"),
                    bin("berth-relay"),
                    vec![
                        "--listen".into(),
                        format!("{gateway}:{port}"),
                        "--credential-public-key".into(),
                        key_file.display().to_string(),
                        "--tls-dir".into(),
                        pki_dir.display().to_string(),
                    ],
                    vec![("RUST_LOG".into(), "info".into())],
                )
            })
            .collect();

        let config = format!(
            "{base_config}\
             instance_provider = \"docker\"\n\
             {tls_section}\
             [docker_instances]\n\
             host_instance = \"{host_instance}\"\n\
             address = \"{gateway}\"\n\
             image = \"{image}\"\n\
             relay_url = \"{relay}\"\n\
             network = \"{network}\"\n\
             labels = {{ \"berth.test\" = \"{run}\" }}\n",
            relay = relay_urls.join(","),
            // So scripts/test's clean-up finds the agent containers of a killed run.
            run = std::env::var("BERTH_TEST_RUN_ID").unwrap_or_else(|_| "drill".to_owned()),
            // The image scripts/test builds; BERTH_DRILL_AGENT_IMAGE names another.
            image = std::env::var("BERTH_DRILL_AGENT_IMAGE")
                .unwrap_or_else(|_| "berth-agent:dev".to_owned()),
        );
        let config_file = dir.path().join("service.toml");
        std::fs::write(&config_file, config).unwrap();
        let service = Proc::new(
            "berth-service",
            service_bin.clone(),
            vec![
                "--config".into(),
                config_file.display().to_string(),
                "serve".into(),
            ],
            vec![("RUST_LOG".into(), "info,berth_service=debug".into())],
        );
        let host_agent = Proc::new(
            "host-agent",
            bin("berth-agent"),
            vec![
                "--relay-url".into(),
                relay_urls.join(","),
                "--instance".into(),
                host_instance.clone(),
                "--state-dir".into(),
                dir.path().join("host-agent").display().to_string(),
                "--ca-cert".into(),
                ca_cert,
                "--tls-cert".into(),
                tls_cert,
                "--tls-key".into(),
                tls_key,
            ],
            vec![
                ("RUST_LOG".into(), "info".into()),
                ("BERTH_AGENT_CREDENTIAL".into(), credential),
                ("BERTH_AGENT_SERVICE_KEY".into(), service_key),
            ],
        );
        let cluster = Cluster {
            id,
            dir,
            pg,
            network,
            gateway,
            relays,
            relay_ports,
            service,
            host_agent,
            url,
            host_instance,
            admin_password,
        };
        for i in 0..cluster.relays.len() {
            cluster.start_relay(i);
        }
        cluster.service.start();
        cluster.host_agent.start();
        cluster.wait_api();
        let host = cluster.host_instance.clone();
        cluster.wait_or_report(
            "the host's agent to connect",
            Duration::from_secs(60),
            |c| c.agent_connected(&host).then_some(()),
        );
        cluster
    }

    /// Starts relay `i` (again) on its port and waits until it accepts connections.
    pub fn start_relay(&self, i: usize) {
        self.relays[i].start();
        let addr: SocketAddr = format!("{}:{}", self.gateway, self.relay_ports[i])
            .parse()
            .unwrap();
        let what = format!("relay-{i} to listen on {addr}");
        self.wait_or_report(&what, Duration::from_secs(30), |c| {
            c.relays[i].check_alive();
            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                .ok()
                .map(|_| ())
        });
    }

    /// Kills relay `i` with SIGKILL.
    pub fn kill_relay(&self, i: usize) {
        self.relays[i].kill9();
    }

    /// Kills the service with SIGKILL.
    pub fn kill_service(&self) {
        self.service.kill9();
    }

    /// Starts the service again and waits until its API answers.
    pub fn start_service(&self) {
        self.service.start();
        self.wait_api();
    }

    fn wait_api(&self) {
        let url = format!("{}/", self.url);
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        self.wait_or_report("the API to answer", Duration::from_secs(60), |c| {
            c.service.check_alive();
            client
                .get(&url)
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        });
    }

    /// Polls `f` until it returns `Some`; after `timeout` panics with `what` and the
    /// logs of every process.
    pub fn wait_or_report<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Cluster) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The tails of every process's log, for failure reports; the whole logs are kept
    /// in a directory named at the end.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let kept = std::env::temp_dir().join(format!("berth-drill-{}-logs", self.id));
        let _ = std::fs::create_dir_all(&kept);
        for p in self.relays.iter().chain([&self.service, &self.host_agent]) {
            let _ = std::fs::write(kept.join(format!("{}.log", p.name)), p.log());
            out.push_str(&format!("\n===== {} =====\n{}\n", p.name, p.tail(LOG_TAIL)));
        }
        for agent in self.agent_containers() {
            let logs = Command::new("docker")
                .args(["logs", "--tail", "40", &agent.docker_id])
                .output()
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
            if let Ok(o) = Command::new("docker")
                .args(["logs", &agent.docker_id])
                .output()
            {
                let mut all = o.stdout;
                all.extend(o.stderr);
                let _ = std::fs::write(kept.join(format!("agent-{}.log", agent.instance)), all);
            }
            out.push_str(&format!(
                "\n===== agent container of instance {} =====\n{logs}\n",
                agent.instance
            ));
        }
        out.push_str(&format!("\n(whole logs in {})\n", kept.display()));
        out
    }

    /// Whether the database records `instance`'s agent as connected (false when the
    /// database cannot be read).
    pub fn agent_connected(&self, instance: &str) -> bool {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Connected {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            agent_connected: bool,
        }
        let Ok(mut conn) = self.pg.connect() else {
            return false;
        };
        diesel::sql_query("SELECT agent_connected FROM instances WHERE id = $1")
            .bind::<diesel::sql_types::Text, _>(instance)
            .load::<Connected>(&mut conn)
            .ok()
            .and_then(|rows| rows.first().map(|r| r.agent_connected))
            .unwrap_or(false)
    }

    /// The index of the relay `instance`'s agent is connected through, as the database
    /// records it (`agent_links.relay_url`); None when it records none.
    pub fn relay_of(&self, instance: &str) -> Option<usize> {
        use diesel::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Link {
            #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
            relay_url: Option<String>,
        }
        let mut conn = self.pg.connect().ok()?;
        let url = diesel::sql_query("SELECT relay_url FROM agent_links WHERE instance_id = $1")
            .bind::<diesel::sql_types::Text, _>(instance)
            .load::<Link>(&mut conn)
            .ok()?
            .pop()?
            .relay_url?;
        self.relay_ports
            .iter()
            .position(|p| url.trim_end_matches('/').ends_with(&format!(":{p}")))
    }

    fn token(&self, user: &str, password: &str, project_id: &str) -> String {
        let r = http()
            .post(format!("{}/identity/v3/auth/tokens", self.url))
            .json(&json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user, "domain": {"id": "default"}, "password": password}}},
                "scope": {"project": {"id": project_id}}
            }}))
            .send()
            .expect("token request");
        assert_eq!(r.status().as_u16(), 201, "token for {user}: {:?}", r.text());
        r.headers()["X-Subject-Token"].to_str().unwrap().to_owned()
    }

    fn admin_token(&self) -> String {
        let r = http()
            .post(format!("{}/identity/v3/auth/tokens", self.url))
            .json(&json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "admin", "domain": {"id": "default"}, "password": self.admin_password}}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}
            }}))
            .send()
            .expect("admin token request");
        assert_eq!(r.status().as_u16(), 201, "admin token: {:?}", r.text());
        r.headers()["X-Subject-Token"].to_str().unwrap().to_owned()
    }

    /// Makes a project `name` with a member, and returns a token of that member.
    pub fn tenant(&self, name: &str) -> Tenant {
        let admin = self.admin_token();
        let base = format!("{}/identity/v3", self.url);
        let client = http();
        let post = |path: &str, body: Value| -> Value {
            let r = client
                .post(format!("{base}/{path}"))
                .header("X-Auth-Token", &admin)
                .json(&body)
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 201, "POST {path}: {:?}", r.text());
            r.json().unwrap()
        };
        let project = post(
            "projects",
            json!({"project": {"name": name, "domain_id": "default"}}),
        );
        let project_id = project["project"]["id"].as_str().unwrap().to_owned();
        let user = format!("{name}-member");
        let password = format!("pw-{name}");
        let created = post(
            "users",
            json!({"user": {"name": user, "password": password, "domain_id": "default", "default_project_id": project_id}}),
        );
        let user_id = created["user"]["id"].as_str().unwrap();
        let roles: Value = client
            .get(format!("{base}/roles?name=member"))
            .header("X-Auth-Token", &admin)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let role_id = roles["roles"][0]["id"].as_str().expect("a member role");
        let r = client
            .put(format!(
                "{base}/projects/{project_id}/users/{user_id}/roles/{role_id}"
            ))
            .header("X-Auth-Token", &admin)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "role assignment");
        let token = self.token(&user, &password, &project_id);
        Tenant { project_id, token }
    }

    /// `POST /v1/containers?run=true` of a `sleep` container named `name`, labelled as
    /// the cluster's. Returns the HTTP status and body, or the transport error (the
    /// service may be killed while the request is in flight).
    pub fn create(&self, tenant: &Tenant, name: &str) -> Result<(u16, Value), String> {
        let r = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
            .post(format!("{}/v1/containers?run=true", self.url))
            .header("X-Auth-Token", &tenant.token)
            .header("OpenStack-API-Version", "container 1.40")
            .json(&json!({
                "name": name,
                "image": IMAGE,
                "command": ["sleep", "600"],
                "labels": {LABEL_TEST: "drills", LABEL_DRILL: self.id},
            }))
            .send()
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        Ok((status, r.json().unwrap_or(Value::Null)))
    }

    /// `GET /v1/containers/{id}` as the tenant (None if the API does not answer).
    pub fn show(&self, tenant: &Tenant, id: &str) -> Option<Value> {
        let r = http()
            .get(format!("{}/v1/containers/{id}", self.url))
            .header("X-Auth-Token", &tenant.token)
            .header("OpenStack-API-Version", "container 1.40")
            .send()
            .ok()?;
        r.status().is_success().then(|| r.json().ok()).flatten()
    }

    /// The instances' agent containers this cluster's host made.
    pub fn agent_containers(&self) -> Vec<AgentContainer> {
        docker_lines(&[
            "ps",
            "-a",
            "--filter",
            &format!("label=berth.instance={}", self.host_instance),
            "--filter",
            "label=berth.role=instance-agent",
            "--format",
            "{{.ID}} {{.Label \"berth.container\"}} {{.Label \"berth.project\"}}",
        ])
        .into_iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(AgentContainer {
                docker_id: w.next()?.to_owned(),
                instance: w.next()?.to_owned(),
                project_id: w.next()?.to_owned(),
            })
        })
        .collect()
    }

    /// The agent container of `project_id`'s (only) instance.
    pub fn agent_container_of(&self, project_id: &str) -> AgentContainer {
        let mut found: Vec<AgentContainer> = self
            .agent_containers()
            .into_iter()
            .filter(|a| a.project_id == project_id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "project {project_id} should have one agent container: {found:?}"
        );
        found.pop().unwrap()
    }

    /// The cluster's tenant containers on the engine: (berth uuid, state, docker id).
    pub fn engine_containers(&self) -> Vec<EngineContainer> {
        docker_lines(&[
            "ps",
            "-a",
            "--filter",
            &format!("label={LABEL_DRILL}={}", self.id),
            "--format",
            "{{.ID}} {{.State}} {{.Label \"berth.container\"}} {{.Label \"berth.instance\"}}",
        ])
        .into_iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(EngineContainer {
                docker_id: w.next()?.to_owned(),
                state: w.next()?.to_owned(),
                uuid: w.next().unwrap_or_default().to_owned(),
                instance: w.next().unwrap_or_default().to_owned(),
            })
        })
        .collect()
    }

    /// Every container row and every container action, read directly from the
    /// database (an error while PostgreSQL is down).
    pub fn db_state(&self) -> Result<DbState, String> {
        use diesel::RunQueryDsl;
        let mut conn = self.pg.connect().map_err(|e| e.to_string())?;
        let containers = diesel::sql_query(
            "SELECT id, project_id, name, status, status_reason, task_state, instance_id FROM containers ORDER BY created_at",
        )
        .load::<ContainerRow>(&mut conn)
        .map_err(|e| e.to_string())?;
        let actions = diesel::sql_query(
            "SELECT container_id, action, result, message, finish_time IS NOT NULL AS finished FROM container_actions",
        )
        .load::<ActionRow>(&mut conn)
        .map_err(|e| e.to_string())?;
        Ok(DbState {
            containers,
            actions,
        })
    }

    /// Removes everything the cluster made on the engine: the agent containers first
    /// (so that no agent acts any more), then the tenant containers, then the network.
    fn clean_engine(&self) {
        let remove = |ids: Vec<String>| {
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids.iter().map(String::as_str));
                let _ = Command::new("docker").args(&args).output();
            }
        };
        remove(
            self.agent_containers()
                .into_iter()
                .map(|a| a.docker_id)
                .collect(),
        );
        remove(
            self.engine_containers()
                .into_iter()
                .map(|c| c.docker_id)
                .collect(),
        );
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.service.kill9();
        self.host_agent.kill9();
        for r in &self.relays {
            r.kill9();
        }
        self.clean_engine();
        let _ = &self.dir;
    }
}

/// An instance's agent container.
#[derive(Debug, Clone)]
pub struct AgentContainer {
    pub docker_id: String,
    /// The instance id (the container's Berth uuid).
    pub instance: String,
    pub project_id: String,
}

/// A tenant container on the engine.
#[derive(Debug, Clone)]
pub struct EngineContainer {
    pub docker_id: String,
    /// Docker's state: created, running, paused, restarting, removing, exited, dead.
    pub state: String,
    /// The `berth.container` label.
    pub uuid: String,
    /// The `berth.instance` label.
    pub instance: String,
}

/// A row of `containers`.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct ContainerRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub project_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub status_reason: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub task_state: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub instance_id: Option<String>,
}

/// A row of `container_actions`.
#[derive(Debug, Clone, diesel::QueryableByName)]
pub struct ActionRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub container_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub action: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub result: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub message: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub finished: bool,
}

/// What the database says.
#[derive(Debug, Clone)]
pub struct DbState {
    pub containers: Vec<ContainerRow>,
    pub actions: Vec<ActionRow>,
}
