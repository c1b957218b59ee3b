//! Folds what agents report into the database, so the database tells the truth.
//!
//! The agent is the source of truth for actual state. On every (re)connect it reports
//! every container it manages; the reconciler then
//! - records each observed container's state;
//! - resumes creates and deletes that were interrupted (crash, unreachable agent);
//! - marks containers that vanished from the engine as Error (or drops the row when
//!   the container was auto-removed or was being deleted);
//! - removes containers that no row knows about (a create whose row was rolled back),
//!   except the agent containers of instances made on this host;
//! - marks an instance being made `active` when its agent first reports, which
//!   resumes the creates of the containers waiting for it, and an instance the
//!   instances monitor marked lost `active` again when its agent reports again.
//!
//! Events between reports update single containers.
//!
//! Each relay's reports also keep `agent_links`, the relay each agent is connected to
//! now, which is how commands find their way with several relays. Events carry the
//! agent's session and a sequence number; an event at or below the last one applied
//! for that session is a repeat (the agent re-sends what was not acknowledged after a
//! reconnect) and is dropped. Each event is acknowledged, through the relay it came
//! from, once recorded. The event is applied before its number is stored, so a crash
//! in between applies it a second time after the re-send; events are observations,
//! and applying one twice leaves the same row.

use std::collections::HashMap;

use berth_proto::{ContainerEvent, ObservedContainer, RelayToService};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::agents::RelayNote;
use crate::db::containers::{self as q, ContainerChange};
use crate::db::{agent_links, instances, monitor, DbError};
use crate::domain::ContainerStatus;
use crate::lifecycle::{observation_change, port_rows};
use crate::state::AppState;

/// Runs until the relay connections' notification channel closes.
pub async fn run(state: AppState, mut notes: mpsc::Receiver<RelayNote>) {
    while let Some(note) = notes.recv().await {
        // A report met by a database outage is recorded once the database is back (the
        // reports behind it wait): dropping it would leave the database wrong until the
        // agent happens to reconnect.
        let result = crate::db::retry_while_unavailable("agent report", || async {
            match note.clone() {
                RelayNote::Message { relay, message } => handle(&state, &relay, *message).await,
                RelayNote::Lost { relay } => relay_lost(&state, &relay).await,
            }
        })
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "could not record an agent report");
        }
    }
}

/// Records one message from the relay at `relay`.
pub async fn handle(state: &AppState, relay: &str, note: RelayToService) -> Result<(), DbError> {
    match note {
        RelayToService::AgentConnected {
            instance,
            containers,
            session,
        } => {
            let id = instance.to_string();
            let relay_owned = relay.to_owned();
            let linked = state
                .db
                .run(move |c| {
                    if instances::get(c, &id)?.is_none() {
                        return Ok(false);
                    }
                    let session = session.map(|s| s.to_string());
                    agent_links::connected(c, &id, &relay_owned, session.as_deref())?;
                    Ok(true)
                })
                .await?;
            if linked {
                tracing::info!(instance.id = %instance, relay.url = %relay, "agent connected through this relay");
            }
            full_state(state, instance, containers).await?;
            // Capsules: deliver the specs and deletes the agent has not acknowledged.
            crate::pods::service::resume_instance(state, &instance.to_string()).await
        }
        RelayToService::AgentDisconnected { instance } => {
            let id = instance.to_string();
            let relay_owned = relay.to_owned();
            let gone = state
                .db
                .run(move |c| {
                    // Only when the link still names this relay: the agent may already
                    // have reported through another one.
                    let gone = agent_links::disconnected(c, &id, &relay_owned)?;
                    if gone {
                        instances::set_agent_connected(c, &id, false)?;
                    }
                    Ok(gone)
                })
                .await?;
            if gone {
                tracing::warn!(instance.id = %instance, relay.url = %relay, "agent disconnected");
            } else {
                tracing::info!(instance.id = %instance, relay.url = %relay, "agent left a relay it no longer uses");
            }
            Ok(())
        }
        RelayToService::Event {
            instance,
            event,
            seq,
            session,
        } => {
            let Some(session) = session else {
                tracing::debug!(instance.id = %instance, event.seq = seq, "agent event");
                return apply_event(state, instance, event).await;
            };
            let applied = apply_once(&state.db, instance, session, seq, async {
                apply_event(state, instance, event).await
            })
            .await?;
            if !applied {
                tracing::debug!(instance.id = %instance, event.session = %session, event.seq = seq, "dropping an agent event applied before");
            }
            state.agents.ack(relay, instance, session, seq).await;
            Ok(())
        }
        RelayToService::Agents { instances } => {
            tracing::info!(relay.url = %relay, agents = instances.len(), "relay reports connected agents");
            let present: Vec<String> = instances.iter().map(Uuid::to_string).collect();
            let relay = relay.to_owned();
            state
                .db
                .run(move |c| {
                    for id in agent_links::relay_reports(c, &relay, &present)? {
                        instances::set_agent_connected(c, &id, false)?;
                    }
                    Ok(())
                })
                .await
        }
        RelayToService::Reply { .. } | RelayToService::Stream { .. } => Ok(()),
    }
}

