//! The embedded Keystone v3 subset, through the real `osc` and raw HTTP: projects,
//! users, roles and their assignments, who may do what, revocation and token expiry.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{http, osc_path, wait_for, Berth, PgDatabase, ProjectUser, IMAGE};

/// One identity call: status and JSON body (`null` when there is none).
fn call(
    url: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http()
        .request(method, format!("{url}/identity/v3{path}"))
        .header("X-Auth-Token", token);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().expect("the identity API answers");
    let status = resp.status().as_u16();
    let text = resp.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn get(b: &Berth, token: &str, path: &str) -> (u16, Value) {
    call(&b.url, token, reqwest::Method::GET, path, None)
}

/// Asserts a Keystone-format error with `status`, returning its message.
fn keystone_error(got: (u16, Value), status: u16) -> String {
    assert_eq!(got.0, status, "expected HTTP {status}, got {got:?}");
    assert_eq!(
        got.1["error"]["code"], status,
        "Keystone error body: {}",
        got.1
    );
    let message = got.1["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !message.is_empty(),
        "the error says what was wrong: {}",
        got.1
    );
    message.to_owned()
}

fn osc_fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn names(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `osc` with the OS_* variables of `user`'s password, project and auth URL.
fn env_of(b: &Berth, user: &str, password: &str, project: &str) -> ProjectUser {
    ProjectUser {
        project_id: String::new(),
        user_id: String::new(),
        env: vec![
            ("OS_AUTH_URL".into(), b.env("OS_AUTH_URL")),
            ("OS_USERNAME".into(), user.into()),
            ("OS_PASSWORD".into(), password.into()),
            ("OS_PROJECT_NAME".into(), project.into()),
        ],
    }
}

fn projects_users_and_roles_are_managed_with_osc(b: Berth) {
    let p = b.osc_json(&["project-create", "team-a", "--description", "the A team"]);
    assert_eq!(p["name"], "team-a");
    assert_eq!(p["description"], "the A team");
    assert_eq!(p["enabled"], true);
    let project_id = p["id"].as_str().unwrap().to_owned();
    assert!(names(&b.osc_json(&["project-list"]), "Name").contains(&"team-a".to_owned()));
    assert_eq!(
        b.osc_json(&["project-show", "team-a"])["id"],
        project_id.as_str()
    );
    assert_eq!(b.osc_json(&["project-show", &project_id])["name"], "team-a");

    let u = b.osc_json(&[
        "user-create",
        "alice",
        "--password",
        "pw-alice",
        "--project",
        "team-a",
    ]);
    assert_eq!(u["name"], "alice");
    assert_eq!(u["default_project_id"], project_id.as_str());
    let user_id = u["id"].as_str().unwrap().to_owned();
    assert!(names(&b.osc_json(&["user-list"]), "Name").contains(&"alice".to_owned()));
    assert_eq!(b.osc_json(&["user-show", "alice"])["id"], user_id.as_str());

    // Without a role alice cannot get a token for team-a.
    let alice = env_of(&b, "alice", "pw-alice", "team-a");
    let err = osc_fails(&b.osc_as(&alice, &["token-issue"]));
    assert!(err.contains("no role"), "{err}");

    b.osc_ok(&[
        "role-add",
        "--project",
        "team-a",
        "--user",
        "alice",
        "member",
    ]);
    // Granting twice is not an error (Keystone's PUT is idempotent).
    b.osc_ok(&[
        "role-add",
        "--project",
        "team-a",
        "--user",
        "alice",
        "member",
    ]);
    let listed = b.osc_json(&["role-assignment-list", "--user", "alice", "--names"]);
    assert_eq!(
        listed,
        json!([{"Role": "member", "User": "alice@Default", "Group": "", "Project": "team-a@Default",
                "Domain": "", "System": "", "Inherited": false}])
    );
    let by_id = b.osc_json(&["role-assignment-list", "--project", &project_id]);
    assert_eq!(by_id.as_array().unwrap().len(), 1, "{by_id}");
    assert_eq!(by_id[0]["User"], user_id.as_str());
    let all = b.osc_json(&["role-assignment-list", "--names"]);
    let roles: Vec<String> = names(&all, "Role");
    assert!(
        roles.contains(&"admin".to_owned()) && roles.contains(&"member".to_owned()),
        "{all}"
    );

    // Now she can, and her token is scoped to team-a.
    let issued = b.osc_as(&alice, &["token-issue", "-f", "json"]);
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    let token: Value = serde_json::from_slice(&issued.stdout).unwrap();
    assert_eq!(token["project_id"], project_id.as_str());
    assert_eq!(token["user_id"], user_id.as_str());

    b.osc_ok(&[
        "role-remove",
        "--project",
        "team-a",
        "--user",
        "alice",
        "member",
    ]);
    assert_eq!(
        b.osc_json(&["role-assignment-list", "--user", "alice"]),
        json!([])
    );
    let err = osc_fails(&b.osc(&[
        "role-remove",
        "--project",
        "team-a",
        "--user",
        "alice",
        "member",
    ]));
    assert!(err.contains("404"), "{err}");
    osc_fails(&b.osc_as(&alice, &["token-issue"]));

    b.osc_ok(&["user-delete", "alice"]);
    assert!(!names(&b.osc_json(&["user-list"]), "Name").contains(&"alice".to_owned()));
    b.osc_ok(&["project-delete", "team-a"]);
    assert!(!names(&b.osc_json(&["project-list"]), "Name").contains(&"team-a".to_owned()));
    let err = osc_fails(&b.osc(&["project-show", "team-a"]));
    assert!(
        err.contains("No project with a name or ID of 'team-a'"),
        "{err}"
    );
}

#[test]
fn projects_users_and_roles_are_created_listed_and_deleted_with_osc() {
    projects_users_and_roles_are_managed_with_osc(Berth::start());
}

#[test]
fn projects_users_and_roles_are_managed_on_postgresql_too() {
    let db = PgDatabase::create();
    projects_users_and_roles_are_managed_with_osc(Berth::start_with(Some(db.url.clone())));
}

#[test]
fn duplicate_project_and_user_names_are_refused_with_409() {
    let b = Berth::start();
    let admin = b.token();
    let post =
        |path: &str, body: Value| call(&b.url, &admin, reqwest::Method::POST, path, Some(body));
    let created = post(
        "/projects",
        json!({"project": {"name": "dup", "domain_id": "default"}}),
    );
    assert_eq!(created.0, 201, "{created:?}");
    assert_eq!(created.1["project"]["name"], "dup");
    let message = keystone_error(post("/projects", json!({"project": {"name": "dup"}})), 409);
    assert!(message.contains("\"dup\" already exists"), "{message}");

    let user = post("/users", json!({"user": {"name": "twin", "password": "x"}}));
    assert_eq!(user.0, 201, "{user:?}");
    assert!(
        user.1["user"].get("password").is_none(),
        "no password in views"
    );
    keystone_error(
        post("/users", json!({"user": {"name": "twin", "password": "y"}})),
        409,
    );
    // Renaming onto a taken name is a conflict too.
    let other = post("/users", json!({"user": {"name": "other"}}));
    let other_id = other.1["user"]["id"].as_str().unwrap();
    keystone_error(
        call(
            &b.url,
            &admin,
            reqwest::Method::PATCH,
            &format!("/users/{other_id}"),
            Some(json!({"user": {"name": "twin"}})),
        ),
        409,
    );
    let err = osc_fails(&b.osc(&["project-create", "dup"]));
    assert!(err.contains("HTTP 409"), "{err}");
    // Only one of each exists.
    assert_eq!(
        get(&b, &admin, "/projects?name=dup").1["projects"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get(&b, &admin, "/users?name=twin").1["users"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Bad input is a 400, not a 500.
    keystone_error(post("/projects", json!({"project": {"name": ""}})), 400);
    keystone_error(
        post(
            "/projects",
            json!({"project": {"name": "x", "domain_id": "other"}}),
        ),
        400,
    );
    keystone_error(post("/users", json!({"nope": {}})), 400);
}

#[test]
fn non_admins_get_403_for_identity_writes_and_listing_others_but_may_read_themselves() {
    let b = Berth::start();
    let member = b.project_user("proj-m", "mallory", "member");
    let token = b.token_as(&member);
    let admin = b.token();
    let admin_user = get(&b, &admin, "/users?name=admin").1["users"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let admin_project = get(&b, &admin, "/projects?name=admin").1["projects"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let member_role = get(&b, &admin, "/roles?name=member").1["roles"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_member = |method: reqwest::Method, path: &str, body: Option<Value>| {
        call(&b.url, &token, method, path, body)
    };
    use reqwest::Method as M;
    let refused = [
        as_member(
            M::POST,
            "/projects",
            Some(json!({"project": {"name": "evil"}})),
        ),
        as_member(M::GET, "/projects", None),
        as_member(M::GET, &format!("/projects/{admin_project}"), None),
        as_member(M::DELETE, &format!("/projects/{}", member.project_id), None),
        as_member(
            M::PATCH,
            &format!("/projects/{}", member.project_id),
            Some(json!({"project": {"enabled": false}})),
        ),
        as_member(M::POST, "/users", Some(json!({"user": {"name": "evil"}}))),
        as_member(M::GET, "/users", None),
        as_member(M::GET, &format!("/users/{admin_user}"), None),
        as_member(
            M::PATCH,
            &format!("/users/{}", member.user_id),
            Some(json!({"user": {"enabled": true}})),
        ),
        as_member(M::DELETE, &format!("/users/{admin_user}"), None),
        as_member(
            M::PUT,
            &format!(
                "/projects/{admin_project}/users/{}/roles/{member_role}",
                member.user_id
            ),
            None,
        ),
        as_member(
            M::DELETE,
            &format!(
                "/projects/{}/users/{}/roles/{member_role}",
                member.project_id, member.user_id
            ),
            None,
        ),
        as_member(M::GET, "/role_assignments", None),
    ];
    for got in refused {
        let message = keystone_error(got, 403);
        assert!(message.contains("admin role"), "{message}");
    }
    // Nothing changed: no project "evil", mallory still a member, admin still there.
    assert!(get(&b, &admin, "/projects?name=evil").1["projects"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(get(&b, &admin, "/users?name=evil").1["users"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(get(&b, &admin, &format!("/users/{admin_user}")).0, 200);
    assert_eq!(
        get(
            &b,
            &admin,
            &format!(
                "/role_assignments?user.id={}&scope.project.id={admin_project}",
                member.user_id
            )
        )
        .1["role_assignments"],
        json!([])
    );

    // Mallory may read herself, her project, her assignments and the roles.
    let me = get(&b, &token, &format!("/users/{}", member.user_id));
    assert_eq!(me.0, 200);
    assert_eq!(me.1["user"]["name"], "mallory");
    assert_eq!(
        get(&b, &token, &format!("/projects/{}", member.project_id)).1["project"]["name"],
        "proj-m"
    );
    let mine = get(&b, &token, "/auth/projects");
    assert_eq!(names(&mine.1["projects"], "name"), ["proj-m"]);
    let assignments = get(
        &b,
        &token,
        &format!("/role_assignments?user.id={}&include_names", member.user_id),
    );
    assert_eq!(assignments.0, 200);
    assert_eq!(
        assignments.1["role_assignments"][0]["role"]["name"],
        "member"
    );
    assert_eq!(
        assignments.1["role_assignments"][0]["scope"]["project"]["name"],
        "proj-m"
    );
    assert_eq!(
        names(&get(&b, &token, "/roles").1["roles"], "name"),
        ["admin", "member", "reader"]
    );

    // Through osc the refusal is a clear one-line error.
    let err = osc_fails(&b.osc_as(&member, &["project-create", "evil"]));
    assert!(
        err.contains("HTTP 403") && err.contains("admin role"),
        "{err}"
    );

    // No token, or a bad one: 401 in Keystone's format.
    keystone_error(call(&b.url, "", M::GET, "/projects", None), 401);
    keystone_error(call(&b.url, "not-a-token", M::GET, "/users", None), 401);
}

#[test]
fn member_implies_reader_in_tokens_and_roles_have_stable_ids() {
    let b = Berth::start();
    let admin = b.token();
    let roles = get(&b, &admin, "/roles").1["roles"].clone();
    let id_of = |name: &str| {
        roles
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("role {name} in {roles}"))["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (member, reader) = (id_of("member"), id_of("reader"));
    assert_ne!(member, "member", "role ids are not their names");
    assert_eq!(
        get(&b, &admin, &format!("/roles/{member}")).1["role"]["name"],
        "member"
    );
    keystone_error(get(&b, &admin, "/roles/member"), 404);

    // Another deployment has the same ids.
    let b2 = Berth::start();
    let roles2 = get(&b2, &b2.token(), "/roles").1["roles"].clone();
    let ids = |roles: &Value| {
        roles
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].to_string(), r["name"].to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&roles), ids(&roles2));
    drop(b2);

    let user = b.project_user("proj-r", "rita", "member");
    let token = b.token_as(&user);
    let resp = http()
        .get(format!("{}/identity/v3/auth/tokens", b.url))
        .header("X-Auth-Token", &admin)
        .header("X-Subject-Token", &token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().unwrap();
    let token_roles: Vec<(String, String)> = body["token"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        token_roles,
        [
            (member.clone(), "member".to_owned()),
            (reader.clone(), "reader".to_owned())
        ]
    );
    // The assignment itself stays the direct one; `effective` adds the implied role.
    let direct = get(
        &b,
        &admin,
        &format!("/role_assignments?user.id={}", user.user_id),
    );
    assert_eq!(direct.1["role_assignments"].as_array().unwrap().len(), 1);
    let effective = get(
        &b,
        &admin,
        &format!("/role_assignments?user.id={}&effective", user.user_id),
    );
    let ids: Vec<&str> = effective.1["role_assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [member.as_str(), reader.as_str()]);
}

#[test]
fn deleting_a_user_stops_its_tokens_at_once() {
    let b = Berth::start();
    let user = b.project_user("proj-u", "ursula", "member");
    let token = b.token_as(&user);
    let containers = |t: &str| {
        http()
            .get(format!("{}/v1/containers", b.url))
            .header("X-Auth-Token", t)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(containers(&token), 200);
    assert_eq!(get(&b, &token, "/auth/projects").0, 200);
    b.osc_ok(&["user-delete", "ursula"]);
    // The very next request is refused: the token is still unexpired and well signed.
    assert_eq!(containers(&token), 401);
    keystone_error(get(&b, &token, "/auth/projects"), 401);
    let err = osc_fails(&b.osc_as(&user, &["token-issue"]));
    assert!(err.contains("HTTP 401"), "{err}");
    // Its assignments went with it.
    let admin = b.token();
    assert_eq!(
        get(
            &b,
            &admin,
            &format!("/role_assignments?user.id={}", user.user_id)
        )
        .1["role_assignments"],
        json!([])
    );
    keystone_error(get(&b, &admin, &format!("/users/{}", user.user_id)), 404);
}

#[test]
fn revoking_a_users_last_role_in_a_project_stops_its_tokens_there() {
    let b = Berth::start();
    let user = b.project_user("proj-v", "vera", "reader");
    let token = b.token_as(&user);
    assert_eq!(get(&b, &token, "/auth/projects").0, 200);
    b.osc_ok(&[
        "role-remove",
        "--project",
        "proj-v",
        "--user",
        "vera",
        "reader",
    ]);
    keystone_error(get(&b, &token, "/auth/projects"), 401);
    // Granted again, the same token works again: it is checked against the roles as
    // they are now, not as they were when it was issued.
    b.osc_ok(&[
        "role-add",
        "--project",
        "proj-v",
        "--user",
        "vera",
        "member",
    ]);
    assert_eq!(get(&b, &token, "/auth/projects").0, 200);
}

#[test]
fn deleting_a_project_stops_its_tokens_at_once() {
    let b = Berth::start();
    let user = b.project_user("proj-p", "pat", "member");
    let token = b.token_as(&user);
    let containers = |t: &str| {
        http()
            .get(format!("{}/v1/containers", b.url))
            .header("X-Auth-Token", t)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(containers(&token), 200);
    b.osc_ok(&["project-delete", "proj-p"]);
    assert_eq!(containers(&token), 401);
    keystone_error(get(&b, &token, &format!("/users/{}", user.user_id)), 401);
    // The user remains, without the project as its default.
    let admin = b.token();
    let u = get(&b, &admin, &format!("/users/{}", user.user_id));
    assert_eq!(u.0, 200);
    assert!(u.1["user"].get("default_project_id").is_none(), "{}", u.1);
    keystone_error(
        get(&b, &admin, &format!("/projects/{}", user.project_id)),
        404,
    );
}

#[test]
fn a_project_that_still_has_containers_cannot_be_deleted() {
    let b = Berth::start();
    let user = b.project_user("proj-c", "carl", "member");
    let out = b.osc_as(
        &user,
        &[
            "container-create",
            "--image",
            IMAGE,
            "--name",
            "keep",
            "--label",
            "berth.test=identity",
            "--cmd",
            "sleep 300",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = b.token();
    let message = keystone_error(
        call(
            &b.url,
            &admin,
            reqwest::Method::DELETE,
            &format!("/projects/{}", user.project_id),
            None,
        ),
        409,
    );
    assert!(message.contains("1 container(s)"), "{message}");
    let err = osc_fails(&b.osc(&["project-delete", "proj-c"]));
    assert!(
        err.contains("HTTP 409") && err.contains("delete its containers"),
        "{err}"
    );
    // Nothing was removed: the project, its member's access and the container remain.
    assert_eq!(
        get(&b, &admin, &format!("/projects/{}", user.project_id)).0,
        200
    );
    let listed = b.osc_as(&user, &["container-list", "-f", "value", "-c", "name"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "keep");
    // The admin project has this host's instance, so it is never deleted either.
    let err = osc_fails(&b.osc(&["project-delete", "admin"]));
    assert!(err.contains("instance(s)"), "{err}");
    let _ = b.osc_as(&user, &["container-delete", "--force", "keep"]);
}

#[test]
fn the_catalog_lists_the_container_and_identity_services() {
    let b = Berth::start();
    let catalog = b.osc_json(&["catalog-list"]);
    let types = names(&catalog, "Type");
    assert_eq!(types, ["container", "identity"]);
    let container = &catalog[0]["Endpoints"];
    assert!(
        container
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["interface"] == "public" && e["url"] == format!("{}/v1", b.url)),
        "{container}"
    );
    let admin = b.token();
    let services = get(&b, &admin, "/services").1;
    assert_eq!(
        names(&services["services"], "type"),
        ["container", "identity"]
    );
    let endpoints = get(&b, &admin, "/endpoints?interface=public").1;
    assert_eq!(
        endpoints["endpoints"].as_array().unwrap().len(),
        2,
        "{endpoints}"
    );
    assert_eq!(get(&b, &admin, "/domains").1["domains"][0]["id"], "default");
    assert_eq!(
        get(&b, &admin, "/domains/default").1["domain"]["name"],
        "Default"
    );
    keystone_error(get(&b, &admin, "/domains/other"), 404);
}

/// A `berth up` with extra arguments, for what the shared harness does not set.
struct Up {
    child: Child,
    _data: tempfile::TempDir,
    url: String,
    env: Vec<(String, String)>,
    output: Arc<Mutex<Vec<String>>>,
}

impl Up {
    fn start(extra: &[&str]) -> Up {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--relay-listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth up starts");
        let output: Arc<Mutex<Vec<String>>> = Arc::default();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        let openrc = data.path().join("openrc");
        wait_for("berth up to write openrc", Duration::from_secs(60), || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "berth up exited with {status}:\n{}",
                    output.lock().unwrap().join("\n")
                );
            }
            std::fs::read_to_string(&openrc).ok()
        });
        let env: Vec<(String, String)> = std::fs::read_to_string(&openrc)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
            .collect();
        let auth = env
            .iter()
            .find(|(k, _)| k == "OS_AUTH_URL")
            .unwrap()
            .1
            .clone();
        Up {
            child,
            _data: data,
            url: auth.trim_end_matches("/identity/v3").to_owned(),
            env,
            output,
        }
    }

    fn osc(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(osc_path());
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().expect("osc runs")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tokens_expire_after_the_token_ttl_given_to_berth_up() {
    let up = Up::start(&["--token-ttl", "2"]);
    let out = up.osc(&["token-issue", "-f", "json"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        up.output.lock().unwrap().join("\n")
    );
    let issued_at = Instant::now();
    let token: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = token["id"].as_str().unwrap().to_owned();
    let expires = chrono::DateTime::parse_from_rfc3339(token["expires"].as_str().unwrap()).unwrap();
    let left = expires
        .signed_duration_since(chrono::Utc::now())
        .num_milliseconds();
    assert!(
        (0..=2_000).contains(&left),
        "expires in {left} ms, not within the 2 s TTL"
    );

    let status = |t: &str| {
        http()
            .get(format!("{}/identity/v3/auth/projects", up.url))
            .header("X-Auth-Token", t)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status(&id), 200, "a fresh token works");
    wait_for("the token to expire", Duration::from_secs(10), || {
        (status(&id) == 401).then_some(())
    });
    assert!(
        issued_at.elapsed() >= Duration::from_millis(900),
        "the token stopped working before its TTL ({:?})",
        issued_at.elapsed()
    );
    // Expired everywhere: the container API refuses it too, and a new token works.
    let containers = http()
        .get(format!("{}/v1/containers", up.url))
        .header("X-Auth-Token", &id)
        .send()
        .unwrap();
    assert_eq!(containers.status().as_u16(), 401);
    let again = up.osc(&["token-issue", "-f", "value", "-c", "id"]);
    let fresh = String::from_utf8_lossy(&again.stdout).trim().to_owned();
    assert_eq!(status(&fresh), 200);
}
