//! Taps: live copies of the events leaving a source or entering a sink, streamed as NDJSON by the
//! monitoring server and shown by `flumen tap`, as Vector's `vector tap`.
//!
//! There are two tap points: a batch leaving a source after its interceptors, as the channel
//! selector gets it ([`leaving_source`]), and a batch a sink runner took from its channel, as the
//! sink gets it ([`entering_sink`]). `GET /tap` on the monitoring server ([`routes`]) streams
//! what they see; `flumen tap` ([`run`]) reads that stream.
//!
//! A tap never slows a flow. With no tap connected a tap point costs one relaxed atomic load per
//! batch. A connected tap gets copies through a bounded buffer (by default [`BUFFER_EVENTS`]
//! events, reserved without waiting); copies that do not fit are dropped and counted, in the
//! component's `TapDroppedCount` and in the tap's own stream, never the events themselves.
//!
//! One registry of taps serves the process (an agent runs alone in its process), so the tap
//! points find it without being wired through the agent.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::event::{Event, Headers};
use crate::metrics::{ComponentCounters, Counter, Metrics};

/// How many tapped events a tap's buffer holds by default (`GET /tap?buffer=N` sets another).
pub const BUFFER_EVENTS: usize = 10_000;

/// Where an event was tapped: the `point` of a tapped event's line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Point {
    /// Leaving a source after its interceptors, as the channel selector gets it.
    LeavingSource,
    /// Taken by a sink runner from its channel, as the sink gets it.
    EnteringSink,
}

/// The taps of the process, found by the tap points.
static TAPS: Taps = Taps::new();

/// Offers a batch leaving source `source` (after its interceptors, before the channel selector) to
/// the connected taps; copies that do not fit a tap's buffer are added to `dropped` (the source's
/// `TapDroppedCount`). One relaxed atomic load when no tap is connected.
#[inline]
pub fn leaving_source(source: &str, events: &[Event], dropped: &Counter) {
    TAPS.offer(Point::LeavingSource, source, events, dropped);
}

/// Offers a batch sink `sink` took from its channel (before it delivers it) to the connected taps;
/// as [`leaving_source`]. A batch rolled back and taken again is tapped again.
#[inline]
pub fn entering_sink(sink: &str, events: &[Event], dropped: &Counter) {
    TAPS.offer(Point::EnteringSink, sink, events, dropped);
}

/// Ends every tap stream of the process (each gets its `end` notice once it has sent what its
/// buffer holds). Called when the agent stops, so that no tap holds the monitoring server open.
pub fn stop() {
    TAPS.close_all();
}

/// A registry of taps: the process has one ([`leaving_source`] and [`entering_sink`] use it); a
/// test may make its own.
#[derive(Debug)]
pub struct Taps {
    /// The number of connected taps: the one load a tap point pays when it is zero.
    active: AtomicUsize,
    taps: RwLock<Vec<Tap>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Tap {
    id: u64,
    /// Sources and sinks tapped; empty: all of them.
    components: Vec<String>,
    tx: mpsc::UnboundedSender<Tapped>,
    buffer: Arc<Buffer>,
}

impl Tap {
    fn wants(&self, component: &str) -> bool {
        self.components.is_empty() || self.components.iter().any(|c| c == component)
    }
}

/// How full a tap's buffer is, and what it dropped.
#[derive(Debug)]
struct Buffer {
    /// Tapped events sent and not yet received by the tap's stream.
    queued: AtomicUsize,
    /// Most events queued at once.
    capacity: usize,
    /// Tapped copies dropped because the buffer was full.
    dropped: AtomicU64,
}

impl Buffer {
    /// Reserves room for up to `n` events; answers how many fit.
    fn reserve(&self, n: usize) -> usize {
        let mut granted = 0;
        let _ = self.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| {
            granted = self.capacity.saturating_sub(queued).min(n);
            Some(queued + granted)
        });
        granted
    }
}

/// A tapped batch: the first `len` events of `events` (one copy of a batch serves every tap).
#[derive(Debug)]
pub struct Tapped {
    /// The source or sink.
    pub component: String,
    /// Where it was tapped.
    pub point: Point,
    events: Arc<[Event]>,
    len: usize,
}

