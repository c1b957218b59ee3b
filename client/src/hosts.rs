//! Hosts (`GET /v1/hosts`, administrators) and a project's own instances
//! (`GET /v1/instances`, a Berth extension), kept as the objects the server sends, and
//! their records for `osc host-list`, `host-show` and `instance-list`.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::output::Record;

/// A host or an instance as the server shows it (a JSON object). Fields differ between
/// servers and microversions, so none is required; the records below pick the known
/// ones in a fixed order and append the rest.
pub type ObjectView = Map<String, Value>;

/// The body of `GET /hosts`.
#[derive(Debug, Deserialize)]
pub(crate) struct HostList {
    #[serde(default)]
    pub hosts: Vec<ObjectView>,
    #[serde(default)]
    pub next: Option<String>,
}

/// The body of `GET /instances`.
#[derive(Debug, Deserialize)]
pub(crate) struct InstanceList {
    #[serde(default)]
    pub instances: Vec<ObjectView>,
}

/// Fields of a host, in the order `host-show` prints them (Zun's, then Berth's).
pub const HOST_FIELDS: &[&str] = &[
    "uuid",
    "hostname",
    "status",
    "status_reason",
    "project_id",
    "provider",
    "availability_zone",
    "address",
    "agent_connected",
    "agent_seen_at",
    "cpus",
    "cpu_used",
    "mem_total",
    "mem_used",
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
    "created_at",
    "updated_at",
    "links",
];

/// Default columns of `host-list`.
pub const HOST_LIST_COLUMNS: &[&str] = &[
    "uuid",
    "hostname",
    "project_id",
    "provider",
    "status",
    "agent_connected",
    "total_containers",
];

/// Fields of an instance, in the order `instance-list -f json` gives them.
pub const INSTANCE_FIELDS: &[&str] = &[
    "uuid",
    "name",
    "status",
    "status_reason",
    "project_id",
    "provider",
    "availability_zone",
    "address",
    "agent_connected",
    "agent_seen_at",
    "cpus",
    "cpu_used",
    "mem_total",
    "mem_used",
    "disk_total",
    "total_containers",
    "created_at",
    "links",
];

/// Default columns of `instance-list`.
pub const INSTANCE_LIST_COLUMNS: &[&str] = &[
    "uuid",
    "name",
    "status",
    "agent_connected",
    "cpus",
    "mem_total",
    "total_containers",
];

/// An object as a record: the `known` fields first, in that order, then the others
/// (sorted by name).
pub fn object_record(view: &ObjectView, known: &[&str]) -> Record {
    let mut map = view.clone();
    let mut record = Record::new();
    for &name in known {
        if let Some(value) = map.remove(name) {
            record.push(name, value);
        }
    }
    let mut rest: Vec<(String, Value)> = map.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in rest {
        record.push(name, value);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn known_fields_come_first_in_order_and_unknown_ones_after() {
        let view: ObjectView = serde_json::from_value(json!({
            "zeta": 1, "status": "active", "uuid": "u1", "alpha": 2
        }))
        .unwrap();
        let record = object_record(&view, HOST_FIELDS);
        let names: Vec<&str> = record.names().collect();
        assert_eq!(names, ["uuid", "status", "alpha", "zeta"]);
    }
}
