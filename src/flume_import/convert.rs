//! The mapping of Flume's components and properties onto flumen's kinds and options.
//!
//! Flume's names and defaults are those of the Flume 1.10 user guide; flumen's those of the
//! README's topology reference.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::ron_text::{comments, dur_ms, list, q, some_q, Kind};
use super::Props;

const NO_COUNTERPART: &str = "no counterpart";
const TLS_DIFFERENT: &str = "flumen does it differently: TLS takes PEM files (`tls: Some(TlsServer(cert:, key:))` on a source, `Some(TlsClient(ca:))` on a sink), not a Java keystore; convert it with keytool and openssl";
const KERBEROS: &str = "no counterpart: flumen has no Kerberos authentication";

/// One component: its key prefix (`a1.sources.r1.`), name and the properties it has.
struct Comp<'a> {
    p: &'a Props,
    base: String,
    name: String,
}

impl<'a> Comp<'a> {
    fn new(p: &'a Props, base: String, name: &str) -> Comp<'a> {
        Comp { p, base, name: name.to_string() }
    }

    fn key(&self, sub: &str) -> String {
        format!("{}{sub}", self.base)
    }

    fn get(&self, sub: &str) -> Option<(String, usize)> {
        self.p.get(&self.key(sub)).map(|(v, l)| (v.to_string(), l))
    }

    fn str(&self, sub: &str) -> Option<String> {
        self.get(sub).map(|(v, _)| v)
    }

    fn has(&self, sub: &str) -> bool {
        self.p.peek(&self.key(sub)).is_some()
    }

    fn line(&self, sub: &str) -> usize {
        self.p.line(&self.key(sub))
    }

    /// A non-negative integer (Flume's `Integer.parseInt` / `Long.parseLong` of the trimmed value);
    /// anything else is a problem.
    fn int(&self, sub: &str) -> Option<u64> {
        let (v, line) = self.get(sub)?;
        match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.p.problem(line, &self.key(sub), format!("not a number: {v:?} (a whole number >= 0 is expected)"));
                None
            }
        }
    }

    /// A signed integer (priorities).
    fn signed(&self, sub: &str) -> Option<i64> {
        let (v, line) = self.get(sub)?;
        match v.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.p.problem(line, &self.key(sub), format!("not a number: {v:?}"));
                None
            }
        }
    }

    /// `true` / `false` (any case). Flume reads anything else as `false`: so does this, listing it.
    fn bool(&self, sub: &str) -> Option<bool> {
        let (v, _) = self.get(sub)?;
        match v.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.list(sub, format!("value not understood: {v:?} is not true or false (Flume reads it as false, so does this import)"));
                Some(false)
            }
        }
    }

    fn list(&self, sub: &str, why: impl Into<String>) {
        self.p.list(&self.key(sub), why);
    }

    /// Lists every present key under `sub` (e.g. `"ssl"` lists `ssl`, and `"kafka.x."` the keys
    /// starting with it).
    fn list_prefix(&self, sub: &str, why: &str) {
        for k in self.p.under(&self.key(sub)) {
            self.p.list(&k, why);
        }
    }

    fn list_many(&self, subs: &[&str], why: &str) {
        for s in subs {
            self.list(s, why);
        }
    }

    /// The first line of any of its properties (its place in the file).
    fn first_line(&self) -> usize {
        self.p.under(&self.base).iter().map(|k| self.p.line(k)).min().unwrap_or(usize::MAX)
    }

    fn problem(&self, sub: &str, message: impl Into<String>) {
        let line = self.line(sub);
        self.p.problem(line, &self.key(sub), message);
    }
}

/// A whitespace-separated list.
fn words(v: &str) -> Vec<String> {
    v.split_whitespace().map(str::to_string).collect()
}

/// Whether `v` names the Java class `class` (Flume compares class names exactly).
fn is_class(v: &str, class: &str) -> bool {
    v == class
}

