//! Agent enrollment against a real `berth up`: one-time tokens traded at
//! `POST /agents/enroll` for a credential bound to one instance, the real `berth-agent`
//! binary enrolling with one, and a released instance's agent shut out by the relay.
//!
//! Tokens are issued the way a provider issues them (`berth_service::enrollment::issue`)
//! into the deployment's own database, for instances registered there by the test.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use berth_service::db::{instances, schema, Db};
use berth_service::providers::static_hosts;
use diesel::prelude::*;
use serde_json::Value;
use support::{docker_inspect, http, wait_for, wait_for_opt, Berth, IMAGE};
use uuid::Uuid;

/// A test's view of one deployment: its database, opened beside `berth up`.
struct Fixture {
    berth: Berth,
    db: Db,
    rt: tokio::runtime::Runtime,
}

impl Fixture {
    fn start() -> Fixture {
        let berth = Berth::start();
        let url = format!(
            "sqlite://{}",
            berth.data.path().join("berth.sqlite").display()
        );
        let db = Db::connect(&url).expect("open the deployment's database");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        Fixture { berth, db, rt }
    }

    /// Registers an instance (with no agent yet) for a new project called `project`.
    fn instance(&self, project: &str) -> Uuid {
        let user = self
            .berth
            .project_user(project, &format!("{project}-user"), "member");
        self.rt
            .block_on(static_hosts::register(
                &self.db,
                &user.project_id,
                &format!("{project}-instance"),
                "127.0.0.1",
            ))
            .expect("register an instance")
    }

    fn issue(&self, instance: Uuid, ttl: Duration) -> String {
        self.rt
            .block_on(berth_service::enrollment::issue(&self.db, instance, ttl))
            .expect("issue a token")
    }

    fn enroll(&self, instance: Uuid, token: &str) -> (u16, Value) {
        let (_key, csr) = berth_tls::new_key_and_csr().unwrap();
        self.enroll_with(instance, token, &csr)
    }

    /// Enrolls with this CSR (PEM) for the agent's TLS key.
    fn enroll_with(&self, instance: Uuid, token: &str, csr: &str) -> (u16, Value) {
        let r = http()
            .post(format!("{}/agents/enroll", self.berth.url))
            .json(&serde_json::json!({"instance": instance, "token": token, "csr": csr}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap())
    }

    /// The deployment's CA certificate, as `berth up` keeps it.
    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.berth.data.path().join("pki").join("ca.pem")).unwrap()
    }

    /// Whether the service records the instance's agent as connected.
    fn agent_connected(&self, instance: Uuid) -> bool {
        self.row(instance).agent_connected
    }

    fn row(&self, instance: Uuid) -> berth_service::db::models::InstanceRow {
        let mut conn = self.db.conn().unwrap();
        instances::get(&mut conn, &instance.to_string())
            .unwrap()
            .expect("the instance row")
    }

    fn status(&self, instance: Uuid) -> String {
        self.row(instance).status
    }
}

/// The claims of a JWT, read without checking the signature (the relay checks it).
fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has three parts");
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
    for c in payload.bytes() {
        let v = alphabet.iter().position(|&a| a == c).expect("base64url") as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    serde_json::from_slice(&out).expect("JSON claims")
}

/// The HTTP status the relay answers a WebSocket upgrade on the agent path with (101
/// when it upgrades), dialled over TLS with `tls`.
fn relay_upgrade_status(relay_url: &str, credential: &str, tls: &berth_tls::ClientTls) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("{}/v1/agent", relay_url.trim_end_matches('/'))
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "Authorization",
        format!("Bearer {credential}").parse().unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(berth_tls::connect_websocket(request, tls, None)) {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("the relay did not answer the upgrade: {e}"),
    }
}

/// The agent's TLS from its stored enrollment answer.
fn stored_tls(stored: &Value) -> berth_tls::ClientTls {
    berth_tls::ClientTls::from_pem(
        stored["ca_certificate"].as_str().unwrap(),
        stored["certificate"].as_str().unwrap(),
        stored["tls_key"].as_str().unwrap(),
    )
    .expect("the stored TLS material is usable")
}

/// A `berth-agent` process, killed when dropped.
struct AgentProcess {
    child: Child,
    log: PathBuf,
}

