//! Fault drills (issue 7, part 6): Berth as separate processes — its own PostgreSQL,
//! two relays, `berth-service` with the `docker` instance provider, a host agent — with
//! the instances' agents in containers on a private Docker network. Each drill makes a
//! burst of creates in two projects, does one harmful thing in the middle of it, and
//! then requires, within 30 seconds (polled; a deadline, not a timing assertion):
//!
//! - the database and Docker agree: every settled row is backed by exactly one engine
//!   container in the matching state, and no engine container lacks a row;
//! - no container is lost or duplicated: every accepted create has its row, no name
//!   has two rows, no uuid two engine containers;
//! - every action is finished, and a failed one (or an Error row) says why.
//!
//! Afterwards each project must still be able to run a new container.
//!
//! Each drill runs in a cluster of its own, so the drills run concurrently. docs/FAULTS.md
//! describes them and how to run one.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::cluster::{docker_ok, Cluster, DbState, EngineContainer, Tenant};

/// How long after a drill the database and Docker have to agree.
const SETTLE: Duration = Duration::from_secs(30);
/// Creates per project in a burst.
const BURST_PER_PROJECT: usize = 5;

/// The outcome of one create of a burst.
#[derive(Debug, Clone)]
struct Create {
    tenant: usize,
    name: String,
    /// HTTP status and body, or the transport error.
    result: Result<(u16, Value), String>,
}

impl Create {
    /// The uuid of an accepted (202) create.
    fn accepted(&self) -> Option<String> {
        match &self.result {
            Ok((202, body)) => body["uuid"].as_str().map(str::to_owned),
            _ => None,
        }
    }
}

/// A burst of creates running in threads.
struct Burst {
    done: Arc<Mutex<Vec<Create>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    total: usize,
}

impl Burst {
    /// Starts `per_project` creates in each of `tenants` at once, named `<tag>-<p>-<i>`.
    fn start(
        cluster: &Arc<Cluster>,
        tenants: &Arc<Vec<Tenant>>,
        tag: &str,
        per_project: usize,
    ) -> Burst {
        let done = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for t in 0..tenants.len() {
            for i in 0..per_project {
                let (cluster, tenants, done) = (cluster.clone(), tenants.clone(), done.clone());
                let name = format!("{tag}-{t}-{i}");
                threads.push(std::thread::spawn(move || {
                    let result = cluster.create(&tenants[t], &name);
                    done.lock().unwrap().push(Create {
                        tenant: t,
                        name,
                        result,
                    });
                }));
            }
        }
        Burst {
            done,
            threads,
            total: tenants.len() * per_project,
        }
    }

    /// Waits until `n` creates have been answered (any answer), at most 60 s.
    fn wait_answered(&self, n: usize) {
        support::wait_for(
            &format!("{n} of the burst's creates to be answered"),
            Duration::from_secs(60),
            || (self.done.lock().unwrap().len() >= n.min(self.total)).then_some(()),
        );
    }

    /// Waits for every create to be answered.
    fn join(self) -> Vec<Create> {
        for t in self.threads {
            t.join().expect("a create thread panicked");
        }
        let done = self.done.lock().unwrap().clone();
        done
    }
}

/// A started cluster with two projects, each with one Running container (so that both
/// projects' instances and agents are up before the drill).
struct Bed {
    cluster: Arc<Cluster>,
    tenants: Arc<Vec<Tenant>>,
    /// Every create made so far (warm-up, bursts, the check afterwards).
    creates: Vec<Create>,
}

impl Bed {
    fn start() -> Bed {
        let cluster = Cluster::start();
        let tenants = vec![cluster.tenant("drill-a"), cluster.tenant("drill-b")];
        let mut bed = Bed {
            cluster: Arc::new(cluster),
            tenants: Arc::new(tenants),
            creates: Vec::new(),
        };
        bed.run_one_each("warm", Duration::from_secs(120));
        bed
    }

