//! `Http`: posts each taken batch as one HTTP request, as Flume's HTTP sink; with `format: Events`
//! it is the sending end of the agent-to-agent hop (another agent's `Http` source).
//!
//! The take is committed only after a `2xx` answer, which an `Http` source gives only once the
//! events are committed to its channels: delivery across the hop is at-least-once. Connection
//! errors, timeouts, redirects (`3xx`: never followed, never a delivery), `429` and `5xx` are retried inside the delivery with capped exponential
//! backoff (honouring `Retry-After`) until they succeed, so nothing is dropped and the sink keeps
//! its place; a retry after a timeout may deliver a batch twice. In a sink group the sink does not
//! retry: such a failure fails the delivery at once, the batch is rolled back and the group's
//! processor penalises the sink and hands the batch to another one (Flume's failover over an
//! unreachable next hop). Any other status (a `4xx`: the
//! request itself is wrong) is counted in `ConnectionFailedCount`, logged with the answer, and
//! the batch is rolled back (the sink restarts with its supervisor's backoff and tries again) or
//! written to a dead-letter directory and committed, as `on_client_error` says.
//!
//! `https://` URLs speak TLS 1.2 or 1.3 (rustls, see [`crate::tls::client`]) with the `tls`
//! option's CA (or the system's roots), client certificate and server name. Credentials in the URL
//! (`https://user:pass@host/`) are sent as HTTP basic authentication (RFC 7617) and the password
//! is shown as `***` wherever the URL is (the log, errors, the run summary). An answer's body is
//! read to at most [`ANSWER_KEPT`] bytes for the log; the rest is read and thrown away without
//! being held (up to [`ANSWER_DISCARDED`], then the connection is dropped).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::LocalBoxFuture;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;

use super::{Sink, SinkError};
use crate::codec::Format;
use crate::config::duration;
use crate::event::Event;
use crate::metrics::SinkCounters;
use crate::secret::Secret;
use crate::tls::TlsClientConfig;

/// `Http(url: "http://127.0.0.1:8080/", format: Events, timeout: "10s", max_backoff: "30s",
/// on_client_error: Rollback, headers: {}, bearer_token: None, tls: None)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkConfig {
    /// Where batches are posted: an `http://` or `https://` URL. `user:password@` in it is sent
    /// as basic authentication, and shown as `user:***@`.
    pub url: String,
    /// The body format (and `Content-Type`) of the requests. Default `Events` (flumen's binary
    /// codec: headers and bodies of any bytes, what an `Http` source reads for the agent hop);
    /// `FlumeJson` for Flume's HTTP source, `Ndjson` or `Lines` for other servers.
    #[serde(default = "default_format")]
    pub format: Format,
    /// How long one request may take, connecting included, before it is retried. Default `"10s"`.
    #[serde(default = "default_timeout", with = "duration")]
    pub timeout: Duration,
    /// Longest wait between retries (the wait starts at 100 ms and doubles). Default `"30s"`.
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
    /// What to do with a batch the server refuses with a `4xx` other than `429`.
    /// Default `Rollback`.
    #[serde(default)]
    pub on_client_error: OnClientError,
    /// Extra request headers, name to value. Default `{}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Sent as `Authorization: Bearer <token>` when set. A [`Secret`]: a literal, `"env:NAME"`
    /// or `"file:PATH"`. Default `None`.
    #[serde(default)]
    pub bearer_token: Option<Secret>,
    /// TLS settings of an `https://` URL: `TlsClient(ca: Some("ca.pem"), cert: Some("client.pem"),
    /// key: Some("client.key"), server_name: None)`. Default `None`: an `https://` URL is checked
    /// against the system's trusted roots, with no client certificate.
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
}

