//! Quota queries: limits per project and per quota class, usage, and the lock that
//! makes "check the quota, then insert" atomic.

use diesel::prelude::*;

use super::schema::{containers, instances, projects, quota_classes, quotas};
use super::{now, DbConnection, DbError};

/// A resource with a quota, as Zun names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// Number of containers.
    Containers,
    /// vCPUs, summed over containers.
    Cpu,
    /// MiB of memory, summed over containers.
    Memory,
    /// GB of disk.
    Disk,
    /// Berth: instances (machines) the project may have at once, made on demand when
    /// its containers fit none of the ones it has.
    Instances,
}

impl Resource {
    /// Every resource, in the order responses list them.
    pub const ALL: [Resource; 5] = [
        Resource::Containers,
        Resource::Cpu,
        Resource::Memory,
        Resource::Disk,
        Resource::Instances,
    ];

    /// Zun's name of the resource.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Containers => "containers",
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Disk => "disk",
            Resource::Instances => "instances",
        }
    }

    /// The resource called `name`.
    pub fn parse(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Zun's built-in default limit: what applies when neither the project nor the
    /// `default` class sets one.
    pub fn builtin_default(self) -> i64 {
        match self {
            Resource::Containers => 40,
            Resource::Cpu => 20,
            Resource::Memory => 51200,
            Resource::Disk => 100,
            Resource::Instances => 10,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The quota class whose limits apply to projects without their own.
pub const DEFAULT_CLASS: &str = "default";

/// A limit per resource; -1 is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits([i64; 5]);

impl Limits {
    /// Zun's built-in defaults.
    pub fn builtin() -> Limits {
        Limits(Resource::ALL.map(Resource::builtin_default))
    }

    /// The limit of `r`.
    pub fn get(&self, r: Resource) -> i64 {
        self.0[r.index()]
    }

    fn set(&mut self, r: Resource, v: i64) {
        self.0[r.index()] = v;
    }
}

/// What a project uses now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Containers, in any state.
    pub containers: i64,
    /// vCPUs, summed.
    pub cpu: f64,
    /// MiB of memory, summed.
    pub memory_mib: i64,
    /// GB of disk, summed.
    pub disk_gb: i64,
    /// Instances being made or active.
    pub instances: i64,
}

impl Usage {
    /// The usage of `r` as a whole number (cpu rounded up).
    pub fn of(&self, r: Resource) -> i64 {
        match r {
            Resource::Containers => self.containers,
            Resource::Cpu => self.cpu.ceil() as i64,
            Resource::Memory => self.memory_mib,
            Resource::Disk => self.disk_gb,
            Resource::Instances => self.instances,
        }
    }
}

/// A resource a request would take past its limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Exceeded {
    pub resource: Resource,
    pub limit: i64,
    /// In use before the request, and what the request asks for.
    pub in_use: f64,
    pub requested: f64,
}

/// The limits of quota class `class`, built-in defaults where the class sets none.
pub fn class_limits(conn: &mut DbConnection, class: &str) -> Result<Limits, DbError> {
    let rows: Vec<(String, i64)> = quota_classes::table
        .filter(quota_classes::class_name.eq(class))
        .select((quota_classes::resource, quota_classes::hard_limit))
        .load(conn)?;
    let mut limits = Limits::builtin();
    apply(&mut limits, rows);
    Ok(limits)
}

/// The limits that apply to `project`: its own, else the `default` class's, else the
/// built-in defaults, resource by resource.
pub fn project_limits(conn: &mut DbConnection, project: &str) -> Result<Limits, DbError> {
    let mut limits = class_limits(conn, DEFAULT_CLASS)?;
    let rows: Vec<(String, i64)> = quotas::table
        .filter(quotas::project_id.eq(project))
        .select((quotas::resource, quotas::hard_limit))
        .load(conn)?;
    apply(&mut limits, rows);
    Ok(limits)
}

fn apply(limits: &mut Limits, rows: Vec<(String, i64)>) {
    for (name, limit) in rows {
        // A resource this version does not know (written by a newer one) is ignored.
        if let Some(r) = Resource::parse(&name) {
            limits.set(r, limit);
        }
    }
}

/// Sets some of `project`'s limits; the others keep following the class.
pub fn set_project(
    conn: &mut DbConnection,
    project: &str,
    values: &[(Resource, i64)],
) -> Result<(), DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let t = now();
        for (r, v) in values {
            // Delete and insert rather than an upsert: the same statements on both
            // backends, inside one transaction.
            diesel::delete(
                quotas::table
                    .filter(quotas::project_id.eq(project))
                    .filter(quotas::resource.eq(r.name())),
            )
            .execute(conn)?;
            diesel::insert_into(quotas::table)
                .values((
                    quotas::project_id.eq(project),
                    quotas::resource.eq(r.name()),
                    quotas::hard_limit.eq(*v),
                    quotas::created_at.eq(t),
                    quotas::updated_at.eq(t),
                ))
                .execute(conn)?;
        }
        Ok(())
    })
}