    /// Creates one container in each project and waits until both run.
    fn run_one_each(&mut self, tag: &str, timeout: Duration) {
        let mut ids = Vec::new();
        for t in 0..self.tenants.len() {
            let name = format!("{tag}-{t}");
            let result = self.cluster.create(&self.tenants[t], &name);
            let create = Create {
                tenant: t,
                name: name.clone(),
                result,
            };
            let id = create.accepted().unwrap_or_else(|| {
                panic!(
                    "create {name} was not accepted: {:?}\n{}",
                    create.result,
                    self.cluster.logs()
                )
            });
            ids.push((t, id));
            self.creates.push(create);
        }
        let (cluster, tenants) = (self.cluster.clone(), self.tenants.clone());
        let mut last = HashMap::new();
        let ok = support::wait_for_opt(timeout, || {
            ids.iter()
                .all(|(t, id)| {
                    let v = cluster.show(&tenants[*t], id);
                    let running = v
                        .as_ref()
                        .is_some_and(|v| v["status"] == "Running" && v["task_state"].is_null());
                    last.insert(id.clone(), v);
                    running
                })
                .then_some(())
        });
        if ok.is_none() {
            panic!(
                "the {tag} containers never ran: {last:?}\n{}",
                self.cluster.logs()
            );
        }
    }

