//! Which relay each instance's agent is connected to, and how far its events have
//! been applied (migration 000010).
//!
//! Every service replica connects to every relay; the row tells any of them through
//! which relay to reach an agent. Rows are changed only conditionally on the relay
//! they name, so reports from two relays arriving in either order (the agent moved
//! from a dying relay to another) leave the newer one standing.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::{now, DbConnection, DbError};

diesel::table! {
    /// See migration 000010 `agent_links`.
    agent_links (instance_id) {
        instance_id -> Text,
        relay_url -> Nullable<Text>,
        session -> Nullable<Text>,
        last_seq -> BigInt,
        connected_at -> Nullable<Timestamp>,
        updated_at -> Timestamp,
    }
}

/// One instance's link.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = agent_links)]
pub struct AgentLinkRow {
    /// The instance.
    pub instance_id: String,
    /// The relay its agent is connected to now; `None` when none.
    pub relay_url: Option<String>,
    /// The agent process's session, when the agent reports one.
    pub session: Option<String>,
    /// The highest event of `session` applied.
    pub last_seq: i64,
    /// When the agent connected to `relay_url`.
    pub connected_at: Option<NaiveDateTime>,
    /// When the row last changed.
    pub updated_at: NaiveDateTime,
}

/// The link of `instance`, if there is one.
pub fn get(conn: &mut DbConnection, instance: &str) -> Result<Option<AgentLinkRow>, DbError> {
    Ok(agent_links::table
        .find(instance)
        .select(AgentLinkRow::as_select())
        .first(conn)
        .optional()?)
}

/// The relay the agent of `instance` is connected to now, if any.
pub fn relay_of(conn: &mut DbConnection, instance: &str) -> Result<Option<String>, DbError> {
    Ok(get(conn, instance)?.and_then(|row| row.relay_url))
}

/// The agent of `instance` connected to `relay` with its full state. A new `session`
/// (the agent process restarted) starts its event numbering again; the same session
/// (a reconnect) keeps how far its events were applied. The instance must exist.
pub fn connected(
    conn: &mut DbConnection,
    instance: &str,
    relay: &str,
    session: Option<&str>,
) -> Result<(), DbError> {
    let instance = instance.to_owned();
    let relay = relay.to_owned();
    let session = session.map(str::to_owned);
    conn.transaction::<_, DbError, _>(|c| {
        let t = now();
        match get(c, &instance)? {
            Some(row) => {
                let last_seq = if row.session == session {
                    row.last_seq
                } else {
                    0
                };
                diesel::update(agent_links::table.find(&instance))
                    .set((
                        agent_links::relay_url.eq(Some(&relay)),
                        agent_links::session.eq(&session),
                        agent_links::last_seq.eq(last_seq),
                        agent_links::connected_at.eq(Some(t)),
                        agent_links::updated_at.eq(t),
                    ))
                    .execute(c)?;
            }
            None => {
                diesel::insert_into(agent_links::table)
                    .values((
                        agent_links::instance_id.eq(&instance),
                        agent_links::relay_url.eq(Some(&relay)),
                        agent_links::session.eq(&session),
                        agent_links::last_seq.eq(0i64),
                        agent_links::connected_at.eq(Some(t)),
                        agent_links::updated_at.eq(t),
                    ))
                    .execute(c)?;
            }
        }
        Ok(())
    })
}

/// The agent of `instance` left `relay`. Whether the row named that relay (false when
/// the agent already reported through another one, which then stands).
pub fn disconnected(conn: &mut DbConnection, instance: &str, relay: &str) -> Result<bool, DbError> {
    let n = diesel::update(
        agent_links::table
            .find(instance)
            .filter(agent_links::relay_url.eq(relay)),
    )
    .set((
        agent_links::relay_url.eq(None::<String>),
        agent_links::updated_at.eq(now()),
    ))
    .execute(conn)?;
    Ok(n > 0)
}

/// `relay` reports that exactly `present` are connected to it (when a service
/// connects to it). Rows naming `relay` for other instances are cleared and their
/// instances returned; rows of `present` instances that exist are pointed at it.
pub fn relay_reports(
    conn: &mut DbConnection,
    relay: &str,
    present: &[String],
) -> Result<Vec<String>, DbError> {
    let relay = relay.to_owned();
    let present = present.to_vec();
    conn.transaction::<_, DbError, _>(|c| {
        let t = now();
        let gone: Vec<String> = agent_links::table
            .filter(agent_links::relay_url.eq(&relay))
            .filter(agent_links::instance_id.ne_all(&present))
            .select(agent_links::instance_id)
            .load(c)?;
        diesel::update(agent_links::table.filter(agent_links::instance_id.eq_any(&gone)))
            .set((
                agent_links::relay_url.eq(None::<String>),
                agent_links::updated_at.eq(t),
            ))
            .execute(c)?;
        diesel::update(agent_links::table.filter(agent_links::instance_id.eq_any(&present)))
            .set((
                agent_links::relay_url.eq(Some(&relay)),
                agent_links::updated_at.eq(t),
            ))
            .execute(c)?;
        Ok(gone)
    })
}