impl Tapped {
    /// The tapped events, oldest first.
    pub fn events(&self) -> &[Event] {
        &self.events[..self.len]
    }
}

impl Taps {
    /// An empty registry.
    pub const fn new() -> Self {
        Taps { active: AtomicUsize::new(0), taps: RwLock::new(Vec::new()), next_id: AtomicU64::new(0) }
    }

    /// Connects a tap on `components` (sources or sinks by name; empty: all) whose buffer holds
    /// `buffer` events (at least one).
    pub fn subscribe(&self, components: Vec<String>, buffer: usize) -> Subscription<'_> {
        let (tx, rx) = mpsc::unbounded_channel();
        let buffer =
            Arc::new(Buffer { queued: AtomicUsize::new(0), capacity: buffer.max(1), dropped: AtomicU64::new(0) });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut taps = self.taps.write().unwrap_or_else(PoisonError::into_inner);
        taps.push(Tap { id, components, tx, buffer: buffer.clone() });
        self.active.store(taps.len(), Ordering::Relaxed);
        Subscription { taps: self, id, rx, buffer }
    }

    /// Offers `events` tapped at `point` of `component` to every tap that wants them; what does not
    /// fit a tap's buffer is added to `dropped`.
    #[inline]
    pub fn offer(&self, point: Point, component: &str, events: &[Event], dropped: &Counter) {
        if self.active.load(Ordering::Relaxed) != 0 && !events.is_empty() {
            self.offer_to_taps(point, component, events, dropped);
        }
    }

    #[cold]
    #[inline(never)]
    fn offer_to_taps(&self, point: Point, component: &str, events: &[Event], dropped: &Counter) {
        let taps = self.taps.read().unwrap_or_else(PoisonError::into_inner);
        let mut copy: Option<Arc<[Event]>> = None;
        for tap in taps.iter().filter(|t| t.wants(component)) {
            let len = tap.buffer.reserve(events.len());
            if len > 0 {
                let events = copy.get_or_insert_with(|| events.into()).clone();
                let tapped = Tapped { component: component.to_string(), point, events, len };
                if tap.tx.send(tapped).is_err() {
                    // Its stream is gone; its subscription is being dropped.
                    tap.buffer.queued.fetch_sub(len, Ordering::Relaxed);
                    continue;
                }
            }
            let lost = (events.len() - len) as u64;
            if lost > 0 {
                tap.buffer.dropped.fetch_add(lost, Ordering::Relaxed);
                dropped.add(lost);
            }
        }
    }

    /// Disconnects every tap: each subscription receives what it was sent, then `None`.
    pub fn close_all(&self) {
        let mut taps = self.taps.write().unwrap_or_else(PoisonError::into_inner);
        taps.clear();
        self.active.store(0, Ordering::Relaxed);
    }

    /// The number of connected taps.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

impl Default for Taps {
    fn default() -> Self {
        Taps::new()
    }
}

/// A connected tap: receives the tapped batches; disconnects when dropped.
#[derive(Debug)]
pub struct Subscription<'a> {
    taps: &'a Taps,
    id: u64,
    rx: mpsc::UnboundedReceiver<Tapped>,
    buffer: Arc<Buffer>,
}

impl Subscription<'_> {
    /// The next tapped batch; `None` once the registry closed this tap ([`Taps::close_all`]) and
    /// everything sent before was received.
    pub async fn recv(&mut self) -> Option<Tapped> {
        let tapped = self.rx.recv().await?;
        self.buffer.queued.fetch_sub(tapped.len, Ordering::Relaxed);
        Some(tapped)
    }

    /// The next tapped batch if one is waiting.
    pub fn try_recv(&mut self) -> Option<Tapped> {
        let tapped = self.rx.try_recv().ok()?;
        self.buffer.queued.fetch_sub(tapped.len, Ordering::Relaxed);
        Some(tapped)
    }

    /// Tapped copies this tap dropped so far because its buffer was full.
    pub fn dropped(&self) -> u64 {
        self.buffer.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut taps = self.taps.taps.write().unwrap_or_else(PoisonError::into_inner);
        taps.retain(|t| t.id != self.id);
        self.taps.active.store(taps.len(), Ordering::Relaxed);
    }
}

