//! Several relays (issue 7, parts 4 and 5): Berth as separate processes (the drills'
//! cluster: PostgreSQL, two `berth-relay`s, `berth-service` with the docker provider,
//! a host agent); every agent is given both relays. When the relay an instance's agent
//! uses is killed, the agent reports through the other one, the database records the
//! move (`agent_links`), and the service reaches the agent there — with the agent's
//! event numbering going on in the same session, so nothing is applied twice.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::cluster::{Cluster, Tenant};

/// Generous deadlines for a loaded machine; polled, never a timing assertion.
const DEADLINE: Duration = Duration::from_secs(90);

/// An instance's row of `agent_links`.
#[derive(Debug, Clone, PartialEq)]
struct Link {
    relay_url: Option<String>,
    session: Option<String>,
    last_seq: i64,
}

fn link(cluster: &Cluster, instance: &str) -> Option<Link> {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        relay_url: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        session: Option<String>,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        last_seq: i64,
    }
    let mut conn = cluster.pg.connect().ok()?;
    diesel::sql_query("SELECT relay_url, session, last_seq FROM agent_links WHERE instance_id = $1")
        .bind::<diesel::sql_types::Text, _>(instance)
        .load::<Row>(&mut conn)
        .ok()?
        .pop()
        .map(|r| Link {
            relay_url: r.relay_url,
            session: r.session,
            last_seq: r.last_seq,
        })
}

/// The index in `cluster.relays` of the relay at `url` (each relay logs its address).
fn relay_index(cluster: &Cluster, url: &str) -> usize {
    let address = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
    let found: Vec<usize> = (0..cluster.relays.len())
        .filter(|&i| cluster.relays[i].printed(address))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one relay should listen on {address}\n{}",
        cluster.logs()
    );
    found[0]
}

/// Creates a running container and waits until the API shows it Running; its uuid.
fn create_running(cluster: &Cluster, tenant: &Tenant, name: &str) -> String {
    let (status, body) = cluster.create(tenant, name).expect("the API answers");
    assert_eq!(status, 202, "create {name}: {body}");
    let id = body["uuid"].as_str().expect("a uuid").to_owned();
    wait_status(cluster, tenant, &id, "Running");
    id
}

fn wait_status(cluster: &Cluster, tenant: &Tenant, id: &str, wanted: &str) -> Value {
    cluster.wait_or_report(&format!("container {id} to be {wanted}"), DEADLINE, |c| {
        let shown = c.show(tenant, id)?;
        assert_ne!(
            shown["status"],
            "Error",
            "container {id} failed: {shown}\n{}",
            c.logs()
        );
        (shown["status"] == wanted).then_some(shown)
    })
}

/// `POST /v1/containers/{id}/{action}` (start, stop, ...), which must be accepted.
fn act(cluster: &Cluster, tenant: &Tenant, id: &str, action: &str) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/v1/containers/{id}/{action}", cluster.url))
        .header("X-Auth-Token", &tenant.token)
        .header("OpenStack-API-Version", "container 1.40")
        .send()
        .expect("the API answers");
    assert_eq!(r.status().as_u16(), 202, "{action}: {:?}", r.text());
}

fn instance_of(cluster: &Cluster, container: &str) -> String {
    let state = cluster.db_state().expect("the database answers");
    state
        .containers
        .iter()
        .find(|c| c.id == container)
        .and_then(|c| c.instance_id.clone())
        .expect("the container is placed on an instance")
}

#[test]
fn an_agent_moves_to_the_other_relay_when_its_relay_is_killed_and_the_service_finds_it_there() {
    let cluster = Cluster::start();
    let tenant = cluster.tenant("relays");
    let first = create_running(&cluster, &tenant, "relays-first");
    let instance = instance_of(&cluster, &first);

    let before = cluster.wait_or_report("the agent's link to be recorded", DEADLINE, |c| {
        link(c, &instance).filter(|l| l.relay_url.is_some() && l.session.is_some())
    });
    let used = before.relay_url.clone().unwrap();
    let dead = relay_index(&cluster, &used);
    cluster.kill_relay(dead);

    // The agent moves on to the other relay, and the database says so.
    let after = cluster.wait_or_report(
        "the agent to report through the other relay",
        DEADLINE,
        |c| link(c, &instance).filter(|l| l.relay_url.as_ref().is_some_and(|r| *r != used)),
    );
    assert_eq!(
        after.session, before.session,
        "the same agent process keeps its session across relays"
    );
    assert!(after.last_seq >= before.last_seq, "{before:?} → {after:?}");

    // The service finds the agent there: a new container runs on the same instance,
    // and the first one stops.
    let second = create_running(&cluster, &tenant, "relays-second");
    assert_eq!(instance_of(&cluster, &second), instance);
    act(&cluster, &tenant, &first, "stop");
    wait_status(&cluster, &tenant, &first, "Stopped");

    // The stop's event was numbered after everything before the move, in the same
    // session, and recorded once.
    let last = cluster.wait_or_report("the stop's event to be recorded", DEADLINE, |c| {
        link(c, &instance).filter(|l| l.last_seq > after.last_seq)
    });
    assert_eq!(last.session, before.session);
    assert_eq!(last.relay_url, after.relay_url);

    // The killed relay comes back; the agent stays where it is and keeps working.
    cluster.start_relay(dead);
    act(&cluster, &tenant, &first, "start");
    wait_status(&cluster, &tenant, &first, "Running");

    // Creates in flight when the agent's relay dies: each completes once the agent
    // is found on the other relay (retried under the same action id), and none makes
    // a second container.
    let now_on = link(&cluster, &instance).and_then(|l| l.relay_url).unwrap();
    let burst: Vec<String> = (0..4)
        .map(|i| {
            let (status, body) = cluster
                .create(&tenant, &format!("relays-burst-{i}"))
                .expect("the API answers");
            assert_eq!(status, 202, "{body}");
            body["uuid"].as_str().unwrap().to_owned()
        })
        .collect();
    cluster.kill_relay(relay_index(&cluster, &now_on));
    for id in &burst {
        wait_status(&cluster, &tenant, id, "Running");
    }
    let engine = cluster.engine_containers();
    for id in &burst {
        let copies = engine.iter().filter(|c| c.uuid == *id).count();
        assert_eq!(
            copies, 1,
            "container {id} exists {copies} times on the engine"
        );
    }
}
