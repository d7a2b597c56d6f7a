//! `Http`: events posted to an HTTP server, as Flume's HTTP source; also the receiving end of the
//! agent-to-agent hop (an `Http` sink of another agent posting `application/x-flumen-events`).
//!
//! Each `POST` to `path` carries a batch of events in one of the [`Format`]s, picked by the
//! request's `Content-Type` (the configured `format` when it names none of them). The answer is
//! `200` only once every event of the request was committed to the source's required channels;
//! `503` with `Retry-After` when a channel stayed full for `put_timeout`; `413` over
//! `max_body_bytes`; `400` with the parse error for a malformed body (counted in
//! `EventMalformedCount`); `401` without the right bearer token. The server (actix-web) runs
//! inside the source's `run` future, so it lives and restarts with the source actor, and it stops
//! (gracefully, letting puts in flight finish) when the agent stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::BytesMut;
use futures_util::StreamExt;
use serde::Deserialize;

use super::{SourceContext, SourceError};
use crate::channel::ChannelError;
use crate::codec::Format;
use crate::config::duration;
use crate::event::Event;
use crate::secret::Secret;
use crate::tls::server::{actix_peer_subject, TlsEndpoint};
use crate::tls::TlsServerConfig;

/// `Http(bind: "127.0.0.1:8080", path: "/", max_body_bytes: 10485760, format: FlumeJson,
/// bearer_token: None, put_timeout: "5s")`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to listen on (Flume's `bind` and `port`).
    pub bind: String,
    /// The URL path events are posted to; other paths answer `404`, other methods `405`.
    /// Default `"/"`.
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest request body in bytes; a larger one is answered `413 Payload Too Large`.
    /// Default 10485760 (10 MiB).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// The body format of requests whose `Content-Type` names none (see [`Format`]).
    /// Default `FlumeJson` (Flume's `JSONHandler`).
    #[serde(default)]
    pub format: Format,
    /// When set, requests must carry `Authorization: Bearer <token>`; others get `401`. A
    /// [`Secret`]: a literal, `"env:NAME"` or `"file:PATH"`. Default `None` (no authentication).
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// How long a request waits for room in a full channel before it is answered `503` with
    /// `Retry-After: 1`. Default `"5s"`.
    #[serde(default = "default_put_timeout", with = "duration")]
    pub put_timeout: Duration,
    /// Serve `https` only, with this certificate (and with `client_ca`, mutual TLS); see
    /// [`TlsServerConfig`]. With `client_subject_header`, the header is set on every event of a
    /// request (replacing one the client sent). Default `None` (plain `http`).
    #[serde(default, deserialize_with = "crate::tls::server_option")]
    pub tls: Option<TlsServerConfig>,
}

fn default_path() -> String {
    "/".into()
}
fn default_max_body_bytes() -> usize {
    10 * 1024 * 1024
}
fn default_put_timeout() -> Duration {
    Duration::from_secs(5)
}

impl HttpConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(why) = crate::config::check_address(&self.bind) {
            problems.push(format!("bind address {:?} is not host:port (e.g. \"127.0.0.1:8080\"): {why}", self.bind));
        }
        if !self.path.starts_with('/') {
            problems.push(format!("path {:?} must start with '/'", self.path));
        }
        if self.max_body_bytes == 0 {
            problems.push("max_body_bytes must be positive".into());
        }
        if self.put_timeout.is_zero() {
            problems.push("put_timeout must be positive".into());
        }
        match self.bearer_token.as_ref().map(Secret::reveal) {
            Some(Err(e)) => problems.push(format!("bearer_token: {e} (write None for no authentication)")),
            Some(Ok(t)) if t.expose().trim().is_empty() => {
                problems.push("bearer_token is blank (write None for no authentication)".into())
            }
            _ => {}
        }
        problems.extend(self.tls.iter().flat_map(TlsServerConfig::validate));
        problems
    }

    /// Resolves a `file:` bearer token against `base` (the topology file's folder).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if let Some(token) = self.bearer_token.as_mut() {
            token.resolve_paths(base);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
    }
}

/// What every request handler shares.
struct Receiver {
    config: HttpConfig,
    ctx: SourceContext,
    /// SHA-256 of the bearer token, resolved when the source starts.
    token: Option<TokenDigest>,
}

/// Serves `config.path` until the agent stops.
///
/// # Errors
/// When the address cannot be bound, or the server stops by itself.
pub async fn run(config: HttpConfig, ctx: SourceContext) -> Result<(), SourceError> {
    let token = match &config.bearer_token {
        Some(secret) => Some(TokenDigest::of(
            secret.reveal().map_err(|e| SourceError::Config(format!("bearer_token: {e}")))?.expose().as_bytes(),
        )),
        None => None,
    };
    let receiver = Arc::new(Receiver { config: config.clone(), ctx: ctx.clone(), token });
    let path = config.path.clone();
    let tls = config.tls.as_ref().map(|t| TlsEndpoint::new(t, &ctx.name, ctx.counters.clone(), true)).transpose()?;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::from(receiver.clone()))
            .service(web::resource(path.as_str()).route(web::post().to(receive)))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(config.put_timeout.as_secs() + 5);
    let server = match &tls {
        None => server.bind(&config.bind),
        Some(tls) => server
            .on_connect(|conn, extensions| {
                if let Some(subject) = actix_peer_subject(conn) {
                    extensions.insert(PeerSubject(subject));
                }
            })
            .tls_handshake_timeout(tls.handshake_timeout())
            .bind_rustls_0_23(&config.bind, tls.server_config()),
    };
    let server = server.map_err(SourceError::io(format!("bind {}", config.bind)))?.run();
    let handle = server.handle();
    tracing::info!(source = %ctx.name, bind = %config.bind, path = %config.path, "listening for HTTP posts");
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => {
            result.map_err(SourceError::io(format!("serve HTTP on {}", config.bind)))?;
            Err(SourceError::Stopped(format!("the HTTP server on {} stopped", config.bind)))
        }
        _ = ctx.stopping() => {
            // Stops accepting, and lets requests in flight finish (their puts commit).
            drop(handle.stop(true));
            let _ = server.await;
            Ok(())
        }
    }
}

