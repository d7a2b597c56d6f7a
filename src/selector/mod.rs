//! Channel selectors: which channels each event of a source's batch goes to.
//!
//! As Flume's `ReplicatingChannelSelector` (every channel gets every event) and
//! `MultiplexingChannelSelector` (the value of one header picks the channels). The [`Selector`]
//! actor splits a batch per channel, puts each part in its own channel transaction, and answers
//! only when every *required* channel has committed; a failed *optional* channel is counted, not
//! fatal. A full required channel is retried with backoff (only that channel, so the others get
//! no duplicates) while the source waits: that is back-pressure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::future::join_all;
use serde::Deserialize;

use crate::channel::{ChannelError, ChannelHandle, Put};
use crate::event::Event;
use crate::metrics::SourceCounters;

/// A channel selector, as written in a source's `selector:` option.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub enum SelectorConfig {
    /// Every event goes to every channel of the source; `optional` channels may fail.
    Replicating {
        /// Channels whose failed put is counted, not fatal. Default `[]`.
        #[serde(default)]
        optional: Vec<String>,
    },
    /// Each event goes to the channels mapped to its `header`'s value.
    Multiplexing {
        /// The header whose value routes the event.
        header: String,
        /// Header value to required channels.
        #[serde(default)]
        mapping: BTreeMap<String, Vec<String>>,
        /// Header value to optional channels (also written; failures counted, not fatal).
        #[serde(default)]
        optional: BTreeMap<String, Vec<String>>,
        /// Required channels of events whose value is unmapped or missing. Default `[]`.
        #[serde(default)]
        default: Vec<String>,
    },
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig::Replicating { optional: Vec::new() }
    }
}

/// Routes a batch to the source's channels; answers once every required channel committed, with
/// the number of events that went to no channel (a `Multiplexing` selector's unmapped events
/// when there is no default; counted in `EventUnroutedCount`, not accepted).
#[derive(Message, Debug)]
#[rtype(result = "Result<u64, ChannelError>")]
pub struct Route {
    /// The batch, after interceptors.
    pub events: Vec<Event>,
}

/// As [`Route`], but a required channel that is still full at `deadline` is given up on: the
/// answer is then [`ChannelError::Full`] (for a source that answers its client "retry later",
/// as the `Http` source's 503). Channels that committed their part before keep it. Answers as
/// [`Route`].
#[derive(Message, Debug)]
#[rtype(result = "Result<u64, ChannelError>")]
pub struct RouteUntil {
    /// The batch, after interceptors.
    pub events: Vec<Event>,
    /// When to stop retrying a full required channel.
    pub deadline: Instant,
}

/// The selector actor of one source.
pub struct Selector {
    config: SelectorConfig,
    channels: BTreeMap<String, ChannelHandle>,
    counters: Arc<SourceCounters>,
}

/// One channel's part of a batch.
struct Part {
    channel: ChannelHandle,
    events: Vec<Event>,
    required: bool,
}

impl Selector {
    /// A selector over `channels` (the source's channels by name, all of them present).
    pub fn new(
        config: SelectorConfig,
        channels: BTreeMap<String, ChannelHandle>,
        counters: Arc<SourceCounters>,
    ) -> Self {
        Selector { config, channels, counters }
    }

    /// Splits `events` into per-channel parts (see [`route_batch`]), and counts the events that
    /// go to no channel.
    fn split(&self, events: Vec<Event>) -> (Vec<Part>, u64) {
        let (shares, unrouted) = route_batch(&self.config, self.channels.keys().map(String::as_str), events);
        let unrouted = unrouted.len() as u64;
        if unrouted > 0 {
            self.counters.unrouted.add(unrouted);
            if let SelectorConfig::Multiplexing { header, .. } = &self.config {
                tracing::warn!(unrouted, header = %header, "events matched no mapping and there is no default channel");
            }
        }
        let parts = shares
            .into_iter()
            .map(|s| Part { channel: self.channels[s.channel].clone(), events: s.events, required: s.required })
            .collect();
        (parts, unrouted)
    }
}