/// `host:port` from Flume's host and port properties.
fn bind(c: &Comp, host_key: &str, default_host: Option<&str>, what: &mut Vec<String>) -> Option<String> {
    let host = c.str(host_key).or_else(|| default_host.map(str::to_string));
    let port = c.int("port");
    let Some(host) = host else {
        c.p.problem(
            c.first_line(),
            &c.key(host_key),
            format!("{} needs {host_key} (the address to listen on)", c.name),
        );
        return None;
    };
    let Some(port) = port else {
        if !c.has("port") {
            c.p.problem(c.first_line(), &c.key("port"), format!("{} needs port", c.name));
        }
        return None;
    };
    if port > 65535 {
        c.problem("port", format!("port {port} is out of range (0 to 65535)"));
        return None;
    }
    what.push(host_key.to_string());
    what.push("port".to_string());
    Some(if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

fn ms_of(c: &Comp, sub: &str) -> Option<u64> {
    c.int(sub)
}

fn secs_of(c: &Comp, sub: &str) -> Option<u64> {
    c.int(sub).map(|s| s.saturating_mul(1000))
}

struct SourceOut {
    name: String,
    line: usize,
    notes: Vec<String>,
    kind: Kind,
    channels: Vec<String>,
    selector: Option<(String, String)>,
    /// Each interceptor and the comment naming where it came from.
    interceptors: Vec<(Kind, String)>,
    batch_size: Option<(u64, String)>,
    linger: Option<(String, String)>,
}

struct ChannelOut {
    name: String,
    line: usize,
    notes: Vec<String>,
    kind: Kind,
    transaction_capacity: u64,
    /// For a Kafka channel: its brokers, topic and consumer group.
    kafka: Option<(String, String, String)>,
}

struct SinkOut {
    name: String,
    line: usize,
    notes: Vec<String>,
    kind: Kind,
    channel: String,
    batch_size: Option<(u64, String)>,
}

struct GroupOut {
    name: String,
    line: usize,
    notes: Vec<String>,
    sinks: Vec<String>,
    processor: Kind,
}

/// The topology as RON text; problems and notes are recorded in `p`.
pub(super) fn convert(p: &Props, agent: &str, file: &str) -> String {
    let a = agent;
    let list_of =
        |section: &str| -> Vec<String> { p.get(&format!("{a}.{section}")).map(|(v, _)| words(v)).unwrap_or_default() };
    let source_names = list_of("sources");
    let channel_names = list_of("channels");
    let sink_names = list_of("sinks");
    let group_names = list_of("sinkgroups");
    if source_names.is_empty() {
        p.problem(
            p.line(&format!("{a}.sources")),
            &format!("{a}.sources"),
            "the agent lists no source (flumen needs at least one)",
        );
    }
    if channel_names.is_empty() {
        p.problem(p.line(&format!("{a}.channels")), &format!("{a}.channels"), "the agent lists no channel");
    }

    let channels: Vec<ChannelOut> =
        channel_names.iter().map(|n| channel(&Comp::new(p, format!("{a}.channels.{n}."), n))).collect();
    let tx: BTreeMap<String, u64> = channels.iter().map(|c| (c.name.clone(), c.transaction_capacity)).collect();

    let mut sources: Vec<SourceOut> = Vec::new();
    for n in &source_names {
        sources.extend(source(&Comp::new(p, format!("{a}.sources.{n}."), n), &tx));
    }
    let mut sinks: Vec<SinkOut> =
        sink_names.iter().filter_map(|n| sink(&Comp::new(p, format!("{a}.sinks.{n}."), n), &tx)).collect();
    let mut groups: Vec<GroupOut> = group_names
        .iter()
        .filter_map(|n| group(&Comp::new(p, format!("{a}.sinkgroups.{n}."), n), &sink_names))
        .collect();

    // A Kafka channel's stand-in gets the Kafka source or sink that does its work in flumen; a
    // channel neither put into nor drained is left out; one only put into or only drained is an
    // error in flumen (Flume only warns).
    let mut kept = Vec::new();
    for mut c in channels {
        let fed = sources.iter().any(|s| s.channels.contains(&c.name));
        let drained = sinks.iter().any(|s| s.channel == c.name);
        let key = format!("{a}.channels.{}.type", c.name);
        if let Some((brokers, topic, group)) = c.kafka.clone() {
            if !fed {
                let mut k = Kind::new("Kafka");
                k.set("brokers", q(&brokers), "the Kafka channel's kafka.bootstrap.servers");
                k.set("topics", list(std::slice::from_ref(&topic)), "the Kafka channel's kafka.topic");
                k.set("group_id", q(&group), "the Kafka channel's kafka.consumer.group.id");
                let batch_size = (c.transaction_capacity < 1000)
                    .then(|| (c.transaction_capacity, "the channel's transaction capacity".to_string()));
                sources.push(SourceOut {
                    name: format!("{}-from-kafka", c.name),
                    line: c.line,
                    notes: vec![
                        format!(
                            "Reads the Kafka channel {}'s topic into its stand-in. Flume's Kafka channel wrote Flume's",
                            c.name
                        ),
                        "Avro event format (parseAsFlumeEvent): bodies read here are those records as they are.".into(),
                    ],
                    kind: k,
                    channels: vec![c.name.clone()],
                    selector: None,
                    interceptors: Vec::new(),
                    batch_size,
                    linger: None,
                });
            }
            if !drained {
                let mut k = Kind::new("Kafka");
                k.set("brokers", q(&brokers), "the Kafka channel's kafka.bootstrap.servers");
                k.set("topic", q(&topic), "the Kafka channel's kafka.topic");
                sinks.push(SinkOut {
                    name: format!("{}-to-kafka", c.name),
                    line: c.line,
                    notes: vec![format!("Writes what the sources put into the Kafka channel {} to its topic.", c.name)],
                    kind: k,
                    channel: c.name.clone(),
                    batch_size: None,
                });
            }
            c.notes.push(format!("Stand-in for the Kafka channel; topic {topic} at {brokers}."));
            kept.push(c);
            continue;
        }
        match (fed, drained) {
            (true, true) => kept.push(c),
            (false, false) => {
                p.list(
                    &key,
                    "no counterpart: a channel no source puts into and no sink drains is an error in flumen; left out",
                );
            }
            (false, true) => p.problem(
                p.line(&key),
                &key,
                format!("no source puts into channel {} (name it in a source's channels)", c.name),
            ),
            (true, false) => p.problem(
                p.line(&key),
                &key,
                format!("no sink drains channel {} (name it in a sink's channel)", c.name),
            ),
        }
    }
    let mut channels = kept;

    sources.sort_by_key(|s| s.line);
    channels.sort_by_key(|c| c.line);
    sinks.sort_by_key(|s| s.line);
    groups.sort_by_key(|g| g.line);

    let mut out = String::new();
    let _ = writeln!(out, "// Imported by `flumen import-flume` from {file}, agent \"{a}\".");
    let _ =
        writeln!(out, "// Each option's comment names the Flume property it came from; \"Flume's default\" marks a");
    let _ = writeln!(out, "// value Flume used without it being set, written out where flumen's default differs.");
    let _ = writeln!(out, "Topology(");
    let _ = writeln!(out, "    agent: {},", q(a));
    let _ = writeln!(out, "    sources: {{");
    for s in &sources {
        out.push_str(&comments(&s.notes, 8));
        let _ = writeln!(out, "        {}: (", q(&s.name));
        let _ = writeln!(out, "            kind: {},", s.kind.render(12));
        let _ = writeln!(out, "            channels: {},", list(&s.channels));
        if let Some((sel, from)) = &s.selector {
            let _ = writeln!(
                out,
                "            selector: {sel},{}",
                if from.is_empty() { String::new() } else { format!(" // {from}") }
            );
        }
        if !s.interceptors.is_empty() {
            let _ = writeln!(out, "            interceptors: [");
            for (i, from) in &s.interceptors {
                let _ = writeln!(out, "                {}, // {from}", i.render(16));
            }
            let _ = writeln!(out, "            ],");
        }
        if let Some((b, from)) = &s.batch_size {
            let _ = writeln!(out, "            batch_size: {b}, // {from}");
        }
        if let Some((l, from)) = &s.linger {
            let _ = writeln!(out, "            linger: {l}, // {from}");
        }
        let _ = writeln!(out, "        ),");
    }
    let _ = writeln!(out, "    }},");
    let _ = writeln!(out, "    channels: {{");
    for c in &channels {
        out.push_str(&comments(&c.notes, 8));
        let _ = writeln!(out, "        {}: {},", q(&c.name), c.kind.render(8));
    }
    let _ = writeln!(out, "    }},");
    let _ = writeln!(out, "    sinks: {{");
    for s in &sinks {
        out.push_str(&comments(&s.notes, 8));
        let _ = writeln!(out, "        {}: (", q(&s.name));
        let _ = writeln!(out, "            kind: {},", s.kind.render(12));
        let _ = writeln!(out, "            channel: {},", q(&s.channel));
        if let Some((b, from)) = &s.batch_size {
            let _ = writeln!(out, "            batch_size: {b}, // {from}");
        }
        let _ = writeln!(out, "        ),");
    }
    let _ = writeln!(out, "    }},");
    if !groups.is_empty() {
        let _ = writeln!(out, "    sink_groups: {{");
        for g in &groups {
            out.push_str(&comments(&g.notes, 8));
            let _ = writeln!(
                out,
                "        {}: (sinks: {}, processor: {}),",
                q(&g.name),
                list(&g.sinks),
                g.processor.render(8)
            );
        }
        let _ = writeln!(out, "    }},");
    }
    out.push_str(")\n");
    out
}

/// Why a property nothing looked at is not carried over.
pub(super) fn unused_reason(p: &Props, agent: &str, key: &str) -> String {
    let rest = &key[agent.len() + 1..];
    let mut parts = rest.splitn(3, '.');
    let section = parts.next().unwrap_or("");
    let name = parts.next();
    let listed =
        |s: &str, n: &str| p.peek(&format!("{agent}.{s}")).is_some_and(|(v, _)| v.split_whitespace().any(|w| w == n));
    let what = match section {
        "sources" => "source",
        "channels" => "channel",
        "sinks" => "sink",
        "sinkgroups" => "sink group",
        "configfilters" => {
            return "flumen does it differently: a secret is written `env:NAME` or `file:PATH` in the option itself"
                .into()
        }
        _ => return NO_COUNTERPART.into(),
    };
    match name {
        Some(n) if !listed(section, n) => format!("{what} {n} is not in {agent}.{section}: ignored, as Flume does"),
        _ => NO_COUNTERPART.into(),
    }
}

/// The batch size of a source or sink: Flume's property (or Flume's default for the kind), at
/// most the transaction capacity of its channels. Written out when it is not flumen's 1000.
fn batch(
    c: &Comp,
    props: &[&str],
    flume_default: Option<u64>,
    channels: &[String],
    tx: &BTreeMap<String, u64>,
    notes: &mut Vec<String>,
) -> Option<(u64, String)> {
    let mut value = None;
    for sub in props {
        if let Some(n) = c.int(sub) {
            if value.is_none() {
                value = Some((n, (*sub).to_string()));
            }
        }
    }
    let (mut n, mut from) = match (value, flume_default) {
        (Some((n, sub)), _) => (n, sub),
        (None, Some(d)) => (d, format!("Flume's default {}", props.first().copied().unwrap_or("batch size"))),
        (None, None) => (1000, "flumen's default".to_string()),
    };
    if n == 0 {
        c.problem(props.first().copied().unwrap_or("batchSize"), "a batch size must be positive");
        n = 1;
    }
    let cap = channels.iter().filter_map(|ch| tx.get(ch)).min().copied();
    if let Some(cap) = cap {
        if n > cap {
            if from != "flumen's default" {
                notes.push(format!(
                    "batch size {n} is larger than its channel's transaction capacity {cap}: lowered to {cap}"
                ));
            }
            from = format!("{from}, lowered to the channel's transaction capacity");
            n = cap;
        }
    }
    (n != 1000).then_some((n, from))
}

fn channel(c: &Comp) -> ChannelOut {
    let mut notes = Vec::new();
    let line = c.first_line();
    let ty = c.get("type");
    let Some((ty, _)) = ty else {
        c.p.problem(line.min(c.p.line(&c.base)), &c.key("type"), format!("channel {} has no type", c.name));
        return ChannelOut {
            name: c.name.clone(),
            line,
            notes,
            kind: Kind::new("Memory"),
            transaction_capacity: 100,
            kafka: None,
        };
    };
    notes.push(format!("{}type = {ty}", c.base));
    let lower = ty.to_ascii_lowercase();
    let mut kafka = None;
    let (kind, tx) = match lower.as_str() {
        "memory" | "org.apache.flume.channel.memorychannel" => memory_channel(c, &mut notes, "capacity", 100),
        "file" | "org.apache.flume.channel.file.filechannel" => file_channel(c, &mut notes, "capacity", 1_000_000),
        "spillablememory" | "org.apache.flume.channel.spillablememorychannel" => spillable_channel(c, &mut notes),
        "kafka" | "org.apache.flume.channel.kafka.kafkachannel" => {
            c.p.missing_kind();
            let peek = |sub: &str| c.peek_str(sub).map(|(v, _)| v);
            kafka = Some((
                peek("kafka.bootstrap.servers")
                    .or_else(|| peek("brokerList"))
                    .unwrap_or_else(|| "localhost:9092".into()),
                peek("kafka.topic").or_else(|| peek("topic")).unwrap_or_else(|| "flume-channel".into()),
                peek("kafka.consumer.group.id").or_else(|| peek("groupId")).unwrap_or_else(|| "flume".into()),
            ));
            c.list("type", "no counterpart: flumen has no Kafka channel; put a Kafka sink and a Kafka source around a channel (see the comment in the output)");
            c.list_prefix("", "no counterpart: belongs to the Kafka channel");
            notes.push(
                "No counterpart: flumen has no Kafka channel. flumen does it with a Kafka sink (this agent's".into(),
            );
            notes.push(
                "events to a topic) and, where the events are read, a Kafka source putting into a channel:".into(),
            );
            notes.push(
                "  \"to-kafka\": (kind: Kafka(brokers: \"...\", topic: \"...\"), channel: \"<this channel>\"),".into(),
            );
            notes.push(
                "  \"from-kafka\": (kind: Kafka(brokers: \"...\", topics: [\"...\"]), channels: [\"<a channel>\"]),"
                    .into(),
            );
            notes.push("A RocksDb channel stands in so that the topology is valid.".into());
            stand_in_channel(c)
        }
        _ => {
            c.p.missing_kind();
            c.list("type", format!("no counterpart: flumen has no {ty} channel; a RocksDb channel stands in"));
            c.list_prefix("", "no counterpart: belongs to a channel kind flumen has not");
            notes.push(format!("No counterpart for the channel type {ty}: a RocksDb channel stands in."));
            stand_in_channel(c)
        }
    };
    ChannelOut { name: c.name.clone(), line, notes, kind, transaction_capacity: tx, kafka }
}

fn stand_in_channel(c: &Comp) -> (Kind, u64) {
    let mut k = Kind::new("RocksDb");
    k.set("dir", q(&format!("data/{}", c.name)), "stand-in");
    (k, 10_000)
}

/// Flume's memory channel → `Memory`.
fn memory_channel(c: &Comp, notes: &mut Vec<String>, capacity_key: &str, default_capacity: u64) -> (Kind, u64) {
    let mut k = Kind::new("Memory");
    let capacity = c.int(capacity_key).unwrap_or(default_capacity);
    let from = if c.has(capacity_key) { capacity_key.to_string() } else { format!("Flume's default {capacity_key}") };
    k.set("capacity", capacity.to_string(), from);
    let tx = c.int("transactionCapacity");
    let tx_value = tx.unwrap_or(100.min(capacity.max(1)));
    k.set(
        "transaction_capacity",
        tx_value.to_string(),
        if tx.is_some() { "transactionCapacity" } else { "Flume's default transactionCapacity" },
    );
    if let Some(s) = secs_of(c, "keep-alive") {
        k.set("keep_alive", dur_ms(s), "keep-alive (seconds)");
    }
    match c.int("byteCapacity") {
        Some(0) => c.list("byteCapacity", "flumen does it differently: 0 (Flume's ~200 GB) is not a bound; flumen's default byte_capacity (16 MiB) applies"),
        Some(b) => {
            k.set("byte_capacity", b.to_string(), "byteCapacity (flumen counts bodies and headers)");
        }
        None => notes.push("Flume's default byteCapacity is 80% of the JVM's heap; flumen's byte_capacity default is 16 MiB (80% of Flume's default 20 MB heap).".into()),
    }
    c.list("byteCapacityBufferPercentage", "flumen does it differently: byte_capacity counts the bytes of bodies and headers, no buffer percentage is needed");
    (k, tx_value)
}

/// Flume's file channel → `RocksDb`.
fn file_channel(c: &Comp, notes: &mut Vec<String>, capacity_key: &str, default_capacity: u64) -> (Kind, u64) {
    let mut k = Kind::new("RocksDb");
    match c.get("dataDirs") {
        Some((dirs, _)) => {
            let all: Vec<&str> = dirs.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
            let first = all.first().copied().unwrap_or("data");
            k.set("dir", q(first), "dataDirs");
            if all.len() > 1 {
                c.list(
                    "dataDirs",
                    format!(
                        "flumen does it differently: a RocksDb channel has one dir; {first} is used, {} left out",
                        all[1..].join(", ")
                    ),
                );
            }
            notes.push("Flume's log files in dataDirs are not read: drain the Flume channel before switching.".into());
        }
        None => {
            k.set("dir", q(&format!("data/{}", c.name)), "Flume's default dataDirs ~/.flume/file-channel/data is shared by every file channel; a folder of its own");
        }
    }
    c.list("checkpointDir", "not needed: RocksDB keeps its own state in dir, there is no checkpoint");
    c.list_many(
        &[
            "useDualCheckpoints",
            "backupCheckpointDir",
            "checkpointInterval",
            "checkpointOnClose",
            "use-log-replay-v1",
            "use-fast-replay",
            "checkpoint-timeout",
        ],
        "not needed: RocksDB keeps its own state in dir, there is no checkpoint or replay",
    );
    c.list_many(&["maxFileSize", "write-timeout"], NO_COUNTERPART);
    if let Some(cap) = c.int(capacity_key) {
        k.set("capacity", cap.to_string(), capacity_key);
    } else if default_capacity != 1_000_000 {
        k.set("capacity", default_capacity.to_string(), format!("Flume's default {capacity_key}"));
    }
    let tx = c.int("transactionCapacity");
    if let Some(t) = tx {
        k.set("transaction_capacity", t.to_string(), "transactionCapacity");
    }
    if let Some(s) = c.bool("fsyncPerTransaction") {
        k.set("sync", s.to_string(), "fsyncPerTransaction");
    }
    if let Some(s) = secs_of(c, "keep-alive") {
        k.set("keep_alive", dur_ms(s), "keep-alive (seconds)");
    }
    if let Some(b) = c.int("minimumRequiredSpace") {
        k.set("min_free_bytes", b.to_string(), "minimumRequiredSpace");
    }
    c.list_prefix(
        "encryption.",
        "flumen does it differently: `encryption: Some(Aes256Gcm(keys: {\"id\": \"key file\"}, active: \"id\"))` with raw 32-byte key files, not a JCEKS keystore",
    );
    c.list_prefix("encrpytion.", "flumen does it differently: see encryption (and this key is misspelt)");
    c.list_prefix("encyption.", "flumen does it differently: see encryption (and this key is misspelt)");
    (k, tx.unwrap_or(10_000))
}

/// Flume's spillable memory channel → `Spillable` (or `Memory` / `RocksDb` when one side is off).
fn spillable_channel(c: &Comp, notes: &mut Vec<String>) -> (Kind, u64) {
    let memory = c.int("memoryCapacity").unwrap_or(10_000);
    let overflow = c.int("overflowCapacity").unwrap_or(100_000_000);
    c.list_many(
        &["avgEventSize", "byteCapacityBufferPercentage"],
        "flumen does it differently: byte_capacity counts the bytes of bodies and headers",
    );
    if memory == 0 {
        notes.push("memoryCapacity = 0: works as a file channel, so a RocksDb channel.".into());
        c.list_many(
            &["overflowTimeout", "byteCapacity", "overflowDeactivationThreshold"],
            "not needed: memoryCapacity = 0 makes it a RocksDb channel",
        );
        return file_channel(c, notes, "overflowCapacity", 100_000_000);
    }
    if overflow == 0 {
        notes.push("overflowCapacity = 0: works as a memory channel, so a Memory channel.".into());
        c.list_many(
            &["overflowTimeout", "checkpointDir", "dataDirs", "overflowDeactivationThreshold"],
            "not needed: overflowCapacity = 0 makes it a Memory channel",
        );
        let tx = c.int("transactionCapacity");
        let mut k = Kind::new("Memory");
        k.set("capacity", memory.to_string(), "memoryCapacity");
        let tx_value = tx.unwrap_or(100.min(memory));
        k.set(
            "transaction_capacity",
            tx_value.to_string(),
            if tx.is_some() { "transactionCapacity" } else { "Flume's default transactionCapacity" },
        );
        if let Some(b) = c.int("byteCapacity").filter(|b| *b > 0) {
            k.set("byte_capacity", b.to_string(), "byteCapacity");
        }
        return (k, tx_value);
    }
    let mut k = Kind::new("Spillable");
    k.set(
        "memory_capacity",
        memory.to_string(),
        if c.has("memoryCapacity") { "memoryCapacity" } else { "Flume's default memoryCapacity" },
    );
    let mut overflow_notes = Vec::new();
    let (mut rocks, _) = file_channel(c, &mut overflow_notes, "overflowCapacity", 100_000_000);
    rocks.set(
        "capacity",
        overflow.to_string(),
        if c.has("overflowCapacity") { "overflowCapacity" } else { "Flume's default overflowCapacity" },
    );
    // The transaction capacity is the overflow's (Flume's embedded file channel's, default 10000).
    let tx_value = rocks
        .opts
        .iter()
        .find(|o| o.name == "transaction_capacity")
        .and_then(|o| o.value.parse().ok())
        .unwrap_or(10_000);
    notes.extend(overflow_notes);
    match c.int("byteCapacity") {
        Some(0) | None => {}
        Some(b) => k.set("byte_capacity", b.to_string(), "byteCapacity (flumen counts bodies and headers)"),
    }
    let secs = c.int("overflowTimeout").unwrap_or(3);
    k.set(
        "overflow_timeout",
        dur_ms(secs * 1000),
        if c.has("overflowTimeout") { "overflowTimeout (seconds)" } else { "Flume's default overflowTimeout" },
    );
    if let Some(t) = c.int("overflowDeactivationThreshold") {
        if t <= 100 {
            k.set("overflow_deactivation_threshold", t.to_string(), "overflowDeactivationThreshold (percent)");
        } else {
            c.list(
                "overflowDeactivationThreshold",
                format!("value not understood: {t} is not a percentage (0 to 100)"),
            );
        }
    }
    k.set("overflow", rocks.render(0), "");
    (k, tx_value)
}

/// The channels of a source, checked against the agent's channel list.
fn source_channels(c: &Comp, tx: &BTreeMap<String, u64>) -> Option<Vec<String>> {
    let Some((v, _)) = c.get("channels") else {
        c.p.problem(c.first_line(), &c.key("channels"), format!("source {} has no channels", c.name));
        return None;
    };
    let chans = words(&v);
    let mut ok = !chans.is_empty();
    if chans.is_empty() {
        c.problem("channels", format!("source {} has no channels", c.name));
    }
    for ch in &chans {
        if !tx.contains_key(ch) {
            c.problem("channels", format!("unknown channel {ch} (not in the agent's channels)"));
            ok = false;
        }
    }
    ok.then_some(chans)
}

fn source(c: &Comp, tx: &BTreeMap<String, u64>) -> Vec<SourceOut> {
    let line = c.first_line();
    let Some((ty, _)) = c.get("type") else {
        c.p.problem(line.min(c.p.line(&c.base)), &c.key("type"), format!("source {} has no type", c.name));
        return Vec::new();
    };
    let Some(channels) = source_channels(c, tx) else { return Vec::new() };
    let mut notes = vec![format!("{}type = {ty}", c.base)];
    let mut what = Vec::new();
    let mut batch_props: Vec<&str> = vec!["batchSize"];
    let mut batch_default = None;
    let mut linger = None;
    let mut extra_interceptors: Vec<Vec<(Kind, String)>> = Vec::new();
    let lower = ty.to_ascii_lowercase();
    let mut kinds: Vec<(String, Kind)> = Vec::new();
    let mut k;
    match lower.as_str() {
        "netcat" | "org.apache.flume.source.netcatsource" => {
            k = Kind::new("Netcat");
            if let Some(b) = bind(c, "bind", None, &mut what) {
                k.set("bind", q(&b), "bind, port");
            }
            if let Some(n) = c.int("max-line-length") {
                k.set("max_line_length", n.to_string(), "max-line-length");
            }
            if let Some(b) = c.bool("ack-every-event") {
                k.set("ack_every_event", b.to_string(), "ack-every-event");
            }
            c.list("encoding", "flumen does it differently: bodies are the bytes of the line, never decoded");
        }
        "netcatudp" | "org.apache.flume.source.netcatudpsource" => {
            k = Kind::new("NetcatUdp");
            if let Some(b) = bind(c, "bind", None, &mut what) {
                k.set("bind", q(&b), "bind, port");
            }
            c.list("remoteAddressHeader", NO_COUNTERPART);
        }
        "seq" | "org.apache.flume.source.sequencegeneratorsource" => {
            k = Kind::new("SequenceGenerator");
            if let Some(n) = c.int("totalEvents") {
                k.set("total", n.to_string(), "totalEvents");
            }
            batch_default = Some(1);
        }
        "exec" | "org.apache.flume.source.execsource" => {
            k = Kind::new("Exec");
            match c.str("command") {
                Some(cmd) => k.set("command", q(&cmd), "command"),
                None => c.p.problem(line, &c.key("command"), format!("source {} (exec) needs command", c.name)),
            }
            if let Some(s) = c.str("shell") {
                k.set("shell", some_q(&s), "shell");
            }
            if let Some(b) = c.bool("restart") {
                k.set("restart", b.to_string(), "restart");
            }
            if let Some(ms) = ms_of(c, "restartThrottle") {
                k.set("restart_throttle", dur_ms(ms), "restartThrottle (ms)");
            }
            if let Some(b) = c.bool("logStdErr") {
                k.set("log_stderr", b.to_string(), "logStdErr");
            }
            charset(c, "charset");
            batch_default = Some(20);
            let ms = ms_of(c, "batchTimeout");
            linger = Some((
                dur_ms(ms.unwrap_or(3000)),
                if ms.is_some() { "batchTimeout (ms)".to_string() } else { "Flume's default batchTimeout".to_string() },
            ));
            notes.push(
                "The command runs in the topology file's folder (Flume ran it in the agent's working directory)."
                    .into(),
            );
        }
        "spooldir" | "org.apache.flume.source.spooldirectorysource" => {
            k = Kind::new("SpoolDir");
            match c.str("spoolDir") {
                Some(d) => k.set("dir", q(&d), "spoolDir"),
                None => c.p.problem(line, &c.key("spoolDir"), format!("source {} (spooldir) needs spoolDir", c.name)),
            }
            if let Some(s) = c.str("fileSuffix") {
                k.set("completed_suffix", q(&s), "fileSuffix");
            }
            if let Some((v, _)) = c.get("deletePolicy") {
                match v.to_ascii_lowercase().as_str() {
                    "never" => k.set("delete_policy", "Never".into(), "deletePolicy"),
                    "immediate" => k.set("delete_policy", "Immediate".into(), "deletePolicy"),
                    _ => c.list("deletePolicy", format!("value not understood: {v:?} (never or immediate)")),
                }
            }
            header_flag(c, &mut k, "fileHeader", "fileHeaderKey", "file", "file_header");
            header_flag(c, &mut k, "basenameHeader", "basenameHeaderKey", "basename", "basename_header");
            if let Some(s) = c.str("includePattern") {
                k.set("include_pattern", q(&s), "includePattern");
            }
            if let Some(s) = c.str("ignorePattern") {
                k.set("ignore_pattern", q(&s), "ignorePattern");
            }
            if let Some(s) = c.str("trackerDir") {
                k.set(
                    "tracker_dir",
                    q(&s),
                    "trackerDir (flumen keeps its progress.json there; Flume's tracker files are not read)",
                );
            }
            if let Some((v, _)) = c.get("trackingPolicy") {
                if !v.eq_ignore_ascii_case("rename") {
                    c.list(
                        "trackingPolicy",
                        format!("no counterpart: files are always renamed (or deleted), {v} is not possible"),
                    );
                }
            }
            if let Some((v, _)) = c.get("consumeOrder") {
                if !v.eq_ignore_ascii_case("oldest") {
                    c.list(
                        "consumeOrder",
                        format!("flumen does it differently: files are read oldest first, {v} is not possible"),
                    );
                }
            }
            if let Some(ms) = ms_of(c, "pollDelay") {
                k.set("poll_interval", dur_ms(ms), "pollDelay (ms)");
            }
            if c.bool("recursiveDirectorySearch") == Some(true) {
                c.list(
                    "recursiveDirectorySearch",
                    "no counterpart: only the folder itself is read, not its sub-folders",
                );
            }
            c.list("maxBackoff", "flumen does it differently: a full channel makes the source wait (back-pressure), there is no backoff to set");
            charset(c, "inputCharset");
            c.list("decodeErrorPolicy", "flumen does it differently: bodies are the bytes of the line, never decoded");
            if let Some((v, _)) = c.get("deserializer") {
                if !v.eq_ignore_ascii_case("line") {
                    c.p.missing_kind();
                    c.list(
                        "deserializer",
                        format!("no counterpart: flumen reads lines only, the {v} deserializer is not possible"),
                    );
                    notes.push(format!("No counterpart for the deserializer {v}: lines are read instead."));
                }
            }
            let max = c.int("deserializer.maxLineLength");
            k.set(
                "max_line_length",
                max.unwrap_or(2048).to_string(),
                if max.is_some() { "deserializer.maxLineLength" } else { "Flume's default deserializer.maxLineLength" },
            );
            notes.push(
                "A longer line is cut and flagged `truncated: \"true\"` (Flume put its rest in further events).".into(),
            );
            c.list(
                "deserializer.outputCharset",
                "flumen does it differently: bodies are the bytes of the line, never decoded",
            );
            c.list_many(&["bufferMaxLines", "bufferMaxLineLength"], "not needed: obsolete in Flume too");
            batch_default = Some(100);
        }
        "taildir" | "org.apache.flume.source.taildir.taildirsource" => {
            k = Kind::new("Taildir");
            let groups = c.get("filegroups").map(|(v, _)| words(&v)).unwrap_or_default();
            if groups.is_empty() {
                c.p.problem(line, &c.key("filegroups"), format!("source {} (TAILDIR) needs filegroups", c.name));
            }
            let mut map = Vec::new();
            for g in &groups {
                let sub = format!("filegroups.{g}");
                match c.get(&sub) {
                    Some((path, _)) => match regex_path_to_glob(&path) {
                        Ok(glob) => map.push(format!("{}: {}", q(g), q(&glob))),
                        Err(why) => {
                            c.list(&sub, format!("value not understood: {why}; the file group is left out"));
                        }
                    },
                    None => c.p.problem(
                        c.line("filegroups"),
                        &c.key(&sub),
                        format!("file group {g} has no path ({}{sub})", c.base),
                    ),
                }
                c.list_prefix(
                    &format!("headers.{g}."),
                    "flumen does it differently: `filegroup_header` puts the file group's name in a header; a Static interceptor adds a fixed header",
                );
            }
            if !map.is_empty() {
                k.set(
                    "filegroups",
                    format!("{{ {} }}", map.join(", ")),
                    "filegroups (regexes on the file name turned into globs)",
                );
            }
            match c.str("positionFile") {
                Some(pf) => k.set("position_file", q(&pf), "positionFile (Flume's positions are resumed)"),
                None => {
                    let home = std::env::var("HOME").unwrap_or_else(|_| "~".into());
                    k.set(
                        "position_file",
                        q(&format!("{home}/.flume/taildir_position.json")),
                        "Flume's default positionFile (~ as it was at import)",
                    );
                }
            }
            header_flag(c, &mut k, "fileHeader", "fileHeaderKey", "file", "file_header");
            if let Some(b) = c.bool("skipToEnd") {
                k.set("skip_to_end", b.to_string(), "skipToEnd");
            }
            if let Some(ms) = ms_of(c, "idleTimeout") {
                k.set("idle_timeout", dur_ms(ms), "idleTimeout (ms)");
            }
            if let Some(ms) = ms_of(c, "writePosInterval") {
                k.set("write_pos_interval", dur_ms(ms), "writePosInterval (ms)");
            }
            c.list("byteOffsetHeader", NO_COUNTERPART);
            c.list("maxBatchCount", "flumen does it differently: a pass reads at most batch_size lines of each file, so no file starves the others");
            c.list_many(
                &["backoffSleepIncrement", "maxBackoffSleep"],
                "flumen does it differently: files are checked every poll_interval when idle",
            );
            c.list("cachePatternMatching", "not needed: globs are matched on every poll");
            batch_default = Some(100);
        }
        "syslogtcp" | "org.apache.flume.source.syslogtcpsource" => {
            k = Kind::new("SyslogTcp");
            syslog_common(c, &mut k, &mut what, true, &mut notes);
        }
        "syslogudp" | "org.apache.flume.source.syslogudpsource" => {
            k = Kind::new("SyslogUdp");
            syslog_common(c, &mut k, &mut what, false, &mut notes);
        }
        "multiport_syslogtcp" | "org.apache.flume.source.multiportsyslogtcpsource" => {
            let ports = c.get("ports").map(|(v, _)| words(&v)).unwrap_or_default();
            if ports.is_empty() {
                c.p.problem(line, &c.key("ports"), format!("source {} (multiport_syslogtcp) needs ports", c.name));
            }
            let host = c.str("host");
            if host.is_none() {
                c.p.problem(line, &c.key("host"), format!("source {} needs host", c.name));
            }
            let mut base = Kind::new("SyslogTcp");
            let mut ignored = Vec::new();
            syslog_options(c, &mut base, true, &mut ignored);
            c.list_prefix("charset.", "flumen does it differently: bodies are the bytes of the message, never decoded");
            c.list_many(
                &["readBufferSize", "numProcessors"],
                "not needed: flumen reads each connection on its own task",
            );
            let port_header = c.str("portHeader");
            notes.push("flumen's SyslogTcp listens on one port: one source per port of `ports`.".into());
            batch_default = Some(100);
            for port in &ports {
                match port.parse::<u16>() {
                    Ok(n) => {
                        let mut kk = base.clone();
                        let h = host.clone().unwrap_or_default();
                        let b = if h.contains(':') { format!("[{h}]:{n}") } else { format!("{h}:{n}") };
                        kk.opts.insert(
                            0,
                            super::ron_text::Opt { name: "bind".into(), value: q(&b), from: "host, ports".into() },
                        );
                        kinds.push((format!("{}-{n}", c.name), kk));
                        let mut extra = Vec::new();
                        if let Some(h) = &port_header {
                            let mut s = Kind::new("Static");
                            s.set("key", q(h), "portHeader");
                            s.set("value", q(&n.to_string()), "the port");
                            s.set("preserve_existing", "false".into(), "");
                            extra.push((s, "portHeader".to_string()));
                        }
                        extra_interceptors.push(extra);
                    }
                    Err(_) => c.problem("ports", format!("not a port: {port:?}")),
                }
            }
            k = Kind::new("SyslogTcp");
        }
        "http" | "org.apache.flume.source.http.httpsource" => {
            k = Kind::new("Http");
            if let Some(b) = bind(c, "bind", Some("0.0.0.0"), &mut what) {
                k.set("bind", q(&b), if c.has("bind") { "bind, port" } else { "port (Flume's default bind 0.0.0.0)" });
            }
            match c.get("handler") {
                None => k.set("format", "FlumeJson".into(), "Flume's default handler JSONHandler"),
                Some((h, _)) if is_class(&h, "org.apache.flume.source.http.JSONHandler") => {
                    k.set("format", "FlumeJson".into(), "handler JSONHandler")
                }
                Some((h, _)) => {
                    c.p.missing_kind();
                    c.list("handler", format!("no counterpart: flumen's Http source reads Flume JSON, NDJSON, lines or its own events, not the {h} handler"));
                    c.list_prefix("handler.", "no counterpart: belongs to a handler flumen has not");
                    notes.push(format!("No counterpart for the handler {h}: the Flume JSON format stands in."));
                    k.set("format", "FlumeJson".into(), "stand-in for the handler");
                }
            }
            c.list_prefix("handler.", "no counterpart: JSONHandler has no options");
            for p in ["QueuedThreadPool.", "HttpConfiguration.", "SslContextFactory.", "ServerConnector."] {
                c.list_prefix(p, "no counterpart: a Jetty setting");
            }
            ssl(c);
            for s in ["enableSSL", "keystorePassword", "excludeProtocols"] {
                c.list(s, TLS_DIFFERENT);
            }
        }
        "org.apache.flume.source.kafka.kafkasource" | "kafka" => {
            k = Kind::new("Kafka");
            kafka_source(c, &mut k, &mut linger);
            batch_default = Some(1000);
        }
        "avro" | "org.apache.flume.source.avrosource" => {
            k = Kind::new("Avro");
            if let Some(b) = bind(c, "bind", None, &mut what) {
                k.set("bind", q(&b), "bind, port");
            }
            if let Some((v, _)) = c.get("compression-type") {
                match v.to_ascii_lowercase().as_str() {
                    "none" => k.set("compression_type", "None".into(), "compression-type"),
                    "deflate" => k.set("compression_type", "Deflate".into(), "compression-type"),
                    _ => c.list("compression-type", format!("value not understood: {v:?} (none or deflate)")),
                }
            }
            c.list(
                "threads",
                "flumen does it differently: each connection is a task; max_connections (default 1024) bounds them",
            );
            c.list_many(
                &["ipFilter", "ipFilterRules"],
                "no counterpart: flumen has no IP filter (use the firewall, or mutual TLS)",
            );
            ssl(c);
            batch_props.clear();
        }
        "thrift" | "org.apache.flume.source.thriftsource" => {
            k = Kind::new("Thrift");
            if let Some(b) = bind(c, "bind", None, &mut what) {
                k.set("bind", q(&b), "bind, port");
            }
            match c.get("protocol") {
                Some((v, _)) if v.eq_ignore_ascii_case("binary") => k.set("protocol", "Binary".into(), "protocol"),
                Some((v, _)) if v.eq_ignore_ascii_case("compact") => k.set("protocol", "Compact".into(), "protocol"),
                Some((v, _)) => c.list("protocol", format!("value not understood: {v:?} (binary or compact)")),
                None => {}
            }
            c.list(
                "threads",
                "flumen does it differently: each connection is a task; max_connections (default 1024) bounds them",
            );
            c.list_many(&["kerberos", "agent-principal", "agent-keytab"], KERBEROS);
            ssl(c);
            batch_props.clear();
        }
        _ => {
            c.p.missing_kind();
            c.list(
                "type",
                format!("no counterpart: flumen has no {ty} source; a SequenceGenerator that makes no event stands in"),
            );
            for key in c.p.under(&c.base) {
                let sub = &key[c.base.len()..];
                if !matches!(sub, "channels" | "type")
                    && !sub.starts_with("selector.")
                    && !sub.starts_with("interceptors")
                {
                    c.p.list(&key, "no counterpart: belongs to a source kind flumen has not");
                }
            }
            notes.push(format!(
                "No counterpart for the source type {ty}: a stand-in that makes no event keeps the flow valid."
            ));
            k = Kind::new("SequenceGenerator");
            k.set("total", "0".into(), "stand-in: no event");
            batch_props.clear();
        }
    }
    let _ = what;
    let (selector, sel_notes) = selector(c, &channels);
    notes.extend(sel_notes);
    let interceptors = interceptors(c);
    let mut batch_notes = Vec::new();
    let batch_size = if batch_props.is_empty() {
        batch(c, &[], None, &channels, tx, &mut batch_notes)
    } else {
        batch(c, &batch_props, batch_default, &channels, tx, &mut batch_notes)
    };
    notes.extend(batch_notes);
    if kinds.is_empty() {
        kinds.push((c.name.clone(), k));
        extra_interceptors.push(Vec::new());
    }
    kinds
        .into_iter()
        .zip(extra_interceptors)
        .map(|((name, kind), extra)| {
            let mut all = interceptors.clone();
            all.extend(extra);
            SourceOut {
                name,
                line,
                notes: notes.clone(),
                kind,
                channels: channels.clone(),
                selector: selector.clone(),
                interceptors: all,
                batch_size: batch_size.clone(),
                linger: linger.clone(),
            }
        })
        .collect()
}

/// `fileHeader = true` + `fileHeaderKey` → `file_header: Some(key)`.
fn header_flag(c: &Comp, k: &mut Kind, flag: &str, key: &str, default_key: &str, option: &str) {
    let on = c.bool(flag);
    let name = c.str(key);
    match on {
        Some(true) => {
            let n = name.unwrap_or_else(|| default_key.to_string());
            k.set(option, some_q(&n), format!("{flag}, {key}"));
        }
        _ => {
            if name.is_some() {
                c.list(key, format!("not needed: {flag} is not true"));
            }
        }
    }
}

fn charset(c: &Comp, sub: &str) {
    if let Some((v, _)) = c.peek_str(sub) {
        if v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8") {
            let _ = c.get(sub);
        } else {
            c.list(sub, format!("flumen does it differently: bodies are bytes, never decoded; {v} text stays {v}"));
        }
    }
}

impl Comp<'_> {
    fn peek_str(&self, sub: &str) -> Option<(String, usize)> {
        self.p.peek(&self.key(sub)).map(|(v, l)| (v.to_string(), l))
    }
}