impl AgentProcess {
    /// Runs berth-agent for `instance` with only an enrollment token, the service's
    /// URL and a credential file: the relay URL comes from the enrollment answer.
    fn enrolling(
        berth: &Berth,
        instance: Uuid,
        token: &str,
        credential_file: &Path,
        log: PathBuf,
    ) -> AgentProcess {
        let binary = Path::new(env!("CARGO_BIN_EXE_berth"))
            .parent()
            .unwrap()
            .join("berth-agent");
        assert!(
            binary.exists(),
            "{} is missing: build it with `cargo build --workspace --bins`",
            binary.display()
        );
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary)
            .env_clear()
            .env("RUST_LOG", "info")
            .env("BERTH_AGENT_INSTANCE", instance.to_string())
            .env("BERTH_AGENT_SERVICE_URL", &berth.url)
            .env("BERTH_AGENT_ENROLLMENT_TOKEN", token)
            .env("BERTH_AGENT_CREDENTIAL_FILE", credential_file)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("berth-agent starts");
        AgentProcess { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_enrollment_token_works_once_for_its_own_instance_and_yields_a_credential_bound_to_it() {
    let f = Fixture::start();
    let mine = f.instance("enroll-once");
    let other = f.instance("enroll-other");
    let token = f.issue(mine, Duration::from_secs(600));

    // Bound to one instance: presenting it for another is refused and does not use it up.
    let (status, body) = f.enroll(other, &token);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("another instance"),
        "{body}"
    );

    let (status, body) = f.enroll(mine, &token);
    assert_eq!(status, 200, "{body}");
    let credential = body["credential"].as_str().unwrap();
    let relay_url = body["relay_url"].as_str().unwrap();
    assert!(relay_url.starts_with("wss://"), "{body}");
    // The TLS client certificate, signed from the CSR by the deployment's CA, names
    // this instance and nothing else.
    assert_eq!(
        body["ca_certificate"].as_str().unwrap(),
        f.ca_pem(),
        "{body}"
    );
    let cert = berth_tls::parse_certificates(body["certificate"].as_str().unwrap()).unwrap();
    assert_eq!(
        berth_tls::Identity::of(&cert[0]),
        Ok(berth_tls::Identity::Instance(mine))
    );
    let c = claims(credential);
    assert_eq!(c["instance"], mine.to_string(), "{c}");
    assert_eq!(c["sub"], format!("agent:{mine}"), "{c}");
    // Time-bounded: 30 days.
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        30 * 24 * 3600,
        "{c}"
    );

    // A token works once.
    let (status, body) = f.enroll(mine, &token);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    // A token nobody issued.
    let (status, body) = f.enroll(mine, "not-a-token");
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not known"),
        "{body}"
    );
    // A CSR that is not one is refused with 400 before the token is spent.
    let spare = f.issue(mine, Duration::from_secs(600));
    let (status, body) = f.enroll_with(mine, &spare, "not a CSR");
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("CSR"), "{body}");
    let (status, body) = f.enroll(mine, &spare);
    assert_eq!(status, 200, "the token survived the bad CSR: {body}");
    // A body that is not an enrollment request.
    let r = http()
        .post(format!("{}/agents/enroll", f.berth.url))
        .body("{\"instance\": 1}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[test]
fn an_expired_enrollment_token_is_refused() {
    let f = Fixture::start();
    let instance = f.instance("enroll-expired");
    let token = f.issue(instance, Duration::ZERO);
    let (status, body) = f.enroll(instance, &token);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

#[test]
fn concurrent_exchanges_of_one_token_let_exactly_one_through() {
    let f = Fixture::start();
    let instance = f.instance("enroll-race");
    let token = f.issue(instance, Duration::from_secs(600));
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| f.enroll(instance, &token).0))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|&&s| s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 401).count(),
        7,
        "{statuses:?}"
    );
}

#[test]
fn an_enrolled_agent_connects_for_its_instance_only_and_reconnects_with_its_stored_credential() {
    let f = Fixture::start();
    let mine = f.instance("enroll-agent");
    let other = f.instance("enroll-bystander");
    let dir = tempfile::tempdir().unwrap();
    let credential_file = dir.path().join("state").join("credential");
    let token = f.issue(mine, Duration::from_secs(600));

    let agent = AgentProcess::enrolling(
        &f.berth,
        mine,
        &token,
        &credential_file,
        dir.path().join("agent-1.log"),
    );
    wait_for_opt(Duration::from_secs(60), || {
        f.agent_connected(mine).then_some(())
    })
    .unwrap_or_else(|| panic!("the agent never connected; its log:\n{}", agent.log()));
    // The credential names only its own instance: the other instance has no agent.
    assert!(!f.agent_connected(other));
    let mode = std::fs::metadata(&credential_file)
        .expect("the agent stored its credential")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&credential_file).unwrap()).unwrap();
    assert_eq!(
        claims(stored["credential"].as_str().unwrap())["instance"],
        mine.to_string()
    );
    // Its TLS key stayed on the instance: kept in the 0600 file, beside the
    // certificate and CA the service answered with.
    assert!(
        stored["tls_key"].as_str().unwrap().contains("PRIVATE KEY"),
        "a key is stored"
    );
    let tls = stored_tls(&stored);
    let relay_url = stored["relay_url"].as_str().unwrap();
    // The relay wants the credential and the certificate of the same instance: this
    // agent's certificate with a credential for another instance is refused.
    let key = berth_service::identity::keys::SigningKey::load_or_create(
        &f.berth
            .data
            .path()
            .join("keys")
            .join(berth_service::startup::CREDENTIAL_KEY_FILE),
    )
    .unwrap();
    let foreign =
        berth_service::startup::mint_agent_credential(&key, other, Duration::from_secs(600))
            .expect("a credential for the bystander");
    assert_eq!(relay_upgrade_status(relay_url, &foreign, &tls), 401);

    // A restarted agent still holds the used token, and reconnects with the stored
    // credential instead.
    drop(agent);
    wait_for(
        "the service to see the agent go",
        Duration::from_secs(30),
        || (!f.agent_connected(mine)).then_some(()),
    );
    let again = AgentProcess::enrolling(
        &f.berth,
        mine,
        &token,
        &credential_file,
        dir.path().join("agent-2.log"),
    );
    wait_for_opt(Duration::from_secs(60), || {
        f.agent_connected(mine).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the restarted agent never connected; its log:\n{}",
            again.log()
        )
    });
    assert!(
        again
            .log()
            .contains("credential stored by an earlier enrollment"),
        "{}",
        again.log()
    );
}

