//! Container resource usage through both front doors: the stock `docker stats` CLI
//! against the Docker endpoint, and `openstack appcontainer stats` (python-zunclient)
//! against the Zun API. The figures are the engine's own, read by the container's
//! agent and streamed through relay and service; each test starts its own `berth up`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::docker::DockerCli;
use support::{docker_inspect, http, wait_for_opt, Berth, ProjectUser, IMAGE};

/// A member of `project` (made on first use) and its docker CLI.
fn tenant(berth: &Berth, project: &str) -> (ProjectUser, DockerCli) {
    let user = berth.project_user(project, &format!("{project}-member"), "member");
    let token = berth.token_as(&user);
    let docker = DockerCli::new(berth, &token);
    (user, docker)
}

/// `docker run -d ARGS`; returns the printed id.
fn run_detached(docker: &DockerCli, args: &[&str]) -> String {
    let mut all = vec!["run", "-d", "--label", "berth.test=docker-stats"];
    all.extend(args);
    let out = docker.ok(&all);
    let id = out.trim().to_owned();
    assert_eq!(id.len(), 64, "docker run printed no id: {out:?}");
    id
}

/// `docker stats --no-stream --format '{{json .}}' ID`, parsed.
fn stats_row(docker: &DockerCli, id: &str) -> Value {
    let out = docker.ok(&["stats", "--no-stream", "--format", "{{json .}}", id]);
    let line = out
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("docker stats printed nothing"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The Docker endpoint's base URL (`http://127.0.0.1:PORT`).
fn docker_url(docker: &DockerCli) -> String {
    docker.host.replacen("tcp://", "http://", 1)
}

#[test]
fn docker_stats_shows_the_engines_figures_for_a_running_container() {
    let berth = Berth::start();
    let (_user, docker) = tenant(&berth, "statsteam");
    let id = run_detached(
        &docker,
        &["--name", "busy", "-m", "64m", IMAGE, "sleep", "300"],
    );

    // --no-stream: one reading. The memory limit is the container's own, as the
    // engine on its instance enforces it.
    let row = stats_row(&docker, &id);
    assert_eq!(row["Name"], "busy", "{row}");
    assert!(id.starts_with(row["ID"].as_str().unwrap()), "{row}");
    let mem = row["MemUsage"].as_str().unwrap();
    assert!(
        mem.ends_with("/ 64MiB"),
        "memory limit not the container's: {row}"
    );
    let pids: u64 = row["PIDs"].as_str().unwrap().parse().unwrap();
    assert!(pids >= 1, "the container's sleep is not counted: {row}");
    assert!(row["CPUPerc"].as_str().unwrap().ends_with('%'), "{row}");

    // The raw API: one document with the engine's structure and the endpoint's names.
    let url = format!("{}/containers/busy/stats?stream=false", docker_url(&docker));
    let r = http()
        .get(&url)
        .header("X-Auth-Token", &docker.token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let doc: Value = r.json().unwrap();
    assert_eq!(doc["id"], id.as_str(), "{doc}");
    assert_eq!(doc["name"], "/busy");
    assert_eq!(doc["memory_stats"]["limit"], 64 * 1024 * 1024, "{doc}");
    assert!(
        doc["cpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Bad input: a clear 400 in Docker's format.
    let r = http()
        .get(format!(
            "{}/containers/busy/stats?stream=true&one-shot=true",
            docker_url(&docker)
        ))
        .header("X-Auth-Token", &docker.token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let err: Value = r.json().unwrap();
    assert!(
        err["message"].as_str().unwrap().contains("one-shot"),
        "{err}"
    );

    // Streaming: `docker stats` keeps printing readings until it is stopped.
    let follow = docker.spawn(&["stats", "--format", "{{.Name}} {{.MemUsage}}", &id]);
    let readings = wait_for_opt(Duration::from_secs(60), || {
        let seen = follow.stdout().matches("busy ").count();
        (seen >= 3).then_some(seen)
    });
    assert!(
        readings.is_some(),
        "docker stats printed fewer than three readings: {}\n{}",
        follow.stdout(),
        follow.stderr()
    );
    drop(follow);

    // A stopped container: one empty reading, as moby gives, not an error.
    docker.ok(&["stop", "-t", "1", &id]);
    let r = http()
        .get(format!(
            "{}/containers/{id}/stats?stream=false",
            docker_url(&docker)
        ))
        .header("X-Auth-Token", &docker.token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let doc: Value = r.json().unwrap();
    assert_eq!(doc["name"], "/busy");
    assert!(doc["memory_stats"].as_object().unwrap().is_empty(), "{doc}");
    docker.ok(&["rm", &id]);
}

#[test]
fn docker_stats_never_shows_another_projects_container() {
    let berth = Berth::start();
    let (_a, alice) = tenant(&berth, "statsa");
    let (_b, bob) = tenant(&berth, "statsb");
    let id = run_detached(&alice, &["--name", "mine", IMAGE, "sleep", "300"]);
    let refused = bob.fails(&["stats", "--no-stream", &id]);
    assert!(
        refused.stderr.contains("No such container"),
        "another project's container is visible: {refused}"
    );
    let r = http()
        .get(format!(
            "{}/containers/{id}/stats?stream=false",
            docker_url(&bob)
        ))
        .header("X-Auth-Token", &bob.token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    alice.ok(&["rm", "-f", &id]);
}

// ---------------------------------------------------------------------------------
// openstack appcontainer stats

#[test]
fn openstack_appcontainer_stats_shows_zuns_summary_of_a_running_container() {
    let b = Berth::start();
    let run = b.openstack_json(
        None,
        &[
            "appcontainer",
            "run",
            "--name",
            "s1",
            "--memory",
            "96",
            "--label",
            "berth.test=docker-stats",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    let uuid = run["uuid"].as_str().unwrap().to_owned();
    b.appcontainer_settled(None, "s1", &["Running"], Duration::from_secs(90));

    let stats = b.openstack_json(None, &["appcontainer", "stats", "s1"]);
    assert_eq!(stats["CONTAINER"], "s1", "{stats}");
    assert_eq!(stats["MEM LIMIT(MiB)"], 96.0, "{stats}");
    for key in ["CPU %", "MEM USAGE(MiB)", "MEM %"] {
        assert!(
            stats[key].as_f64().is_some(),
            "{key} is not a number: {stats}"
        );
    }
    for key in ["BLOCK I/O(B)", "NET I/O(B)"] {
        let pair = stats[key].as_str().unwrap_or_default();
        let numbers: Vec<&str> = pair.split('/').collect();
        assert!(
            numbers.len() == 2 && numbers.iter().all(|n| n.parse::<u64>().is_ok()),
            "{key} is not read/write bytes: {stats}"
        );
    }

    // Zun allows stats only while Running: a stopped container is a 409.
    let stopped = b.openstack(None, &["appcontainer", "stop", "s1"]);
    assert!(stopped.status.success());
    b.appcontainer_settled(None, "s1", &["Stopped"], Duration::from_secs(60));
    assert_eq!(
        docker_inspect(&uuid, "{{.State.Status}}").as_deref(),
        Some("exited")
    );
    let refused = b.openstack(None, &["appcontainer", "stats", "s1"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("Cannot stats container") && stderr.contains("Stopped"),
        "{stderr}"
    );
    let deleted = b.openstack(None, &["appcontainer", "delete", "s1"]);
    assert!(deleted.status.success());
}
