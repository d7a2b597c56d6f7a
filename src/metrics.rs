//! Per-component counters with Flume's names, and their JSON and Prometheus renderings.
//!
//! Every source, channel and sink registers a counter set in the agent's [`Metrics`]. The counter
//! names are Flume's (`EventPutSuccessCount`, ...), so dashboards built for Flume's JSON reporting
//! (`GET /metrics`, `{"SOURCE.r1": {...}, "CHANNEL.c1": {...}, "SINK.k1": {...}}`) keep working.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    ($(#[$doc:meta])* $name:ident { $($body:tt)* }) => {
        counter_set!(@set [$(#[$doc])*] $name [
            /// What the component is doing: `State` in the JSON, `flumen_component_state` in
            /// Prometheus.
            pub state: StateGauge,
        ] $($body)*);
    };
    (stateless $(#[$doc:meta])* $name:ident { $($body:tt)* }) => {
        counter_set!(@set [$(#[$doc])*] $name [] $($body)*);
    };
    (@set [$($attrs:tt)*] $name:ident [$($extra:tt)*]
        $($(#[doc = $fdoc:literal])* $field:ident => $kind:ident $flume:literal),* $(,)?) => {
        $($attrs)*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[doc = $fdoc])* pub $field: Counter,)*
            $($extra)*
        }
        impl $name {
            /// Every counter's Flume name, kind and description (its doc comment), in declaration
            /// order.
            pub const SERIES: &'static [Series] =
                &[$(Series { name: $flume, kind: SeriesKind::$kind, help: concat!($($fdoc),*) },)*];

            /// `(name, value)` pairs in declaration order, with Flume's names.
            pub fn values(&self) -> Vec<(&'static str, u64)> {
                vec![$(($flume, self.$field.get()),)*]
            }
        }
    };
}

/// Whether a series only grows (a counter) or goes up and down (a gauge), as Prometheus types them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeriesKind {
    /// Only grows (until the agent restarts); Prometheus name ends in `_total`.
    Counter,
    /// Goes up and down (sizes, capacities, flags).
    Gauge,
}

/// One counter of a counter set: its Flume name, kind and description.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// Flume's name, as in the JSON (`EventPutSuccessCount`).
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: SeriesKind,
    /// What it counts, in words (the field's doc comment).
    pub help: &'static str,
}

impl Series {
    /// The Prometheus metric name: `flumen_` and the snake-case Flume name; a counter's trailing
    /// `Count` becomes `_total` (`EventPutSuccessCount` → `flumen_event_put_success_total`,
    /// `ChannelWriteFail` → `flumen_channel_write_fail_total`), a gauge keeps its name
    /// (`ChannelSize` → `flumen_channel_size`), as Prometheus' naming conventions ask.
    pub fn prometheus_name(&self) -> String {
        let snake = snake_case(self.name);
        match self.kind {
            SeriesKind::Gauge => format!("flumen_{snake}"),
            SeriesKind::Counter => format!("flumen_{}_total", snake.strip_suffix("_count").unwrap_or(&snake)),
        }
    }
}

/// What a component is doing, as its [`StateGauge`] says.
///
/// `Starting` until the component first works (a channel open, a source reading, a sink's runner
/// taking); `Running`; `Restarting` after a failure, while its supervisor waits the restart
/// backoff and builds it again; `Failed` while a channel's storage cannot open (retried with
/// backoff); `Draining` while the agent stops (sources finish their puts, sinks empty their
/// channels); `Stopped` once it finished (stopped, or a source at the end of its input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComponentState {
    /// Not working yet.
    #[default]
    Starting,
    /// Working.
    Running,
    /// Failed, waiting to be restarted.
    Restarting,
    /// Cannot work (a channel whose storage does not open); retried.
    Failed,
    /// Finishing its work because the agent stops.
    Draining,
    /// Finished.
    Stopped,
}

impl ComponentState {
    /// Every state, in code order.
    pub const ALL: [ComponentState; 6] = [
        ComponentState::Starting,
        ComponentState::Running,
        ComponentState::Restarting,
        ComponentState::Failed,
        ComponentState::Draining,
        ComponentState::Stopped,
    ];

