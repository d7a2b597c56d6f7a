//! `Kafka`: events from Kafka topics, read by a member of a consumer group, as Flume's Kafka
//! source.
//!
//! Records are gathered into batches (up to the source's `batch_size`, or what arrived within its
//! `linger` after the first record) and put; only once the put committed does the source commit
//! the batch's offsets (the next offset of every partition in it) to the group. Automatic offset
//! commits are off. An agent that dies before that commit reads the batch again after its
//! restart, and a rebalance hands a partition over at its last committed offset, so the records a
//! member had read but not yet put are read again by the partition's next owner: duplicates are
//! possible, loss is not. (A durable channel keeps the promise across a crash of the agent
//! itself: a `Memory` channel loses what it holds, and its offsets are already committed.)
//!
//! Each event's body is the record value (empty for a null value). Its headers are the record's
//! headers (values as UTF-8, invalid bytes replaced), then `topic`, `partition`, `offset`,
//! `timestamp` (milliseconds since the epoch, when the record has one) and `key` (when the record
//! has one), as Flume's Kafka source sets them.

use std::collections::{BTreeMap, HashMap};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

use super::{SourceContext, SourceError};
use crate::event::{Event, Headers as EventHeaders};
use crate::kafka::{client_config, validate, Logged, SaslConfig, Security};
use crate::tls::TlsClientConfig;

/// `Kafka(brokers: "127.0.0.1:9092", topics: ["logs"], group_id: "flumen",
/// auto_offset_reset: Earliest, properties: {})`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port` separated by commas (Flume's `kafka.bootstrap.servers`).
    pub brokers: String,
    /// Topics to subscribe to (Flume's `kafka.topics`); a name starting with `^` is a regular
    /// expression matching topic names (Flume's `kafka.topics.regex`).
    pub topics: Vec<String>,
    /// The consumer group (Flume's `kafka.consumer.group.id`). Default `"flumen"`. Agents with the
    /// same group share the partitions between them.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// Where a group with no committed offset for a partition starts reading. Default `Earliest`
    /// (the whole retained partition: nothing already in the topic is skipped).
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
    /// Further librdkafka consumer properties, e.g. `{"session.timeout.ms": "10000"}`.
    /// `enable.auto.commit`, `enable.auto.offset.store`, `group.id`, `auto.offset.reset` and
    /// `bootstrap.servers` are set by the source. Default `{}`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// TLS to the brokers: `Some(TlsClient(ca: Some("ca.pem"), cert: None, key: None))` sets
    /// `security.protocol` `SSL` (`SASL_SSL` with `sasl`). Default `None` (plain TCP).
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// SASL authentication: `Some(Sasl(mechanism: ScramSha512, username: "flumen", password:
    /// "env:KAFKA_PASSWORD"))`. Default `None`.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
}

fn default_group() -> String {
    "flumen".into()
}

/// Where a consumer group without a committed offset starts (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum OffsetReset {
    /// At the oldest retained record.
    #[default]
    Earliest,
    /// At the next record produced.
    Latest,
}

/// Properties the source sets itself.
const RESERVED: &[&str] = &["enable.auto.commit", "enable.auto.offset.store", "group.id", "auto.offset.reset"];

impl KafkaSourceConfig {
    /// The `tls` and `sasl` options.
    pub fn security(&self) -> Security<'_> {
        Security { tls: self.tls.as_ref(), sasl: self.sasl.as_ref() }
    }

    /// Resolves the paths of `tls`, `sasl` and secret properties against `base`.
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        crate::kafka::resolve_paths(base, self.tls.as_mut(), self.sasl.as_mut(), &mut self.properties);
    }

    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = validate(&self.brokers, &self.properties, RESERVED);
        problems.extend(self.security().validate(&self.properties));
        if self.topics.is_empty() {
            problems.push("topics must name at least one topic".into());
        }
        for topic in &self.topics {
            if topic.trim().is_empty() {
                problems.push("a topic name must not be empty".into());
            } else if topic.starts_with('^') {
                if let Err(e) = regex::Regex::new(topic) {
                    problems.push(format!("topic pattern {topic:?} does not compile: {e}"));
                }
            }
        }
        if self.group_id.trim().is_empty() {
            problems.push("group_id must not be empty".into());
        }
        problems
    }
}

