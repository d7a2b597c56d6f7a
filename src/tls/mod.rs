//! TLS on network hops: the `tls` option of TCP and HTTP sources ([`TlsServerConfig`], written
//! `TlsServer(...)`) and of network sinks ([`TlsClientConfig`], written `TlsClient(...)`).
//!
//! rustls with the ring provider, TLS 1.2 and 1.3 only; certificates, keys and CA bundles are PEM
//! files, read when the topology is validated (so that an unreadable, expired or mismatched file is
//! a topology error at the option) and again when the component starts.
//!
//! A leaf module: it imports no component and no part of [`crate::topology`].

pub mod client;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::config::duration;

/// `TlsServer(cert: "server.pem", key: "server.key", client_ca: Some("ca.pem"),
/// client_subject_header: Some("tls_subject"), handshake_timeout: "10s")`: the `tls` option of a
/// source that accepts connections.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename = "TlsServer", deny_unknown_fields)]
pub struct TlsServerConfig {
    /// The server's certificate chain, PEM: its own certificate first, then intermediates.
    /// Relative to the topology file's folder.
    pub cert: PathBuf,
    /// The private key of `cert`, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, every client must present a certificate that chains to one of these PEM CA
    /// certificates (mutual TLS); others fail the handshake. Default `None` (no client
    /// certificate asked for).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// When set (with `client_ca`), each event gets this header holding the subject of the
    /// client's certificate (its attributes in certificate order, `, ` between them, e.g.
    /// `CN=edge-1, O=example`). Default `None`.
    #[serde(default)]
    pub client_subject_header: Option<String>,
    /// How long a client may take to complete the handshake before the connection is closed.
    /// Default `"10s"`.
    #[serde(default = "default_handshake_timeout", with = "duration")]
    pub handshake_timeout: Duration,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `TlsClient(ca: Some("ca.pem"), cert: Some("client.pem"), key: Some("client.key"),
/// server_name: None)`: the `tls` option of a sink that connects to a server.
///
/// Read through a one-variant enum, so that it can be written `tls: Some(TlsClient(...))` with the
/// topology's `unwrap_variant_newtypes` extension (which would take a struct inside `Some(...)` to
/// be written without its name).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(from = "TlsClientWritten")]
pub struct TlsClientConfig {
    /// PEM CA certificates the server's certificate must chain to. Default `None`: the system's
    /// trusted roots (`/etc/ssl/certs`, through rustls-native-certs).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// The client certificate chain presented to servers that ask for one (mutual TLS), PEM.
    /// Default `None`. Given with `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key of `cert`, PEM. Default `None`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the server's certificate must be valid for. Default `None`: the host of the
    /// sink's URL or address.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// How a [`TlsClientConfig`] is written: `TlsClient(ca: ..., cert: ..., key: ..., server_name: ...)`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
enum TlsClientWritten {
    TlsClient {
        #[serde(default)]
        ca: Option<PathBuf>,
        #[serde(default)]
        cert: Option<PathBuf>,
        #[serde(default)]
        key: Option<PathBuf>,
        #[serde(default)]
        server_name: Option<String>,
    },
}

impl From<TlsClientWritten> for TlsClientConfig {
    fn from(written: TlsClientWritten) -> Self {
        let TlsClientWritten::TlsClient { ca, cert, key, server_name } = written;
        TlsClientConfig { ca, cert, key, server_name }
    }
}

/// Why TLS material could not be used. Each names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not PEM or holds none of what was looked for.
    #[error("{} holds no PEM {what}", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// `"certificate"` or `"private key"`.
        what: &'static str,
    },
    /// The file's PEM could not be decoded.
    #[error("{} is not valid PEM: {why}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        why: String,
    },
    /// A certificate in the file is not a valid X.509 certificate.
    #[error("{} holds a certificate that is not valid X.509: {why}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        why: String,
    },
    /// The certificate is outside its validity period.
    #[error("the certificate in {} {when}", path.display())]
    Validity {
        /// The file.
        path: PathBuf,
        /// `"expired on 2026-01-01 00:00:00 UTC"` or `"is not valid before ..."`.
        when: String,
    },
    /// The private key is not the key of the certificate.
    #[error("the key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// No client certificate verifier could be built from the CA file.
    #[error("{}: cannot check client certificates with it: {why}", path.display())]
    Verifier {
        /// The CA file.
        path: PathBuf,
        /// What rustls said.
        why: String,
    },
    /// rustls refused the material (an unsupported key type, a CA that is not a CA, ...).
    #[error("{}: {source}", path.display())]
    Rustls {
        /// The file it is about.
        path: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// The crypto provider every flumen TLS endpoint uses: ring, with rustls's default cipher suites.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The protocol versions flumen speaks: TLS 1.3 and TLS 1.2.
pub const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Reads every certificate of a PEM file, in order.
///
/// # Errors
/// [`TlsError::Io`], [`TlsError::Pem`], or [`TlsError::Missing`] when it holds none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io { path: path.into(), source })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { path: path.into(), why: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::Missing { path: path.into(), what: "certificate" });
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// [`TlsError::Io`], [`TlsError::Pem`], or [`TlsError::Missing`] when it holds none.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io { path: path.into(), source })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing { path: path.into(), what: "private key" },
        e => TlsError::Pem { path: path.into(), why: e.to_string() },
    })
}

