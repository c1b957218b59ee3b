//! Placement: which of a project's instances a new container goes to.
//!
//! Architecture invariant: only instances owned by the container's project are ever
//! candidates, so two projects' containers never share an instance. The database
//! enforces the same (a container row naming another project's instance is refused).
//!
//! [`choose`] is the decision, a pure function over candidate rows (and the clock):
//! filters (instance active with its agent connected or disconnected for less than
//! `agent_lost_after` — a relay restart or a short partition must not make the project
//! a new instance; the container waits for the agent — or being made; free cpu, memory and disk against
//! the instance's capacity; the requested host ports free; availability zone), then a
//! weigher (pack, the default, or spread). [`place`] reads the candidates and, when
//! none fits, records a new instance through the [`Provisioner`] within the project's
//! `instances` quota; the container then waits in Creating with task_state
//! [`WAITING_FOR_INSTANCE`].
//!
//! A container row is its reservation: from the moment it exists, its cpu, memory,
//! disk and host ports count against its instance, whatever its status, until the row
//! is deleted or moved off the instance. The database keeps what each instance holds
//! in counters on its row (`InstanceRow::cpu_used` and the others), updated by triggers
//! on `containers` in the same transaction as the container row, so every code path
//! keeps them right and placement reads them instead of summing. [`place`] must run
//! inside the transaction that inserts that row, after
//! [`crate::db::quotas::lock_project`]: every placement on a project's instances takes
//! the same lock, so two creates never both see the room only one of them can have.

use std::collections::HashSet;

use diesel::prelude::*;

use crate::db::models::InstanceRow;
use crate::db::quotas::{self, Exceeded};
use crate::db::schema::{container_ports, instances as instances_t};
use crate::db::{instances, DbConnection, DbError};
use crate::providers::Provisioner;
use crate::settings::{PlacementSettings, Weigher};

/// Task state of a container placed on an instance that is still being made.
pub const WAITING_FOR_INSTANCE: &str = "waiting_for_instance";

/// What a new container asks of its instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ask {
    /// vCPUs.
    pub cpu: f64,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// Disk, GB (0: none asked).
    pub disk_gb: i64,
    /// Explicit host ports to publish: (protocol, port).
    pub host_ports: Vec<(String, i32)>,
    /// Zun's `availability_zone`: only instances in this zone.
    pub availability_zone: Option<String>,
}

/// Resources in use on an instance: the sum over the containers placed on it, as kept
/// on the instance row by the database (`InstanceRow::cpu_used` and the others).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Used {
    /// vCPUs.
    pub cpu: f64,
    /// MiB.
    pub memory_mib: i64,
    /// GB.
    pub disk_gb: i64,
    /// Containers placed on it.
    pub containers: i64,
}

/// One instance the container might go to, with what is already placed on it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The instance.
    pub instance: InstanceRow,
    /// What its containers reserve.
    pub used: Used,
    /// Whether one of the asked host ports is already published on it.
    pub port_taken: bool,
}

/// Where a new container goes.
#[derive(Debug)]
pub struct Placement {
    /// The instance, or none when the project has none and none can be made (a project
    /// that runs only on registered hosts, all full, or no provider configured).
    pub instance: Option<InstanceRow>,
    /// The container's task state when it must wait (for an instance being made);
    /// `None` keeps the caller's.
    pub task_state: Option<&'static str>,
}

/// Why a container cannot be placed now; nothing was recorded.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// It fits none of the project's instances and the project has as many instances
    /// as its `instances` quota allows.
    Quota(Exceeded),
    /// No instance could ever hold it: the text says what to change.
    Impossible(String),
    /// An asked host port is published on every instance the container would fit, and
    /// no instance can be made for the project: the text names the port and its holder.
    PortTaken(String),
}