fn ssl(c: &Comp) {
    for s in [
        "ssl",
        "keystore",
        "keystore-password",
        "keystore-type",
        "exclude-protocols",
        "include-protocols",
        "exclude-cipher-suites",
        "include-cipher-suites",
        "truststore",
        "truststore-password",
        "truststore-type",
        "trust-all-certs",
    ] {
        c.list(s, TLS_DIFFERENT);
    }
}

fn syslog_options(c: &Comp, k: &mut Kind, tcp: bool, _notes: &mut Vec<String>) {
    if let Some(n) = c.int("eventSize") {
        k.set("max_message_length", n.to_string(), "eventSize");
    }
    if let Some((v, _)) = c.get("keepFields") {
        match v.to_ascii_lowercase().as_str() {
            "none" | "false" => k.set("keep_fields", "false".into(), "keepFields"),
            "all" | "true" => k.set("keep_fields", "true".into(), "keepFields"),
            _ => c.list(
                "keepFields",
                format!(
                    "flumen does it differently: keep_fields keeps all header fields in the body or none, not {v:?}"
                ),
            ),
        }
    }
    c.list_many(&["clientIPHeader", "clientHostnameHeader"], NO_COUNTERPART);
    if tcp {
        ssl(c);
    }
}

fn syslog_common(c: &Comp, k: &mut Kind, what: &mut Vec<String>, tcp: bool, notes: &mut Vec<String>) {
    if let Some(b) = bind(c, "host", None, what) {
        k.set("bind", q(&b), "host, port");
    }
    syslog_options(c, k, tcp, notes);
    notes.push("Headers: facility, severity, timestamp, hostname, ... (Flume: Facility, Severity, timestamp, host); see Syslog messages in the README.".into());
}

