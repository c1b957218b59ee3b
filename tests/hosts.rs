//! The hosts API (`GET /v1/hosts`, admins only, microversion 1.4 and later) and a
//! project's own instances (`GET /v1/instances`), through HTTP and `osc host-list`,
//! `host-show` and `instance-list`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{http, wait_for_opt, Berth, IMAGE};

fn get(berth: &Berth, token: &str, path: &str, version: &str) -> (u16, Value) {
    let r = http()
        .get(format!("{}/v1{path}", berth.url))
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", format!("container {version}"))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn admins_see_every_host_with_its_owner_and_agent_and_members_see_only_their_projects_instances() {
    let berth = Berth::start();
    let alice = berth.project_user("hosts-alpha", "alice", "member");
    let reader = berth.project_user("hosts-alpha", "rita", "reader");
    let bob = berth.project_user("hosts-beta", "bob", "member");

    let created = berth.osc_json_as(
        &alice,
        &[
            "container-create",
            "--daemon",
            "--image",
            IMAGE,
            "--cmd",
            "sleep 600",
            "--cpu",
            "0.5",
            "--memory",
            "64",
            "--label",
            "berth.test=hosts",
        ],
    );
    let id = created["uuid"].as_str().unwrap().to_owned();
    wait_for_opt(Duration::from_secs(120), || {
        let v = berth.osc_json_as(&alice, &["container-show", &id]);
        (v["status"] == "Running").then_some(())
    })
    .unwrap_or_else(|| panic!("the container never ran\nberth log:\n{}", berth.log()));

    // A member sees the project's one instance, with its usage; so does a reader.
    let mine = berth.osc_json_as(&alice, &["instance-list"]);
    let mine = mine.as_array().unwrap().clone();
    assert_eq!(mine.len(), 1, "{mine:?}");
    let instance = mine[0]["uuid"].as_str().unwrap().to_owned();
    assert_eq!(mine[0]["project_id"], alice.project_id.as_str());
    assert_eq!(mine[0]["provider"], "docker");
    assert_eq!(mine[0]["status"], "active");
    assert_eq!(mine[0]["agent_connected"], true);
    assert_eq!(mine[0]["total_containers"], 1);
    assert_eq!(mine[0]["cpu_used"], 0.5);
    assert_eq!(mine[0]["mem_used"], 64);
    let as_reader = berth.osc_json_as(&reader, &["instance-list"]);
    assert_eq!(as_reader.as_array().unwrap().len(), 1);
    assert_eq!(as_reader[0]["uuid"], instance.as_str());
    // Another project sees none of them: it has no instance of its own.
    let theirs = berth.osc_json_as(&bob, &["instance-list"]);
    assert_eq!(theirs, Value::Array(vec![]), "beta sees alpha's instance");
    let table = berth.osc_as(&alice, &["instance-list", "-c", "uuid", "-c", "status"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&instance) && table.contains("active"),
        "{table}"
    );

    // The hosts API is for admins only: a member (or reader) is refused with 403.
    for user in [&alice, &reader] {
        let (status, body) = get(&berth, &berth.token_as(user), "/hosts", "1.4");
        assert_eq!(status, 403, "{body}");
        let (status, _) = get(
            &berth,
            &berth.token_as(user),
            &format!("/hosts/{instance}"),
            "1.4",
        );
        assert_eq!(status, 403);
        let out = berth.osc_as(user, &["host-list"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("403"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let admin = berth.token();
    // Before microversion 1.4 the route does not exist for the request (406, as Zun).
    let (status, body) = get(&berth, &admin, "/hosts", "1.3");
    assert_eq!(status, 406, "{body}");

    let (status, body) = get(&berth, &admin, "/hosts", "1.40");
    assert_eq!(status, 200, "{body}");
    assert!(body["next"].is_null());
    let hosts = body["hosts"].as_array().unwrap();
    let by_id = |uuid: &str| -> Value {
        hosts
            .iter()
            .find(|h| h["uuid"] == uuid)
            .unwrap_or_else(|| panic!("{uuid} is listed: {body}"))
            .clone()
    };
    let tenant = by_id(&instance);
    let host = by_id(&berth.instance);
    for field in [
        "uuid",
        "links",
        "hostname",
        "mem_total",
        "mem_used",
        "cpus",
        "cpu_used",
        "disk_total",
        "disk_used",
        "total_containers",
        "architecture",
        "os_type",
        "os",
        "kernel_version",
        "labels",
        "runtimes",
        "disk_quota_supported",
        "enable_cpu_pinning",
        "project_id",
        "provider",
        "status",
        "status_reason",
        "availability_zone",
        "agent_connected",
        "agent_seen_at",
        "address",
    ] {
        assert!(
            tenant.get(field).is_some(),
            "host view lacks {field}: {tenant}"
        );
    }
    assert_eq!(tenant["project_id"], alice.project_id.as_str());
    assert_eq!(tenant["provider"], "docker");
    assert_eq!(tenant["agent_connected"], true);
    assert_eq!(tenant["total_containers"], 1);
    assert_eq!(tenant["mem_used"], 64);
    assert_eq!(host["provider"], "static");
    assert_eq!(host["status"], "active");
    assert_ne!(host["project_id"], alice.project_id.as_str());
    // enable_cpu_pinning is a 1.29 field.
    let (_, old) = get(&berth, &admin, "/hosts", "1.28");
    assert!(old["hosts"][0].get("enable_cpu_pinning").is_none(), "{old}");

    // Show by uuid and by hostname.
    let (status, shown) = get(&berth, &admin, &format!("/hosts/{instance}"), "1.40");
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["uuid"], instance.as_str());
    let hostname = shown["hostname"].as_str().unwrap().to_owned();
    let (status, by_name) = get(&berth, &admin, &format!("/hosts/{hostname}"), "1.40");
    assert_eq!(status, 200, "{by_name}");
    assert_eq!(by_name["uuid"], instance.as_str());
    let (status, missing) = get(&berth, &admin, "/hosts/no-such-host", "1.40");
    assert_eq!(status, 404, "{missing}");

    // The same through osc.
    let listed = berth.osc_json(&["host-list"]);
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["uuid"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&instance.as_str()), "{listed}");
    assert!(ids.contains(&berth.instance.as_str()), "{listed}");
    let shown = berth.osc_json(&["host-show", &hostname]);
    assert_eq!(shown["uuid"], instance.as_str());
    assert_eq!(shown["project_id"], alice.project_id.as_str());
    let value = berth.osc_ok(&["host-show", &instance, "-f", "value", "-c", "provider"]);
    assert_eq!(value.trim(), "docker");
    let table = berth.osc_ok(&["host-list"]);
    assert!(
        table.contains("agent_connected") && table.contains(&instance),
        "{table}"
    );
}
