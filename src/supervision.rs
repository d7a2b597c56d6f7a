//! What supervisors share: restart backoff, panic containment, and the idle query.
//!
//! Sources, sinks and the RocksDb channel run under actix [`actix::Supervisor`]s. A component whose
//! work fails or panics stops its actor; the supervisor restarts it, and the restarted actor waits
//! [`restart_backoff`] before it works again.

use std::time::{Duration, Instant};

use actix::Message;

use crate::metrics::{ComponentState, Counter, StateGauge};

/// Restart delay after `restarts` consecutive failures: none at first, then 100 ms doubling,
/// capped at 30 s.
pub fn restart_backoff(restarts: u32) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(100u64.saturating_mul(1 << (restarts - 1).min(20))).min(Duration::from_secs(30))
}

/// After this long without a failure a component counts as healthy again: its next failure
/// restarts it with the shortest delay.
pub const HEALTHY_PERIOD: Duration = Duration::from_secs(60);

/// Consecutive failures of one supervised component, and the restart backoff they call for.
///
/// The backoff grows only while nothing gets through: a component that made progress (delivered
/// or accepted a batch) since it last started, or that ran [`HEALTHY_PERIOD`] without failing,
/// begins again at the shortest delay, as Flume's sink runner does. A failure with the same
/// words as the one before is logged once, then again at 2, 4, 8, ... repeats with its count,
/// so a component failing for a long time does not flood the log.
#[derive(Debug, Default)]
pub struct Restarts {
    consecutive: u32,
    /// When the component last failed (`None` before its first failure).
    last_failure: Option<Instant>,
    /// The last failure's words and how many times in a row they were seen.
    last_error: String,
    repeats: u64,
}

impl Restarts {
    /// How long the (re)started component waits before it works again.
    pub fn delay(&self) -> Duration {
        restart_backoff(self.consecutive)
    }

    /// Records a failure of `component` (`"sink"`, `"source"`): counts it in `counter`, sets
    /// `state` to `Restarting` with the error, and logs it (a repeat of the same error only at
    /// powers of two, with its count).
    pub fn failed(
        &mut self,
        progressed: bool,
        counter: &Counter,
        state: &StateGauge,
        component: &str,
        error: &dyn std::fmt::Display,
    ) {
        self.failed_at(Instant::now(), progressed);
        counter.inc();
        state.set_because(ComponentState::Restarting, error);
        let words = error.to_string();
        let restart_in = restart_backoff(self.consecutive + 1);
        if words == self.last_error {
            self.repeats += 1;
            if self.repeats.is_power_of_two() {
                tracing::error!(error = %words, repeated = self.repeats, ?restart_in, "{component} failed again; restarting");
            }
            return;
        }
        if self.repeats > 1 {
            tracing::warn!(error = %self.last_error, repeated = self.repeats, "{component}: the previous error in all");
        }
        self.last_error = words;
        self.repeats = 1;
        tracing::error!(error = %self.last_error, ?restart_in, "{component} failed; restarting");
    }

    /// The backoff bookkeeping of a failure at `now`.
    fn failed_at(&mut self, now: Instant, progressed: bool) {
        let healthy = self.last_failure.is_some_and(|last| now.duration_since(last) >= HEALTHY_PERIOD);
        if progressed || healthy {
            self.consecutive = 0;
        }
        self.last_failure = Some(now);
    }

    /// Called as the supervisor restarts the actor.
    pub fn restarting(&mut self) {
        self.consecutive = self.consecutive.saturating_add(1);
    }
}

/// Turns a caught panic payload into words.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Asks a source or sink actor whether it has finished its work (ended, or stopped on request).
#[derive(Message, Debug)]
#[rtype(result = "bool")]
pub struct IsIdle;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(restart_backoff(0), Duration::ZERO);
        assert_eq!(restart_backoff(1), Duration::from_millis(100));
        assert_eq!(restart_backoff(4), Duration::from_millis(800));
        assert_eq!(restart_backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn backoff_resets_after_a_healthy_period_and_not_before() {
        let mut r = Restarts::default();
        let t0 = Instant::now();
        for i in 0..12 {
            r.failed_at(t0 + Duration::from_secs(i), false);
            r.restarting();
        }
        assert_eq!(r.delay(), Duration::from_secs(30), "twelve quick failures reach the cap");
        r.failed_at(t0 + Duration::from_secs(11 + 59), false);
        r.restarting();
        assert_eq!(r.delay(), Duration::from_secs(30), "59 s is not a healthy period");
        r.failed_at(t0 + Duration::from_secs(11 + 59 + 60), false);
        r.restarting();
        assert_eq!(r.delay(), Duration::from_millis(100), "60 s without a failure starts over");
    }

    #[test]
    fn progress_resets_the_backoff() {
        let mut r = Restarts::default();
        let t0 = Instant::now();
        for i in 0..5 {
            r.failed_at(t0 + Duration::from_millis(i), false);
            r.restarting();
        }
        assert_eq!(r.delay(), Duration::from_millis(1600));
        r.failed_at(t0 + Duration::from_millis(6), true);
        r.restarting();
        assert_eq!(r.delay(), Duration::from_millis(100));
    }
}