    /// The lower-case name (`"running"`), as the JSON's `State` and `flumen top` show it.
    pub fn name(self) -> &'static str {
        match self {
            ComponentState::Starting => "starting",
            ComponentState::Running => "running",
            ComponentState::Restarting => "restarting",
            ComponentState::Failed => "failed",
            ComponentState::Draining => "draining",
            ComponentState::Stopped => "stopped",
        }
    }

    /// The value of the `flumen_component_state` gauge: 0 starting, 1 running, 2 restarting,
    /// 3 failed, 4 draining, 5 stopped.
    pub fn code(self) -> u64 {
        self as u64
    }
}

impl std::fmt::Display for ComponentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A component's [`ComponentState`] and, for `Restarting` and `Failed`, why.
#[derive(Debug, Default)]
pub struct StateGauge(Mutex<(ComponentState, Option<String>)>);

impl StateGauge {
    /// Sets the state and forgets the reason.
    pub fn set(&self, state: ComponentState) {
        *self.lock() = (state, None);
    }

    /// Sets the state, saying why (the error of a failure).
    pub fn set_because(&self, state: ComponentState, reason: &dyn std::fmt::Display) {
        *self.lock() = (state, Some(reason.to_string()));
    }

    /// Sets the state unless it is `Draining` or `Stopped` (the agent is stopping: a late start
    /// or restart does not bring a component back to life in the monitoring).
    pub fn set_unless_stopping(&self, state: ComponentState) {
        let mut s = self.lock();
        if !matches!(s.0, ComponentState::Draining | ComponentState::Stopped) {
            *s = (state, None);
        }
    }

    /// The current state.
    pub fn get(&self) -> ComponentState {
        self.lock().0
    }

