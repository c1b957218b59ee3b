//! The parts run alone, as a cloud deploys them: berth-service, berth-relay and
//! berth-agent as separate processes configured by flags and environment.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{wait_for, IMAGE};

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bin(name: &str) -> std::path::PathBuf {
    let p = support::osc_path().with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: build with `cargo build --workspace --bins`",
        p.display()
    );
    p
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
        let out = cmd
            .args(args)
            .env("BERTH_ADMIN_PASSWORD", "pw-standalone")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "berth-service {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
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
    let field = |k: &str| {
        host.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("register-host printed no {k}: {host}"))
            .to_owned()
    };
    let (instance, credential) = (field("instance"), field("credential"));

    let mut procs = Killed(Vec::new());
    procs.0.push(
        Command::new(bin("berth-relay"))
            .env("BERTH_RELAY_LISTEN", format!("127.0.0.1:{relay_port}"))
            .env(
                "BERTH_RELAY_CREDENTIAL_PUBLIC_KEY",
                dir.path().join("relay.pem"),
            )
            .env("BERTH_RELAY_TLS_DIR", dir.path().join("pki"))
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
        Command::new(bin("berth-agent"))
            .env(
                "BERTH_AGENT_RELAY_URL",
                format!("wss://127.0.0.1:{relay_port}"),
            )
            .env("BERTH_AGENT_CREDENTIAL", &credential)
            .env("BERTH_AGENT_SERVICE_KEY", field("service_key"))
            .env("BERTH_AGENT_CA_CERT", field("ca_cert"))
            .env("BERTH_AGENT_TLS_CERT", field("tls_cert"))
            .env("BERTH_AGENT_TLS_KEY", field("tls_key"))
            .env("BERTH_AGENT_INSTANCE", &instance)
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
