//! The database layer on SQLite and PostgreSQL: migrations round-trip, and the
//! queries the service relies on behave the same on both.

mod support;

use berth_service::db::containers as q;
use berth_service::db::models::{ContainerRow, InstanceRow, PortRow, ProjectRow};
use berth_service::db::{self, is_unique_violation, Db};

fn sqlite() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&format!(
        "sqlite://{}",
        dir.path().join("t.sqlite").display()
    ))
    .unwrap();
    (dir, db)
}

fn table_names(db: &Db) -> Vec<String> {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let mut conn = db.conn().unwrap();
    let sql = match db.backend() {
        db::Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name != '__diesel_schema_migrations' ORDER BY name",
        db::Backend::Postgres => "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = 'public' AND table_name != '__diesel_schema_migrations' ORDER BY table_name",
    };
    let rows: Vec<Name> = diesel::sql_query(sql).load(&mut *conn).unwrap();
    rows.into_iter().map(|r| r.name).collect()
}

fn migrations_go_up_down_and_up_again(db: &Db) {
    let up = table_names(db);
    assert!(up.contains(&"containers".to_owned()), "{up:?}");
    db.migrate_down_all().unwrap();
    assert!(table_names(db).is_empty());
    db.migrate_up().unwrap();
    assert_eq!(table_names(db), up);
}

#[test]
fn migrations_go_up_down_and_up_again_on_sqlite() {
    let (_dir, db) = sqlite();
    migrations_go_up_down_and_up_again(&db);
}

#[test]
fn migrations_go_up_down_and_up_again_on_postgresql() {
    let pg = support::PgDatabase::create();
    let db = Db::connect(&pg.url).unwrap();
    migrations_go_up_down_and_up_again(&db);
    drop(db);
}

fn seed(db: &Db) -> String {
    let mut conn = db.conn().unwrap();
    let t = db::now();
    db::identity::insert_project(
        &mut conn,
        &ProjectRow {
            id: "p1".into(),
            name: "p1".into(),
            domain_id: "default".into(),
            description: String::new(),
            enabled: true,
            created_at: t,
        },
    )
    .unwrap();
    let instance = InstanceRow {
        id: "i1".into(),
        project_id: "p1".into(),
        name: "host".into(),
        provider: "static".into(),
        status: "active".into(),
        status_reason: None,
        address: "127.0.0.1".into(),
        availability_zone: "nova".into(),
        cpus: 2.0,
        memory_mib: 1024,
        disk_gb: 10,
        agent_connected: false,
        agent_seen_at: None,
        created_at: t,
        updated_at: t,
        cpu_used: 0.0,
        memory_used_mib: 0,
        disk_used_gb: 0,
        container_count: 0,
    };
    db::instances::insert(&mut conn, &instance).unwrap();
    instance.id
}