/// One tapped event as a line of the tap stream:
/// `{"component":"r1","point":"leaving_source","headers":{"host":"edge-1"},"body":"..."}`.
///
/// `body` holds a body that is UTF-8; any other body is in `body_base64` instead (standard
/// alphabet, with padding), so every body comes out byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    /// The source or sink.
    pub component: String,
    /// Where the event was tapped.
    pub point: Point,
    /// The event's headers.
    pub headers: Headers,
    /// The body, when it is UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The body in base64, when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

#[derive(Serialize)]
struct EventLineRef<'a> {
    component: &'a str,
    point: Point,
    headers: &'a Headers,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
}

impl EventLine {
    /// The event's body bytes, from `body` or `body_base64`.
    ///
    /// # Errors
    /// When `body_base64` is not base64.
    pub fn body_bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        match crate::codec::text::from_fields(self.body.clone(), self.body_base64.as_deref()) {
            Ok(body) => Ok(body.to_vec()),
            Err(crate::codec::text::BodyFieldsError::Base64(e)) => Err(e),
            Err(_) => Ok(Vec::new()),
        }
    }
}

/// Appends `event`'s line (with its LF) to `out`.
fn write_event(out: &mut Vec<u8>, component: &str, point: Point, event: &Event) {
    let (body, body_base64) = crate::codec::text::to_fields(&event.body);
    let line = EventLineRef { component, point, headers: &event.headers, body, body_base64 };
    serde_json::to_writer(&mut *out, &line).expect("an event line always serializes");
    out.push(b'\n');
}

/// A line of the tap stream that is no event: it starts with `{"notice":`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum Notice {
    /// The first line: what is tapped.
    Tapping {
        /// The sources and sinks asked for; empty: all.
        components: Vec<String>,
        /// Those of `components` that are no source or sink of the agent (perhaps a channel).
        unknown: Vec<String>,
        /// The tap's buffer, in events.
        buffer: usize,
        /// The stream ends after this many events.
        limit: Option<u64>,
    },
    /// `count` tapped copies were dropped since the previous line (the tap's buffer was full).
    Dropped {
        /// Events not shown.
        count: u64,
    },
    /// The last line.
    End {
        /// Why the stream ends.
        reason: EndReason,
        /// Events the stream carried.
        events: u64,
        /// Tapped copies dropped in all because the tap's buffer was full.
        dropped: u64,
    },
}

/// Why a tap stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// It carried its `limit` of events.
    Limit,
    /// The agent is stopping.
    AgentStopping,
}

fn write_notice(out: &mut Vec<u8>, notice: &Notice) {
    serde_json::to_writer(&mut *out, notice).expect("a notice always serializes");
    out.push(b'\n');
}

/// What `GET /tap?component=r1&component=k1&limit=100&buffer=10000` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapRequest {
    /// `component` (repeatable): sources and sinks to tap; none: all.
    pub components: Vec<String>,
    /// `limit`: end the stream after this many events. Default: never.
    pub limit: Option<u64>,
    /// `buffer`: the tap's buffer in events. Default [`BUFFER_EVENTS`].
    pub buffer: usize,
}

/// Why a tap request was refused (answered 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TapRequestError {
    /// The query string does not decode.
    #[error("the query string does not decode: {0}")]
    Query(String),
    /// A number parameter is not a positive number.
    #[error("{key}={value}: a positive number is needed")]
    NotANumber {
        /// The parameter.
        key: String,
        /// Its value.
        value: String,
    },
    /// A parameter `GET /tap` does not know.
    #[error("unknown parameter {0:?} (known: component, limit, buffer)")]
    Unknown(String),
}

