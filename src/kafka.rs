//! What the `Kafka` source and sink share: client settings and librdkafka's logs.
//!
//! Both are librdkafka clients (through `rdkafka`). Settings flumen relies on for its guarantees
//! (idempotence, acknowledgements, manual offset commits) are fixed by the component and cannot be
//! overridden in `properties`; any other librdkafka property (`security.protocol`,
//! `compression.type`, `session.timeout.ms`, ...) passes through, as Flume's `kafka.producer.*` and
//! `kafka.consumer.*` do. librdkafka's own log lines and errors go to the agent's log.
//!
//! Security: the typed options `tls` ([`TlsClientConfig`]: `security.protocol` `SSL`,
//! `ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`, host name verification) and
//! `sasl` ([`SaslConfig`]: `sasl.mechanisms`, `sasl.username`, `sasl.password`, with
//! `SASL_PLAINTEXT` or, with `tls`, `SASL_SSL`), through librdkafka's OpenSSL and Cyrus SASL. The
//! values of secret-carrying properties ([`crate::secret::is_secret_property`]: `sasl.password`,
//! `ssl.key.password`, ...) may be `env:`/`file:` references and are never shown.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::TopicPartitionList;

use crate::secret::{is_secret_property, Secret};
use crate::tls::TlsClientConfig;

/// `Sasl(mechanism: ScramSha512, username: "flumen", password: "env:KAFKA_PASSWORD")`: SASL
/// authentication of a Kafka client (RFC 4616 PLAIN, RFC 7677 SCRAM).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(from = "SaslWritten")]
pub struct SaslConfig {
    /// The mechanism (`sasl.mechanisms`).
    pub mechanism: SaslMechanism,
    /// The user name (`sasl.username`).
    pub username: String,
    /// The password (`sasl.password`): a [`Secret`] (literal, `"env:NAME"` or `"file:PATH"`).
    pub password: Secret,
}

/// How a [`SaslConfig`] is written (an enum, so that `Some(Sasl(...))` reads with the topology's
/// `unwrap_variant_newtypes`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum SaslWritten {
    Sasl { mechanism: SaslMechanism, username: String, password: Secret },
}

impl From<SaslWritten> for SaslConfig {
    fn from(written: SaslWritten) -> Self {
        let SaslWritten::Sasl { mechanism, username, password } = written;
        SaslConfig { mechanism, username, password }
    }
}

/// A SASL mechanism librdkafka speaks.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN` (user name and password in the clear: use it with `tls`).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's name of the mechanism.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Properties the `tls` and `sasl` options set (so `properties` may not set them too).
pub const SECURITY_PROPERTIES: &[&str] = &[
    "security.protocol",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
    "sasl.mechanisms",
    "sasl.mechanism",
    "sasl.username",
    "sasl.password",
];

/// The security options of a Kafka source or sink.
#[derive(Debug, Clone, Copy, Default)]
pub struct Security<'a> {
    /// The `tls` option.
    pub tls: Option<&'a TlsClientConfig>,
    /// The `sasl` option.
    pub sasl: Option<&'a SaslConfig>,
}

impl Security<'_> {
    /// The librdkafka properties of `tls` and `sasl`: `security.protocol` (`SSL`,
    /// `SASL_PLAINTEXT`, `SASL_SSL`), the PEM locations, host name verification (`https`), the
    /// SASL mechanism, user and password (revealed here).
    ///
    /// # Errors
    /// When the password does not resolve (the message names the variable or file).
    pub fn properties(&self) -> Result<Vec<(&'static str, String)>, String> {
        let mut out = Vec::new();
        let protocol = match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => return Ok(out),
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        };
        out.push(("security.protocol", protocol.to_string()));
        if let Some(tls) = self.tls {
            let path = |p: &Path| p.to_string_lossy().into_owned();
            // "probe": OpenSSL's default paths and the usual system bundles.
            out.push(("ssl.ca.location", tls.ca.as_deref().map_or("probe".to_string(), path)));
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                out.push(("ssl.certificate.location", path(cert)));
                out.push(("ssl.key.location", path(key)));
            }
            out.push(("ssl.endpoint.identification.algorithm", "https".to_string()));
        }
        if let Some(sasl) = self.sasl {
            out.push(("sasl.mechanisms", sasl.mechanism.name().to_string()));
            out.push(("sasl.username", sasl.username.clone()));
            let password = sasl.password.reveal().map_err(|e| format!("sasl password: {e}"))?;
            out.push(("sasl.password", password.expose().to_string()));
        }
        Ok(out)
    }

    /// Problems with `tls` and `sasl`, and with `properties` that set what they set.
    pub fn validate(&self, properties: &BTreeMap<String, String>) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(tls) = self.tls {
            problems.extend(tls.validate());
            if tls.server_name.is_some() {
                problems.push(
                    "tls server_name is not supported by Kafka clients (librdkafka checks the broker's host name)"
                        .into(),
                );
            }
        }
        if let Some(sasl) = self.sasl {
            if sasl.username.is_empty() {
                problems.push("sasl username must not be empty".into());
            }
            if let Err(e) = sasl.password.check() {
                problems.push(format!("sasl password: {e}"));
            }
        }
        if self.tls.is_some() || self.sasl.is_some() {
            for key in properties.keys().filter(|k| SECURITY_PROPERTIES.contains(&k.as_str())) {
                problems.push(format!("properties: {key:?} is set by the tls and sasl options"));
            }
        }
        problems
    }
}

