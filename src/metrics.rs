//! Per-component counters with Flume's names, and their JSON and Prometheus renderings.
//!
//! Every source, channel and sink registers a counter set in the agent's [`Metrics`]. The counter
//! names are Flume's (`EventPutSuccessCount`, ...), so dashboards built for Flume's JSON reporting
//! (`GET /metrics`, `{"SOURCE.r1": {...}, "CHANNEL.c1": {...}, "SINK.k1": {...}}`) keep working.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A monotonically increasing (or, for gauges, settable) 64-bit count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Subtracts `n` (gauges only), saturating at zero.
    pub fn sub(&self, n: u64) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
    }
    /// Sets the value (gauges only).
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

macro_rules! counter_set {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident => $flume:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: Counter,)*
        }
        impl $name {
            /// `(name, value)` pairs in declaration order, with Flume's names.
            pub fn values(&self) -> Vec<(&'static str, u64)> {
                vec![$(($flume, self.$field.get()),)*]
            }
        }
    };
}

counter_set!(
    /// Counters of one source (Flume's `SourceCounter`, plus flumen's own).
    SourceCounters {
        /// Events read from the input, before interceptors.
        event_received => "EventReceivedCount",
        /// Events committed to every required channel.
        event_accepted => "EventAcceptedCount",
        /// Batches read from the input.
        append_batch_received => "AppendBatchReceivedCount",
        /// Batches committed to every required channel.
        append_batch_accepted => "AppendBatchAcceptedCount",
        /// Events an interceptor filtered out (`RegexFilter`).
        dropped_by_filter => "EventDroppedByFilterCount",
        /// Input records that were malformed or cut (lines over `max_line_length`); kept, flagged.
        malformed => "EventMalformedCount",
        /// Events a multiplexing selector could route to no channel (no mapping, no default).
        unrouted => "EventUnroutedCount",
        /// Body bytes read.
        bytes_received => "BytesReceivedCount",
        /// Puts that an optional channel refused (counted, not fatal).
        optional_put_failed => "OptionalPutFailedCount",
        /// Batches whose put into a required channel failed for good (Flume's `ChannelWriteFail`).
        channel_write_fail => "ChannelWriteFail",
        /// Events read that can be neither committed nor given back: a datagram source's batches
        /// after a failed put (UDP cannot ask its sender to resend). Zero for every other source.
        event_dropped => "EventDroppedCount",
        /// Times the supervisor restarted this source.
        restarts => "RestartCount",
        /// Copies of events leaving this source that a tap dropped because its buffer was full
        /// (the events themselves went on).
        tap_dropped => "TapDroppedCount",
    }
);

counter_set!(
    /// Counters of one channel (Flume's `ChannelCounter`, plus flumen's own).
    ChannelCounters {
        /// Events held (available plus taken and not yet committed); a gauge.
        size => "ChannelSize",
        /// The configured capacity in events; a gauge.
        capacity => "ChannelCapacity",
        /// Events offered by puts.
        put_attempt => "EventPutAttemptCount",
        /// Events committed by puts.
        put_success => "EventPutSuccessCount",
        /// Events asked for by takes.
        take_attempt => "EventTakeAttemptCount",
        /// Events handed out by takes.
        take_success => "EventTakeSuccessCount",
        /// Events of rolled back takes, returned to the head of the channel.
        rollback => "EventRollbackCount",
        /// Bytes the channel's storage uses on disk (RocksDb only); a gauge.
        disk_bytes => "DiskBytes",
        /// Times the supervisor restarted this channel.
        restarts => "RestartCount",
        /// Times the channel's storage was found damaged when it opened (RocksDb only); each is
        /// set aside as `DIR.damaged-<UTC time>` and salvaged.
        damaged => "ChannelDamagedCount",
        /// Events copied out of damaged directories into the channel by salvages (RocksDb only).
        salvaged => "ChannelSalvagedCount",
        /// Stored values moved to the dead-letter store because they could not be read or decoded
        /// (RocksDb only; by salvages and by takes).
        dead_letter => "EventDeadLetterCount",
        /// Failed attempts to open the channel's storage (RocksDb only; retried with backoff).
        open_failures => "ChannelOpenFailureCount",
        /// 1 while the channel's storage is not open (failed, retrying), else 0; a gauge.
        failed => "ChannelFailed",
    }
);

