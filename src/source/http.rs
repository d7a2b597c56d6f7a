//! `Http`: events posted to an HTTP server, as Flume's HTTP source; also the receiving end of the
//! agent-to-agent hop (an `Http` sink of another agent posting `application/x-flumen-events`).
//!
//! Each `POST` to `path` carries a batch of events in one of the [`Format`]s, picked by the
//! request's `Content-Type` (the configured `format` when it names none of them). The body is
//! checked whole before anything is put (a malformed body commits nothing), then decoded and put
//! `batch_size` events at a time, so a request holds one batch of decoded events, not all of them.
//! The answer is `200` only once every event of the request was committed to the source's
//! required channels; `503` with `Retry-After` when a channel stayed full for `put_timeout`; `413`
//! over `max_body_bytes` or `max_events_per_request`; `400` with the parse error for a malformed
//! body (counted in `EventMalformedCount`); `401` without the right bearer token. Every answer
//! after the body was read carries [`COMMITTED`] (`X-Flumen-Committed: N`): the number of leading
//! events of the body that were committed. A `503` or `500` after some batches committed says so
//! there and in its text, so a client resends only the events from `N` on (the `Http` sink does). The server (actix-web) runs
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
use crate::codec::{Format, COMMITTED};
use crate::config::duration;
use crate::secret::Secret;
use crate::tls::server::{actix_peer_subject, TlsEndpoint};
use crate::tls::TlsServerConfig;

