//! The agent's kubelet against the real Docker engine of this machine.
//!
//! Each test acts for a fresh random instance with its own state directory, drives the
//! agent's runtime directly (ApplyPod / InspectPod / DeletePod, as the relay would) and
//! removes every container and volume labelled with that instance when it ends, pass
//! or fail. The image is `berth-test/busybox:latest`, which also serves as the infra
//! image here (`sleep`), and the crash-loop backoff is scaled down (same algorithm).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_agent::{Agent, AgentSettings, PodSettings};
use berth_proto::pod::{
    ContainerState, PodContainer, PodPhase, PodRestartPolicy, PodSpec, PodStatus, PodVolume, Probe,
    ProbeHandler, VolumeMount, VolumeSource,
};
use berth_proto::{Command, Outcome};
use chrono::{DateTime, Utc};
use uuid::Uuid;

mod signing;
mod tls;

const IMAGE: &str = "berth-test/busybox:latest";
/// Generous: the engine shares two cores with other builds.
const DEADLINE: Duration = Duration::from_secs(120);

/// Removes the instance's containers, volumes and state directory when dropped.
struct Cleanup {
    instance: Uuid,
    state_dir: PathBuf,
}

fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label=berth.instance={}", self.instance);
        let ids = docker(&["ps", "-aq", "--filter", &filter]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(ids);
            docker(&args);
        }
        let volumes = docker(&["volume", "ls", "-q", "--filter", &filter]);
        let volumes: Vec<&str> = volumes.split_whitespace().collect();
        if !volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(volumes);
            docker(&args);
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

struct Bed {
    instance: Uuid,
    state_dir: PathBuf,
    base: Duration,
    max: Duration,
    _cleanup: Cleanup,
}

impl Bed {
    fn new(base_ms: u64, max_ms: u64) -> Bed {
        let instance = Uuid::new_v4();
        let state_dir = std::env::temp_dir().join(format!("berth-pods-test-{instance}"));
        Bed {
            instance,
            state_dir: state_dir.clone(),
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(max_ms),
            _cleanup: Cleanup {
                instance,
                state_dir,
            },
        }
    }

    /// An agent whose relay is nowhere (nothing listens on port 9): its pods run alone.
    async fn agent(&self) -> Agent {
        self.agent_of("wss://127.0.0.1:9".to_owned(), &tls::TestPki::new())
            .await
    }

    /// An agent and the listener standing for its relay (connections are accepted with
    /// a certificate of the returned PKI).
    async fn agent_with_relay(&self) -> (Agent, tokio::net::TcpListener, tls::TestPki) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("wss://{}", listener.local_addr().unwrap());
        let pki = tls::TestPki::new();
        let agent = self.agent_of(url, &pki).await;
        (agent, listener, pki)
    }

    async fn agent_of(&self, relay_url: String, pki: &tls::TestPki) -> Agent {
        Agent::connect(AgentSettings {
            relay_url,
            tls: pki.agent(self.instance),
            credential: "unused".to_owned(),
            service_key: signing::SERVICE_KEY_PEM.to_owned(),
            instance: self.instance,
            docker_host: None,
            pods: PodSettings {
                state_dir: Some(self.state_dir.clone()),
                backoff_base: self.base,
                backoff_max: self.max,
                backoff_reset: self.max * 2,
                infra_image: IMAGE.to_owned(),
                infra_command: Some(vec!["sleep".to_owned(), "2147483647".to_owned()]),
                resync: Duration::from_millis(200),
                stop_grace: Duration::from_secs(1),
            },
        })
        .await
        .expect("the agent connects to the local Docker engine")
    }
}

fn container(name: &str, script: &str) -> PodContainer {
    PodContainer {
        name: name.to_owned(),
        image: IMAGE.to_owned(),
        command: Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        args: None,
        env: BTreeMap::new(),
        workdir: None,
        cpu: 0.0,
        memory_mib: 0,
        volume_mounts: Vec::new(),
        stdin: false,
        tty: false,
        liveness_probe: None,
        readiness_probe: None,
        startup_probe: None,
    }
}

fn pod(policy: PodRestartPolicy, containers: Vec<PodContainer>) -> PodSpec {
    PodSpec {
        uuid: Uuid::new_v4(),
        name: "test-pod".to_owned(),
        generation: 1,
        restart_policy: policy,
        init_containers: Vec::new(),
        containers,
        volumes: Vec::new(),
        ports: Vec::new(),
        labels: BTreeMap::from([("berth.test".to_owned(), "1".to_owned())]),
        rollback_window_secs: 60,
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: false,
    }
}

