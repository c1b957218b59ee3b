//! Jittered exponential backoff between relay connection attempts.
//!
//! Jitter keeps a fleet of agents that lost the same relay from reconnecting in
//! lock-step; the cap keeps an agent from staying away long after the relay is back.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `initial` up to `cap`, each drawn from the upper half of
/// its step (`[step/2, step]`), so a retry is never sooner than half the nominal delay.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and never exceeding `cap`.
    pub(crate) fn new(initial: Duration, cap: Duration) -> Self {
        Self {
            initial,
            cap,
            attempt: 0,
        }
    }

    /// The nominal (un-jittered) delay of the next attempt.
    fn step(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(16)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt; each call grows the next one.
    pub(crate) fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let step = self.step();
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        let jitter = rng.gen_range(0..=(step - half).as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    /// Start again from `initial`, after a connection that stayed up.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const INITIAL: Duration = Duration::from_millis(200);
    const CAP: Duration = Duration::from_secs(5);

    #[test]
    fn every_delay_lies_between_half_its_step_and_the_step_and_never_exceeds_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut backoff = Backoff::new(INITIAL, CAP);
            for attempt in 0..20u32 {
                let step = (INITIAL * 2u32.pow(attempt.min(10))).min(CAP);
                let delay = backoff.next_delay(&mut rng);
                assert!(
                    delay >= step / 2,
                    "attempt {attempt}: {delay:?} < {:?}",
                    step / 2
                );
                assert!(delay <= step, "attempt {attempt}: {delay:?} > {step:?}");
                assert!(delay <= CAP);
            }
        }
    }

    #[test]
    fn the_first_delay_is_at_most_the_initial_delay() {
        let mut rng = StdRng::seed_from_u64(1);
        let delay = Backoff::new(INITIAL, CAP).next_delay(&mut rng);
        assert!(delay >= INITIAL / 2 && delay <= INITIAL, "{delay:?}");
    }

    #[test]
    fn delays_reach_the_cap_and_stay_there() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut backoff = Backoff::new(INITIAL, CAP);
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        for _ in 0..1000 {
            let delay = backoff.next_delay(&mut rng);
            assert!(delay >= CAP / 2 && delay <= CAP, "{delay:?}");
        }
    }

    #[test]
    fn reset_starts_again_from_the_initial_delay() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut backoff = Backoff::new(INITIAL, CAP);
        for _ in 0..10 {
            backoff.next_delay(&mut rng);
        }
        backoff.reset();
        assert!(backoff.next_delay(&mut rng) <= INITIAL);
    }
}