fn default_format() -> Format {
    Format::Events
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

/// What the `Http` sink does with a batch refused with a client error (`4xx` but `429`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub enum OnClientError {
    /// Roll the take back: the batch returns to the head of the channel and the sink restarts
    /// (with backoff) and posts it again; nothing behind it is delivered until it goes through.
    #[default]
    Rollback,
    /// Write the request body, fsynced, to a file in `dir` named
    /// `<time in ms>-<n>-<status>.<json|ndjson|txt|events>`, then commit the take.
    DeadLetter {
        /// The dead-letter directory, created if missing; relative to the topology file's folder.
        dir: PathBuf,
    },
}

impl HttpSinkConfig {
    /// Problems with the options.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match reqwest::Url::parse(&self.url) {
            Ok(url) if url.scheme() == "https" => {}
            Ok(url) if url.scheme() == "http" => {
                if self.tls.is_some() {
                    problems.push("tls is set but the url is http:// (write https://)".into());
                }
            }
            Ok(url) => problems.push(format!("url scheme {:?} is not supported (http:// or https://)", url.scheme())),
            Err(e) => problems.push(format!("url {:?} does not parse: {e}", redact_url(&self.url))),
        }
        if let Some(tls) = &self.tls {
            problems.extend(tls.validate());
        }
        if let Some(Err(e)) = self.bearer_token.as_ref().map(Secret::reveal) {
            problems.push(format!("bearer_token: {e}"));
        }
        if self.timeout.is_zero() {
            problems.push("timeout must be positive".into());
        }
        if self.max_backoff.is_zero() {
            problems.push("max_backoff must be positive".into());
        }
        if let Err(e) = self.header_map() {
            problems.push(e);
        }
        if let OnClientError::DeadLetter { dir } = &self.on_client_error {
            if dir.exists() && !dir.is_dir() {
                problems.push(format!("dead-letter {} exists and is not a directory", dir.display()));
            }
        }
        problems
    }

    /// Resolves the dead-letter directory against `base` (the topology file's folder).
    pub fn resolve_paths(&mut self, base: &std::path::Path) {
        if let OnClientError::DeadLetter { dir } = &mut self.on_client_error {
            *dir = crate::config::resolve(base, dir);
        }
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(base);
        }
        if let Some(token) = self.bearer_token.as_mut() {
            token.resolve_paths(base);
        }
    }

    /// The URL as shown in the log, errors and the run summary: a password in it is `***`.
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The request headers every post carries: `headers`, the bearer token, the content type.
    fn header_map(&self) -> Result<HeaderMap, String> {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header name {name:?}: {e}"))?;
            let v = HeaderValue::from_str(value).map_err(|e| format!("header {name:?} value {value:?}: {e}"))?;
            map.insert(n, v);
        }
        if let Some(token) = &self.bearer_token {
            let token = token.reveal().map_err(|e| format!("bearer_token: {e}"))?;
            let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| "bearer_token holds characters a header cannot carry".to_string())?;
            v.set_sensitive(true);
            map.insert(AUTHORIZATION, v);
        }
        map.insert(CONTENT_TYPE, HeaderValue::from_static(self.format.content_type()));
        Ok(map)
    }
}

/// The HTTP sink.
pub struct HttpSink {
    config: HttpSinkConfig,
    name: String,
    /// The URL with its password shown as `***`.
    url: String,
    client: reqwest::Client,
    /// What the `tls` files looked like when `client` was built, and when they were last looked at.
    tls_files: TlsFiles,
    counters: Arc<SinkCounters>,
    dead_letters: u64,
    /// A member of a sink group: a failed post fails the delivery instead of being retried.
    in_group: bool,
}

impl HttpSink {
    /// A sink posting to `config.url`.
    ///
    /// # Errors
    /// When a header does not parse or the HTTP client cannot be built.
    pub fn new(name: &str, config: HttpSinkConfig, counters: Arc<SinkCounters>) -> Result<Self, SinkError> {
        let tls_files = TlsFiles::new(config.tls.as_ref());
        let client = build_client(&config)?;
        let url = config.shown_url();
        Ok(HttpSink { config, name: name.into(), url, client, tls_files, counters, dead_letters: 0, in_group: false })
    }

