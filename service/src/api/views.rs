//! The container view: the JSON shape of a container in Zun's API, built from rows.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::db::models::{ContainerRow, InstanceRow, PortRow};

/// Zun's timestamp format (`str()` of a naive datetime).
pub fn zun_time(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A container as the API shows it. `host` is only shown to admins, as in Zun.
pub fn container(
    public_url: &str,
    row: &ContainerRow,
    ports: &[PortRow],
    instance: Option<&InstanceRow>,
    is_admin: bool,
) -> Value {
    let list = |s: &str| serde_json::from_str::<Vec<String>>(s).unwrap_or_default();
    let map = |s: &str| serde_json::from_str::<BTreeMap<String, String>>(s).unwrap_or_default();
    let requested: Vec<berth_proto::PortBinding> =
        serde_json::from_str(&row.requested_ports).unwrap_or_default();
    let address = instance.map(|i| i.address.clone());
    let published: Vec<Value> = ports
        .iter()
        .map(|p| {
            json!({
                "host_ip": address,
                "host_port": p.host_port,
                "container_port": p.container_port,
                "protocol": p.protocol,
            })
        })
        .collect();
    let addresses = match &address {
        Some(addr) => json!({"berth": [{
            "addr": addr,
            "version": if addr.contains(':') { 6 } else { 4 },
            "port": null,
            "subnet_id": null,
            "preserve_on_delete": false,
        }]}),
        None => json!({}),
    };
    let mut v = json!({
        "uuid": row.id,
        "links": [
            {"href": format!("{public_url}/v1/containers/{}", row.id), "rel": "self"},
            {"href": format!("{public_url}/containers/{}", row.id), "rel": "bookmark"},
        ],
        "name": row.name,
        "image": row.image,
        "command": list(&row.command),
        "entrypoint": row.entrypoint.as_deref().map(list),
        "status": row.status,
        "status_reason": row.status_reason,
        "status_detail": row.status_detail,
        "task_state": row.task_state,
        "cpu": row.cpu,
        "memory": row.memory_mib.to_string(),
        "disk": 0,
        "environment": map(&row.environment),
        "labels": map(&row.labels),
        "workdir": row.workdir,
        "hostname": row.hostname,
        "ports": requested.iter().map(|p| p.container_port).collect::<Vec<_>>(),
        "published_ports": published,
        "addresses": addresses,
        "restart_policy": {"Name": row.restart_policy, "MaximumRetryCount": row.restart_max_retries.to_string()},
        "interactive": row.interactive,
        "tty": row.tty,
        "auto_remove": row.auto_remove,
        "auto_heal": false,
        "image_driver": "docker",
        "security_groups": [],
        "healthcheck": {},
        "cpu_policy": "shared",
        "registry_id": row.registry_id,
        "instance_id": row.instance_id,
        "user_id": row.user_id,
        "project_id": row.project_id,
        "created_at": zun_time(row.created_at),
        "updated_at": zun_time(row.updated_at),
    });
    if is_admin {
        v["host"] = json!(instance.map(|i| i.name.clone()));
    }
    v
}