const KAFKA_OWN_CONSUMER: &[&str] =
    &["enable.auto.commit", "auto.commit.enable", "enable.auto.offset.store", "group.id", "bootstrap.servers"];
const KAFKA_OWN_PRODUCER: &[&str] =
    &["enable.idempotence", "acks", "request.required.acks", "message.timeout.ms", "bootstrap.servers"];
const KAFKA_JAVA_ONLY: &[&str] = &[
    "key.deserializer",
    "value.deserializer",
    "key.serializer",
    "value.serializer",
    "ssl.truststore.location",
    "ssl.truststore.password",
    "ssl.truststore.type",
    "ssl.keystore.type",
    "ssl.disableTLSHostnameVerification",
    "partitioner.class",
    "interceptor.classes",
];

/// `kafka.consumer.*` / `kafka.producer.*` → `properties`, except the component's own and the
/// Java client's.
fn kafka_properties(c: &Comp, prefix: &str, own: &[&str]) -> Vec<String> {
    let mut props = Vec::new();
    for key in c.p.under(&c.key(prefix)) {
        let name = &key[c.base.len() + prefix.len()..];
        if own.contains(&name) || !c.p.is_unused(&key) {
            continue; // handled (or listed) by the caller
        }
        if KAFKA_JAVA_ONLY.contains(&name) {
            c.p.list(&key, "flumen does it differently: librdkafka takes no Java class or keystore; TLS is `tls: Some(TlsClient(ca:))` with PEM files");
            continue;
        }
        if let Some((v, _)) = c.p.get(&key) {
            props.push(format!("{}: {}", q(name), q(v)));
        }
    }
    props
}

