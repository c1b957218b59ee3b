//! Kubelet's probe handlers and runner against the real Docker engine of this machine.
//!
//! Each test starts its own `berth-test/busybox:latest` container (labelled
//! `berth.test=1`) with the docker CLI and removes it when it ends, pass or fail. The
//! httpGet and tcpSocket checks go to the container's IP on the engine's bridge
//! network, as the agent's checks go to the pod's IP.

use std::net::IpAddr;
use std::time::Duration;

use berth_agent::pods::probes::{
    check, ProbeKind, ProbeOutcome, ProbeRunner, ProbeStatus, ProbeTarget,
};
use berth_proto::pod::{PodContainer, Probe, ProbeHandler};
use bollard::Docker;
use chrono::{DateTime, Utc};

const IMAGE: &str = "berth-test/busybox:latest";
/// Generous: the engine shares two cores with other builds.
const DEADLINE: Duration = Duration::from_secs(60);

/// A running test container, removed when dropped.
struct TestContainer {
    id: String,
}

impl TestContainer {
    /// `docker run -d` the test image with `sh -c script`.
    fn run(script: &str) -> TestContainer {
        let output = std::process::Command::new("docker")
            .args([
                "run",
                "-d",
                "--label",
                "berth.test=1",
                IMAGE,
                "sh",
                "-c",
                script,
            ])
            .output()
            .expect("the docker CLI runs");
        assert!(
            output.status.success(),
            "docker run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        TestContainer {
            id: String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        }
    }

    fn inspect(&self, format: &str) -> String {
        let output = std::process::Command::new("docker")
            .args(["inspect", "-f", format, &self.id])
            .output()
            .expect("the docker CLI runs");
        assert!(output.status.success(), "docker inspect failed");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn ip(&self) -> IpAddr {
        self.inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
            .parse()
            .expect("the container has an IP on the bridge network")
    }

    fn started_at(&self) -> DateTime<Utc> {
        self.inspect("{{.State.StartedAt}}")
            .parse()
            .expect("StartedAt is RFC 3339")
    }

    /// Run a command in the container with the docker CLI (test set-up, not a probe).
    fn exec(&self, command: &[&str]) {
        let status = std::process::Command::new("docker")
            .args(["exec", &self.id])
            .args(command)
            .status()
            .expect("the docker CLI runs");
        assert!(status.success(), "docker exec {command:?} failed");
    }

    async fn target(&self) -> ProbeTarget {
        ProbeTarget {
            docker: docker().await,
            container_id: self.id.clone(),
            pod_ip: Some(self.ip()),
        }
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", "-v", &self.id])
            .output();
    }
}

async fn docker() -> Docker {
    Docker::connect_with_defaults()
        .expect("the engine's address is usable")
        .negotiate_version()
        .await
        .expect("the Docker engine answers")
}

/// A container serving `/www` (with `/healthz` and a directory `/dir`) on port 8080.
fn web_server() -> TestContainer {
    TestContainer::run(
        "mkdir -p /www/dir && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www",
    )
}

/// Wait until the busybox httpd accepts connections, so checks do not race its start.
async fn wait_for_port(ip: IpAddr, port: u16) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::net::TcpStream::connect((ip, port)).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ip}:{port} never accepted a connection"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn exec(command: &[&str]) -> ProbeHandler {
    ProbeHandler::Exec {
        command: command.iter().map(|part| (*part).to_owned()).collect(),
    }
}

fn http_get(path: &str, port: u16) -> ProbeHandler {
    ProbeHandler::HttpGet {
        path: path.to_owned(),
        port,
        host: None,
    }
}

