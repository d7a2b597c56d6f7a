//! Sink processors: which sink of a [`SinkRunner`](super::SinkRunner) gets the next batch.
//!
//! As Flume's sink processors. A sink that is in no sink group runs under the `Default` processor:
//! one sink, and a failed delivery fails the runner (its supervisor restarts it with backoff). A
//! sink group runs as one runner over its sinks, all draining the group's channel: `Failover`
//! sends every batch to the live sink of highest priority and penalises a sink that fails;
//! `LoadBalance` spreads batches over the sinks in turn or at random and, with `backoff`, leaves a
//! failed sink out for a while. A failed batch is rolled back and taken again for another sink.
//!
//! The choice is pure bookkeeping over member indices and instants, so it is tested here without
//! channels or sinks; the runner's take / deliver / commit loop asks it before every take.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::SinkFactory;
use crate::metrics::SinkCounters;
use serde::Deserialize;

use crate::config::duration;

/// One sink run by a [`SinkRunner`](super::SinkRunner): its name, how to build it, its batch
/// size and its counters (each member counts what it delivered, as a sink outside a group does).
#[derive(Clone)]
pub struct Member {
    /// The sink's name in the topology.
    pub name: String,
    /// Most events per take transaction made for this sink.
    pub batch_size: usize,
    /// Builds the sink: on first use, and again after it failed.
    pub factory: SinkFactory,
    /// The sink's counters (`SINK.<name>`).
    pub counters: Arc<SinkCounters>,
}

/// The penalty of a sink after its first consecutive failure; it doubles per further failure up
/// to the processor's `max_penalty` / `max_backoff` (Flume starts at 1 s as well).
pub const FIRST_PENALTY: Duration = Duration::from_secs(1);

/// How long a sink is left out after `failures` consecutive failures (at least one):
/// [`FIRST_PENALTY`] doubling per failure, capped at `max`.
pub fn penalty(failures: u32, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    FIRST_PENALTY.saturating_mul(1 << doublings).min(max)
}

/// What the processor wants the runner to do before its next take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Take a batch for member `k` (an index into the runner's members).
    Sink(usize),
    /// Every member is left out: wait until this instant (the earliest end of a penalty).
    WaitUntil(Instant),
}

/// What the runner does after a member failed (its batch is already rolled back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on with another member (or the same one, after its penalty); the failed sink is rebuilt
    /// when it is chosen again.
    Continue,
    /// The runner fails: its supervisor restarts it with backoff.
    GiveUp,
}

/// The consecutive failures of one member and when it may be chosen again.
#[derive(Debug, Default, Clone, Copy)]
struct Penalty {
    failures: u32,
    until: Option<Instant>,
}

impl Penalty {
    fn live(&self, now: Instant) -> bool {
        self.until.is_none_or(|t| t <= now)
    }
}

/// The choice state of one runner: created fresh every time the runner (re)starts.
#[derive(Debug)]
pub enum Processor {
    /// One sink; a failure fails the runner (Flume's `DefaultSinkProcessor`).
    Default,
    /// Flume's `FailoverSinkProcessor`.
    Failover(Failover),
    /// Flume's `LoadBalancingSinkProcessor`.
    LoadBalance(LoadBalance),
}

impl Processor {
    /// The processor a group's `config` asks for, over `members` (in the group's order).
    pub fn new(config: &SinkProcessorConfig, members: &[Member]) -> Self {
        match config {
            SinkProcessorConfig::Failover { priority, max_penalty } => {
                let mut order: Vec<usize> = (0..members.len()).collect();
                let prio = |k: &usize| priority.get(&members[*k].name).copied().unwrap_or(0);
                order.sort_by(|a, b| prio(b).cmp(&prio(a)).then_with(|| members[*a].name.cmp(&members[*b].name)));
                Processor::Failover(Failover {
                    order,
                    max_penalty: *max_penalty,
                    state: vec![Penalty::default(); members.len()],
                })
            }
            SinkProcessorConfig::LoadBalance { selector, backoff, max_backoff } => {
                Processor::LoadBalance(LoadBalance {
                    random: *selector == LoadBalanceSelector::Random,
                    max_backoff: backoff.then_some(*max_backoff),
                    next: 0,
                    state: vec![Penalty::default(); members.len()],
                    failed_since_success: vec![false; members.len()],
                    avoid: None,
                })
            }
        }
    }

