//! What supervisors share: restart backoff, panic containment, and the idle query.
//!
//! Sources, sinks and the RocksDb channel run under actix [`actix::Supervisor`]s. A component whose
//! work fails or panics stops its actor; the supervisor restarts it, and the restarted actor waits
//! [`restart_backoff`] before it works again.

use std::time::Duration;

use actix::Message;

use crate::metrics::Counter;

/// Restart delay after `restarts` consecutive failures: none at first, then 100 ms doubling,
/// capped at 30 s.
pub fn restart_backoff(restarts: u32) -> Duration {
    if restarts == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(100u64.saturating_mul(1 << (restarts - 1).min(20))).min(Duration::from_secs(30))
}

/// Consecutive failures of one supervised component, and the restart backoff they call for.
///
/// The backoff grows only while nothing gets through: a component that made progress (delivered
/// or accepted a batch) since it last started begins again at the shortest delay, as Flume's sink
/// runner does.
#[derive(Debug, Default)]
pub struct Restarts {
    consecutive: u32,
}

impl Restarts {
    /// How long the (re)started component waits before it works again.
    pub fn delay(&self) -> Duration {
        restart_backoff(self.consecutive)
    }

    /// Records a failure of `component` (`"sink"`, `"source"`): counts it in `counter` and logs it.
    pub fn failed(&mut self, progressed: bool, counter: &Counter, component: &str, error: &dyn std::fmt::Display) {
        if progressed {
            self.consecutive = 0;
        }
        counter.inc();
        tracing::error!(error = %error, restart_in = ?restart_backoff(self.consecutive + 1), "{component} failed; restarting");
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
}