/// Consumes until the agent stops.
///
/// # Errors
/// When the consumer cannot be created or subscribed, a record cannot be read, or a put fails
/// for good; the supervisor then restarts the source with a fresh consumer, which starts again
/// at the committed offsets.
pub async fn run(config: KafkaSourceConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let fixed = [
        ("group.id", config.group_id.clone()),
        ("enable.auto.commit", "false".to_string()),
        ("enable.auto.offset.store", "false".to_string()),
        (
            "auto.offset.reset",
            match config.auto_offset_reset {
                OffsetReset::Earliest => "earliest",
                OffsetReset::Latest => "latest",
            }
            .to_string(),
        ),
    ];
    let consumer: StreamConsumer<Logged> =
        client_config(&config.brokers, &config.properties, config.security(), &fixed)
            .map_err(SourceError::Config)?
            .create_with_context(Logged { name: ctx.name.clone() })
            .map_err(SourceError::kafka("create the Kafka consumer"))?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(SourceError::kafka(format!("subscribe to {topics:?}")))?;
    tracing::info!(source = %ctx.name, brokers = %config.brokers, ?topics, group = %config.group_id, "consuming");
    let result = consume(&consumer, &ctx).await;
    // Closing leaves the group (a blocking call): off the agent's thread.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    result
}

/// Reads batches, puts them, and commits their offsets, until the agent stops.
async fn consume(consumer: &StreamConsumer<Logged>, ctx: &SourceContext) -> Result<(), SourceError> {
    loop {
        let first = tokio::select! {
            message = consumer.recv() => message,
            _ = ctx.stopping() => return Ok(()),
        };
        let mut batch = Vec::with_capacity(ctx.batch_size);
        let mut next = NextOffsets::default();
        if let Some(message) = readable(first)? {
            next.note(&message);
            batch.push(event_of(&message));
        }
        let deadline = tokio::time::Instant::now() + ctx.linger;
        while batch.len() < ctx.batch_size {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(message) => {
                    if let Some(message) = readable(message)? {
                        next.note(&message);
                        batch.push(event_of(&message));
                    }
                }
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        ctx.put(batch).await?;
        // The batch is in the channels: now, and only now, its offsets may be committed.
        // Asynchronously: a commit lost to a crash or a rebalance means the batch is read again.
        let offsets = next.list()?;
        if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(source = %ctx.name, error = %e, "offset commit not sent; these events will be read again");
        }
    }
}

