//! Relay capacity: memory per idle agent connection, and command round trips through
//! the relay, next to a plain WebSocket echo over the same transport.
//!
//! ```text
//! cargo build --release -p berth-relay
//! cargo bench --bench relay_connections
//! ```
//!
//! The real `berth-relay` binary (release build, found next to this bench's own
//! binary, or at BERTH_BENCH_RELAY) runs as a child process with mutual TLS, as in
//! production: a CA made for the run, a server certificate for 127.0.0.1, and for
//! every simulated agent its own instance certificate and its own signed agent
//! credential. Steps:
//!
//! 1. RSS of the relay (`VmRSS` in /proc/PID/status) once it listens.
//! 2. BERTH_BENCH_AGENTS simulated agents (default 10,000) connect (source addresses
//!    spread over 127.0.0.2–127.0.0.9, so ephemeral ports never run short), each
//!    reports an empty state and then idles, answering pings. RSS again after they
//!    settle: (after − before) / agents is the relay's memory per idle connection.
//! 3. A simulated service connects and sends BERTH_BENCH_COMMANDS commands (default
//!    10,000) at BERTH_BENCH_RATE per second (default 500), open loop, each to a
//!    randomly chosen agent, which answers at once. Round trip = service sends →
//!    relay → agent → relay → service reads the reply.
//! 4. The same number of messages at the same rate through a plain TLS WebSocket
//!    echo server in this process (one hop, no relay): the transport's own cost.
//!
//! RLIMIT_NOFILE is raised to its hard limit first (the relay inherits it).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use berth_proto::auth::{AgentClaims, ServiceClaims, AGENT_AUDIENCE, SERVICE_AUDIENCE};
use berth_proto::{
    AgentToRelay, Command as AgentCommand, Outcome, RelayToAgent, RelayToService, ServiceToRelay,
    RELAY_AGENT_PATH, RELAY_SERVICE_PATH,
};
use berth_service::identity::keys::SigningKey;
use berth_tls::{Ca, ClientTls, Identity, ServerTls};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, Header};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use uuid::Uuid;

const VALIDITY: Duration = Duration::from_secs(24 * 3600);
/// Connections being set up at once (TLS handshakes are CPU-bound).
const DIAL_CONCURRENCY: usize = 64;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let agents = env_usize("BERTH_BENCH_AGENTS", 10_000);
    let rate = env_usize("BERTH_BENCH_RATE", 500).max(1);
    let commands = env_usize("BERTH_BENCH_COMMANDS", 10_000).max(1);
    let nofile = raise_nofile()?;
    anyhow::ensure!(
        nofile as usize > agents + 256,
        "RLIMIT_NOFILE is {nofile}, too low for {agents} connections; raise the hard limit \
         (ulimit -Hn) or set BERTH_BENCH_AGENTS lower"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(agents, rate, commands))
}

/// Soft RLIMIT_NOFILE up to the hard limit; returns the new soft limit.
fn raise_nofile() -> anyhow::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).context("raising RLIMIT_NOFILE")?;
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// The relay binary: BERTH_BENCH_RELAY, or the release build next to this bench.
fn relay_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("BERTH_BENCH_RELAY") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    // target/release/deps/relay_connections-HASH → target/release/berth-relay
    let candidate = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("berth-relay"))
        .context("cannot locate the target directory")?;
    if !candidate.exists() {
        bail!(
            "{} does not exist: run `cargo build --release -p berth-relay` first, or set \
             BERTH_BENCH_RELAY to a berth-relay binary",
            candidate.display()
        );
    }
    Ok(candidate)
}

/// Resident set size of `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// The relay's RSS once it has stopped changing much (at most `wait`).
async fn settled_rss(pid: u32, wait: Duration) -> anyhow::Result<u64> {
    let deadline = Instant::now() + wait;
    let mut last = rss_kib(pid)?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_kib(pid)?;
        if now.abs_diff(last) < 256 || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}

struct RelayChild(Child);

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn sign<T: serde::Serialize>(key: &SigningKey, claims: &T) -> anyhow::Result<String> {
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        claims,
        &key.encoding_key(),
    )?)
}

/// What one simulated agent needs to connect.
struct AgentIdentity {
    instance: Uuid,
    credential: String,
    tls: ClientTls,
}

fn ws_config() -> WebSocketConfig {
    // As the agent dials: small buffers, capped messages.
    WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(16 << 10)
        .max_write_buffer_size(34 << 20)
        .max_message_size(Some(17 << 20))
        .max_frame_size(Some(17 << 20))
}