/// Removes `project`'s own limits, so the `default` class applies again.
pub fn delete_project(conn: &mut DbConnection, project: &str) -> Result<(), DbError> {
    diesel::delete(quotas::table.filter(quotas::project_id.eq(project))).execute(conn)?;
    Ok(())
}

/// Sets some limits of quota class `class`.
pub fn set_class(
    conn: &mut DbConnection,
    class: &str,
    values: &[(Resource, i64)],
) -> Result<(), DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        let t = now();
        for (r, v) in values {
            diesel::delete(
                quota_classes::table
                    .filter(quota_classes::class_name.eq(class))
                    .filter(quota_classes::resource.eq(r.name())),
            )
            .execute(conn)?;
            diesel::insert_into(quota_classes::table)
                .values((
                    quota_classes::class_name.eq(class),
                    quota_classes::resource.eq(r.name()),
                    quota_classes::hard_limit.eq(*v),
                    quota_classes::created_at.eq(t),
                    quota_classes::updated_at.eq(t),
                ))
                .execute(conn)?;
        }
        Ok(())
    })
}

/// What `project`'s containers use now.
pub fn usage(conn: &mut DbConnection, project: &str) -> Result<Usage, DbError> {
    // Summed here rather than in SQL: SUM(BIGINT) is NUMERIC on PostgreSQL but
    // INTEGER on SQLite, and a project holds few rows.
    let rows: Vec<(f64, i64, i64)> = containers::table
        .filter(containers::project_id.eq(project))
        .select((containers::cpu, containers::memory_mib, containers::disk_gb))
        .load(conn)?;
    // A capsule counts as one container with its pod's summed cpu and memory.
    let (capsules, capsule_cpu, capsule_mem) = super::capsules::usage(conn, project)?;
    Ok(Usage {
        containers: rows.len() as i64 + capsules,
        cpu: rows.iter().map(|r| r.0).sum::<f64>() + capsule_cpu,
        memory_mib: rows.iter().map(|r| r.1).sum::<i64>() + capsule_mem,
        disk_gb: rows.iter().map(|r| r.2).sum(),
        instances: instances_in_use(conn, project)?,
    })
}

/// The project's instances that count against its `instances` quota: those being made
/// and those active (an instance in error holds no machine).
pub fn instances_in_use(conn: &mut DbConnection, project: &str) -> Result<i64, DbError> {
    use super::instances::{STATUS_ACTIVE, STATUS_BUILDING};
    Ok(instances::table
        .filter(instances::project_id.eq(project))
        .filter(instances::status.eq_any([STATUS_BUILDING, STATUS_ACTIVE]))
        .count()
        .get_result(conn)?)
}

/// The `instances` quota, if one more instance for `project` would exceed it. Run it
/// under [`lock_project`], in the transaction that records the instance.
pub fn instance_exceeded(
    conn: &mut DbConnection,
    project: &str,
) -> Result<Option<Exceeded>, DbError> {
    let limit = project_limits(conn, project)?.get(Resource::Instances);
    if limit < 0 {
        return Ok(None);
    }
    let in_use = instances_in_use(conn, project)?;
    Ok((in_use + 1 > limit).then_some(Exceeded {
        resource: Resource::Instances,
        limit,
        in_use: in_use as f64,
        requested: 1.0,
    }))
}