    /// Which member gets the next batch at `now`.
    pub fn choose(&mut self, now: Instant) -> Choice {
        match self {
            Processor::Default => Choice::Sink(0),
            Processor::Failover(f) => f.choose(now),
            Processor::LoadBalance(l) => l.choose(now),
        }
    }

    /// Member `k` delivered a batch.
    pub fn delivered(&mut self, k: usize) {
        match self {
            Processor::Default => {}
            Processor::Failover(f) => f.state[k] = Penalty::default(),
            Processor::LoadBalance(l) => l.delivered(k),
        }
    }

    /// Member `k` failed (to build, deliver or roll) at `now`; answers what the runner does next
    /// and, for a penalised sink, how long it is left out.
    pub fn failed(&mut self, k: usize, now: Instant) -> (Verdict, Option<Duration>) {
        match self {
            Processor::Default => (Verdict::GiveUp, None),
            Processor::Failover(f) => {
                let p = &mut f.state[k];
                p.failures = p.failures.saturating_add(1);
                let out = penalty(p.failures, f.max_penalty);
                p.until = Some(now + out);
                (Verdict::Continue, Some(out))
            }
            Processor::LoadBalance(l) => l.failed(k, now),
        }
    }
}

/// Failover: the live member of highest priority gets every batch; a failed member is penalised
/// ([`penalty`]) and, once its penalty is over, tried again, taking over if it works.
#[derive(Debug)]
pub struct Failover {
    /// Member indices, highest priority first (ties in name order).
    order: Vec<usize>,
    max_penalty: Duration,
    state: Vec<Penalty>,
}

impl Failover {
    fn choose(&self, now: Instant) -> Choice {
        match self.order.iter().find(|&&k| self.state[k].live(now)) {
            Some(&k) => Choice::Sink(k),
            None => Choice::WaitUntil(earliest(&self.state, now)),
        }
    }
}

/// Load balancing: members get batches in turn (or at random); with backoff a failed member is
/// left out for [`penalty`] of its consecutive failures, capped by `max_backoff`.
#[derive(Debug)]
pub struct LoadBalance {
    random: bool,
    /// `Some(max_backoff)` when failed members are backed off.
    max_backoff: Option<Duration>,
    /// The member whose turn it is (round robin).
    next: usize,
    state: Vec<Penalty>,
    /// Members that failed since the last delivery (without backoff: when all did, give up).
    failed_since_success: Vec<bool>,
    /// The member that failed last: the retry goes elsewhere if any other member is live.
    avoid: Option<usize>,
}

impl LoadBalance {
    fn choose(&self, now: Instant) -> Choice {
        let n = self.state.len();
        let mut live: Vec<usize> = (0..n).map(|i| (self.next + i) % n).filter(|&k| self.state[k].live(now)).collect();
        if live.is_empty() {
            return Choice::WaitUntil(earliest(&self.state, now));
        }
        if live.len() > 1 {
            live.retain(|&k| Some(k) != self.avoid);
        }
        if self.random {
            Choice::Sink(live[fastrand::usize(..live.len())])
        } else {
            Choice::Sink(live[0])
        }
    }

    fn delivered(&mut self, k: usize) {
        self.next = (k + 1) % self.state.len();
        self.state[k] = Penalty::default();
        self.failed_since_success.fill(false);
        self.avoid = None;
    }

    fn failed(&mut self, k: usize, now: Instant) -> (Verdict, Option<Duration>) {
        self.next = (k + 1) % self.state.len();
        self.avoid = Some(k);
        self.failed_since_success[k] = true;
        match self.max_backoff {
            Some(max) => {
                let p = &mut self.state[k];
                p.failures = p.failures.saturating_add(1);
                let out = penalty(p.failures, max);
                p.until = Some(now + out);
                (Verdict::Continue, Some(out))
            }
            None if self.failed_since_success.iter().all(|&f| f) => (Verdict::GiveUp, None),
            None => (Verdict::Continue, None),
        }
    }
}