    /// The current state and its reason, if one was given.
    pub fn snapshot(&self) -> (ComponentState, Option<String>) {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (ComponentState, Option<String>)> {
        self.0.lock().expect("state lock is never poisoned")
    }
}

counter_set!(
    /// Counters of one source (Flume's `SourceCounter`, plus flumen's own).
    SourceCounters {
        /// Events read from the input, before interceptors.
        event_received => Counter "EventReceivedCount",
        /// Events committed to every required channel.
        event_accepted => Counter "EventAcceptedCount",
        /// Batches read from the input.
        append_batch_received => Counter "AppendBatchReceivedCount",
        /// Batches committed to every required channel.
        append_batch_accepted => Counter "AppendBatchAcceptedCount",
        /// Single-event calls received (`append` of the `Avro` and `Thrift` sources).
        append_received => Counter "AppendReceivedCount",
        /// Single-event calls whose event was committed to every required channel.
        append_accepted => Counter "AppendAcceptedCount",
        /// Events an interceptor filtered out (`RegexFilter`).
        dropped_by_filter => Counter "EventDroppedByFilterCount",
        /// Input records that were malformed or cut (lines over `max_line_length`); kept, flagged.
        malformed => Counter "EventMalformedCount",
        /// TLS handshakes that failed or took longer than `handshake_timeout` (sources with
        /// `tls`; for `Http`, the client certificates refused).
        tls_handshake_failure => Counter "TlsHandshakeFailureCount",
        /// Re-reads of the certificate files that failed (the certificate in use stayed).
        tls_reload_failure => Counter "TlsReloadFailureCount",
        /// Events a multiplexing selector could route to no channel (no mapping, no default).
        unrouted => Counter "EventUnroutedCount",
        /// Body bytes read.
        bytes_received => Counter "BytesReceivedCount",
        /// Puts that an optional channel refused (counted, not fatal).
        optional_put_failed => Counter "OptionalPutFailedCount",
        /// Batches whose put into a required channel failed for good (Flume's `ChannelWriteFail`).
        channel_write_fail => Counter "ChannelWriteFail",
        /// Events read that can be neither committed nor given back: a datagram source's batches
        /// after a failed put (UDP cannot ask its sender to resend). Zero for every other source.
        event_dropped => Counter "EventDroppedCount",
        /// Files a file source refused to read: symbolic links (without `follow_symlinks`) and
        /// `SpoolDir` progress entries naming a file outside its directory. Each counted once.
        file_refused => Counter "FileRefusedCount",
        /// Times the supervisor restarted this source.
        restarts => Counter "RestartCount",
        /// Copies of events leaving this source that a tap dropped because its buffer was full
        /// (the events themselves went on).
        tap_dropped => Counter "TapDroppedCount",
        /// Connections open now (`Netcat`, `SyslogTcp`); a gauge (Flume's `OpenConnectionCount`).
        open_connections => Gauge "OpenConnectionCount",
        /// Connections refused (accepted and closed at once) because `max_connections` were open.
        connection_refused => Counter "ConnectionRefusedCount",
        /// Connections closed because they sent nothing for `idle_timeout`.
        connection_idle_closed => Counter "ConnectionIdleClosedCount",
        /// Connections closed because what they sent broke the RPC protocol (`Avro`): a frame
        /// over its limits or truncated, a corrupt stream, a handshake for another protocol, a
        /// datum that does not decode. Nothing of the call is put.
        protocol_errors => Counter "ProtocolErrorCount",
    }
);

counter_set!(
    /// Counters of one channel (Flume's `ChannelCounter`, plus flumen's own).
    ChannelCounters {
        /// Events held (available plus taken and not yet committed); a gauge.
        size => Gauge "ChannelSize",
        /// The configured capacity in events; a gauge.
        capacity => Gauge "ChannelCapacity",
        /// Bytes held, bodies plus header keys and values (Memory only); a gauge.
        size_bytes => Gauge "ChannelSizeBytes",
        /// The configured `byte_capacity` (Memory only); a gauge.
        byte_capacity => Gauge "ChannelByteCapacity",
        /// Events offered by puts.
        put_attempt => Counter "EventPutAttemptCount",
        /// Events committed by puts.
        put_success => Counter "EventPutSuccessCount",
        /// Events asked for by takes.
        take_attempt => Counter "EventTakeAttemptCount",
        /// Events handed out by takes.
        take_success => Counter "EventTakeSuccessCount",
        /// Events of rolled back takes, returned to the head of the channel.
        rollback => Counter "EventRollbackCount",
        /// Bytes the channel's storage uses on disk (RocksDb only); a gauge.
        disk_bytes => Gauge "DiskBytes",
        /// Times the supervisor restarted this channel.
        restarts => Counter "RestartCount",
        /// Times the channel's storage was found damaged when it opened (RocksDb only); each is
        /// set aside as `DIR.damaged-<UTC time>` and salvaged.
        damaged => Counter "ChannelDamagedCount",
        /// Events copied out of damaged directories into the channel by salvages (RocksDb only).
        salvaged => Counter "ChannelSalvagedCount",
        /// Stored values moved to the dead-letter store because they could not be read or decoded
        /// (RocksDb only; by salvages and by takes).
        dead_letter => Counter "EventDeadLetterCount",
        /// Failed attempts to open the channel's storage (RocksDb only; retried with backoff).
        open_failures => Counter "ChannelOpenFailureCount",
        /// 1 while the channel's storage is not open (failed, retrying), else 0; a gauge.
        failed => Gauge "ChannelFailed",
        /// Events in memory, available plus taken and not yet committed (Spillable only); a gauge.
        memory_size => Gauge "ChannelMemorySize",
        /// Events in the overflow, available plus taken and not yet committed (Spillable only);
        /// a gauge.
        overflow_size => Gauge "ChannelOverflowSize",
    }
);

counter_set!(
    /// Counters of one sink (Flume's `SinkCounter`, plus flumen's own).
    SinkCounters {
        /// Takes that returned a full batch.
        batch_complete => Counter "BatchCompleteCount",
        /// Takes that returned nothing.
        batch_empty => Counter "BatchEmptyCount",
        /// Takes that returned fewer events than `batch_size`.
        batch_underflow => Counter "BatchUnderflowCount",
        /// Outputs (files, connections) opened.
        connection_created => Counter "ConnectionCreatedCount",
        /// Outputs closed.
        connection_closed => Counter "ConnectionClosedCount",
        /// Outputs that failed to open or write.
        connection_failed => Counter "ConnectionFailedCount",
        /// Events taken for delivery.
        drain_attempt => Counter "EventDrainAttemptCount",
        /// Events delivered and committed.
        drain_success => Counter "EventDrainSuccessCount",
        /// Body bytes delivered.
        bytes_delivered => Counter "BytesDeliveredCount",
        /// Takes rolled back after a failed delivery.
        rollbacks => Counter "RollbackCount",
        /// Events whose output path could not be resolved safely (`Hdfs`: a header value that
        /// could leave the base directory, a missing or bad `timestamp`); written to a `rejected`
        /// bucket or failing their batch, never dropped.
        event_rejected => Counter "EventRejectedCount",
        /// Times this sink was restarted after a failure: by its supervisor, or rebuilt by its
        /// sink group's processor.
        restarts => Counter "RestartCount",
        /// Copies of events entering this sink that a tap dropped because its buffer was full
        /// (the events themselves went on).
        tap_dropped => Counter "TapDroppedCount",
    }
);

counter_set!(
    stateless
    /// Counters of the agent itself (flumen's own; Flume has no reload).
    AgentCounters {
        /// Reloads applied (SIGHUP, or a changed file under `run --watch`).
        reload_success => Counter "ReloadSuccessCount",
        /// Reloads refused (the new file is invalid) or rolled back; the agent ran on unchanged.
        reload_failure => Counter "ReloadFailureCount",
        /// When the last reload was applied, in milliseconds since the Unix epoch; 0 before any.
        last_reload => Gauge "LastReloadTime",
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

    /// Name, kind and description of every counter, in the order of [`ComponentCounters::values`].
    pub fn series(&self) -> &'static [Series] {
        match self {
            ComponentCounters::Source(_) => SourceCounters::SERIES,
            ComponentCounters::Channel(_) => ChannelCounters::SERIES,
            ComponentCounters::Sink(_) => SinkCounters::SERIES,
        }
    }

    /// The component's state.
    pub fn state(&self) -> &StateGauge {
        match self {
            ComponentCounters::Source(c) => &c.state,
            ComponentCounters::Channel(c) => &c.state,
            ComponentCounters::Sink(c) => &c.state,
        }
    }
}

/// All counters of one agent, keyed by `"SOURCE.r1"`, `"CHANNEL.c1"`, `"SINK.k1"`.
#[derive(Debug, Default)]
pub struct Metrics {
    components: Mutex<BTreeMap<String, ComponentCounters>>,
    stopping: AtomicBool,
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

