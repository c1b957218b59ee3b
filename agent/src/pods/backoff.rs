//! Kubelet's crash-loop backoff, as a pure value the pod store can persist.
//!
//! # API for the reconciler
//!
//! ```text
//! let mut backoff = Backoff::new(base, max);          // reset after 2 × max, as kubelet
//! let mut backoff = Backoff::with_reset(base, max, reset);
//! let mut backoff = Backoff::default();              // 10 s, 300 s, reset after 600 s
//!
//! // A container that may be restarted (restart policy allows it) has exited at
//! // `finished_at` (the engine's FinishedAt of its last instance):
//! let key = BackoffKey::new(pod_uuid, &container.name, &container.spec_hash());
//! let delay = backoff.next_delay(&key, Utc::now(), finished_at);
//! if delay.is_zero() {
//!     // restart now (the restart is recorded; asking again for the same
//!     // `finished_at` keeps answering "now" without doubling)
//! } else {
//!     // show Waiting{CrashLoopBackOff, delay.message(&container.name)} and ask
//!     // again after `delay.remaining`
//! }
//!
//! backoff.forget_pod(pod_uuid);     // the pod was deleted
//! backoff.gc(Utc::now());           // drop entries that have expired anyway
//! backoff.set_limits(base, max, reset);  // after loading from disk with new settings
//! ```
//!
//! `Backoff` is `Serialize + Deserialize` (JSON-safe: the entries are a list, durations
//! are milliseconds), so the store can write it next to the restart counts and a
//! restarted agent keeps each container's place in the sequence.
//!
//! # The algorithm (kubelet's, restated)
//!
//! Per key — (pod uuid, container name, spec hash), so a spec change starts afresh —
//! there is at most one entry `{period, last_update}`.
//! - No entry (or an expired one): the restart happens at once, and the entry is
//!   (re)made with `period = base`, `last_update = now`.
//! - An entry expires when the container's last exit came more than `reset` (kubelet:
//!   2 × max = 600 s) after `last_update`, i.e. the container ran that long since the
//!   restart that the entry recorded.
//! - Otherwise the container waits until `finished_at + period`; once that has passed,
//!   the restart happens and `period` doubles, capped at `max`.
//!
//! With kubelet's defaults the waits before successive restarts are therefore
//! 0, 10, 20, 40, 80, 160, 300, 300… seconds, measured from each exit.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Kubelet's base period (`backOffPeriod`).
pub const DEFAULT_BASE: Duration = Duration::from_secs(10);
/// Kubelet's cap (`MaxContainerBackOff`).
pub const DEFAULT_MAX: Duration = Duration::from_secs(300);

/// Which container's sequence: kubelet's stable key (pod, container name, spec hash).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackoffKey {
    /// The pod's uuid.
    pub pod: Uuid,
    /// The container's name in the pod.
    pub container: String,
    /// The container's [`berth_proto::pod::PodContainer::spec_hash`].
    pub spec_hash: String,
}

impl BackoffKey {
    /// The key of one container of one pod at one spec.
    pub fn new(pod: Uuid, container: &str, spec_hash: &str) -> BackoffKey {
        BackoffKey {
            pod,
            container: container.to_owned(),
            spec_hash: spec_hash.to_owned(),
        }
    }
}

/// What [`Backoff::next_delay`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// How long to wait before restarting; zero means restart now.
    pub remaining: Duration,
    /// The back-off period in force (what kubelet shows as "back-off 40s"); zero when
    /// the restart is immediate because the sequence starts (again).
    pub period: Duration,
}

impl Delay {
    /// Restart now.
    pub fn is_zero(&self) -> bool {
        self.remaining.is_zero()
    }

    /// The message of a `CrashLoopBackOff` waiting state, e.g.
    /// `back-off 40s restarting failed container=web`.
    pub fn message(&self, container: &str) -> String {
        format!(
            "back-off {} restarting failed container={container}",
            human(self.period)
        )
    }
}