fn failure(outcome: ProbeOutcome) -> String {
    match outcome {
        ProbeOutcome::Failure(message) => message,
        other => panic!("expected a failure, got {other:?}"),
    }
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn exec_probe_passes_on_exit_zero_and_fails_with_the_code_and_output() {
    let container = TestContainer::run("exec sleep 300");
    let target = container.target().await;
    assert_eq!(
        check(&target, &exec(&["true"]), TIMEOUT).await,
        ProbeOutcome::Success
    );
    let message = failure(
        check(
            &target,
            &exec(&["sh", "-c", "echo not healthy; exit 3"]),
            TIMEOUT,
        )
        .await,
    );
    assert!(message.contains("exited with 3"), "{message}");
    assert!(message.contains("not healthy"), "{message}");
}

#[tokio::test]
async fn exec_probe_that_outlasts_its_timeout_fails() {
    let container = TestContainer::run("exec sleep 300");
    let target = container.target().await;
    let message = failure(check(&target, &exec(&["sleep", "30"]), Duration::from_secs(1)).await);
    assert!(message.contains("timeout of 1s"), "{message}");
}

#[tokio::test]
async fn exec_probe_in_a_missing_container_is_an_error_not_a_failure() {
    let target = ProbeTarget {
        docker: docker().await,
        container_id: format!("berth-test-no-such-container-{}", uuid::Uuid::new_v4()),
        pod_ip: None,
    };
    let outcome = check(&target, &exec(&["true"]), TIMEOUT).await;
    assert!(
        matches!(outcome, ProbeOutcome::Error(_)),
        "expected an error, got {outcome:?}"
    );
}

#[tokio::test]
async fn http_get_probe_passes_below_400_and_fails_otherwise() {
    let container = web_server();
    let target = container.target().await;
    wait_for_port(container.ip(), 8080).await;
    assert_eq!(
        check(&target, &http_get("/healthz", 8080), TIMEOUT).await,
        ProbeOutcome::Success
    );
    // A path without the leading slash is taken from the root.
    assert_eq!(
        check(&target, &http_get("healthz", 8080), TIMEOUT).await,
        ProbeOutcome::Success
    );
    // busybox answers a directory without its trailing slash with a redirect: 3xx
    // passes, and is not followed.
    assert_eq!(
        check(&target, &http_get("/dir", 8080), TIMEOUT).await,
        ProbeOutcome::Success
    );
    let message = failure(check(&target, &http_get("/missing", 8080), TIMEOUT).await);
    assert!(message.contains("answered 404"), "{message}");
    let message = failure(check(&target, &http_get("/healthz", 8081), TIMEOUT).await);
    assert!(message.contains(":8081/healthz"), "{message}");
}

#[tokio::test]
async fn http_get_probe_uses_the_given_host_instead_of_the_pod_ip() {
    let container = web_server();
    let ip = container.ip();
    wait_for_port(ip, 8080).await;
    let target = ProbeTarget {
        pod_ip: None,
        ..container.target().await
    };
    let handler = ProbeHandler::HttpGet {
        path: "/healthz".to_owned(),
        port: 8080,
        host: Some(ip.to_string()),
    };
    assert_eq!(
        check(&target, &handler, TIMEOUT).await,
        ProbeOutcome::Success
    );
    // Without a host and without a pod IP there is nothing to check yet.
    let outcome = check(&target, &http_get("/healthz", 8080), TIMEOUT).await;
    assert!(
        matches!(outcome, ProbeOutcome::Error(_)),
        "expected an error, got {outcome:?}"
    );
}

#[tokio::test]
async fn tcp_socket_probe_passes_when_the_port_accepts_and_fails_when_refused() {
    let container = web_server();
    let target = container.target().await;
    wait_for_port(container.ip(), 8080).await;
    assert_eq!(
        check(&target, &ProbeHandler::TcpSocket { port: 8080 }, TIMEOUT).await,
        ProbeOutcome::Success
    );
    let message = failure(check(&target, &ProbeHandler::TcpSocket { port: 8081 }, TIMEOUT).await);
    assert!(message.contains(":8081"), "{message}");
}

fn fast(handler: ProbeHandler, failure_threshold: u32) -> Probe {
    Probe {
        handler,
        initial_delay_secs: 0,
        period_secs: 1,
        timeout_secs: 2,
        success_threshold: 1,
        failure_threshold,
    }
}

fn pod_container(
    startup: Option<Probe>,
    liveness: Option<Probe>,
    readiness: Option<Probe>,
) -> PodContainer {
    PodContainer {
        name: "web".to_owned(),
        image: IMAGE.to_owned(),
        command: None,
        args: None,
        env: Default::default(),
        workdir: None,
        cpu: 0.0,
        memory_mib: 0,
        volume_mounts: Vec::new(),
        stdin: false,
        tty: false,
        liveness_probe: liveness,
        readiness_probe: readiness,
        startup_probe: startup,
    }
}

async fn wait_for(
    runner: &ProbeRunner,
    what: &str,
    condition: impl FnMut(&ProbeStatus) -> bool,
) -> ProbeStatus {
    let mut changes = runner.watch();
    let status = tokio::time::timeout(DEADLINE, changes.wait_for(condition))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}: {:?}", runner.status()))
        .expect("the runner is alive");
    status.clone()
}