    /// Polls until [`agreement`] holds, for at most [`SETTLE`] from `since`; panics with
    /// the last disagreement and every log otherwise.
    fn settle(&self, drill: &str, since: Instant) {
        let deadline = since + SETTLE;
        loop {
            let last = match agreement(&self.cluster, &self.creates) {
                Ok(summary) => {
                    eprintln!(
                        "{drill}: database and Docker agree {:.1?} after the drill: {summary}",
                        since.elapsed()
                    );
                    return;
                }
                Err(e) => e,
            };
            if Instant::now() > deadline {
                panic!(
                    "{drill}: 30 s after the drill the database and Docker still disagree:\n{last}\n{}",
                    self.cluster.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Records a burst's creates and reports what they got.
    fn absorb(&mut self, drill: &str, creates: Vec<Create>) {
        let accepted = creates.iter().filter(|c| c.accepted().is_some()).count();
        let refused: Vec<String> = creates
            .iter()
            .filter(|c| c.accepted().is_none())
            .map(|c| match &c.result {
                Ok((s, b)) => format!("{}: {s} {b}", c.name),
                Err(e) => format!("{}: {e}", c.name),
            })
            .collect();
        eprintln!(
            "{drill}: {accepted} of {} creates accepted; not accepted: {refused:?}",
            creates.len()
        );
        self.creates.extend(creates);
    }

    /// After a drill: both projects can still run a container.
    fn still_works(&mut self, drill: &str) {
        self.run_one_each(&format!("{drill}-after"), Duration::from_secs(60));
        self.settle(
            &format!("{drill} (after the new containers)"),
            Instant::now(),
        );
    }
}

/// Whether the database and Docker agree and every action is done: a summary if so,
/// else what disagrees.
fn agreement(cluster: &Cluster, creates: &[Create]) -> Result<String, String> {
    let DbState {
        containers,
        actions,
    } = cluster
        .db_state()
        .map_err(|e| format!("the database cannot be read: {e}"))?;
    let engine = cluster.engine_containers();
    let mut problems = Vec::new();

    let mut on_engine: HashMap<&str, Vec<&EngineContainer>> = HashMap::new();
    for e in &engine {
        on_engine.entry(e.uuid.as_str()).or_default().push(e);
    }
    let rows: HashSet<&str> = containers.iter().map(|r| r.id.as_str()).collect();
    let mut names: HashMap<(&str, &str), usize> = HashMap::new();
    let mut by_status: HashMap<&str, usize> = HashMap::new();

    for row in &containers {
        *names.entry((&row.project_id, &row.name)).or_default() += 1;
        *by_status.entry(&row.status).or_default() += 1;
        let found = on_engine.get(row.id.as_str()).map_or(&[][..], |v| &v[..]);
        let states: Vec<&str> = found.iter().map(|e| e.state.as_str()).collect();
        let what = format!(
            "container {} ({}, status {}, task_state {:?}, reason {:?}, instance {:?}; engine: {states:?})",
            row.id, row.name, row.status, row.task_state, row.status_reason, row.instance_id
        );
        if found.len() > 1 {
            problems.push(format!("duplicated on the engine: {what}"));
            continue;
        }
        if row.task_state.is_some() {
            problems.push(format!("still has a task in progress: {what}"));
            continue;
        }
        let engine_state = states.first().copied();
        let agrees = match row.status.as_str() {
            "Running" => engine_state == Some("running"),
            "Created" => engine_state == Some("created"),
            "Stopped" => matches!(engine_state, Some("exited" | "created")),
            "Paused" => engine_state == Some("paused"),
            "Error" => {
                if row
                    .status_reason
                    .as_deref()
                    .is_none_or(|r| r.trim().is_empty())
                {
                    problems.push(format!("Error without a reason: {what}"));
                }
                // An Error row may have no container (its create failed) or a dead
                // one, but not one that runs: then the database does not tell the truth.
                engine_state != Some("running")
            }
            // Creating, Deleting, Unknown, Rebuilding…: not settled.
            _ => false,
        };
        if !agrees {
            problems.push(format!("the database and Docker disagree: {what}"));
        }
    }
    for e in &engine {
        if !rows.contains(e.uuid.as_str()) {
            problems.push(format!(
                "engine container {} (berth.container {:?}, {}, instance {}) has no row",
                e.docker_id, e.uuid, e.state, e.instance
            ));
        }
    }
    for ((project, name), n) in &names {
        if *n > 1 {
            problems.push(format!("{n} rows named {name} in project {project}"));
        }
    }
    for c in creates {
        if let Some(id) = c.accepted() {
            if !rows.contains(id.as_str()) {
                problems.push(format!(
                    "accepted create {} (tenant {}, {id}) has no row",
                    c.name, c.tenant
                ));
            }
        }
    }
    let mut failed_actions = 0;
    for a in &actions {
        if !a.finished || a.result.is_none() {
            problems.push(format!(
                "action {} of container {} is not finished (result {:?})",
                a.action, a.container_id, a.result
            ));
        } else if a.result.as_deref() != Some("Success") {
            failed_actions += 1;
            if a.message.as_deref().is_none_or(|m| m.trim().is_empty()) {
                problems.push(format!(
                    "action {} of container {} failed ({:?}) without a reason",
                    a.action, a.container_id, a.result
                ));
            }
        }
    }
    if problems.is_empty() {
        let mut statuses: Vec<_> = by_status.into_iter().collect();
        statuses.sort();
        Ok(format!(
            "{} rows {statuses:?}, {} engine containers, {} actions ({failed_actions} failed, with reasons)",
            containers.len(),
            engine.len(),
            actions.len()
        ))
    } else {
        Err(problems.join("\n"))
    }
}

/// Drill 1: SIGKILL a relay in the middle of a burst of creates (10 creates in two
/// projects): the relay the first project's agent is connected through, so that at least
/// one agent must move to the other relay. The killed relay stays down until the
/// database and Docker agree again, then starts again for the check afterwards.
#[test]
fn a_relay_killed_during_a_burst_of_creates() {
    let mut bed = Bed::start();
    let agent = bed.cluster.agent_container_of(&bed.tenants[0].project_id);
    let relay = bed.cluster.wait_or_report(
        "the database to record the relay of the first project's agent",
        Duration::from_secs(30),
        |c| c.relay_of(&agent.instance),
    );
    let burst = Burst::start(&bed.cluster, &bed.tenants, "relay", BURST_PER_PROJECT);
    burst.wait_answered(3);
    bed.cluster.kill_relay(relay);
    let since = Instant::now();
    let creates = burst.join();
    bed.absorb("relay", creates);
    bed.settle("relay killed", since);
    let other = 1 - relay;
    let moved = bed.cluster.relay_of(&agent.instance);
    assert_eq!(
        moved,
        Some(other),
        "the agent of the first project should be on relay-{other} now\n{}",
        bed.cluster.logs()
    );
    bed.cluster.start_relay(relay);
    bed.still_works("relay");
}

/// Drill 2: take one project's agent off the network for 30 s (`docker network
/// disconnect` of its agent container from the private network it reaches the relay
/// through) while both projects create containers, then reconnect it.
#[test]
fn an_agent_cut_off_the_network_for_30_seconds() {
    let mut bed = Bed::start();
    let agent = bed.cluster.agent_container_of(&bed.tenants[0].project_id);
    let network = bed.cluster.network.clone();
    docker_ok(&[
        "network",
        "disconnect",
        "--force",
        &network,
        &agent.docker_id,
    ]);
    let cut_at = Instant::now();
    let burst = Burst::start(&bed.cluster, &bed.tenants, "partition", 3);
    // The relay and the agent ping each other every 5 s and drop a peer silent for
    // 15 s, so the database records the agent disconnected well within the 30 s.
    let mut noticed = None;
    while cut_at.elapsed() < Duration::from_secs(30) {
        if noticed.is_none() && !bed.cluster.agent_connected(&agent.instance) {
            noticed = Some(cut_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    docker_ok(&["network", "connect", &network, &agent.docker_id]);
    eprintln!(
        "partition: the database recorded the agent as disconnected: {}",
        noticed.map_or("never during the 30 s".to_owned(), |d| format!(
            "after {d:.1?}"
        ))
    );
    assert!(
        noticed.is_some(),
        "the service never recorded the partitioned agent as disconnected within 30 s\n{}",
        bed.cluster.logs()
    );
    let creates = burst.join();
    let since = Instant::now();
    bed.absorb("partition", creates);
    bed.settle("agent partitioned for 30 s", since);
    bed.still_works("partition");
}

/// Drill 3: SIGKILL the service in the middle of a burst of creates, then start it
/// again.
#[test]
fn the_service_killed_mid_create() {
    let mut bed = Bed::start();
    let burst = Burst::start(&bed.cluster, &bed.tenants, "service", BURST_PER_PROJECT);
    burst.wait_answered(3);
    bed.cluster.kill_service();
    let creates = burst.join();
    let since = Instant::now();
    bed.cluster.start_service();
    bed.absorb("service", creates);
    bed.settle("service killed", since);
    bed.still_works("service");
}

/// Drill 4: restart agents in the middle of a burst of creates: one project's agent
/// container (`docker restart`) and the host's agent process (SIGKILL, started again).
#[test]
fn agents_restarted_mid_create() {
    let mut bed = Bed::start();
    let agent = bed.cluster.agent_container_of(&bed.tenants[0].project_id);
    let burst = Burst::start(&bed.cluster, &bed.tenants, "agent", BURST_PER_PROJECT);
    burst.wait_answered(3);
    // -t 1: the agent is PID 1 of its container and would otherwise get 10 s to stop.
    docker_ok(&["restart", "-t", "1", &agent.docker_id]);
    bed.cluster.host_agent.kill9();
    bed.cluster.host_agent.start();
    let creates = burst.join();
    let since = Instant::now();
    bed.absorb("agent", creates);
    bed.settle("agents restarted", since);
    bed.still_works("agent");
}

/// Drill 5: stop the cluster's own PostgreSQL at once (`pg_ctl stop -m immediate`, as a
/// crash) in the middle of a burst of creates, and start it again.
#[test]
fn postgresql_restarted_mid_create() {
    let mut bed = Bed::start();
    let burst = Burst::start(&bed.cluster, &bed.tenants, "postgres", BURST_PER_PROJECT);
    burst.wait_answered(3);
    bed.cluster.pg.stop_immediate();
    let creates = burst.join();
    bed.cluster.pg.start_again();
    // A create the database could not take is a retriable 503 in Zun's format with a
    // code and a "retry shortly", never a 500 (an outage is not a bug in Berth).
    for c in &creates {
        if let Ok((status, body)) = &c.result {
            if *status >= 500 {
                let error = &body["errors"][0];
                assert_eq!(*status, 503, "{}: {body}", c.name);
                assert_eq!(
                    error["code"], "container.service-unavailable",
                    "{}: {body}",
                    c.name
                );
                let detail = error["detail"].as_str().unwrap_or_default();
                assert!(detail.contains("retry"), "{}: {body}", c.name);
            }
        }
    }
    let since = Instant::now();
    bed.absorb("postgres", creates);
    bed.settle("PostgreSQL restarted", since);
    bed.still_works("postgres");
}