/// Runs `apply` for event `seq` of the agent session `session` of `instance` unless
/// that event (or a later one of the session) was applied before, then records it as
/// applied. Whether `apply` ran.
async fn apply_once(
    db: &crate::db::Db,
    instance: Uuid,
    session: Uuid,
    seq: u64,
    apply: impl std::future::Future<Output = Result<(), DbError>>,
) -> Result<bool, DbError> {
    let (id, session_text) = (instance.to_string(), session.to_string());
    let repeat = db
        .run(move |c| agent_links::already_applied(c, &id, &session_text, seq))
        .await?;
    if repeat {
        return Ok(false);
    }
    tracing::debug!(instance.id = %instance, event.session = %session, event.seq = seq, "agent event");
    apply.await?;
    let (id, session_text) = (instance.to_string(), session.to_string());
    db.run(move |c| agent_links::mark_applied(c, &id, &session_text, seq))
        .await?;
    Ok(true)
}

/// The connection to the relay at `relay` is gone: its agents are unreachable until
/// they report again, through it or another relay.
async fn relay_lost(state: &AppState, relay: &str) -> Result<(), DbError> {
    let relay_owned = relay.to_owned();
    let cut = state
        .db
        .run(move |c| {
            let cut = agent_links::relay_reports(c, &relay_owned, &[])?;
            for id in &cut {
                instances::set_agent_connected(c, id, false)?;
            }
            Ok(cut)
        })
        .await?;
    if !cut.is_empty() {
        tracing::warn!(relay.url = %relay, agents = cut.len(), "lost the connection to a relay; its agents are unreachable until they reconnect");
    }
    Ok(())
}

/// What to do with one row after a full report.
enum Verdict {
    Observe(ObservedContainer),
    ResumeCreate,
    ResumeDelete,
    Forget,
    Vanished,
    Leave,
}

async fn full_state(
    state: &AppState,
    instance: Uuid,
    observed: Vec<ObservedContainer>,
) -> Result<(), DbError> {
    tracing::info!(instance.id = %instance, containers = observed.len(), "agent connected with its full state");
    let instance_id = instance.to_string();
    let known = {
        let id = instance_id.clone();
        state
            .db
            .run(move |c| {
                let exists = instances::get(c, &id)?.is_some();
                if exists && instances::agent_connected(c, &id)? {
                    tracing::info!(instance.id = %id, "the instance's agent connected: instance active");
                }
                // An instance the monitor marked lost or failed is back: the rows of its
                // containers are corrected below from what the agent reports.
                if exists && monitor::recovered(c, &id)? {
                    tracing::info!(instance.id = %id, "the agent of a lost instance reports again: instance active");
                }
                exists.then(|| q::on_instance(c, &id)).transpose()
            })
            .await?
    };
    let Some(rows) = known else {
        tracing::warn!(instance.id = %instance, "an agent reported for an instance the database does not know");
        return Ok(());
    };
    let mut by_uuid: HashMap<Uuid, ObservedContainer> =
        observed.into_iter().map(|o| (o.uuid, o)).collect();
    let mut verdicts = Vec::new();
    for row in rows {
        let status = ContainerStatus::from_db(&row.status);
        let seen = Uuid::parse_str(&row.id)
            .ok()
            .and_then(|u| by_uuid.remove(&u));
        let verdict = match (status, seen) {
            (ContainerStatus::Creating, _) => Verdict::ResumeCreate,
            (ContainerStatus::Deleting, _) => Verdict::ResumeDelete,
            (_, Some(o)) => Verdict::Observe(o),
            (_, None) if row.auto_remove => Verdict::Forget,
            // A container that failed before the engine made it never existed there.
            (ContainerStatus::Error, None) if row.runtime_id.is_none() => Verdict::Leave,
            (_, None) => Verdict::Vanished,
        };
        verdicts.push((row, verdict));
    }
    for (row, verdict) in verdicts {
        let id = row.id.clone();
        match verdict {
            Verdict::Observe(o) => record(state, &id, &instance_id, o).await?,
            Verdict::ResumeCreate => {
                tracing::info!(container.id = %id, "resuming an interrupted create");
                state.lifecycle.spawn_create(id, None);
            }
            Verdict::ResumeDelete => {
                tracing::info!(container.id = %id, "resuming an interrupted delete");
                state.lifecycle.spawn_delete(id, false);
            }
            Verdict::Forget => state.lifecycle.forget(&id).await?,
            Verdict::Vanished => {
                let change = ContainerChange {
                    status: Some(ContainerStatus::Error.as_str().into()),
                    status_reason: Some(Some(
                        "The container no longer exists on its instance; delete it and create it again.".into(),
                    )),
                    task_state: Some(None),
                    ..Default::default()
                };
                let id_owned = id.clone();
                state
                    .db
                    .run(move |c| q::update(c, &id_owned, change))
                    .await?;
                state.lifecycle.notify(&id).await?;
            }
            Verdict::Leave => {}
        }
    }
    // Whatever is left runs on the engine with no row: remove it, so nothing runs
    // that the database does not know about. The agent containers of `docker`
    // instances made on this host carry their instance's id and are not orphans.
    let left: Vec<Uuid> = by_uuid.into_keys().collect();
    let orphans = state
        .db
        .run(move |c| {
            let mut orphans = Vec::new();
            for uuid in left {
                if instances::get(c, &uuid.to_string())?.is_none() {
                    orphans.push(uuid);
                }
            }
            Ok(orphans)
        })
        .await?;
    for orphan in orphans {
        tracing::warn!(container.id = %orphan, instance.id = %instance, "removing a container no row knows about");
        let agents = state.agents.clone();
        tokio::spawn(async move {
            let cmd = berth_proto::Command::Remove {
                container: orphan,
                force: true,
            };
            if let Err(e) = agents.call(instance, None, cmd).await {
                tracing::warn!(container.id = %orphan, error = %e, "could not remove an orphan container");
            }
        });
    }
    Ok(())
}

