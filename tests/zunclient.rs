//! python-zunclient's `openstack appcontainer` command set against `berth up` and the
//! real Docker engine: every command Berth supports is run here (exec, attach, cp,
//! rebuild, commit are in tests/zun_ops.rs, stats in tests/docker_stats.rs), and the
//! commands Berth refuses are shown to fail with Berth's reason. docs/ZUN.md lists
//! the whole set. Also the microversion rules over HTTP (no header = 1.1, 406 out of
//! range, 400 for a parameter newer than the version), the discovery documents and
//! the un-prefixed routes. `scripts/test` exports BERTH_TEST_OPENSTACK
//! (scripts/python-clients).

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::openstack::column;
use support::{docker_lines, log_tail, wait_for_opt, Berth, IMAGE};

#[test]
fn the_appcontainer_command_set_works_against_berth() {
    let b = Berth::start();
    let run = b.openstack_json(
        None,
        &[
            "appcontainer",
            "run",
            "--name",
            "zc1",
            "--label",
            "berth.test=zunclient",
            "--cpu",
            "0.5",
            "--memory",
            "128",
            IMAGE,
            "sh",
            "-c",
            "echo zun-hello; sleep 600",
        ],
    );
    let uuid = run["uuid"].as_str().unwrap().to_owned();
    b.appcontainer_settled(None, "zc1", &["Running"], Duration::from_secs(90));

    // list, show, set, logs, pause/unpause, restart, kill, stop/start.
    let list = b.openstack_json(None, &["appcontainer", "list"]);
    assert_eq!(column(&list, "name"), ["zc1"], "{list}");
    let shown = b.openstack_json(None, &["appcontainer", "show", &uuid]);
    assert_eq!(shown["name"], "zc1");
    assert_eq!(shown["memory"], "128");
    b.openstack_ok(None, &["appcontainer", "set", "--memory", "256", "zc1"]);
    let set = b.appcontainer_settled(None, "zc1", &["Running"], Duration::from_secs(90));
    assert_eq!(set["memory"], "256", "{set}");
    let logs = wait_for_opt(Duration::from_secs(30), || {
        let l = b.openstack_ok(None, &["appcontainer", "logs", "zc1"]);
        l.contains("zun-hello").then_some(l)
    });
    assert!(logs.is_some(), "appcontainer logs never showed the output");
    b.openstack_ok(None, &["appcontainer", "pause", "zc1"]);
    b.appcontainer_settled(None, "zc1", &["Paused"], Duration::from_secs(90));
    b.openstack_ok(None, &["appcontainer", "unpause", "zc1"]);
    b.appcontainer_settled(None, "zc1", &["Running"], Duration::from_secs(90));
    b.openstack_ok(None, &["appcontainer", "restart", "zc1"]);
    b.appcontainer_settled(None, "zc1", &["Running"], Duration::from_secs(90));
    b.openstack_ok(None, &["appcontainer", "stop", "zc1"]);
    b.appcontainer_settled(None, "zc1", &["Stopped"], Duration::from_secs(90));
    b.openstack_ok(None, &["appcontainer", "start", "zc1"]);
    b.appcontainer_settled(None, "zc1", &["Running"], Duration::from_secs(90));
    b.openstack_ok(
        None,
        &["appcontainer", "kill", "--signal", "SIGKILL", "zc1"],
    );
    b.appcontainer_settled(None, "zc1", &["Stopped"], Duration::from_secs(90));
    b.openstack_ok(None, &["appcontainer", "start", "zc1"]);
    b.appcontainer_settled(None, "zc1", &["Running"], Duration::from_secs(90));

    // action list / show with its events.
    let actions = b.openstack_json(None, &["appcontainer", "action", "list", "zc1"]);
    let names = column(&actions, "action");
    for want in ["create", "pause", "stop", "kill"] {
        assert!(names.iter().any(|n| n == want), "{want} in {actions}");
    }
    let create = actions
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "create")
        .unwrap();
    let request_id = create["request_id"].as_str().unwrap().to_owned();
    let action = b.openstack_json(
        None,
        &["appcontainer", "action", "show", "zc1", &request_id],
    );
    assert_eq!(action["action"], "create", "{action}");
    assert_eq!(action["request_id"], request_id.as_str());
    let events = action["events"].to_string();
    assert!(
        events.contains("compute__do_container_create") && events.contains("Success"),
        "{action}"
    );
    let missing = b.openstack_fails(
        None,
        &["appcontainer", "action", "show", "zc1", "no-such-request"],
    );
    assert!(missing.contains("could not be found"), "{missing}");

    // network list shows the container's one network; attach/detach are refused
    // with Berth's reason (the client prints the failure and exits 0).
    // python-zunclient 5.5.0's `network list` passes a plain function as a column
    // formatter, which osc-lib 4.x refuses ("Invalid formatter provided.") whenever
    // there is a network to show: a client bug. The command reaches Berth, and the
    // route is checked over HTTP.
    let broken = b.openstack_fails(None, &["appcontainer", "network", "list", "zc1"]);
    assert!(broken.contains("Invalid formatter provided"), "{broken}");
    // `show` flattens addresses to "ip, ip" and adds `networks`.
    let address = shown["addresses"].as_str().unwrap_or_default().to_owned();
    assert!(!address.is_empty(), "{shown}");
    assert_eq!(shown["networks"], "berth", "{shown}");
    let token = b.token();
    let get = |version: &str| -> Value {
        let resp = support::http()
            .get(format!("{}/v1/containers/zc1/network_list", b.url))
            .header("X-Auth-Token", &token)
            .header("OpenStack-API-Version", format!("container {version}"))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        resp.json().unwrap()
    };
    assert_eq!(
        get("1.40"),
        json!({"networks": [{"net_id": "berth", "port_id": null,
            "fixed_ips": [{"ip_address": address, "version": 4, "subnet_id": null}]}]})
    );
    assert_eq!(
        get("1.17"),
        json!({"networks": [{"net_id": "berth", "port_id": null, "subnet_id": null,
            "version": 4, "ip_address": address}]})
    );
    let attach = b.openstack_ok(
        None,
        &[
            "appcontainer",
            "network",
            "attach",
            "--network",
            "private",
            "zc1",
        ],
    );
    assert!(
        attach.contains("failed") && attach.contains("no Neutron networks"),
        "{attach}"
    );
    let detach = b.openstack_ok(
        None,
        &[
            "appcontainer",
            "network",
            "detach",
            "--network",
            "private",
            "zc1",
        ],
    );
    assert!(
        detach.contains("failed") && detach.contains("is not attached"),
        "{detach}"
    );
    // Security groups were removed from the API at 1.15: the client's 1.40 gets 406.
    // (The client prints the failure and exits 0.)
    let sg = b.openstack_ok(
        None,
        &["appcontainer", "add", "security", "group", "zc1", "default"],
    );
    assert!(
        sg.contains("failed") && sg.contains("up to API microversion 1.14"),
        "{sg}"
    );

    // host list / show, service list, availability zone list.
    let hosts = b.openstack_json(None, &["appcontainer", "host", "list"]);
    let hostnames = column(&hosts, "hostname");
    assert_eq!(hostnames.len(), 1, "{hosts}");
    let host = b.openstack_json(None, &["appcontainer", "host", "show", &hostnames[0]]);
    assert_eq!(host["hostname"], hostnames[0].as_str());
    let services = b.openstack_json(None, &["appcontainer", "service", "list"]);
    let binaries = column(&services, "Binary");
    assert!(binaries.contains(&"berth-service".to_owned()), "{services}");
    let agent = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Binary"] == "berth-agent")
        .unwrap_or_else(|| panic!("an agent row: {services}"));
    assert_eq!(agent["Host"], hostnames[0].as_str(), "{services}");
    assert_eq!(agent["State"], "up", "{services}");
    let enable = b.openstack_fails(
        None,
        &[
            "appcontainer",
            "service",
            "enable",
            &hostnames[0],
            "berth-agent",
        ],
    );
    assert!(enable.contains("no switch"), "{enable}");
    let unknown = b.openstack_ok(
        None,
        &[
            "appcontainer",
            "service",
            "delete",
            "nowhere",
            "berth-agent",
        ],
    );
    assert!(unknown.contains("could not be found"), "{unknown}");
    let zones = b.openstack_json(None, &["appcontainer", "availability", "zone", "list"]);
    assert!(!zones.as_array().unwrap().is_empty(), "{zones}");

    // images: list and show what the instance holds; delete a tag; pull; search.
    let (repo, tag) = IMAGE.split_once(':').unwrap();
    let images = b.openstack_json(None, &["appcontainer", "image", "list"]);
    let ours = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["repo"] == repo && i["tag"] == tag)
        .unwrap_or_else(|| panic!("{IMAGE} in {images}"))
        .clone();
    let image_uuid = ours["uuid"].as_str().unwrap().to_owned();
    let image = b.openstack_json(None, &["appcontainer", "image", "show", &image_uuid]);
    assert_eq!(image["repo"], repo);
    assert_eq!(image["host"], hostnames[0].as_str());
    // A tag only this test uses, on the engine the instance runs containers with.
    let doomed = format!("berth-test/zunclient-{}:delete-me", &uuid[..8]);
    assert!(Command::new("docker")
        .args(["tag", IMAGE, &doomed])
        .status()
        .unwrap()
        .success());
    let images = b.openstack_json(None, &["appcontainer", "image", "list"]);
    let doomed_row = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            format!(
                "{}:{}",
                i["repo"].as_str().unwrap(),
                i["tag"].as_str().unwrap()
            ) == doomed
        })
        .unwrap_or_else(|| panic!("{doomed} in {images}"))
        .clone();
    let deleted = b.openstack_ok(
        None,
        &[
            "appcontainer",
            "image",
            "delete",
            doomed_row["uuid"].as_str().unwrap(),
        ],
    );
    assert!(deleted.contains("accepted"), "{deleted}");
    assert!(
        docker_lines(&["images", "-q", &doomed]).is_empty(),
        "{doomed} is still on the engine"
    );
    let pulled = b.openstack_json(
        None,
        &[
            "appcontainer",
            "image",
            "pull",
            "berth-test/not-in-any-registry:1",
            &hostnames[0],
        ],
    );
    assert_eq!(pulled["repo"], "berth-test/not-in-any-registry", "{pulled}");
    assert_eq!(pulled["host"], hostnames[0].as_str());
    let bad_host = b.openstack_fails(
        None,
        &["appcontainer", "image", "pull", IMAGE, "no-such-host"],
    );
    assert!(
        bad_host.contains("not one of your project's instances"),
        "{bad_host}"
    );
    let search = b.openstack_fails(None, &["appcontainer", "image", "search", "busybox"]);
    assert!(search.contains("not available"), "{search}");

    // registries: create, list, show, update, delete; the password is never shown.
    let reg = b.openstack_json(
        None,
        &[
            "appcontainer",
            "registry",
            "create",
            "--name",
            "myreg",
            "--domain",
            "registry.example.com:5000",
            "--username",
            "me",
            "--password",
            "s3cret-value",
        ],
    );
    assert_eq!(reg["name"], "myreg", "{reg}");
    assert_eq!(reg["password"], "***");
    let reg_uuid = reg["uuid"].as_str().unwrap().to_owned();
    let regs = b.openstack_json(None, &["appcontainer", "registry", "list"]);
    assert_eq!(column(&regs, "name"), ["myreg"], "{regs}");
    assert!(!regs.to_string().contains("s3cret"), "{regs}");
    let shown_reg = b.openstack_json(None, &["appcontainer", "registry", "show", "myreg"]);
    assert_eq!(shown_reg["uuid"], reg_uuid.as_str());
    let updated = b.openstack_json(
        None,
        &[
            "appcontainer",
            "registry",
            "update",
            "--username",
            "you",
            "myreg",
        ],
    );
    assert_eq!(updated["username"], "you", "{updated}");
    // Another project sees none of it: its own (empty) lists, 404 on ours.
    let olive = b.project_user("other", "olive", "member");
    let olive_token = b.token_as(&olive);
    let as_olive = |method: reqwest::Method, path: &str| -> (u16, Value) {
        let resp = support::http()
            .request(method, format!("{}/v1{path}", b.url))
            .header("X-Auth-Token", &olive_token)
            .header("OpenStack-API-Version", "container 1.40")
            .header("Content-Type", "application/json")
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    };
    for (method, path) in [
        (reqwest::Method::GET, format!("/registries/{reg_uuid}")),
        (reqwest::Method::GET, "/registries/myreg".to_owned()),
        (reqwest::Method::DELETE, format!("/registries/{reg_uuid}")),
        (
            reqwest::Method::GET,
            format!("/containers/{uuid}/network_list"),
        ),
        (
            reqwest::Method::POST,
            format!("/containers/{uuid}/network_attach?network=x"),
        ),
        (
            reqwest::Method::POST,
            format!("/containers/{uuid}/network_detach?network=berth"),
        ),
        (
            reqwest::Method::GET,
            format!("/containers/{uuid}/container_actions/{request_id}"),
        ),
    ] {
        let (status, body) = as_olive(method.clone(), &path);
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, theirs) = as_olive(reqwest::Method::GET, "/registries");
    assert_eq!(
        (status, &theirs["registries"]),
        (200, &json!([])),
        "{theirs}"
    );
    b.openstack_ok(None, &["appcontainer", "registry", "delete", &reg_uuid]);
    let gone = b.openstack_fails(None, &["appcontainer", "registry", "show", &reg_uuid]);
    assert!(gone.contains("could not be found"), "{gone}");

    // quotas and quota classes.
    let project = shown["project_id"].as_str().unwrap().to_owned();
    let quota = b.openstack_json(None, &["appcontainer", "quota", "get", &project]);
    assert!(quota["containers"].is_number(), "{quota}");
    let updated = b.openstack_json(
        None,
        &[
            "appcontainer",
            "quota",
            "update",
            "--containers",
            "17",
            &project,
        ],
    );
    assert_eq!(updated["containers"], 17, "{updated}");
    let defaults = b.openstack_json(None, &["appcontainer", "quota", "default", &project]);
    assert!(defaults["containers"].is_number(), "{defaults}");
    b.openstack_ok(None, &["appcontainer", "quota", "delete", &project]);
    let class = b.openstack_json(None, &["appcontainer", "quota", "class", "get", "default"]);
    assert!(class["containers"].is_number(), "{class}");
    let class = b.openstack_json(
        None,
        &[
            "appcontainer",
            "quota",
            "class",
            "update",
            "--memory",
            "60000",
            "default",
        ],
    );
    assert_eq!(class["memory"], 60000, "{class}");

    // capsule create / list / show / delete (python-zunclient reads the file).
    let dir = tempfile::tempdir().unwrap();
    let template = dir.path().join("capsule.yaml");
    std::fs::write(
        &template,
        serde_json::to_string(&json!({
            "kind": "capsule",
            "metadata": {"name": "zcap", "labels": {"suite": "zunclient"}},
            "spec": {"containers": [{"image": IMAGE, "command": ["sleep", "300"]}]},
        }))
        .unwrap(),
    )
    .unwrap();
    let capsule = b.openstack_json(
        None,
        &["capsule", "create", "--file", template.to_str().unwrap()],
    );
    assert_eq!(capsule["name"], "zcap", "{capsule}");
    let running = wait_for_opt(Duration::from_secs(120), || {
        let v = b.openstack_json(None, &["capsule", "show", "zcap"]);
        (v["status"] == "Running").then_some(v)
    });
    assert!(
        running.is_some(),
        "capsule zcap never ran:\n{}",
        log_tail(&b.log(), 60)
    );
    let capsules = b.openstack_json(None, &["capsule", "list"]);
    assert_eq!(column(&capsules, "name"), ["zcap"], "{capsules}");
    b.openstack_ok(None, &["capsule", "delete", "zcap"]);
    let gone = wait_for_opt(Duration::from_secs(60), || {
        let list = b.openstack_json(None, &["capsule", "list"]);
        list.as_array().unwrap().is_empty().then_some(())
    });
    assert!(gone.is_some(), "capsule zcap was never deleted");

    // create (not started) and delete, then delete --stop of the running one.
    let created = b.openstack_json(
        None,
        &[
            "appcontainer",
            "create",
            "--name",
            "zc2",
            "--label",
            "berth.test=zunclient",
            IMAGE,
            "sleep",
            "60",
        ],
    );
    b.appcontainer_settled(None, "zc2", &["Created"], Duration::from_secs(90));
    b.openstack_ok(
        None,
        &["appcontainer", "delete", created["uuid"].as_str().unwrap()],
    );
    b.openstack_ok(None, &["appcontainer", "delete", "--stop", "zc1"]);
    let gone = wait_for_opt(Duration::from_secs(60), || {
        let list = b.openstack_json(None, &["appcontainer", "list"]);
        list.as_array().unwrap().is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the containers were never deleted:\n{}",
        log_tail(&b.log(), 60)
    );
}

