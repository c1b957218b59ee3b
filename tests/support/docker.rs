//! The stock `docker` CLI against Berth's Docker endpoint, one tenant per [`DockerCli`],
//! and a private registry ([`Registry`], Debian's `docker-registry`) for pull tests.
//!
//! Every command runs with a deadline: a command that hangs is killed and the test fails
//! naming it, instead of blocking the run.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{free_port, wait_for_opt, Berth};

/// The docker CLI the tests drive (client 28.2.2 on the test machines).
pub const DOCKER: &str = "docker";

/// How long one docker command may take before it counts as hung. Generous: a tenant's
/// first container waits for its project's instance to be made.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct Ran {
    /// The command, for messages.
    pub what: String,
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Stdout's non-empty lines, trimmed.
    pub fn lines(&self) -> Vec<String> {
        self.stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}\nstdout: {}\nstderr: {}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

/// A running process whose output is collected as it comes; killed when dropped.
pub struct Spawned {
    pub what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// berth up's output, shown when something goes wrong.
    log: Option<Arc<Mutex<Vec<String>>>>,
}

impl Spawned {
    /// Starts `cmd` with piped stdin, stdout and stderr.
    pub fn start(mut cmd: Command, what: String, log: Option<Arc<Mutex<Vec<String>>>>) -> Spawned {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("`{what}` does not start: {e}"));
        let stdin = child.stdin.take();
        let stdout: Arc<Mutex<Vec<u8>>> = Arc::default();
        let stderr: Arc<Mutex<Vec<u8>>> = Arc::default();
        let mut readers = Vec::new();
        for (mut pipe, sink) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                stdout.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ] {
            readers.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        }
        Spawned {
            what,
            child,
            stdin,
            stdout,
            stderr,
            readers,
            log,
        }
    }

    /// Stdout so far (lossy UTF-8).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// Stderr so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn berth_log(&self) -> String {
        self.log
            .as_ref()
            .map(|l| l.lock().unwrap().join("\n"))
            .unwrap_or_default()
    }

    /// Writes `bytes` to the process's stdin.
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("`{}`: stdin is already closed", self.what));
        stdin
            .write_all(bytes)
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| {
                panic!(
                    "`{}`: writing stdin failed ({e}); stdout so far: {}\nstderr: {}",
                    self.what,
                    self.stdout(),
                    self.stderr()
                )
            });
    }

    /// Closes the process's stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Waits until stdout contains `text`; fails the test after `timeout`.
    pub fn expect(&mut self, text: &str, timeout: Duration) {
        let seen = wait_for_opt(timeout, || self.stdout().contains(text).then_some(()));
        if seen.is_none() {
            let exited = self.child.try_wait().ok().flatten();
            panic!(
                "`{}` did not print {text:?} within {timeout:?} (exited: {exited:?})\nstdout so far: {}\nstderr so far: {}\nberth log:\n{}",
                self.what,
                self.stdout(),
                self.stderr(),
                self.berth_log()
            );
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_some()
    }

    /// Waits for the process to end; kills it and fails the test after `timeout`.
    pub fn finish(mut self, timeout: Duration) -> Ran {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` hung: still running after {timeout:?}, killed\nstdout so far: {}\nstderr so far: {}\nberth log:\n{}",
                    self.what,
                    self.stdout(),
                    self.stderr(),
                    self.berth_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.stdin.take();
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Ran {
            what: self.what.clone(),
            code: status.code(),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Quotes `s` for `sh -c` (single quotes).
fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,%+".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The docker CLI of one tenant: its own config directory whose config.json sends
/// `X-Auth-Token: TOKEN` on every request (HttpHeaders), DOCKER_HOST at Berth's plain
/// loopback Docker listener.
pub struct DockerCli {
    config: tempfile::TempDir,
    pub host: String,
    pub token: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl DockerCli {
    /// A docker CLI authenticated with `token` against `berth`'s loopback listener.
    pub fn new(berth: &Berth, token: &str) -> DockerCli {
        assert!(
            !berth.docker_host.is_empty(),
            "berth up printed no `docker:` line; its output:\n{}",
            berth.log()
        );
        let config = tempfile::tempdir().unwrap();
        let body = serde_json::json!({ "HttpHeaders": { "X-Auth-Token": token } });
        std::fs::write(
            config.path().join("config.json"),
            serde_json::to_vec_pretty(&body).unwrap(),
        )
        .unwrap();
        DockerCli {
            config,
            host: berth.docker_host.clone(),
            token: token.to_owned(),
            log: berth.output.clone(),
        }
    }

    /// The config directory (DOCKER_CONFIG).
    pub fn config_dir(&self) -> &Path {
        self.config.path()
    }

    /// A `docker` command with this tenant's environment and nothing else of ours.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(DOCKER);
        self.env(&mut cmd);
        cmd.args(args);
        cmd
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.config.path())
            .env("DOCKER_CONFIG", self.config.path())
            .env("DOCKER_HOST", &self.host)
            .env("TERM", "xterm");
    }

    /// Runs `docker ARGS` with stdin closed and waits (at most [`COMMAND_TIMEOUT`]).
    pub fn run(&self, args: &[&str]) -> Ran {
        self.run_input(args, None)
    }

    /// Runs `docker ARGS`, feeding `input` on stdin (then EOF).
    pub fn run_input(&self, args: &[&str], input: Option<&[u8]>) -> Ran {
        let mut p = self.spawn(args);
        if let Some(bytes) = input {
            p.send(bytes);
        }
        p.close_stdin();
        p.finish(COMMAND_TIMEOUT)
    }

    /// Runs `docker ARGS`, expects exit 0 and returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args);
        assert!(
            ran.success(),
            "{ran}\nberth log:\n{}",
            self.log.lock().unwrap().join("\n")
        );
        ran.stdout
    }

    /// Runs `docker ARGS`, expects failure, returns the result.
    pub fn fails(&self, args: &[&str]) -> Ran {
        let ran = self.run(args);
        assert!(
            !ran.success(),
            "`{}` succeeded but should have failed:\n{ran}",
            ran.what
        );
        ran
    }

    /// Starts `docker ARGS` in the background (stdin piped).
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let what = format!("docker {}", args.join(" "));
        Spawned::start(self.command(args), what, Some(self.log.clone()))
    }

    /// Starts `docker ARGS` on a pseudo-terminal of 40 rows × 120 columns (util-linux
    /// `script`), so the CLI sees a terminal; what is sent goes to the terminal's input,
    /// and stdout carries everything the terminal shows. `script -e` exits with docker's
    /// exit code.
    pub fn pty(&self, args: &[&str]) -> Spawned {
        let line = std::iter::once(DOCKER.to_owned())
            .chain(args.iter().map(|a| sh_quote(a)))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        self.env(&mut cmd);
        cmd.args([
            "-qfec",
            &format!("stty rows 40 cols 120; exec {line}"),
            "/dev/null",
        ]);
        Spawned::start(
            cmd,
            format!("docker {} (on a pty)", args.join(" ")),
            Some(self.log.clone()),
        )
    }

    /// berth up's output so far.
    pub fn berth_log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// A private registry: Debian's `docker-registry` as a plain process on a free loopback
/// port, storing in a temporary directory, with htpasswd (bcrypt) authentication.
/// Killed, and its tags removed from the host engine, when dropped.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`, the registry's host part in image references.
    pub addr: String,
    pub user: String,
    pub password: String,
}

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

impl Registry {
    /// Starts a registry with one user; fails the test when the package is missing.
    pub fn start() -> Registry {
        assert!(
            Path::new(REGISTRY_BIN).exists(),
            "{REGISTRY_BIN} is missing: install Debian's docker-registry package \
             (scripts/test installs it: apt-get install docker-registry apache2-utils)"
        );
        let dir = tempfile::tempdir().unwrap();
        let user = "berth-tester".to_owned();
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", &user, &password])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "htpasswd does not run ({e}): install apache2-utils \
                     (scripts/test installs it)"
                )
            });
        assert!(
            htpasswd.status.success(),
            "htpasswd -Bbn failed: {}",
            String::from_utf8_lossy(&htpasswd.stderr)
        );
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n\
             auth:\n  htpasswd:\n    realm: berth-test\n    path: {htpasswd}\n",
            root = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{REGISTRY_BIN} does not start: {e}"));
        let mut registry = Registry {
            child,
            dir,
            addr,
            user,
            password,
        };
        // Ready when /v2/ answers (401: authentication required).
        let ready = wait_for_opt(Duration::from_secs(30), || {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("docker-registry exited with {status}:\n{}", registry.log());
            }
            let mut s = TcpStream::connect(&registry.addr).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(
                s,
                "GET /v2/ HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                registry.addr
            )
            .ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).ok()?;
            head.starts_with(b"HTTP/1.1 401").then_some(())
        });
        assert!(
            ready.is_some(),
            "docker-registry on {} never answered /v2/ with 401:\n{}",
            registry.addr,
            registry.log()
        );
        registry
    }

    /// The registry's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes `image` (present on the host engine) as `ADDR/repo_tag` using the host
    /// engine directly (set-up only, never through Berth), then removes that tag from
    /// the host engine so a pull has to fetch it. Returns the full reference.
    pub fn seed(&self, image: &str, repo_tag: &str) -> String {
        let reference = format!("{}/{repo_tag}", self.addr);
        // A config directory of its own, so the host user's credentials stay untouched.
        let config = self.dir.path().join("host-docker-config");
        std::fs::create_dir_all(&config).unwrap();
        let host_docker = |args: &[&str], input: Option<&[u8]>| {
            let mut cmd = Command::new(DOCKER);
            cmd.env("DOCKER_CONFIG", &config)
                .env_remove("DOCKER_HOST")
                .args(args);
            let p = Spawned::start(cmd, format!("docker {}", args.join(" ")), None);
            let mut p = p;
            if let Some(bytes) = input {
                p.send(bytes);
            }
            p.close_stdin();
            let ran = p.finish(COMMAND_TIMEOUT);
            assert!(
                ran.success(),
                "registry set-up on the host engine failed: {ran}\nregistry log:\n{}",
                self.log()
            );
        };
        host_docker(
            &[
                "login",
                &self.addr,
                "--username",
                &self.user,
                "--password-stdin",
            ],
            Some(self.password.as_bytes()),
        );
        host_docker(&["tag", image, &reference], None);
        host_docker(&["push", &reference], None);
        host_docker(&["rmi", &reference], None);
        reference
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Tags of this registry that pulls left on the host engine.
        if let Ok(out) = Command::new(DOCKER)
            .env_remove("DOCKER_HOST")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
        {
            let prefix = format!("{}/", self.addr);
            for tag in String::from_utf8_lossy(&out.stdout).lines() {
                if tag.starts_with(&prefix) {
                    let _ = Command::new(DOCKER)
                        .env_remove("DOCKER_HOST")
                        .args(["rmi", tag])
                        .output();
                }
            }
        }
    }
}