/// The earliest end of a penalty still running at `now` (`now` if none is).
fn earliest(state: &[Penalty], now: Instant) -> Instant {
    state.iter().filter_map(|p| p.until).filter(|&t| t > now).min().unwrap_or(now)
}

/// A sink processor, as Flume's `processor.type`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub enum SinkProcessorConfig {
    /// Every batch goes to the live sink of highest priority; a failed sink is penalised and its
    /// batch goes to the next live sink (Flume's `failover` processor).
    Failover {
        /// Sink name to priority (higher wins); a sink not named has priority 0, and equal
        /// priorities go in name order.
        #[serde(default)]
        priority: BTreeMap<String, i64>,
        /// Longest penalty of a failed sink: 1 s after its first consecutive failure, doubling per
        /// further one, at most this. Default `"30s"`.
        #[serde(default = "default_max_penalty", with = "duration")]
        max_penalty: std::time::Duration,
    },
    /// Batches are spread over the sinks; a failed batch goes to another sink (Flume's
    /// `load_balance` processor).
    LoadBalance {
        /// `RoundRobin` or `Random`. Default `RoundRobin`.
        #[serde(default)]
        selector: LoadBalanceSelector,
        /// Whether a failed sink is left out for a while (1 s after its first consecutive failure,
        /// doubling per further one, at most `max_backoff`). Default `false`: it stays in turn, and
        /// when every sink failed in a row the group is restarted with backoff.
        #[serde(default)]
        backoff: bool,
        /// Longest back-off of a failed sink. Default `"30s"`.
        #[serde(default = "default_max_penalty", with = "duration")]
        max_backoff: std::time::Duration,
    },
}

/// How a `LoadBalance` processor picks the next sink.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum LoadBalanceSelector {
    /// In turn.
    #[default]
    RoundRobin,
    /// At random.
    Random,
}