/// Whole seconds as `40s`, shorter periods (scaled down for tests) as `250ms`.
fn human(period: Duration) -> String {
    if period.subsec_millis() == 0 && period.as_secs() > 0 {
        format!("{}s", period.as_secs())
    } else {
        format!("{}ms", period.as_millis())
    }
}

/// One container's place in its sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// The current period, in milliseconds.
    period_ms: u64,
    /// When the entry last advanced (the restart it allowed).
    last_update: DateTime<Utc>,
    /// The exit that last advanced it: asking again about the same exit (the
    /// reconciler's loop ran before the restart was observed, or the agent restarted
    /// in between) answers "now" again instead of doubling.
    finished_at: DateTime<Utc>,
}

/// Kubelet's crash-loop backoff for every container of every pod of this agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Persisted", from = "Persisted")]
pub struct Backoff {
    base: Duration,
    max: Duration,
    reset: Duration,
    entries: BTreeMap<BackoffKey, Entry>,
}

/// The JSON shape: a list, since JSON object keys must be strings.
#[derive(Serialize, Deserialize)]
struct Persisted {
    base_ms: u64,
    max_ms: u64,
    reset_ms: u64,
    #[serde(default)]
    entries: Vec<PersistedEntry>,
}

#[derive(Serialize, Deserialize)]
struct PersistedEntry {
    key: BackoffKey,
    #[serde(flatten)]
    entry: Entry,
}

impl From<Backoff> for Persisted {
    fn from(backoff: Backoff) -> Persisted {
        Persisted {
            base_ms: millis(backoff.base),
            max_ms: millis(backoff.max),
            reset_ms: millis(backoff.reset),
            entries: backoff
                .entries
                .into_iter()
                .map(|(key, entry)| PersistedEntry { key, entry })
                .collect(),
        }
    }
}