/// TCP from `source`, TLS, WebSocket upgrade with `Authorization: Bearer credential`.
async fn dial(
    relay: SocketAddr,
    source: Ipv4Addr,
    path: &str,
    credential: &str,
    tls: &ClientTls,
) -> anyhow::Result<WebSocketStream<Tls>> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0))?;
    let tcp = socket.connect(relay).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(relay.ip().to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls.config())
        .connect(name, tcp)
        .await?;
    let mut request = format!("wss://{relay}{path}").into_client_request()?;
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {credential}"))?,
    );
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
    Ok(ws)
}

fn text<T: serde::Serialize>(message: &T) -> Message {
    Message::text(serde_json::to_string(message).expect("proto messages serialise"))
}

/// One simulated agent: reports an empty state, answers every command with `Done`,
/// reports again on `Resync`; the socket answers pings as it reads.
async fn simulated_agent(mut ws: WebSocketStream<Tls>) {
    let state = AgentToRelay::State {
        containers: Vec::new(),
        session: None,
    };
    if ws.send(text(&state)).await.is_err() {
        return;
    }
    while let Some(Ok(frame)) = ws.next().await {
        let Message::Text(body) = frame else { continue };
        let answer = match serde_json::from_str::<RelayToAgent>(&body) {
            Ok(RelayToAgent::Command { request, .. }) => AgentToRelay::Reply {
                request,
                reply: Ok(Outcome::Done),
            },
            Ok(RelayToAgent::Resync) => AgentToRelay::State {
                containers: Vec::new(),
                session: None,
            },
            _ => continue,
        };
        if ws.send(text(&answer)).await.is_err() {
            return;
        }
    }
}