fn kafka_source(c: &Comp, k: &mut Kind, linger: &mut Option<(String, String)>) {
    let brokers = c.str("kafka.bootstrap.servers");
    match brokers {
        Some(b) => k.set("brokers", q(&b), "kafka.bootstrap.servers"),
        None => c.p.problem(
            c.first_line(),
            &c.key("kafka.bootstrap.servers"),
            format!("source {} (Kafka) needs kafka.bootstrap.servers", c.name),
        ),
    }
    c.list(
        "zookeeperConnect",
        "no counterpart: Kafka clients no longer use ZooKeeper; kafka.bootstrap.servers is needed",
    );
    if let Some((re, _)) = c.get("kafka.topics.regex") {
        let re = if re.starts_with('^') { re } else { format!("^{re}") };
        k.set("topics", list(&[re]), "kafka.topics.regex");
        c.list("kafka.topics", "not needed: kafka.topics.regex overrides it, as in Flume");
        c.list("topic", "not needed: kafka.topics.regex overrides it, as in Flume");
    } else if let Some((t, _)) = c.get("kafka.topics").or_else(|| c.get("topic")) {
        let topics: Vec<String> = t.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
        k.set("topics", list(&topics), "kafka.topics");
    } else {
        c.p.problem(
            c.first_line(),
            &c.key("kafka.topics"),
            format!("source {} (Kafka) needs kafka.topics or kafka.topics.regex", c.name),
        );
    }
    match c.get("kafka.consumer.group.id").or_else(|| c.get("groupId")) {
        Some((g, _)) => k.set("group_id", q(&g), "kafka.consumer.group.id"),
        None => k.set("group_id", q("flume"), "Flume's default kafka.consumer.group.id"),
    }
    match c.get("kafka.consumer.auto.offset.reset") {
        Some((v, _)) if v.eq_ignore_ascii_case("earliest") => {
            k.set("auto_offset_reset", "Earliest".into(), "kafka.consumer.auto.offset.reset")
        }
        Some((v, _)) if v.eq_ignore_ascii_case("latest") => {
            k.set("auto_offset_reset", "Latest".into(), "kafka.consumer.auto.offset.reset")
        }
        Some((v, _)) => {
            c.list("kafka.consumer.auto.offset.reset", format!("value not understood: {v:?} (earliest or latest)"))
        }
        None => k.set("auto_offset_reset", "Latest".into(), "Flume's default (Kafka's auto.offset.reset = latest)"),
    }
    for own in KAFKA_OWN_CONSUMER {
        c.list(
            &format!("kafka.consumer.{own}"),
            "flumen does it differently: offsets are committed by the source after each put, never automatically",
        );
    }
    let props = kafka_properties(c, "kafka.consumer.", &["auto.offset.reset", "group.id"]);
    if !props.is_empty() {
        k.set("properties", format!("{{ {} }}", props.join(", ")), "kafka.consumer.*");
    }
    let ms = c.int("batchDurationMillis");
    *linger = Some((
        dur_ms(ms.unwrap_or(1000)),
        if ms.is_some() { "batchDurationMillis".into() } else { "Flume's default batchDurationMillis".into() },
    ));
    if c.bool("setTopicHeader") == Some(false) {
        c.list("setTopicHeader", "flumen does it differently: the topic is always in the header `topic`");
    }
    if let Some((h, _)) = c.get("topicHeader") {
        if h != "topic" {
            c.list("topicHeader", "flumen does it differently: the topic is always in the header `topic`");
        }
    }
    if c.bool("useFlumeEventFormat") == Some(true) {
        c.list(
            "useFlumeEventFormat",
            "flumen does it differently: headers travel as Kafka record headers, not in Flume's Avro event format",
        );
    }
    c.list_many(
        &["backoffSleepIncrement", "maxBackoffSleep"],
        "not needed: the consumer waits for records, it does not poll with backoff",
    );
    c.list("migrateZookeeperOffsets", "no counterpart: offsets are read from Kafka only");
}

/// The selector of a source.
fn selector(c: &Comp, channels: &[String]) -> (Option<(String, String)>, Vec<String>) {
    let mut notes = Vec::new();
    let known = |sub: &str, chans: Vec<String>| -> Vec<String> {
        let mut ok = Vec::new();
        for ch in chans {
            if channels.contains(&ch) {
                ok.push(ch);
            } else {
                c.problem(sub, format!("channel {ch} is not among the source's channels ({})", channels.join(" ")));
            }
        }
        ok
    };
    let ty = c.get("selector.type").map(|(v, _)| v);
    let lower = ty.as_deref().map(str::to_ascii_lowercase).unwrap_or_else(|| "replicating".into());
    match lower.as_str() {
        "replicating" | "org.apache.flume.channel.replicatingchannelselector" => {
            let optional =
                c.get("selector.optional").map(|(v, _)| known("selector.optional", words(&v))).unwrap_or_default();
            if optional.is_empty() {
                (None, notes)
            } else {
                (
                    Some((
                        format!("Replicating(optional: {})", list(&optional)),
                        "selector.type, selector.optional".into(),
                    )),
                    notes,
                )
            }
        }
        "multiplexing" | "org.apache.flume.channel.multiplexingchannelselector" => {
            let header = c.str("selector.header").unwrap_or_else(|| "flume.selector.header".into());
            let mut mapping = Vec::new();
            for key in c.p.under(&c.key("selector.mapping.")) {
                let value = &key[c.key("selector.mapping.").len()..];
                let sub = key[c.base.len()..].to_string();
                if let Some((v, _)) = c.p.get(&key) {
                    mapping.push(format!("{}: {}", q(value), list(&known(&sub, words(v)))));
                }
            }
            let mut optional = Vec::new();
            for key in c.p.under(&c.key("selector.optional.")) {
                let value = &key[c.key("selector.optional.").len()..];
                let sub = key[c.base.len()..].to_string();
                if let Some((v, _)) = c.p.get(&key) {
                    optional.push(format!("{}: {}", q(value), list(&known(&sub, words(v)))));
                }
            }
            let default =
                c.get("selector.default").map(|(v, _)| known("selector.default", words(&v))).unwrap_or_default();
            let mut text = format!("Multiplexing(\n    header: {},\n", q(&header));
            let _ = writeln!(text, "    mapping: {{ {} }},", mapping.join(", "));
            if !optional.is_empty() {
                let _ = writeln!(text, "    optional: {{ {} }},", optional.join(", "));
            }
            let _ = writeln!(text, "    default: {},", list(&default));
            text.push(')');
            let text = text.replace('\n', "\n            ");
            let from =
                if c.has("selector.header") { "selector.*" } else { "selector.* (Flume's default selector.header)" };
            (Some((text, from.into())), notes)
        }
        "load_balancing" | "org.apache.flume.channel.loadbalancingchannelselector" => {
            c.p.missing_kind();
            c.list(
                "selector.type",
                "no counterpart: flumen has no load-balancing channel selector; every event goes to the first channel",
            );
            c.list("selector.policy", "no counterpart: belongs to the load-balancing channel selector");
            notes.push("No counterpart for the load_balancing selector: a Multiplexing selector sends every event to the first channel.".into());
            let first = channels.first().cloned().into_iter().collect::<Vec<_>>();
            (
                Some((
                    format!(
                        "Multiplexing(header: \"flume.selector.header\", mapping: {{}}, default: {})",
                        list(&first)
                    ),
                    "stand-in".into(),
                )),
                notes,
            )
        }
        _ => {
            c.p.missing_kind();
            let ty = ty.unwrap_or_default();
            c.list("selector.type", format!("no counterpart: flumen has no {ty} selector; Replicating stands in"));
            c.list_prefix("selector.", "no counterpart: belongs to a selector flumen has not");
            notes.push(format!("No counterpart for the selector {ty}: Replicating (every channel) stands in."));
            (None, notes)
        }
    }
}