impl From<Persisted> for Backoff {
    fn from(persisted: Persisted) -> Backoff {
        let mut backoff = Backoff::with_reset(
            Duration::from_millis(persisted.base_ms),
            Duration::from_millis(persisted.max_ms),
            Duration::from_millis(persisted.reset_ms),
        );
        backoff.entries = persisted
            .entries
            .into_iter()
            .map(|persisted| (persisted.key, persisted.entry))
            .collect();
        backoff
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `later - earlier`, zero when `later` is not later (clocks may step back).
fn elapsed(earlier: DateTime<Utc>, later: DateTime<Utc>) -> Duration {
    (later - earlier).to_std().unwrap_or(Duration::ZERO)
}

impl Default for Backoff {
    /// Kubelet's: 10 s doubling to 300 s, reset after 600 s.
    fn default() -> Backoff {
        Backoff::new(DEFAULT_BASE, DEFAULT_MAX)
    }
}

impl Backoff {
    /// `base` doubling to `max`, reset after a run longer than 2 × `max` (kubelet's rule).
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff::with_reset(base, max, max.saturating_mul(2))
    }

    /// `base` doubling to `max`, reset after a run longer than `reset`.
    ///
    /// A zero `base` is taken as 1 ms and a `max` below `base` as `base`, so the
    /// sequence always makes progress.
    pub fn with_reset(base: Duration, max: Duration, reset: Duration) -> Backoff {
        let (base, max) = limits(base, max);
        Backoff {
            base,
            max,
            reset,
            entries: BTreeMap::new(),
        }
    }

    /// Change the limits and keep every container's place (periods above the new
    /// `max` are capped). For a store loaded from disk under new settings.
    pub fn set_limits(&mut self, base: Duration, max: Duration, reset: Duration) {
        let (base, max) = limits(base, max);
        self.base = base;
        self.max = max;
        self.reset = reset;
        let cap = millis(max);
        for entry in self.entries.values_mut() {
            entry.period_ms = entry.period_ms.min(cap);
        }
    }

    /// The base period.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// How long a run must last to start the sequence afresh.
    pub fn reset(&self) -> Duration {
        self.reset
    }

    /// Decide about restarting the container of `key` whose last instance exited at
    /// `finished_at`, at time `now`.
    ///
    /// Returns a zero [`Delay`] when the restart may happen now — and records it: the
    /// next exit waits for the following period. Otherwise returns how long is left
    /// and changes nothing, so a loop may ask as often as it likes.
    pub fn next_delay(
        &mut self,
        key: &BackoffKey,
        now: DateTime<Utc>,
        finished_at: DateTime<Utc>,
    ) -> Delay {
        let reset = self.reset;
        let Some(entry) = self
            .entries
            .get_mut(key)
            .filter(|entry| elapsed(entry.last_update, finished_at) <= reset)
        else {
            // First exit, or the container ran long enough to be forgiven.
            self.entries.insert(
                key.clone(),
                Entry {
                    period_ms: millis(self.base),
                    last_update: now,
                    finished_at,
                },
            );
            return Delay {
                remaining: Duration::ZERO,
                period: Duration::ZERO,
            };
        };
        let period = Duration::from_millis(entry.period_ms);
        if entry.finished_at == finished_at {
            // Already allowed this exit's restart.
            return Delay {
                remaining: Duration::ZERO,
                period,
            };
        }
        let waited = elapsed(finished_at, now);
        if waited < period {
            return Delay {
                remaining: period - waited,
                period,
            };
        }
        entry.period_ms = millis(period.saturating_mul(2).min(self.max));
        entry.last_update = now;
        entry.finished_at = finished_at;
        Delay {
            remaining: Duration::ZERO,
            period,
        }
    }

    /// The period the next exit of `key` would wait, if it has an entry (for status
    /// messages and tests).
    pub fn period(&self, key: &BackoffKey) -> Option<Duration> {
        self.entries
            .get(key)
            .map(|entry| Duration::from_millis(entry.period_ms))
    }

    /// Forget one container's sequence.
    pub fn forget(&mut self, key: &BackoffKey) {
        self.entries.remove(key);
    }

    /// Forget every sequence of a pod (deleted).
    pub fn forget_pod(&mut self, pod: Uuid) {
        self.entries.retain(|key, _| key.pod != pod);
    }

    /// Drop entries whose last restart is more than `reset` ago: the next exit would
    /// start afresh anyway. Keeps the persisted file small.
    pub fn gc(&mut self, now: DateTime<Utc>) {
        let reset = self.reset;
        self.entries
            .retain(|_, entry| elapsed(entry.last_update, now) <= reset);
    }

    /// How many containers have an entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No container has an entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn limits(base: Duration, max: Duration) -> (Duration, Duration) {
    let base = base.max(Duration::from_millis(1));
    (base, max.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + TimeDelta::seconds(secs)
    }

    fn key() -> BackoffKey {
        BackoffKey::new(Uuid::from_u128(7), "web", "0123abcd")
    }

    /// Simulates a container that exits `run` seconds after each start, restarted as
    /// soon as the backoff allows (checked every second), and returns the waits
    /// between each exit and the following restart.
    fn waits(backoff: &mut Backoff, run: i64, restarts: usize) -> Vec<u64> {
        let key = key();
        let mut now = 0;
        let mut finished = now + run;
        let mut result = Vec::new();
        while result.len() < restarts {
            now = finished;
            loop {
                let delay = backoff.next_delay(&key, at(now), at(finished));
                if delay.is_zero() {
                    break;
                }
                now += 1;
            }
            result.push((now - finished) as u64);
            finished = now + run;
        }
        result
    }

    #[test]
    fn kubelet_defaults_give_the_documented_sequence() {
        let mut backoff = Backoff::default();
        assert_eq!(
            waits(&mut backoff, 1, 9),
            vec![0, 10, 20, 40, 80, 160, 300, 300, 300]
        );
    }

    #[test]
    fn defaults_are_ten_seconds_five_minutes_and_ten_minutes() {
        let backoff = Backoff::default();
        assert_eq!(backoff.base(), Duration::from_secs(10));
        assert_eq!(backoff.max(), Duration::from_secs(300));
        assert_eq!(backoff.reset(), Duration::from_secs(600));
    }

    #[test]
    fn first_restart_is_immediate() {
        let mut backoff = Backoff::default();
        let delay = backoff.next_delay(&key(), at(5), at(5));
        assert!(delay.is_zero());
        assert_eq!(backoff.period(&key()), Some(Duration::from_secs(10)));
    }

    #[test]
    fn second_exit_waits_the_base_period_from_its_finish() {
        let mut backoff = Backoff::default();
        assert!(backoff.next_delay(&key(), at(0), at(0)).is_zero());
        // Ran 3 s, exited at 3; asked at 4: 9 s left of 10.
        let delay = backoff.next_delay(&key(), at(4), at(3));
        assert_eq!(delay.remaining, Duration::from_secs(9));
        assert_eq!(delay.period, Duration::from_secs(10));
        assert_eq!(
            delay.message("web"),
            "back-off 10s restarting failed container=web"
        );
        // Still waiting, unchanged by being asked.
        assert_eq!(
            backoff.next_delay(&key(), at(12), at(3)).remaining,
            Duration::from_secs(1)
        );
        let restart = backoff.next_delay(&key(), at(13), at(3));
        assert!(restart.is_zero());
        assert_eq!(restart.period, Duration::from_secs(10));
        assert_eq!(backoff.period(&key()), Some(Duration::from_secs(20)));
    }

    #[test]
    fn asking_again_about_the_same_exit_does_not_double() {
        let mut backoff = Backoff::default();
        assert!(backoff.next_delay(&key(), at(0), at(0)).is_zero());
        assert!(!backoff.next_delay(&key(), at(1), at(1)).is_zero());
        assert!(backoff.next_delay(&key(), at(11), at(1)).is_zero());
        // The loop runs again before the restarted container is observed.
        assert!(backoff.next_delay(&key(), at(12), at(1)).is_zero());
        assert!(backoff.next_delay(&key(), at(30), at(1)).is_zero());
        assert_eq!(backoff.period(&key()), Some(Duration::from_secs(20)));
    }

    #[test]
    fn a_run_longer_than_twice_max_resets_the_sequence() {
        let mut backoff = Backoff::default();
        let key = key();
        assert!(backoff.next_delay(&key, at(0), at(0)).is_zero());
        // Exits at 5, restarted at 15: the entry's last update is 15, next period 20 s.
        assert!(!backoff.next_delay(&key, at(5), at(5)).is_zero());
        assert!(backoff.next_delay(&key, at(15), at(5)).is_zero());
        assert_eq!(backoff.period(&key), Some(Duration::from_secs(20)));
        // Runs 601 s (> 2 × 300 s) before exiting: restarted at once, sequence anew.
        let delay = backoff.next_delay(&key, at(616), at(616));
        assert!(delay.is_zero(), "a long run restarts at once");
        assert_eq!(backoff.period(&key), Some(Duration::from_secs(10)));
        let next = backoff.next_delay(&key, at(619), at(618));
        assert_eq!(next.period, Duration::from_secs(10));
        assert_eq!(next.remaining, Duration::from_secs(9));
    }

    #[test]
    fn a_run_of_exactly_twice_max_does_not_reset() {
        let mut backoff = Backoff::default();
        assert!(backoff.next_delay(&key(), at(0), at(0)).is_zero());
        let delay = backoff.next_delay(&key(), at(600), at(600));
        assert!(!delay.is_zero());
        assert_eq!(delay.period, Duration::from_secs(10));
    }

    #[test]
    fn a_new_spec_hash_starts_a_fresh_sequence() {
        let mut backoff = Backoff::default();
        assert_eq!(waits(&mut backoff, 1, 4), vec![0, 10, 20, 40]);
        let changed = BackoffKey::new(Uuid::from_u128(7), "web", "ffff0000");
        assert!(backoff.next_delay(&changed, at(100), at(100)).is_zero());
        assert_eq!(backoff.period(&changed), Some(Duration::from_secs(10)));
        assert_eq!(backoff.period(&key()), Some(Duration::from_secs(80)));
    }

    #[test]
    fn containers_and_pods_have_separate_sequences() {
        let mut backoff = Backoff::default();
        let web = key();
        let side = BackoffKey::new(web.pod, "side", &web.spec_hash);
        let other_pod = BackoffKey::new(Uuid::from_u128(8), "web", &web.spec_hash);
        assert!(backoff.next_delay(&web, at(0), at(0)).is_zero());
        assert!(!backoff.next_delay(&web, at(1), at(1)).is_zero());
        assert!(backoff.next_delay(&side, at(1), at(1)).is_zero());
        assert!(backoff.next_delay(&other_pod, at(1), at(1)).is_zero());
        backoff.forget_pod(web.pod);
        assert_eq!(backoff.len(), 1);
        assert_eq!(backoff.period(&other_pod), Some(Duration::from_secs(10)));
    }

    #[test]
    fn scaled_settings_follow_the_same_algorithm() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        assert_eq!(backoff.reset(), Duration::from_millis(1600));
        let key = key();
        let ms = |n: i64| at(0) + TimeDelta::milliseconds(n);
        let mut finished = 0;
        let mut waits = Vec::new();
        for _ in 0..7 {
            let mut now = finished;
            while !backoff.next_delay(&key, ms(now), ms(finished)).is_zero() {
                now += 10;
            }
            waits.push(now - finished);
            finished = now + 5;
        }
        assert_eq!(waits, vec![0, 100, 200, 400, 800, 800, 800]);
        let delay = backoff.next_delay(&key, ms(finished + 1), ms(finished));
        assert_eq!(
            delay.message("web"),
            "back-off 800ms restarting failed container=web"
        );
    }