/// Whether `c` can take the container `ask`, under the allocation ratios of `p`.
/// A capacity of 0 memory or disk means "not known" (a host registered without it):
/// that resource is then not filtered on.
pub fn fits(c: &Candidate, ask: &Ask, p: &PlacementSettings) -> bool {
    let i = &c.instance;
    let usable = match i.status.as_str() {
        instances::STATUS_ACTIVE => i.agent_connected || agent_away_briefly(i, p),
        instances::STATUS_BUILDING => true,
        _ => false,
    };
    // A small tolerance keeps 0.1 + 0.2 within 0.3.
    const EPS: f64 = 1e-9;
    usable
        && ask
            .availability_zone
            .as_deref()
            .is_none_or(|z| z == i.availability_zone)
        && c.used.cpu + ask.cpu <= i.cpus * p.cpu_allocation_ratio + EPS
        && (i.memory_mib <= 0
            || (c.used.memory_mib + ask.memory_mib) as f64
                <= i.memory_mib as f64 * p.memory_allocation_ratio + EPS)
        && (i.disk_gb <= 0 || c.used.disk_gb + ask.disk_gb <= i.disk_gb)
        && !c.port_taken
}

/// Whether the agent of `i` (disconnected) went away less than `agent_lost_after` ago:
/// the instances monitor does not yet hold it lost, and it most likely comes back (a
/// relay restarted, the network blipped). Its instance still takes containers, which
/// wait for the agent, rather than the project getting a new instance.
fn agent_away_briefly(i: &InstanceRow, p: &PlacementSettings) -> bool {
    let lost_after =
        chrono::Duration::from_std(p.agent_lost_after).unwrap_or(chrono::Duration::MAX);
    crate::db::now() - crate::db::monitor::away_since(i) < lost_after
}

/// How full an instance is, 0 (empty) to 1 (full): the fuller of cpu and, where known,
/// memory and disk.
fn fullness(c: &Candidate, p: &PlacementSettings) -> f64 {
    let i = &c.instance;
    let mut f = if i.cpus > 0.0 {
        c.used.cpu / (i.cpus * p.cpu_allocation_ratio)
    } else {
        0.0
    };
    if i.memory_mib > 0 {
        f = f.max(c.used.memory_mib as f64 / (i.memory_mib as f64 * p.memory_allocation_ratio));
    }
    if i.disk_gb > 0 {
        f = f.max(c.used.disk_gb as f64 / i.disk_gb as f64);
    }
    f
}

/// The candidate `ask` goes to, by index, or `None` when it fits none.
///
/// Of those it fits, an active instance with its agent connected comes first, then one
/// whose agent is briefly away, then one being made (its container runs now rather
/// than when the agent is back or the machine is up); then the weigher: pack takes the
/// fullest (so fewer instances stay busy and idle ones are released), spread the
/// emptiest; then the older instance, then the smaller id, so that the choice is
/// deterministic.
pub fn choose(candidates: &[Candidate], ask: &Ask, p: &PlacementSettings) -> Option<usize> {
    let mut best: Option<(usize, (u8, f64, i64))> = None;
    for (idx, c) in candidates.iter().enumerate() {
        if !fits(c, ask, p) {
            continue;
        }
        let rank = match (
            c.instance.status == instances::STATUS_ACTIVE,
            c.instance.agent_connected,
        ) {
            (true, true) => 0,
            (true, false) => 1,
            (false, _) => 2,
        };
        let full = fullness(c, p);
        // Smaller keys win: negate for pack.
        let key = match p.weigher {
            Weigher::Pack => (rank, -full, -c.used.containers),
            Weigher::Spread => (rank, full, c.used.containers),
        };
        let better = match &best {
            None => true,
            Some((b, bkey)) => match key.partial_cmp(bkey) {
                Some(std::cmp::Ordering::Less) => true,
                Some(std::cmp::Ordering::Greater) => false,
                _ => {
                    let (a, b) = (&c.instance, &candidates[*b].instance);
                    (a.created_at, &a.id) < (b.created_at, &b.id)
                }
            },
        };
        if better {
            best = Some((idx, key));
        }
    }
    best.map(|(i, _)| i)
}

