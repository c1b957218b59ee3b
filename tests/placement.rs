//! Placement on a project's instances by capacity (the `docker` provider on the real
//! engine, with small instances: `berth up --instance-memory-mib`): a container that
//! fits no instance gets a new one, concurrent creates never overbook an instance (on
//! SQLite and PostgreSQL), pack and spread, and host ports taken on an instance.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::{
    docker_inspect, free_port, http, wait_for_opt, Berth, PgDatabase, ProjectUser, IMAGE,
};

/// The project's side of the API, with a token of one of its members.
struct Tenant<'a> {
    berth: &'a Berth,
    user: ProjectUser,
    token: String,
}

impl<'a> Tenant<'a> {
    fn new(berth: &'a Berth, project: &str) -> Tenant<'a> {
        let user = berth.project_user(project, &format!("{project}-member"), "member");
        let token = berth.token_as(&user);
        Tenant { berth, user, token }
    }

    /// POST /v1/containers?run=true: (status, body).
    fn create(&self, body: Value) -> (u16, Value) {
        let mut body = body;
        body["image"] = json!(IMAGE);
        body["command"] = json!(["sleep", "600"]);
        body["labels"] = json!({"berth.test": "placement"});
        let r = http()
            .post(format!("{}/v1/containers?run=true", self.berth.url))
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "container 1.40")
            .json(&body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// Creates a container of `memory` MiB; returns its view as accepted.
    fn accepted(&self, memory: i64, extra: Value) -> Value {
        let mut body = json!({"memory": memory.to_string(), "cpu": 0.1});
        if let Value::Object(m) = extra {
            for (k, v) in m {
                body[k] = v;
            }
        }
        let (status, v) = self.create(body);
        assert_eq!(status, 202, "create: {v}\nberth log:\n{}", self.berth.log());
        assert_eq!(v["status"], "Creating", "{v}");
        v
    }

    fn show(&self, id: &str) -> (u16, Value) {
        let r = http()
            .get(format!("{}/v1/containers/{id}", self.berth.url))
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "container 1.40")
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    fn list(&self) -> Vec<Value> {
        let v: Value = http()
            .get(format!("{}/v1/containers", self.berth.url))
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "container 1.40")
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["containers"].as_array().cloned().unwrap_or_default()
    }

    fn wait_running(&self, id: &str) -> Value {
        let mut last = Value::Null;
        wait_for_opt(Duration::from_secs(120), || {
            let (_, v) = self.show(id);
            last = v.clone();
            (v["status"] == "Running" && v["task_state"].is_null()).then_some(v)
        })
        .unwrap_or_else(|| {
            panic!(
                "container {id} never ran; last seen: {last}\nberth log:\n{}",
                self.berth.log()
            )
        })
    }

    fn delete(&self, id: &str) {
        let r = http()
            .delete(format!("{}/v1/containers/{id}?stop=true", self.berth.url))
            .header("X-Auth-Token", &self.token)
            .header("OpenStack-API-Version", "container 1.40")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204, "delete {id}");
        wait_for_opt(Duration::from_secs(60), || {
            (self.show(id).0 == 404).then_some(())
        })
        .unwrap_or_else(|| panic!("container {id} was never deleted"));
    }
}

fn id(v: &Value) -> String {
    v["uuid"].as_str().expect("a uuid").to_owned()
}

fn instance(v: &Value) -> String {
    v["instance_id"]
        .as_str()
        .unwrap_or_else(|| panic!("placed on an instance: {v}"))
        .to_owned()
}

/// The instance an agent labelled the container with on the engine.
fn engine_instance(id: &str) -> String {
    docker_inspect(id, "{{index .Config.Labels \"berth.instance\"}}")
        .unwrap_or_else(|| panic!("container berth-{id} exists on the engine"))
}

