//! The container spec the agent tests start from: the test image running `command`
//! with 0.5 CPU and 64 MiB, labelled `berth.test=<label>` so it can be found and
//! cleaned up, and nothing else set.

use std::collections::BTreeMap;

use berth_proto::ContainerSpec;
use uuid::Uuid;

/// The image the test set-up builds (`scripts/build-test-image`).
pub const IMAGE: &str = "berth-test/busybox:latest";

pub fn container_spec(label: &str, command: &[&str]) -> ContainerSpec {
    ContainerSpec {
        uuid: Uuid::new_v4(),
        image: IMAGE.to_owned(),
        command: command.iter().map(|s| s.to_string()).collect(),
        entrypoint: None,
        environment: BTreeMap::new(),
        labels: BTreeMap::from([("berth.test".to_owned(), label.to_owned())]),
        workdir: None,
        hostname: None,
        cpu: 0.5,
        memory_mib: 64,
        ports: Vec::new(),
        restart_policy: "no".to_owned(),
        restart_max_retries: 0,
        interactive: false,
        tty: false,
        auto_remove: false,
        stdin_once: false,
        user: None,
        privileges: None,
        infra: None,
        registry_auth: None,
    }
}