counter_set!(
    /// Counters of one sink (Flume's `SinkCounter`, plus flumen's own).
    SinkCounters {
        /// Takes that returned a full batch.
        batch_complete => "BatchCompleteCount",
        /// Takes that returned nothing.
        batch_empty => "BatchEmptyCount",
        /// Takes that returned fewer events than `batch_size`.
        batch_underflow => "BatchUnderflowCount",
        /// Outputs (files, connections) opened.
        connection_created => "ConnectionCreatedCount",
        /// Outputs closed.
        connection_closed => "ConnectionClosedCount",
        /// Outputs that failed to open or write.
        connection_failed => "ConnectionFailedCount",
        /// Events taken for delivery.
        drain_attempt => "EventDrainAttemptCount",
        /// Events delivered and committed.
        drain_success => "EventDrainSuccessCount",
        /// Body bytes delivered.
        bytes_delivered => "BytesDeliveredCount",
        /// Takes rolled back after a failed delivery.
        rollbacks => "RollbackCount",
        /// Events whose output path could not be resolved safely (`Hdfs`: a header value that
        /// could leave the base directory, a missing or bad `timestamp`); written to a `rejected`
        /// bucket or failing their batch, never dropped.
        event_rejected => "EventRejectedCount",
        /// Times this sink was restarted after a failure: by its supervisor, or rebuilt by its
        /// sink group's processor.
        restarts => "RestartCount",
        /// Copies of events entering this sink that a tap dropped because its buffer was full
        /// (the events themselves went on).
        tap_dropped => "TapDroppedCount",
    }
);

counter_set!(
    /// Counters of the agent itself (flumen's own; Flume has no reload).
    AgentCounters {
        /// Reloads applied (SIGHUP, or a changed file under `run --watch`).
        reload_success => "ReloadSuccessCount",
        /// Reloads refused (the new file is invalid) or rolled back; the agent ran on unchanged.
        reload_failure => "ReloadFailureCount",
        /// When the last reload was applied, in milliseconds since the Unix epoch; 0 before any.
        last_reload => "LastReloadTime",
    }
);

/// The counter set of one component.
#[derive(Debug, Clone)]
pub enum ComponentCounters {
    /// A source's counters.
    Source(Arc<SourceCounters>),
    /// A channel's counters.
    Channel(Arc<ChannelCounters>),
    /// A sink's counters.
    Sink(Arc<SinkCounters>),
}

impl ComponentCounters {
    /// Flume's type name: `SOURCE`, `CHANNEL` or `SINK`.
    pub fn kind(&self) -> &'static str {
        match self {
            ComponentCounters::Source(_) => "SOURCE",
            ComponentCounters::Channel(_) => "CHANNEL",
            ComponentCounters::Sink(_) => "SINK",
        }
    }

    /// `(name, value)` pairs with Flume's names.
    pub fn values(&self) -> Vec<(&'static str, u64)> {
        match self {
            ComponentCounters::Source(c) => c.values(),
            ComponentCounters::Channel(c) => c.values(),
            ComponentCounters::Sink(c) => c.values(),
        }
    }
}

/// All counters of one agent, keyed by `"SOURCE.r1"`, `"CHANNEL.c1"`, `"SINK.k1"`.
#[derive(Debug, Default)]
pub struct Metrics {
    components: Mutex<BTreeMap<String, ComponentCounters>>,
    /// The agent's own counters, shown as `"AGENT"` in the JSON.
    pub agent: AgentCounters,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// The counters of source `name`, created on first use.
    pub fn source(&self, name: &str) -> Arc<SourceCounters> {
        match self.entry(name, || ComponentCounters::Source(Arc::default())) {
            ComponentCounters::Source(c) => c,
            other => panic!("component {name} is registered as a {}", other.kind()),
        }
    }

    /// The counters of channel `name`, created on first use.
    pub fn channel(&self, name: &str) -> Arc<ChannelCounters> {
        match self.entry(name, || ComponentCounters::Channel(Arc::default())) {
            ComponentCounters::Channel(c) => c,
            other => panic!("component {name} is registered as a {}", other.kind()),
        }
    }

