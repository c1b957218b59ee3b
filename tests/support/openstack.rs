//! The real OpenStack command line client from PyPI (python-openstackclient with
//! python-zunclient's `appcontainer` commands) against a `berth up`: `scripts/test`
//! installs it (scripts/python-clients) and exports BERTH_TEST_OPENSTACK, the venv's
//! `openstack` binary.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use super::{log_tail, success_stdout, wait_for_opt, Berth, ProjectUser};

/// The `openstack` binary named by BERTH_TEST_OPENSTACK.
pub fn openstack_path() -> PathBuf {
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

/// The `key` column of a `-f json` list, as text (a string as it is, anything else as
/// JSON).
pub fn column(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("a list: {list}"))
        .iter()
        .map(|v| match &v[key] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

/// `args` with `-f json` put before the first option: `appcontainer run/create` take
/// everything after the image as the container's command.
fn with_json_format<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = args.to_vec();
    let at = all
        .iter()
        .position(|a| a.starts_with('-'))
        .unwrap_or(all.len());
    all.splice(at..at, ["-f", "json"]);
    all
}

impl Berth {
    /// `cmd` (`openstack`, or a program that runs it) with the environment `openstack`
    /// needs to act as this deployment's admin (clouds.yaml), or as `user` (its OS_*).
    pub fn openstack_env(&self, user: Option<&ProjectUser>, mut cmd: Command) -> Command {
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // The client keeps caches under HOME; keep them in this deployment's directory.
            .env("HOME", self.data.path())
            .env("PYTHONWARNINGS", "ignore");
        match user {
            Some(u) => {
                for (k, v) in &u.env {
                    cmd.env(k, v);
                }
            }
            None => {
                cmd.env(
                    "OS_CLIENT_CONFIG_FILE",
                    self.data.path().join("clouds.yaml"),
                )
                .env("OS_CLOUD", "berth");
            }
        }
        cmd
    }

    /// Runs `openstack ARGS` as the admin or `user`.
    pub fn openstack(&self, user: Option<&ProjectUser>, args: &[&str]) -> Output {
        self.openstack_env(user, Command::new(openstack_path()))
            .args(args)
            .output()
            .expect("openstack runs")
    }

    /// Runs `openstack ARGS`, which must succeed; returns its stdout.
    pub fn openstack_ok(&self, user: Option<&ProjectUser>, args: &[&str]) -> String {
        success_stdout(
            &format!("openstack {args:?}"),
            self.openstack(user, args),
            &log_tail(&self.log(), 60),
        )
    }

    /// Runs `openstack ARGS`, which must fail; returns its stdout and stderr together.
    pub fn openstack_fails(&self, user: Option<&ProjectUser>, args: &[&str]) -> String {
        let out = self.openstack(user, args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.status.success(),
            "openstack {args:?} succeeded: {text}"
        );
        text
    }

    /// Runs `openstack ARGS -f json`, which must succeed; returns the parsed output.
    pub fn openstack_json(&self, user: Option<&ProjectUser>, args: &[&str]) -> Value {
        let out = self.openstack_ok(user, &with_json_format(args));
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("openstack {args:?}: not JSON ({e}): {out}"))
    }

    /// Waits until `openstack appcontainer show ID` (as the admin or `user`) reports one
    /// of `statuses` with no task running; returns that view.
    pub fn appcontainer_settled(
        &self,
        user: Option<&ProjectUser>,
        id: &str,
        statuses: &[&str],
        timeout: Duration,
    ) -> Value {
        let mut last = Value::Null;
        wait_for_opt(timeout, || {
            let v = self.openstack_json(user, &["appcontainer", "show", id]);
            let done = statuses.iter().any(|s| v["status"] == *s) && v["task_state"].is_null();
            last = v.clone();
            done.then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "container {id} never reached {statuses:?}; last seen: {last}\nberth log:\n{}",
                log_tail(&self.log(), 60)
            )
        })
    }
}
