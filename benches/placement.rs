//! Placements per second: the scheduler's decision, with its database read, over a
//! database of 1,000 instances and 10,000 containers.
//!
//! `cargo bench --bench placement` (SQLite in a temporary file; PostgreSQL too when
//! BERTH_TEST_DATABASE_URL is set, in a database made for the run and dropped after).
//! BERTH_BENCH_N placements per measurement (default 5,000).
//!
//! Two layouts of the same 1,000 instances and 10,000 containers, seeded through the
//! db layer: 100 projects of 10 instances and 100 containers each (placement reads only
//! the asking project's instances), and one project holding them all (the worst case:
//! every placement reads and weighs all 1,000 instances; what each holds is read from
//! the counters the database keeps on the instance row, not summed).
//! Measured: `scheduler::place` alone (read + filter + weigh), and a whole reservation
//! as the create does it (transaction, project lock, quota check, place, insert the
//! container row), committed.

use std::time::{Duration, Instant};

use berth_service::db::models::{ContainerRow, InstanceRow, ProjectRow};
use berth_service::db::{self, containers as q, identity, instances, quotas, Db, DbError};
use berth_service::providers::Provisioner;
use berth_service::scheduler::{self, Ask};
use diesel::Connection;

const INSTANCES: usize = 1_000;
const CONTAINERS: usize = 10_000;

fn instance(id: String, project: &str) -> InstanceRow {
    let t = db::now();
    InstanceRow {
        name: format!("bench-{id}"),
        id,
        project_id: project.into(),
        provider: "static".into(),
        status: instances::STATUS_ACTIVE.into(),
        status_reason: None,
        address: "127.0.0.1".into(),
        availability_zone: "nova".into(),
        cpus: 64.0,
        memory_mib: 262_144,
        disk_gb: 0,
        agent_connected: true,
        agent_seen_at: Some(t),
        created_at: t,
        updated_at: t,
        cpu_used: 0.0,
        memory_used_mib: 0,
        disk_used_gb: 0,
        container_count: 0,
    }
}

fn container(id: String, project: &str, instance: &str) -> ContainerRow {
    let t = db::now();
    ContainerRow {
        name: format!("c-{id}"),
        id,
        project_id: project.into(),
        user_id: "bench".into(),
        image: "busybox".into(),
        command: "[]".into(),
        entrypoint: None,
        status: "Running".into(),
        status_reason: None,
        status_detail: None,
        task_state: None,
        cpu: 0.5,
        memory_mib: 256,
        environment: "{}".into(),
        labels: "{}".into(),
        requested_ports: "[]".into(),
        workdir: None,
        hostname: None,
        restart_policy: "no".into(),
        restart_max_retries: 0,
        interactive: false,
        tty: false,
        auto_remove: false,
        run_requested: true,
        instance_id: Some(instance.into()),
        runtime_id: None,
        started_at: None,
        created_at: t,
        updated_at: t,
        exit_code: None,
        finished_at: None,
        stdin_once: false,
        run_user: None,
        docker_config: None,
        privileges: None,
        registry_id: None,
    }
}

/// Seeds `projects` projects sharing the instances and containers equally; returns the
/// project ids. Unlimited quotas, so the committed placements are never refused.
fn seed(db: &Db, projects: usize) -> Result<Vec<String>, DbError> {
    let mut conn = db.conn()?;
    let ids: Vec<String> = (0..projects).map(|p| format!("bench-p{p}")).collect();
    conn.transaction::<_, DbError, _>(|c| {
        for p in &ids {
            identity::insert_project(
                c,
                &ProjectRow {
                    id: p.clone(),
                    name: p.clone(),
                    domain_id: "default".into(),
                    description: String::new(),
                    enabled: true,
                    created_at: db::now(),
                },
            )?;
            quotas::set_project(c, p, &quotas::Resource::ALL.map(|r| (r, -1)))?;
        }
        for i in 0..INSTANCES {
            let project = &ids[i % projects];
            instances::insert(c, &instance(format!("i{i:04}"), project))?;
        }
        for n in 0..CONTAINERS {
            let i = n % INSTANCES;
            let project = &ids[i % projects];
            q::insert(
                c,
                &container(format!("c{n:05}"), project, &format!("i{i:04}")),
                &[],
            )?;
        }
        Ok(())
    })?;
    Ok(ids)
}