/// Whether event `seq` of `session` from the agent of `instance` was applied already.
/// Events without a session (agents older than sessions) are never taken for repeats.
pub fn already_applied(
    conn: &mut DbConnection,
    instance: &str,
    session: &str,
    seq: u64,
) -> Result<bool, DbError> {
    Ok(get(conn, instance)?.is_some_and(|row| {
        row.session.as_deref() == Some(session) && seq <= u64::try_from(row.last_seq).unwrap_or(0)
    }))
}

/// Event `seq` of `session` was applied: later repeats of it (and of anything before
/// it in the session) are dropped. Never moves backwards within a session.
pub fn mark_applied(
    conn: &mut DbConnection,
    instance: &str,
    session: &str,
    seq: u64,
) -> Result<(), DbError> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    let instance = instance.to_owned();
    let session = session.to_owned();
    conn.transaction::<_, DbError, _>(|c| {
        let Some(row) = get(c, &instance)? else {
            return Ok(());
        };
        if row.session.as_deref() == Some(session.as_str()) && row.last_seq >= seq {
            return Ok(());
        }
        diesel::update(agent_links::table.find(&instance))
            .set((
                agent_links::session.eq(Some(&session)),
                agent_links::last_seq.eq(seq),
                agent_links::updated_at.eq(now()),
            ))
            .execute(c)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use diesel::connection::SimpleConnection;

    /// A fresh SQLite database; instance rows are not needed for these queries, so the
    /// foreign key to `instances` is switched off on this connection.
    fn db() -> (tempfile::TempDir, Db) {
        crate::db::testing::sqlite()
    }

    fn conn(db: &Db) -> diesel::r2d2::PooledConnection<crate::db::Manager> {
        let mut conn = db.conn().unwrap();
        conn.batch_execute("PRAGMA foreign_keys = OFF;").unwrap();
        conn
    }

    #[test]
    fn a_disconnect_from_a_relay_the_agent_already_left_keeps_the_newer_link() {
        let (_dir, db) = db();
        let mut c = conn(&db);
        connected(&mut c, "i1", "ws://a", Some("s1")).unwrap();
        assert_eq!(relay_of(&mut c, "i1").unwrap().as_deref(), Some("ws://a"));
        // The agent moved to b before a's disconnect was processed.
        connected(&mut c, "i1", "ws://b", Some("s1")).unwrap();
        assert!(!disconnected(&mut c, "i1", "ws://a").unwrap());
        assert_eq!(relay_of(&mut c, "i1").unwrap().as_deref(), Some("ws://b"));
        assert!(disconnected(&mut c, "i1", "ws://b").unwrap());
        assert_eq!(relay_of(&mut c, "i1").unwrap(), None);
        assert_eq!(relay_of(&mut c, "unknown").unwrap(), None);
    }

    #[test]
    fn a_relays_report_clears_the_agents_it_no_longer_has_and_claims_those_it_has() {
        let (_dir, db) = db();
        let mut c = conn(&db);
        connected(&mut c, "i1", "ws://a", None).unwrap();
        connected(&mut c, "i2", "ws://a", None).unwrap();
        connected(&mut c, "i3", "ws://b", None).unwrap();
        let gone = relay_reports(&mut c, "ws://a", &["i2".to_owned(), "i3".to_owned()]).unwrap();
        assert_eq!(gone, vec!["i1".to_owned()]);
        assert_eq!(relay_of(&mut c, "i1").unwrap(), None);
        assert_eq!(relay_of(&mut c, "i2").unwrap().as_deref(), Some("ws://a"));
        assert_eq!(relay_of(&mut c, "i3").unwrap().as_deref(), Some("ws://a"));
        // A lost relay is a report of no agents.
        let mut gone = relay_reports(&mut c, "ws://a", &[]).unwrap();
        gone.sort();
        assert_eq!(gone, vec!["i2".to_owned(), "i3".to_owned()]);
    }

    #[test]
    fn an_event_is_applied_once_within_a_session_and_a_new_session_starts_over() {
        let (_dir, db) = db();
        let mut c = conn(&db);
        connected(&mut c, "i1", "ws://a", Some("s1")).unwrap();
        assert!(!already_applied(&mut c, "i1", "s1", 1).unwrap());
        mark_applied(&mut c, "i1", "s1", 1).unwrap();
        mark_applied(&mut c, "i1", "s1", 2).unwrap();
        assert!(already_applied(&mut c, "i1", "s1", 1).unwrap());
        assert!(already_applied(&mut c, "i1", "s1", 2).unwrap());
        assert!(!already_applied(&mut c, "i1", "s1", 3).unwrap());
        // Never backwards.
        mark_applied(&mut c, "i1", "s1", 1).unwrap();
        assert!(already_applied(&mut c, "i1", "s1", 2).unwrap());
        // A reconnect of the same process (through another relay) keeps the count.
        connected(&mut c, "i1", "ws://b", Some("s1")).unwrap();
        assert!(already_applied(&mut c, "i1", "s1", 2).unwrap());
        // A restarted agent is a new session, numbered from 1 again.
        connected(&mut c, "i1", "ws://b", Some("s2")).unwrap();
        assert!(!already_applied(&mut c, "i1", "s2", 1).unwrap());
        assert!(!already_applied(&mut c, "i1", "s1", 1).unwrap());
        assert_eq!(get(&mut c, "i1").unwrap().unwrap().last_seq, 0);
    }
}