fn container(id: &str, name: &str) -> ContainerRow {
    let t = db::now();
    ContainerRow {
        id: id.into(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        name: name.into(),
        image: "busybox".into(),
        command: "[]".into(),
        entrypoint: None,
        status: "Creating".into(),
        status_reason: None,
        status_detail: None,
        task_state: None,
        cpu: 1.0,
        memory_mib: 512,
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
        instance_id: Some("i1".into()),
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

fn port(container: &str, host: i32) -> PortRow {
    PortRow {
        instance_id: "i1".into(),
        protocol: "tcp".into(),
        host_port: host,
        container_id: container.into(),
        container_port: 80,
    }
}

fn a_host_port_is_published_once_per_instance_and_a_refused_insert_leaves_nothing(db: &Db) {
    seed(db);
    let mut conn = db.conn().unwrap();
    q::insert(&mut conn, &container("c1", "web"), &[port("c1", 8080)]).unwrap();
    let err = q::insert(
        &mut conn,
        &container("c2", "web2"),
        &[port("c2", 8081), port("c2", 8080)],
    )
    .unwrap_err();
    assert!(is_unique_violation(&err), "{err}");
    // The whole insert rolled back: no c2, and 8081 is still free.
    assert!(q::get(&mut conn, "c2").unwrap().is_none());
    assert_eq!(q::port_holder(&mut conn, "i1", "tcp", 8081).unwrap(), None);
    assert_eq!(
        q::port_holder(&mut conn, "i1", "tcp", 8080)
            .unwrap()
            .as_deref(),
        Some("c1")
    );
    // Deleting the container frees its port.
    q::delete(&mut conn, "c1").unwrap();
    assert_eq!(q::port_holder(&mut conn, "i1", "tcp", 8080).unwrap(), None);
}

#[test]
fn a_host_port_is_published_once_per_instance_on_sqlite() {
    let (_dir, db) = sqlite();
    a_host_port_is_published_once_per_instance_and_a_refused_insert_leaves_nothing(&db);
}

#[test]
fn a_host_port_is_published_once_per_instance_on_postgresql() {
    let pg = support::PgDatabase::create();
    let db = Db::connect(&pg.url).unwrap();
    a_host_port_is_published_once_per_instance_and_a_refused_insert_leaves_nothing(&db);
}

fn lookups_are_scoped_to_the_project_and_names_may_be_ambiguous(db: &Db) {
    seed(db);
    let mut conn = db.conn().unwrap();
    q::insert(&mut conn, &container("c1", "twin"), &[]).unwrap();
    q::insert(&mut conn, &container("c2", "twin"), &[]).unwrap();
    assert!(matches!(
        q::lookup(&mut conn, Some("p1"), "c1").unwrap(),
        q::Lookup::Found(_)
    ));
    assert!(matches!(
        q::lookup(&mut conn, Some("p2"), "c1").unwrap(),
        q::Lookup::NotFound
    ));
    assert!(matches!(
        q::lookup(&mut conn, Some("p2"), "twin").unwrap(),
        q::Lookup::NotFound
    ));
    assert!(matches!(
        q::lookup(&mut conn, Some("p1"), "twin").unwrap(),
        q::Lookup::Ambiguous
    ));
    let filter = q::ListFilter {
        project: Some("p2".into()),
        limit: 100,
        ..Default::default()
    };
    assert!(q::list(&mut conn, &filter).unwrap().is_empty());
}

#[test]
fn lookups_are_scoped_to_the_project_on_sqlite() {
    let (_dir, db) = sqlite();
    lookups_are_scoped_to_the_project_and_names_may_be_ambiguous(&db);
}

#[test]
fn lookups_are_scoped_to_the_project_on_postgresql() {
    let pg = support::PgDatabase::create();
    let db = Db::connect(&pg.url).unwrap();
    lookups_are_scoped_to_the_project_and_names_may_be_ambiguous(&db);
}

/// What the containers placed on `instance` really hold, summed from their rows.
fn true_usage(conn: &mut db::DbConnection, instance: &str) -> berth_service::scheduler::Used {
    use berth_service::db::schema::containers as c;
    use diesel::prelude::*;
    let rows: Vec<(f64, i64, i64)> = c::table
        .filter(c::instance_id.eq(instance))
        .select((c::cpu, c::memory_mib, c::disk_gb))
        .load(conn)
        .unwrap();
    berth_service::scheduler::Used {
        cpu: rows.iter().map(|r| r.0).sum(),
        memory_mib: rows.iter().map(|r| r.1).sum(),
        disk_gb: rows.iter().map(|r| r.2).sum(),
        containers: rows.len() as i64,
    }
}

/// What the instance row's trigger-kept counters say, as placement reads them.
fn counted_usage(conn: &mut db::DbConnection, instance: &str) -> berth_service::scheduler::Used {
    let ask = berth_service::scheduler::Ask::default();
    let found = berth_service::scheduler::candidates(conn, "p1", &ask).unwrap();
    found
        .into_iter()
        .find(|c| c.instance.id == instance)
        .map(|c| c.used)
        .expect("the instance is a candidate")
}

fn assert_counters_match(conn: &mut db::DbConnection, step: &str) {
    for instance in ["i1", "i2"] {
        let (counted, truth) = (counted_usage(conn, instance), true_usage(conn, instance));
        assert!(
            (counted.cpu - truth.cpu).abs() < 1e-9
                && counted.memory_mib == truth.memory_mib
                && counted.disk_gb == truth.disk_gb
                && counted.containers == truth.containers,
            "after {step}, {instance} counts {counted:?} but holds {truth:?}"
        );
    }
}

fn usage_counters_stay_equal_to_the_sums_of_the_containers_placed(db: &Db) {
    use berth_service::db::schema::containers as c;
    use diesel::prelude::*;
    seed(db);
    let mut conn = db.conn().unwrap();
    let mut second = db::instances::get(&mut conn, "i1").unwrap().unwrap();
    second.id = "i2".into();
    second.name = "host-2".into();
    db::instances::insert(&mut conn, &second).unwrap();
    assert_counters_match(&mut conn, "nothing placed");

    let mut a = container("ca", "a");
    a.cpu = 0.1;
    a.memory_mib = 100;
    q::insert_reservation(&mut conn, &a, 5, &[port("ca", 8080)]).unwrap();
    let mut b = container("cb", "b");
    b.cpu = 0.2;
    b.memory_mib = 200;
    q::insert_reservation(&mut conn, &b, 0, &[]).unwrap();
    let mut d = container("cd", "d");
    d.instance_id = None;
    q::insert(&mut conn, &d, &[]).unwrap();
    assert_counters_match(&mut conn, "three creates, one not placed");
    assert_eq!(counted_usage(&mut conn, "i1").containers, 2);

    // PATCH resize, and a status change that must not count twice.
    let resize = q::ContainerChange {
        cpu: Some(0.75),
        memory_mib: Some(300),
        status: Some("Running".into()),
        ..Default::default()
    };
    assert!(q::update(&mut conn, "ca", resize).unwrap());
    let same = q::ContainerChange {
        cpu: Some(0.2),
        memory_mib: Some(200),
        ..Default::default()
    };
    assert!(q::update(&mut conn, "cb", same).unwrap());
    assert_counters_match(&mut conn, "a resize");

    q::delete(&mut conn, "cb").unwrap();
    assert_counters_match(&mut conn, "a delete");

    // Moved to another instance, then off any instance (the failure path).
    diesel::update(c::table.find("ca"))
        .set(c::instance_id.eq(Some("i2")))
        .execute(&mut *conn)
        .unwrap();
    assert_counters_match(&mut conn, "a move to another instance");
    assert_eq!(counted_usage(&mut conn, "i2").disk_gb, 5);
    diesel::update(c::table.find("ca"))
        .set(c::instance_id.eq(None::<String>))
        .execute(&mut *conn)
        .unwrap();
    assert_counters_match(&mut conn, "a move off the instance");
    // Placed again from nowhere, then deleted: both instances end empty, at exactly 0.
    diesel::update(c::table.find("cd"))
        .set(c::instance_id.eq(Some("i1")))
        .execute(&mut *conn)
        .unwrap();
    assert_counters_match(&mut conn, "an unplaced container placed");
    q::delete(&mut conn, "cd").unwrap();
    for instance in ["i1", "i2"] {
        assert_eq!(
            counted_usage(&mut conn, instance),
            berth_service::scheduler::Used::default(),
            "{instance} is empty"
        );
    }
}

#[test]
fn usage_counters_stay_equal_to_the_sums_of_the_containers_placed_on_sqlite() {
    let (_dir, db) = sqlite();
    usage_counters_stay_equal_to_the_sums_of_the_containers_placed(&db);
}

#[test]
fn usage_counters_stay_equal_to_the_sums_of_the_containers_placed_on_postgresql() {
    let pg = support::PgDatabase::create();
    let db = Db::connect(&pg.url).unwrap();
    usage_counters_stay_equal_to_the_sums_of_the_containers_placed(&db);
}

fn capsule(id: &str, instance: Option<&str>) -> berth_service::db::models::CapsuleRow {
    let t = db::now();
    berth_service::db::models::CapsuleRow {
        id: id.into(),
        project_id: "p1".into(),
        user_id: "u1".into(),
        name: format!("pod-{id}"),
        template: "{}".into(),
        spec: "{}".into(),
        previous_spec: None,
        generation: 1,
        status: "Creating".into(),
        status_reason: None,
        instance_id: instance.map(str::to_owned),
        cpu: 0.5,
        memory_mib: 256,
        pod_status: None,
        created_at: t,
        updated_at: t,
    }
}

/// A capsule placed on an instance is counted on it by the triggers of migration 000009
/// (summed cpu and memory, one unit), its host ports are seen by placement, quota usage
/// includes it, and it may only be placed on an instance of its own project.
fn capsules_count_on_their_instance_like_containers(db: &Db) {
    use berth_service::db::capsules as cq;
    use berth_service::db::models::CapsulePortRow;
    use berth_service::scheduler::{candidates, Ask, Used};
    seed(db);
    let mut conn = db.conn().unwrap();
    let held = CapsulePortRow {
        instance_id: "i1".into(),
        protocol: "tcp".into(),
        host_port: 8080,
        capsule_id: "k1".into(),
        container_port: 80,
    };
    cq::insert(&mut conn, &capsule("k1", Some("i1")), &[held]).unwrap();
    cq::insert(&mut conn, &capsule("k2", None), &[]).unwrap();
    let one = Used {
        cpu: 0.5,
        memory_mib: 256,
        disk_gb: 0,
        containers: 1,
    };
    assert_eq!(counted_usage(&mut conn, "i1"), one);
    let usage = db::quotas::usage(&mut conn, "p1").unwrap();
    assert_eq!((usage.containers, usage.memory_mib), (2, 512));

    let ask = Ask {
        host_ports: vec![("tcp".into(), 8080)],
        ..Default::default()
    };
    assert!(candidates(&mut conn, "p1", &ask).unwrap()[0].port_taken);
    assert_eq!(
        cq::port_holder(&mut conn, "i1", "tcp", 8080)
            .unwrap()
            .as_deref(),
        Some("k1")
    );

    // An update that grows the pod.
    let grow = cq::CapsuleChange {
        cpu: Some(1.25),
        memory_mib: Some(300),
        status: Some("Running".into()),
        ..Default::default()
    };
    assert!(cq::update(&mut conn, "k1", grow).unwrap());
    let grown = counted_usage(&mut conn, "i1");
    assert!((grown.cpu - 1.25).abs() < 1e-9 && grown.memory_mib == 300 && grown.containers == 1);

    cq::delete(&mut conn, "k1").unwrap();
    assert_eq!(counted_usage(&mut conn, "i1"), Used::default());
    assert!(!candidates(&mut conn, "p1", &ask).unwrap()[0].port_taken);

    // Another project's instance is refused by the database.
    db::identity::insert_project(
        &mut conn,
        &ProjectRow {
            id: "p2".into(),
            name: "p2".into(),
            domain_id: "default".into(),
            description: String::new(),
            enabled: true,
            created_at: db::now(),
        },
    )
    .unwrap();
    let mut foreign = db::instances::get(&mut conn, "i1").unwrap().unwrap();
    foreign.id = "i9".into();
    foreign.project_id = "p2".into();
    foreign.name = "host-9".into();
    db::instances::insert(&mut conn, &foreign).unwrap();
    assert!(cq::insert(&mut conn, &capsule("k3", Some("i9")), &[]).is_err());
    assert!(cq::get(&mut conn, "k3").unwrap().is_none());
}

#[test]
fn capsules_count_on_their_instance_like_containers_on_sqlite() {
    let (_dir, db) = sqlite();
    capsules_count_on_their_instance_like_containers(&db);
}

#[test]
fn capsules_count_on_their_instance_like_containers_on_postgresql() {
    let pg = support::PgDatabase::create();
    let db = Db::connect(&pg.url).unwrap();
    capsules_count_on_their_instance_like_containers(&db);
}
