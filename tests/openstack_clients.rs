//! The real OpenStack command line clients from PyPI (python-openstackclient with
//! python-zunclient's `appcontainer` commands) against `berth up` and the clouds.yaml
//! it writes. `scripts/test` installs them (scripts/python-clients) and exports
//! BERTH_TEST_OPENSTACK, the venv's `openstack` binary.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::openstack::column;
use support::{docker_inspect, log_tail, wait_for_opt, Berth, ProjectUser, IMAGE};

#[test]
fn openstack_identity_commands_work_against_berth_up() {
    let b = Berth::start();
    let project = b.openstack_json(
        None,
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
    let projects = b.openstack_json(None, &["project", "list"]);
    assert!(
        column(&projects, "Name").contains(&"tenant1".to_owned()),
        "{projects}"
    );
    assert!(
        column(&projects, "Name").contains(&"admin".to_owned()),
        "{projects}"
    );

    let user = b.openstack_json(
        None,
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
    let users = b.openstack_json(None, &["user", "list"]);
    assert!(
        column(&users, "Name").contains(&"tuser".to_owned()),
        "{users}"
    );

    b.openstack_ok(
        None,
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
    let assignments = b.openstack_json(
        None,
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
    let all = b.openstack_json(None, &["role", "assignment", "list"]);
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
    let token = b.openstack_json(Some(&tuser), &["token", "issue"]);
    assert_eq!(token["project_id"], project_id.as_str());
    assert_eq!(token["user_id"], user_id.as_str());
    assert!(token["id"].as_str().is_some_and(|t| !t.is_empty()));
    let admin_token = b.openstack_json(None, &["token", "issue"]);
    assert!(admin_token["expires"].as_str().is_some(), "{admin_token}");

    let catalog = b.openstack_json(None, &["catalog", "list"]);
    let mut types = column(&catalog, "Type");
    types.sort();
    assert_eq!(types, ["container", "identity"], "{catalog}");

    b.openstack_ok(
        None,
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
        b.openstack_json(None, &["role", "assignment", "list", "--user", "tuser"]),
        Value::Array(Vec::new())
    );
    let refused = b.openstack(Some(&tuser), &["token", "issue"]);
    assert!(!refused.status.success(), "no role, no token");

    b.openstack_ok(None, &["user", "delete", "tuser"]);
    let users = b.openstack_json(None, &["user", "list"]);
    assert!(
        !column(&users, "Name").contains(&"tuser".to_owned()),
        "{users}"
    );
    b.openstack_ok(None, &["project", "delete", "tenant1"]);
    let projects = b.openstack_json(None, &["project", "list"]);
    assert!(
        !column(&projects, "Name").contains(&"tenant1".to_owned()),
        "{projects}"
    );
}

#[test]
fn openstack_appcontainer_commands_drive_a_container_through_its_lifecycle() {
    let b = Berth::start();
    let run = b.openstack_json(
        None,
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
    let running = b.appcontainer_settled(None, "t1", &["Running"], Duration::from_secs(90));
    assert_eq!(running["uuid"], uuid.as_str());
    assert_eq!(running["image"], IMAGE);
    assert_eq!(
        docker_inspect(&uuid, "{{.State.Status}}").as_deref(),
        Some("running")
    );

    let list = b.openstack_json(None, &["appcontainer", "list"]);
    assert_eq!(column(&list, "name"), ["t1"], "{list}");
    assert_eq!(column(&list, "status"), ["Running"]);

    let logs = wait_for_opt(Duration::from_secs(30), || {
        let logs = b.openstack_ok(None, &["appcontainer", "logs", "t1"]);
        logs.contains("hello").then_some(logs)
    });
    assert!(logs.is_some(), "appcontainer logs never showed hello");

    b.openstack_ok(None, &["appcontainer", "stop", "t1"]);
    b.appcontainer_settled(None, "t1", &["Stopped"], Duration::from_secs(90));
    assert_eq!(
        docker_inspect(&uuid, "{{.State.Status}}").as_deref(),
        Some("exited")
    );
    b.openstack_ok(None, &["appcontainer", "start", "t1"]);
    b.appcontainer_settled(None, &uuid, &["Running"], Duration::from_secs(90));
    assert_eq!(
        docker_inspect(&uuid, "{{.State.Status}}").as_deref(),
        Some("running")
    );

    // create makes a container without starting it.
    let created = b.openstack_json(
        None,
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
    b.appcontainer_settled(None, "t2", &["Created"], Duration::from_secs(90));
    assert_eq!(
        docker_inspect(&uuid2, "{{.State.Status}}").as_deref(),
        Some("created")
    );

    b.openstack_ok(None, &["appcontainer", "delete", "t2"]);
    b.openstack_ok(None, &["appcontainer", "delete", "--stop", "t1"]);
    let gone = wait_for_opt(Duration::from_secs(60), || {
        let list = b.openstack_json(None, &["appcontainer", "list"]);
        list.as_array().unwrap().is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the containers were never deleted:\n{}",
        log_tail(&b.log(), 60)
    );
    assert!(!b
        .openstack(None, &["appcontainer", "show", "t1"])
        .status
        .success());
    assert_eq!(docker_inspect(&uuid, "{{.State.Status}}"), None);
    assert_eq!(docker_inspect(&uuid2, "{{.State.Status}}"), None);
}

#[test]
fn openstack_appcontainer_list_never_shows_another_projects_containers() {
    let b = Berth::start();
    let secret = b.openstack_json(
        None,
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
    b.appcontainer_settled(None, "secret", &["Running"], Duration::from_secs(90));

    let other = b.project_user("other", "olive", "member");
    let theirs = b.openstack_json(Some(&other), &["appcontainer", "list"]);
    assert_eq!(
        theirs,
        Value::Array(Vec::new()),
        "another project's list: {theirs}"
    );
    for id in ["secret", secret_id.as_str()] {
        let out = b.openstack(Some(&other), &["appcontainer", "show", id]);
        assert!(!out.status.success(), "olive saw {id}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("404") || err.contains("not found") || err.contains("Not Found"),
            "{err}"
        );
    }
    // Olive's own container (whatever becomes of it on an instance) is hers alone.
    let mine = b.openstack_json(
        Some(&other),
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
    let theirs = b.openstack_json(Some(&other), &["appcontainer", "list"]);
    assert_eq!(column(&theirs, "name"), ["mine"], "{theirs}");
    let admins = b.openstack_json(None, &["appcontainer", "list"]);
    assert_eq!(column(&admins, "name"), ["secret"], "{admins}");
    // The admin still has it running, untouched.
    assert_eq!(
        docker_inspect(&secret_id, "{{.State.Status}}").as_deref(),
        Some("running")
    );
    let _ = b.openstack(Some(&other), &["appcontainer", "delete", "--force", "mine"]);
    b.openstack_ok(None, &["appcontainer", "delete", "--force", "secret"]);
}