/// A read record, `None` for a consumption error librdkafka recovers from by itself (a broker
/// down, a topic not created yet), which is logged.
///
/// # Errors
/// Any other error.
fn readable(message: Result<BorrowedMessage<'_>, KafkaError>) -> Result<Option<BorrowedMessage<'_>>, SourceError> {
    match message {
        Ok(message) => Ok(Some(message)),
        Err(KafkaError::MessageConsumption(code)) if !is_fatal(code) => {
            tracing::warn!(error = %code, "Kafka consumer: {code}; retrying");
            Ok(None)
        }
        Err(KafkaError::PartitionEOF(_)) => Ok(None),
        Err(e) => Err(SourceError::Kafka { what: "read from Kafka".into(), source: e }),
    }
}

/// Whether a consumption error means the consumer cannot go on.
fn is_fatal(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode as C;
    matches!(code, C::Fatal | C::TopicAuthorizationFailed | C::GroupAuthorizationFailed | C::InvalidGroupId)
}

/// The event of one record: its value as body; its headers, then where it came from.
fn event_of<M: Message>(message: &M) -> Event {
    let mut headers = EventHeaders::new();
    if let Some(kafka_headers) = message.headers() {
        for header in kafka_headers.iter() {
            let value = header.value.map(String::from_utf8_lossy).unwrap_or_default();
            headers.insert(header.key.to_string(), value.into_owned());
        }
    }
    headers.insert("topic".into(), message.topic().to_string());
    headers.insert("partition".into(), message.partition().to_string());
    headers.insert("offset".into(), message.offset().to_string());
    if let Some(ms) = message.timestamp().to_millis() {
        headers.insert("timestamp".into(), ms.to_string());
    }
    if let Some(key) = message.key() {
        headers.insert("key".into(), String::from_utf8_lossy(key).into_owned());
    }
    let body = message.payload().map(bytes::Bytes::copy_from_slice).unwrap_or_default();
    Event { headers, body }
}

/// The offset to commit per partition: one past the last record read from it.
#[derive(Default)]
struct NextOffsets(HashMap<(String, i32), i64>);

impl NextOffsets {
    fn note(&mut self, message: &BorrowedMessage<'_>) {
        let next = self.0.entry((message.topic().to_string(), message.partition())).or_insert(0);
        *next = (*next).max(message.offset() + 1);
    }

    fn list(&self) -> Result<TopicPartitionList, SourceError> {
        let mut list = TopicPartitionList::with_capacity(self.0.len());
        for ((topic, partition), next) in &self.0 {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(SourceError::kafka(format!("offsets of {topic}/{partition}")))?;
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
    use rdkafka::Timestamp;

    use super::*;

    #[test]
    fn a_record_becomes_an_event_with_its_origin_in_headers() {
        let line = "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating";
        let headers = OwnedHeaders::new()
            .insert(Header { key: "host", value: Some("edge-1") })
            .insert(Header { key: "topic", value: Some("spoofed") })
            .insert(Header { key: "raw", value: Some(&b"\xff\xfe"[..]) });
        let message = OwnedMessage::new(
            Some(line.as_bytes().to_vec()),
            Some(b"blk_38865049064139660".to_vec()),
            "hdfs-logs".into(),
            Timestamp::CreateTime(1_226_234_175_000),
            2,
            41_017,
            Some(headers),
        );
        let event = event_of(&message);
        assert_eq!(&event.body[..], line.as_bytes());
        let h = |k: &str| event.headers.get(k).map(String::as_str);
        assert_eq!(h("host"), Some("edge-1"));
        assert_eq!(h("topic"), Some("hdfs-logs"), "where the record came from wins over a record header");
        assert_eq!(h("partition"), Some("2"));
        assert_eq!(h("offset"), Some("41017"));
        assert_eq!(h("timestamp"), Some("1226234175000"));
        assert_eq!(h("key"), Some("blk_38865049064139660"));
        assert_eq!(h("raw"), Some("\u{fffd}\u{fffd}"));

        let tombstone = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, 7, None);
        let event = event_of(&tombstone);
        assert!(event.body.is_empty());
        assert_eq!(event.headers.get("key"), None);
        assert_eq!(event.headers.get("timestamp"), None);
        assert_eq!(event.headers.get("offset").map(String::as_str), Some("7"));
    }

    #[test]
    fn options_the_guarantee_rests_on_cannot_be_overridden() {
        let config = KafkaSourceConfig {
            brokers: "127.0.0.1:9092,kafka-2:9092".into(),
            topics: vec!["logs".into(), "^app-.*".into()],
            group_id: "flumen".into(),
            auto_offset_reset: OffsetReset::Earliest,
            properties: [("enable.auto.commit".to_string(), "true".to_string())].into(),
            tls: None,
            sasl: None,
        };
        assert_eq!(
            config.validate(),
            vec!["properties: \"enable.auto.commit\" is set by flumen for its delivery guarantee"]
        );
        let config = KafkaSourceConfig {
            brokers: "kafka".into(),
            topics: vec!["^(".into()],
            properties: BTreeMap::new(),
            ..config
        };
        let problems = config.validate();
        assert!(problems[0].contains("\"kafka\" is not host:port"), "{problems:?}");
        assert!(problems[1].contains("does not compile"), "{problems:?}");
    }
}
