//! The server side of TLS: what a source with `tls: Some(TlsServer(...))` accepts connections
//! with.
//!
//! A [`TlsEndpoint`] holds one rustls [`ServerConfig`] for the life of its source. Its
//! certificate comes from a resolver ([`ResolvesServerCert`]) and, with `client_ca`, client
//! certificates are checked by a verifier ([`WebPkiClientVerifier`]), both holding their material
//! behind a lock that [`TlsEndpoint::reload`] swaps: a re-read changes what *new* handshakes use,
//! while established connections (whose keys were agreed in their handshake) go on untouched.
//!
//! The files are re-read
//! - when the agent reloads (SIGHUP, or the topology file changed under `run --watch`): the agent
//!   calls [`reload_all`], which reaches every live endpoint of the process, so that a source the
//!   reload kept as it was re-reads its files too;
//! - when one of the files changes: each endpoint watches the folders of its files (notify) and
//!   re-reads them once no change came for [`FILE_DEBOUNCE`].
//!
//! A re-read that fails (a file unreadable, not PEM, a certificate expired, a key that is not the
//! certificate's) keeps the material in use, logs a warning naming the file and counts
//! `TlsReloadFailureCount`. A handshake that fails or takes longer than `handshake_timeout` is
//! logged and counted in `TlsHandshakeFailureCount`; the source goes on.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::{load_certified_key, load_roots, provider, TlsError, TlsServerConfig, VERSIONS};
use crate::metrics::SourceCounters;

/// How long the certificate files must stay unchanged after a change before they are re-read
/// (a certificate and its key are often replaced one after the other).
pub const FILE_DEBOUNCE: Duration = Duration::from_millis(500);

/// The TLS side of one source: its rustls configuration, the material it serves, the watch on
/// its files. Built when the source starts, dropped when it stops.
pub struct TlsEndpoint {
    config: TlsServerConfig,
    source: String,
    counters: Arc<SourceCounters>,
    resolver: Arc<CertResolver>,
    verifier: Option<Arc<ClientVerifier>>,
    server_config: Arc<ServerConfig>,
    /// The bytes of the files the material in use was read from.
    loaded: Mutex<Vec<Vec<u8>>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

impl std::fmt::Debug for TlsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsEndpoint").field("source", &self.source).field("config", &self.config).finish()
    }
}

/// Endpoints alive in this process, for [`reload_all`].
static LIVE: Mutex<Vec<Weak<TlsEndpoint>>> = Mutex::new(Vec::new());

/// Re-reads the files of every live [`TlsEndpoint`] of the process ([`TlsEndpoint::reload`]);
/// `why` is logged. Called by the agent on every reload.
pub fn reload_all(why: &str) {
    let live: Vec<Arc<TlsEndpoint>> = {
        let mut live = LIVE.lock().expect("the endpoint list lock is never poisoned");
        live.retain(|w| w.strong_count() > 0);
        live.iter().filter_map(Weak::upgrade).collect()
    };
    for endpoint in live {
        let _ = endpoint.reload(why);
    }
}

/// The certificate, key and client verifier read from a [`TlsServerConfig`]'s files.
struct Material {
    key: Arc<CertifiedKey>,
    verifier: Option<(Arc<dyn ClientCertVerifier>, &'static [DistinguishedName])>,
}

impl Material {
    fn load(config: &TlsServerConfig) -> Result<Material, TlsError> {
        let key = load_certified_key(&config.cert, &config.key)?;
        let verifier = match &config.client_ca {
            None => None,
            Some(ca) => {
                let roots = load_roots(ca)?;
                let hints = intern_hints(roots.subjects());
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::Verifier { path: ca.clone(), why: e.to_string() })?;
                Some((verifier, hints))
            }
        };
        Ok(Material { key, verifier })
    }
}

/// The files of `config` (certificate, key, client CA), read whole; `None` when one cannot be read.
fn file_bytes(config: &TlsServerConfig) -> Option<Vec<Vec<u8>>> {
    files(config).iter().map(|p| std::fs::read(p).ok()).collect()
}

fn files(config: &TlsServerConfig) -> Vec<PathBuf> {
    let mut files = vec![config.cert.clone(), config.key.clone()];
    files.extend(config.client_ca.clone());
    files
}