    /// Says the agent is stopping: from now on it is not ready (`GET /ready` answers 503), and
    /// every channel that is not failed is `Draining` (its sinks empty it).
    pub fn agent_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for counters in self.snapshot().values() {
            if let ComponentCounters::Channel(c) = counters {
                if c.state.get() != ComponentState::Failed {
                    c.state.set(ComponentState::Draining);
                }
            }
        }
    }

    /// Whether [`Metrics::agent_stopping`] was called.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Flume's JSON reporting format: `{"SOURCE.r1": {"Type": "SOURCE", "State": "running",
    /// "EventReceivedCount": "12", ...}}`.
    ///
    /// Values are strings, as Flume's `JSONHandler` writes them; channels also get
    /// `ChannelFillPercentage`. `State` (flumen's, not Flume's) is the component's
    /// [`ComponentState`] name.
    pub fn to_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (key, counters) in self.snapshot() {
            let mut obj = serde_json::Map::new();
            obj.insert("Type".into(), counters.kind().into());
            obj.insert("State".into(), counters.state().get().name().into());
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

    /// Prometheus text exposition format 0.0.4: per metric a `# HELP` and a `# TYPE` line, then
    /// one sample per component, `flumen_event_received_total{agent="a",type="source",name="r1"} 12`.
    ///
    /// Names as [`Series::prometheus_name`]; besides the counter sets, the gauges
    /// `flumen_channel_fill_percentage` and `flumen_component_state`
    /// ([`ComponentState::code`]). The agent's own counters have the labels `agent` and
    /// `type="agent"` only.
    pub fn to_prometheus(&self, agent: &str) -> String {
        // Name to (help, type, samples); in the order first seen, every sample of a name together
        // (the format asks for it).
        let mut families: Vec<(String, String, SeriesKind, String)> = Vec::new();
        let mut sample = |name: String, help: &str, kind: SeriesKind, labels: &str, value: &dyn std::fmt::Display| {
            let at = match families.iter().position(|f| f.0 == name) {
                Some(at) => at,
                None => {
                    families.push((name, help.trim().to_string(), kind, String::new()));
                    families.len() - 1
                }
            };
            let family = &mut families[at];
            let _ = writeln!(family.3, "{}{{{labels}}} {value}", family.0);
        };
        let state_help = format!(
            "The component's state: {}.",
            ComponentState::ALL.map(|s| format!("{} {}", s.code(), s.name())).join(", ")
        );
        for (key, counters) in self.snapshot() {
            let (kind, name) = key.split_once('.').expect("keys are KIND.name");
            let labels = format!(
                "agent=\"{}\",type=\"{}\",name=\"{}\"",
                escape_label(agent),
                kind.to_lowercase(),
                escape_label(name)
            );
            sample(
                "flumen_component_state".into(),
                &state_help,
                SeriesKind::Gauge,
                &labels,
                &counters.state().get().code(),
            );
            for (series, (_, value)) in counters.series().iter().zip(counters.values()) {
                sample(series.prometheus_name(), series.help, series.kind, &labels, &value);
            }
            if let ComponentCounters::Channel(c) = &counters {
                let help = "ChannelSize as a percentage of ChannelCapacity.";
                sample("flumen_channel_fill_percentage".into(), help, SeriesKind::Gauge, &labels, &fill_percentage(c));
            }
        }
        let labels = format!("agent=\"{}\",type=\"agent\"", escape_label(agent));
        for (series, (_, value)) in AgentCounters::SERIES.iter().zip(self.agent.values()) {
            sample(series.prometheus_name(), series.help, series.kind, &labels, &value);
        }
        let mut out = String::new();
        for (name, help, kind, samples) in families {
            let kind = match kind {
                SeriesKind::Counter => "counter",
                SeriesKind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&help));
            let _ = writeln!(out, "# TYPE {name} {kind}");
            out.push_str(&samples);
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

/// A `# HELP` text: backslash and line feed escaped, as the text format asks.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
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
    fn prometheus_lines_are_labelled_typed_and_grouped() {
        let m = Metrics::new();
        m.sink("k1").drain_success.add(7);
        m.sink("k2").drain_success.add(2);
        m.channel("c1").size.set(5);
        m.source("r1").state.set(ComponentState::Running);
        let text = m.to_prometheus("edge-1");
        assert!(
            text.contains("flumen_event_drain_success_total{agent=\"edge-1\",type=\"sink\",name=\"k1\"} 7"),
            "{text}"
        );
        assert!(text.contains("# TYPE flumen_event_drain_success_total counter\n"), "{text}");
        assert!(text.contains("# HELP flumen_event_drain_success_total Events delivered and committed.\n"), "{text}");
        assert!(text.contains("# TYPE flumen_channel_size gauge\nflumen_channel_size{"), "{text}");
        assert!(text.contains("flumen_component_state{agent=\"edge-1\",type=\"source\",name=\"r1\"} 1"), "{text}");
        // Every sample of a metric follows its own TYPE line, never another's.
        let mut current = String::new();
        let mut seen = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(current.clone()), "{current} typed twice");
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&format!("{current}{{")), "{line} outside its family {current}");
            }
        }
    }

    #[test]
    fn counters_end_in_total_and_gauges_do_not() {
        let names: Vec<String> = [SourceCounters::SERIES, ChannelCounters::SERIES, SinkCounters::SERIES]
            .concat()
            .iter()
            .map(|s| s.prometheus_name())
            .collect();
        assert!(names.contains(&"flumen_event_put_success_total".to_string()));
        assert!(names.contains(&"flumen_channel_write_fail_total".to_string()));
        assert!(names.contains(&"flumen_channel_size".to_string()));
        assert!(names.contains(&"flumen_disk_bytes".to_string()));
        for s in [SourceCounters::SERIES, ChannelCounters::SERIES, SinkCounters::SERIES].concat() {
            assert_eq!(s.prometheus_name().ends_with("_total"), s.kind == SeriesKind::Counter, "{}", s.name);
            assert!(!s.help.trim().is_empty(), "{} has a description", s.name);
        }
    }

    #[test]
    fn stopping_drains_channels_but_keeps_a_failed_one_failed() {
        let m = Metrics::new();
        m.channel("ok").state.set(ComponentState::Running);
        m.channel("bad").state.set_because(ComponentState::Failed, &"lock held");
        m.agent_stopping();
        assert!(m.is_stopping());
        assert_eq!(m.channel("ok").state.get(), ComponentState::Draining);
        assert_eq!(m.channel("bad").state.snapshot(), (ComponentState::Failed, Some("lock held".into())));
        assert_eq!(m.to_json()["CHANNEL.ok"]["State"], "draining");
    }
}