/// Checks that every certificate of `certs` (read from `path`) is valid at `now`.
///
/// # Errors
/// [`TlsError::Certificate`] for one that does not parse, [`TlsError::Validity`] for one that
/// expired or is not valid yet.
pub fn check_validity(path: &Path, certs: &[CertificateDer<'_>], now: SystemTime) -> Result<(), TlsError> {
    let now_secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    for der in certs {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| TlsError::Certificate { path: path.into(), why: e.to_string() })?;
        let validity = cert.validity();
        if validity.not_after.timestamp() < now_secs {
            return Err(TlsError::Validity { path: path.into(), when: format!("expired on {}", validity.not_after) });
        }
        if validity.not_before.timestamp() > now_secs {
            return Err(TlsError::Validity {
                path: path.into(),
                when: format!("is not valid before {}", validity.not_before),
            });
        }
    }
    Ok(())
}

/// The subject of a DER certificate as x509-parser shows it: its attributes in certificate order,
/// `, ` between them (`CN=edge-1, O=example`), for the `client_subject_header`; `None` when it
/// does not parse.
pub fn subject(der: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.subject().to_string())
}

/// A certificate chain and its key, read and checked: both files readable, the certificates valid
/// now, the key the certificate's own.
///
/// # Errors
/// The first [`TlsError`] found.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let chain = load_certs(cert)?;
    check_validity(cert, &chain, SystemTime::now())?;
    let der = load_key(key)?;
    let provider = provider();
    let certified = rustls::sign::CertifiedKey::from_der(chain, der, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch { cert: cert.into(), key: key.into() },
        source => TlsError::Rustls { path: key.into(), source },
    })?;
    Ok(Arc::new(certified))
}

/// A root store of the PEM CA certificates in `path`.
///
/// # Errors
/// When the file cannot be read or a certificate is refused.
pub fn load_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let certs = load_certs(path)?;
    check_validity(path, &certs, SystemTime::now())?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|source| TlsError::Rustls { path: path.into(), source })?;
    }
    Ok(roots)
}

/// Deserializes a source's `tls: Some(TlsServer(...))` as topologies are read (RON with
/// `unwrap_variant_newtypes`, under which the contents of `Some(...)` would otherwise have to be
/// the fields themselves).
///
/// # Errors
/// The decoder's.
pub fn server_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<TlsServerConfig>, D::Error> {
    /// `TlsServer(...)` one level down: a newtype takes the unwrapping, the struct keeps its name.
    #[derive(Deserialize)]
    #[serde(rename = "TlsServer")]
    struct Named(TlsServerConfig);
    Ok(Option::<Named>::deserialize(d)?.map(|n| n.0))
}

