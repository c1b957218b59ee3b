//! `GET /v1/containers/{id}/stats`: Zun's snapshot of a container's resource usage.
//!
//! Zun answers with one flat map whose keys are column headings
//! (`openstack appcontainer stats` prints it as a table). The figures come from one
//! reading of the engine's stats, read through relay and agent like every other
//! runtime operation ([`crate::containers::stats`]).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::enforce_own;
use super::error::ApiError;
use super::params::Params;
use crate::containers::{self as service, find, Scope};
use crate::domain::ContainerStatus;
use crate::identity::RequestContext;
use crate::state::AppState;

/// Registers the stats route (relative to `/v1`).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/containers/{id}/stats", web::get().to(stats));
}

async fn stats(
    state: web::Data<AppState>,
    ctx: RequestContext,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    enforce_own(&state, &ctx, "container:stats")?;
    Params::parse_only(&req, b"", &[])?;
    let row = find(&state, &ctx, &path, Scope::Own).await?;
    service::require_status(&row, &[ContainerStatus::Running], "stats")?;
    let mut readings = service::stats(&state, &row, false).await?;
    let reading = readings.next().await.transpose()?.ok_or_else(|| {
        ApiError::Unavailable(format!(
            "The agent of container {} sent no resource usage reading; retry.",
            row.id
        ))
    })?;
    Ok(HttpResponse::Ok().json(summary(&row.name, &reading)))
}

/// Zun's summary of one Docker stats reading.
///
/// CPU % is the usage between the reading's two samples, as `docker stats` computes
/// it (falling back to usage since boot when the reading has one sample only); memory
/// usage leaves out the inactive page cache, as Zun and the Docker CLI do.
fn summary(name: &str, reading: &Value) -> Value {
    let mib = |bytes: f64| bytes / 1024.0 / 1024.0;
    let memory = &reading["memory_stats"];
    let cache = ["total_inactive_file", "inactive_file"]
        .iter()
        .map(|key| number(&memory["stats"][key]))
        .find(|v| *v > 0.0)
        .unwrap_or(0.0);
    let usage = (number(&memory["usage"]) - cache).max(0.0);
    let limit = number(&memory["limit"]);
    let mem_percent = if limit > 0.0 {
        usage / limit * 100.0
    } else {
        0.0
    };
    let (mut read, mut write) = (0u64, 0u64);
    if let Some(entries) = reading["blkio_stats"]["io_service_bytes_recursive"].as_array() {
        for entry in entries {
            let value = entry["value"].as_u64().unwrap_or(0);
            match entry["op"].as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("read") => read = read.saturating_add(value),
                Some("write") => write = write.saturating_add(value),
                _ => {}
            }
        }
    }
    let (mut rx, mut tx) = (0u64, 0u64);
    if let Some(networks) = reading["networks"].as_object() {
        for interface in networks.values() {
            rx = rx.saturating_add(interface["rx_bytes"].as_u64().unwrap_or(0));
            tx = tx.saturating_add(interface["tx_bytes"].as_u64().unwrap_or(0));
        }
    }
    json!({
        "CONTAINER": name,
        "CPU %": cpu_percent(reading),
        "MEM USAGE(MiB)": mib(usage),
        "MEM LIMIT(MiB)": mib(limit),
        "MEM %": mem_percent,
        "BLOCK I/O(B)": format!("{read}/{write}"),
        "NET I/O(B)": format!("{rx}/{tx}"),
    })
}

/// CPU use in percent of one CPU, over the interval between the reading's samples.
fn cpu_percent(reading: &Value) -> f64 {
    let cpu = &reading["cpu_stats"];
    let pre = &reading["precpu_stats"];
    let total = number(&cpu["cpu_usage"]["total_usage"]);
    let system = number(&cpu["system_cpu_usage"]);
    let cpu_delta = total - number(&pre["cpu_usage"]["total_usage"]);
    let system_delta = system - number(&pre["system_cpu_usage"]);
    let online = match number(&cpu["online_cpus"]) {
        n if n > 0.0 => n,
        _ => cpu["cpu_usage"]["percpu_usage"]
            .as_array()
            .map_or(1.0, |cpus| cpus.len().max(1) as f64),
    };
    if number(&pre["system_cpu_usage"]) > 0.0 && system_delta > 0.0 && cpu_delta >= 0.0 {
        cpu_delta / system_delta * online * 100.0
    } else if system > 0.0 {
        total / system * 100.0
    } else {
        0.0
    }
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_becomes_zuns_summary() {
        let reading = json!({
            "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000u64}, "system_cpu_usage": 20_000_000u64, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1_000_000u64}, "system_cpu_usage": 10_000_000u64},
            "memory_stats": {"usage": 6_291_456u64, "limit": 134_217_728u64, "stats": {"inactive_file": 2_097_152u64}},
            "blkio_stats": {"io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "read", "value": 4096},
                {"major": 8, "minor": 0, "op": "write", "value": 512},
                {"major": 8, "minor": 0, "op": "Read", "value": 4}
            ]},
            "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 7}, "eth1": {"rx_bytes": 1, "tx_bytes": 1}}
        });
        let s = summary("web", &reading);
        assert_eq!(s["CONTAINER"], "web");
        assert_eq!(s["CPU %"], 40.0);
        assert_eq!(s["MEM USAGE(MiB)"], 4.0);
        assert_eq!(s["MEM LIMIT(MiB)"], 128.0);
        assert_eq!(s["MEM %"], 3.125);
        assert_eq!(s["BLOCK I/O(B)"], "4100/512");
        assert_eq!(s["NET I/O(B)"], "101/8");
        let keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 7, "{keys:?}");
    }

    #[test]
    fn a_reading_without_figures_is_all_zero_not_an_error() {
        let s = summary(
            "idle",
            &json!({"blkio_stats": {"io_service_bytes_recursive": null}}),
        );
        assert_eq!(s["CPU %"], 0.0);
        assert_eq!(s["MEM %"], 0.0);
        assert_eq!(s["BLOCK I/O(B)"], "0/0");
        assert_eq!(s["NET I/O(B)"], "0/0");
    }
}