impl TapRequest {
    /// Parses a query string (`component=r1&limit=10`).
    ///
    /// # Errors
    /// [`TapRequestError`] on a query that does not decode, a bad number or an unknown parameter.
    pub fn parse(query: &str) -> Result<Self, TapRequestError> {
        let pairs = actix_web::web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|e| TapRequestError::Query(e.to_string()))?
            .into_inner();
        let mut request = TapRequest { components: Vec::new(), limit: None, buffer: BUFFER_EVENTS };
        let number = |key: &str, value: &str| match value.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(TapRequestError::NotANumber { key: key.into(), value: value.into() }),
        };
        for (key, value) in pairs {
            match key.as_str() {
                "component" => request.components.push(value),
                "limit" => request.limit = Some(number(&key, &value)?),
                "buffer" => request.buffer = usize::try_from(number(&key, &value)?).unwrap_or(usize::MAX),
                _ => return Err(TapRequestError::Unknown(key)),
            }
        }
        Ok(request)
    }
}

/// The monitoring server's `GET /tap`: an NDJSON stream (`application/x-ndjson`) of a
/// [`Notice::Tapping`] line, then one [`EventLine`] per tapped event, [`Notice::Dropped`] lines
/// when the tap's buffer overflowed, and a last [`Notice::End`] line when the limit is reached or
/// the agent stops. `metrics` names the agent's sources and sinks (to flag unknown names).
///
/// Use: `App::new().configure(tap::routes(metrics.clone()))`.
pub fn routes(metrics: Arc<Metrics>) -> impl FnOnce(&mut actix_web::web::ServiceConfig) {
    use actix_web::{web, HttpRequest, HttpResponse};
    move |cfg: &mut web::ServiceConfig| {
        cfg.route(
            "/tap",
            web::get().to(move |req: HttpRequest| {
                let metrics = metrics.clone();
                async move {
                    match TapRequest::parse(req.query_string()) {
                        Ok(request) => HttpResponse::Ok()
                            .content_type("application/x-ndjson")
                            .insert_header(("Cache-Control", "no-cache"))
                            .force_close()
                            .streaming(stream(&TAPS, request, &metrics)),
                        Err(e) => HttpResponse::BadRequest().content_type("text/plain").body(format!("{e}\n")),
                    }
                }
            }),
        );
    }
}

/// The most bytes one chunk of a tap stream gathers from the batches already waiting.
const CHUNK_BYTES: usize = 256 * 1024;

struct Streaming {
    sub: Option<Subscription<'static>>,
    head: Option<Bytes>,
    limit: Option<u64>,
    sent: u64,
    reported_dropped: u64,
}

/// Whether a stream that carried `sent` events reached its `limit`.
fn reached(limit: Option<u64>, sent: u64) -> bool {
    limit.is_some_and(|limit| sent >= limit)
}

/// Subscribes to `taps` as `request` asks and streams the tap's lines.
fn stream(
    taps: &'static Taps,
    request: TapRequest,
    metrics: &Metrics,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    let tapped: BTreeSet<String> = metrics
        .snapshot()
        .into_iter()
        .filter(|(_, c)| matches!(c, ComponentCounters::Source(_) | ComponentCounters::Sink(_)))
        .filter_map(|(key, _)| key.split_once('.').map(|(_, name)| name.to_string()))
        .collect();
    let unknown = request.components.iter().filter(|c| !tapped.contains(*c)).cloned().collect();
    let mut head = Vec::new();
    write_notice(
        &mut head,
        &Notice::Tapping {
            components: request.components.clone(),
            unknown,
            buffer: request.buffer,
            limit: request.limit,
        },
    );
    let state = Streaming {
        sub: Some(taps.subscribe(request.components, request.buffer)),
        head: Some(head.into()),
        limit: request.limit,
        sent: 0,
        reported_dropped: 0,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if let Some(head) = st.head.take() {
            return Some((Ok(head), st));
        }
        let sub = st.sub.as_mut()?;
        let mut out = Vec::with_capacity(64 * 1024);
        let Some(first) = sub.recv().await else {
            let dropped = sub.dropped();
            write_notice(&mut out, &Notice::End { reason: EndReason::AgentStopping, events: st.sent, dropped });
            st.sub = None;
            return Some((Ok(out.into()), st));
        };
        let mut next = Some(first);
        while let Some(tapped) = next.take() {
            for event in tapped.events() {
                if reached(st.limit, st.sent) {
                    break;
                }
                write_event(&mut out, &tapped.component, tapped.point, event);
                st.sent += 1;
            }
            if out.len() < CHUNK_BYTES && !reached(st.limit, st.sent) {
                next = sub.try_recv();
            }
        }
        let dropped = sub.dropped();
        if dropped > st.reported_dropped {
            write_notice(&mut out, &Notice::Dropped { count: dropped - st.reported_dropped });
            st.reported_dropped = dropped;
        }
        if reached(st.limit, st.sent) {
            write_notice(&mut out, &Notice::End { reason: EndReason::Limit, events: st.sent, dropped });
            // Disconnects the tap.
            st.sub = None;
        }
        Some((Ok(out.into()), st))
    })
}