/// The interceptors of a source, in order.
fn interceptors(c: &Comp) -> Vec<(Kind, String)> {
    let names = c.get("interceptors").map(|(v, _)| words(&v)).unwrap_or_default();
    let mut out = Vec::new();
    for n in names {
        let ic = Comp::new(c.p, format!("{}interceptors.{n}.", c.base), &n);
        let Some((ty, _)) = ic.get("type") else {
            c.problem("interceptors", format!("interceptor {n} has no type ({}type)", ic.base));
            continue;
        };
        let from = |p: &str| format!("{n}: {p}");
        let mut k;
        match ty.as_str() {
            t if t.eq_ignore_ascii_case("timestamp")
                || t == "org.apache.flume.interceptor.TimestampInterceptor$Builder" =>
            {
                k = Kind::new("Timestamp");
                if let Some(h) = ic.str("headerName") {
                    k.set("header", q(&h), from("headerName"));
                }
                if let Some(b) = ic.bool("preserveExisting") {
                    k.set("preserve_existing", b.to_string(), from("preserveExisting"));
                }
            }
            t if t.eq_ignore_ascii_case("host") || t == "org.apache.flume.interceptor.HostInterceptor$Builder" => {
                k = Kind::new("Host");
                if let Some(h) = ic.str("hostHeader") {
                    k.set("header", q(&h), from("hostHeader"));
                }
                match ic.bool("useIP") {
                    Some(b) => k.set("use_ip", b.to_string(), from("useIP")),
                    None => k.set("use_ip", "true".into(), from("Flume's default useIP")),
                }
                if let Some(b) = ic.bool("preserveExisting") {
                    k.set("preserve_existing", b.to_string(), from("preserveExisting"));
                }
            }
            t if t.eq_ignore_ascii_case("static") || t == "org.apache.flume.interceptor.StaticInterceptor$Builder" => {
                k = Kind::new("Static");
                match ic.str("key") {
                    Some(v) => k.set("key", q(&v), from("key")),
                    None => k.set("key", q("key"), from("Flume's default key")),
                }
                match ic.str("value") {
                    Some(v) => k.set("value", q(&v), from("value")),
                    None => k.set("value", q("value"), from("Flume's default value")),
                }
                if let Some(b) = ic.bool("preserveExisting") {
                    k.set("preserve_existing", b.to_string(), from("preserveExisting"));
                }
            }
            t if t.eq_ignore_ascii_case("remove_header")
                || t == "org.apache.flume.interceptor.RemoveHeaderInterceptor$Builder" =>
            {
                k = Kind::new("RemoveHeader");
                if let Some(v) = ic.str("withName") {
                    k.set("name", some_q(&v), from("withName"));
                }
                if let Some(v) = ic.str("fromList") {
                    k.set("from_list", some_q(&v), from("fromList"));
                }
                if let Some(v) = ic.str("fromListSeparator") {
                    k.set("list_separator", q(&v), from("fromListSeparator"));
                }
                if let Some(v) = ic.str("matching") {
                    k.set("matching", some_q(&v), from("matching"));
                }
            }
            "org.apache.flume.sink.solr.morphline.UUIDInterceptor$Builder" => {
                k = Kind::new("Uuid");
                if let Some(h) = ic.str("headerName") {
                    k.set("header", q(&h), from("headerName"));
                }
                if let Some(b) = ic.bool("preserveExisting") {
                    k.set("preserve_existing", b.to_string(), from("preserveExisting"));
                }
                if let Some(p) = ic.str("prefix") {
                    k.set("prefix", q(&p), from("prefix"));
                }
            }
            t if t.eq_ignore_ascii_case("regex_filter")
                || t == "org.apache.flume.interceptor.RegexFilteringInterceptor$Builder" =>
            {
                k = Kind::new("RegexFilter");
                match ic.str("regex") {
                    Some(r) => k.set("regex", q(&r), from("regex")),
                    None => k.set("regex", q(".*"), from("Flume's default regex")),
                }
                if let Some(b) = ic.bool("excludeEvents") {
                    k.set("exclude_events", b.to_string(), from("excludeEvents"));
                }
            }
            t if t.eq_ignore_ascii_case("regex_extractor")
                || t == "org.apache.flume.interceptor.RegexExtractorInterceptor$Builder" =>
            {
                k = Kind::new("RegexExtractor");
                match ic.str("regex") {
                    Some(r) => k.set("regex", q(&r), from("regex")),
                    None => c.problem(
                        &format!("interceptors.{n}.type"),
                        format!("interceptor {n} (regex_extractor) needs regex"),
                    ),
                }
                let serializers = ic.get("serializers").map(|(v, _)| words(&v)).unwrap_or_default();
                let mut headers = Vec::new();
                for s in &serializers {
                    let sub = format!("serializers.{s}.");
                    if let Some((t, _)) = ic.peek_str(&format!("{sub}type")) {
                        if t.eq_ignore_ascii_case("default")
                            || t == "org.apache.flume.interceptor.RegexExtractorInterceptorPassThroughSerializer"
                        {
                            let _ = ic.get(&format!("{sub}type"));
                        } else {
                            ic.list(&format!("{sub}type"), format!("no counterpart: the value is passed through as matched, the {t} serializer is not possible"));
                            ic.list_prefix(
                                &format!("{sub}pattern"),
                                "no counterpart: belongs to a serializer flumen has not",
                            );
                        }
                    }
                    match ic.str(&format!("{sub}name")) {
                        Some(h) => headers.push(h),
                        None => c.problem(
                            &format!("interceptors.{n}.serializers"),
                            format!("serializer {s} has no name ({}{sub}name)", ic.base),
                        ),
                    }
                }
                if headers.is_empty() {
                    c.problem(
                        &format!("interceptors.{n}.type"),
                        format!("interceptor {n} (regex_extractor) needs serializers with names"),
                    );
                }
                k.set("headers", list(&headers), from("serializers.*.name"));
            }
            _ => {
                c.p.missing_kind();
                ic.list("type", format!("no counterpart: flumen has no {ty} interceptor; it is left out"));
                ic.list_prefix("", "no counterpart: belongs to an interceptor flumen has not");
                continue;
            }
        }
        out.push((k, format!("{}interceptors.{n} ({ty})", c.base)));
    }
    out
}

/// A Flume path regex (`/var/log/app/.*log.*`: a regex on the file name only) as a glob.
fn regex_path_to_glob(path: &str) -> Result<String, String> {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let mut glob = String::new();
    let mut chars = name.chars().peekable();
    while let Some(ch) = chars.next() {
        match ch {
            '.' => match chars.peek() {
                Some('*') => {
                    chars.next();
                    glob.push('*');
                }
                Some('+') => {
                    chars.next();
                    glob.push_str("?*");
                }
                _ => glob.push('?'),
            },
            '\\' => match chars.next() {
                Some(c) if "*?[]{}".contains(c) => {
                    return Err(format!("the regex {name:?} needs a glob escape for {c}"))
                }
                Some(c) if c.is_ascii_alphanumeric() => {
                    return Err(format!("the regex {name:?} uses \\{c}, which has no glob"))
                }
                Some(c) => glob.push(c),
                None => return Err(format!("the regex {name:?} ends in a backslash")),
            },
            '[' => {
                glob.push('[');
                for c in chars.by_ref() {
                    glob.push(if c == '^' { '!' } else { c });
                    if c == ']' {
                        break;
                    }
                }
            }
            '^' if glob.is_empty() => {}
            '$' if chars.peek().is_none() => {}
            '*' | '+' | '?' | '(' | ')' | '|' | '{' | '}' | '^' | '$' => {
                return Err(format!("the regex {name:?} has no glob of the same meaning ({ch})"));
            }
            c => glob.push(c),
        }
    }
    Ok(format!("{dir}{glob}"))
}