async fn record(
    state: &AppState,
    id: &str,
    instance: &str,
    o: ObservedContainer,
) -> Result<(), DbError> {
    let id_owned = id.to_owned();
    let instance = instance.to_owned();
    state
        .db
        .run(move |c| {
            let id = id_owned;
            // A row being created or deleted is driven by its operation; don't let an
            // observation move it out of that status.
            let Some(row) = q::get(c, &id)? else {
                return Ok(());
            };
            let mut change = observation_change(&o);
            if matches!(
                ContainerStatus::from_db(&row.status),
                ContainerStatus::Deleting | ContainerStatus::Creating
            ) {
                change.status = None;
                change.status_reason = None;
            }
            q::update(c, &id, change)?;
            q::record_ports(c, &port_rows(&id, &instance, &o))
        })
        .await?;
    state.lifecycle.notify(id).await?;
    state.lifecycle.auto_remove_if_exited(id).await
}

async fn apply_event(
    state: &AppState,
    instance: Uuid,
    event: ContainerEvent,
) -> Result<(), DbError> {
    match event {
        ContainerEvent::Pod { status } => {
            crate::pods::service::record_status(state, &instance.to_string(), *status).await
        }
        ContainerEvent::PodRemoved { uuid } => {
            crate::pods::service::record_removed(state, &instance.to_string(), uuid).await
        }
        ContainerEvent::Changed { container } => {
            let id = container.uuid.to_string();
            record(state, &id, &instance.to_string(), container).await
        }
        ContainerEvent::Removed { uuid } => {
            let id = uuid.to_string();
            let id_owned = id.clone();
            let forget = state
                .db
                .run(move |c| {
                    let id = id_owned;
                    let Some(row) = q::get(c, &id)? else { return Ok(false) };
                    match ContainerStatus::from_db(&row.status) {
                        // Deletes remove the row themselves once the agent confirms.
                        ContainerStatus::Deleting | ContainerStatus::Creating => Ok(false),
                        _ if row.auto_remove => Ok(true),
                        _ => {
                            let change = ContainerChange {
                                status: Some(ContainerStatus::Error.as_str().into()),
                                status_reason: Some(Some(
                                    "The container was removed from its instance outside Berth; delete it and create it again."
                                        .into(),
                                )),
                                task_state: Some(None),
                                ..Default::default()
                            };
                            q::update(c, &id, change).map(|_| false)
                        }
                    }
                })
                .await?;
            if forget {
                state.lifecycle.forget(&id).await
            } else {
                state.lifecycle.notify(&id).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn an_event_sent_again_after_a_reconnect_is_applied_once() {
        // Without the foreign key to `instances`, no instance row is needed.
        let (_dir, db) = crate::db::testing::sqlite_without_foreign_keys();
        let (instance, session) = (Uuid::new_v4(), Uuid::new_v4());
        let link = |relay: &'static str, session: Uuid| {
            let id = instance.to_string();
            db.run(move |c| agent_links::connected(c, &id, relay, Some(&session.to_string())))
        };
        link("ws://a", session).await.unwrap();

        let applied = AtomicUsize::new(0);
        let deliver = |session: Uuid, seq: u64| {
            let applied = &applied;
            apply_once(&db, instance, session, seq, async move {
                applied.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        };
        let mut ran = Vec::new();
        for seq in [1, 2] {
            ran.push(deliver(session, seq).await.unwrap());
        }
        // The relay died before the acks reached the agent: after its state, through
        // the other relay, the agent sends 1 and 2 again, then 3.
        link("ws://b", session).await.unwrap();
        for seq in [1, 2, 3] {
            ran.push(deliver(session, seq).await.unwrap());
        }
        assert_eq!(ran, vec![true, true, false, false, true]);
        assert_eq!(applied.load(Ordering::SeqCst), 3);

        // A restarted agent is a new session, numbered from 1 again.
        let restarted = Uuid::new_v4();
        link("ws://b", restarted).await.unwrap();
        assert!(deliver(restarted, 1).await.unwrap());
        assert_eq!(applied.load(Ordering::SeqCst), 4);
    }
}
