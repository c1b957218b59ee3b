//! The real OpenStack command line clients from PyPI (python-openstackclient with
//! python-zunclient's `appcontainer` commands) against `berth up` and the clouds.yaml
//! it writes. `scripts/test` installs them (scripts/python-clients) and exports
//! BERTH_TEST_OPENSTACK, the venv's `openstack` binary.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::{docker_inspect, wait_for_opt, Berth, ProjectUser, IMAGE};

fn openstack_path() -> PathBuf {
    let path = std::env::var("BERTH_TEST_OPENSTACK").unwrap_or_else(|_| {
        panic!(
            "BERTH_TEST_OPENSTACK is not set: run the tests with scripts/test, or set it to the \
             `openstack` binary that scripts/python-clients prints"
        )
    });
    let path = PathBuf::from(path);
    assert!(
        path.exists(),
        "BERTH_TEST_OPENSTACK={} does not exist: run scripts/python-clients",
        path.display()
    );
    path
}

/// Who runs `openstack`: the admin through clouds.yaml, or a project user through OS_*.
enum As<'a> {
    Admin,
    User(&'a ProjectUser),
}

fn openstack(b: &Berth, who: As<'_>, args: &[&str]) -> Output {
    let mut cmd = Command::new(openstack_path());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // The clients keep caches under HOME; keep them in this deployment's directory.
        .env("HOME", b.data.path())
        .env("PYTHONWARNINGS", "ignore");
    match who {
        As::Admin => {
            cmd.env("OS_CLIENT_CONFIG_FILE", b.data.path().join("clouds.yaml"))
                .env("OS_CLOUD", "berth");
        }
        As::User(user) => {
            for (k, v) in &user.env {
                cmd.env(k, v);
            }
        }
    }
    cmd.output().expect("openstack runs")
}