fn sink(c: &Comp, tx: &BTreeMap<String, u64>) -> Option<SinkOut> {
    let line = c.first_line();
    let Some((ty, _)) = c.get("type") else {
        c.p.problem(line.min(c.p.line(&c.base)), &c.key("type"), format!("sink {} has no type", c.name));
        return None;
    };
    let channel = match c.get("channel") {
        None => {
            c.p.problem(c.line("type"), &c.key("channel"), format!("sink {} has no channel", c.name));
            return None;
        }
        Some((ch, _)) if !tx.contains_key(&ch) => {
            c.problem("channel", format!("unknown channel {ch} (not in the agent's channels)"));
            return None;
        }
        Some((ch, _)) => ch,
    };
    let mut notes = vec![format!("{}type = {ty}", c.base)];
    let lower = ty.to_ascii_lowercase();
    let mut batch_props: Vec<&str> = vec!["batchSize"];
    let mut batch_default = Some(100);
    let mut k;
    match lower.as_str() {
        "logger" | "org.apache.flume.sink.loggersink" => {
            k = Kind::new("Logger");
            if let Some(n) = c.int("maxBytesToLog") {
                k.set("max_body_bytes", n.to_string(), "maxBytesToLog");
            }
            batch_default = None;
        }
        "null" | "org.apache.flume.sink.nullsink" => {
            k = Kind::new("Null");
        }
        "file_roll" | "org.apache.flume.sink.rollingfilesink" => {
            k = Kind::new("FileRoll");
            match c.str("sink.directory") {
                Some(d) => k.set("dir", q(&d), "sink.directory"),
                None => c.p.problem(
                    line,
                    &c.key("sink.directory"),
                    format!("sink {} (file_roll) needs sink.directory", c.name),
                ),
            }
            if let Some(s) = secs_of(c, "sink.rollInterval") {
                k.set("roll_interval", dur_ms(s), "sink.rollInterval (seconds)");
            }
            if let Some(p) = c.str("sink.pathManager.prefix") {
                k.set("prefix", q(&p), "sink.pathManager.prefix");
            }
            if let Some(e) = c.str("sink.pathManager.extension") {
                if !e.is_empty() {
                    k.set("extension", q(&format!(".{e}")), "sink.pathManager.extension (Flume adds the dot)");
                }
            }
            if let Some((pm, _)) = c.get("sink.pathManager") {
                if !pm.eq_ignore_ascii_case("default") {
                    c.list("sink.pathManager", format!("no counterpart: files are named <prefix><start ms>-<n><extension> as DEFAULT does, not as {pm}"));
                }
            }
            serializer(c, "sink.serializer", &mut notes);
            notes.push(
                "The file being written ends in .tmp until it rolls (in_use_suffix; Flume wrote under the final name)."
                    .into(),
            );
            batch_props = vec!["sink.batchSize", "batchSize"];
        }
        "hdfs" | "org.apache.flume.sink.hdfs.hdfseventsink" => {
            k = Kind::new("Hdfs");
            hdfs_sink(c, &mut k, &mut notes);
            batch_props = vec!["hdfs.batchSize"];
        }
        "avro" | "org.apache.flume.sink.avrosink" => {
            k = Kind::new("Avro");
            rpc_sink_target(c, &mut k);
            match c.get("compression-type") {
                Some((v, _)) if v.eq_ignore_ascii_case("deflate") => {
                    k.set("compression_type", "Deflate".into(), "compression-type")
                }
                Some((v, _)) if v.eq_ignore_ascii_case("none") => {
                    k.set("compression_type", "None".into(), "compression-type")
                }
                Some((v, _)) => c.list("compression-type", format!("value not understood: {v:?} (none or deflate)")),
                None => {}
            }
            if let Some(n) = c.int("compression-level") {
                k.set("compression_level", n.to_string(), "compression-level");
            }
            rpc_sink_timeouts(c, &mut k);
            c.list("reset-connection-interval", NO_COUNTERPART);
            c.list("maxIoWorkers", "not needed: flumen's sink is one task");
            ssl(c);
            batch_props = vec!["batch-size"];
        }
        "thrift" | "org.apache.flume.sink.thriftsink" => {
            k = Kind::new("Thrift");
            rpc_sink_target(c, &mut k);
            match c.get("protocol") {
                Some((v, _)) if v.eq_ignore_ascii_case("binary") => k.set("protocol", "Binary".into(), "protocol"),
                Some((v, _)) if v.eq_ignore_ascii_case("compact") => k.set("protocol", "Compact".into(), "protocol"),
                Some((v, _)) => c.list("protocol", format!("value not understood: {v:?} (binary or compact)")),
                None => {}
            }
            rpc_sink_timeouts(c, &mut k);
            c.list("connection-reset-interval", NO_COUNTERPART);
            c.list_many(&["kerberos", "client-principal", "client-keytab", "server-principal"], KERBEROS);
            ssl(c);
            batch_props = vec!["batch-size"];
        }
        "http" | "org.apache.flume.sink.http.httpsink" => {
            k = Kind::new("Http");
            match c.str("endpoint") {
                Some(u) => k.set("url", q(&u), "endpoint"),
                None => c.p.problem(line, &c.key("endpoint"), format!("sink {} (http) needs endpoint", c.name)),
            }
            k.set("format", "Lines".into(), "each event's body as a line (Flume posted the body alone)");
            let ms = c.int("requestTimeout");
            k.set(
                "timeout",
                dur_ms(ms.unwrap_or(5000)),
                if ms.is_some() { "requestTimeout (ms)" } else { "Flume's default requestTimeout" },
            );
            c.list("connectTimeout", "flumen does it differently: timeout covers connecting too");
            if let Some(a) = c.str("acceptHeader") {
                k.set("headers", format!("{{ \"Accept\": {} }}", q(&a)), "acceptHeader");
            }
            c.list(
                "contentTypeHeader",
                "flumen does it differently: the Content-Type is the format's (text/plain for Lines)",
            );
            let why = "flumen does it differently: 2xx commits, 429/5xx/connection errors are retried with backoff, another 4xx follows on_client_error (Rollback or DeadLetter(dir))";
            c.list_many(&["defaultBackoff", "defaultRollback", "defaultIncrementMetrics"], why);
            for p in ["backoff.", "rollback.", "incrementMetrics."] {
                c.list_prefix(p, why);
            }
            notes.push("Flume's HTTP sink posts one event per request: batch_size 1 does the same; raise it to post many lines at once.".into());
            batch_props = vec![];
            batch_default = Some(1);
        }
        "org.apache.flume.sink.kafka.kafkasink" | "kafka" => {
            k = Kind::new("Kafka");
            kafka_sink(c, &mut k);
            batch_props = vec!["flumeBatchSize", "kafka.flumeBatchSize", "batchSize"];
        }
        _ => {
            c.p.missing_kind();
            c.list(
                "type",
                format!("no counterpart: flumen has no {ty} sink; a FileRoll sink stands in (nothing is discarded)"),
            );
            c.list_prefix("", "no counterpart: belongs to a sink kind flumen has not");
            notes.push(format!(
                "No counterpart for the sink type {ty}: a FileRoll sink keeps the events in unconverted/{}.",
                c.name
            ));
            k = Kind::new("FileRoll");
            k.set("dir", q(&format!("unconverted/{}", c.name)), "stand-in");
            batch_props = vec![];
            batch_default = None;
        }
    }
    let chans = vec![channel.clone()];
    let mut batch_notes = Vec::new();
    let batch_size = if batch_props.is_empty() && batch_default.is_some() {
        batch(c, &["batch size"], batch_default, &chans, tx, &mut batch_notes).map(|(n, _)| (n, "as Flume".to_string()))
    } else {
        batch(c, &batch_props, batch_default, &chans, tx, &mut batch_notes)
    };
    notes.extend(batch_notes);
    Some(SinkOut { name: c.name.clone(), line, notes, kind: k, channel, batch_size })
}

fn serializer(c: &Comp, sub: &str, notes: &mut Vec<String>) {
    if let Some((v, _)) = c.get(sub) {
        if !v.eq_ignore_ascii_case("text") {
            c.p.missing_kind();
            c.list(
                sub,
                format!("no counterpart: bodies are written as text lines, the {v} serializer is not possible"),
            );
            notes.push(format!("No counterpart for the serializer {v}: bodies are written as text lines."));
        }
    }
    if c.bool(&format!("{sub}.appendNewline")) == Some(false) {
        c.list(&format!("{sub}.appendNewline"), "no counterpart: every body is followed by a newline");
    }
}

fn rpc_sink_target(c: &Comp, k: &mut Kind) {
    match c.str("hostname") {
        Some(h) => k.set("hostname", q(&h), "hostname"),
        None => c.p.problem(c.first_line(), &c.key("hostname"), format!("sink {} needs hostname", c.name)),
    }
    match c.int("port") {
        Some(p) if p <= 65535 => k.set("port", p.to_string(), "port"),
        Some(p) => c.problem("port", format!("port {p} is out of range (0 to 65535)")),
        None if !c.has("port") => c.p.problem(c.first_line(), &c.key("port"), format!("sink {} needs port", c.name)),
        None => {}
    }
}

fn rpc_sink_timeouts(c: &Comp, k: &mut Kind) {
    if let Some(ms) = c.int("connect-timeout") {
        k.set("connect_timeout", dur_ms(ms), "connect-timeout (ms)");
    }
    if let Some(ms) = c.int("request-timeout") {
        k.set("request_timeout", dur_ms(ms), "request-timeout (ms)");
    }
}

fn kafka_sink(c: &Comp, k: &mut Kind) {
    match c.str("kafka.bootstrap.servers").or_else(|| c.str("brokerList")) {
        Some(b) => k.set("brokers", q(&b), "kafka.bootstrap.servers"),
        None => c.p.problem(
            c.first_line(),
            &c.key("kafka.bootstrap.servers"),
            format!("sink {} (Kafka) needs kafka.bootstrap.servers", c.name),
        ),
    }
    let topic = c.str("kafka.topic").or_else(|| c.str("topic"));
    match topic {
        Some(t) if t.contains("%{") => {
            c.list(
                "kafka.topic",
                format!(
                    "value not understood: {t:?}: flumen takes a fixed topic, or a header naming it (topic_header)"
                ),
            );
            k.set(
                "topic",
                q("default-flume-topic"),
                "Flume's default kafka.topic (the header substitution is not carried)",
            );
        }
        Some(t) => k.set("topic", q(&t), "kafka.topic"),
        None => k.set("topic", q("default-flume-topic"), "Flume's default kafka.topic"),
    }
    k.set("key_header", some_q("key"), "Flume's Kafka sink keys records by the header `key`");
    let allow = c.bool("allowTopicOverride").unwrap_or(true);
    let header = c.str("topicHeader").unwrap_or_else(|| "topic".into());
    if allow {
        let from = if c.has("allowTopicOverride") || c.has("topicHeader") {
            "allowTopicOverride, topicHeader"
        } else {
            "Flume's default allowTopicOverride = true, topicHeader = topic"
        };
        k.set("topic_header", some_q(&header), from);
    }
    if c.peek_str("kafka.producer.acks").or_else(|| c.peek_str("requiredAcks")).is_some() {
        c.list("kafka.producer.acks", "flumen does it differently: the producer is always idempotent with acks=all");
        c.list("requiredAcks", "flumen does it differently: the producer is idempotent with acks=all");
    }
    for own in KAFKA_OWN_PRODUCER {
        c.list(
            &format!("kafka.producer.{own}"),
            "flumen does it differently: the sink's own setting (idempotent, acks=all, timeout)",
        );
    }
    let props = kafka_properties(c, "kafka.producer.", &[]);
    if !props.is_empty() {
        k.set("properties", format!("{{ {} }}", props.join(", ")), "kafka.producer.*");
    }
    if c.bool("useFlumeEventFormat") == Some(true) {
        c.list("useFlumeEventFormat", "flumen does it differently: headers go as Kafka record headers (headers: true), not in Flume's Avro event format");
    }
    c.list_many(
        &["defaultPartitionId", "partitionIdHeader"],
        "flumen does it differently: records with one key go to one partition (key_header)",
    );
}