/// `flumen tap`: shows live events of a running agent.
#[derive(Debug, Clone, clap::Args)]
pub struct TapArgs {
    /// The agent's monitoring server (its topology's `monitoring: Some(Http(bind: ...))`).
    #[arg(long, default_value = "http://127.0.0.1:41414")]
    pub url: String,
    /// Exit after N events.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Show only the events of this source or sink (repeat for several). Default: every source
    /// and sink.
    #[arg(long = "component", value_name = "NAME")]
    pub components: Vec<String>,
}

/// Why `flumen tap` stopped before its limit or the agent's end.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `--url` is not a URL.
    #[error("--url {url}: {message}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// Nothing answered at the URL.
    #[error("cannot reach the agent's monitoring server at {url} (is the agent running, with `monitoring: Some(Http(bind: ...))` at this address?): {source}")]
    Connect {
        /// The tap URL.
        url: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// The server answered, but not with a tap stream.
    #[error("{url} answered {status}: {body}")]
    Refused {
        /// The tap URL.
        url: String,
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// What it said.
        body: String,
    },
    /// The stream broke off without its end line (the agent was killed or the network failed).
    #[error("lost the connection to the agent at {url} after {events} events: {reason}")]
    Lost {
        /// The tap URL.
        url: String,
        /// Events shown before.
        events: u64,
        /// What happened.
        reason: String,
    },
    /// The runtime could not start.
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
}

/// How a `flumen tap` run ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapOutcome {
    /// `--limit` events were shown.
    Limit,
    /// The agent stopped.
    AgentStopped {
        /// Events shown.
        events: u64,
        /// Tapped events not shown because the tap's buffer was full.
        dropped: u64,
    },
    /// Standard output was closed (`flumen tap | head`).
    OutputClosed,
}