/// `Http(bind: "127.0.0.1:8080", path: "/", max_body_bytes: 10485760,
/// max_events_per_request: 100000, format: FlumeJson, bearer_token: None, put_timeout: "5s",
/// max_connections: 1024, request_header_timeout: "5s", idle_timeout: "5m")`.
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
    /// Most events one request may hold; a body with more is answered `413` and nothing of it is
    /// put. Together with `max_body_bytes` it bounds what a request decodes: decoded bodies and
    /// headers never take more bytes than the body they come from, and each event costs about 80
    /// bytes more (an empty line is one event). Default 100000.
    #[serde(default = "default_max_events_per_request")]
    pub max_events_per_request: usize,
    /// Most connections open at once. Over it the server stops accepting until one closes (the
    /// next ones wait in the listen backlog). Default 1024.
    #[serde(default = "super::conn_limits::default_max_connections")]
    pub max_connections: usize,
    /// How long a client may take to send a request's line and headers, from the connection or
    /// the end of its previous request; slower ones are answered `408` and closed (against
    /// slowloris clients). Default `"5s"`.
    #[serde(default = "default_request_header_timeout", with = "duration")]
    pub request_header_timeout: Duration,
    /// How long a connection may send nothing: an open keep-alive connection between requests,
    /// and a request body between two of its chunks (answered `408`). Default `"5m"`.
    #[serde(default = "super::conn_limits::default_idle_timeout", with = "duration")]
    pub idle_timeout: Duration,
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
fn default_max_events_per_request() -> usize {
    100_000
}
fn default_request_header_timeout() -> Duration {
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
        if self.max_events_per_request == 0 {
            problems.push("max_events_per_request must be positive".into());
        }
        if self.request_header_timeout.is_zero() {
            problems.push("request_header_timeout must be positive".into());
        }
        problems.extend(super::conn_limits::check(self.max_connections, self.idle_timeout, usize::MAX));
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
    .max_connections(config.max_connections)
    .client_request_timeout(config.request_header_timeout)
    .keep_alive(config.idle_timeout)
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
        return unavailable("the agent is stopping", 0, 0);
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
    loop {
        let Ok(chunk) = tokio::time::timeout(config.idle_timeout, payload.next()).await else {
            tracing::warn!(source = %ctx.name, peer = ?req.peer_addr(), idle_timeout = ?config.idle_timeout, "request body stalled: closing");
            return HttpResponse::RequestTimeout()
                .force_close()
                .body(format!("no body bytes for {}\n", humantime::format_duration(config.idle_timeout)));
        };
        let Some(chunk) = chunk else { break };
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
    let subject_header = config.tls.as_ref().and_then(|t| t.client_subject_header.as_ref());
    let subject = match (subject_header, req.conn_data::<PeerSubject>()) {
        (Some(name), Some(PeerSubject(subject))) => Some((name, subject)),
        _ => None,
    };
    put_body(format, body.freeze(), subject, config, ctx).await
}

/// Checks, decodes and puts one request body; answers how it went.
///
/// A first pass decodes the whole body and keeps only its first batch: a malformed body, or one
/// over `max_events_per_request`, is refused before anything is put. A body of at most one batch
/// is then put as it is; a longer one is decoded again, a batch at a time, each put before the
/// next is decoded. With `subject` (a header name and the client certificate's subject), every
/// event gets that header.
async fn put_body(
    format: Format,
    body: bytes::Bytes,
    subject: Option<(&String, &String)>,
    config: &HttpConfig,
    ctx: &SourceContext,
) -> HttpResponse {
    let batch_size = ctx.batch_size.max(1);
    let mut first = Vec::with_capacity(batch_size.min(4096));
    let mut total = 0usize;
    for event in format.decoder(body.clone()) {
        match event {
            Ok(_) if total == config.max_events_per_request => {
                tracing::warn!(source = %ctx.name, limit = config.max_events_per_request, "request over max_events_per_request");
                return HttpResponse::PayloadTooLarge()
                    .insert_header((COMMITTED, "0"))
                    .body(format!("request body holds more than {} events\n", config.max_events_per_request));
            }
            Ok(event) => {
                if first.len() < batch_size {
                    first.push(event);
                }
                total += 1;
            }
            Err(e) => {
                ctx.counters.malformed.inc();
                tracing::warn!(source = %ctx.name, ?format, error = %e, "malformed request rejected");
                return HttpResponse::BadRequest().insert_header((COMMITTED, "0")).body(format!("{e}\n"));
            }
        }
    }
    let deadline = Instant::now() + config.put_timeout;
    let mut committed = 0usize;
    let mut rest = (total > first.len()).then(|| format.decoder(body).skip(first.len()));
    let mut batch = first;
    while !batch.is_empty() {
        if let Some((name, value)) = subject {
            for e in &mut batch {
                e.headers.insert(name.clone(), value.clone());
            }
        }
        let n = batch.len();
        match ctx.put_until(batch, deadline).await {
            Ok(()) => committed += n,
            Err(SourceError::Put(ChannelError::Full { capacity })) => {
                tracing::debug!(source = %ctx.name, capacity, committed, total, "channel full: answering 503");
                return unavailable("a channel is full", committed, total);
            }
            Err(SourceError::Put(ChannelError::Closed) | SourceError::Stopping) => {
                return unavailable("the channel is closed", committed, total);
            }
            Err(e) => {
                tracing::error!(source = %ctx.name, error = %e, committed, total, "put failed: answering 500");
                return HttpResponse::InternalServerError()
                    .insert_header((COMMITTED, committed.to_string()))
                    .body(format!("put failed: {e}{}\n", committed_text(committed, total)));
            }
        }
        // The first pass checked the whole body: what follows decodes.
        batch = rest.as_mut().map_or_else(Vec::new, |rest| rest.by_ref().take(batch_size).flatten().collect());
    }
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((COMMITTED, committed.to_string()))
        .body(format!("{{\"accepted\":{total}}}\n"))
}

/// How a failed answer says that the first `committed` of `total` events were committed.
fn committed_text(committed: usize, total: usize) -> String {
    if committed == 0 {
        String::new()
    } else {
        format!("; the first {committed} of the {total} events were committed: resend from event {committed} on")
    }
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

/// `503 Service Unavailable` with `Retry-After: 1` (seconds) after the first `committed` of
/// `total` events were committed (in [`COMMITTED`] and in the text).
fn unavailable(why: &str, committed: usize, total: usize) -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, "1"))
        .insert_header((COMMITTED, committed.to_string()))
        .body(format!("{why}: retry later{}\n", committed_text(committed, total)))
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