    #[test]
    fn a_clock_stepping_back_never_panics_and_waits_the_full_period() {
        let mut backoff = Backoff::default();
        assert!(backoff.next_delay(&key(), at(100), at(100)).is_zero());
        let delay = backoff.next_delay(&key(), at(50), at(101));
        assert_eq!(delay.remaining, Duration::from_secs(10));
    }

    #[test]
    fn gc_drops_only_expired_entries() {
        let mut backoff = Backoff::default();
        let old = key();
        let recent = BackoffKey::new(old.pod, "side", "1");
        backoff.next_delay(&old, at(0), at(0));
        backoff.next_delay(&recent, at(500), at(500));
        backoff.gc(at(700));
        assert_eq!(backoff.period(&old), None);
        assert_eq!(backoff.period(&recent), Some(Duration::from_secs(10)));
    }

    #[test]
    fn it_survives_a_json_round_trip_mid_sequence() {
        let mut backoff = Backoff::with_reset(
            Duration::from_millis(250),
            Duration::from_secs(2),
            Duration::from_secs(5),
        );
        assert_eq!(waits(&mut backoff, 1, 3), vec![0, 1, 1]);
        let json = serde_json::to_string(&backoff).unwrap();
        let restored: Backoff = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, backoff);
        assert_eq!(restored.reset(), Duration::from_secs(5));
        assert_eq!(restored.period(&key()), Some(Duration::from_secs(1)));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["base_ms"], 250);
        assert_eq!(value["entries"][0]["key"]["container"], "web");
    }

    #[test]
    fn set_limits_keeps_places_and_caps_periods() {
        let mut backoff = Backoff::default();
        assert_eq!(waits(&mut backoff, 1, 6), vec![0, 10, 20, 40, 80, 160]);
        assert_eq!(backoff.period(&key()), Some(Duration::from_secs(300)));
        backoff.set_limits(
            Duration::from_secs(1),
            Duration::from_secs(30),
            Duration::from_secs(60),
        );
        assert_eq!(backoff.period(&key()), Some(Duration::from_secs(30)));
        assert_eq!(backoff.reset(), Duration::from_secs(60));
    }

    #[test]
    fn degenerate_limits_still_make_progress() {
        let backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(backoff.base(), Duration::from_millis(1));
        assert_eq!(backoff.max(), Duration::from_millis(1));
    }
}