    /// Rebuilds the client when the `tls` option's files changed since it was built (looked at
    /// before a post, at most once a second): a renewed client certificate or CA bundle is used
    /// from the next connection on, without a restart. A rebuild that fails (a file half written,
    /// a key that does not match) keeps the old client and logs; the next change is tried again.
    async fn reread_tls_files(&mut self) {
        if self.tls_files.paths.is_empty() || self.tls_files.looked.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.tls_files.looked = std::time::Instant::now();
        // Looking at the files and reading them are file I/O: on the blocking pool, not on the
        // sink's actor thread.
        let (paths, seen, config) = (self.tls_files.paths.clone(), self.tls_files.seen.clone(), self.config.clone());
        let looked = tokio::task::spawn_blocking(move || {
            let now = TlsFiles::stamps(&paths);
            let rebuilt = (now != seen).then(|| build_client(&config));
            (now, rebuilt)
        })
        .await;
        let Ok((now, rebuilt)) = looked else { return };
        self.tls_files.seen = now;
        match rebuilt {
            None => {}
            Some(Ok(client)) => {
                self.client = client;
                tracing::info!(sink = %self.name, "tls files changed: re-read, used from the next connection on");
            }
            Some(Err(e)) => {
                tracing::warn!(sink = %self.name, error = %e, "tls files changed but cannot be used; keeping the previous ones")
            }
        }
    }

    /// Marks the sink as a member of a sink group (`true`): a connection error, a timeout, a `429`
    /// or a `5xx` then fails the delivery at once (the group rolls the batch back and gives it to
    /// another sink) instead of being retried inside it.
    #[must_use]
    pub fn in_group(mut self, in_group: bool) -> Self {
        self.in_group = in_group;
        self
    }

    /// `text` with the URL's password, if it has one, shown as `***` (a client error may quote
    /// the URL).
    fn redact(&self, text: &str) -> String {
        match reqwest::Url::parse(&self.config.url).ok().and_then(|u| u.password().map(str::to_string)) {
            Some(password) if !password.is_empty() => {
                text.replace(&self.config.url, &self.url).replace(&password, "***")
            }
            _ => text.to_string(),
        }
    }

    /// Writes a refused request body into the dead-letter directory, fsynced.
    async fn dead_letter(&mut self, dir: PathBuf, body: bytes::Bytes, status: StatusCode) -> Result<(), SinkError> {
        self.dead_letters += 1;
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let ext = match self.config.format {
            Format::FlumeJson => "json",
            Format::Ndjson => "ndjson",
            Format::Lines => "txt",
            Format::Events => "events",
        };
        let path = dir.join(format!("{millis}-{}-{}.{ext}", self.dead_letters, status.as_u16()));
        let target = path.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            std::fs::create_dir_all(&dir)?;
            let mut file = std::fs::File::create(&target)?;
            file.write_all(&body)?;
            file.sync_all()?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(SinkError::io(format!("write dead letter {}", path.display())))?;
        tracing::error!(sink = %self.name, path = %path.display(), "refused batch written to the dead-letter directory");
        Ok(())
    }
}