/// Zun's microversion rules, discovery documents and route aliases over HTTP.
#[test]
fn microversions_discovery_and_route_aliases_follow_zun() {
    let b = Berth::start();
    let token = b.token();
    let http = support::http();
    let send = |method: reqwest::Method, path: &str, version: Option<&str>, body: Option<Value>| {
        let mut rb = http
            .request(method, format!("{}{path}", b.url))
            .header("X-Auth-Token", &token);
        if let Some(v) = version {
            rb = rb.header("OpenStack-API-Version", v);
        }
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        let resp = rb.send().unwrap();
        let status = resp.status().as_u16();
        let version = resp
            .headers()
            .get("OpenStack-API-Version")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().unwrap_or_default();
        (
            status,
            version,
            serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
        )
    };

    // No header is 1.1; `latest` is 1.40; outside the range is 406 in Zun's format.
    let (status, version, _) = send(reqwest::Method::GET, "/v1/containers", None, None);
    assert_eq!((status, version.as_deref()), (200, Some("container 1.1")));
    let (_, version, _) = send(
        reqwest::Method::GET,
        "/v1/containers",
        Some("container latest"),
        None,
    );
    assert_eq!(version.as_deref(), Some("container 1.40"));
    for bad in [
        "container 1.41",
        "container 2.0",
        "container 1.0",
        "compute 1.2",
    ] {
        let (status, _, body) = send(reqwest::Method::GET, "/v1/containers", Some(bad), None);
        assert_eq!(status, 406, "{bad}: {body}");
        assert_eq!(body["errors"][0]["status"], 406, "{body}");
    }
    // A route newer than the version: 406 (hosts need 1.4, registries 1.30).
    let (status, _, body) = send(
        reqwest::Method::GET,
        "/v1/registries",
        Some("container 1.29"),
        None,
    );
    assert_eq!(status, 406, "{body}");
    let (status, _, _) = send(
        reqwest::Method::GET,
        "/v1/registries",
        Some("container 1.30"),
        None,
    );
    assert_eq!(status, 200);

    // A parameter newer than the version: 400, and nothing is created.
    for (field, value, since) in [
        ("hostname", json!("h1"), "1.9"),
        ("auto_remove", json!(true), "1.3"),
        ("exposed_ports", json!({"80/tcp": {}}), "1.24"),
        ("entrypoint", json!(["sh"]), "1.40"),
    ] {
        let mut body = json!({"image": IMAGE, "name": "too-new"});
        body[field] = value;
        let (status, _, resp) = send(
            reqwest::Method::POST,
            "/v1/containers",
            Some("container 1.2"),
            Some(body),
        );
        assert_eq!(status, 400, "{field}: {resp}");
        let detail = resp["errors"][0]["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("{field} is only supported from version {since}")),
            "{field}: {resp}"
        );
    }
    let (_, _, list) = send(reqwest::Method::GET, "/v1/containers", None, None);
    assert_eq!(list["containers"], json!([]), "{list}");
    // Delete's force needs 1.7 and stop 1.12 (the container need not exist: the
    // parameters are checked first).
    let (status, _, body) = send(
        reqwest::Method::DELETE,
        "/v1/containers/x?stop=True",
        Some("container 1.11"),
        None,
    );
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = send(
        reqwest::Method::DELETE,
        "/v1/containers/x?force=True",
        Some("container 1.6"),
        None,
    );
    assert_eq!(status, 400, "{body}");

    // Discovery: `/` and `/v1` name every resource Berth serves.
    let (status, _, root) = send(reqwest::Method::GET, "/", None, None);
    assert_eq!(status, 200);
    assert_eq!(root["versions"][0]["max_version"], "1.40");
    assert_eq!(root["versions"][0]["min_version"], "1.1");
    assert_eq!(root["versions"][0]["status"], "CURRENT");
    let (status, _, v1) = send(reqwest::Method::GET, "/v1/", None, None);
    assert_eq!(status, 200, "{v1}");
    for res in [
        "containers",
        "capsules",
        "images",
        "hosts",
        "services",
        "availability_zones",
        "quotas",
        "registries",
    ] {
        assert_eq!(v1[res][0]["rel"], "self", "{res} in {v1}");
    }

    // Un-prefixed routes and trailing slashes are the same routes.
    for path in [
        "/containers",
        "/containers/",
        "/v1/containers/",
        "/availability_zones",
    ] {
        let (status, version, body) =
            send(reqwest::Method::GET, path, Some("container 1.40"), None);
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(version.as_deref(), Some("container 1.40"), "{path}");
    }
    let (status, _, body) = send(
        reqwest::Method::GET,
        "/containers/none-such",
        Some("container 1.40"),
        None,
    );
    assert_eq!(status, 404, "{body}");
    assert!(body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .starts_with("container."));

    // network_attach is an honest 501 in Zun's format; network_list needs 1.13.
    let (status, _, body) = send(
        reqwest::Method::GET,
        "/v1/containers/x/network_list",
        Some("container 1.12"),
        None,
    );
    assert_eq!(status, 406, "{body}");
    let (status, _, body) = send(
        reqwest::Method::POST,
        "/v1/networks",
        Some("container 1.40"),
        Some(json!({"neutron_net_id": "n", "name": "n"})),
    );
    assert_eq!(status, 501, "{body}");
    assert_eq!(
        body["errors"][0]["code"], "container.not-implemented",
        "{body}"
    );
}