impl TlsEndpoint {
    /// Reads `config`'s files and builds the endpoint of source `source`, registered for
    /// [`reload_all`] and watching its files while it lives. Handshake failures and failed
    /// re-reads are counted in `counters`. With `count_refused_certificates`, client certificates
    /// the verifier refuses are counted as failed handshakes here (for a server, as `Http`'s, that
    /// does its handshakes itself and does not report failures).
    ///
    /// Must be called on a tokio runtime (the file watch runs a task on it).
    ///
    /// # Errors
    /// The first problem with the files ([`TlsError`], naming the file).
    pub fn new(
        config: &TlsServerConfig,
        source: &str,
        counters: Arc<SourceCounters>,
        count_refused_certificates: bool,
    ) -> Result<Arc<TlsEndpoint>, TlsError> {
        let bytes = file_bytes(config).unwrap_or_default();
        let material = Material::load(config)?;
        let resolver = Arc::new(CertResolver(RwLock::new(material.key)));
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|source| TlsError::Rustls { path: config.cert.clone(), source })?;
        let (builder, verifier) = match material.verifier {
            Some(current) => {
                let refused = count_refused_certificates.then(|| counters.clone());
                let verifier = Arc::new(ClientVerifier { current: RwLock::new(current), refused });
                (builder.with_client_cert_verifier(verifier.clone()), Some(verifier))
            }
            None => (builder.with_no_client_auth(), None),
        };
        let server_config = Arc::new(builder.with_cert_resolver(resolver.clone()));
        let endpoint = Arc::new(TlsEndpoint {
            config: config.clone(),
            source: source.to_string(),
            counters,
            resolver,
            verifier,
            server_config,
            loaded: Mutex::new(bytes),
            watcher: Mutex::new(None),
        });
        let mut live = LIVE.lock().expect("the endpoint list lock is never poisoned");
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&endpoint));
        drop(live);
        match watch(&endpoint) {
            Ok(w) => *endpoint.watcher.lock().expect("the watcher lock is never poisoned") = Some(w),
            Err(e) => tracing::warn!(
                source = %endpoint.source, error = %e,
                "cannot watch the certificate files; they are re-read on reload (SIGHUP) only"
            ),
        }
        Ok(endpoint)
    }

    /// The rustls configuration (its resolver and verifier follow every reload), for a server
    /// that does its handshakes itself.
    pub fn server_config(&self) -> ServerConfig {
        (*self.server_config).clone()
    }

    /// The configured handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        self.config.handshake_timeout
    }

    /// Re-reads the files. Nothing happens when they hold what was read last time. New material
    /// that loads is used by every later handshake; material that does not keeps the one in use,
    /// logs a warning naming the file and counts `TlsReloadFailureCount`.
    ///
    /// Answers whether the material changed.
    ///
    /// # Errors
    /// The problem with the new files (the old material stays in use).
    pub fn reload(&self, why: &str) -> Result<bool, TlsError> {
        let mut loaded = self.loaded.lock().expect("the loaded lock is never poisoned");
        let bytes = file_bytes(&self.config);
        if bytes.as_ref() == Some(&*loaded) {
            return Ok(false);
        }
        match Material::load(&self.config) {
            Ok(material) => {
                *self.resolver.0.write().expect("the certificate lock is never poisoned") = material.key;
                if let (Some(verifier), Some(current)) = (&self.verifier, material.verifier) {
                    *verifier.current.write().expect("the verifier lock is never poisoned") = current;
                }
                *loaded = bytes.unwrap_or_default();
                tracing::info!(
                    source = %self.source, cert = %self.config.cert.display(),
                    "re-read the TLS certificate ({why}): new handshakes use it; established connections go on"
                );
                Ok(true)
            }
            Err(e) => {
                self.counters.tls_reload_failure.inc();
                tracing::warn!(
                    source = %self.source, error = %e,
                    "TLS certificate not re-read ({why}); the one in use stays"
                );
                Err(e)
            }
        }
    }

    /// The TLS handshake on an accepted connection, within `handshake_timeout`. Answers the TLS
    /// stream and, with `client_subject_header`, that header with the client certificate's
    /// subject; `None` when the handshake failed or timed out (logged and counted in
    /// `TlsHandshakeFailureCount`; the connection is closed).
    pub async fn handshake(&self, stream: TcpStream) -> Option<(TlsStream<TcpStream>, Option<(String, String)>)> {
        let peer: Option<SocketAddr> = stream.peer_addr().ok();
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server_config.clone());
        let failed = |why: &dyn std::fmt::Display| {
            self.counters.tls_handshake_failure.inc();
            tracing::warn!(source = %self.source, peer = ?peer, "TLS handshake failed: {why}");
        };
        match tokio::time::timeout(self.config.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let subject = self.config.client_subject_header.as_ref().and_then(|header| {
                    let der = tls.get_ref().1.peer_certificates()?.first()?;
                    Some((header.clone(), super::subject(der)?))
                });
                Some((tls, subject))
            }
            Ok(Err(e)) => {
                failed(&e);
                None
            }
            Err(_) => {
                failed(&format_args!("not done within {:?} (handshake_timeout)", self.config.handshake_timeout));
                None
            }
        }
    }
}