/// The subject of a TLS connection's client certificate.
#[derive(Clone)]
struct PeerSubject(String);

/// Answers one `POST`: checks the token and size, reads and decodes the body, puts its events.
async fn receive(req: HttpRequest, mut payload: web::Payload, receiver: web::Data<Receiver>) -> HttpResponse {
    let Receiver { config, ctx, token } = receiver.get_ref();
    if let Some(token) = token {
        let given = req.headers().get(header::AUTHORIZATION).map_or(&b""[..], |v| v.as_bytes());
        let given = given.strip_prefix(b"Bearer ").unwrap_or(b"");
        if !token.matches(given) {
            tracing::warn!(source = %ctx.name, peer = ?req.peer_addr(), "request without the right bearer token");
            discard(&mut payload).await;
            return HttpResponse::Unauthorized()
                .force_close()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .body("missing or wrong bearer token\n");
        }
    }
    if ctx.is_stopping() {
        return unavailable("the agent is stopping");
    }
    let too_large = || {
        tracing::warn!(source = %ctx.name, limit = config.max_body_bytes, "request body over max_body_bytes");
        HttpResponse::PayloadTooLarge()
            .force_close()
            .body(format!("request body over {} bytes\n", config.max_body_bytes))
    };
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
        discard(&mut payload).await;
        return too_large();
    }
    let mut body = BytesMut::with_capacity(declared.map_or(0, |n| n as usize));
    while let Some(chunk) = payload.next().await {
        match chunk {
            Ok(chunk) if body.len() + chunk.len() > config.max_body_bytes => {
                discard(&mut payload).await;
                return too_large();
            }
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(e) => {
                tracing::warn!(source = %ctx.name, error = %e, "reading a request body failed");
                return HttpResponse::BadRequest().body(format!("reading the body failed: {e}\n"));
            }
        }
    }
    let format = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::from_content_type)
        .unwrap_or(config.format);
    let mut events = match format.decode(body.freeze()) {
        Ok(events) => events,
        Err(e) => {
            ctx.counters.malformed.inc();
            tracing::warn!(source = %ctx.name, ?format, error = %e, "malformed request rejected");
            return HttpResponse::BadRequest().body(format!("{e}\n"));
        }
    };
    let subject_header = config.tls.as_ref().and_then(|t| t.client_subject_header.as_ref());
    if let (Some(name), Some(PeerSubject(subject))) = (subject_header, req.conn_data::<PeerSubject>()) {
        for e in &mut events {
            e.headers.insert(name.clone(), subject.clone());
        }
    }
    let n = events.len();
    let deadline = Instant::now() + config.put_timeout;
    let mut events = events.into_iter();
    loop {
        let batch: Vec<Event> = events.by_ref().take(ctx.batch_size.max(1)).collect();
        if batch.is_empty() {
            break;
        }
        match ctx.put_until(batch, deadline).await {
            Ok(()) => {}
            Err(SourceError::Put(ChannelError::Full { capacity })) => {
                tracing::debug!(source = %ctx.name, capacity, "channel full: answering 503");
                return unavailable("a channel is full");
            }
            Err(SourceError::Put(ChannelError::Closed) | SourceError::Stopping) => {
                return unavailable("the channel is closed");
            }
            Err(e) => {
                tracing::error!(source = %ctx.name, error = %e, "put failed: answering 500");
                return HttpResponse::InternalServerError().body(format!("put failed: {e}\n"));
            }
        }
    }
    HttpResponse::Ok().content_type("application/json").body(format!("{{\"accepted\":{n}}}\n"))
}

/// Most bytes of a refused body read and thrown away before the answer.
const DISCARD_MAX: usize = 64 * 1024 * 1024;

/// Reads and throws away the rest of a refused body (at most [`DISCARD_MAX`] bytes, for at most
/// two seconds) before the answer and the close, so that the close does not reset the connection
/// (a TCP RST) while the client is still sending, which would lose the answer.
async fn discard(payload: &mut web::Payload) {
    let mut read = 0;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(chunk)) = payload.next().await {
            read += chunk.len();
            if read > DISCARD_MAX {
                break;
            }
        }
    })
    .await;
}

/// `503 Service Unavailable` with `Retry-After: 1` (seconds).
fn unavailable(why: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable().insert_header((header::RETRY_AFTER, "1")).body(format!("{why}: retry later\n"))
}

/// The SHA-256 digest of a bearer token. Tokens are compared through their digests, in constant
/// time (`subtle`), so that neither where a wrong token differs nor the right token's length shows
/// in the answer's timing.
struct TokenDigest([u8; 32]);

impl TokenDigest {
    fn of(token: &[u8]) -> Self {
        let mut out = [0; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token).as_ref());
        TokenDigest(out)
    }

    fn matches(&self, given: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(TokenDigest::of(given).0.ct_eq(&self.0))
    }
}
