//! Resource usage streams: the engine's stats documents, passed through unchanged.
//!
//! Each reading the engine sends becomes one line of JSON (Docker's stats JSON, as
//! `GET /containers/{id}/stats` returns it) on [`Channel::Stdout`]. The stream is
//! pumped like any other ([`Runtime::serve_stream`]): readings are sent only as far
//! as the service's credit allows, and while it is spent the engine's stream is not
//! read, so a stalled reader holds at most one reading here.

use berth_proto::{AgentError, Channel};
use bollard::query_parameters::StatsOptions;
use futures_util::StreamExt as _;
use uuid::Uuid;

use super::errors::classify;
use super::streams::Output;
use super::Runtime;

impl Runtime {
    /// The readings of `container`: one and done (`stream == false`, with CPU figures
    /// over the engine's sampling interval, as `docker stats --no-stream` shows them),
    /// or one about every second until the container stops or the stream is cancelled.
    pub(super) async fn stats_output(
        &self,
        container: Uuid,
        stream: bool,
    ) -> Result<Output, AgentError> {
        self.require(container).await?;
        let options = StatsOptions {
            stream,
            // Without one-shot the engine waits for a second sample, so the first
            // reading carries the CPU usage of the interval in between.
            one_shot: false,
        };
        let instance = self.instance;
        let readings = self
            .docker
            .stats(&berth_proto::docker_name(container), Some(options));
        Ok(Box::pin(readings.map(move |reading| match reading {
            Ok(reading) => Ok((Channel::Stdout, reading_line(&reading))),
            Err(err) => Err(classify(
                "read the resource usage of",
                container,
                instance,
                &err,
            )),
        })))
    }
}

/// One reading as a line of JSON.
fn reading_line(reading: &bollard::models::ContainerStatsResponse) -> Vec<u8> {
    // A struct of numbers, strings and string-keyed maps: serde_json cannot fail on
    // it; an empty object would still be a well-formed (if empty) reading.
    let mut line = serde_json::to_vec(reading).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reading_is_one_line_of_docker_stats_json() {
        let reading: bollard::models::ContainerStatsResponse = serde_json::from_str(
            r#"{"id":"abc","name":"/berth-x","memory_stats":{"usage":1048576,"limit":2097152},
                "cpu_stats":{"cpu_usage":{"total_usage":10},"system_cpu_usage":100,"online_cpus":2}}"#,
        )
        .expect("a Docker stats document");
        let line = reading_line(&reading);
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: serde_json::Value = serde_json::from_slice(&line).expect("JSON");
        assert_eq!(back["memory_stats"]["usage"], 1048576);
        assert_eq!(back["cpu_stats"]["online_cpus"], 2);
        assert_eq!(back["name"], "/berth-x");
    }
}