/// Starts the watch on the folders of `endpoint`'s files: a change of one of them re-reads the
/// files once [`FILE_DEBOUNCE`] passed without another.
fn watch(endpoint: &Arc<TlsEndpoint>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let paths: BTreeSet<PathBuf> =
        files(&endpoint.config).iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect();
    let dirs: BTreeSet<PathBuf> =
        paths.iter().map(|p| p.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)).collect();
    let (changed_tx, mut changed) = tokio::sync::mpsc::channel::<()>(16);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !event.kind.is_access() && event.paths.iter().any(|p| paths.contains(p)) {
                let _ = changed_tx.try_send(());
            }
        }
    })?;
    for dir in &dirs {
        watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
    }
    // Ends when the watcher (holding the sender) is dropped with the endpoint.
    let endpoint = Arc::downgrade(endpoint);
    tokio::spawn(async move {
        while changed.recv().await.is_some() {
            while let Ok(Some(())) = tokio::time::timeout(FILE_DEBOUNCE, changed.recv()).await {}
            match endpoint.upgrade() {
                Some(endpoint) => {
                    let _ = endpoint.reload("a certificate file changed");
                }
                None => return,
            }
        }
    });
    Ok(watcher)
}

/// Serves the certificate in use to every handshake.
#[derive(Debug)]
struct CertResolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("the certificate lock is never poisoned").clone())
    }
}

/// Checks client certificates with the verifier in use (built from the `client_ca` last read).
struct ClientVerifier {
    current: RwLock<(Arc<dyn ClientCertVerifier>, &'static [DistinguishedName])>,
    /// Where refused certificates are counted, if they are counted here.
    refused: Option<Arc<SourceCounters>>,
}

impl std::fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientVerifier").finish_non_exhaustive()
    }
}

impl ClientVerifier {
    fn inner(&self) -> Arc<dyn ClientCertVerifier> {
        self.current.read().expect("the verifier lock is never poisoned").0.clone()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.current.read().expect("the verifier lock is never poisoned").1
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner().verify_client_cert(end_entity, intermediates, now);
        if let (Err(e), Some(counters)) = (&verified, &self.refused) {
            counters.tls_handshake_failure.inc();
            tracing::warn!(subject = ?super::subject(end_entity), error = %e, "client certificate refused");
        }
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner().supported_verify_schemes()
    }
}

/// The CA subjects a server names to its clients (so that a client with several certificates
/// picks one that chains to them), for the life of the process: a verifier hands them out by
/// reference, and a connection may still read the ones of a CA file replaced since. Each distinct
/// list is kept once (a CA file changed back and forth costs nothing more).
fn intern_hints(hints: Vec<DistinguishedName>) -> &'static [DistinguishedName] {
    static HINTS: Mutex<Vec<&'static [DistinguishedName]>> = Mutex::new(Vec::new());
    let mut kept = HINTS.lock().expect("the hints lock is never poisoned");
    let same =
        |a: &[DistinguishedName]| a.len() == hints.len() && a.iter().zip(&hints).all(|(x, y)| x.as_ref() == y.as_ref());
    if let Some(found) = kept.iter().find(|k| same(k)) {
        return found;
    }
    let leaked: &'static [DistinguishedName] = Box::leak(hints.into_boxed_slice());
    kept.push(leaked);
    leaked
}