#[test]
fn a_released_instances_agent_is_disconnected_and_its_credential_no_longer_opens_the_relay() {
    // Instances made on demand are released after this many idle seconds; nextest runs
    // each test in a process of its own, so the setting stays with this deployment.
    std::env::set_var("BERTH_INSTANCE_IDLE_GRACE", "1");
    let f = Fixture::start();
    let instance = f.instance("enroll-released");
    let dir = tempfile::tempdir().unwrap();
    let credential_file = dir.path().join("credential");
    let token = f.issue(instance, Duration::from_secs(600));
    let agent = AgentProcess::enrolling(
        &f.berth,
        instance,
        &token,
        &credential_file,
        dir.path().join("agent.log"),
    );
    wait_for_opt(Duration::from_secs(60), || {
        f.agent_connected(instance).then_some(())
    })
    .unwrap_or_else(|| panic!("the agent never connected; its log:\n{}", agent.log()));
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&credential_file).unwrap()).unwrap();
    let credential = stored["credential"].as_str().unwrap().to_owned();

    // Make it an instance made on demand, which the service releases when idle (a
    // registered host never is): its release is the instance's deletion.
    {
        let mut conn = f.db.conn().unwrap();
        diesel::update(schema::instances::table.find(instance.to_string()))
            .set(schema::instances::provider.eq("docker"))
            .execute(&mut *conn)
            .unwrap();
    }
    wait_for_opt(Duration::from_secs(60), || {
        (f.status(instance) == "released" && !f.agent_connected(instance)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the instance was not released, or its agent stayed connected (status {}); berth log:\n{}",
            f.status(instance),
            f.berth.log()
        )
    });

    // The agent keeps trying, and the relay refuses its still validly signed credential.
    let relay_url = stored["relay_url"].as_str().unwrap();
    assert_eq!(
        relay_upgrade_status(relay_url, &credential, &stored_tls(&stored)),
        401
    );
    wait_for("the agent to be refused", Duration::from_secs(30), || {
        agent.log().contains("was deleted").then_some(())
    });
    assert!(!f.agent_connected(instance));
    // Nor can it enroll again.
    let fresh = f.issue(instance, Duration::from_secs(600));
    let (status, body) = f.enroll(instance, &fresh);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("deleted or released"),
        "{body}"
    );
}

#[test]
fn a_docker_provider_instance_enrolls_with_a_token_and_runs_its_projects_container() {
    let f = Fixture::start();
    let user = f
        .berth
        .project_user("enroll-docker", "enroll-docker-user", "member");
    let out = f.berth.osc_as(
        &user,
        &[
            "container-create",
            "--daemon",
            "--image",
            IMAGE,
            "--cmd",
            "sleep 600",
            "--label",
            "berth.test=enrollment",
            "-f",
            "json",
        ],
    );
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = created["uuid"].as_str().unwrap().to_owned();
    let mut last = Value::Null;
    wait_for_opt(Duration::from_secs(120), || {
        let out = f
            .berth
            .osc_as(&user, &["container-show", &id, "-f", "json"]);
        last = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (last["status"] == "Running").then_some(())
    })
    .unwrap_or_else(|| panic!("never ran; last: {last}\nberth log:\n{}", f.berth.log()));

    // The container runs on the project's instance, whose agent container was given an
    // enrollment token and the service's URL, never a credential.
    let instance = docker_inspect(&id, "{{index .Config.Labels \"berth.instance\"}}")
        .expect("the container exists on the engine");
    assert_ne!(instance, f.berth.instance);
    let env = docker_inspect(&instance, "{{json .Config.Env}}").expect("the agent container");
    let env: Vec<String> = serde_json::from_str(&env).unwrap();
    let var = |name: &str| {
        env.iter()
            .find_map(|e| e.strip_prefix(&format!("{name}=")))
            .map(str::to_owned)
    };
    assert!(var("BERTH_AGENT_CREDENTIAL").is_none(), "{env:?}");
    assert_eq!(
        var("BERTH_AGENT_SERVICE_URL").as_deref(),
        Some(f.berth.url.as_str())
    );
    let token = var("BERTH_AGENT_ENROLLMENT_TOKEN").expect("an enrollment token");
    // And the CA it verifies the relay with (its own certificate came at enrollment).
    assert_eq!(var("BERTH_AGENT_CA_CERT_PEM"), Some(f.ca_pem()));
    // The agent used it: it works no more.
    let instance: Uuid = instance.parse().unwrap();
    let (status, body) = f.enroll(instance, &token);
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("already used"),
        "{body}"
    );
}
