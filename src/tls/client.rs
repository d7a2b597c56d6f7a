//! The rustls client configuration of a sink's `tls` option ([`TlsClientConfig`]).
//!
//! TLS 1.2 and 1.3 with the ring provider ([`super::provider`]); the server's certificate must
//! chain to the PEM CAs of `ca`, or to the system's trusted roots (rustls-native-certs) when `ca`
//! is `None`; `cert` and `key` are presented to servers that ask for a client certificate (mutual
//! TLS); `server_name` replaces the host of the URL as the name the server's certificate must be
//! valid for (the TLS SNI still carries the URL's host).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::{load_certified_key, load_certs, load_key, load_roots, provider, TlsClientConfig, TlsError, VERSIONS};

/// Where rustls-native-certs looks, for the error when it finds no root.
const SYSTEM_ROOTS: &str = "the system's trusted roots (/etc/ssl/certs)";

/// The root store of `ca`, or the system's trusted roots when `ca` is `None`.
///
/// # Errors
/// [`TlsError`] naming the CA file; [`TlsError::Missing`] when the system has no usable root.
pub fn roots(tls: &TlsClientConfig) -> Result<rustls::RootCertStore, TlsError> {
    if let Some(ca) = &tls.ca {
        return load_roots(ca);
    }
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "a system root could not be read");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError::Missing { path: PathBuf::from(SYSTEM_ROOTS), what: "certificate" });
    }
    Ok(roots)
}

/// The rustls client configuration of `tls`: versions, roots, client certificate, name override.
/// ALPN offers `http/1.1` only when `http` is set.
///
/// # Errors
/// The first [`TlsError`] about a file (unreadable, not PEM, expired, a key that is not the
/// certificate's).
pub fn client_config(tls: &TlsClientConfig, http: bool) -> Result<rustls::ClientConfig, TlsError> {
    let roots = Arc::new(roots(tls)?);
    let provider = provider();
    let path = || tls.ca.clone().unwrap_or_else(|| PathBuf::from(SYSTEM_ROOTS));
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(VERSIONS)
        .map_err(|source| TlsError::Rustls { path: path(), source })?;
    let builder = match &tls.server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Rustls { path: path(), source: rustls::Error::General(e.to_string()) })?;
            let name = ServerName::try_from(name.clone()).map_err(|e| TlsError::Rustls {
                path: path(),
                source: rustls::Error::General(format!("server_name {name:?}: {e}")),
            })?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NameOverride { inner, name }))
        }
    };
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            // Checks validity and that the key is the certificate's, naming the files.
            load_certified_key(cert, key)?;
            builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|source| TlsError::Rustls { path: key.clone(), source })?
        }
        _ => builder.with_no_client_auth(),
    };
    if http {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    Ok(config)
}

/// Verifies the server's certificate as webpki does, but for the configured `server_name`
/// instead of the host the client connects to.
#[derive(Debug)]
struct NameOverride {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