impl TlsServerConfig {
    /// Resolves the file paths against the topology file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        self.cert = crate::config::resolve(base, &self.cert);
        self.key = crate::config::resolve(base, &self.key);
        if let Some(ca) = self.client_ca.as_mut() {
            *ca = crate::config::resolve(base, ca);
        }
    }

    /// Problems with the option, each starting `tls` (so that it is shown at the option): files
    /// that cannot be read, certificates out of their validity period, a key that is not the
    /// certificate's.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = load_certified_key(&self.cert, &self.key) {
            problems.push(format!("tls cert: {e}"));
        }
        if let Some(ca) = &self.client_ca {
            if let Err(e) = load_roots(ca) {
                problems.push(format!("tls client_ca: {e}"));
            }
        }
        if self.client_subject_header.is_some() && self.client_ca.is_none() {
            problems.push(
                "tls client_subject_header needs client_ca (no client certificate is asked for without it)".into(),
            );
        }
        if matches!(&self.client_subject_header, Some(h) if h.is_empty()) {
            problems.push("tls client_subject_header must not be empty".into());
        }
        if self.handshake_timeout.is_zero() {
            problems.push("tls handshake_timeout must be positive".into());
        }
        problems
    }
}

impl TlsClientConfig {
    /// Resolves the file paths against the topology file's folder.
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [self.ca.as_mut(), self.cert.as_mut(), self.key.as_mut()].into_iter().flatten() {
            *path = crate::config::resolve(base, path);
        }
    }

    /// Problems with the option, each starting `tls`.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(ca) = &self.ca {
            if let Err(e) = load_roots(ca) {
                problems.push(format!("tls ca: {e}"));
            }
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                if let Err(e) = load_certified_key(cert, key) {
                    problems.push(format!("tls cert: {e}"));
                }
            }
            (Some(_), None) => problems.push("tls cert needs key".into()),
            (None, Some(_)) => problems.push("tls key needs cert".into()),
            (None, None) => {}
        }
        if let Some(name) = &self.server_name {
            if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
                problems.push(format!("tls server_name {name:?} is not a DNS name or IP address"));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn self_signed(dir: &Path, name: &str, params: rcgen::CertificateParams) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (write(dir, &format!("{name}.pem"), &cert.pem()), write(dir, &format!("{name}.key"), &key.serialize_pem()))
    }

    #[test]
    fn a_good_pair_loads_and_bad_material_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let params = || rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = self_signed(dir.path(), "good", params());
        load_certified_key(&cert, &key).unwrap();

        let mut old = params();
        old.not_before = rcgen::date_time_ymd(2020, 1, 1);
        old.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let (expired, expired_key) = self_signed(dir.path(), "expired", old);
        let e = load_certified_key(&expired, &expired_key).unwrap_err();
        assert!(matches!(e, TlsError::Validity { .. }), "{e}");
        assert!(e.to_string().contains("expired on"), "{e}");

        let (_, other_key) = self_signed(dir.path(), "other", params());
        let e = load_certified_key(&cert, &other_key).unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");

        let e = load_certified_key(&dir.path().join("absent.pem"), &key).unwrap_err();
        assert!(matches!(e, TlsError::Io { .. }), "{e}");
        let e = load_certified_key(&key, &key).unwrap_err();
        assert!(matches!(e, TlsError::Missing { what: "certificate", .. }), "{e}");
        let e = load_certified_key(&cert, &cert).unwrap_err();
        assert!(matches!(e, TlsError::Missing { what: "private key", .. }), "{e}");
    }

    #[test]
    fn options_parse_with_defaults_and_problems_start_with_tls() {
        let server: TlsServerConfig = ron::from_str(r#"TlsServer(cert: "a.pem", key: "a.key")"#).unwrap();
        assert_eq!(server.client_ca, None);
        assert_eq!(server.handshake_timeout, Duration::from_secs(10));
        let problems = server.validate();
        assert!(!problems.is_empty() && problems.iter().all(|p| p.starts_with("tls ")), "{problems:?}");
        let client: TlsClientConfig = ron::from_str("TlsClient()").unwrap();
        assert_eq!(client, TlsClientConfig::default());
        assert!(client.validate().is_empty());
        let options =
            ron::Options::default().with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES);
        let some: Option<TlsClientConfig> =
            options.from_str(r#"Some(TlsClient(ca: Some("ca.pem"), server_name: Some("a.example")))"#).unwrap();
        assert_eq!(some.unwrap().server_name.as_deref(), Some("a.example"));
        assert!(options.from_str::<Option<TlsClientConfig>>(r#"Some(TlsClient(cat: None))"#).is_err());
        let client: TlsClientConfig = ron::from_str(r#"TlsClient(cert: Some("c.pem"))"#).unwrap();
        assert_eq!(client.validate(), vec!["tls cert needs key".to_string()]);
    }
}