/// Resolves the paths of `tls`, of a `file:` SASL password and of `file:` values of secret
/// properties against `base` (the topology file's folder).
pub fn resolve_paths(
    base: &Path,
    tls: Option<&mut TlsClientConfig>,
    sasl: Option<&mut SaslConfig>,
    properties: &mut BTreeMap<String, String>,
) {
    if let Some(tls) = tls {
        tls.resolve_paths(base);
    }
    if let Some(sasl) = sasl {
        sasl.password.resolve_paths(base);
    }
    for (key, value) in properties.iter_mut() {
        if let (true, Some(path)) = (is_secret_property(key), value.strip_prefix("file:")) {
            *value = format!("file:{}", crate::config::resolve(base, Path::new(path)).display());
        }
    }
}

/// The value librdkafka gets for property `key`: a secret property's `env:`/`file:` reference
/// resolved, anything else as written.
///
/// # Errors
/// When a reference does not resolve.
fn property_value(key: &str, value: &str) -> Result<String, String> {
    if is_secret_property(key) {
        Secret::parse(value).reveal().map(|v| v.expose().to_string()).map_err(|e| format!("properties: {key:?}: {e}"))
    } else {
        Ok(value.to_string())
    }
}

/// A librdkafka client configuration: `bootstrap.servers` = `brokers`, then `properties` (secret
/// references resolved), then the `security` options, then `fixed` (the component's own
/// settings, which win).
///
/// # Errors
/// When a secret does not resolve (the message names the property, variable or file).
pub fn client_config(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    security: Security<'_>,
    fixed: &[(&str, String)],
) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in properties {
        config.set(key, property_value(key, value)?);
    }
    for (key, value) in security.properties()? {
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
    Ok(config)
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
        // A secret's value is never shown.
        let shown = if is_secret_property(key) { "***".to_string() } else { format!("{value:?}") };
        let value = match property_value(key, value) {
            Ok(v) => v,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let mut one = ClientConfig::new();
        one.set(key, value);
        match one.create_native_config() {
            Ok(_) => {}
            Err(KafkaError::ClientConfig(_, description, _, _)) => {
                problems.push(format!("properties: {key:?} = {shown}: {description}"))
            }
            Err(e) => problems.push(format!("properties: {key:?} = {shown}: {e}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ron::Options {
        ron::Options::default().with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES)
    }

    #[test]
    fn tls_and_sasl_map_to_librdkafka_properties_without_showing_the_password() {
        std::env::set_var("FLUMEN_KAFKA_UNIT_PASSWORD", "pw-77e1-marker");
        let sasl: Option<SaslConfig> = options()
            .from_str(
                r#"Some(Sasl(mechanism: ScramSha512, username: "flumen", password: "env:FLUMEN_KAFKA_UNIT_PASSWORD"))"#,
            )
            .unwrap();
        let tls: Option<TlsClientConfig> = options().from_str(r#"Some(TlsClient(ca: Some("/etc/ca.pem")))"#).unwrap();
        let security = Security { tls: tls.as_ref(), sasl: sasl.as_ref() };
        let props: BTreeMap<&str, String> = security.properties().unwrap().into_iter().collect();
        assert_eq!(props["security.protocol"], "SASL_SSL");
        assert_eq!(props["sasl.mechanisms"], "SCRAM-SHA-512");
        assert_eq!(props["sasl.username"], "flumen");
        assert_eq!(props["sasl.password"], "pw-77e1-marker");
        assert_eq!(props["ssl.ca.location"], "/etc/ca.pem");
        assert_eq!(props["ssl.endpoint.identification.algorithm"], "https");
        assert!(!format!("{sasl:?}").contains("marker"));
        let only_sasl = Security { tls: None, sasl: sasl.as_ref() };
        assert_eq!(only_sasl.properties().unwrap()[0], ("security.protocol", "SASL_PLAINTEXT".to_string()));
        let only_tls = Security { tls: tls.as_ref(), sasl: None };
        assert_eq!(only_tls.properties().unwrap()[0], ("security.protocol", "SSL".to_string()));
        assert!(Security::default().properties().unwrap().is_empty());

        // A property that sets what the options set is refused; a secret property is never shown.
        let properties: BTreeMap<String, String> = [
            ("security.protocol".to_string(), "SSL".to_string()),
            ("ssl.key.password".to_string(), "env:FLUMEN_KAFKA_UNIT_UNSET".to_string()),
        ]
        .into();
        let problems = only_sasl.validate(&properties);
        assert_eq!(problems, ["properties: \"security.protocol\" is set by the tls and sasl options"]);
        let problems = validate("127.0.0.1:9092", &properties, &[]);
        assert!(
            problems.iter().any(|p| p.contains("environment variable FLUMEN_KAFKA_UNIT_UNSET is not set")),
            "{problems:?}"
        );
        let literal: BTreeMap<String, String> = [("sasl.password".to_string(), "lit-0b1-marker".to_string())].into();
        let config = client_config("127.0.0.1:9092", &literal, Security::default(), &[]).unwrap();
        assert_eq!(config.get("sasl.password"), Some("lit-0b1-marker"));
        assert!(validate("127.0.0.1:9092", &literal, &[]).iter().all(|p| !p.contains("marker")));
    }
}
