//! `GET /containers/{id}/stats`: a container's resource usage, as `docker stats` reads
//! it.
//!
//! The readings are the engine's own stats JSON, read on the container's instance by
//! its agent and streamed through relay and service ([`crate::containers::stats`]);
//! only `id` and `name` are replaced by the ones this endpoint shows. With
//! `stream=true` (the default) a reading follows about every second until the
//! container stops or the client goes away; `stream=false` sends one. A container that
//! is not running gets one reading with no figures, as moby answers.

use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};

use super::streams::{channel_body, streaming_response};
use super::{ids, json, Call, Cx, DockerError, Response};
use crate::api::error::ApiError;
use crate::db::models::ContainerRow;
use crate::domain::ContainerStatus;
use crate::policy::Target;

/// `GET /containers/{id}/stats?stream=&one-shot=`.
pub async fn stats(cx: &Cx, id: &str, call: Call) -> Result<Response, DockerError> {
    let stream = call.query.bool("stream", true);
    let one_shot = call.query.bool("one-shot", false);
    if stream && one_shot {
        return Err(DockerError::bad_request(
            "cannot have stream=true and one-shot=true; one-shot needs stream=false",
        ));
    }
    cx.state()
        .policy
        .enforce("container:stats", &cx.ctx, &Target::own(&cx.ctx))
        .map_err(|d| DockerError::from(ApiError::from(d)))?;
    let row = ids::find(cx, id).await?;
    let running = matches!(
        ContainerStatus::from_db(&row.status),
        ContainerStatus::Running | ContainerStatus::Paused
    );
    if !running || row.instance_id.is_none() {
        return Ok(json(StatusCode::OK, &empty_reading(&row)));
    }
    let mut readings = crate::containers::stats(cx.state(), &row, stream).await?;
    // The first reading decides the status: an agent that cannot read the container
    // is an error response, not an empty 200.
    let first = match readings.next().await {
        Some(Ok(reading)) => reading,
        Some(Err(e)) => return Err(e.into()),
        None => return Ok(json(StatusCode::OK, &empty_reading(&row))),
    };
    if !stream {
        return Ok(json(StatusCode::OK, &as_shown(first, &row)));
    }
    let (tx, body) = channel_body();
    let container = row.id.clone();
    tokio::spawn(async move {
        let mut next = Some(Ok(first));
        while let Some(reading) = next {
            match reading {
                Ok(reading) => {
                    let mut line = serde_json::to_vec(&as_shown(reading, &row))
                        .expect("JSON values serialise");
                    line.push(b'\n');
                    if tx.send(Bytes::from(line)).await.is_err() {
                        // The client went away; dropping `readings` cancels the stream.
                        return;
                    }
                }
                Err(error) => {
                    tracing::warn!(container.id = %container, error = %error, "stats stream failed");
                    return;
                }
            }
            next = readings.next().await;
        }
    });
    Ok(streaming_response("application/json", body))
}

/// A reading with this endpoint's id and name for the container.
fn as_shown(mut reading: Value, row: &ContainerRow) -> Value {
    if let Some(fields) = reading.as_object_mut() {
        fields.insert("id".into(), Value::String(ids::docker_id(&row.id)));
        fields.insert("name".into(), Value::String(format!("/{}", row.name)));
    }
    reading
}

/// What moby sends for a container that is not running: names, no figures.
fn empty_reading(row: &ContainerRow) -> Value {
    json!({
        "id": ids::docker_id(&row.id),
        "name": format!("/{}", row.name),
        "read": "0001-01-01T00:00:00Z",
        "preread": "0001-01-01T00:00:00Z",
        "pids_stats": {},
        "blkio_stats": {
            "io_service_bytes_recursive": null,
            "io_serviced_recursive": null,
            "io_queue_recursive": null,
            "io_service_time_recursive": null,
            "io_wait_time_recursive": null,
            "io_merged_recursive": null,
            "io_time_recursive": null,
            "sectors_recursive": null
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "precpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0}, "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}},
        "memory_stats": {}
    })
}
