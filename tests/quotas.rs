//! Zun's quota API, and quotas enforced at create: over the limit is a 403 that creates
//! nothing, and concurrent creates at the limit never exceed it, on SQLite and
//! PostgreSQL.

mod support;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{json, Value};
use support::{Berth, PgDatabase, IMAGE};

/// One caller of the raw API.
#[derive(Clone)]
struct Api {
    url: String,
    token: String,
}

impl Api {
    /// Logs in with a project-scoped password token; returns the caller and its project id.
    fn login(berth: &Berth, user: &str, password: &str, project: &str) -> (Api, String) {
        let resp = support::http()
            .post(format!("{}/identity/v3/auth/tokens", berth.url))
            .json(&json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user, "domain": {"name": "Default"}, "password": password}}},
                "scope": {"project": {"name": project, "domain": {"name": "Default"}}}
            }}))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "login as {user}");
        let token = resp.headers()["X-Subject-Token"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = resp.json().unwrap();
        let project_id = body["token"]["project"]["id"].as_str().unwrap().to_owned();
        (
            Api {
                url: berth.url.clone(),
                token,
            },
            project_id,
        )
    }

    fn admin(berth: &Berth) -> (Api, String) {
        Api::login(berth, "admin", &berth.env("OS_PASSWORD"), "admin")
    }

    /// A request at microversion `version`; returns the status and the JSON body.
    fn call_at(
        &self,
        version: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = support::http()
            .request(method, format!("{}/v1{path}", self.url))
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", format!("container {version}"));
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_at("1.40", method, path, body)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None)
    }

    fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body))
    }

    fn create(&self, name: &str, memory: Option<u32>) -> (u16, Value) {
        let mut body = json!({
            "image": IMAGE,
            "name": name,
            "command": ["sleep", "600"],
            "labels": {"berth.test": "quotas"},
        });
        if let Some(m) = memory {
            body["memory"] = json!(m.to_string());
        }
        self.call(reqwest::Method::POST, "/containers", Some(body))
    }

    /// Waits (as an admin) until no container of any project is still being made, so
    /// that no Docker create is in flight when the test ends and cleans up.
    fn settle(&self) {
        support::wait_for("every create to finish", Duration::from_secs(120), || {
            let (status, v) = self.get("/containers?all_projects=True");
            assert_eq!(status, 200, "{v}");
            v["containers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["task_state"].is_null())
                .then_some(())
        });
    }

    fn container_names(&self) -> Vec<String> {
        let (status, v) = self.get("/containers");
        assert_eq!(status, 200, "{v}");
        v["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

fn assert_over_quota(got: &(u16, Value), resources: &str) {
    let (status, body) = got;
    assert_eq!(*status, 403, "{body}");
    let detail = body["errors"][0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(&format!("Quota exceeded for resources: {resources}")),
        "{body}"
    );
    assert_eq!(body["errors"][0]["code"], "container.over-quota", "{body}");
}

#[test]
fn the_quota_api_has_zuns_shapes_defaults_classes_and_usages() {
    let berth = Berth::start();
    let (admin, project) = Api::admin(&berth);
    let q = format!("/quotas/{project}");

    // Quotas came with microversion 1.26.
    let (status, _) = admin.call_at("1.25", reqwest::Method::GET, &q, None);
    assert_eq!(status, 404);

    let defaults =
        json!({"containers": 40, "cpu": 20, "memory": 51200, "disk": 100, "instances": 10});
    assert_eq!(admin.get(&q), (200, defaults.clone()));
    assert_eq!(admin.get(&format!("{q}/defaults")), (200, defaults.clone()));
    assert_eq!(admin.get("/quota_classes/default"), (200, defaults.clone()));

    // A partial update answers with every limit; digit strings and -1 are accepted.
    let (status, v) = admin.put(&q, json!({"containers": 5, "memory": "1024", "disk": -1}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!({"containers": 5, "cpu": 20, "memory": 1024, "disk": -1, "instances": 10})
    );

    // Usages: limit and what is in use.
    let (status, _) = admin.create("counted", Some(64));
    assert_eq!(status, 202);
    let (status, v) = admin.get(&format!("{q}?usages=True"));
    assert_eq!(status, 200);
    assert_eq!(v["containers"], json!({"limit": 5, "in_use": 1}), "{v}");
    assert_eq!(v["memory"], json!({"limit": 1024, "in_use": 64}), "{v}");
    assert_eq!(v["cpu"]["limit"], 20, "{v}");
    assert_eq!(v["disk"]["limit"], -1, "{v}");
    // zunclient prints the values in the body's order under "limit, in_use".
    let raw = support::http()
        .get(format!("{}/v1{q}?usages=True", admin.url))
        .header("X-Auth-Token", &admin.token)
        .header("OpenStack-API-Version", "container 1.26")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        raw.contains(r#""containers":{"limit":5,"in_use":1}"#),
        "{raw}"
    );

    // Bad values are 400s that change nothing.
    for bad in [
        json!({"containers": -2}),
        json!({"containers": "many"}),
        json!({"containers": 1.5}),
        json!({"gpus": 1}),
    ] {
        let (status, v) = admin.put(&q, bad.clone());
        assert_eq!(status, 400, "{bad}: {v}");
    }
    assert_eq!(admin.get(&q).1["containers"], 5);

    // The `default` class stands in for projects without a limit of their own.
    let (status, v) = admin.put(
        "/quota_classes/default",
        json!({"cpu": 10, "containers": 7}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["cpu"], 10);
    let (_, v) = admin.get(&q);
    assert_eq!(
        v["cpu"], 10,
        "class applies where the project sets nothing: {v}"
    );
    assert_eq!(v["containers"], 5, "the project's own limit wins: {v}");
    assert_eq!(admin.get(&format!("{q}/defaults")).1["containers"], 7);
    // Another class leaves `default` alone.
    let (status, v) = admin.put("/quota_classes/gold", json!({"containers": 100}));
    assert_eq!((status, v["containers"].clone()), (200, json!(100)));
    assert_eq!(admin.get("/quota_classes/default").1["containers"], 7);

    // DELETE drops the project's own limits: the class applies again.
    let (status, v) = admin.call(reqwest::Method::DELETE, &q, None);
    assert_eq!((status, v), (200, Value::Null));
    assert_eq!(
        admin.get(&q),
        (
            200,
            json!({"containers": 7, "cpu": 10, "memory": 51200, "disk": 100, "instances": 10})
        )
    );
    admin.settle();
}

#[test]
fn creating_over_quota_returns_403_names_the_resource_and_creates_nothing() {
    let berth = Berth::start();
    let (admin, project) = Api::admin(&berth);
    let q = format!("/quotas/{project}");
    assert_eq!(admin.put(&q, json!({"containers": 1})).0, 200);

    let (status, first) = admin.create("first", None);
    assert_eq!(status, 202, "{first}");
    let first = first["uuid"].as_str().unwrap().to_owned();
    let over = admin.create("second", None);
    assert_over_quota(&over, "['containers']");
    assert_eq!(over.1["errors"][0]["status"], 403);
    assert_eq!(admin.container_names(), vec!["first".to_owned()]);

    // Memory is summed over the project's containers.
    let (status, _) = admin.put(&q, json!({"containers": -1, "memory": 200}));
    assert_eq!(status, 200);
    let over = admin.create("big", Some(512));
    assert_over_quota(&over, "['memory']");
    // Both at once are both named.
    assert_eq!(admin.put(&q, json!({"containers": 1})).0, 200);
    assert_over_quota(&admin.create("both", Some(512)), "['containers', 'memory']");
    assert_eq!(admin.container_names(), vec!["first".to_owned()]);

    // Docker holds the first container and nothing of the refused ones.
    support::wait_for(
        "the first container in Docker",
        Duration::from_secs(60),
        || (!berth.docker_containers().is_empty()).then_some(()),
    );
    assert_eq!(berth.docker_containers(), vec![first.clone()]);

    // Raising the quota lets the same request through.
    assert_eq!(admin.put(&q, json!({"containers": 2, "memory": -1})).0, 200);
    assert_eq!(admin.create("second", None).0, 202);
    admin.settle();

    // Growing a container counts too; shrinking is always allowed.
    let (status, v) = admin.get(&format!("/containers/{first}"));
    assert_eq!(status, 200, "{v}");
    let first_mib: u64 = v["memory"].as_str().unwrap().parse().unwrap();
    let (_, usage) = admin.get(&format!("{q}?usages=True"));
    let in_use = usage["memory"]["in_use"].as_u64().unwrap();
    assert_eq!(
        admin.put(&q, json!({"memory": in_use + 10})).0,
        200,
        "memory quota just above what is used"
    );
    let patch = |mib: u64| {
        admin.call(
            reqwest::Method::PATCH,
            &format!("/containers/{first}"),
            Some(json!({"memory": mib.to_string()})),
        )
    };
    assert_over_quota(&patch(first_mib + 64), "['memory']");
    assert_eq!(
        admin.get(&format!("/containers/{first}")).1["memory"],
        first_mib.to_string()
    );
    let (status, v) = patch(first_mib / 2);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["memory"], (first_mib / 2).to_string());
    let (_, usage) = admin.get(&format!("{q}?usages=True"));
    assert_eq!(usage["memory"]["in_use"], in_use - first_mib / 2);
}

/// Fires `n + extra` creates at once against a containers quota of `n`.
fn concurrent_creates_at_the_limit_never_exceed_it(berth: Berth) {
    const N: usize = 4;
    const EXTRA: usize = 16;
    let (admin, project) = Api::admin(&berth);
    let (status, v) = admin.put(&format!("/quotas/{project}"), json!({"containers": N}));
    assert_eq!(status, 200, "{v}");

    let barrier = Arc::new(Barrier::new(N + EXTRA));
    let threads: Vec<_> = (0..N + EXTRA)
        .map(|i| {
            let (api, barrier) = (admin.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                api.create(&format!("race-{i}"), None)
            })
        })
        .collect();
    let results: Vec<(u16, Value)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let accepted = results.iter().filter(|(s, _)| *s == 202).count();
    let refused: Vec<_> = results.iter().filter(|(s, _)| *s != 202).collect();
    assert_eq!(
        accepted,
        N,
        "results: {results:?}\nberth log:\n{}",
        berth.log()
    );
    for r in &refused {
        assert_over_quota(r, "['containers']");
    }
    assert_eq!(admin.container_names().len(), N);
    let (_, usage) = admin.get(&format!("/quotas/{project}?usages=True"));
    assert_eq!(usage["containers"], json!({"limit": N, "in_use": N}));
    admin.settle();
}

#[test]
fn concurrent_creates_at_the_limit_never_exceed_it_on_sqlite() {
    concurrent_creates_at_the_limit_never_exceed_it(Berth::start());
}

#[test]
fn concurrent_creates_at_the_limit_never_exceed_it_on_postgresql() {
    let pg = PgDatabase::create();
    concurrent_creates_at_the_limit_never_exceed_it(Berth::start_with(Some(pg.url.clone())));
}

#[test]
fn members_and_readers_see_only_their_own_projects_quotas_and_change_none() {
    let berth = Berth::start();
    let (admin, admin_project) = Api::admin(&berth);
    let member_user = berth.project_user("quota-team", "quota-member", "member");
    let reader_user = berth.project_user("quota-team", "quota-reader", "reader");
    let (member, team) = Api::login(&berth, "quota-member", "pw-quota-member", "quota-team");
    let (reader, _) = Api::login(&berth, "quota-reader", "pw-quota-reader", "quota-team");
    assert_eq!(member_user.project_id, team);
    assert_eq!(reader_user.project_id, team);

    assert_eq!(
        admin
            .put(&format!("/quotas/{team}"), json!({"containers": 3}))
            .0,
        200
    );
    for who in [&member, &reader] {
        let (status, v) = who.get(&format!("/quotas/{team}"));
        assert_eq!((status, v["containers"].clone()), (200, json!(3)), "{v}");
        assert_eq!(who.get(&format!("/quotas/{team}?usages=True")).0, 200);
        assert_eq!(who.get(&format!("/quotas/{team}/defaults")).0, 200);
        // Another project's quotas, the classes, and every change are the admin's.
        for (method, path, body) in [
            (
                reqwest::Method::GET,
                format!("/quotas/{admin_project}"),
                None,
            ),
            (
                reqwest::Method::PUT,
                format!("/quotas/{team}"),
                Some(json!({"containers": 99})),
            ),
            (reqwest::Method::DELETE, format!("/quotas/{team}"), None),
            (
                reqwest::Method::GET,
                "/quota_classes/default".to_owned(),
                None,
            ),
            (
                reqwest::Method::PUT,
                "/quota_classes/default".to_owned(),
                Some(json!({"containers": 99})),
            ),
        ] {
            let (status, v) = who.call(method.clone(), &path, body);
            assert_eq!(status, 403, "{method} {path}: {v}");
            let detail = v["errors"][0]["detail"].as_str().unwrap();
            assert!(detail.starts_with("Policy doesn't allow quota"), "{detail}");
            assert_eq!(v["errors"][0]["code"], "container.policy-not-authorized");
        }
    }
    assert_eq!(admin.get(&format!("/quotas/{team}")).1["containers"], 3);
    assert_eq!(admin.get("/quota_classes/default").1["containers"], 40);

    // The quota binds the member's own creates too.
    assert_eq!(
        admin
            .put(&format!("/quotas/{team}"), json!({"containers": 1}))
            .0,
        200
    );
    let (status, v) = member.create("team-1", None);
    assert_eq!(status, 202, "{v}");
    assert_over_quota(&member.create("team-2", None), "['containers']");
    assert_eq!(member.container_names(), vec!["team-1".to_owned()]);
    admin.settle();
}