/// Serialises quota-checked inserts of `project` until the surrounding transaction
/// ends. Call it first thing inside that transaction.
///
/// On PostgreSQL this locks the project's row (`SELECT ... FOR UPDATE`): a second
/// transaction of the same project waits here until the first commits, and under READ
/// COMMITTED its later statements then see the first's rows. A project unknown to the
/// embedded identity (external Keystone) has no row to lock, so a transaction-scoped
/// advisory lock on its id stands in. SQLite has a single writer and Berth's SQLite
/// pool a single connection, so transactions are already serial there.
pub fn lock_project(conn: &mut DbConnection, project: &str) -> Result<(), DbError> {
    if let DbConnection::Pg(pg) = conn {
        let locked: Option<String> = projects::table
            .filter(projects::id.eq(project))
            .select(projects::id)
            .for_update()
            .first(pg)
            .optional()?;
        if locked.is_none() {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))::text")
                .bind::<diesel::sql_types::Text, _>(project)
                .execute(pg)?;
        }
    }
    Ok(())
}

/// The resources one more container of `cpu` vCPUs, `memory_mib` MiB and `disk_gb` GB
/// would take past `project`'s limits (empty: it fits). Run it after [`lock_project`]
/// in the transaction that inserts the container.
pub fn exceeded_by_one_more(
    conn: &mut DbConnection,
    project: &str,
    cpu: f64,
    memory_mib: i64,
    disk_gb: i64,
) -> Result<Vec<Exceeded>, DbError> {
    exceeded(
        conn,
        project,
        &[
            (Resource::Containers, 1.0),
            (Resource::Cpu, cpu),
            (Resource::Memory, memory_mib as f64),
            (Resource::Disk, disk_gb as f64),
        ],
    )
}

/// The resources that growing by `asks` (resource, amount) would take past `project`'s
/// limits. Only growth is refused: shrinking is always allowed, even over a limit
/// lowered since.
fn exceeded(
    conn: &mut DbConnection,
    project: &str,
    asks: &[(Resource, f64)],
) -> Result<Vec<Exceeded>, DbError> {
    let limits = project_limits(conn, project)?;
    let used = usage(conn, project)?;
    Ok(asks
        .iter()
        .filter_map(|&(resource, requested)| {
            let limit = limits.get(resource);
            let in_use = match resource {
                Resource::Containers => used.containers as f64,
                Resource::Cpu => used.cpu,
                Resource::Memory => used.memory_mib as f64,
                Resource::Disk => used.disk_gb as f64,
                Resource::Instances => used.instances as f64,
            };
            // A small tolerance keeps 0.1 + 0.2 within a limit of 0.3.
            (requested > 0.0 && limit >= 0 && in_use + requested > limit as f64 + 1e-9).then_some(
                Exceeded {
                    resource,
                    limit,
                    in_use,
                    requested,
                },
            )
        })
        .collect())
}

/// Resizes a container's recorded cpu and memory (`None`: unchanged) if the project's
/// quota allows the growth, checked and written in one transaction under the project
/// lock. Returns the previous (cpu, memory), to put back if applying the resize fails,
/// or the resources it would exceed (nothing written); `Ok(Ok(None))` when the
/// container is gone.
#[allow(clippy::type_complexity)]
pub fn resize_within_quota(
    conn: &mut DbConnection,
    project: &str,
    container: &str,
    cpu: Option<f64>,
    memory_mib: Option<i64>,
) -> Result<Result<Option<(f64, i64)>, Vec<Exceeded>>, DbError> {
    conn.transaction::<_, DbError, _>(|conn| {
        lock_project(conn, project)?;
        let Some((old_cpu, old_mem)) = containers::table
            .filter(containers::id.eq(container))
            .filter(containers::project_id.eq(project))
            .select((containers::cpu, containers::memory_mib))
            .first::<(f64, i64)>(conn)
            .optional()?
        else {
            return Ok(Ok(None));
        };
        let new_cpu = cpu.unwrap_or(old_cpu);
        let new_mem = memory_mib.unwrap_or(old_mem);
        let over = exceeded(
            conn,
            project,
            &[
                (Resource::Cpu, new_cpu - old_cpu),
                (Resource::Memory, (new_mem - old_mem) as f64),
            ],
        )?;
        if !over.is_empty() {
            return Ok(Err(over));
        }
        diesel::update(containers::table.find(container))
            .set((
                containers::cpu.eq(new_cpu),
                containers::memory_mib.eq(new_mem),
                containers::updated_at.eq(now()),
            ))
            .execute(conn)?;
        Ok(Ok(Some((old_cpu, old_mem))))
    })
}