#[test]
fn a_container_that_fits_no_instance_gets_a_second_instance_of_its_project() {
    let berth = Berth::start_with_args(None, &["--instance-memory-mib", "256"]);
    let t = Tenant::new(&berth, "placement-grow");

    // The first container waits for the project's first instance; the second fits
    // beside it (128 + 128 = 256 MiB).
    let c1 = t.accepted(128, json!({}));
    assert_eq!(c1["task_state"], "waiting_for_instance", "{c1}");
    let i1 = instance(&c1);
    t.wait_running(&id(&c1));
    let c2 = t.accepted(128, json!({}));
    assert_eq!(
        instance(&c2),
        i1,
        "the second container fits the first instance"
    );
    assert_ne!(c2["task_state"], "waiting_for_instance", "{c2}");

    // The third fits no instance: a second one is made for it and it waits.
    let c3 = t.accepted(128, json!({}));
    assert_eq!(c3["task_state"], "waiting_for_instance", "{c3}");
    let i2 = instance(&c3);
    assert_ne!(i2, i1);
    assert_ne!(i2, berth.instance);
    for c in [&c2, &c3] {
        t.wait_running(&id(c));
    }
    assert_eq!(engine_instance(&id(&c1)), i1);
    assert_eq!(engine_instance(&id(&c2)), i1);
    assert_eq!(engine_instance(&id(&c3)), i2);
    let mut made = berth.docker_instances();
    made.sort();
    let mut expected = vec![i1.clone(), i2.clone()];
    expected.sort();
    assert_eq!(made, expected, "two agent containers, both the project's");

    // More than an instance holds can never be placed: refused at once, nothing made.
    let (status, v) = t.create(json!({"memory": "300"}));
    assert_eq!(status, 400, "{v}");
    assert!(v.to_string().contains("more than an instance holds"), "{v}");
    // A zone no instance is in, and where none is made, is refused too.
    let (status, v) = t.create(json!({"memory": "16", "availability_zone": "elsewhere"}));
    assert_eq!(status, 400, "{v}");
    assert!(
        v.to_string().contains("Availability zone 'elsewhere'"),
        "{v}"
    );
    // The zone the instances are in is honoured.
    let c4 = t.accepted(64, json!({"availability_zone": "nova"}));
    assert_eq!(instance(&c4), i2, "packed beside c3 in zone nova");

    // At the project's `instances` quota, a container that fits none of them is
    // refused like any quota (403, as Zun answers a create over quota) and no
    // instance is recorded.
    let admin_token = berth.token();
    let r = http()
        .put(format!("{}/v1/quotas/{}", berth.url, t.user.project_id))
        .header("X-Auth-Token", &admin_token)
        .header("OpenStack-API-Version", "container 1.40")
        .json(&json!({"instances": 2}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, v) = t.create(json!({"memory": "128"}));
    assert_eq!(status, 403, "{v}");
    assert!(v.to_string().contains("'instances'"), "{v}");
    assert_eq!(t.list().len(), 4, "the refused container was not recorded");
    assert_eq!(
        berth.docker_instances().len(),
        2,
        "no third instance was made"
    );
}

/// Fires `n` concurrent creates of 128 MiB at a project whose instances hold 256 MiB,
/// one of them already holding a container, and checks from the listing that no
/// instance holds more than two, then that they all run where they were placed.
fn concurrent_creates_never_overbook(berth: Berth) {
    let t = Tenant::new(&berth, "placement-race");
    let first = t.accepted(128, json!({}));
    let i1 = instance(&first);
    t.wait_running(&id(&first));

    const N: usize = 7;
    let placed: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|_| s.spawn(|| t.accepted(128, json!({}))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let listed = t.list();
    assert_eq!(listed.len(), N + 1);
    let mut per_instance: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in &listed {
        per_instance.entry(instance(c)).or_default().push(id(c));
    }
    for (inst, held) in &per_instance {
        assert!(
            held.len() <= 2,
            "instance {inst} holds {} containers of 128 MiB in 256 MiB: {held:?}",
            held.len()
        );
    }
    // Packed: the first instance is filled, and each new one is filled before the next
    // is made, so 8 containers take exactly 4 instances.
    assert_eq!(per_instance[&i1].len(), 2, "{per_instance:?}");
    assert_eq!(per_instance.len(), (N + 1).div_ceil(2), "{per_instance:?}");

    for c in &placed {
        t.wait_running(&id(c));
        assert_eq!(engine_instance(&id(c)), instance(c));
    }
    let mut made = berth.docker_instances();
    made.sort();
    let expected: Vec<String> = per_instance.keys().cloned().collect();
    assert_eq!(made, expected);
}

#[test]
fn concurrent_creates_at_an_instances_capacity_never_overbook_it_on_sqlite() {
    concurrent_creates_never_overbook(Berth::start_with_args(
        None,
        &["--instance-memory-mib", "256"],
    ));
}

#[test]
fn concurrent_creates_at_an_instances_capacity_never_overbook_it_on_postgresql() {
    let db = PgDatabase::create();
    concurrent_creates_never_overbook(Berth::start_with_args(
        Some(db.url.clone()),
        &["--instance-memory-mib", "256"],
    ));
}

/// Two active instances, the first half full (256 of 512 MiB), the second a quarter
/// (128): returns them and the instance a new 128 MiB container goes to.
fn next_placement(weigher: &str) -> (String, String, String) {
    let berth = Berth::start_with_args(
        None,
        &["--instance-memory-mib", "512", "--placement", weigher],
    );
    let t = Tenant::new(&berth, &format!("placement-{weigher}"));
    let c1 = t.accepted(256, json!({}));
    t.wait_running(&id(&c1));
    let c2 = t.accepted(256, json!({}));
    let c3 = t.accepted(128, json!({}));
    let (i1, i2) = (instance(&c1), instance(&c3));
    assert_eq!(instance(&c2), i1);
    assert_ne!(i2, i1, "c3 fits only a new instance");
    t.wait_running(&id(&c2));
    t.wait_running(&id(&c3));
    t.delete(&id(&c2));
    let c4 = t.accepted(128, json!({}));
    t.wait_running(&id(&c4));
    assert_eq!(engine_instance(&id(&c4)), instance(&c4));
    (i1, i2, instance(&c4))
}

#[test]
fn pack_puts_a_container_on_the_fullest_instance_it_fits() {
    let (fuller, emptier, chosen) = next_placement("pack");
    assert_eq!(chosen, fuller, "not the emptier {emptier}");
}

#[test]
fn spread_puts_a_container_on_the_emptiest_instance_it_fits() {
    let (fuller, emptier, chosen) = next_placement("spread");
    assert_eq!(chosen, emptier, "not the fuller {fuller}");
}

#[test]
fn a_host_port_published_on_an_instance_sends_the_next_container_with_it_to_another() {
    let berth = Berth::start();
    let t = Tenant::new(&berth, "placement-ports");
    let port = free_port();
    let spec = format!("pub:{port}:80");
    let c1 = t.accepted(64, json!({"published_ports": [spec]}));
    let i1 = instance(&c1);
    t.wait_running(&id(&c1));

    // The port is taken on i1: the next container publishing it waits for a new
    // instance rather than being refused or overbooking the port.
    let c2 = t.accepted(64, json!({"published_ports": [spec]}));
    assert_eq!(c2["task_state"], "waiting_for_instance", "{c2}");
    let i2 = instance(&c2);
    assert_ne!(i2, i1);
    // A container without that port still packs onto i1.
    let c3 = t.accepted(64, json!({}));
    assert_eq!(instance(&c3), i1);
    t.wait_running(&id(&c3));
    // The docker provider's instances share this host's network, so c2's port clashes
    // on the engine itself; on real instances (Nova) it would run. Either way it ends
    // on its own instance, never on i1.
    let settled = wait_for_opt(Duration::from_secs(120), || {
        let (_, v) = t.show(&id(&c2));
        (v["task_state"].is_null() && v["status"] != "Creating").then_some(v)
    })
    .unwrap_or_else(|| panic!("c2 never settled\nberth log:\n{}", berth.log()));
    assert_eq!(instance(&settled), i2, "{settled}");
}