fn hdfs_sink(c: &Comp, k: &mut Kind, notes: &mut Vec<String>) {
    match c.get("hdfs.path") {
        Some((path, _)) => {
            let mut p = path.clone();
            if let Some(rest) = p
                .strip_prefix("hdfs://")
                .or_else(|| p.strip_prefix("webhdfs://"))
                .or_else(|| p.strip_prefix("viewfs://"))
            {
                let at = rest.find('/').unwrap_or(rest.len());
                let local = if rest[at..].is_empty() { "/".to_string() } else { rest[at..].to_string() };
                c.list("hdfs.path", format!("flumen does it differently: it writes to a local or mounted file system; {} is left out and {local} is a local path (mount HDFS there, e.g. through its NFS gateway)", &path[..path.len() - rest.len() + at]));
                p = local;
            }
            let (escaped, unsupported) = hdfs_escapes(&p);
            if !unsupported.is_empty() {
                c.list(
                    "hdfs.path",
                    format!(
                        "value not understood: the escapes {} have no counterpart and are left out",
                        unsupported.join(" ")
                    ),
                );
            }
            k.set("path", q(&escaped), "hdfs.path");
        }
        None => c.p.problem(c.first_line(), &c.key("hdfs.path"), format!("sink {} (hdfs) needs hdfs.path", c.name)),
    }
    if let Some(v) = c.str("hdfs.filePrefix") {
        let (escaped, unsupported) = hdfs_escapes(&v);
        if !unsupported.is_empty() {
            c.list(
                "hdfs.filePrefix",
                format!(
                    "value not understood: the escapes {} have no counterpart and are left out",
                    unsupported.join(" ")
                ),
            );
        }
        k.set("file_prefix", q(&escaped), "hdfs.filePrefix");
    }
    if let Some(v) = c.str("hdfs.fileSuffix") {
        k.set("file_suffix", q(&v), "hdfs.fileSuffix");
    }
    if let Some(v) = c.str("hdfs.inUsePrefix") {
        k.set("in_use_prefix", q(&v), "hdfs.inUsePrefix");
    }
    if let Some(v) = c.str("hdfs.inUseSuffix") {
        k.set("in_use_suffix", q(&v), "hdfs.inUseSuffix");
    }
    if c.bool("hdfs.emptyInUseSuffix") == Some(true) {
        if k.has("in_use_prefix") {
            k.set("in_use_suffix", q(""), "hdfs.emptyInUseSuffix");
        } else {
            c.list(
                "hdfs.emptyInUseSuffix",
                "flumen does it differently: a file being written needs an in-use prefix or suffix; .tmp is kept",
            );
        }
    }
    if let Some(s) = secs_of(c, "hdfs.rollInterval") {
        k.set("roll_interval", dur_ms(s), "hdfs.rollInterval (seconds)");
    }
    if let Some(n) = c.int("hdfs.rollSize") {
        k.set("roll_size", n.to_string(), "hdfs.rollSize");
    }
    if let Some(n) = c.int("hdfs.rollCount") {
        k.set("roll_count", n.to_string(), "hdfs.rollCount");
    }
    if let Some(s) = secs_of(c, "hdfs.idleTimeout") {
        k.set("idle_timeout", dur_ms(s), "hdfs.idleTimeout (seconds)");
    }
    if let Some(b) = c.bool("hdfs.round") {
        k.set("round", b.to_string(), "hdfs.round");
    }
    if let Some(n) = c.int("hdfs.roundValue") {
        k.set("round_value", n.to_string(), "hdfs.roundValue");
    }
    if let Some((u, _)) = c.get("hdfs.roundUnit") {
        match u.to_ascii_lowercase().as_str() {
            "second" => k.set("round_unit", "Second".into(), "hdfs.roundUnit"),
            "minute" => k.set("round_unit", "Minute".into(), "hdfs.roundUnit"),
            "hour" => k.set("round_unit", "Hour".into(), "hdfs.roundUnit"),
            _ => c.list("hdfs.roundUnit", format!("value not understood: {u:?} (second, minute or hour)")),
        }
    }
    if let Some(z) = c.str("hdfs.timeZone") {
        k.set("time_zone", some_q(&z), "hdfs.timeZone");
    }
    if let Some(b) = c.bool("hdfs.useLocalTimeStamp") {
        k.set("use_local_time_stamp", b.to_string(), "hdfs.useLocalTimeStamp");
    }
    let file_type = c.get("hdfs.fileType").map(|(v, _)| v);
    let codec = c.peek_str("hdfs.codeC").map(|(v, _)| v);
    match file_type.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("datastream") => {
            k.set("format", "DataStream".into(), "hdfs.fileType");
            c.list("hdfs.codeC", "not needed: DataStream is not compressed (as in Flume)");
        }
        Some("compressedstream") => match codec.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("gzip") | Some("gzipcodec") | Some("org.apache.hadoop.io.compress.gzipcodec") => {
                let _ = c.get("hdfs.codeC");
                k.set("format", "Gzip".into(), "hdfs.fileType, hdfs.codeC");
            }
            Some("zstd") | Some("zstandardcodec") | Some("org.apache.hadoop.io.compress.zstandardcodec") => {
                let _ = c.get("hdfs.codeC");
                k.set("format", "Zstd".into(), "hdfs.fileType, hdfs.codeC");
            }
            Some(other) => {
                c.list(
                    "hdfs.codeC",
                    format!("no counterpart: flumen compresses with gzip or zstd, not {other}; gzip is written"),
                );
                k.set("format", "Gzip".into(), "hdfs.fileType (the codec has no counterpart)");
            }
            None => c.list("hdfs.fileType", "value not understood: CompressedStream needs hdfs.codeC"),
        },
        Some(_) | None => {
            let given = file_type.is_some();
            if given {
                c.list(
                    "hdfs.fileType",
                    "no counterpart: flumen writes text (DataStream, Gzip or Zstd), not Hadoop's SequenceFile",
                );
            } else {
                notes.push(
                    "Flume's default hdfs.fileType SequenceFile has no counterpart: text (DataStream) is written."
                        .into(),
                );
            }
            c.list("hdfs.codeC", "no counterpart: SequenceFile compression");
            c.list("hdfs.writeFormat", "no counterpart: belongs to SequenceFile");
            k.set(
                "format",
                "DataStream".into(),
                if given {
                    "hdfs.fileType has no counterpart"
                } else {
                    "Flume's default SequenceFile has no counterpart"
                },
            );
        }
    }
    c.list("hdfs.writeFormat", "not needed: belongs to SequenceFile");
    if let Some(n) = c.int("hdfs.maxOpenFiles") {
        k.set("max_open_files", n.to_string(), "hdfs.maxOpenFiles");
    }
    c.list_many(&["hdfs.kerberosPrincipal", "hdfs.kerberosKeytab", "hdfs.proxyUser"], KERBEROS);
    c.list_many(
        &[
            "hdfs.minBlockReplicas",
            "hdfs.threadsPoolSize",
            "hdfs.rollTimerPoolSize",
            "hdfs.closeTries",
            "hdfs.retryInterval",
            "hdfs.callTimeout",
        ],
        "not needed: a local file system has no HDFS client to tune",
    );
    serializer(c, "serializer", notes);
}

/// Flume's HDFS escapes in `s`: the text with those flumen lacks left out, and those.
fn hdfs_escapes(s: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut bad = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('{') => {
                out.push_str("%{");
                for c in chars.by_ref() {
                    out.push(c);
                    if c == '}' {
                        break;
                    }
                }
            }
            Some('[') => {
                let mut name = String::from("%[");
                for c in chars.by_ref() {
                    name.push(c);
                    if c == ']' {
                        break;
                    }
                }
                bad.push(name);
            }
            Some(e) if "YmdHMSyjs%".contains(e) => {
                out.push('%');
                out.push(e);
            }
            Some(e) => bad.push(format!("%{e}")),
            None => out.push('%'),
        }
    }
    (out, bad)
}

fn group(c: &Comp, sink_names: &[String]) -> Option<GroupOut> {
    let line = c.first_line();
    let mut notes = Vec::new();
    let Some((members, _)) = c.get("sinks").or_else(|| c.get("processor.sinks")) else {
        c.p.problem(line.min(c.p.line(&c.base)), &c.key("sinks"), format!("sink group {} has no sinks", c.name));
        return None;
    };
    let members = words(&members);
    for m in &members {
        if !sink_names.contains(m) {
            c.problem("sinks", format!("unknown sink {m} (not in the agent's sinks)"));
        }
    }
    let ty = c.get("processor.type").map(|(v, _)| v).unwrap_or_else(|| "default".into());
    let mut k;
    match ty.to_ascii_lowercase().as_str() {
        "failover" | "org.apache.flume.sink.failoversinkprocessor" => {
            k = Kind::new("Failover");
            let mut next = 0i64;
            let mut prio = Vec::new();
            for m in &members {
                let p = match c.signed(&format!("processor.priority.{m}")) {
                    Some(p) => p,
                    None => {
                        next -= 1;
                        notes.push(format!(
                            "{m} has no priority: {next}, after the sinks with one, as Flume gives in list order"
                        ));
                        next
                    }
                };
                prio.push(format!("{}: {p}", q(m)));
            }
            for key in c.p.under(&c.key("processor.priority.")) {
                let s = &key[c.key("processor.priority.").len()..];
                if !members.iter().any(|m| m == s) {
                    c.p.list(&key, format!("not needed: {s} is not in the group"));
                }
            }
            k.set("priority", format!("{{ {} }}", prio.join(", ")), "processor.priority.*");
            let ms = c.int("processor.maxpenalty");
            k.set(
                "max_penalty",
                dur_ms(ms.unwrap_or(30_000)),
                if ms.is_some() { "processor.maxpenalty (ms)" } else { "Flume's default processor.maxpenalty" },
            );
        }
        "load_balance" | "org.apache.flume.sink.loadbalancingsinkprocessor" => {
            k = Kind::new("LoadBalance");
            match c.get("processor.selector") {
                Some((s, _)) if s.eq_ignore_ascii_case("round_robin") => {
                    k.set("selector", "RoundRobin".into(), "processor.selector")
                }
                Some((s, _)) if s.eq_ignore_ascii_case("random") => {
                    k.set("selector", "Random".into(), "processor.selector")
                }
                Some((s, _)) => {
                    c.p.missing_kind();
                    c.list("processor.selector", format!("no counterpart: flumen picks sinks round_robin or random, not with {s}; round_robin stands in"));
                }
                None => {}
            }
            if let Some(b) = c.bool("processor.backoff") {
                k.set("backoff", b.to_string(), "processor.backoff");
            }
            if let Some(ms) = c.int("processor.selector.maxTimeOut") {
                k.set("max_backoff", dur_ms(ms), "processor.selector.maxTimeOut (ms)");
            }
        }
        "default" | "org.apache.flume.sink.defaultsinkprocessor" => {
            if members.len() > 1 {
                c.problem(
                    "processor.type",
                    format!("sink group {}: the default processor takes one sink, not {}", c.name, members.len()),
                );
            }
            let _ = c.get("processor.type");
            return None;
        }
        _ => {
            c.p.missing_kind();
            c.list("processor.type", format!("no counterpart: flumen has no {ty} sink processor; Failover stands in"));
            c.list_prefix("processor.", "no counterpart: belongs to a sink processor flumen has not");
            k = Kind::new("Failover");
        }
    }
    Some(GroupOut { name: c.name.clone(), line, notes, sinks: members, processor: k })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taildir_regexes_become_globs() {
        assert_eq!(regex_path_to_glob("/var/log/test1/example.log").unwrap(), "/var/log/test1/example?log");
        assert_eq!(regex_path_to_glob("/var/log/test2/.*log.*").unwrap(), "/var/log/test2/*log*");
        assert_eq!(regex_path_to_glob("/var/log/app/app\\.log").unwrap(), "/var/log/app/app.log");
        assert_eq!(regex_path_to_glob("/x/^app[^0-9]\\.log$").unwrap(), "/x/app[!0-9].log");
        assert!(regex_path_to_glob("/x/[^.]+").is_err());
        assert!(regex_path_to_glob("/x/(a|b).log").is_err());
    }

    #[test]
    fn hdfs_escapes_keep_what_flumen_has() {
        assert_eq!(hdfs_escapes("/flume/%{host}/%Y-%m-%d/%H%M/%S"), ("/flume/%{host}/%Y-%m-%d/%H%M/%S".into(), vec![]));
        assert_eq!(
            hdfs_escapes("/f/%[localhost]/%b/%t"),
            ("/f///".into(), vec!["%[localhost]".into(), "%b".into(), "%t".into()])
        );
    }
}