/// Runs `flumen tap`: prints the tapped events on stdout (one [`EventLine`] per line), notices
/// on stderr; exit 0 at the limit or when the agent stops (or stdout is closed), 1 when the agent
/// cannot be reached or the connection breaks.
pub fn run(args: TapArgs) -> ExitCode {
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(TapError::Runtime)
        .and_then(|rt| rt.block_on(tap(&args, &mut std::io::stdout().lock())));
    match outcome {
        Ok(TapOutcome::AgentStopped { events, dropped }) => {
            eprintln!("flumen tap: the agent stopped ({events} events shown, {dropped} not shown because the tap's buffer was full)");
            ExitCode::SUCCESS
        }
        Ok(TapOutcome::Limit | TapOutcome::OutputClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flumen tap: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The tap URL for `args`: `URL/tap?component=...&limit=...`.
///
/// # Errors
/// [`TapError::Url`] when `args.url` is no http URL.
pub fn tap_url(args: &TapArgs) -> Result<reqwest::Url, TapError> {
    let bad = |message: String| TapError::Url { url: args.url.clone(), message };
    let mut url = reqwest::Url::parse(&args.url).map_err(|e| bad(e.to_string()))?;
    if url.scheme() != "http" {
        return Err(bad("the monitoring server speaks plain http".into()));
    }
    let path = format!("{}/tap", url.path().trim_end_matches('/'));
    url.set_path(&path);
    {
        let mut query = url.query_pairs_mut();
        query.clear();
        for c in &args.components {
            query.append_pair("component", c);
        }
        if let Some(limit) = args.limit {
            query.append_pair("limit", &limit.to_string());
        }
    }
    Ok(url)
}

/// Streams the tap `args` asks for into `out`, notices on stderr.
///
/// # Errors
/// [`TapError`] when the agent cannot be reached or the stream breaks off.
pub async fn tap(args: &TapArgs, out: &mut impl std::io::Write) -> Result<TapOutcome, TapError> {
    let url = tap_url(args)?;
    let shown = url.to_string();
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .use_preconfigured_tls(crate::tls::client::no_tls_config())
        .build()
        .map_err(|source| TapError::Connect { url: shown.clone(), source })?;
    let mut response =
        client.get(url).send().await.map_err(|source| TapError::Connect { url: shown.clone(), source })?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default().trim().to_string();
        return Err(TapError::Refused { url: shown, status, body });
    }
    let mut events = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    let lost = |events, reason: String| TapError::Lost { url: shown.clone(), events, reason };
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Err(lost(events, "the stream ended without its end line".into())),
            Err(e) => return Err(lost(events, e.to_string())),
        };
        carry.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(i) = memchr::memchr(b'\n', &carry[start..]) {
            let line = &carry[start..start + i + 1];
            start += i + 1;
            if line.starts_with(b"{\"notice\":") {
                match serde_json::from_slice::<Notice>(line) {
                    Ok(Notice::End { reason: EndReason::Limit, .. }) => return flushed(out, TapOutcome::Limit),
                    Ok(Notice::End { reason: EndReason::AgentStopping, dropped, .. }) => {
                        return flushed(out, TapOutcome::AgentStopped { events, dropped });
                    }
                    Ok(notice) => tell(&notice, &shown),
                    Err(_) => eprintln!("flumen tap: {}", String::from_utf8_lossy(line).trim_end()),
                }
                continue;
            }
            if out.write_all(line).is_err() {
                return Ok(TapOutcome::OutputClosed);
            }
            events += 1;
            if args.limit.is_some_and(|limit| events >= limit) {
                return flushed(out, TapOutcome::Limit);
            }
        }
        carry.drain(..start);
        if out.flush().is_err() {
            return Ok(TapOutcome::OutputClosed);
        }
    }
}

fn flushed(out: &mut impl std::io::Write, outcome: TapOutcome) -> Result<TapOutcome, TapError> {
    Ok(if out.flush().is_err() { TapOutcome::OutputClosed } else { outcome })
}

