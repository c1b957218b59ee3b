//! Who may talk to Berth's Docker endpoint: a client certificate from
//! `osc docker-credentials` over the TLS listener (until it is revoked), a Keystone token
//! in config.json's HttpHeaders, and nobody else but `_ping`. The real `docker` CLI
//! against a real `berth up`.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use support::docker::{DockerCli, Ran, Spawned, COMMAND_TIMEOUT, DOCKER};
use support::{http, Berth, IMAGE};

/// `docker ARGS` with nothing of ours but `env` (a fresh HOME and DOCKER_CONFIG).
fn docker(env: &[(&str, &str)], args: &[&str]) -> Ran {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(DOCKER);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("DOCKER_CONFIG", home.path());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args);
    let what = format!("docker {}", args.join(" "));
    Spawned::start(cmd, what, None).finish(COMMAND_TIMEOUT)
}

/// `docker ARGS` against the TLS listener with the certificates in `dir`, by flags.
fn docker_tls(berth: &Berth, dir: &Path, args: &[&str]) -> Ran {
    let ca = dir.join("ca.pem").display().to_string();
    let cert = dir.join("cert.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    let mut all = vec![
        "--host",
        &berth.docker_tls_host,
        "--tlsverify",
        "--tlscacert",
        &ca,
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
    ];
    all.extend_from_slice(args);
    docker(&[], &all)
}

