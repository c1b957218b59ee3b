//! Berth against a real Keystone (keystone 30 from PyPI, started by
//! `scripts/keystone-bed`, which `scripts/test` runs): berth-service, berth-relay and
//! berth-agent run as separate processes with `[identity] keystone_url` set, and the
//! tokens come from Keystone.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_service::identity::keys::SigningKey;
use berth_service::identity::tokens::TokenSigner;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use support::external::{ExternalOptions, ExternalStack};
use support::{free_port, http, wait_for, IMAGE};

/// The Keystone test bed, from the variables `scripts/keystone-bed start` exports.
struct Keystone {
    url: String,
    jws_public_dir: PathBuf,
    service_user: String,
    service_password: String,
    service_project: String,
    project: String,
    member: (String, String),
    reader: (String, String),
}

fn keystone() -> Keystone {
    let var = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| {
            panic!(
                "{k} is not set: run the tests with scripts/test, or start a Keystone with \
                 `eval \"$(scripts/keystone-bed start)\"` first"
            )
        })
    };
    Keystone {
        url: var("BERTH_TEST_KEYSTONE_URL"),
        jws_public_dir: var("BERTH_TEST_KEYSTONE_JWS_PUBLIC_DIR").into(),
        service_user: var("BERTH_TEST_KEYSTONE_SERVICE_USER"),
        service_password: var("BERTH_TEST_KEYSTONE_SERVICE_PASSWORD"),
        service_project: var("BERTH_TEST_KEYSTONE_SERVICE_PROJECT"),
        project: var("BERTH_TEST_KEYSTONE_PROJECT"),
        member: (
            var("BERTH_TEST_KEYSTONE_MEMBER_USER"),
            var("BERTH_TEST_KEYSTONE_MEMBER_PASSWORD"),
        ),
        reader: (
            var("BERTH_TEST_KEYSTONE_READER_USER"),
            var("BERTH_TEST_KEYSTONE_READER_PASSWORD"),
        ),
    }
}

/// A token from Keystone, with what Keystone said about it.
struct KsToken {
    token: String,
    user_id: String,
    project_id: String,
    expires_at: DateTime<Utc>,
}

impl Keystone {
    /// A project-scoped password token for `user`.
    fn token(&self, (user, password): &(String, String)) -> KsToken {
        let r = http()
            .post(format!("{}/auth/tokens?nocatalog", self.url))
            .json(&json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": user, "domain": {"id": "default"}, "password": password}}},
                "scope": {"project": {"name": self.project, "domain": {"id": "default"}}},
            }}))
            .send()
            .expect("Keystone answers");
        assert_eq!(r.status().as_u16(), 201, "Keystone token for {user}");
        let token = r.headers()["X-Subject-Token"].to_str().unwrap().to_owned();
        let body: Value = r.json().unwrap();
        let t = &body["token"];
        KsToken {
            token,
            user_id: t["user"]["id"].as_str().unwrap().to_owned(),
            project_id: t["project"]["id"].as_str().unwrap().to_owned(),
            expires_at: DateTime::parse_from_rfc3339(t["expires_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    /// `t`'s token, renewed first for `who` when it expires within 10 s: the bed's
    /// tokens live only 30 s, and a loaded machine can take longer than that.
    fn fresh(&self, who: &(String, String), t: &mut KsToken) -> String {
        if t.expires_at - Utc::now() < chrono::Duration::seconds(10) {
            *t = self.token(who);
        }
        t.token.clone()
    }

    /// POSTs an authentication request and reads the token it answers with.
    fn authenticate(&self, auth: Value) -> KsToken {
        let r = http()
            .post(format!("{}/auth/tokens?nocatalog", self.url))
            .json(&json!({ "auth": auth }))
            .send()
            .expect("Keystone answers");
        let status = r.status().as_u16();
        let token = r
            .headers()
            .get("X-Subject-Token")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = r.json().unwrap();
        assert_eq!(status, 201, "Keystone authentication: {body}");
        let t = &body["token"];
        KsToken {
            token: token.unwrap(),
            user_id: t["user"]["id"].as_str().unwrap().to_owned(),
            project_id: t["project"]["id"].as_str().unwrap().to_owned(),
            expires_at: DateTime::parse_from_rfc3339(t["expires_at"].as_str().unwrap())
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    /// A token made from a new application credential of `owner`.
    fn application_credential_token(&self, owner: &KsToken) -> KsToken {
        let name = format!("berth-test-{}", uuid::Uuid::new_v4().simple());
        let r = http()
            .post(format!(
                "{}/users/{}/application_credentials",
                self.url, owner.user_id
            ))
            .header("X-Auth-Token", &owner.token)
            .json(&json!({"application_credential": {"name": name}}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "application credential created");
        let cred: Value = r.json().unwrap();
        let cred = &cred["application_credential"];
        self.authenticate(json!({"identity": {
            "methods": ["application_credential"],
            "application_credential": {"id": cred["id"], "secret": cred["secret"]},
        }}))
    }

    /// A token of Berth's service user acting through a trust from `trustor` (with its
    /// member role in its project), as Heat's deferred operations do.
    fn trust_token(&self, trustor: &KsToken) -> KsToken {
        let trustee = self.authenticate(json!({
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.service_user, "domain": {"id": "default"},
                "password": self.service_password}}},
            "scope": {"project": {"name": self.service_project, "domain": {"id": "default"}}},
        }));
        let r = http()
            .post(format!("{}/OS-TRUST/trusts", self.url))
            .header("X-Auth-Token", &trustor.token)
            .json(&json!({"trust": {
                "trustor_user_id": trustor.user_id, "trustee_user_id": trustee.user_id,
                "project_id": trustor.project_id, "impersonation": false,
                "roles": [{"name": "member"}],
            }}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "trust created");
        let trust: Value = r.json().unwrap();
        self.authenticate(json!({
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.service_user, "domain": {"id": "default"},
                "password": self.service_password}}},
            "scope": {"OS-TRUST:trust": {"id": trust["trust"]["id"]}},
        }))
    }

    /// Revokes `token` in Keystone (a user may revoke its own token).
    fn revoke(&self, token: &str) {
        let r = http()
            .delete(format!("{}/auth/tokens", self.url))
            .header("X-Auth-Token", token)
            .header("X-Subject-Token", token)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "Keystone revokes the token");
    }
}

