//! Bad input gets a clear 4xx in Zun's error format and changes nothing.

mod support;

use serde_json::{json, Value};
use support::{free_port, Berth, IMAGE};

struct Api<'a> {
    berth: &'a Berth,
    token: String,
}

impl Api<'_> {
    fn request(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, Value) {
        let mut req = support::http()
            .request(method, format!("{}/v1{path}", self.berth.url))
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "container 1.40");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn create(&self, body: &Value) -> (u16, Value) {
        self.request(
            reqwest::Method::POST,
            "/containers?run=true",
            Some(&body.to_string()),
        )
    }

    fn count(&self) -> usize {
        let (status, v) = self.request(reqwest::Method::GET, "/containers", None);
        assert_eq!(status, 200);
        v["containers"].as_array().unwrap().len()
    }
}

/// Asserts a Zun-format error with `status` whose detail mentions `needle`.
fn assert_zun_error(got: (u16, Value), status: u16, needle: &str) {
    let (code, body) = got;
    assert_eq!(code, status, "body: {body}");
    let err = &body["errors"][0];
    assert_eq!(err["status"], status, "{body}");
    assert!(
        err["code"].as_str().unwrap().starts_with("container."),
        "{body}"
    );
    let detail = err["detail"].as_str().unwrap();
    assert!(
        detail.contains(needle),
        "detail {detail:?} should mention {needle:?}"
    );
    assert_eq!(err["title"], err["detail"]);
}

#[test]
fn every_bad_input_gets_a_clear_4xx_in_zun_format_and_changes_nothing() {
    let berth = Berth::start();
    let api = Api {
        berth: &berth,
        token: berth.token(),
    };
    let port = free_port();
    let (status, first) = api.create(&json!({"image": IMAGE, "command": ["sleep", "300"], "published_ports": [format!("{port}:80")]}));
    assert_eq!(status, 202, "{first}");
    assert_eq!(api.count(), 1);

    let malformed = api.request(reqwest::Method::POST, "/containers", Some("{\"image\": "));
    assert_zun_error(malformed, 400, "not valid JSON");
    assert_zun_error(
        api.create(&json!({"image": IMAGE, "colour": "blue"})),
        400,
        "unknown field `colour`",
    );
    assert_zun_error(
        api.create(&json!({"image": IMAGE, "name": "no spaces allowed"})),
        400,
        "Invalid container name",
    );
    assert_zun_error(
        api.create(&json!({"image": IMAGE, "published_ports": ["pub:80:http"]})),
        400,
        "Invalid port spec",
    );
    assert_zun_error(
        api.create(&json!({"image": IMAGE, "published_ports": ["99999:80"]})),
        400,
        "Invalid port spec",
    );
    assert_zun_error(
        api.create(&json!({"image": IMAGE, "memory": "lots"})),
        400,
        "Invalid memory",
    );
    assert_zun_error(
        api.create(&json!({"command": ["true"]})),
        400,
        "'image' is required",
    );
    assert_zun_error(
        api.create(&json!({"image": IMAGE, "published_ports": [format!("pub:{port}:8080")]})),
        409,
        &format!("Host port {port}/tcp is already published"),
    );
    let unknown = "00000000-0000-4000-8000-000000000000";
    assert_zun_error(
        api.request(
            reqwest::Method::GET,
            &format!("/containers/{unknown}"),
            None,
        ),
        404,
        "could not be found",
    );
    assert_zun_error(
        api.request(
            reqwest::Method::POST,
            &format!("/containers/{unknown}/stop"),
            None,
        ),
        404,
        "could not be found",
    );
    assert_zun_error(
        api.request(reqwest::Method::DELETE, "/containers/nosuchname", None),
        404,
        "could not be found",
    );
    assert_zun_error(
        api.request(reqwest::Method::GET, "/containers?colour=blue", None),
        400,
        "Unknown parameters: colour",
    );
    let wrong_type = support::http()
        .post(format!("{}/v1/containers", berth.url))
        .header("X-Auth-Token", &api.token)
        .header("Content-Type", "text/plain")
        .body("image=x")
        .send()
        .unwrap();
    assert_eq!(wrong_type.status().as_u16(), 415);

    // Nothing above made a container, in Berth or in Docker.
    assert_eq!(api.count(), 1);
    support::wait_for(
        "the first container to exist",
        std::time::Duration::from_secs(30),
        || (berth.docker_containers().len() == 1).then_some(()),
    );
    assert_eq!(berth.docker_containers().len(), 1);
}

#[test]
fn actions_not_allowed_in_the_current_status_answer_409() {
    let berth = Berth::start();
    let api = Api {
        berth: &berth,
        token: berth.token(),
    };
    let (_, made) = api.request(
        reqwest::Method::POST,
        "/containers",
        Some(&json!({"image": IMAGE, "command": ["sleep", "300"]}).to_string()),
    );
    let id = made["uuid"].as_str().unwrap().to_owned();
    berth.wait_status(&id, "Created");
    for action in ["stop", "pause", "unpause", "kill"] {
        assert_zun_error(
            api.request(
                reqwest::Method::POST,
                &format!("/containers/{id}/{action}"),
                None,
            ),
            409,
            &format!("Cannot {action} container {id} in Created state"),
        );
    }
    assert_eq!(berth.show(&id)["status"], "Created");
}

#[test]
fn requests_without_a_valid_token_get_401_but_discovery_is_public() {
    let berth = Berth::start();
    let client = support::http();
    for path in ["/", "/v1"] {
        let r = client.get(format!("{}{path}", berth.url)).send().unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
    }
    let root: Value = client
        .get(format!("{}/", berth.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(root["versions"][0]["max_version"], "1.40");
    for token in [None, Some("garbage"), Some("eyJhbGciOiJFUzI1NiJ9.e30.AAAA")] {
        let mut req = client.get(format!("{}/v1/containers", berth.url));
        if let Some(t) = token {
            req = req.header("X-Auth-Token", t);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let body: Value = resp.json().unwrap();
        assert_eq!(body["errors"][0]["status"], 401);
    }
    // A microversion outside the range is 406.
    let resp = client
        .get(format!("{}/v1/containers", berth.url))
        .header("X-Auth-Token", berth.token())
        .header("OpenStack-API-Version", "container 1.99")
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 406);
    assert_eq!(
        resp.headers()["OpenStack-API-Maximum-Version"],
        "container 1.40"
    );
}

#[test]
fn the_osc_cli_reports_failures_clearly_and_exits_non_zero() {
    let berth = Berth::start();
    let bad_port = berth.osc(&["container-create", "--image", IMAGE, "--port", "pub:x:22"]);
    assert!(!bad_port.status.success());
    assert!(
        String::from_utf8_lossy(&bad_port.stderr).contains("port"),
        "{}",
        String::from_utf8_lossy(&bad_port.stderr)
    );
    let missing = berth.osc(&["container-show", "nothing-here"]);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("could not be found"), "{err}");
    // Wrong credentials.
    let out = std::process::Command::new(support::osc_path())
        .args(["container-list"])
        .env_clear()
        .env("OS_AUTH_URL", berth.env("OS_AUTH_URL"))
        .env("OS_USERNAME", "admin")
        .env("OS_PASSWORD", "wrong")
        .env("OS_PROJECT_NAME", "admin")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
}