async fn apply(agent: &Agent, spec: &PodSpec) -> PodStatus {
    match agent
        .runtime()
        .execute(Command::ApplyPod {
            spec: Box::new(spec.clone()),
        })
        .await
    {
        Ok(Outcome::Pod(status)) => status,
        other => panic!("ApplyPod answered {other:?}"),
    }
}

async fn inspect(agent: &Agent, pod: Uuid) -> (PodStatus, BTreeMap<String, serde_json::Value>) {
    match agent.runtime().execute(Command::InspectPod { pod }).await {
        Ok(Outcome::PodInspect { status, containers }) => (status, containers),
        other => panic!("InspectPod answered {other:?}"),
    }
}

/// Poll the pod's status until `ok` holds; panic with the last status after the deadline.
async fn wait_for(
    agent: &Agent,
    pod: Uuid,
    what: &str,
    ok: impl Fn(&PodStatus) -> bool,
) -> PodStatus {
    let start = Instant::now();
    loop {
        let (status, _) = inspect(agent, pod).await;
        if ok(&status) {
            return status;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for {what}; last status: {status:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn app<'a>(status: &'a PodStatus, name: &str) -> &'a berth_proto::pod::PodContainerStatus {
    status
        .container_statuses
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no status for container {name}: {status:#?}"))
}

fn running(status: &PodStatus, name: &str) -> bool {
    matches!(app(status, name).state, ContainerState::Running { .. })
}

fn engine_id(status: &PodStatus, name: &str) -> String {
    app(status, name)
        .container_id
        .clone()
        .expect("a running container has an id")
        .trim_start_matches("docker://")
        .to_owned()
}

fn exec(id: &str, script: &str) -> String {
    docker(&["exec", id, "sh", "-c", script])
}

#[tokio::test]
async fn two_containers_talk_over_localhost_and_share_an_empty_dir_and_files() {
    let bed = Bed::new(1000, 8000);
    let agent = bed.agent().await;
    let mut web = container(
        "web",
        "echo hello-from-web > /shared/index.html; exec httpd -f -p 8080 -h /shared",
    );
    web.volume_mounts = vec![mount("shared", "/shared"), mount("conf", "/conf")];
    let mut client = container(
        "client",
        "until wget -q -O /shared/fetched http://127.0.0.1:8080/index.html; do sleep 0.2; done; \
         exec sleep 3600",
    );
    client.volume_mounts = vec![mount("shared", "/shared")];
    let mut spec = pod(PodRestartPolicy::Always, vec![web, client]);
    spec.volumes = vec![
        PodVolume {
            name: "shared".to_owned(),
            source: VolumeSource::EmptyDir,
        },
        PodVolume {
            name: "conf".to_owned(),
            source: VolumeSource::Files {
                files: BTreeMap::from([("app/settings.ini".to_owned(), "mode=test\n".to_owned())]),
            },
        },
    ];
    apply(&agent, &spec).await;
    let status = wait_for(&agent, spec.uuid, "both containers running", |s| {
        s.phase == PodPhase::Running && running(s, "web") && running(s, "client")
    })
    .await;
    assert!(status.pod_ip.is_some(), "{status:#?}");
    let client_id = engine_id(&status, "client");
    let web_id = engine_id(&status, "web");
    let start = Instant::now();
    loop {
        // The client fetched over localhost and wrote into the shared volume; the web
        // container reads it from its own mount of that volume.
        if exec(&web_id, "cat /shared/fetched 2>/dev/null") == "hello-from-web" {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the client never fetched the page"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(exec(&web_id, "cat /conf/app/settings.ini"), "mode=test");
    assert_eq!(exec(&client_id, "cat /shared/index.html"), "hello-from-web");
    // Ready and conditions as kubelet reports them.
    let status = wait_for(&agent, spec.uuid, "the pod ready", |s| {
        s.conditions
            .iter()
            .any(|c| c.kind == "Ready" && c.status == "True")
    })
    .await;
    assert!(status.container_statuses.iter().all(|c| c.ready));

    // Pod containers are invisible to the per-container observation.
    let observed = agent.runtime().observe_all().await.unwrap();
    assert!(observed.is_empty(), "{observed:?}");

    // Show's data: the engine's inspect of each container, the infra one included.
    let (_, containers) = inspect(&agent, spec.uuid).await;
    assert!(containers.contains_key("POD") && containers.contains_key("web"));
    assert_eq!(containers["web"]["Id"].as_str(), Some(web_id.as_str()));

    // Delete leaves nothing behind.
    match agent
        .runtime()
        .execute(Command::DeletePod { pod: spec.uuid })
        .await
    {
        Ok(Outcome::Done) => {}
        other => panic!("DeletePod answered {other:?}"),
    }
    let filter = format!("label=berth.pod={}", spec.uuid);
    assert_eq!(docker(&["ps", "-aq", "--filter", &filter]), "");
    assert_eq!(docker(&["volume", "ls", "-q", "--filter", &filter]), "");
    assert!(agent
        .runtime()
        .execute(Command::InspectPod { pod: spec.uuid })
        .await
        .is_err());
}

fn terminated_times(state: &ContainerState) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    match state {
        ContainerState::Terminated {
            started_at: Some(s),
            finished_at: Some(f),
            ..
        } => Some((*s, *f)),
        _ => None,
    }
}

#[tokio::test]
async fn crash_loop_backoff_restarts_at_once_then_doubles_up_to_the_cap() {
    // Scaled: base 1 s, cap 4 s. Expected waits before restarts 1..6: 0, 1, 2, 4, 4, 4 s.
    let bed = Bed::new(1000, 4000);
    let agent = bed.agent().await;
    let spec = pod(PodRestartPolicy::Always, vec![container("crash", "exit 3")]);
    apply(&agent, &spec).await;
    // Every run the agent reports as the last state: (started, finished), by start.
    let mut runs: BTreeMap<DateTime<Utc>, DateTime<Utc>> = BTreeMap::new();
    let mut saw_backoff_message = false;
    let start = Instant::now();
    while runs.len() < 6 {
        let (status, _) = inspect(&agent, spec.uuid).await;
        let c = app(&status, "crash");
        if let Some((s, f)) = c.last_state.as_ref().and_then(terminated_times) {
            runs.insert(s, f);
        }
        if let ContainerState::Waiting { reason, message } = &c.state {
            if reason == "CrashLoopBackOff" {
                assert!(
                    message.as_deref().unwrap_or("").contains("back-off"),
                    "{message:?}"
                );
                assert_eq!(status.phase, PodPhase::Running, "Always: still Running");
                saw_backoff_message = true;
            }
        }
        assert!(start.elapsed() < DEADLINE * 2, "too few restarts: {runs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_backoff_message);
    let runs: Vec<(DateTime<Utc>, DateTime<Utc>)> = runs.into_iter().collect();
    let gaps: Vec<Duration> = runs
        .windows(2)
        .map(|w| (w[1].0 - w[0].1).to_std().unwrap_or_default())
        .collect();
    let ms: Vec<u128> = gaps.iter().map(Duration::as_millis).collect();
    // Lower bounds are the algorithm; upper bounds only generous sanity.
    assert!(ms[0] < 1000, "the first restart is immediate: {ms:?}");
    assert!(ms[1] >= 950, "then the base: {ms:?}");
    assert!(ms[2] >= 1950, "then doubled: {ms:?}");
    assert!(ms[3] >= 3950, "then doubled again: {ms:?}");
    assert!(
        ms[4] >= 3950 && ms[4] < 7500,
        "capped at the maximum, not 8 s: {ms:?}"
    );
    let (status, _) = inspect(&agent, spec.uuid).await;
    assert!(app(&status, "crash").restart_count >= 5, "{status:#?}");
}

#[tokio::test]
async fn on_failure_restarts_only_failures_and_never_restarts_nothing() {
    let bed = Bed::new(500, 2000);
    let agent = bed.agent().await;
    let on_failure = pod(
        PodRestartPolicy::OnFailure,
        vec![container("ok", "exit 0"), container("bad", "exit 1")],
    );
    let never = pod(
        PodRestartPolicy::Never,
        vec![container("ok", "exit 0"), container("bad", "exit 1")],
    );
    let never_ok = pod(PodRestartPolicy::Never, vec![container("ok", "exit 0")]);
    for spec in [&on_failure, &never, &never_ok] {
        apply(&agent, spec).await;
    }
    let status = wait_for(
        &agent,
        on_failure.uuid,
        "the failing container restarted twice",
        |s| app(s, "bad").restart_count >= 2,
    )
    .await;
    assert_eq!(status.phase, PodPhase::Running, "{status:#?}");
    let ok = app(&status, "ok");
    assert_eq!(ok.restart_count, 0, "{status:#?}");
    assert!(
        matches!(&ok.state, ContainerState::Terminated { exit_code: 0, reason, .. } if reason == "Completed"),
        "{status:#?}"
    );

    let status = wait_for(&agent, never.uuid, "the Never pod failed", |s| {
        s.phase == PodPhase::Failed
    })
    .await;
    let bad = app(&status, "bad");
    assert_eq!(bad.restart_count, 0);
    assert!(
        matches!(&bad.state, ContainerState::Terminated { exit_code: 1, reason, .. } if reason == "Error"),
        "{status:#?}"
    );
    assert_eq!(app(&status, "ok").restart_count, 0);

    let status = wait_for(&agent, never_ok.uuid, "the Never pod succeeded", |s| {
        s.phase == PodPhase::Succeeded
    })
    .await;
    assert_eq!(app(&status, "ok").restart_count, 0);
    // And it stays so: nothing restarts it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _) = inspect(&agent, never_ok.uuid).await;
    assert_eq!(status.phase, PodPhase::Succeeded);
    assert_eq!(app(&status, "ok").restart_count, 0);
}

#[tokio::test]
async fn init_containers_run_in_order_before_the_app_containers() {
    let bed = Bed::new(500, 2000);
    let agent = bed.agent().await;
    let mut first = container("first", "sleep 2; echo first >> /work/order");
    first.volume_mounts = vec![mount("work", "/work")];
    let mut second = container(
        "second",
        "test \"$(cat /work/order)\" = first && echo second >> /work/order",
    );
    second.volume_mounts = vec![mount("work", "/work")];
    let mut main = container("main", "echo main >> /work/order; exec sleep 3600");
    main.volume_mounts = vec![mount("work", "/work")];
    let mut spec = pod(PodRestartPolicy::Always, vec![main]);
    spec.init_containers = vec![first, second];
    spec.volumes = vec![PodVolume {
        name: "work".to_owned(),
        source: VolumeSource::EmptyDir,
    }];
    apply(&agent, &spec).await;
    // While the first init container runs, the app waits in PodInitializing.
    let status = wait_for(&agent, spec.uuid, "the first init container running", |s| {
        matches!(
            s.init_container_statuses[0].state,
            ContainerState::Running { .. }
        )
    })
    .await;
    assert_eq!(status.phase, PodPhase::Pending);
    assert!(
        matches!(&app(&status, "main").state, ContainerState::Waiting { reason, .. } if reason == "PodInitializing"),
        "{status:#?}"
    );
    let initialized = status
        .conditions
        .iter()
        .find(|c| c.kind == "Initialized")
        .unwrap();
    assert_eq!(initialized.status, "False");

    let status = wait_for(&agent, spec.uuid, "the app running", |s| running(s, "main")).await;
    assert!(status
        .init_container_statuses
        .iter()
        .all(|c| matches!(&c.state, ContainerState::Terminated { exit_code: 0, reason, .. } if reason == "Completed")));
    let id = engine_id(&status, "main");
    let start = Instant::now();
    while exec(&id, "cat /work/order") != "first\nsecond\nmain" {
        assert!(
            start.elapsed() < DEADLINE,
            "{}",
            exec(&id, "cat /work/order")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A failing init container with Never: the pod fails and the app never starts.
    let mut spec = pod(
        PodRestartPolicy::Never,
        vec![container("main", "sleep 3600")],
    );
    spec.init_containers = vec![container("gate", "exit 7")];
    apply(&agent, &spec).await;
    let status = wait_for(&agent, spec.uuid, "the pod failed", |s| {
        s.phase == PodPhase::Failed
    })
    .await;
    assert!(
        matches!(&app(&status, "main").state, ContainerState::Waiting { .. }),
        "{status:#?}"
    );
    assert!(app(&status, "main").container_id.is_none());
}

#[tokio::test]
async fn an_update_replaces_only_the_changed_container_and_a_bad_one_rolls_back() {
    let bed = Bed::new(300, 1200);
    let agent = bed.agent().await;
    let mut spec = pod(
        PodRestartPolicy::Always,
        vec![
            container("steady", "exec sleep 3600"),
            container("changing", "exec sleep 3600"),
        ],
    );
    spec.rollback_window_secs = 60;
    apply(&agent, &spec).await;
    let before = wait_for(&agent, spec.uuid, "both running", |s| {
        running(s, "steady") && running(s, "changing")
    })
    .await;
    let steady_id = engine_id(&before, "steady");
    let changing_id = engine_id(&before, "changing");

    let mut v2 = spec.clone();
    v2.generation = 2;
    v2.containers[1]
        .env
        .insert("VERSION".to_owned(), "2".to_owned());
    apply(&agent, &v2).await;
    let after = wait_for(&agent, spec.uuid, "generation 2 running", |s| {
        s.generation == 2
            && running(s, "changing")
            && app(s, "changing").container_id.as_deref()
                != Some(&format!("docker://{changing_id}"))
    })
    .await;
    assert_eq!(
        engine_id(&after, "steady"),
        steady_id,
        "unchanged container kept"
    );
    assert_eq!(
        app(&after, "changing").spec_hash,
        v2.containers[1].spec_hash()
    );
    let changed_id = engine_id(&after, "changing");
    assert_eq!(
        exec(&changed_id, "echo $VERSION"),
        "2",
        "the new container has the new spec"
    );

    // Generation 3 crash-loops: rolled back to generation 2 automatically.
    let mut v3 = v2.clone();
    v3.generation = 3;
    v3.containers[1].command = Some(vec!["sh".into(), "-c".into(), "exit 1".into()]);
    apply(&agent, &v3).await;
    let rolled = wait_for(&agent, spec.uuid, "the rollback", |s| s.rollback.is_some()).await;
    let rollback = rolled.rollback.clone().unwrap();
    assert_eq!(rollback.failed_generation, 3);
    assert_eq!(rollback.restored_generation, 2);
    assert!(rollback.reason.contains("changing"), "{rollback:?}");
    let restored = wait_for(&agent, spec.uuid, "generation 2 running again", |s| {
        s.generation == 2
            && running(s, "changing")
            && app(s, "changing").spec_hash == v2.containers[1].spec_hash()
    })
    .await;
    assert_eq!(engine_id(&restored, "steady"), steady_id);
    assert!(restored.rollback.is_some(), "visible in the status");
    // The service retrying the failed generation does not undo the rollback.
    apply(&agent, &v3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, _) = inspect(&agent, spec.uuid).await;
    assert_eq!(status.generation, 2);
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container() {
    let bed = Bed::new(300, 1200);
    let agent = bed.agent().await;
    let mut c = container(
        "probed",
        "touch /tmp/healthy; sleep 2; rm /tmp/healthy; exec sleep 3600",
    );
    c.liveness_probe = Some(Probe {
        handler: ProbeHandler::Exec {
            command: vec!["cat".into(), "/tmp/healthy".into()],
        },
        initial_delay_secs: 0,
        period_secs: 1,
        timeout_secs: 1,
        success_threshold: 1,
        failure_threshold: 1,
    });
    let mut spec = pod(PodRestartPolicy::Always, vec![c]);
    spec.rollback_window_secs = 0;
    apply(&agent, &spec).await;
    let status = wait_for(&agent, spec.uuid, "a restart after the probe failed", |s| {
        app(s, "probed").restart_count >= 1 && running(s, "probed")
    })
    .await;
    assert!(
        matches!(
            app(&status, "probed").last_state,
            Some(ContainerState::Terminated { .. })
        ),
        "{status:#?}"
    );
}

#[tokio::test]
async fn a_restarted_agent_keeps_its_pods_and_their_restart_counts() {
    let bed = Bed::new(300, 600);
    let agent = bed.agent().await;
    let spec = pod(
        PodRestartPolicy::Always,
        vec![
            container("flaky", "sleep 0.5; exit 1"),
            container("steady", "exec sleep 3600"),
        ],
    );
    apply(&agent, &spec).await;
    let status = wait_for(&agent, spec.uuid, "two restarts", |s| {
        app(s, "flaky").restart_count >= 2 && running(s, "steady")
    })
    .await;
    let steady_id = engine_id(&status, "steady");
    drop(agent);
    let (seen_before, _) = (status.clone(), ());
    // The agent is gone; its containers are not.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(docker(&["inspect", "-f", "{{.State.Running}}", &steady_id]) == "true");

    let agent = bed.agent().await;
    // No ApplyPod: the pod comes from the agent's own disk.
    let status = wait_for(
        &agent,
        spec.uuid,
        "restarts continuing after the agent restart",
        |s| app(s, "flaky").restart_count > app(&seen_before, "flaky").restart_count,
    )
    .await;
    assert_eq!(
        engine_id(&status, "steady"),
        steady_id,
        "running containers kept"
    );
    assert_eq!(status.generation, 1);
}

/// The relay's side of one agent connection: the next protocol message.
async fn next_message(
    ws: &mut tokio_tungstenite::WebSocketStream<berth_tls::ServerStream>,
) -> berth_proto::AgentToRelay {
    use futures_util::StreamExt as _;
    loop {
        let frame = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("the agent sends something in time")
            .expect("the connection is open")
            .expect("the frame is readable");
        match frame {
            tokio_tungstenite::tungstenite::Message::Text(text) => {
                return serde_json::from_str(&text).expect("the agent speaks the protocol")
            }
            tokio_tungstenite::tungstenite::Message::Ping(_)
            | tokio_tungstenite::tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

#[tokio::test]
async fn pods_are_reported_to_the_relay_after_the_state_and_on_every_change() {
    use berth_proto::{AgentToRelay, ContainerEvent, RelayToAgent};
    use futures_util::SinkExt as _;

    let bed = Bed::new(300, 1200);
    let (agent, listener, pki) = bed.agent_with_relay().await;
    // Applied while no relay is connected: the agent runs it anyway.
    let spec = pod(
        PodRestartPolicy::Always,
        vec![container("main", "exec sleep 3600")],
    );
    apply(&agent, &spec).await;
    wait_for(&agent, spec.uuid, "the pod running", |s| running(s, "main")).await;
    let runtime = agent.runtime().clone();
    let serving = tokio::spawn(agent.run_until_stopped());

    let (stream, _) = tokio::time::timeout(DEADLINE, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let (stream, identity) = pki.accept(stream).await;
    assert_eq!(identity, berth_tls::Identity::Instance(bed.instance));
    let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
    match next_message(&mut ws).await {
        AgentToRelay::State { containers, .. } => {
            assert!(
                containers.is_empty(),
                "pod containers are not in the state: {containers:?}"
            )
        }
        other => panic!("the first message was not the state: {other:?}"),
    }
    match next_message(&mut ws).await {
        AgentToRelay::Event {
            event: ContainerEvent::Pod { status },
            ..
        } => {
            assert_eq!(status.uuid, spec.uuid);
            assert_eq!(status.phase, PodPhase::Running);
        }
        other => panic!("expected the pod's status after the state: {other:?}"),
    }

    // An update through the relay: a reply, then Pod events up to the new generation.
    let mut v2 = spec.clone();
    v2.generation = 2;
    v2.containers[0].env.insert("V".to_owned(), "2".to_owned());
    let request = Uuid::new_v4();
    let apply_v2 = Command::ApplyPod {
        spec: Box::new(v2.clone()),
    };
    let command = RelayToAgent::Command {
        request,
        action: None,
        token: signing::command_token(bed.instance, request, None, &apply_v2),
        command: apply_v2,
    };
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        serde_json::to_string(&command).unwrap(),
    ))
    .await
    .unwrap();
    let mut replied = false;
    let mut running_v2 = false;
    while !(replied && running_v2) {
        match next_message(&mut ws).await {
            AgentToRelay::Reply { request: r, reply } if r == request => {
                assert!(matches!(reply, Ok(Outcome::Pod(_))), "{reply:?}");
                replied = true;
            }
            AgentToRelay::Event {
                event: ContainerEvent::Pod { status },
                ..
            } => {
                running_v2 |= status.generation == 2 && running(&status, "main");
            }
            AgentToRelay::Event { event, .. } => {
                panic!("only pod events are expected: {event:?}")
            }
            _ => {}
        }
    }
    runtime
        .execute(Command::DeletePod { pod: spec.uuid })
        .await
        .unwrap();
    loop {
        match next_message(&mut ws).await {
            AgentToRelay::Event {
                event: ContainerEvent::PodRemoved { uuid },
                ..
            } => {
                assert_eq!(uuid, spec.uuid);
                break;
            }
            AgentToRelay::Event {
                event: ContainerEvent::Pod { .. },
                ..
            } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    serving.abort();
}

#[tokio::test]
async fn an_update_to_an_image_that_cannot_be_pulled_backs_off_and_rolls_back() {
    let bed = Bed::new(300, 1200);
    let agent = bed.agent().await;
    let spec = pod(
        PodRestartPolicy::Always,
        vec![container("main", "exec sleep 3600")],
    );
    apply(&agent, &spec).await;
    let before = wait_for(&agent, spec.uuid, "running", |s| running(s, "main")).await;
    let mut v2 = spec.clone();
    v2.generation = 2;
    // Nothing listens there: the pull fails at once.
    v2.containers[0].image = "127.0.0.1:9/berth-test/missing:1".to_owned();
    apply(&agent, &v2).await;
    let rolled = wait_for(&agent, spec.uuid, "the rollback", |s| s.rollback.is_some()).await;
    let rollback = rolled.rollback.unwrap();
    assert_eq!(
        (rollback.failed_generation, rollback.restored_generation),
        (2, 1)
    );
    assert!(rollback.reason.contains("ImagePullBackOff"), "{rollback:?}");
    let after = wait_for(&agent, spec.uuid, "generation 1 running again", |s| {
        s.generation == 1 && running(s, "main")
    })
    .await;
    assert_eq!(app(&after, "main").image, IMAGE);
    assert_eq!(
        app(&after, "main").spec_hash,
        app(&before, "main").spec_hash
    );
}

#[tokio::test]
async fn unacknowledged_pod_events_are_sent_again_after_the_state_under_their_numbers_and_acknowledged_ones_are_not(
) {
    use berth_proto::{AgentToRelay, ContainerEvent, RelayToAgent};
    use futures_util::SinkExt as _;

    let bed = Bed::new(300, 1200);
    let (agent, listener, pki) = bed.agent_with_relay().await;
    let spec = pod(
        PodRestartPolicy::Always,
        vec![container("main", "exec sleep 3600")],
    );
    apply(&agent, &spec).await;
    wait_for(&agent, spec.uuid, "the pod running", |s| running(s, "main")).await;
    let serving = tokio::spawn(agent.run_until_stopped());

    let accept = || async {
        let (stream, _) = tokio::time::timeout(DEADLINE, listener.accept())
            .await
            .unwrap()
            .unwrap();
        let (stream, _) = pki.accept(stream).await;
        let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
        let session = match next_message(&mut ws).await {
            AgentToRelay::State { session, .. } => session.expect("the agent names its session"),
            other => panic!("the first message was not the state: {other:?}"),
        };
        (ws, session)
    };
    let pod_event = |message: AgentToRelay| match message {
        AgentToRelay::Event {
            seq,
            event: ContainerEvent::Pod { status },
            session,
        } => {
            assert_eq!(status.uuid, spec.uuid);
            (seq, session)
        }
        other => panic!("expected a pod event: {other:?}"),
    };

    // First connection: the pod's status arrives and is never acknowledged.
    let (mut ws, session) = accept().await;
    let (first, of) = pod_event(next_message(&mut ws).await);
    assert_eq!(of, Some(session));
    ws.close(None).await.unwrap();
    drop(ws);

    // Second connection: after the state, the same event again under its number.
    let (mut ws, again) = accept().await;
    assert_eq!(again, session, "one session per agent process");
    let (resent, _) = pod_event(next_message(&mut ws).await);
    assert_eq!(
        resent, first,
        "the unacknowledged event is sent again first"
    );
    // Then fresh statuses, numbered after it; acknowledge up to one of them.
    let (fresh, _) = loop {
        let (seq, of) = pod_event(next_message(&mut ws).await);
        if seq > first {
            break (seq, of);
        }
    };
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        serde_json::to_string(&RelayToAgent::Ack {
            session,
            seq: fresh,
        })
        .unwrap(),
    ))
    .await
    .unwrap();
    ws.close(None).await.unwrap();
    drop(ws);

    // Third connection: nothing acknowledged comes back.
    let (mut ws, _) = accept().await;
    let (next, _) = pod_event(next_message(&mut ws).await);
    assert!(
        next > fresh,
        "acknowledged events are not sent again ({next} after the ack of {fresh})"
    );
    serving.abort();
}