impl Sink for HttpSink {
    fn deliver<'a>(&'a mut self, events: &'a [Event]) -> LocalBoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let mut body = self.config.format.encode(events);
            let mut backoff = Duration::from_millis(100);
            let mut failures = 0u32;
            // Events the server said it committed before a failed answer (`X-Flumen-Committed`).
            let mut sent = 0usize;
            loop {
                self.reread_tls_files().await;
                let answer = self.client.post(&self.config.url).body(body.clone()).send().await;
                let wait = match answer {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = answer_text(resp).await;
                        if failures > 0 {
                            tracing::info!(sink = %self.name, failures, "batch delivered after retries");
                        }
                        return Ok(());
                    }
                    Ok(resp) if resp.status().is_redirection() => {
                        self.counters.connection_failed.inc();
                        let status = resp.status();
                        let location = resp
                            .headers()
                            .get(LOCATION)
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .unwrap_or_default();
                        if self.in_group {
                            return Err(SinkError::Other(format!(
                                "{} answered {status} to {location:?}: a redirect is not a delivery",
                                self.url
                            )));
                        }
                        tracing::warn!(sink = %self.name, url = %self.url, %status, %location, events = events.len(), "redirected: not a delivery (redirects are not followed); retrying");
                        backoff
                    }
                    Ok(resp) if resp.status() == StatusCode::TOO_MANY_REQUESTS || resp.status().is_server_error() => {
                        self.counters.connection_failed.inc();
                        let status = resp.status();
                        let retry_after = resp
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        let committed = crate::codec::committed_of(resp.headers()).unwrap_or(0);
                        let text = answer_text(resp).await;
                        if committed > 0 && sent + committed <= events.len() {
                            // Resend only the rest; once part of the batch is there, the rest
                            // follows it (a group's failover would send that part again).
                            sent += committed;
                            body = self.config.format.encode(&events[sent..]);
                        }
                        if self.in_group && sent == 0 {
                            return Err(SinkError::Other(format!("{} answered {status}: {text}", self.url)));
                        }
                        tracing::warn!(sink = %self.name, url = %self.url, %status, answer = %text, events = events.len(), "server busy or failing; retrying");
                        retry_after.unwrap_or(backoff).min(self.config.max_backoff)
                    }
                    Ok(resp) => {
                        self.counters.connection_failed.inc();
                        let status = resp.status();
                        let text = answer_text(resp).await;
                        tracing::error!(sink = %self.name, url = %self.url, %status, answer = %text, events = events.len(), "batch refused");
                        return match self.config.on_client_error.clone() {
                            OnClientError::Rollback => {
                                Err(SinkError::Other(format!("{} answered {status}: {text}", self.url)))
                            }
                            OnClientError::DeadLetter { dir } => self.dead_letter(dir, body, status).await,
                        };
                    }
                    Err(e) => {
                        self.counters.connection_failed.inc();
                        if self.in_group {
                            return Err(SinkError::Other(format!("post to {}: {}", self.url, self.redact(&chain(&e)))));
                        }
                        tracing::warn!(sink = %self.name, url = %self.url, error = %self.redact(&chain(&e)), events = events.len(), "post failed; retrying");
                        backoff
                    }
                };
                failures += 1;
                actix_rt::time::sleep(wait).await;
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
        })
    }
}

/// Most bytes of an answer's body kept (for the log).
pub const ANSWER_KEPT: usize = 64 * 1024;
/// Most bytes of an answer's body read past [`ANSWER_KEPT`] and thrown away (so that the
/// connection can be used again); past them the connection is dropped.
pub const ANSWER_DISCARDED: usize = 16 * 1024 * 1024;

/// The start of an answer's body, for the log: at most [`ANSWER_KEPT`] bytes are kept, the rest is
/// read in chunks and dropped, never held.
/// The HTTP client of a sink: no redirects, the sink's timeout and headers, and rustls with the
/// `tls` option's files for `https://` URLs.
///
/// # Errors
/// When a header does not parse, a `tls` file cannot be used, or reqwest refuses the settings.
fn build_client(config: &HttpSinkConfig) -> Result<reqwest::Client, SinkError> {
    let headers = config.header_map().map_err(SinkError::Other)?;
    let builder = reqwest::Client::builder()
        // A redirect is never a delivery: following a 302 with the GET it calls for would
        // drop the body and commit the batch on the next page's 200.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .default_headers(headers);
    let tls = if config.url.starts_with("https:") {
        crate::tls::client::client_config(&config.tls.clone().unwrap_or_default(), true)
            .map_err(|e| SinkError::Other(format!("tls: {e}")))?
    } else {
        crate::tls::client::no_tls_config()
    };
    builder
        .use_preconfigured_tls(tls)
        .build()
        .map_err(|e| SinkError::Other(format!("build the HTTP client: {}", chain(&e))))
}