    /// The counters of sink `name`, created on first use.
    pub fn sink(&self, name: &str) -> Arc<SinkCounters> {
        match self.entry(name, || ComponentCounters::Sink(Arc::default())) {
            ComponentCounters::Sink(c) => c,
            other => panic!("component {name} is registered as a {}", other.kind()),
        }
    }

    fn entry(&self, name: &str, make: impl FnOnce() -> ComponentCounters) -> ComponentCounters {
        let mut map = self.components.lock().expect("metrics lock is never poisoned");
        // Keys are "KIND.name"; the kind is known only from `make`, so build it first.
        let made = make();
        let key = format!("{}.{name}", made.kind());
        map.entry(key).or_insert(made).clone()
    }

    /// Forgets the counters of a component a reload removed (`"SOURCE.r1"`, ...).
    pub fn remove(&self, key: &str) {
        self.components.lock().expect("metrics lock is never poisoned").remove(key);
    }

    /// A snapshot: `"KIND.name"` to the component's counters.
    pub fn snapshot(&self) -> BTreeMap<String, ComponentCounters> {
        self.components.lock().expect("metrics lock is never poisoned").clone()
    }

    /// Flume's JSON reporting format: `{"SOURCE.r1": {"Type": "SOURCE", "EventReceivedCount": "12", ...}}`.
    ///
    /// Values are strings, as Flume's `JSONHandler` writes them; channels also get
    /// `ChannelFillPercentage`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (key, counters) in self.snapshot() {
            let mut obj = serde_json::Map::new();
            obj.insert("Type".into(), counters.kind().into());
            for (name, value) in counters.values() {
                obj.insert(name.into(), value.to_string().into());
            }
            if let ComponentCounters::Channel(c) = &counters {
                obj.insert("ChannelFillPercentage".into(), format!("{:.1}", fill_percentage(c)).into());
            }
            out.insert(key, serde_json::Value::Object(obj));
        }
        let mut agent = serde_json::Map::new();
        agent.insert("Type".into(), "AGENT".into());
        for (name, value) in self.agent.values() {
            agent.insert(name.into(), value.to_string().into());
        }
        out.insert("AGENT".into(), serde_json::Value::Object(agent));
        serde_json::Value::Object(out)
    }

    /// Prometheus text exposition: `flumen_<counter>{agent="a",type="source",name="r1"} 12`.
    pub fn to_prometheus(&self, agent: &str) -> String {
        let mut out = String::new();
        for (key, counters) in self.snapshot() {
            let (kind, name) = key.split_once('.').expect("keys are KIND.name");
            for (counter, value) in counters.values() {
                let _ = writeln!(
                    out,
                    "flumen_{}{{agent=\"{}\",type=\"{}\",name=\"{}\"}} {value}",
                    snake_case(counter),
                    escape_label(agent),
                    kind.to_lowercase(),
                    escape_label(name)
                );
            }
        }
        for (counter, value) in self.agent.values() {
            let _ = writeln!(
                out,
                "flumen_{}{{agent=\"{}\",type=\"agent\"}} {value}",
                snake_case(counter),
                escape_label(agent)
            );
        }
        out
    }
}

/// `ChannelSize` as a percentage of `ChannelCapacity` (0 when the capacity is unknown).
pub fn fill_percentage(c: &ChannelCounters) -> f64 {
    let cap = c.capacity.get();
    if cap == 0 {
        0.0
    } else {
        c.size.get() as f64 * 100.0 / cap as f64
    }
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, ch) in name.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_uses_flume_names_and_string_values() {
        let m = Metrics::new();
        m.source("r1").event_received.add(3);
        let c = m.channel("c1");
        c.capacity.set(200);
        c.size.set(50);
        let json = m.to_json();
        assert_eq!(json["SOURCE.r1"]["EventReceivedCount"], "3");
        assert_eq!(json["SOURCE.r1"]["Type"], "SOURCE");
        assert_eq!(json["CHANNEL.c1"]["ChannelFillPercentage"], "25.0");
    }

    #[test]
    fn prometheus_lines_are_labelled() {
        let m = Metrics::new();
        m.sink("k1").drain_success.add(7);
        let text = m.to_prometheus("edge-1");
        assert!(
            text.contains("flumen_event_drain_success_count{agent=\"edge-1\",type=\"sink\",name=\"k1\"} 7"),
            "{text}"
        );
    }
}
