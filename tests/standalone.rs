//! The parts run alone, as a cloud deploys them: berth-service, berth-relay and
//! berth-agent as separate processes configured by flags and environment.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::external::{bin, relay, RegisteredHost};
use support::{run_ok, wait_for, IMAGE};

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn service_relay_and_agent_run_as_separate_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (api_port, relay_port) = (support::free_port(), support::free_port());
    let service_env = |cmd: &mut Command| {
        cmd.env("BERTH_SERVICE_LISTEN", format!("127.0.0.1:{api_port}"))
            .env(
                "BERTH_SERVICE_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("db.sqlite").display()),
            )
            .env(
                "BERTH_SERVICE_RELAY_URL",
                format!("wss://127.0.0.1:{relay_port}"),
            )
            .env("BERTH_SERVICE_KEYS_DIR", dir.path().join("keys"))
            .env("BERTH_SERVICE_TLS_DIR", dir.path().join("pki"));
    };
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin("berth-service"));
        service_env(&mut cmd);
        run_ok(
            cmd.args(args).env("BERTH_ADMIN_PASSWORD", "pw-standalone"),
            &format!("berth-service {args:?}"),
        )
    };
    // The deployment's CA and the relay's certificate (docs/TLS.md).
    run(&[
        "pki",
        "init",
        "--dir",
        dir.path().join("pki").to_str().unwrap(),
    ]);
    run(&["bootstrap"]);
    let key = run(&["relay-key"]);
    std::fs::write(dir.path().join("relay.pem"), key).unwrap();
    let host = run(&[
        "register-host",
        "--name",
        "standalone-host",
        "--address",
        "127.0.0.1",
        "--agent-tls-dir",
        dir.path().join("agent-tls").to_str().unwrap(),
    ]);
    let host = RegisteredHost(host);
    let instance = host.field("instance");

    let mut procs = Killed(Vec::new());
    procs.0.push(
        relay(
            relay_port,
            &dir.path().join("pki"),
            &dir.path().join("relay.pem"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let mut service = Command::new(bin("berth-service"));
    service_env(&mut service);
    procs.0.push(
        service
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    procs.0.push(
        host.agent(relay_port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let osc = |args: &[&str]| {
        Command::new(support::osc_path())
            .args(args)
            .env_clear()
            .env(
                "OS_AUTH_URL",
                format!("http://127.0.0.1:{api_port}/identity/v3"),
            )
            .env("OS_USERNAME", "admin")
            .env("OS_PASSWORD", "pw-standalone")
            .env("OS_PROJECT_NAME", "admin")
            .output()
            .unwrap()
    };
    wait_for("the API to answer", Duration::from_secs(30), || {
        osc(&["container-list"]).status.success().then_some(())
    });
    let out = osc(&[
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
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let cleanup = scopeguard(&id);
    wait_for("the container to run", Duration::from_secs(60), || {
        let out = osc(&["container-show", &id, "-f", "value", "-c", "status"]);
        (String::from_utf8_lossy(&out.stdout).trim() == "Running").then_some(())
    });
    assert_eq!(
        support::docker_inspect(&id, "{{index .Config.Labels \"berth.instance\"}}").as_deref(),
        Some(instance.as_str())
    );
    drop(cleanup);
}

/// Removes the test's Docker container however the test ends.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &format!("berth-{}", self.0)])
            .output();
    }
}

fn scopeguard(id: &str) -> Guard {
    Guard(id.to_owned())
}