/// The `tls` option's files (`ca`, `cert`, `key`) as last seen: modification time, size and
/// inode of each (`None` for one that cannot be read), and when they were looked at.
struct TlsFiles {
    paths: Vec<PathBuf>,
    seen: Vec<Option<(SystemTime, u64, u64)>>,
    looked: std::time::Instant,
}

impl TlsFiles {
    fn new(tls: Option<&TlsClientConfig>) -> TlsFiles {
        let paths: Vec<PathBuf> =
            tls.map(|t| [&t.ca, &t.cert, &t.key].into_iter().flatten().cloned().collect()).unwrap_or_default();
        let seen = Self::stamps(&paths);
        TlsFiles { paths, seen, looked: std::time::Instant::now() }
    }

    /// Modification time, size and inode of each of `paths` (`None` for one that cannot be read).
    fn stamps(paths: &[PathBuf]) -> Vec<Option<(SystemTime, u64, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let stamp = |path: &PathBuf| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len(), meta.ino()))
        };
        paths.iter().map(stamp).collect()
    }
}

async fn answer_text(mut resp: reqwest::Response) -> String {
    let mut kept = Vec::new();
    let mut read = 0usize;
    while let Ok(Some(chunk)) = resp.chunk().await {
        read += chunk.len();
        if kept.len() < ANSWER_KEPT {
            let room = ANSWER_KEPT - kept.len();
            kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if read > ANSWER_KEPT + ANSWER_DISCARDED {
            break;
        }
    }
    let text = String::from_utf8_lossy(&kept);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_string(),
    }
}

/// `url` with the password of its `user:password@` shown as `***` (`user:***@`). Works on the
/// text, so also on a URL that does not parse.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let authority_end = url[scheme_end..].find(['/', '?', '#']).map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let shown = if userinfo.contains(':') { format!("{user}:***") } else { user.to_string() };
            format!("{}{shown}{}", &url[..scheme_end], &url[scheme_end + at..])
        }
        None => url.to_string(),
    }
}

/// An error and its causes, joined by ": ".
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_starred() {
        assert_eq!(
            redact_url("https://edge:s3cr3t@collector:8443/events?a=b"),
            "https://edge:***@collector:8443/events?a=b"
        );
        assert_eq!(redact_url("http://edge@collector/"), "http://edge@collector/");
        assert_eq!(redact_url("http://collector:80/a@b"), "http://collector:80/a@b");
        assert_eq!(redact_url("https://u:p@ss@host/"), "https://u:***@host/");
        assert_eq!(redact_url("not a url:pw@x"), "not a url:pw@x");
        assert_eq!(redact_url("ftp://u:pw@host"), "ftp://u:***@host");
    }

    #[test]
    fn https_validates_and_tls_needs_it() {
        let config = |url: &str, tls: &str| -> HttpSinkConfig {
            ron::Options::default()
                .with_default_extension(ron::extensions::Extensions::UNWRAP_VARIANT_NEWTYPES)
                .from_str(&format!(r#"(url: "{url}", tls: {tls})"#))
                .unwrap()
        };
        assert!(config("https://127.0.0.1:8443/", "None").validate().is_empty());
        assert_eq!(
            config("http://127.0.0.1/", "Some(TlsClient())").validate(),
            ["tls is set but the url is http:// (write https://)"]
        );
        let problems =
            config("https://u:pw-marker@127.0.0.1/", r#"Some(TlsClient(ca: Some("/nonexistent/ca.pem")))"#).validate();
        assert!(
            problems.len() == 1 && problems[0].starts_with("tls ca: cannot read /nonexistent/ca.pem"),
            "{problems:?}"
        );
        let problems = config("h ttp://u:pw-marker@x", "None").validate();
        assert!(problems.iter().all(|p| !p.contains("pw-marker")), "{problems:?}");
    }
}