/// p50, p99 and max of `samples`, in microseconds.
fn percentiles(samples: &mut [u64]) -> (u64, u64, u64) {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    (at(0.50), at(0.99), samples[samples.len() - 1])
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

async fn run(agents: usize, rate: usize, commands: usize) -> anyhow::Result<()> {
    let relay_bin = relay_binary()?;
    let dir = tempfile::tempdir()?;
    let ca = Ca::generate("berth bench CA", VALIDITY)?;
    let server = ca.server_certificate(&["127.0.0.1".to_owned()], VALIDITY)?;
    std::fs::write(dir.path().join("ca.pem"), ca.pem())?;
    std::fs::write(dir.path().join("relay-cert.pem"), &server.cert_pem)?;
    std::fs::write(dir.path().join("relay-key.pem"), &server.key_pem)?;
    let key = SigningKey::generate()?;
    let key_file = dir.path().join("credential.pem");
    std::fs::write(&key_file, key.public_key_pem())?;

    println!("minting {agents} agent certificates and credentials…");
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp();
    let first = ca.identity_certificate(Identity::Instance(Uuid::new_v4()), VALIDITY)?;
    let mut identities = Vec::with_capacity(agents);
    for _ in 0..agents {
        let instance = Uuid::new_v4();
        // One key for every agent certificate keeps minting fast; each certificate and
        // credential still names its own instance.
        let cert = ca.identity_certificate_for_key_pem(
            Identity::Instance(instance),
            &first.key_pem,
            VALIDITY,
        )?;
        let credential = sign(
            &key,
            &AgentClaims {
                sub: format!("agent:{instance}"),
                instance,
                aud: AGENT_AUDIENCE.into(),
                iat: now,
                exp: now + VALIDITY.as_secs() as i64,
            },
        )?;
        let tls = ClientTls::from_pem(ca.pem(), &cert.cert_pem, &cert.key_pem)?;
        identities.push(AgentIdentity {
            instance,
            credential,
            tls,
        });
    }
    println!("  done in {:.1} s", started.elapsed().as_secs_f64());

    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let log = std::fs::File::create(dir.path().join("relay.log"))?;
    let child = Command::new(&relay_bin)
        .args(["--listen", &addr.to_string()])
        .arg("--tls-dir")
        .arg(dir.path())
        .arg("--credential-public-key")
        .arg(&key_file)
        .args(["--max-connections", &(agents + 100).to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", relay_bin.display()))?;
    let relay = RelayChild(child);
    let pid = relay.0.id();
    let up = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(30),
            "the relay did not listen within 30 s; its log: {}",
            std::fs::read_to_string(dir.path().join("relay.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_before = settled_rss(pid, Duration::from_secs(5)).await?;
    println!("relay pid {pid} listening on {addr} (TLS); RSS before: {rss_before} KiB");

    // The service connects first, as in a deployment: every agent's connection then
    // reaches it as it happens.
    let service_cert = ca.identity_certificate(Identity::Service, VALIDITY)?;
    let service_tls = ClientTls::from_pem(ca.pem(), &service_cert.cert_pem, &service_cert.key_pem)?;
    let service_credential = sign(
        &key,
        &ServiceClaims {
            sub: "bench".into(),
            aud: SERVICE_AUDIENCE.into(),
            iat: now,
            exp: now + VALIDITY.as_secs() as i64,
        },
    )?;
    let ws = dial(
        addr,
        Ipv4Addr::LOCALHOST,
        RELAY_SERVICE_PATH,
        &service_credential,
        &service_tls,
    )
    .await?;
    let (mut service_tx, mut service_rx) = ws.split();
    let sent: Arc<Mutex<HashMap<Uuid, Instant>>> = Arc::default();
    let reader = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut samples = Vec::with_capacity(commands);
            let mut errors = 0usize;
            while samples.len() + errors < commands {
                let Some(Ok(frame)) = service_rx.next().await else {
                    break;
                };
                let Message::Text(body) = frame else { continue };
                if let Ok(RelayToService::Reply { request, reply }) =
                    serde_json::from_str::<RelayToService>(&body)
                {
                    let at = sent.lock().expect("sent lock").remove(&request);
                    match (at, reply) {
                        (Some(at), Ok(_)) => samples.push(at.elapsed().as_micros() as u64),
                        (Some(_), Err(_)) => errors += 1,
                        (None, _) => {}
                    }
                }
            }
            (samples, errors)
        })
    };
    println!("connecting {agents} agents…");
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(DIAL_CONCURRENCY));
    let mut dials = tokio::task::JoinSet::new();
    let instances: Vec<Uuid> = identities.iter().map(|a| a.instance).collect();
    for (i, identity) in identities.into_iter().enumerate() {
        let gate = gate.clone();
        let source = Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8);
        dials.spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            let ws = dial(
                addr,
                source,
                RELAY_AGENT_PATH,
                &identity.credential,
                &identity.tls,
            )
            .await?;
            tokio::spawn(simulated_agent(ws));
            anyhow::Ok(())
        });
    }
    let mut failed = 0usize;
    let mut first_error = None;
    while let Some(done) = dials.join_next().await {
        if let Err(e) = done? {
            failed += 1;
            first_error.get_or_insert(e);
        }
    }
    if let Some(e) = first_error {
        bail!("{failed} of {agents} agents could not connect; the first: {e:#}");
    }
    println!(
        "  all connected in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let rss_idle = settled_rss(pid, Duration::from_secs(20)).await?;
    let per_conn = (rss_idle.saturating_sub(rss_before)) as f64 * 1024.0 / agents as f64;
    println!("relay RSS with {agents} idle agents: {rss_idle} KiB");
    println!(
        "relay RSS per idle agent connection: {:.1} KiB ({:.0} bytes)",
        per_conn / 1024.0,
        per_conn
    );

    println!("sending {commands} commands at {rate}/s to random agents through the relay…");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    for _ in 0..commands {
        tick.tick().await;
        let instance = instances[rand::random::<usize>() % instances.len()];
        let request = Uuid::new_v4();
        let command = ServiceToRelay::Command {
            request,
            instance,
            action: None,
            command: AgentCommand::Start {
                container: Uuid::new_v4(),
            },
            token: String::new(),
        };
        sent.lock()
            .expect("sent lock")
            .insert(request, Instant::now());
        service_tx.send(text(&command)).await?;
    }
    let offered = started.elapsed();
    let (mut relay_samples, errors) =
        tokio::time::timeout(Duration::from_secs(60), reader).await??;
    anyhow::ensure!(
        !relay_samples.is_empty(),
        "no reply came back through the relay"
    );
    let (r50, r99, rmax) = percentiles(&mut relay_samples);
    println!(
        "  offered {:.0}/s; {} replies, {errors} errors; p50 {} p99 {} max {}",
        commands as f64 / offered.as_secs_f64(),
        relay_samples.len(),
        ms(r50),
        ms(r99),
        ms(rmax)
    );
    let rss_busy = rss_kib(pid)?;
    println!("relay RSS after the commands: {rss_busy} KiB");

    // A second service connecting now gets the list of agents, and every agent is asked
    // to report again; each report reaches every service.
    let ws = dial(
        addr,
        Ipv4Addr::LOCALHOST,
        RELAY_SERVICE_PATH,
        &service_credential,
        &service_tls,
    )
    .await?;
    let (_late_tx, mut late_rx) = ws.split();
    let mut reports = 0usize;
    let mut closed = None;
    let probe = Instant::now();
    while reports < agents && probe.elapsed() < Duration::from_secs(30) {
        match tokio::time::timeout(Duration::from_secs(5), late_rx.next()).await {
            Ok(Some(Ok(Message::Text(body)))) => {
                if let Ok(RelayToService::AgentConnected { .. }) =
                    serde_json::from_str::<RelayToService>(&body)
                {
                    reports += 1;
                }
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                closed = Some(format!("{frame:?}"));
                break;
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => {
                closed = Some(e.to_string());
                break;
            }
            Ok(None) | Err(_) => break,
        }
    }
    println!(
        "a second service connecting: {reports} of {agents} agent reports in {:.1} s{}",
        probe.elapsed().as_secs_f64(),
        closed.map_or_else(String::new, |why| format!("; then closed: {why}"))
    );

    // The direct alternative: the same messages echoed by a TLS WebSocket server.
    let sample = text(&ServiceToRelay::Command {
        request: Uuid::new_v4(),
        instance: Uuid::new_v4(),
        action: None,
        command: AgentCommand::Start {
            container: Uuid::new_v4(),
        },
        token: String::new(),
    });
    let mut echo_samples = echo_round_trips(&ca, &service_tls, rate, commands, sample).await?;
    let (e50, e99, emax) = percentiles(&mut echo_samples);
    println!(
        "direct TLS WebSocket echo (no relay), same rate: p50 {} p99 {} max {}",
        ms(e50),
        ms(e99),
        ms(emax)
    );

    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| idle agent connections (mutual TLS) | {agents} |");
    println!("| relay RSS before / with agents | {rss_before} KiB / {rss_idle} KiB |");
    println!(
        "| relay RSS per idle connection | {:.1} KiB |",
        per_conn / 1024.0
    );
    println!(
        "| command round trip via relay, {rate}/s, {} commands | p50 {} · p99 {} · max {} |",
        relay_samples.len(),
        ms(r50),
        ms(r99),
        ms(rmax)
    );
    println!(
        "| TLS WebSocket echo, no relay, {rate}/s | p50 {} · p99 {} · max {} |",
        ms(e50),
        ms(e99),
        ms(emax)
    );
    drop(relay);
    Ok(())
}

/// Round trips of `message` to an in-process TLS WebSocket echo server, at `rate`.
async fn echo_round_trips(
    ca: &Ca,
    client_tls: &ClientTls,
    rate: usize,
    count: usize,
    message: Message,
) -> anyhow::Result<Vec<u64>> {
    let server = ca.server_certificate(&["127.0.0.1".to_owned()], VALIDITY)?;
    let server_tls = ServerTls::from_pem(ca.pem(), &server.cert_pem, &server.key_pem)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_tls.config());
    tokio::spawn(async move {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let Ok(tls) = acceptor.accept(tcp).await else {
            return;
        };
        let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tls, Some(ws_config())).await
        else {
            return;
        };
        while let Some(Ok(frame)) = ws.next().await {
            if frame.is_text() && ws.send(frame).await.is_err() {
                return;
            }
        }
    });
    let ws = dial(addr, Ipv4Addr::LOCALHOST, "/", "echo", client_tls).await?;
    let (mut tx, mut rx) = ws.split();
    let reader = tokio::spawn(async move {
        let mut arrivals = Vec::with_capacity(count);
        while arrivals.len() < count {
            match rx.next().await {
                Some(Ok(Message::Text(_))) => arrivals.push(Instant::now()),
                Some(Ok(_)) => {}
                _ => break,
            }
        }
        arrivals
    });
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut departures = Vec::with_capacity(count);
    for _ in 0..count {
        tick.tick().await;
        departures.push(Instant::now());
        tx.send(message.clone()).await?;
    }
    let arrivals = tokio::time::timeout(Duration::from_secs(60), reader).await??;
    // One connection keeps order: the n-th echo answers the n-th message.
    Ok(departures
        .iter()
        .zip(&arrivals)
        .map(|(sent, got)| got.duration_since(*sent).as_micros() as u64)
        .collect())
}