fn default_max_penalty() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::rc::Rc;

    use super::*;
    use crate::sink::SinkError;

    fn members(names: &[&str]) -> Vec<Member> {
        names
            .iter()
            .map(|n| Member {
                name: n.to_string(),
                batch_size: 10,
                factory: Rc::new(|| Err(SinkError::Other("never built here".into()))),
                counters: Arc::default(),
            })
            .collect()
    }

    fn failover(priority: &[(&str, i64)], names: &[&str]) -> (Processor, Vec<Member>) {
        let m = members(names);
        let config = SinkProcessorConfig::Failover {
            priority: priority.iter().map(|(n, p)| (n.to_string(), *p)).collect::<BTreeMap<_, _>>(),
            max_penalty: Duration::from_secs(5),
        };
        (Processor::new(&config, &m), m)
    }

    fn load_balance(selector: LoadBalanceSelector, backoff: bool, n: usize) -> Processor {
        let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let config = SinkProcessorConfig::LoadBalance { selector, backoff, max_backoff: Duration::from_secs(4) };
        Processor::new(&config, &members(&names))
    }

    #[test]
    fn penalty_starts_at_one_second_and_doubles_up_to_the_cap() {
        let max = Duration::from_secs(30);
        let got: Vec<u64> = (1..=7).map(|n| penalty(n, max).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(penalty(u32::MAX, max), max);
        assert_eq!(penalty(3, Duration::from_millis(1500)), Duration::from_millis(1500));
    }

    #[test]
    fn failover_prefers_priority_then_name() {
        let (mut p, m) = failover(&[("backup", 5), ("primary", 10)], &["backup", "primary", "spare"]);
        let name = |c: Choice| match c {
            Choice::Sink(k) => m[k].name.clone(),
            other => panic!("expected a sink, got {other:?}"),
        };
        let now = Instant::now();
        assert_eq!(name(p.choose(now)), "primary");
        // Equal priorities fall back to name order.
        let (mut q, m2) = failover(&[], &["b", "a"]);
        assert!(matches!(q.choose(now), Choice::Sink(k) if m2[k].name == "a"));
        // The primary fails: the backup takes over until the primary's penalty is over.
        let primary = m.iter().position(|x| x.name == "primary").unwrap();
        assert_eq!(p.failed(primary, now), (Verdict::Continue, Some(Duration::from_secs(1))));
        assert_eq!(name(p.choose(now)), "backup");
        assert_eq!(name(p.choose(now + Duration::from_millis(999))), "backup");
        let later = now + Duration::from_secs(1);
        assert_eq!(name(p.choose(later)), "primary");
        // It fails again at once: the penalty doubles; a success clears it.
        assert_eq!(p.failed(primary, later), (Verdict::Continue, Some(Duration::from_secs(2))));
        assert_eq!(name(p.choose(later + Duration::from_secs(1))), "backup");
        let after = later + Duration::from_secs(2);
        assert_eq!(name(p.choose(after)), "primary");
        p.delivered(primary);
        assert_eq!(p.failed(primary, after), (Verdict::Continue, Some(Duration::from_secs(1))));
    }

    #[test]
    fn failover_with_every_sink_penalised_waits_for_the_earliest() {
        let (mut p, _) = failover(&[("a", 2), ("b", 1)], &["a", "b"]);
        let now = Instant::now();
        p.failed(0, now);
        p.failed(0, now);
        p.failed(1, now);
        // a: 2 s, b: 1 s.
        assert_eq!(p.choose(now), Choice::WaitUntil(now + Duration::from_secs(1)));
        assert_eq!(p.choose(now + Duration::from_secs(1)), Choice::Sink(1));
        for _ in 0..10 {
            p.failed(0, now);
        }
        assert_eq!(p.failed(0, now).1, Some(Duration::from_secs(5)), "capped by max_penalty");
    }

    #[test]
    fn round_robin_takes_turns_and_skips_backed_off_sinks() {
        let mut p = load_balance(LoadBalanceSelector::RoundRobin, true, 3);
        let now = Instant::now();
        let mut order = Vec::new();
        for _ in 0..6 {
            let Choice::Sink(k) = p.choose(now) else { panic!("a sink is live") };
            order.push(k);
            p.delivered(k);
        }
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        // k0 fails: its batch is retried on k1, and k0 is left out for a second.
        assert_eq!(p.choose(now), Choice::Sink(0));
        assert_eq!(p.failed(0, now), (Verdict::Continue, Some(Duration::from_secs(1))));
        let mut order = Vec::new();
        for _ in 0..4 {
            let Choice::Sink(k) = p.choose(now) else { panic!("a sink is live") };
            order.push(k);
            p.delivered(k);
        }
        assert_eq!(order, [1, 2, 1, 2]);
        assert_eq!(p.choose(now + Duration::from_secs(1)), Choice::Sink(0));
        // All three backed off: wait for the earliest.
        p.failed(0, now);
        p.failed(1, now);
        p.failed(2, now);
        assert_eq!(p.choose(now), Choice::WaitUntil(now + Duration::from_secs(1)));
    }

    #[test]
    fn load_balance_without_backoff_retries_elsewhere_and_gives_up_when_all_failed() {
        for selector in [LoadBalanceSelector::RoundRobin, LoadBalanceSelector::Random] {
            let mut p = load_balance(selector, false, 3);
            let now = Instant::now();
            let Choice::Sink(first) = p.choose(now) else { panic!("a sink is live") };
            assert_eq!(p.failed(first, now), (Verdict::Continue, None));
            let Choice::Sink(second) = p.choose(now) else { panic!("a sink is live") };
            assert_ne!(first, second, "{selector:?}: the retry goes to another sink");
            assert_eq!(p.failed(second, now), (Verdict::Continue, None));
            let Choice::Sink(third) = p.choose(now) else { panic!("a sink is live") };
            assert_ne!(second, third, "{selector:?}");
            let verdict = p.failed(third, now).0;
            let all: BTreeSet<usize> = [first, second, third].into();
            let expected = if all.len() == 3 { Verdict::GiveUp } else { Verdict::Continue };
            assert_eq!(verdict, expected, "{selector:?}: {first} {second} {third}");
        }
    }

    #[test]
    fn random_reaches_every_sink() {
        let mut p = load_balance(LoadBalanceSelector::Random, false, 3);
        let now = Instant::now();
        let mut seen = BTreeSet::new();
        for _ in 0..300 {
            let Choice::Sink(k) = p.choose(now) else { panic!("a sink is live") };
            seen.insert(k);
            p.delivered(k);
        }
        assert_eq!(seen.len(), 3);
    }
}