/// Removes a Berth container's Docker container however the test ends.
struct DockerGuard(String);

impl Drop for DockerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &format!("berth-{}", self.0)])
            .output();
    }
}

/// How to run berth-service against Keystone (the rest as [`ExternalOptions::new`]).
struct Options<'a> {
    keystone_url: &'a str,
    cache_ttl: u64,
    jws_public_dir: Option<&'a Path>,
    /// Register a host for this Keystone project (id, name) and run its agent.
    host_for: Option<(&'a str, &'a str)>,
}

/// berth-service (and, with a host, berth-relay and berth-agent) as separate
/// processes, started by the shared harness ([`ExternalStack`]) with `ks`'s service
/// account.
struct Stack(ExternalStack);

impl std::ops::Deref for Stack {
    type Target = ExternalStack;
    fn deref(&self) -> &ExternalStack {
        &self.0
    }
}

impl Stack {
    fn start(ks: &Keystone, o: Options) -> Stack {
        Stack(ExternalStack::start(ExternalOptions {
            cache_ttl: o.cache_ttl,
            jws_public_dir: o.jws_public_dir,
            host_for: o.host_for,
            ..ExternalOptions::new(
                o.keystone_url,
                &ks.service_user,
                &ks.service_password,
                &ks.service_project,
            )
        }))
    }

    fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let r = http()
            .get(format!("{}{path}", self.api))
            .header("X-Auth-Token", token)
            .header("OpenStack-API-Version", "container 1.40")
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> (u16, Value) {
        let r = http()
            .post(format!("{}{path}", self.api))
            .header("X-Auth-Token", token)
            .header("OpenStack-API-Version", "container 1.40")
            .json(body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }
}

/// Asserts a 401 in Zun's error format.
fn assert_zun_401(what: &str, (status, body): (u16, Value)) {
    assert_eq!(status, 401, "{what}: {body}");
    assert_eq!(body["errors"][0]["status"], 401, "{what}: {body}");
    assert_eq!(
        body["errors"][0]["code"], "container.unauthorized",
        "{what}: {body}"
    );
    assert!(
        !body["errors"][0]["detail"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{what}: the error says nothing: {body}"
    );
}

/// `token` with one character of its signature changed.
fn tampered(token: &str) -> String {
    let (rest, sig) = token.rsplit_once('.').expect("a JWS has three parts");
    let mut sig = sig.to_owned().into_bytes();
    sig[8] = if sig[8] == b'A' { b'B' } else { b'A' };
    format!("{rest}.{}", String::from_utf8(sig).unwrap())
}

#[test]
fn keystone_tokens_are_accepted_scoped_to_their_project_with_their_roles() {
    let ks = keystone();
    let member = ks.token(&ks.member);
    let project = member.project_id.clone();
    let stack = Stack::start(
        &ks,
        Options {
            keystone_url: &ks.url,
            cache_ttl: 300,
            // Genuine tokens pass the offline check; roles still come from Keystone.
            jws_public_dir: Some(&ks.jws_public_dir),
            host_for: Some((&project, "tenant-a")),
        },
    );

    let (status, list) = stack.get("/v1/containers", &member.token);
    assert_eq!(status, 200, "member lists: {list}\n{}", stack.log());
    assert_eq!(list["containers"], json!([]));

    let name = format!("ks-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let (status, created) = stack.post(
        "/v1/containers?run=true",
        &member.token,
        &json!({"name": name, "image": IMAGE, "command": ["sleep", "300"],
                "labels": {"berth.test": std::env::var("BERTH_TEST_RUN_ID").unwrap_or_default()}}),
    );
    assert_eq!(status, 202, "member creates: {created}\n{}", stack.log());
    let id = created["uuid"].as_str().unwrap().to_owned();
    let _guard = DockerGuard(id.clone());
    assert_eq!(created["project_id"], project.as_str(), "{created}");
    assert_eq!(created["user_id"], member.user_id.as_str(), "{created}");

    // The container really runs, on tenant-a's host.
    let mut polling = ks.token(&ks.member);
    let shown = wait_for(
        "the member's container to run",
        Duration::from_secs(60),
        || {
            let t = ks.fresh(&ks.member, &mut polling);
            let (_, v) = stack.get(&format!("/v1/containers/{id}"), &t);
            (v["status"] == "Running").then_some(v)
        },
    );
    let member = ks.token(&ks.member);
    assert_eq!(shown["project_id"], project.as_str());
    assert_eq!(
        support::docker_inspect(&id, "{{index .Config.Labels \"berth.instance\"}}"),
        stack.instance.clone()
    );

    // The reader is in the same project: it sees the container, by id and by name.
    let reader = ks.token(&ks.reader);
    assert_eq!(reader.project_id, project);
    let (status, list) = stack.get("/v1/containers", &reader.token);
    assert_eq!(status, 200, "reader lists: {list}");
    assert_eq!(list["containers"][0]["uuid"], id.as_str(), "{list}");
    let (status, _) = stack.get(&format!("/v1/containers/{name}"), &reader.token);
    assert_eq!(status, 200);

    // Tokens from an application credential and from a trust carry the project too.
    for (how, t) in [
        (
            "application credential",
            ks.application_credential_token(&member),
        ),
        ("trust", ks.trust_token(&member)),
    ] {
        assert_eq!(t.project_id, project, "{how}");
        let (status, list) = stack.get("/v1/containers", &t.token);
        assert_eq!(status, 200, "{how} token lists: {list}\n{}", stack.log());
        assert_eq!(list["containers"][0]["uuid"], id.as_str(), "{how}: {list}");
    }

    // Roles come from Keystone: neither reader nor member is admin, so neither may
    // look across projects; a reader may not create.
    for (who, t) in [("reader", &reader.token), ("member", &member.token)] {
        let (status, body) = stack.get("/v1/containers?all_projects=True", t);
        assert_eq!(status, 403, "{who} all_projects: {body}");
        assert_eq!(body["errors"][0]["code"], "container.policy-not-authorized");
    }
    let (status, body) = stack.post(
        "/v1/containers",
        &reader.token,
        &json!({"image": IMAGE, "command": ["sleep", "300"]}),
    );
    assert_eq!(status, 403, "reader creates: {body}");

    // Keystone is the identity service: the embedded one issues no tokens here.
    let r = http()
        .post(format!("{}/identity/v3/auth/tokens", stack.api))
        .json(
            &json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": ks.member.0, "domain": {"id": "default"}, "password": ks.member.1}}}}}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.headers().get("X-Subject-Token").is_none());
    let body: Value = r.json().unwrap();
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&ks.url),
        "the refusal points at Keystone: {body}"
    );

    let member = ks.token(&ks.member);
    let r = http()
        .delete(format!("{}/v1/containers/{id}?stop=true", stack.api))
        .header("X-Auth-Token", &member.token)
        .header("OpenStack-API-Version", "container 1.40")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204, "member deletes its container");
    wait_for("the container to be gone", Duration::from_secs(60), || {
        let t = ks.fresh(&ks.member, &mut polling);
        let (status, _) = stack.get(&format!("/v1/containers/{id}"), &t);
        (status == 404).then_some(())
    });
}