/// Says a notice on stderr.
fn tell(notice: &Notice, url: &str) {
    match notice {
        Notice::Tapping { components, unknown, .. } => {
            if components.is_empty() {
                eprintln!("flumen tap: tapping every source and sink at {url}");
            } else {
                eprintln!("flumen tap: tapping {} at {url}", components.join(", "));
            }
            for name in unknown {
                eprintln!(
                    "flumen tap: warning: {name:?} is no source or sink of this agent (channels are not tapped); nothing shows for it"
                );
            }
        }
        Notice::Dropped { count } => {
            eprintln!("flumen tap: {count} events not shown: the tap's buffer was full (the agent's flow went on)");
        }
        Notice::End { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| {
                Event::new(format!("{i} 081109 203615 148 INFO dfs.DataNode$PacketResponder: terminating"))
                    .with_header("host", "edge-1")
            })
            .collect()
    }

    #[actix_rt::test]
    async fn a_tap_gets_copies_of_the_components_it_asked_for() {
        let taps = Taps::new();
        let dropped = Counter::default();
        assert_eq!(taps.active(), 0);
        let mut sub = taps.subscribe(vec!["r1".into()], 100);
        assert_eq!(taps.active(), 1);
        taps.offer(Point::LeavingSource, "r1", &batch(3), &dropped);
        taps.offer(Point::EnteringSink, "k1", &batch(5), &dropped);
        let got = sub.try_recv().expect("r1's batch");
        assert_eq!((got.component.as_str(), got.point, got.events()), ("r1", Point::LeavingSource, &batch(3)[..]));
        assert!(sub.try_recv().is_none(), "k1 was not asked for");
        assert_eq!(dropped.get(), 0);
        drop(sub);
        assert_eq!(taps.active(), 0, "a dropped subscription disconnects");
    }

    #[actix_rt::test]
    async fn a_full_buffer_drops_copies_and_counts_them() {
        let taps = Taps::new();
        let dropped = Counter::default();
        let mut sub = taps.subscribe(Vec::new(), 10);
        taps.offer(Point::EnteringSink, "k1", &batch(7), &dropped);
        taps.offer(Point::EnteringSink, "k1", &batch(7), &dropped);
        assert_eq!(dropped.get(), 4, "7 + 7 offered, 10 fit");
        assert_eq!(sub.dropped(), 4);
        assert_eq!(sub.try_recv().unwrap().events().len(), 7);
        assert_eq!(sub.try_recv().unwrap().events(), &batch(3)[..], "the part that fit");
        // Received: room again.
        taps.offer(Point::EnteringSink, "k1", &batch(10), &dropped);
        assert_eq!(dropped.get(), 4);
        assert_eq!(sub.try_recv().unwrap().events().len(), 10);
    }

    #[actix_rt::test]
    async fn close_all_ends_every_subscription_after_what_it_was_sent() {
        let taps = Taps::new();
        let dropped = Counter::default();
        let mut sub = taps.subscribe(Vec::new(), 100);
        taps.offer(Point::LeavingSource, "r1", &batch(2), &dropped);
        taps.close_all();
        assert_eq!(taps.active(), 0);
        taps.offer(Point::LeavingSource, "r1", &batch(2), &dropped);
        assert_eq!(sub.recv().await.unwrap().events().len(), 2);
        assert!(sub.recv().await.is_none());
    }

    #[test]
    fn event_lines_keep_headers_and_every_body() {
        let mut out = Vec::new();
        let text = Event::new("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass").with_header("level", "INFO");
        let binary = Event::new(vec![0xff, 0x00, b'a', 0xc3]);
        write_event(&mut out, "r1", Point::LeavingSource, &text);
        write_event(&mut out, "k1", Point::EnteringSink, &binary);
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
        assert_eq!(
            std::str::from_utf8(lines[0]).unwrap(),
            r#"{"component":"r1","point":"leaving_source","headers":{"level":"INFO"},"body":"Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass"}"#
        );
        let second: EventLine = serde_json::from_slice(lines[1]).unwrap();
        assert_eq!(second.body, None);
        assert_eq!(second.body_bytes().unwrap(), vec![0xff, 0x00, b'a', 0xc3]);
    }

    #[test]
    fn requests_parse_and_bad_ones_are_refused() {
        let r = TapRequest::parse("component=r1&component=k%201&limit=100").unwrap();
        assert_eq!(
            r,
            TapRequest { components: vec!["r1".into(), "k 1".into()], limit: Some(100), buffer: BUFFER_EVENTS }
        );
        assert_eq!(TapRequest::parse("").unwrap().components, Vec::<String>::new());
        assert!(matches!(TapRequest::parse("limit=0"), Err(TapRequestError::NotANumber { .. })));
        assert!(matches!(TapRequest::parse("limit=x"), Err(TapRequestError::NotANumber { .. })));
        assert_eq!(TapRequest::parse("sink=k1"), Err(TapRequestError::Unknown("sink".into())));
    }

    #[test]
    fn the_tap_url_carries_the_filters() {
        let args = TapArgs {
            url: "http://127.0.0.1:41414/".into(),
            limit: Some(5),
            components: vec!["r1".into(), "k1".into()],
        };
        assert_eq!(tap_url(&args).unwrap().as_str(), "http://127.0.0.1:41414/tap?component=r1&component=k1&limit=5");
        let https = TapArgs { url: "https://x".into(), ..args };
        assert!(matches!(tap_url(&https), Err(TapError::Url { .. })));
    }
}
