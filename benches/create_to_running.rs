//! Create→running latency: Berth (API → relay → agent → Docker) against the same
//! operation done directly through the Docker API with bollard, in one run.
//!
//! `cargo bench --bench create_to_running` (N from BERTH_BENCH_N, default 30).
//! Needs the test image (`scripts/build-test-image`).

use std::time::{Duration, Instant};

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
};
use serde_json::{json, Value};

const IMAGE: &str = "berth-test/busybox:latest";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

struct Summary {
    p50: f64,
    p99: f64,
    mean: f64,
}

fn summarize(mut v: Vec<f64>) -> Summary {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Summary {
        p50: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
        mean: v.iter().sum::<f64>() / v.len() as f64,
    }
}

async fn token(http: &reqwest::Client, url: &str, password: &str) -> anyhow::Result<String> {
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "admin", "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}});
    let resp = http
        .post(format!("{url}/identity/v3/auth/tokens"))
        .json(&body)
        .send()
        .await?;
    Ok(resp.headers()["X-Subject-Token"].to_str()?.to_owned())
}

/// One container through Berth: POST run=true, then poll until Running.
async fn via_berth(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<(Duration, String)> {
    let t0 = Instant::now();
    let resp: Value = http
        .post(format!("{url}/v1/containers?run=true"))
        .header("X-Auth-Token", token)
        .json(&json!({"image": IMAGE, "command": ["sleep", "600"], "labels": {"berth.test": "bench"}}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let id = resp["uuid"].as_str().unwrap_or_default().to_owned();
    loop {
        let v: Value = http
            .get(format!("{url}/v1/containers/{id}"))
            .header("X-Auth-Token", token)
            .send()
            .await?
            .json()
            .await?;
        match v["status"].as_str() {
            Some("Running") => return Ok((t0.elapsed(), id)),
            Some("Error") => anyhow::bail!("container failed: {}", v["status_reason"]),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
        if t0.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("container {id} did not run within 60 s");
        }
    }
}

/// One container directly: create + start through the Docker API.
async fn direct(docker: &bollard::Docker, n: usize) -> anyhow::Result<(Duration, String)> {
    let name = format!("berth-bench-direct-{}-{n}", std::process::id());
    let t0 = Instant::now();
    let body = ContainerCreateBody {
        image: Some(IMAGE.into()),
        cmd: Some(vec!["sleep".into(), "600".into()]),
        labels: Some([("berth.test".to_owned(), "bench".to_owned())].into()),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default().name(&name).build();
    docker.create_container(Some(opts), body).await?;
    docker
        .start_container(&name, None::<StartContainerOptions>)
        .await?;
    Ok((t0.elapsed(), name))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("BERTH_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir()?;
    let up = berth::Embedded::start(berth::UpOptions {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        relay_listen: "127.0.0.1:0".parse()?,
        advertise_address: "127.0.0.1".parse()?,
        database_url: None,
        docker_host: None,
        agent_image: berth_service::providers::docker::DEFAULT_IMAGE.into(),
        token_ttl: Duration::from_secs(3600),
        policy_file: None,
        instance_idle_grace: berth_service::settings::DEFAULT_INSTANCE_IDLE_GRACE,
        agent_lost_after: berth_service::settings::DEFAULT_AGENT_LOST_AFTER,
        placement: Default::default(),
        docker_listen: None,
        docker_tls_listen: None,
        pods: Default::default(),
    })
    .await?;
    let url = up.public_url.clone();
    let password = up.admin_password.clone();
    let instance = up.instance;
    let running = tokio::spawn(up.run_until_stopped());
    let http = reqwest::Client::new();
    // Wait for the agent to connect: the first create would otherwise wait for it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let token = token(&http, &url, &password).await?;
    let docker = bollard::Docker::connect_with_local_defaults()?;

    // Warm-up, not counted.
    for i in 0..2 {
        via_berth(&http, &url, &token).await?;
        direct(&docker, 1000 + i).await?;
    }
    let (mut berth_ms, mut direct_ms) = (Vec::new(), Vec::new());
    let mut direct_names = Vec::new();
    for i in 0..n {
        // Interleaved so drift in the engine's speed affects both alike.
        let (d, _) = via_berth(&http, &url, &token).await?;
        berth_ms.push(d.as_secs_f64() * 1000.0);
        let (d, name) = direct(&docker, i).await?;
        direct_ms.push(d.as_secs_f64() * 1000.0);
        direct_names.push(name);
    }

    // Clean up every container either path made.
    let rm = RemoveContainerOptionsBuilder::default().force(true).build();
    let filters = [("label", vec!["berth.test=bench"])];
    let list = docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::default()
                .all(true)
                .filters(
                    &filters
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
                        .collect(),
                )
                .build(),
        ))
        .await?;
    for c in list {
        if let Some(id) = c.id {
            let _ = docker.remove_container(&id, Some(rm.clone())).await;
        }
    }
    running.abort();

    let b = summarize(berth_ms);
    let d = summarize(direct_ms);
    println!("create→running, N={n} each, image {IMAGE}, instance {instance}");
    println!(
        "{:<28} {:>9} {:>9} {:>9}",
        "path", "p50 ms", "p99 ms", "mean ms"
    );
    println!(
        "{:<28} {:>9.1} {:>9.1} {:>9.1}",
        "Berth (API→relay→agent)", b.p50, b.p99, b.mean
    );
    println!(
        "{:<28} {:>9.1} {:>9.1} {:>9.1}",
        "Docker API direct (bollard)", d.p50, d.p99, d.mean
    );
    println!(
        "ratio Berth/direct: p50 {:.2}, p99 {:.2}",
        b.p50 / d.p50,
        b.p99 / d.p99
    );
    Ok(())
}