/// One channel's share of a batch, as a selector decides it: the events it gets, in batch order.
#[derive(Debug, Clone, PartialEq)]
pub struct Share<'a> {
    /// The channel's name.
    pub channel: &'a str,
    /// The events it gets (possibly none: a `Replicating` selector gives every channel a share).
    pub events: Vec<Event>,
    /// Whether its put must commit for the source to go on (else it is an optional channel).
    pub required: bool,
}

/// Decides where each event of `events` goes, without touching any channel: the routing of the
/// [`Selector`] actor, and of `flumen test`.
///
/// `channels` are the source's channels, in name order. Answers the shares (a `Replicating`
/// selector: one per channel, in name order, each with the whole batch; a `Multiplexing` one: the
/// required shares in name order, then the optional ones, each channel once, only channels that
/// get an event) and the events that go to no channel (unmapped or missing header value, no
/// `default`, no `optional` channel), in batch order. As Flume's `ReplicatingChannelSelector`
/// and `MultiplexingChannelSelector`; a channel both required and optional for a value gets the
/// event once, as required.
pub fn route_batch<'a>(
    config: &'a SelectorConfig,
    channels: impl IntoIterator<Item = &'a str>,
    events: Vec<Event>,
) -> (Vec<Share<'a>>, Vec<Event>) {
    match config {
        SelectorConfig::Replicating { optional } => {
            let mut shares: Vec<Share> = channels
                .into_iter()
                .map(|c| Share { channel: c, events: Vec::new(), required: !optional.iter().any(|o| o == c) })
                .collect();
            if let Some((last, rest)) = shares.split_last_mut() {
                for s in rest {
                    s.events = events.clone();
                }
                last.events = events;
            }
            (shares, Vec::new())
        }
        SelectorConfig::Multiplexing { header, mapping, optional, default } => {
            let mut required: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
            let mut optional_shares: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
            let mut unrouted = Vec::new();
            for event in events {
                let value = event.headers.get(header);
                let req = value.and_then(|v| mapping.get(v)).unwrap_or(default);
                let opt: &[String] = value.and_then(|v| optional.get(v)).map_or(&[], Vec::as_slice);
                if req.is_empty() && opt.is_empty() {
                    unrouted.push(event);
                    continue;
                }
                for c in req {
                    required.entry(c).or_default().push(event.clone());
                }
                for c in opt.iter().filter(|c| !req.contains(c)) {
                    optional_shares.entry(c).or_default().push(event.clone());
                }
            }
            let share = |(channel, events): (&'a str, Vec<Event>), required: bool| Share { channel, events, required };
            let shares = required
                .into_iter()
                .map(|kv| share(kv, true))
                .chain(optional_shares.into_iter().map(|kv| share(kv, false)))
                .collect();
            (shares, unrouted)
        }
    }
}

impl Actor for Selector {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(64);
    }
}

impl Handler<Route> for Selector {
    type Result = ResponseFuture<Result<u64, ChannelError>>;

    fn handle(&mut self, msg: Route, _: &mut Context<Self>) -> Self::Result {
        let (parts, unrouted) = self.split(msg.events);
        Box::pin(route(parts, unrouted, self.counters.clone(), None))
    }
}

impl Handler<RouteUntil> for Selector {
    type Result = ResponseFuture<Result<u64, ChannelError>>;

    fn handle(&mut self, msg: RouteUntil, _: &mut Context<Self>) -> Self::Result {
        let (parts, unrouted) = self.split(msg.events);
        Box::pin(route(parts, unrouted, self.counters.clone(), Some(msg.deadline)))
    }
}

