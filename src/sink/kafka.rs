//! `Kafka`: produces each event as one Kafka record, as Flume's Kafka sink.
//!
//! The producer is idempotent with `acks=all` (librdkafka's `enable.idempotence=true`): the leader
//! acknowledges a record only once every in-sync replica has it, and broker-side retries never
//! duplicate or reorder records within a partition. A batch is enqueued in channel order, then the
//! sink waits for every delivery report of the batch; the take is committed only when all of them
//! succeeded. If any record failed (no broker reachable within `timeout`, a refused topic, ...)
//! the delivery fails, the take is rolled back and the whole batch is produced again later: at
//! least once, so records of a partly delivered batch may appear twice.
//!
//! The record's topic is `topic`, or the value of the `topic_header` header when that is set and
//! present; its key is the value of `key_header` when set and present (records with one key go to
//! one partition, in order); its value is the event body. With `headers: true` every event header
//! also travels as a Kafka record header, which a `Kafka` source turns back into event headers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Deserialize;

use super::{Sink, SinkError};
use crate::config::duration;
use crate::event::Event;
use crate::kafka::{client_config, validate, Logged, SaslConfig, Security};
use crate::metrics::SinkCounters;
use crate::tls::TlsClientConfig;

/// `Kafka(brokers: "127.0.0.1:9092", topic: "logs", key_header: None, topic_header: None,
/// headers: true, timeout: "30s", properties: {})`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, `host:port` separated by commas (Flume's `kafka.bootstrap.servers`).
    pub brokers: String,
    /// The topic records go to (Flume's `kafka.topic`).
    pub topic: String,
    /// A header whose value becomes the record key. Default `None`: records have no key and
    /// librdkafka spreads them over the partitions.
    #[serde(default)]
    pub key_header: Option<String>,
    /// A header whose value, when present and not empty, overrides `topic` for that event
    /// (Flume's `allowTopicOverride` with `topicHeader`). Default `None`: every record goes to
    /// `topic`. (A `Kafka` source sets a `topic` header; naming it here would send events back
    /// to the topic they came from.)
    #[serde(default)]
    pub topic_header: Option<String>,
    /// Whether event headers travel as Kafka record headers. Default `true`.
    #[serde(default = "default_true")]
    pub headers: bool,
    /// How long librdkafka may try to deliver one record (retrying, waiting for a leader) before
    /// its delivery report fails and the batch is rolled back (`message.timeout.ms`).
    /// Default `"30s"`.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Further librdkafka producer properties, e.g. `{"compression.type": "lz4",
    /// "linger.ms": "5"}`. `enable.idempotence`, `acks`, `message.timeout.ms` and
    /// `bootstrap.servers` are set by the sink. Default `{}`.
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

fn default_true() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

/// Properties the sink sets itself: its delivery guarantee rests on them.
const RESERVED: &[&str] = &["enable.idempotence", "acks", "request.required.acks", "message.timeout.ms"];

impl KafkaSinkConfig {
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
        if self.topic.trim().is_empty() {
            problems.push("topic must not be empty".into());
        }
        if self.timeout.as_millis() < 1 || self.timeout.as_millis() > i32::MAX as u128 {
            problems.push("timeout must be between 1ms and 24 days".into());
        }
        problems
    }
}

/// The Kafka sink: one idempotent producer.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    name: String,
    producer: FutureProducer<Logged>,
    counters: Arc<SinkCounters>,
}

impl KafkaSink {
    /// A sink producing to `config.brokers`. Connecting happens in the background.
    ///
    /// # Errors
    /// When librdkafka refuses the configuration (an unknown property, a bad value).
    pub fn new(name: &str, config: KafkaSinkConfig, counters: Arc<SinkCounters>) -> Result<Self, SinkError> {
        let fixed = [
            ("enable.idempotence", "true".to_string()),
            ("acks", "all".to_string()),
            ("message.timeout.ms", config.timeout.as_millis().to_string()),
        ];
        let producer = client_config(&config.brokers, &config.properties, config.security(), &fixed)
            .map_err(SinkError::Other)?
            .create_with_context(Logged { name: name.into() })
            .map_err(|e| SinkError::Other(format!("create the Kafka producer: {e}")))?;
        counters.connection_created.inc();
        Ok(KafkaSink { config, name: name.into(), producer, counters })
    }

    /// The topic of `event`: its `topic_header` value, or `topic`.
    fn topic_of<'e>(&'e self, event: &'e Event) -> &'e str {
        self.config
            .topic_header
            .as_ref()
            .and_then(|h| event.headers.get(h))
            .filter(|t| !t.is_empty())
            .map_or(self.config.topic.as_str(), String::as_str)
    }
}

impl Sink for KafkaSink {
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // Enqueue in channel order (one at a time, so a full local queue never reorders).
            let mut reports = Vec::with_capacity(events.len());
            for event in events {
                let mut record = FutureRecord::to(self.topic_of(event)).payload(&event.body[..]);
                if let Some(key) = self.config.key_header.as_ref().and_then(|h| event.headers.get(h)) {
                    record = record.key(key.as_str());
                }
                if self.config.headers && !event.headers.is_empty() {
                    let mut headers = OwnedHeaders::new_with_capacity(event.headers.len());
                    for (key, value) in &event.headers {
                        headers = headers.insert(Header { key, value: Some(value) });
                    }
                    record = record.headers(headers);
                }
                loop {
                    match self.producer.send_result(record) {
                        Ok(report) => {
                            reports.push(report);
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            record = back;
                            actix_rt::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err((e, _)) => {
                            self.counters.connection_failed.inc();
                            return Err(SinkError::Other(format!("enqueue a record: {e}")));
                        }
                    }
                }
            }
            // Every delivery report must succeed before the take may commit.
            let mut failed = 0usize;
            let mut first = None;
            for report in reports {
                match report.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => {
                        failed += 1;
                        first.get_or_insert_with(|| e.to_string());
                    }
                    Err(_) => {
                        failed += 1;
                        first.get_or_insert_with(|| "the producer was dropped".into());
                    }
                }
            }
            if failed > 0 {
                self.counters.connection_failed.inc();
                let first = first.unwrap_or_default();
                tracing::warn!(sink = %self.name, failed, events = events.len(), error = %first, "records not delivered; rolling the batch back");
                return Err(SinkError::Other(format!("{failed} of {} records not delivered: {first}", events.len())));
            }
            Ok(())
        })
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            // Every batch already waited for its reports; nothing is pending here.
            let producer = self.producer.clone();
            let _ = tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(5))).await;
            self.counters.connection_closed.inc();
            Ok(())
        })
    }
}
