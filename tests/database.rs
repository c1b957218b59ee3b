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