/// The instances of `project` a container might go to (active or being made), with
/// what is placed on each and whether the asked host ports are taken there: one
/// query, and one more when host ports are asked for.
pub fn candidates(
    conn: &mut DbConnection,
    project: &str,
    ask: &Ask,
) -> Result<Vec<Candidate>, DbError> {
    // One round trip, one row per instance: what its containers reserve is kept on the
    // instance row by database triggers (migration 000006), so nothing is summed here.
    // A plain (not boxed) query without SQL fragments or `IN` lists, so that diesel
    // keeps it prepared per connection on both backends and PostgreSQL plans it once.
    let rows: Vec<InstanceRow> = instances_t::table
        .filter(instances_t::project_id.eq(project))
        .filter(
            instances_t::status
                .eq(instances::STATUS_ACTIVE)
                .or(instances_t::status.eq(instances::STATUS_BUILDING)),
        )
        .select(InstanceRow::as_select())
        .load(conn)?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut taken: HashSet<String> = HashSet::new();
    if !ask.host_ports.is_empty() {
        let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        let ports: Vec<i32> = ask.host_ports.iter().map(|(_, p)| *p).collect();
        let held: Vec<(String, String, i32)> = container_ports::table
            .filter(container_ports::instance_id.eq_any(&ids))
            .filter(container_ports::host_port.eq_any(&ports))
            .select((
                container_ports::instance_id,
                container_ports::protocol,
                container_ports::host_port,
            ))
            .load(conn)?;
        // Capsules publish host ports too (held by their infra container).
        let held_by_capsules = crate::db::capsules::held_on(conn, &ids, &ports)?;
        for (instance, protocol, port) in held.into_iter().chain(held_by_capsules) {
            if ask
                .host_ports
                .iter()
                .any(|(p, h)| *p == protocol && *h == port)
            {
                taken.insert(instance);
            }
        }
    }
    Ok(rows
        .into_iter()
        .map(|instance| Candidate {
            used: Used {
                cpu: instance.cpu_used,
                memory_mib: instance.memory_used_mib,
                disk_gb: instance.disk_used_gb,
                containers: instance.container_count,
            },
            port_taken: taken.contains(&instance.id),
            instance,
        })
        .collect())
}

/// Places a new container of `project` asking for `ask`: on the instance [`choose`]
/// picks among the project's active instances and those being made; else on a new
/// instance that `provisioner` records now, within the project's `instances` quota. A
/// project with a registered (static) host never gets one on demand.
///
/// Run it inside the create's transaction, after
/// [`lock_project`](crate::db::quotas::lock_project), and insert the container in the
/// same transaction: its row is the reservation.
pub fn place(
    conn: &mut DbConnection,
    project: &str,
    ask: &Ask,
    provisioner: &Provisioner,
) -> Result<Result<Placement, Refusal>, DbError> {
    let settings = provisioner.placement();
    let candidates = candidates(conn, project, ask)?;
    debug_assert!(candidates.iter().all(|c| c.instance.project_id == project));
    if let Some(idx) = choose(&candidates, ask, &settings) {
        let instance = candidates[idx].instance.clone();
        let task_state =
            (instance.status == instances::STATUS_BUILDING).then_some(WAITING_FOR_INSTANCE);
        return Ok(Ok(Placement {
            instance: Some(instance),
            task_state,
        }));
    }
    let none = Placement {
        instance: None,
        task_state: None,
    };
    let shape = match instances::has_static(conn, project)? {
        true => None,
        false => provisioner.new_instance_shape(),
    };
    let Some(shape) = shape else {
        return Ok(match port_conflict(conn, &candidates, ask, &settings)? {
            Some(why) => Err(Refusal::PortTaken(why)),
            None => Ok(none),
        });
    };
    if let Some(zone) = &ask.availability_zone {
        if *zone != shape.availability_zone {
            return Ok(Err(Refusal::Impossible(format!(
                "Availability zone '{zone}' has no instance of this project and new instances are made in '{}': ask for that zone, or leave availability_zone out",
                shape.availability_zone
            ))));
        }
    }
    // A container too big for an empty new instance would wait for ever.
    let empty = Candidate {
        instance: InstanceRow {
            status: instances::STATUS_BUILDING.into(),
            availability_zone: shape.availability_zone.clone(),
            cpus: shape.cpus,
            memory_mib: shape.memory_mib,
            disk_gb: shape.disk_gb,
            ..placeholder_instance()
        },
        used: Used::default(),
        port_taken: false,
    };
    if !fits(&empty, ask, &settings) {
        return Ok(Err(Refusal::Impossible(format!(
            "The container asks for more than an instance holds ({} vCPU × {} allocation ratio, {} MiB memory, {} GB disk; 0 is not limited): ask for less cpu, memory or disk",
            shape.cpus,
            settings.cpu_allocation_ratio,
            shape.memory_mib,
            shape.disk_gb,
        ))));
    }
    if let Some(over) = quotas::instance_exceeded(conn, project)? {
        return Ok(Err(Refusal::Quota(over)));
    }
    Ok(Ok(match provisioner.begin(conn, project)? {
        Some(instance) => {
            debug_assert_eq!(instance.project_id, project);
            Placement {
                instance: Some(instance),
                task_state: Some(WAITING_FOR_INSTANCE),
            }
        }
        None => none,
    }))
}