fn exports(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

#[test]
fn a_client_certificate_from_osc_runs_docker_ps_over_tls_until_it_is_revoked() {
    let berth = Berth::start();
    berth.osc_ok(&[
        "container-create",
        "--image",
        IMAGE,
        "--name",
        "tls-visible",
        "--daemon",
        "--wait",
        "--",
        "sleep",
        "300",
    ]);
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().join("docker");
    let dir_arg = dir.display().to_string();
    let out = berth.osc_ok(&["docker-credentials", "--dir", &dir_arg]);

    // The printed lines point the CLI at the TLS listener with the new directory.
    let vars = exports(&out);
    let var = |k: &str| {
        vars.iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no export {k} in:\n{out}"))
    };
    assert_eq!(var("DOCKER_HOST"), berth.docker_tls_host);
    assert_eq!(var("DOCKER_TLS_VERIFY"), "1");
    assert_eq!(
        Path::new(&var("DOCKER_CERT_PATH")),
        dir.canonicalize().unwrap()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "key.pem is private");

    // By flags, and by the environment `osc` printed.
    let ps = docker_tls(&berth, &dir, &["ps", "--format", "{{.Names}}"]);
    assert!(ps.success(), "{ps}\nberth log:\n{}", berth.log());
    assert!(ps.lines().contains(&"tls-visible".to_owned()), "{ps}");
    let env: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let ps = docker(&env, &["ps", "--format", "{{.Names}}"]);
    assert!(ps.success(), "{ps}\nberth log:\n{}", berth.log());
    assert!(ps.lines().contains(&"tls-visible".to_owned()), "{ps}");

    // The certificate is listed for its project; another project cannot revoke it
    // (it does not exist there), the owner can.
    let listed = berth.osc_json(&["docker-credentials-list"]);
    let fingerprint = listed[0]["fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("a listed certificate: {listed}"))
        .to_owned();
    assert_eq!(listed[0]["user_name"], "admin");
    let stranger = berth.project_user("certstrangers", "stan", "member");
    let refused = berth.osc_as(&stranger, &["docker-credentials-revoke", &fingerprint]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("could not be found"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(docker_tls(&berth, &dir, &["ps"]).success(), "still valid");

    berth.osc_ok(&["docker-credentials-revoke", &fingerprint]);
    let ps = docker_tls(&berth, &dir, &["ps"]);
    assert!(!ps.success(), "a revoked certificate still works: {ps}");
    assert!(
        ps.stderr
            .contains("this client certificate is not registered with Berth or was revoked"),
        "{ps}"
    );
}

#[test]
fn a_reader_gets_no_client_certificate() {
    let berth = Berth::start();
    let reader = berth.project_user("certreaders", "rita", "reader");
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().join("d").display().to_string();
    let out = berth.osc_as(&reader, &["docker-credentials", "--dir", &dir_arg]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("docker:credentials:create"),
        "the refusal names the rule: {stderr}"
    );
    assert!(!dir.path().join("d").join("key.pem").exists());
}

#[test]
fn without_credentials_only_ping_answers_and_everything_else_is_docker_style_401() {
    let berth = Berth::start();
    let base = berth.docker_host.replace("tcp://", "http://");
    let client = http();

    for (method, body) in [(reqwest::Method::GET, "OK"), (reqwest::Method::HEAD, "")] {
        let r = client
            .request(method.clone(), format!("{base}/_ping"))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{method} /_ping");
        assert_eq!(r.headers()["api-version"], "1.51");
        assert_eq!(r.headers()["ostype"], "linux");
        assert_eq!(r.text().unwrap(), body);
    }

    let r = client
        .get(format!("{base}/v1.50/containers/json"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: Value = r.json().unwrap();
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("authentication required"), "{body}");
    assert!(
        message.contains("osc docker-credentials"),
        "says how: {body}"
    );

    // The CLI shows that message, over the plain listener and over TLS without a
    // client certificate.
    let ps = docker(&[("DOCKER_HOST", &berth.docker_host)], &["ps"]);
    assert!(!ps.success());
    assert!(ps.stderr.contains("authentication required"), "{ps}");
    let ca = berth.data.path().join("pki").join("ca.pem");
    let ca = ca.display().to_string();
    let ps = docker(
        &[],
        &[
            "--host",
            &berth.docker_tls_host,
            "--tlsverify",
            "--tlscacert",
            &ca,
            "ps",
        ],
    );
    assert!(!ps.success());
    assert!(ps.stderr.contains("authentication required"), "{ps}");

    // A wrong token is refused too.
    let bad = DockerCli::new(&berth, "not-a-token");
    let ran = bad.fails(&["ps"]);
    assert!(ran.stderr.contains("token"), "{ran}");
}

#[test]
fn a_token_header_works_over_plain_and_over_tls_without_a_certificate() {
    let berth = Berth::start();
    let token = berth.token();
    let cli = DockerCli::new(&berth, &token);

    let version = cli.ok(&["version"]);
    assert!(version.contains("Server: Berth"), "{version}");
    assert!(version.contains("1.51"), "{version}");
    let info = cli.ok(&["info"]);
    assert!(info.contains("Project: admin"), "{info}");
    assert!(info.contains("User: admin"), "{info}");

    // The same config.json headers over TLS, the server verified with the CA.
    let ca = berth.data.path().join("pki").join("ca.pem");
    let ca = ca.display().to_string();
    let mut cmd = cli.command(&[
        "--host",
        &berth.docker_tls_host,
        "--tlsverify",
        "--tlscacert",
        &ca,
        "version",
        "--format",
        "{{.Server.Platform.Name}}",
    ]);
    cmd.env_remove("DOCKER_HOST");
    let ran = Spawned::start(cmd, "docker version over TLS".into(), None).finish(COMMAND_TIMEOUT);
    assert!(ran.success(), "{ran}\nberth log:\n{}", berth.log());
    assert_eq!(ran.stdout.trim(), "Berth");
}

#[test]
fn hijacked_streams_half_close_through_tls_with_a_client_certificate() {
    let berth = Berth::start();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().join("docker");
    berth.osc_ok(&["docker-credentials", "--dir", &dir.display().to_string()]);

    // `docker run` without -i half-closes (TLS close_notify) right after the upgrade;
    // the output must still arrive, and the exit code with it.
    let run = docker_tls(
        &berth,
        &dir,
        &["run", "--rm", IMAGE, "sh", "-c", "echo from-tls; exit 3"],
    );
    assert_eq!(run.code, Some(3), "{run}\nberth log:\n{}", berth.log());
    assert!(run.stdout.contains("from-tls"), "{run}");

    // stdin through the hijacked TLS stream, then end of input, then the output.
    let box_id = docker_tls(
        &berth,
        &dir,
        &["run", "-d", "--name", "tls-cat", IMAGE, "sleep", "300"],
    );
    assert!(box_id.success(), "{box_id}\nberth log:\n{}", berth.log());
    let ca = dir.join("ca.pem").display().to_string();
    let cert = dir.join("cert.pem").display().to_string();
    let key = dir.join("key.pem").display().to_string();
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(DOCKER);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("DOCKER_CONFIG", home.path())
        .args([
            "--host",
            &berth.docker_tls_host,
            "--tlsverify",
            "--tlscacert",
            &ca,
            "--tlscert",
            &cert,
            "--tlskey",
            &key,
            "exec",
            "-i",
            "tls-cat",
            "sh",
            "-c",
            "cat; echo after-eof",
        ]);
    let mut exec = Spawned::start(cmd, "docker exec -i over TLS".into(), None);
    exec.send(b"line one\n");
    exec.close_stdin();
    let ran = exec.finish(COMMAND_TIMEOUT);
    assert!(ran.success(), "{ran}\nberth log:\n{}", berth.log());
    assert_eq!(ran.stdout, "line one\nafter-eof\n", "{ran}");
    docker_tls(&berth, &dir, &["rm", "-f", "tls-cat"]);
}

#[test]
fn a_client_certificate_stops_working_when_its_user_loses_the_role() {
    let berth = Berth::start();
    let member = berth.project_user("certroles", "cora", "member");
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path().join("docker");
    let out = berth.osc_as(
        &member,
        &["docker-credentials", "--dir", &dir.display().to_string()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = docker_tls(
        &berth,
        &dir,
        &["info", "--format", "{{json .DriverStatus}}"],
    );
    assert!(info.success(), "{info}\nberth log:\n{}", berth.log());
    assert!(info.stdout.contains(r#"["Project","certroles"]"#), "{info}");
    assert!(info.stdout.contains(r#"["User","cora"]"#), "{info}");

    // The admin takes the role away: the embedded identity re-reads roles on every
    // call, so the certificate stops at once, as a token would.
    let admin = berth.token();
    let id_base = format!("{}/identity/v3", berth.url);
    let roles: Value = http()
        .get(format!("{id_base}/roles?name=member"))
        .header("X-Auth-Token", &admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let role = roles["roles"][0]["id"].as_str().unwrap();
    let r = http()
        .delete(format!(
            "{id_base}/projects/{}/users/{}/roles/{role}",
            member.project_id, member.user_id
        ))
        .header("X-Auth-Token", &admin)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "role removed");
    let ps = docker_tls(&berth, &dir, &["ps"]);
    assert!(!ps.success(), "{ps}");
    assert!(ps.stderr.contains("not registered with Berth"), "{ps}");
}

#[test]
fn berth_up_refuses_a_plain_docker_listener_off_loopback() {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args([
        "up",
        "--listen",
        "127.0.0.1:0",
        "--relay-listen",
        "127.0.0.1:0",
        "--docker-listen",
        "0.0.0.0:0",
        "--docker-tls-listen",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(data.path());
    let ran = Spawned::start(cmd, "berth up --docker-listen 0.0.0.0:0".into(), None)
        .finish(COMMAND_TIMEOUT);
    assert!(!ran.success(), "{ran}");
    assert!(
        ran.stderr.contains("may only listen on a loopback address"),
        "{ran}"
    );
    assert!(
        ran.stderr.contains("--docker-tls-listen"),
        "says what to use: {ran}"
    );
}
