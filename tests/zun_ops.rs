//! Zun's container operations on processes and files — execute (and interactive exec
//! over WebSocket), attach, top, resize, rename, rebuild, commit, get/put archive —
//! through the HTTP API and through python-zunclient's `openstack appcontainer`
//! commands, against `berth up` and the real Docker engine.

mod support;

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};
use support::docker::Spawned;
use support::openstack::openstack_path;
use support::{docker_inspect, log_tail, wait_for, wait_for_opt, Berth, IMAGE};

const LABEL: &str = "zun_ops";

struct Api {
    client: Client,
    base: String,
    token: String,
}

impl Api {
    fn new(b: &Berth, token: String) -> Api {
        Api {
            client: support::http(),
            base: format!("{}/v1", b.url),
            token,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str, version: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", format!("container {version}"))
    }

    /// Sends and returns (status, JSON body or Null).
    fn send(&self, rb: RequestBuilder) -> (u16, Value) {
        let resp = rb.send().expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.req(reqwest::Method::GET, path, "1.40"))
    }

    fn post(&self, path: &str) -> (u16, Value) {
        self.send(self.req(reqwest::Method::POST, path, "1.40"))
    }

    fn post_json(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.req(reqwest::Method::POST, path, "1.40").json(&body))
    }

    fn create(&self, body: Value) -> String {
        let (status, v) = self.send(
            self.req(reqwest::Method::POST, "/containers?run=true", "1.40")
                .json(&body),
        );
        assert_eq!(status, 202, "create: {v}");
        v["uuid"].as_str().expect("uuid").to_owned()
    }

    fn wait_status(&self, b: &Berth, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        wait_for_opt(Duration::from_secs(90), || {
            let (_, v) = self.get(&format!("/containers/{id}"));
            last = v.clone();
            (v["status"] == status && v["task_state"].is_null()).then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "container {id} never reached {status}; last: {last}\nberth log:\n{}",
                log_tail(&b.log(), 60)
            )
        })
    }

    fn actions(&self, id: &str) -> Vec<Value> {
        let (status, v) = self.get(&format!("/containers/{id}/container_actions"));
        assert_eq!(status, 200, "{v}");
        v["containerActions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn error_title(v: &Value) -> String {
    v["errors"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A one-file ustar archive.
fn tar_of(name: &str, content: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
    h[136..147].copy_from_slice(b"14000000000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = h;
    out.extend_from_slice(content);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// The content of the first entry of a tar archive.
fn first_file(tar: &[u8]) -> (String, Vec<u8>) {
    let h = &tar[..512];
    let end = h[..100].iter().position(|b| *b == 0).unwrap_or(100);
    let name = String::from_utf8_lossy(&h[..end]).into_owned();
    let size_text = String::from_utf8_lossy(&h[124..136]);
    let size = usize::from_str_radix(size_text.trim_matches(|c: char| c == '\0' || c == ' '), 8)
        .expect("octal size");
    (name, tar[512..512 + size].to_vec())
}

fn sleeper(api: &Api, name: &str, extra: Value) -> String {
    let mut body = json!({
        "image": IMAGE,
        "name": name,
        "command": ["sh", "-c", "mkdir -p /data && echo hi > /data/f && exec sleep 3600"],
        "labels": {"berth.test": LABEL},
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    api.create(body)
}

#[test]
fn execute_top_resize_rename_and_archives_over_http() {
    let b = Berth::start();
    let api = Api::new(&b, b.token());
    let id = sleeper(&api, "ops-http", json!({}));
    api.wait_status(&b, &id, "Running");

    // execute, run=true (the default): output of both streams and the exit code.
    let cmd = "sh -c 'echo to-out; echo to-err >&2; exit 3'";
    let (status, v) = api.send(
        api.req(
            reqwest::Method::POST,
            &format!("/containers/{id}/execute"),
            "1.40",
        )
        .query(&[("command", cmd)]),
    );
    assert_eq!(status, 200, "{v}");
    let output = v["output"].as_str().unwrap_or_default();
    assert!(
        output.contains("to-out") && output.contains("to-err"),
        "{v}"
    );
    assert_eq!(v["exit_code"], 3, "{v}");
    assert!(v["exec_id"].is_null() && v["proxy_url"].is_null(), "{v}");
    // The same parameters in a JSON body.
    let (status, v) = api.post_json(
        "/containers/ops-http/execute",
        json!({"command": "cat /data/f", "run": "true"}),
    );
    assert_eq!((status, v["output"].as_str()), (200, Some("hi\n")), "{v}");
    assert_eq!(v["exit_code"], 0);
    // Bad input: a clear 400 in Zun's format.
    let (status, v) = api.post(&format!("/containers/{id}/execute"));
    assert_eq!(status, 400, "{v}");
    assert!(error_title(&v).contains("command"), "{v}");
    let (status, v) = api.post(&format!("/containers/{id}/execute?command=ls&run=maybe"));
    assert_eq!(status, 400, "{v}");
    let (status, v) = api.post(&format!("/containers/{id}/execute?command=ls&bogus=1"));
    assert_eq!(status, 400, "{v}");
    assert!(error_title(&v).contains("bogus"), "{v}");

    // top, with and without ps_args.
    let (status, v) = api.get(&format!("/containers/{id}/top"));
    assert_eq!(status, 200, "{v}");
    assert!(
        v["Titles"].as_array().unwrap().iter().any(|t| t == "PID"),
        "{v}"
    );
    assert!(v["Processes"].to_string().contains("sleep 3600"), "{v}");
    let (status, v) = api.get(&format!("/containers/{id}/top?ps_args=aux"));
    assert_eq!(status, 200, "{v}");
    assert!(v["Processes"].to_string().contains("sleep"), "{v}");

    // resize needs a TTY, and a size.
    let (status, v) = api.post(&format!("/containers/{id}/resize?h=30&w=100"));
    assert_eq!(status, 400, "{v}");
    assert!(error_title(&v).contains("TTY"), "{v}");
    let (status, _) = api.post(&format!("/containers/{id}/resize?h=0&w=100"));
    assert_eq!(status, 400);

    // attach needs an interactive container.
    let (status, v) = api.get(&format!("/containers/{id}/attach"));
    assert_eq!(status, 400, "{v}");

    // rename: POST exists up to 1.13 (later versions rename with PATCH).
    let (status, v) = api.post(&format!("/containers/{id}/rename?name=ops-renamed"));
    assert_eq!(status, 406, "{v}");
    let (status, v) = api.send(api.req(
        reqwest::Method::POST,
        &format!("/containers/{id}/rename?name=ops-renamed"),
        "1.13",
    ));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["name"], "ops-renamed");
    assert_eq!(v["uuid"], id.as_str());
    let (status, v) = api.send(api.req(
        reqwest::Method::POST,
        &format!("/containers/{id}/rename?name=ops-renamed"),
        "1.13",
    ));
    assert_eq!(status, 409, "{v}");
    let (status, _) = api.send(api.req(
        reqwest::Method::POST,
        &format!("/containers/{id}/rename?name=bad%20name!"),
        "1.13",
    ));
    assert_eq!(status, 400);

    // get_archive: base64 tar + stat (1.25 on); before 1.25 the tar as text.
    let (status, v) = api.get(&format!("/containers/{id}/get_archive?path=/data/f"));
    assert_eq!(status, 200, "{v}");
    let tar = base64::engine::general_purpose::STANDARD
        .decode(v["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(first_file(&tar), ("f".to_owned(), b"hi\n".to_vec()));
    assert_eq!(v["stat"]["name"], "f", "{v}");
    assert_eq!(v["stat"]["size"], 3, "{v}");
    let (status, old) = api.send(api.req(
        reqwest::Method::GET,
        &format!("/containers/{id}/get_archive?path=/data/f"),
        "1.24",
    ));
    assert_eq!(status, 200);
    let raw: Vec<u8> = old["data"]
        .as_str()
        .unwrap()
        .chars()
        .map(|c| c as u32 as u8)
        .collect();
    assert_eq!(raw, tar);
    let (status, v) = api.get(&format!("/containers/{id}/get_archive?path=/no/such"));
    assert_eq!(status, 400, "{v}");
    let (status, _) = api.get(&format!("/containers/{id}/get_archive?path=relative"));
    assert_eq!(status, 400);
    let (status, _) = api.get(&format!("/containers/{id}/get_archive"));
    assert_eq!(status, 400);

    // put_archive: a tar in, then read back with execute.
    let data = base64::engine::general_purpose::STANDARD.encode(tar_of("g", b"put-in\n"));
    let (status, v) = api.post_json(
        &format!("/containers/{id}/put_archive?path=/data"),
        json!({"data": data}),
    );
    assert_eq!(status, 200, "{v}");
    let (_, v) = api.post(&format!("/containers/{id}/execute?command=cat%20/data/g"));
    assert_eq!(v["output"], "put-in\n", "{v}");
    let (status, v) = api.post_json(
        &format!("/containers/{id}/put_archive?path=/data"),
        json!({"data": "%%% not base64"}),
    );
    assert_eq!(status, 400, "{v}");
    let (status, v) = api.post_json(
        &format!("/containers/{id}/put_archive?path=/no/such/dir"),
        json!({"data": data}),
    );
    assert_eq!(status, 400, "{v}");

    // Another project's container is not found, whatever the operation.
    let other = b.project_user("zunops-other", "zunops-other-user", "member");
    let them = Api::new(&b, b.token_as(&other));
    for (method, op) in [
        (reqwest::Method::POST, "execute?command=ls"),
        (reqwest::Method::GET, "top"),
        (reqwest::Method::GET, "get_archive?path=/data/f"),
        (reqwest::Method::POST, "commit?repository=zunops/x"),
        (reqwest::Method::POST, "rebuild"),
    ] {
        let (status, v) = them.send(them.req(method, &format!("/containers/{id}/{op}"), "1.40"));
        assert_eq!(status, 404, "{op}: {v}");
    }
    // A reader may look (top) but not run commands.
    let reader = b.project_user("zunops-other", "zunops-reader", "reader");
    let r = Api::new(&b, b.token_as(&reader));
    let (status, v) = r.post(&format!("/containers/{id}/execute?command=ls"));
    assert_eq!(status, 403, "{v}");

    // The status table: a stopped container takes archives, not exec, top or attach.
    let (status, _) = api.post(&format!("/containers/{id}/stop?timeout=1"));
    assert_eq!(status, 202);
    api.wait_status(&b, &id, "Stopped");
    for (method, op) in [
        (reqwest::Method::POST, "execute?command=ls"),
        (reqwest::Method::GET, "top"),
        (reqwest::Method::GET, "attach"),
        (reqwest::Method::POST, "execute_resize?exec_id=abc&h=1&w=1"),
    ] {
        let (status, v) = api.send(api.req(method, &format!("/containers/{id}/{op}"), "1.40"));
        assert_eq!(status, 409, "{op}: {v}");
        assert_eq!(
            v["errors"][0]["code"], "container.invalid-state-exception",
            "{v}"
        );
    }
    let (status, v) = api.get(&format!("/containers/{id}/get_archive?path=/data/g"));
    assert_eq!(status, 200, "{v}");

    let (status, _) = api.send(api.req(
        reqwest::Method::DELETE,
        &format!("/containers/{id}"),
        "1.40",
    ));
    assert_eq!(status, 204);
}

#[test]
fn rebuild_and_commit_over_http_keep_the_uuid_and_record_actions() {
    let b = Berth::start();
    let api = Api::new(&b, b.token());
    let id = sleeper(&api, "ops-rebuild", json!({}));
    api.wait_status(&b, &id, "Running");
    let engine_id = docker_inspect(&id, "{{.Id}}").expect("engine container");

    // Something only this container has, to find in the committed image.
    let (_, v) = api.post(&format!(
        "/containers/{id}/execute?command=sh%20-c%20'echo%20committed%20%3E%20/marker'"
    ));
    assert_eq!(v["exit_code"], 0, "{v}");
    let repo = format!("berth-test/zunops-{}", &id[..8]);
    let (status, v) = api.post(&format!("/containers/{id}/commit?repository={repo}&tag=v1"));
    assert_eq!(status, 202, "{v}");
    let action_id = v["uuid"].as_str().expect("uuid").to_owned();
    let image = format!("{repo}:v1");
    let inspected = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", &image])
        .output()
        .unwrap();
    assert!(inspected.status.success(), "the committed image exists");
    assert_eq!(
        String::from_utf8_lossy(&inspected.stdout).trim(),
        v["image_id"].as_str().unwrap()
    );
    let actions = api.actions(&id);
    let commit = actions
        .iter()
        .find(|a| a["action"] == "commit")
        .unwrap_or_else(|| panic!("a commit action: {actions:?}"));
    assert_eq!(commit["request_id"], action_id.as_str());
    assert!(commit["finish_time"].is_string(), "{commit}");
    // Bad input.
    let (status, _) = api.post(&format!("/containers/{id}/commit"));
    assert_eq!(status, 400);
    let (status, _) = api.post(&format!("/containers/{id}/commit?repository=UPPER%20case"));
    assert_eq!(status, 400);

    // Rebuild from the committed image: same uuid, a new engine container, running.
    let (status, v) = api.post(&format!("/containers/{id}/rebuild?image={image}"));
    assert_eq!(status, 202, "{v}");
    let rebuilt = api.wait_status(&b, &id, "Running");
    assert_eq!(rebuilt["uuid"], id.as_str());
    assert_eq!(rebuilt["image"], image.as_str());
    let new_engine_id = docker_inspect(&id, "{{.Id}}").expect("engine container");
    assert_ne!(
        new_engine_id, engine_id,
        "the engine container was made again"
    );
    let (_, v) = api.post(&format!("/containers/{id}/execute?command=cat%20/marker"));
    assert_eq!(v["output"], "committed\n", "{v}");
    let actions = api.actions(&id);
    let rebuild = actions
        .iter()
        .find(|a| a["action"] == "rebuild")
        .unwrap_or_else(|| panic!("a rebuild action: {actions:?}"));
    assert!(rebuild["finish_time"].is_string(), "{rebuild}");
    let (status, _) = api.post(&format!("/containers/{id}/rebuild?image_driver=glance"));
    assert_eq!(status, 400);

    // A stopped container is rebuilt and stays stopped.
    let (status, _) = api.post(&format!("/containers/{id}/stop?timeout=1"));
    assert_eq!(status, 202);
    api.wait_status(&b, &id, "Stopped");
    let (status, v) = api.post(&format!("/containers/{id}/rebuild"));
    assert_eq!(status, 202, "{v}");
    let after = api.wait_status(&b, &id, "Created");
    assert_eq!(after["image"], image.as_str());

    let (status, _) = api.send(api.req(
        reqwest::Method::DELETE,
        &format!("/containers/{id}"),
        "1.40",
    ));
    assert_eq!(status, 204);
    wait_for("the container to go", Duration::from_secs(60), || {
        (api.get(&format!("/containers/{id}")).0 == 404).then_some(())
    });
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
}

// ---------------------------------------------------------------------------------
// python-zunclient

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `openstack ARGS` on a pseudo-terminal (util-linux `script`), as a person runs
/// `appcontainer attach` or `exec --interactive`.
/// Types `line` into `client` until its output shows `expect`. The client switches its
/// terminal to raw mode only after it printed that it is connected, and that switch
/// flushes what was typed before (as on any terminal), so the first line may be lost;
/// typing it again is harmless here.
fn type_until(client: &mut Spawned, line: &[u8], expect: &str) {
    for _ in 0..6 {
        client.send(line);
        if wait_for_opt(Duration::from_secs(5), || {
            client.stdout().contains(expect).then_some(())
        })
        .is_some()
        {
            return;
        }
    }
    client.expect(expect, Duration::from_secs(1));
}

fn openstack_pty(b: &Berth, args: &[&str]) -> Spawned {
    let line = std::iter::once(openstack_path().display().to_string())
        .chain(args.iter().map(|a| sh_quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = b.openstack_env(None, Command::new("script"));
    script.args([
        "-qfec",
        &format!("stty rows 40 cols 120; exec {line}"),
        "/dev/null",
    ]);
    Spawned::start(
        script,
        format!("openstack {} (on a pty)", args.join(" ")),
        None,
    )
}

#[test]
fn openstack_appcontainer_exec_attach_cp_commit_and_rebuild_work() {
    let b = Berth::start();
    let api = Api::new(&b, b.token());

    // A shell with a TTY and stdin, for attach and interactive exec.
    let id = api.create(json!({
        "image": IMAGE,
        "name": "ops-cli",
        "command": ["sh"],
        "interactive": true,
        "tty": true,
        "labels": {"berth.test": LABEL},
    }));
    api.wait_status(&b, &id, "Running");

    // exec: the output, and the command's exit code as the client's.
    let out = b.openstack(
        None,
        &[
            "appcontainer",
            "exec",
            "ops-cli",
            "sh",
            "-c",
            "echo via-cli; exit 4",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("via-cli"),
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    // exec --interactive: a shell over the WebSocket URL Berth hands out.
    let mut exec = openstack_pty(
        &b,
        &["appcontainer", "exec", "--interactive", "ops-cli", "sh"],
    );
    exec.expect("connected to ops-cli", Duration::from_secs(60));
    // Type only once the shell prompts: a starting shell may discard what was typed
    // ahead on its terminal, as on any terminal.
    exec.expect("# ", Duration::from_secs(30));
    type_until(&mut exec, b"echo exec-$((6*7))\r", "exec-42");
    // The TTY size the client set through execute_resize (40x120 from `script`).
    exec.send(b"stty size\r");
    exec.expect("40 120", Duration::from_secs(30));
    exec.send(b"exit\r");
    let ran = exec.finish(Duration::from_secs(60));
    assert!(!ran.stdout.contains("Traceback"), "{}", ran.stdout);

    // attach: the container's own shell.
    let url_before = api.get(&format!("/containers/{id}/attach"));
    assert_eq!(url_before.0, 200, "{:?}", url_before.1);
    let url = url_before.1.as_str().expect("a URL string").to_owned();
    assert!(url.starts_with("ws://") && url.contains("token="), "{url}");
    let mut attach = openstack_pty(&b, &["appcontainer", "attach", "ops-cli"]);
    attach.expect("connected to ops-cli", Duration::from_secs(60));
    type_until(&mut attach, b"echo attached-$((1+1))\r", "attached-2");

    // A ticket is single-use, bound to its container, and needed at all.
    let ws = |u: &str| {
        let http_url = u.replacen("ws://", "http://", 1);
        support::http()
            .get(http_url)
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let wrong_uuid = url.replace(&id, "00000000-0000-0000-0000-000000000000");
    assert_eq!(ws(&wrong_uuid), 401);
    assert_eq!(ws(&url), 401, "the ticket was spent by the wrong-uuid try");
    let no_token = url.split('?').next().unwrap().to_owned() + "?uuid=" + &id;
    assert_eq!(ws(&no_token), 400);

    // The attached shell exits: the container stops, the client returns.
    attach.send(b"exit\r");
    attach.finish(Duration::from_secs(60));
    api.wait_status(&b, &id, "Stopped");
    let (status, _) = api.post(&format!("/containers/{id}/start"));
    assert_eq!(status, 202);
    api.wait_status(&b, &id, "Running");

    // cp both ways.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("note.txt");
    std::fs::write(&local, "copied in\n").unwrap();
    b.openstack_ok(
        None,
        &[
            "appcontainer",
            "cp",
            local.to_str().unwrap(),
            "ops-cli:/tmp",
        ],
    );
    let (_, v) = api.post(&format!(
        "/containers/{id}/execute?command=cat%20/tmp/note.txt"
    ));
    assert_eq!(v["output"], "copied in\n", "{v}");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    b.openstack_ok(
        None,
        &[
            "appcontainer",
            "cp",
            "ops-cli:/tmp/note.txt",
            out_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("note.txt")).unwrap(),
        "copied in\n"
    );

    // commit, then rebuild from the image.
    let image = format!("berth-test/zunops-cli-{}:v2", &id[..8]);
    let said = b.openstack_ok(None, &["appcontainer", "commit", "ops-cli", &image]);
    assert!(said.contains("has been accepted"), "{said}");
    assert!(Command::new("docker")
        .args(["image", "inspect", &image])
        .output()
        .unwrap()
        .status
        .success());
    let engine_id = docker_inspect(&id, "{{.Id}}").expect("engine container");
    b.openstack_ok(
        None,
        &["appcontainer", "rebuild", "--image", &image, "ops-cli"],
    );
    let rebuilt = wait_for_opt(Duration::from_secs(90), || {
        let (_, v) = api.get(&format!("/containers/{id}"));
        (v["status"] == "Running" && v["task_state"].is_null() && v["image"] == image.as_str())
            .then_some(v)
    });
    assert!(
        rebuilt.is_some(),
        "rebuild never finished\n{}",
        log_tail(&b.log(), 60)
    );
    assert_ne!(docker_inspect(&id, "{{.Id}}").unwrap(), engine_id);
    let (_, v) = api.post(&format!(
        "/containers/{id}/execute?command=cat%20/tmp/note.txt"
    ));
    assert_eq!(
        v["output"], "copied in\n",
        "the committed file is in the rebuilt container: {v}"
    );

    b.openstack_ok(None, &["appcontainer", "delete", "--stop", "ops-cli"]);
    wait_for("the container to go", Duration::from_secs(60), || {
        (api.get(&format!("/containers/{id}")).0 == 404).then_some(())
    });
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
}
