//! What the `Kafka` source and sink share: client settings and librdkafka's logs.
//!
//! Both are librdkafka clients (through `rdkafka`). Settings flumen relies on for its guarantees
//! (idempotence, acknowledgements, manual offset commits) are fixed by the component and cannot be
//! overridden in `properties`; any other librdkafka property (`security.protocol`,
//! `compression.type`, `session.timeout.ms`, ...) passes through, as Flume's `kafka.producer.*` and
//! `kafka.consumer.*` do. librdkafka's own log lines and errors go to the agent's log.

use std::collections::BTreeMap;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::TopicPartitionList;

/// A librdkafka client configuration: `bootstrap.servers` = `brokers`, then `properties`, then
/// `fixed` (the component's own settings, which win).
pub fn client_config(brokers: &str, properties: &BTreeMap<String, String>, fixed: &[(&str, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in properties {
        config.set(key, value);
    }
    for (key, value) in fixed {
        config.set(*key, value);
    }
    config.set_log_level(if tracing::enabled!(tracing::Level::DEBUG) {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Info
    });
    config
}

/// Problems with `brokers` (a comma-separated list of `host:port`), with `properties` that try to
/// set one of `reserved` (or `bootstrap.servers`, which `brokers` says), and with properties
/// librdkafka does not know or whose value it refuses (checked without creating a client).
pub fn validate(brokers: &str, properties: &BTreeMap<String, String>, reserved: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    if brokers.trim().is_empty() {
        problems.push("brokers must name at least one host:port".into());
    }
    for broker in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        let port = broker.rsplit_once(':').map(|(_, port)| port.parse::<u16>());
        if !matches!(port, Some(Ok(p)) if p > 0) {
            problems.push(format!("broker {broker:?} is not host:port"));
        }
    }
    for key in properties.keys() {
        if key == "bootstrap.servers" {
            problems.push("properties: set the brokers with `brokers`, not bootstrap.servers".into());
        } else if reserved.contains(&key.as_str()) {
            problems.push(format!("properties: {key:?} is set by flumen for its delivery guarantee"));
        }
    }
    for (key, value) in properties {
        let mut one = ClientConfig::new();
        one.set(key, value);
        match one.create_native_config() {
            Ok(_) => {}
            Err(KafkaError::ClientConfig(_, description, _, _)) => {
                problems.push(format!("properties: {key:?} = {value:?}: {description}"))
            }
            Err(e) => problems.push(format!("properties: {key:?} = {value:?}: {e}")),
        }
    }
    problems
}

/// The client context of flumen's Kafka clients: sends librdkafka's logs, errors and failed offset
/// commits to the agent's log, naming the component.
pub struct Logged {
    /// The component's name in the topology.
    pub name: String,
}

impl ClientContext for Logged {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let name = &self.name;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(component = %name, facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(component = %name, facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(component = %name, facility, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(component = %name, facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(component = %self.name, %error, "librdkafka: {reason}");
    }
}

impl ConsumerContext for Logged {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(error) = result {
            // The events were committed to the channels; their offsets were not, so they will be
            // read again (at-least-once), never lost.
            tracing::warn!(component = %self.name, %error, partitions = offsets.count(), "offset commit failed; those events will be read again");
        }
    }
}