#[tokio::test]
async fn a_liveness_probe_that_starts_failing_reports_the_container_failed() {
    let container = TestContainer::run("touch /tmp/alive && exec sleep 300");
    let spec = pod_container(
        None,
        Some(fast(exec(&["test", "-f", "/tmp/alive"]), 2)),
        None,
    );
    let runner = ProbeRunner::start(container.target().await, &spec, container.started_at());
    assert_eq!(
        runner.status(),
        ProbeStatus {
            started: true,
            ready: true,
            failed: None
        }
    );
    container.exec(&["rm", "/tmp/alive"]);
    let status = wait_for(&runner, "liveness fails", |status| status.failed.is_some()).await;
    let failed = status.failed.expect("failed");
    assert_eq!(failed.kind, ProbeKind::Liveness);
    assert!(
        failed.message.starts_with("Liveness probe failed: ")
            && failed.message.contains("exited with 1"),
        "{}",
        failed.message
    );
}

#[tokio::test]
async fn a_startup_probe_holds_back_readiness_until_it_passes() {
    let container = web_server();
    let ip = container.ip();
    wait_for_port(ip, 8080).await;
    let spec = pod_container(
        Some(fast(exec(&["test", "-f", "/tmp/started"]), 1000)),
        None,
        Some(fast(ProbeHandler::TcpSocket { port: 8080 }, 3)),
    );
    let runner = ProbeRunner::start(container.target().await, &spec, container.started_at());
    assert!(!runner.status().started && !runner.status().ready);
    // The port is open, but readiness must not pass while startup has not: three
    // periods go by without the container becoming ready.
    let mut changes = runner.watch();
    let early = tokio::time::timeout(
        Duration::from_secs(3),
        changes.wait_for(|status| status.started || status.ready),
    )
    .await;
    assert!(
        early.is_err(),
        "ready before startup passed: {:?}",
        runner.status()
    );
    container.exec(&["touch", "/tmp/started"]);
    let status = wait_for(&runner, "started and ready", |status| {
        status.started && status.ready
    })
    .await;
    assert_eq!(status.failed, None);
}

#[tokio::test]
async fn readiness_follows_the_server_going_away_and_coming_back() {
    let container = web_server();
    let ip = container.ip();
    wait_for_port(ip, 8080).await;
    let spec = pod_container(None, None, Some(fast(http_get("/healthz", 8080), 2)));
    let runner = ProbeRunner::start(container.target().await, &spec, container.started_at());
    wait_for(&runner, "ready", |status| status.ready).await;
    container.exec(&["rm", "/www/healthz"]);
    let status = wait_for(&runner, "not ready", |status| !status.ready).await;
    assert!(status.started && status.failed.is_none(), "{status:?}");
    container.exec(&["sh", "-c", "echo ok > /www/healthz"]);
    wait_for(&runner, "ready again", |status| status.ready).await;
}
