//! Events the service has not acknowledged yet, numbered within the agent's session.
//!
//! Each agent process is one session (a fresh uuid at start). Events are numbered
//! 1, 2, 3… within the session, across reconnects, and kept here until the service
//! acknowledges them ([`berth_proto::RelayToAgent::Ack`], cumulative). After a
//! reconnect the agent sends its full state and then the events still kept, so
//! delivery is at least once; the service drops the ones it already applied by
//! (instance, session, seq).
//!
//! The outbox is bounded. When it is full the oldest event is dropped: nothing is
//! lost for good, because the next connection starts with the full state (every
//! container) and every pod's status, which cover whatever the dropped event said.

use std::collections::VecDeque;

use berth_proto::ContainerEvent;
use uuid::Uuid;

/// Unacknowledged events kept at most. An event is a few hundred bytes, so this
/// stays under a few MiB even for an agent cut off from every relay for a long time.
pub(crate) const OUTBOX_CAPACITY: usize = 4096;

/// The session's numbering and its unacknowledged events.
#[derive(Debug)]
pub(crate) struct Outbox {
    session: Uuid,
    last_seq: u64,
    capacity: usize,
    unacked: VecDeque<(u64, ContainerEvent)>,
    /// Dropping events since the last ack: warned once, not at every event.
    overflowing: bool,
}

impl Outbox {
    /// A new session with room for `capacity` unacknowledged events.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            session: Uuid::new_v4(),
            last_seq: 0,
            capacity: capacity.max(1),
            unacked: VecDeque::new(),
            overflowing: false,
        }
    }

    /// This process's session id.
    pub(crate) fn session(&self) -> Uuid {
        self.session
    }

    /// Number `event`, keep it until acknowledged, and return its number.
    pub(crate) fn push(&mut self, event: ContainerEvent) -> u64 {
        self.last_seq += 1;
        if self.unacked.len() >= self.capacity {
            if let Some((dropped, _)) = self.unacked.pop_front() {
                if std::mem::replace(&mut self.overflowing, true) {
                    tracing::debug!(session = %self.session, event.seq = dropped, "outbox full; dropping the oldest event");
                } else {
                    tracing::warn!(
                        session = %self.session,
                        event.seq = dropped,
                        capacity = self.capacity,
                        "the outbox of unacknowledged events is full; dropping the oldest \
                         (the full state sent on the next connection covers it)"
                    );
                }
            }
        }
        self.unacked.push_back((self.last_seq, event));
        self.last_seq
    }

    /// The service recorded every event of `session` up to `seq`: forget them. An ack
    /// for another session (an older agent process) changes nothing.
    pub(crate) fn ack(&mut self, session: Uuid, seq: u64) {
        if session != self.session {
            return;
        }
        self.overflowing = false;
        while self.unacked.front().is_some_and(|(s, _)| *s <= seq) {
            self.unacked.pop_front();
        }
    }

    /// The events to send again right after a full state taken now: container
    /// events are superseded by the state (it observes every container afresh; sent
    /// after it, an older observation would undo a newer one), so they are forgotten;
    /// pod events are kept, in order, since the state carries no pods.
    pub(crate) fn resend_after_state(&mut self) -> Vec<(u64, ContainerEvent)> {
        self.unacked.retain(|(_, event)| {
            matches!(
                event,
                ContainerEvent::Pod { .. } | ContainerEvent::PodRemoved { .. }
            )
        });
        self.unacked.iter().cloned().collect()
    }

    /// Unacknowledged events kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.unacked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removed() -> ContainerEvent {
        ContainerEvent::Removed {
            uuid: Uuid::new_v4(),
        }
    }

    /// The numbers of the events [`Outbox::resend_after_state`] sends again.
    fn resent_numbers(outbox: &mut Outbox) -> Vec<u64> {
        outbox
            .resend_after_state()
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    }

    fn pod_removed() -> ContainerEvent {
        ContainerEvent::PodRemoved {
            uuid: Uuid::new_v4(),
        }
    }

    #[test]
    fn events_are_numbered_from_one_within_the_session() {
        let mut outbox = Outbox::new(8);
        assert_eq!(outbox.push(removed()), 1);
        assert_eq!(outbox.push(removed()), 2);
        assert_eq!(outbox.push(pod_removed()), 3);
        assert_eq!(outbox.len(), 3);
    }

    #[test]
    fn an_ack_forgets_every_event_up_to_its_number_and_only_for_this_session() {
        let mut outbox = Outbox::new(8);
        for _ in 0..5 {
            outbox.push(pod_removed());
        }
        outbox.ack(Uuid::new_v4(), 5);
        assert_eq!(outbox.len(), 5, "an ack of another session is ignored");
        outbox.ack(outbox.session(), 3);
        assert_eq!(outbox.len(), 2);
        let left = resent_numbers(&mut outbox);
        assert_eq!(left, vec![4, 5]);
    }

    #[test]
    fn numbering_goes_on_after_a_resend_so_a_reconnect_never_reuses_a_number() {
        let mut outbox = Outbox::new(8);
        outbox.push(pod_removed());
        outbox.push(pod_removed());
        assert_eq!(outbox.resend_after_state().len(), 2);
        assert_eq!(outbox.push(pod_removed()), 3);
    }

    #[test]
    fn container_events_are_superseded_by_the_full_state_and_pod_events_are_resent() {
        let mut outbox = Outbox::new(8);
        outbox.push(removed());
        outbox.push(pod_removed());
        outbox.push(removed());
        let resent = resent_numbers(&mut outbox);
        assert_eq!(resent, vec![2]);
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_event() {
        let mut outbox = Outbox::new(3);
        for _ in 0..5 {
            outbox.push(pod_removed());
        }
        let kept = resent_numbers(&mut outbox);
        assert_eq!(kept, vec![3, 4, 5]);
    }
}
