//! Zun registries used for pulls (microversion 1.31 `registry`), against `berth up`, the
//! real Docker engine, a real private registry (Debian's docker-registry with htpasswd)
//! and python-zunclient: `openstack appcontainer run --registry` pulls a private image
//! with the registry's credentials and reaches Running; without them, or with a wrong
//! password, the create fails with the engine's reason; another project's registry is a
//! 404 and creates nothing; the password is sealed in the database.
//! `scripts/test` exports BERTH_TEST_OPENSTACK (scripts/python-clients).

mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use support::docker::Registry;
use support::{log_tail, Berth, ProjectUser, IMAGE};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a container from `image` (with `--registry` when given; `sleep 600`, the
/// image's own command is `sh`) and waits for it to settle; returns its view.
fn run(b: &Berth, name: &str, registry: Option<&str>, image: &str) -> Value {
    run_as(b, None, name, registry, image)
}

fn run_as(
    b: &Berth,
    user: Option<&ProjectUser>,
    name: &str,
    registry: Option<&str>,
    image: &str,
) -> Value {
    let mut args = vec!["appcontainer", "run", "--name", name];
    if let Some(r) = registry {
        args.extend(["--registry", r]);
    }
    args.extend([image, "sleep", "600"]);
    let made = b.openstack_json(user, &args);
    let uuid = made["uuid"].as_str().expect("a uuid").to_owned();
    b.appcontainer_settled(user, &uuid, &["Running", "Error"], Duration::from_secs(180))
}

/// The engine refused the pull for want of (right) credentials, and said so.
fn assert_refused_pull(v: &Value, image: &str) {
    assert_eq!(v["status"], "Error", "{v}");
    let reason = v["status_reason"].as_str().unwrap_or_default();
    let lower = reason.to_lowercase();
    assert!(
        reason.contains(image) && lower.contains("could not be pulled"),
        "the reason names the image and the failed pull: {v}"
    );
    assert!(
        lower.contains("auth") || lower.contains("401") || lower.contains("denied"),
        "the reason gives the registry's refusal: {v}"
    );
}

#[test]
fn a_container_pulls_its_image_with_the_registry_credentials_of_its_project() {
    let registry = Registry::start();
    // Tagged copies of the test image under this registry's unique address; `seed`
    // removes each tag from the host engine (which the instances share), so every
    // container below has to pull its own.
    let anonymous = registry.seed(IMAGE, "team/busybox:anonymous");
    let wrong = registry.seed(IMAGE, "team/busybox:wrong");
    let good = registry.seed(IMAGE, "team/busybox:1");
    let theirs_image = registry.seed(IMAGE, "team/busybox:theirs");
    let b = Berth::start();

    let reg = b.openstack_json(
        None,
        &[
            "appcontainer",
            "registry",
            "create",
            "--name",
            "private",
            "--domain",
            &registry.addr,
            "--username",
            &registry.user,
            "--password",
            &registry.password,
        ],
    );
    assert_eq!(reg["password"], "***", "{reg}");
    let reg_uuid = reg["uuid"].as_str().unwrap().to_owned();
    b.openstack_json(
        None,
        &[
            "appcontainer",
            "registry",
            "create",
            "--name",
            "wrong-password",
            "--domain",
            &registry.addr,
            "--username",
            &registry.user,
            "--password",
            "not-the-password",
        ],
    );

    // The password is sealed at rest: the database files (with SQLite's write-ahead
    // log) never hold it, and do hold the sealed values.
    let mut stored = std::fs::read(b.data.path().join("berth.sqlite")).expect("the database");
    if let Ok(wal) = std::fs::read(b.data.path().join("berth.sqlite-wal")) {
        stored.extend(wal);
    }
    let holds = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(
        !holds(registry.password.as_bytes()) && !holds(b"not-the-password"),
        "the database holds a registry password in plain text"
    );
    assert!(holds(b"aes256gcm:"), "the sealed passwords are stored");

    // Without credentials the registry refuses the pull: a clear Error, no hang.
    let v = run(&b, "no-registry", None, &anonymous);
    assert_refused_pull(&v, &anonymous);
    // With a wrong password too.
    let v = run(&b, "wrong-password", Some("wrong-password"), &wrong);
    assert_refused_pull(&v, &wrong);

    // With the project's registry the pull succeeds and the container runs.
    let v = run(&b, "with-registry", Some("private"), &good);
    assert_eq!(
        v["status"],
        "Running",
        "{v}\nregistry log:\n{}\nberth log:\n{}",
        registry.log(),
        log_tail(&b.log(), 60)
    );
    assert_eq!(v["registry_id"], reg_uuid.as_str(), "{v}");
    assert_eq!(v["image"], good.as_str(), "{v}");
    assert!(
        registry.log().contains("/v2/team/busybox/manifests/1"),
        "the registry served the manifest:\n{}",
        registry.log()
    );
    // The credentials never reach the log.
    assert!(
        !b.log().contains(&registry.password),
        "berth's log holds the registry password"
    );

    // An image without a registry host is taken from the registry (as Zun does); by
    // now the tag is on the engine, so this one needs no pull of its own.
    let v = run(&b, "short-name", Some(&reg_uuid), "team/busybox:1");
    assert_eq!(v["status"], "Running", "{v}");
    assert_eq!(v["image"], good.as_str(), "{v}");

    // An image of another registry with these credentials is refused up front (400),
    // so they are never sent to another host.
    let out = b.openstack(
        None,
        &[
            "appcontainer",
            "create",
            "--registry",
            "private",
            "registry.example.com:5000/team/busybox:1",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("registry.example.com:5000"),
        "{}",
        text(&out)
    );
    // A registry that does not exist is Zun's 404.
    let out = b.openstack(
        None,
        &["appcontainer", "create", "--registry", "nosuch", &good],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("could not be found"), "{}", text(&out));

    // Another project cannot use ours, by uuid or by name: 404, nothing created.
    let olive = b.project_user("other", "olive", "member");
    for key in [reg_uuid.as_str(), "private"] {
        let out = b.openstack(
            Some(&olive),
            &["appcontainer", "run", "--registry", key, &good],
        );
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("could not be found"), "{}", text(&out));
    }
    let token = b.token_as(&olive);
    let resp = support::http()
        .post(format!("{}/v1/containers?run=true", b.url))
        .header("X-Auth-Token", &token)
        .header("OpenStack-API-Version", "container 1.40")
        .json(&json!({"image": good, "registry": reg_uuid}))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap_or(Value::Null);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["errors"][0]["status"], 404, "{body}");
    // Before 1.31 `registry` is not a create parameter (400).
    let resp = support::http()
        .post(format!("{}/v1/containers", b.url))
        .header("X-Auth-Token", &token)
        .header("OpenStack-API-Version", "container 1.30")
        .json(&json!({"image": good, "registry": "private"}))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let theirs = b.openstack(Some(&olive), &["appcontainer", "list", "-f", "json"]);
    assert!(theirs.status.success(), "{}", text(&theirs));
    let list: Value = serde_json::from_slice(&theirs.stdout).unwrap();
    assert_eq!(list, json!([]), "nothing was created for the other project");

    // The other project's own registry of the same name is its to use; its container
    // goes to an instance of its own (an agent container of the `docker` provider,
    // BERTH_AGENT_IMAGE), which gets the credentials through the relay alike.
    let olive_reg = b.openstack_json(
        Some(&olive),
        &[
            "appcontainer",
            "registry",
            "create",
            "--name",
            "private",
            "--domain",
            &registry.addr,
            "--username",
            &registry.user,
            "--password",
            &registry.password,
        ],
    );
    assert_ne!(olive_reg["uuid"], reg["uuid"]);
    let v = run_as(&b, Some(&olive), "theirs", Some("private"), &theirs_image);
    assert_eq!(
        v["status"],
        "Running",
        "{v}\nregistry log:\n{}\nberth log:\n{}",
        registry.log(),
        log_tail(&b.log(), 60)
    );
    assert_eq!(v["registry_id"], olive_reg["uuid"], "{v}");
    let instance = v["instance_id"].as_str().unwrap_or_default().to_owned();
    assert_ne!(instance, b.instance, "{v}");
    assert!(
        b.docker_instances().contains(&instance),
        "the other project's instance is an agent container: {v}"
    );
    let _ = b.openstack(
        Some(&olive),
        &["appcontainer", "delete", "--force", "theirs"],
    );

    for name in [
        "no-registry",
        "wrong-password",
        "with-registry",
        "short-name",
    ] {
        let _ = b.openstack(None, &["appcontainer", "delete", "--force", name]);
    }
}