/// When the container would fit an instance but for a host port published there, what
/// says so: the port, the instance and the container that holds it.
fn port_conflict(
    conn: &mut DbConnection,
    candidates: &[Candidate],
    ask: &Ask,
    p: &PlacementSettings,
) -> Result<Option<String>, DbError> {
    let Some(blocked) = candidates.iter().find(|c| {
        c.port_taken && {
            let free = Candidate {
                port_taken: false,
                ..(*c).clone()
            };
            fits(&free, ask, p)
        }
    }) else {
        return Ok(None);
    };
    let instance = &blocked.instance.id;
    for (protocol, port) in &ask.host_ports {
        let holder = match crate::db::containers::port_holder(conn, instance, protocol, *port)? {
            Some(c) => Some(format!("container {c}")),
            None => crate::db::capsules::port_holder(conn, instance, protocol, *port)?
                .map(|c| format!("capsule {c}")),
        };
        if let Some(holder) = holder {
            return Ok(Some(format!(
                "Host port {port}/{protocol} is already published on instance {instance} by {holder}; choose another host port, or give only the container port to let the engine pick one"
            )));
        }
    }
    Ok(None)
}

fn placeholder_instance() -> InstanceRow {
    let t = crate::db::now();
    InstanceRow {
        id: String::new(),
        project_id: String::new(),
        name: String::new(),
        provider: String::new(),
        status: String::new(),
        status_reason: None,
        address: String::new(),
        availability_zone: String::new(),
        cpus: 0.0,
        memory_mib: 0,
        disk_gb: 0,
        agent_connected: false,
        agent_seen_at: None,
        created_at: t,
        updated_at: t,
        cpu_used: 0.0,
        memory_used_mib: 0,
        disk_used_gb: 0,
        container_count: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::instances::{STATUS_ACTIVE, STATUS_BUILDING, STATUS_ERROR};

    fn settings(weigher: Weigher) -> PlacementSettings {
        PlacementSettings {
            weigher,
            cpu_allocation_ratio: 1.0,
            memory_allocation_ratio: 1.0,
            ..Default::default()
        }
    }

    fn cand(id: &str, status: &str, cpus: f64, mem: i64, used_mem: i64) -> Candidate {
        let mut instance = placeholder_instance();
        instance.id = id.into();
        instance.status = status.into();
        instance.agent_connected = status == STATUS_ACTIVE;
        instance.availability_zone = "nova".into();
        instance.cpus = cpus;
        instance.memory_mib = mem;
        Candidate {
            instance,
            used: Used {
                memory_mib: used_mem,
                containers: used_mem / 100,
                ..Default::default()
            },
            port_taken: false,
        }
    }

    fn ask(mem: i64) -> Ask {
        Ask {
            cpu: 0.5,
            memory_mib: mem,
            ..Default::default()
        }
    }

    #[test]
    fn pack_takes_the_fullest_instance_that_fits_and_spread_the_emptiest() {
        let cands = vec![
            cand("a", STATUS_ACTIVE, 4.0, 1000, 200),
            cand("b", STATUS_ACTIVE, 4.0, 1000, 700),
            cand("c", STATUS_ACTIVE, 4.0, 1000, 900),
        ];
        let pack = settings(Weigher::Pack);
        assert_eq!(choose(&cands, &ask(100), &pack), Some(2));
        // c has 100 MiB left: 200 goes to the next fullest.
        assert_eq!(choose(&cands, &ask(200), &pack), Some(1));
        assert_eq!(
            choose(&cands, &ask(100), &settings(Weigher::Spread)),
            Some(0)
        );
        assert_eq!(choose(&cands, &ask(801), &pack), None);
    }

    #[test]
    fn an_instance_is_never_filled_past_its_capacity() {
        let p = settings(Weigher::Pack);
        let mut c = cand("a", STATUS_ACTIVE, 1.0, 300, 0);
        let a = ask(100);
        let mut placed = 0;
        while choose(std::slice::from_ref(&c), &a, &p).is_some() {
            c.used.memory_mib += a.memory_mib;
            c.used.cpu += a.cpu;
            placed += 1;
        }
        // cpu (1.0 / 0.5) binds before memory (300 / 100).
        assert_eq!(placed, 2);
        c.used.cpu = 0.0;
        c.instance.cpus = 0.0;
        assert!(!fits(&c, &a, &p), "a cpu capacity of 0 holds nothing");
    }

    #[test]
    fn unknown_memory_and_disk_are_not_filtered_but_cpu_is_with_its_ratio() {
        let mut c = cand("a", STATUS_ACTIVE, 2.0, 0, 1_000_000);
        c.used.cpu = 31.0;
        let p = PlacementSettings {
            cpu_allocation_ratio: 16.0,
            ..settings(Weigher::Pack)
        };
        let one = Ask {
            cpu: 1.0,
            disk_gb: 50,
            ..Default::default()
        };
        assert!(fits(&c, &one, &p));
        c.used.cpu = 31.5;
        assert!(!fits(&c, &one, &p));
    }

    #[test]
    fn an_instance_whose_agent_is_away_or_in_error_takes_nothing_and_one_being_made_comes_last() {
        let p = settings(Weigher::Pack);
        let mut away = cand("a", STATUS_ACTIVE, 4.0, 1000, 500);
        away.instance.agent_connected = false;
        // Away for longer than agent_lost_after: held lost.
        away.instance.agent_seen_at = Some(crate::db::now() - chrono::Duration::seconds(3600));
        let error = cand("e", STATUS_ERROR, 4.0, 1000, 0);
        let building = cand("b", STATUS_BUILDING, 4.0, 1000, 900);
        let active = cand("c", STATUS_ACTIVE, 4.0, 1000, 0);
        let cands = vec![away, error, building, active];
        // The empty active instance wins over the fuller one being made, even packing.
        assert_eq!(choose(&cands, &ask(50), &p), Some(3));
        // Without it, the container waits for the one being made.
        assert_eq!(choose(&cands[..3], &ask(100), &p), Some(2));
        assert_eq!(choose(&cands[..2], &ask(1), &p), None);
    }

    #[test]
    fn an_instance_whose_agent_went_away_within_the_grace_still_takes_containers_after_connected_ones(
    ) {
        let p = PlacementSettings {
            agent_lost_after: std::time::Duration::from_secs(120),
            ..settings(Weigher::Pack)
        };
        // A relay just restarted: the agent disconnected 10 s ago.
        let mut blip = cand("a", STATUS_ACTIVE, 4.0, 1000, 500);
        blip.instance.agent_connected = false;
        blip.instance.agent_seen_at = Some(crate::db::now() - chrono::Duration::seconds(10));
        // It is the project's only instance: the container goes there (and waits for
        // the agent) instead of the project getting a new instance.
        assert_eq!(choose(std::slice::from_ref(&blip), &ask(100), &p), Some(0));
        // Still never past its capacity.
        assert_eq!(choose(std::slice::from_ref(&blip), &ask(600), &p), None);
        // A connected instance is preferred, even an emptier one when packing; the
        // briefly away one still comes before one being made.
        let connected = cand("c", STATUS_ACTIVE, 4.0, 1000, 0);
        let building = cand("b", STATUS_BUILDING, 4.0, 1000, 900);
        let cands = vec![blip.clone(), building.clone(), connected];
        assert_eq!(choose(&cands, &ask(100), &p), Some(2));
        assert_eq!(choose(&cands[..2], &ask(100), &p), Some(0));
        // Past the grace the monitor holds the agent lost: the instance takes nothing.
        let mut lost = blip;
        lost.instance.agent_seen_at = Some(crate::db::now() - chrono::Duration::seconds(121));
        assert_eq!(choose(std::slice::from_ref(&lost), &ask(100), &p), None);
        assert_eq!(choose(&[lost, building], &ask(100), &p), Some(1));
    }

    #[test]
    fn taken_host_ports_and_other_zones_are_filtered_out() {
        let p = settings(Weigher::Pack);
        let mut full_port = cand("a", STATUS_ACTIVE, 4.0, 1000, 500);
        full_port.port_taken = true;
        let mut other_zone = cand("b", STATUS_ACTIVE, 4.0, 1000, 400);
        other_zone.instance.availability_zone = "az2".into();
        let free = cand("c", STATUS_ACTIVE, 4.0, 1000, 0);
        let cands = vec![full_port, other_zone, free];
        assert_eq!(choose(&cands, &ask(10), &p), Some(1));
        let in_nova = Ask {
            availability_zone: Some("nova".into()),
            ..ask(10)
        };
        assert_eq!(choose(&cands, &in_nova, &p), Some(2));
        let in_az3 = Ask {
            availability_zone: Some("az3".into()),
            ..ask(10)
        };
        assert_eq!(choose(&cands, &in_az3, &p), None);
    }

    #[test]
    fn candidates_carry_what_their_containers_reserve_and_the_ports_taken() {
        use crate::db::containers as q;
        use crate::db::instances::tests::{container, db, instance};
        use crate::db::models::PortRow;
        let (_dir, db) = db();
        let mut conn = db.conn().unwrap();
        for (id, project) in [("i1", "p1"), ("i2", "p1"), ("i3", "p2")] {
            instances::insert(&mut conn, &instance(id, project, STATUS_ACTIVE)).unwrap();
        }
        let mut c1 = container("c1", "p1", Some("i1"));
        c1.cpu = 0.5;
        c1.memory_mib = 100;
        let port = PortRow {
            instance_id: "i1".into(),
            protocol: "tcp".into(),
            host_port: 8080,
            container_id: "c1".into(),
            container_port: 80,
        };
        q::insert_reservation(&mut conn, &c1, 3, &[port]).unwrap();
        let mut c2 = container("c2", "p1", Some("i1"));
        c2.cpu = 0.25;
        c2.memory_mib = 28;
        q::insert(&mut conn, &c2, &[]).unwrap();
        q::insert(&mut conn, &container("c3", "p2", Some("i3")), &[]).unwrap();

        let ask = Ask {
            host_ports: vec![("tcp".into(), 8080)],
            ..Default::default()
        };
        let mut found = candidates(&mut conn, "p1", &ask).unwrap();
        found.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
        let ids: Vec<&str> = found.iter().map(|c| c.instance.id.as_str()).collect();
        assert_eq!(ids, ["i1", "i2"], "only the project's own instances");
        assert_eq!(
            found[0].used,
            Used {
                cpu: 0.75,
                memory_mib: 128,
                disk_gb: 3,
                containers: 2
            }
        );
        assert!(found[0].port_taken);
        assert_eq!(found[1].used, Used::default());
        assert!(!found[1].port_taken);
        let udp = Ask {
            host_ports: vec![("udp".into(), 8080)],
            ..Default::default()
        };
        assert!(!candidates(&mut conn, "p1", &udp).unwrap()[0].port_taken);
    }
}