fn ask() -> Ask {
    Ask {
        cpu: 0.5,
        memory_mib: 256,
        ..Default::default()
    }
}

/// `n` decisions (`scheduler::place`, read + filter + weigh), round robin over
/// `projects`.
fn decisions(db: &Db, providers: &Provisioner, projects: &[String], n: usize) -> Duration {
    let mut conn = db.conn().unwrap();
    let ask = ask();
    let t0 = Instant::now();
    for k in 0..n {
        let p = &projects[k % projects.len()];
        let placed = scheduler::place(&mut conn, p, &ask, providers)
            .unwrap()
            .expect("placed");
        assert!(placed.instance.is_some());
    }
    t0.elapsed()
}

/// `n` whole reservations as the create does them, committed.
fn reservations(db: &Db, providers: &Provisioner, projects: &[String], n: usize) -> Duration {
    let mut conn = db.conn().unwrap();
    let ask = ask();
    let t0 = Instant::now();
    for k in 0..n {
        let p = &projects[k % projects.len()];
        conn.transaction::<_, DbError, _>(|c| {
            quotas::lock_project(c, p)?;
            let over = quotas::exceeded_by_one_more(c, p, ask.cpu, ask.memory_mib, 0)?;
            assert!(over.is_empty());
            let placed = scheduler::place(c, p, &ask, providers)?.expect("placed");
            let instance = placed.instance.expect("an instance fits");
            q::insert_reservation(c, &container(format!("r{k:06}"), p, &instance.id), 0, &[])
        })
        .unwrap();
    }
    t0.elapsed()
}

fn report(backend: &str, layout: &str, what: &str, n: usize, took: Duration) {
    println!(
        "{backend:<10} {layout:<28} {what:<26} {n:>6} in {:>8.1} ms  {:>9.0} /s  {:>7.1} µs each",
        took.as_secs_f64() * 1e3,
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1e6 / n as f64,
    );
}

fn run(backend: &str, url: &str, providers_db: impl Fn(&Db) -> Provisioner, n: usize) {
    for (layout, projects) in [
        ("100 projects x 10 instances", 100usize),
        ("1 project x 1000 instances", 1),
    ] {
        let db = Db::connect(url).expect("database");
        db.migrate_down_all().expect("a clean database");
        db.migrate_up().expect("migrations");
        let providers = providers_db(&db);
        let t0 = Instant::now();
        let ids = seed(&db, projects).expect("seed");
        if db.backend() == db::Backend::Postgres {
            // As autovacuum would soon after a bulk load: without statistics the
            // planner guesses, and the bench would measure its guess.
            use diesel::RunQueryDsl;
            diesel::sql_query("ANALYZE")
                .execute(&mut *db.conn().unwrap())
                .unwrap();
        }
        println!(
            "{backend}: seeded {INSTANCES} instances and {CONTAINERS} containers ({layout}) in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        // Warm-up, not counted.
        decisions(&db, &providers, &ids, n / 10 + 1);
        let m = if projects == 1 { n / 10 } else { n };
        report(
            backend,
            layout,
            "decision (place)",
            m,
            decisions(&db, &providers, &ids, m),
        );
        report(
            backend,
            layout,
            "reservation (committed)",
            m,
            reservations(&db, &providers, &ids, m),
        );
    }
}

fn main() {
    let n: usize = std::env::var("BERTH_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    // No provider: every placement here fits an existing instance.
    let providers = |db: &Db| Provisioner::new(db.clone());

    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("bench.sqlite").display());
    run("sqlite", &sqlite, providers, n);

    if let Ok(admin) = std::env::var("BERTH_TEST_DATABASE_URL") {
        use diesel::RunQueryDsl;
        let name = format!("berth_bench_{}", std::process::id());
        let mut conn = diesel::PgConnection::establish(&admin).expect("PostgreSQL");
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .unwrap();
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
        run("postgresql", &format!("{base}/{name}"), providers, n);
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .unwrap();
    } else {
        println!("postgresql: skipped (set BERTH_TEST_DATABASE_URL)");
    }
}