fn ok(b: &Berth, who: As<'_>, args: &[&str]) -> String {
    let out = openstack(b, who, args);
    assert!(
        out.status.success(),
        "openstack {args:?} failed ({}):\nstdout: {}\nstderr: {}\nberth log (tail):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&b.log())
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(b: &Berth, who: As<'_>, args: &[&str]) -> Value {
    // Before the first option: `appcontainer run/create` take everything after the
    // image as the container's command.
    let mut all = args.to_vec();
    let at = all
        .iter()
        .position(|a| a.starts_with('-'))
        .unwrap_or(all.len());
    all.splice(at..at, ["-f", "json"]);
    let out = ok(b, who, &all);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("openstack {args:?}: not JSON ({e}): {out}"))
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn column(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn openstack_identity_commands_work_against_berth_up() {
    let b = Berth::start();
    let project = json(
        &b,
        As::Admin,
        &[
            "project",
            "create",
            "--description",
            "tenant one",
            "tenant1",
        ],
    );
    assert_eq!(project["name"], "tenant1");
    assert_eq!(project["domain_id"], "default");
    let project_id = project["id"].as_str().unwrap().to_owned();
    let projects = json(&b, As::Admin, &["project", "list"]);
    assert!(
        column(&projects, "Name").contains(&"tenant1".to_owned()),
        "{projects}"
    );
    assert!(
        column(&projects, "Name").contains(&"admin".to_owned()),
        "{projects}"
    );

    let user = json(
        &b,
        As::Admin,
        &[
            "user",
            "create",
            "--password",
            "pw-t1",
            "--project",
            "tenant1",
            "tuser",
        ],
    );
    assert_eq!(user["name"], "tuser");
    assert_eq!(user["default_project_id"], project_id.as_str());
    let user_id = user["id"].as_str().unwrap().to_owned();
    let users = json(&b, As::Admin, &["user", "list"]);
    assert!(
        column(&users, "Name").contains(&"tuser".to_owned()),
        "{users}"
    );

    ok(
        &b,
        As::Admin,
        &[
            "role",
            "add",
            "--project",
            "tenant1",
            "--user",
            "tuser",
            "member",
        ],
    );
    let assignments = json(
        &b,
        As::Admin,
        &[
            "role",
            "assignment",
            "list",
            "--user",
            "tuser",
            "--project",
            "tenant1",
            "--names",
        ],
    );
    assert_eq!(column(&assignments, "Role"), ["member"], "{assignments}");
    assert_eq!(column(&assignments, "User"), ["tuser@Default"]);
    assert_eq!(column(&assignments, "Project"), ["tenant1@Default"]);
    let all = json(&b, As::Admin, &["role", "assignment", "list"]);
    assert!(column(&all, "User").contains(&user_id), "{all}");

    // The new user gets a token scoped to its project.
    let tuser = ProjectUser {
        project_id: project_id.clone(),
        user_id: user_id.clone(),
        env: vec![
            ("OS_AUTH_URL".into(), b.env("OS_AUTH_URL")),
            ("OS_USERNAME".into(), "tuser".into()),
            ("OS_PASSWORD".into(), "pw-t1".into()),
            ("OS_PROJECT_NAME".into(), "tenant1".into()),
            ("OS_USER_DOMAIN_NAME".into(), "Default".into()),
            ("OS_PROJECT_DOMAIN_NAME".into(), "Default".into()),
            ("OS_IDENTITY_API_VERSION".into(), "3".into()),
        ],
    };
    let token = json(&b, As::User(&tuser), &["token", "issue"]);
    assert_eq!(token["project_id"], project_id.as_str());
    assert_eq!(token["user_id"], user_id.as_str());
    assert!(token["id"].as_str().is_some_and(|t| !t.is_empty()));
    let admin_token = json(&b, As::Admin, &["token", "issue"]);
    assert!(admin_token["expires"].as_str().is_some(), "{admin_token}");

    let catalog = json(&b, As::Admin, &["catalog", "list"]);
    let mut types = column(&catalog, "Type");
    types.sort();
    assert_eq!(types, ["container", "identity"], "{catalog}");

    ok(
        &b,
        As::Admin,
        &[
            "role",
            "remove",
            "--project",
            "tenant1",
            "--user",
            "tuser",
            "member",
        ],
    );
    assert_eq!(
        json(
            &b,
            As::Admin,
            &["role", "assignment", "list", "--user", "tuser"]
        ),
        Value::Array(Vec::new())
    );
    let refused = openstack(&b, As::User(&tuser), &["token", "issue"]);
    assert!(!refused.status.success(), "no role, no token");

    ok(&b, As::Admin, &["user", "delete", "tuser"]);
    let users = json(&b, As::Admin, &["user", "list"]);
    assert!(
        !column(&users, "Name").contains(&"tuser".to_owned()),
        "{users}"
    );
    ok(&b, As::Admin, &["project", "delete", "tenant1"]);
    let projects = json(&b, As::Admin, &["project", "list"]);
    assert!(
        !column(&projects, "Name").contains(&"tenant1".to_owned()),
        "{projects}"
    );
}

/// Waits until the admin's `openstack appcontainer show` reports `status` with no task
/// running.
fn wait_status(b: &Berth, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    wait_for_opt(Duration::from_secs(90), || {
        let v = json(b, As::Admin, &["appcontainer", "show", id]);
        let done = v["status"] == status && v["task_state"].is_null();
        last = v.clone();
        done.then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "container {id} never reached {status}; last seen: {last}\nberth log:\n{}",
            tail(&b.log())
        )
    })
}

#[test]
fn openstack_appcontainer_commands_drive_a_container_through_its_lifecycle() {
    let b = Berth::start();
    let run = json(
        &b,
        As::Admin,
        &[
            "appcontainer",
            "run",
            "--name",
            "t1",
            "--label",
            "berth.test=openstack-clients",
            IMAGE,
            "sh",
            "-c",
            "echo hello; sleep 300",
        ],
    );
    assert_eq!(run["name"], "t1");
    let uuid = run["uuid"].as_str().unwrap().to_owned();
    let running = wait_status(&b, "t1", "Running");
    assert_eq!(running["uuid"], uuid.as_str());
    assert_eq!(running["image"], IMAGE);
    assert_eq!(
        docker_inspect(&uuid, "{{.State.Status}}").as_deref(),
        Some("running")
    );

    let list = json(&b, As::Admin, &["appcontainer", "list"]);
    assert_eq!(column(&list, "name"), ["t1"], "{list}");
    assert_eq!(column(&list, "status"), ["Running"]);

    let logs = wait_for_opt(Duration::from_secs(30), || {
        let logs = ok(&b, As::Admin, &["appcontainer", "logs", "t1"]);
        logs.contains("hello").then_some(logs)
    });
    assert!(logs.is_some(), "appcontainer logs never showed hello");

    ok(&b, As::Admin, &["appcontainer", "stop", "t1"]);
    wait_status(&b, "t1", "Stopped");
    assert_eq!(
        docker_inspect(&uuid, "{{.State.Status}}").as_deref(),
        Some("exited")
    );
    ok(&b, As::Admin, &["appcontainer", "start", "t1"]);
    wait_status(&b, &uuid, "Running");
    assert_eq!(
        docker_inspect(&uuid, "{{.State.Status}}").as_deref(),
        Some("running")
    );

    // create makes a container without starting it.
    let created = json(
        &b,
        As::Admin,
        &[
            "appcontainer",
            "create",
            "--name",
            "t2",
            "--label",
            "berth.test=openstack-clients",
            IMAGE,
            "sleep",
            "100",
        ],
    );
    let uuid2 = created["uuid"].as_str().unwrap().to_owned();
    wait_status(&b, "t2", "Created");
    assert_eq!(
        docker_inspect(&uuid2, "{{.State.Status}}").as_deref(),
        Some("created")
    );

    ok(&b, As::Admin, &["appcontainer", "delete", "t2"]);
    ok(&b, As::Admin, &["appcontainer", "delete", "--stop", "t1"]);
    let gone = wait_for_opt(Duration::from_secs(60), || {
        let list = json(&b, As::Admin, &["appcontainer", "list"]);
        list.as_array().unwrap().is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the containers were never deleted:\n{}",
        tail(&b.log())
    );
    assert!(!openstack(&b, As::Admin, &["appcontainer", "show", "t1"])
        .status
        .success());
    assert_eq!(docker_inspect(&uuid, "{{.State.Status}}"), None);
    assert_eq!(docker_inspect(&uuid2, "{{.State.Status}}"), None);
}

#[test]
fn openstack_appcontainer_list_never_shows_another_projects_containers() {
    let b = Berth::start();
    let secret = json(
        &b,
        As::Admin,
        &[
            "appcontainer",
            "run",
            "--name",
            "secret",
            "--label",
            "berth.test=openstack-clients",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    let secret_id = secret["uuid"].as_str().unwrap().to_owned();
    wait_status(&b, "secret", "Running");

    let other = b.project_user("other", "olive", "member");
    let theirs = json(&b, As::User(&other), &["appcontainer", "list"]);
    assert_eq!(
        theirs,
        Value::Array(Vec::new()),
        "another project's list: {theirs}"
    );
    for id in ["secret", secret_id.as_str()] {
        let out = openstack(&b, As::User(&other), &["appcontainer", "show", id]);
        assert!(!out.status.success(), "olive saw {id}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("404") || err.contains("not found") || err.contains("Not Found"),
            "{err}"
        );
    }
    // Olive's own container (whatever becomes of it on an instance) is hers alone.
    let mine = json(
        &b,
        As::User(&other),
        &[
            "appcontainer",
            "create",
            "--name",
            "mine",
            "--label",
            "berth.test=openstack-clients",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    assert_eq!(mine["project_id"], other.project_id.as_str());
    let theirs = json(&b, As::User(&other), &["appcontainer", "list"]);
    assert_eq!(column(&theirs, "name"), ["mine"], "{theirs}");
    let admins = json(&b, As::Admin, &["appcontainer", "list"]);
    assert_eq!(column(&admins, "name"), ["secret"], "{admins}");
    // The admin still has it running, untouched.
    assert_eq!(
        docker_inspect(&secret_id, "{{.State.Status}}").as_deref(),
        Some("running")
    );
    let _ = openstack(
        &b,
        As::User(&other),
        &["appcontainer", "delete", "--force", "mine"],
    );
    ok(
        &b,
        As::Admin,
        &["appcontainer", "delete", "--force", "secret"],
    );
}