#[test]
fn revoked_tampered_and_garbage_tokens_are_rejected_with_401_in_zun_format() {
    let ks = keystone();
    // A short cache: a revocation must take effect within it.
    let ttl = 2;
    let stack = Stack::start(
        &ks,
        Options {
            keystone_url: &ks.url,
            cache_ttl: ttl,
            jws_public_dir: None,
            host_for: None,
        },
    );
    let member = ks.token(&ks.member);
    let (status, body) = stack.get("/v1/containers", &member.token);
    assert_eq!(status, 200, "{body}\n{}", stack.log());

    ks.revoke(&member.token);
    wait_for(
        "the revoked token to be refused",
        Duration::from_secs(ttl + 10),
        || {
            let r = stack.get("/v1/containers", &member.token);
            (r.0 != 200).then_some(r)
        },
    );
    assert_zun_401("revoked", stack.get("/v1/containers", &member.token));

    let fresh = ks.token(&ks.member);
    assert_zun_401(
        "tampered",
        stack.get("/v1/containers", &tampered(&fresh.token)),
    );
    // The genuine one still works: only the tampering was refused.
    assert_eq!(stack.get("/v1/containers", &fresh.token).0, 200);
    assert_zun_401("garbage", stack.get("/v1/containers", "not-a-token"));
    let r = http()
        .get(format!("{}/v1/containers", stack.api))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "no token at all");
    assert!(
        !stack.log().contains(&fresh.token),
        "the service logged a token"
    );
}

#[test]
fn an_expired_token_is_rejected_though_the_cache_ttl_has_not_run_out() {
    let ks = keystone();
    let stack = Stack::start(
        &ks,
        Options {
            keystone_url: &ks.url,
            cache_ttl: 3600,
            jws_public_dir: None,
            host_for: None,
        },
    );
    let member = ks.token(&ks.member);
    // Accepted (and cached) until it expires; refused from then on although an hour of
    // cache time is left.
    let refused = wait_for("the token to expire", Duration::from_secs(120), || {
        let (status, body) = stack.get("/v1/containers", &member.token);
        if status == 200 {
            return None;
        }
        Some((status, body, Utc::now()))
    });
    assert!(
        refused.2 >= member.expires_at,
        "refused at {} before it expired at {}: {}",
        refused.2,
        member.expires_at,
        refused.1
    );
    assert_zun_401("expired", (refused.0, refused.1));

    // Berth's own service token (as short-lived as the member's) has expired too by
    // now: a new member token is still validated, with a new service token.
    let again = ks.token(&ks.member);
    let (status, body) = stack.get("/v1/containers", &again.token);
    assert_eq!(status, 200, "{body}\n{}", stack.log());
}

#[test]
fn with_keystones_public_keys_bad_tokens_are_refused_offline_and_good_ones_need_keystone() {
    let ks = keystone();
    // Nothing listens on this port: whatever gets past the offline check needs
    // Keystone and gets 503, whatever does not gets 401 without asking it.
    let dead = format!("http://127.0.0.1:{}/v3", free_port());
    let stack = Stack::start(
        &ks,
        Options {
            keystone_url: &dead,
            cache_ttl: 300,
            jws_public_dir: Some(&ks.jws_public_dir),
            host_for: None,
        },
    );
    let member = ks.token(&ks.member);

    let (status, body) = stack.get("/v1/containers", &member.token);
    assert_eq!(status, 503, "a genuine token needs Keystone: {body}");
    assert_eq!(body["errors"][0]["code"], "container.service-unavailable");

    assert_zun_401(
        "tampered",
        stack.get("/v1/containers", &tampered(&member.token)),
    );
    // Keystone-shaped, for the right user and project, signed by another key.
    let forger = TokenSigner::new(SigningKey::generate().unwrap(), Duration::from_secs(600));
    let forged = forger
        .issue(&member.user_id, &member.project_id, "password")
        .unwrap();
    assert_zun_401("forged", stack.get("/v1/containers", &forged.token));

    // Once expired, the genuine token is refused offline too.
    wait_for("the token to expire", Duration::from_secs(120), || {
        (Utc::now() > member.expires_at).then_some(())
    });
    let expired = stack.get("/v1/containers", &member.token);
    assert_zun_401("expired", expired.clone());
    assert!(
        expired.1["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{}",
        expired.1
    );
}