/// The subject of the client certificate of an actix-web connection (the `conn` its
/// `on_connect` callback is given), when it is a TLS connection with a client certificate.
pub fn actix_peer_subject(conn: &dyn std::any::Any) -> Option<String> {
    let tls = conn.downcast_ref::<actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>>()?;
    let der = tls.get_ref().1.peer_certificates()?.first()?;
    super::subject(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct Ca {
        cert: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    fn ca(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        Ca { cert: params.self_signed(&key).unwrap(), key }
    }

    fn leaf(ca: &Ca, cn: &str, names: &[&str]) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn client_config(ca: &Ca, client: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.cert.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS).unwrap();
        let builder = builder.with_root_certificates(roots);
        Arc::new(match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                use rustls::pki_types::pem::PemObject;
                let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        })
    }

    /// A handshake with `endpoint` on a fresh connection: the server's certificate's subject.
    async fn connect(
        listener: &tokio::net::TcpListener,
        endpoint: &Arc<TlsEndpoint>,
        client: Arc<rustls::ClientConfig>,
    ) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, TlsStream<TcpStream>, String), String> {
        let addr = listener.local_addr().unwrap();
        let connecting = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            tokio_rustls::TlsConnector::from(client).connect(name, tcp).await.map_err(|e| e.to_string())
        };
        let accepting = async {
            let (tcp, _) = listener.accept().await.unwrap();
            endpoint.handshake(tcp).await
        };
        let (client, server) = tokio::join!(connecting, accepting);
        let client = client?;
        let server = server.ok_or("the server refused the handshake")?.0;
        let subject = super::super::subject(&client.get_ref().1.peer_certificates().unwrap()[0]).unwrap();
        Ok((client, server, subject))
    }

    #[actix_rt::test]
    async fn a_reload_changes_new_handshakes_and_keeps_established_connections() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("test CA");
        let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        let (pem, k) = leaf(&ca, "server one", &["localhost"]);
        std::fs::write(&cert, pem).unwrap();
        std::fs::write(&key, &k).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let (client_pem, client_key) = leaf(&ca, "edge-1", &[]);
        let config = TlsServerConfig {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: Some(ca_file),
            client_subject_header: Some("tls_subject".into()),
            handshake_timeout: Duration::from_secs(5),
        };
        let counters = Arc::new(SourceCounters::default());
        let endpoint = TlsEndpoint::new(&config, "r1", counters.clone(), false).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = client_config(&ca, Some((&client_pem, &client_key)));

        let (mut open_client, mut open_server, subject) = connect(&listener, &endpoint, client.clone()).await.unwrap();
        assert_eq!(subject, "CN=server one");
        assert!(
            connect(&listener, &endpoint, client_config(&ca, None)).await.is_err(),
            "a client certificate is needed"
        );
        assert_eq!(counters.tls_handshake_failure.get(), 1);

        // Unchanged files: nothing to do.
        assert!(!endpoint.reload("test").unwrap());
        // A key that is not the certificate's: the old material stays.
        let (pem2, k2) = leaf(&ca, "server two", &["localhost"]);
        std::fs::write(&cert, &pem2).unwrap();
        assert!(matches!(endpoint.reload("test"), Err(TlsError::KeyMismatch { .. })));
        assert_eq!(counters.tls_reload_failure.get(), 1);
        assert_eq!(connect(&listener, &endpoint, client.clone()).await.unwrap().2, "CN=server one");
        std::fs::write(&key, &k2).unwrap();
        assert!(endpoint.reload("test").unwrap());
        assert_eq!(connect(&listener, &endpoint, client.clone()).await.unwrap().2, "CN=server two");

        // The connection made before the reload still carries data both ways.
        open_client.write_all(b"still here\n").await.unwrap();
        let mut buf = [0u8; 11];
        open_server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still here\n");
        open_server.write_all(b"OK\n").await.unwrap();
        let mut ok = [0u8; 3];
        open_client.read_exact(&mut ok).await.unwrap();
        assert_eq!(&ok, b"OK\n");
    }
}