/// Puts every part; answers the first error of a required part, or `unrouted`.
async fn route(
    parts: Vec<Part>,
    unrouted: u64,
    counters: Arc<SourceCounters>,
    deadline: Option<Instant>,
) -> Result<u64, ChannelError> {
    let results = join_all(parts.into_iter().map(|p| put_part(p, deadline))).await;
    let mut first_error = None;
    for (required, name, result) in results {
        match result {
            Ok(()) => {}
            Err(e) if !required => {
                counters.optional_put_failed.inc();
                tracing::warn!(channel = %name, error = %e, "optional channel refused a put");
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    first_error.map_or(Ok(unrouted), Err)
}

/// Puts one part. A required part is retried while its channel is full (back-pressure), until
/// `deadline` if there is one; an optional part gets one attempt.
async fn put_part(part: Part, deadline: Option<Instant>) -> (bool, String, Result<(), ChannelError>) {
    let Part { channel, events, required } = part;
    if events.is_empty() {
        return (required, channel.name, Ok(()));
    }
    let mut backoff = Duration::from_millis(1);
    let mut warned = false;
    loop {
        let result = match channel.put.send(Put { events: events.clone() }).await {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        };
        match result {
            Err(ChannelError::Full { capacity })
                if required && deadline.is_none_or(|d| Instant::now() + backoff < d) =>
            {
                if !warned {
                    tracing::debug!(channel = %channel.name, capacity, "channel full; the source waits");
                    warned = true;
                }
                actix_rt::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            other => return (required, channel.name, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::memory::{MemoryChannel, MemoryConfig};
    use crate::metrics::Metrics;

    const LINES: [&str; 4] = [
        "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating",
        "081109 203807 222 WARN dfs.DataNode$DataXceiver: 10.251.30.6:50010:Got exception while serving blk_-2918118818249673980",
        "081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated",
        "081109 204106 329 ERROR dfs.DataNode: writeBlock blk_-4411589101766563890 received exception",
    ];

    fn batch() -> Vec<Event> {
        LINES
            .iter()
            .map(|l| {
                let level = l.split_whitespace().nth(3).expect("HDFS lines have a level");
                let e = Event::new(*l);
                if level == "ERROR" {
                    e
                } else {
                    e.with_header("level", level)
                }
            })
            .collect()
    }

    fn channel(name: &str, capacity: u64, metrics: &Metrics) -> ChannelHandle {
        let config = MemoryConfig {
            capacity,
            transaction_capacity: capacity,
            keep_alive: Duration::from_millis(20),
            ..MemoryConfig::default()
        };
        ChannelHandle::new(name, MemoryChannel::new(config, metrics.channel(name)).start())
    }

    async fn bodies(ch: &ChannelHandle) -> Vec<String> {
        let txn = ch.take(4, Duration::ZERO).await.unwrap();
        txn.events.iter().map(|e| String::from_utf8_lossy(&e.body).into_owned()).collect()
    }

    #[test]
    fn route_batch_answers_each_channels_share_and_the_unrouted_events() {
        let config = SelectorConfig::Multiplexing {
            header: "level".into(),
            mapping: BTreeMap::from([("WARN".into(), vec!["warn".into()]), ("INFO".into(), vec!["info".into()])]),
            optional: BTreeMap::from([("WARN".into(), vec!["info".into(), "warn".into()])]),
            default: vec![],
        };
        let bodies = |events: &[Event]| events.iter().map(|e| e.body.clone()).collect::<Vec<_>>();
        let (shares, unrouted) = route_batch(&config, ["info", "other", "warn"], batch());
        let got: Vec<_> = shares.iter().map(|s| (s.channel, s.required, bodies(&s.events))).collect();
        assert_eq!(
            got,
            vec![
                ("info", true, vec![LINES[0].into(), LINES[2].into()]),
                ("warn", true, vec![LINES[1].into()]),
                // Optional for WARN as well as required for it: "warn" gets the WARN line once.
                ("info", false, vec![LINES[1].into()]),
            ]
        );
        assert_eq!(bodies(&unrouted), vec![LINES[3]], "the line without a level, kept for the caller");

        let config = SelectorConfig::Replicating { optional: vec!["other".into()] };
        let (shares, unrouted) = route_batch(&config, ["info", "other"], batch());
        let got: Vec<_> = shares.iter().map(|s| (s.channel, s.required, s.events.len())).collect();
        assert_eq!(got, vec![("info", true, 4), ("other", false, 4)]);
        assert!(unrouted.is_empty());
    }

    #[actix_rt::test]
    async fn multiplexing_routes_by_header_with_default_and_counts_unrouted() {
        let metrics = Metrics::new();
        let (info, warn, other) =
            (channel("info", 10, &metrics), channel("warn", 10, &metrics), channel("other", 10, &metrics));
        let channels = [&info, &warn, &other].iter().map(|c| (c.name.clone(), (*c).clone())).collect();
        let config = SelectorConfig::Multiplexing {
            header: "level".into(),
            mapping: BTreeMap::from([
                ("INFO".into(), vec!["info".into()]),
                ("WARN".into(), vec!["warn".into(), "info".into()]),
            ]),
            optional: BTreeMap::new(),
            default: vec!["other".into()],
        };
        let counters = metrics.source("r1");
        let selector = Selector::new(config, channels, counters.clone()).start();
        selector.send(Route { events: batch() }).await.unwrap().unwrap();
        assert_eq!(bodies(&info).await, vec![LINES[0], LINES[1], LINES[2]]);
        assert_eq!(bodies(&warn).await, vec![LINES[1]]);
        assert_eq!(bodies(&other).await, vec![LINES[3]], "no level header: the default channel");

        let config = SelectorConfig::Multiplexing {
            header: "level".into(),
            mapping: BTreeMap::from([("INFO".into(), vec!["info".into()])]),
            optional: BTreeMap::new(),
            default: vec![],
        };
        let channels = BTreeMap::from([("info".to_string(), info.clone())]);
        let selector = Selector::new(config, channels, counters.clone()).start();
        let unrouted = selector.send(Route { events: batch() }).await.unwrap().unwrap();
        assert_eq!(counters.unrouted.get(), 2, "WARN and the headerless line have nowhere to go");
        assert_eq!(unrouted, 2, "the source is told, so that it does not count them as accepted");
    }

    #[actix_rt::test]
    async fn replicating_counts_a_full_optional_channel_and_still_commits_the_required_ones() {
        let metrics = Metrics::new();
        let (main, spare) = (channel("main", 10, &metrics), channel("spare", 6, &metrics));
        spare.put.send(Put { events: batch() }).await.unwrap().unwrap();
        let channels = BTreeMap::from([("main".to_string(), main.clone()), ("spare".to_string(), spare.clone())]);
        let counters = metrics.source("r1");
        let config = SelectorConfig::Replicating { optional: vec!["spare".into()] };
        let selector = Selector::new(config, channels, counters.clone()).start();
        selector.send(Route { events: batch() }).await.unwrap().unwrap();
        assert_eq!(counters.optional_put_failed.get(), 1);
        assert_eq!(bodies(&main).await, LINES.to_vec());
        let held = spare.size.send(crate::channel::Size).await.unwrap();
        assert_eq!(held, 4, "only what was there before: the second batch did not fit");
    }

    #[actix_rt::test]
    async fn route_until_gives_up_on_a_channel_still_full_at_the_deadline() {
        let metrics = Metrics::new();
        let main = channel("main", 4, &metrics);
        let channels = BTreeMap::from([("main".to_string(), main.clone())]);
        let selector =
            Selector::new(SelectorConfig::Replicating { optional: vec![] }, channels, metrics.source("r1")).start();
        selector.send(Route { events: batch() }).await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_millis(100);
        let answer = selector.send(RouteUntil { events: batch(), deadline }).await.unwrap();
        assert_eq!(answer, Err(ChannelError::Full { capacity: 4 }));
        assert_eq!(main.size.send(crate::channel::Size).await.unwrap(), 4, "the refused batch left nothing");
        assert_eq!(bodies(&main).await, LINES.to_vec());
    }

    #[actix_rt::test]
    async fn a_full_required_channel_makes_the_put_wait_until_there_is_room() {
        let metrics = Metrics::new();
        let main = channel("main", 4, &metrics);
        let channels = BTreeMap::from([("main".to_string(), main.clone())]);
        let selector =
            Selector::new(SelectorConfig::Replicating { optional: vec![] }, channels, metrics.source("r1")).start();
        selector.send(Route { events: batch() }).await.unwrap().unwrap();
        let waiting = selector.send(Route { events: batch() });
        let attempts = metrics.channel("main");
        let drain = async {
            // Wait until the second batch was refused at least once and retried.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while attempts.put_attempt.get() < 3 * 4 {
                assert!(std::time::Instant::now() < deadline, "the second put was never retried");
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            let txn = main.take(4, Duration::ZERO).await.unwrap();
            main.commit(txn).await.unwrap();
        };
        let (put, ()) = futures_util::join!(waiting, drain);
        put.unwrap().unwrap();
        assert_eq!(bodies(&main).await, LINES.to_vec());
    }
}
