//! `flumen top`: a live terminal view of a running agent, as `vector top` is for Vector.
//!
//! Every second it reads the agent's monitoring server (`GET /metrics`, Flume's JSON) and shows
//! one row per source, channel and sink: events per second in and out, bytes per second, channel
//! fill and size on disk, errors, restarts and state. Rates are the difference of two readings
//! divided by the time between them. The view is drawn with ratatui on crossterm; keys choose
//! the sort order and `q` quits, leaving the terminal as it was.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};
use ratatui::Frame;

/// How often the monitoring server is read.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// Why `flumen top` could not run.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    /// Standard output is not a terminal (a pipe, a file).
    #[error("flumen top draws on a terminal; standard output is not one")]
    NotATerminal,
    /// The terminal could not be set up, drawn on or read.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The order of the rows, chosen by a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// `n`: by component name, then kind (source, channel, sink); the default.
    Name,
    /// `i`: by events per second in, highest first.
    In,
    /// `o`: by events per second out, highest first.
    Out,
    /// `e`: by errors, most first.
    Errors,
    /// `r`: by restarts, most first.
    Restarts,
    /// `f`: by channel fill, fullest first.
    Fill,
}

impl SortKey {
    /// Every key with its letter and its label in the footer.
    pub const ALL: [(char, SortKey, &'static str); 6] = [
        ('n', SortKey::Name, "name"),
        ('i', SortKey::In, "in/s"),
        ('o', SortKey::Out, "out/s"),
        ('e', SortKey::Errors, "errors"),
        ('r', SortKey::Restarts, "restarts"),
        ('f', SortKey::Fill, "fill"),
    ];

    fn of(c: char) -> Option<SortKey> {
        SortKey::ALL.iter().find(|(k, _, _)| *k == c).map(|(_, s, _)| *s)
    }
}

/// One component's row.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentRow {
    /// `SOURCE`, `CHANNEL` or `SINK`.
    pub kind: String,
    /// The component's name in the topology.
    pub name: String,
    /// Its state (`running`, `failed`, ...), as the JSON's `State`.
    pub state: String,
    /// Events per second in: received (source), put (channel), taken (sink).
    pub in_rate: f64,
    /// Events per second out: accepted (source), taken (channel), delivered (sink).
    pub out_rate: f64,
    /// Body bytes per second: received (source) or delivered (sink); `None` for a channel.
    pub bytes_rate: Option<f64>,
    /// Channels: `ChannelFillPercentage`, `ChannelSize`, `ChannelCapacity`, `DiskBytes`.
    pub channel: Option<ChannelFill>,
    /// Errors so far: failed and dropped puts (source: `ChannelWriteFail`, `EventDroppedCount`,
    /// `OptionalPutFailedCount`); failed opens, damage and dead letters (channel:
    /// `ChannelOpenFailureCount`, `ChannelDamagedCount`, `EventDeadLetterCount`); failed outputs,
    /// rolled back batches and rejected events (sink: `ConnectionFailedCount`, `RollbackCount`,
    /// `EventRejectedCount`).
    pub errors: u64,
    /// `RestartCount`.
    pub restarts: u64,
}

/// A channel's fill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelFill {
    /// Percent of the capacity held.
    pub percent: f64,
    /// Events held.
    pub size: u64,
    /// Capacity in events.
    pub capacity: u64,
    /// Bytes on disk (`RocksDb`; 0 for `Memory`).
    pub disk_bytes: u64,
}

/// One reading of `GET /metrics`: `"KIND.name"` to counter name to value.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    components: BTreeMap<String, BTreeMap<String, String>>,
    at: Option<Instant>,
}

impl Reading {
    /// Reads Flume's JSON (`{"SOURCE.r1": {"Type": "SOURCE", "EventReceivedCount": "12"}}`)
    /// taken at `at`.
    ///
    /// # Errors
    /// When the text is not that JSON.
    pub fn parse(json: &str, at: Instant) -> Result<Reading, String> {
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
        let object = value.as_object().ok_or("not a JSON object")?;
        let mut components = BTreeMap::new();
        for (key, counters) in object {
            let counters = counters.as_object().ok_or_else(|| format!("{key} is not an object"))?;
            let values = counters.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect();
            components.insert(key.clone(), values);
        }
        Ok(Reading { components, at: Some(at) })
    }

    fn count(&self, key: &str, counter: &str) -> u64 {
        self.components.get(key).and_then(|c| c.get(counter)).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// The rows of reading `now`, with rates against `before` (zero without one, or when a counter
/// went back: the agent restarted).
pub fn rows(before: Option<&Reading>, now: &Reading) -> Vec<ComponentRow> {
    let seconds = match (before.and_then(|b| b.at), now.at) {
        (Some(b), Some(n)) if n > b => (n - b).as_secs_f64(),
        _ => 0.0,
    };
    let mut out = Vec::new();
    for (key, counters) in &now.components {
        let Some((kind, name)) = key.split_once('.') else { continue };
        let rate = |counter: &str| match before {
            Some(b) if seconds > 0.0 && b.components.contains_key(key) => {
                now.count(key, counter).saturating_sub(b.count(key, counter)) as f64 / seconds
            }
            _ => 0.0,
        };
        let sum = |names: &[&str]| names.iter().map(|n| now.count(key, n)).sum::<u64>();
        let (in_rate, out_rate, bytes_rate, errors, channel) = match kind {
            "SOURCE" => (
                rate("EventReceivedCount"),
                rate("EventAcceptedCount"),
                Some(rate("BytesReceivedCount")),
                sum(&["ChannelWriteFail", "EventDroppedCount", "OptionalPutFailedCount"]),
                None,
            ),
            "CHANNEL" => (
                rate("EventPutSuccessCount"),
                rate("EventTakeSuccessCount"),
                None,
                sum(&["ChannelOpenFailureCount", "ChannelDamagedCount", "EventDeadLetterCount"]),
                Some(ChannelFill {
                    percent: counters.get("ChannelFillPercentage").and_then(|v| v.parse().ok()).unwrap_or(0.0),
                    size: now.count(key, "ChannelSize"),
                    capacity: now.count(key, "ChannelCapacity"),
                    disk_bytes: now.count(key, "DiskBytes"),
                }),
            ),
            "SINK" => (
                rate("EventDrainAttemptCount"),
                rate("EventDrainSuccessCount"),
                Some(rate("BytesDeliveredCount")),
                sum(&["ConnectionFailedCount", "RollbackCount", "EventRejectedCount"]),
                None,
            ),
            _ => continue,
        };
        out.push(ComponentRow {
            kind: kind.to_string(),
            name: name.to_string(),
            state: counters.get("State").cloned().unwrap_or_else(|| "?".into()),
            in_rate,
            out_rate,
            bytes_rate,
            channel,
            errors,
            restarts: now.count(key, "RestartCount"),
        });
    }
    out
}

/// Sorts `rows` by `key` (numbers highest first; ties, and `Name`, by name then kind).
pub fn sort(rows: &mut [ComponentRow], key: SortKey) {
    let kind_order = |k: &str| match k {
        "SOURCE" => 0,
        "CHANNEL" => 1,
        _ => 2,
    };
    let by_name = |a: &ComponentRow, b: &ComponentRow| {
        a.name.cmp(&b.name).then_with(|| kind_order(&a.kind).cmp(&kind_order(&b.kind)))
    };
    let number = |r: &ComponentRow| match key {
        SortKey::Name => 0.0,
        SortKey::In => r.in_rate,
        SortKey::Out => r.out_rate,
        SortKey::Errors => r.errors as f64,
        SortKey::Restarts => r.restarts as f64,
        SortKey::Fill => r.channel.map_or(-1.0, |c| c.percent),
    };
    rows.sort_by(|a, b| number(b).total_cmp(&number(a)).then_with(|| by_name(a, b)));
}

/// What the fetching thread hands to the view.
type Fetched = (Instant, Result<String, String>);

/// Runs `flumen top` against the monitoring server at `url` (`http://127.0.0.1:41414`) until
/// `q` (or Ctrl-C) is pressed; the terminal is restored on every way out.
///
/// # Errors
/// When standard output is not a terminal or the terminal fails; an unreachable server is shown,
/// not an error.
pub fn run(url: &str) -> Result<(), TopError> {
    if !std::io::stdout().is_terminal() {
        return Err(TopError::NotATerminal);
    }
    let base = url.trim_end_matches('/').to_string();
    let metrics_url = format!("{base}/metrics");
    let client = reqwest::Client::builder()
        .timeout(INTERVAL)
        .use_preconfigured_tls(crate::tls::client::no_tls_config())
        .build()?;
    let (tx, rx) = mpsc::channel::<Fetched>();
    std::thread::Builder::new().name("top-fetch".into()).spawn(move || fetch_loop(client, metrics_url, tx))?;

    let mut terminal = ratatui::try_init()?;
    let mut view = View::new(base);
    let result = (|| -> Result<(), TopError> {
        // Drawn when a reading arrives, a key is pressed or the terminal is resized; in between
        // it only waits (a key is answered within 100 ms).
        let mut dirty = true;
        loop {
            while let Ok((at, fetched)) = rx.try_recv() {
                view.take(at, fetched);
                dirty = true;
            }
            if dirty {
                terminal.draw(|frame| view.draw(frame))?;
                dirty = false;
            }
            if !event::poll(Duration::from_millis(100))? {
                continue;
            }
            match event::read()? {
                Event::Key(key) if key.kind == KeyEventKind::Press => match key.code {
                    KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                    KeyCode::Char(c) => {
                        if let Some(s) = SortKey::of(c) {
                            view.sort = s;
                            dirty = true;
                        }
                    }
                    _ => {}
                },
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    })();
    let _ = terminal.show_cursor();
    ratatui::try_restore()?;
    result
}

/// Reads `url` every [`INTERVAL`] and sends each answer (or why there was none) until the view
/// is gone.
fn fetch_loop(client: reqwest::Client, url: String, tx: mpsc::Sender<Fetched>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send((Instant::now(), Err(format!("cannot start the HTTP client: {e}"))));
            return;
        }
    };
    runtime.block_on(async {
        loop {
            let started = Instant::now();
            let answer = async {
                let response = client.get(&url).send().await.map_err(|e| describe(&e))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(format!("{url} answered {status}"));
                }
                response.text().await.map_err(|e| describe(&e))
            }
            .await;
            if tx.send((Instant::now(), answer)).is_err() {
                return;
            }
            tokio::time::sleep(INTERVAL.saturating_sub(started.elapsed())).await;
        }
    });
}

/// A reqwest error with its causes ("error sending request: ... Connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The view's state: the last two readings, the last error, the sort order.
struct View {
    url: String,
    before: Option<Reading>,
    now: Option<Reading>,
    /// The last failed reading and since when the server has not answered.
    unreachable: Option<(String, Instant)>,
    sort: SortKey,
}

impl View {
    fn new(url: String) -> Self {
        View { url, before: None, now: None, unreachable: None, sort: SortKey::Name }
    }

    fn take(&mut self, at: Instant, fetched: Result<String, String>) {
        match fetched.and_then(|body| Reading::parse(&body, at)) {
            Ok(reading) => {
                self.before = self.now.take();
                self.now = Some(reading);
                self.unreachable = None;
            }
            Err(e) => {
                let since = self.unreachable.take().map_or(at, |(_, since)| since);
                self.unreachable = Some((e, since));
            }
        }
    }

    fn draw(&self, frame: &mut Frame) {
        let [header, table, footer] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(1), Constraint::Length(1)]).areas(frame.area());
        let mut rows = self.now.as_ref().map(|now| rows(self.before.as_ref(), now)).unwrap_or_default();
        sort(&mut rows, self.sort);

        let status = match (&self.unreachable, &self.now) {
            (Some((e, since)), _) => Span::styled(
                format!("UNREACHABLE for {}s: {e} (retrying every second)", since.elapsed().as_secs()),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            (None, None) => Span::raw("waiting for the first reading"),
            (None, Some(now)) => Span::raw(format!(
                "{} components, read {:.1}s ago",
                rows.len(),
                now.at.map_or(0.0, |t| t.elapsed().as_secs_f64())
            )),
        };
        let title = Span::styled(format!("flumen top  {}  ", self.url), Style::new().add_modifier(Modifier::BOLD));
        frame.render_widget(Paragraph::new(Line::from(vec![title, status])), header);

        let head = Row::new(
            ["COMPONENT", "STATE", "IN/s", "OUT/s", "BYTES/s", "FILL", "SIZE/CAPACITY", "DISK", "ERRORS", "RESTARTS"]
                .map(Cell::from),
        )
        .style(Style::new().add_modifier(Modifier::REVERSED));
        let body = rows.iter().map(|r| {
            let state_style = match r.state.as_str() {
                "running" => Style::new().fg(Color::Green),
                "failed" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                "restarting" => Style::new().fg(Color::Yellow),
                _ => Style::new(),
            };
            let channel = r.channel;
            Row::new(vec![
                Cell::from(format!("{}.{}", r.kind, r.name)),
                Cell::from(r.state.clone()).style(state_style),
                Cell::from(format!("{:.1}", r.in_rate)),
                Cell::from(format!("{:.1}", r.out_rate)),
                Cell::from(r.bytes_rate.map_or_else(|| "-".into(), |b| bytes(b as u64))),
                Cell::from(channel.map_or_else(|| "-".into(), |c| format!("{:.1}%", c.percent))),
                Cell::from(channel.map_or_else(|| "-".into(), |c| format!("{}/{}", c.size, c.capacity))),
                Cell::from(channel.map_or_else(|| "-".into(), |c| bytes(c.disk_bytes))),
                Cell::from(r.errors.to_string()),
                Cell::from(r.restarts.to_string()),
            ])
        });
        let longest = rows.iter().map(|r| r.kind.len() + 1 + r.name.len()).max().unwrap_or(0);
        let widths = [
            Constraint::Length(longest.max(24) as u16),
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(17),
            Constraint::Length(10),
            Constraint::Length(7),
            Constraint::Length(8),
        ];
        frame.render_widget(Table::new(body, widths).header(head).column_spacing(1), table);

        let mut keys = vec![Span::raw("sort: ")];
        for (c, key, label) in SortKey::ALL {
            let style = if key == self.sort { Style::new().add_modifier(Modifier::REVERSED) } else { Style::new() };
            keys.push(Span::styled(format!("[{c}] {label}"), style));
            keys.push(Span::raw("  "));
        }
        keys.push(Span::raw("  [q] quit"));
        frame.render_widget(Paragraph::new(Line::from(keys)), footer);
    }
}

/// `n` bytes with a binary unit: `512 B`, `1.5 KiB`, `3.2 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at: Instant, received: u64, put: u64, delivered: u64) -> Reading {
        let json = serde_json::json!({
            "SOURCE.b": {"Type": "SOURCE", "State": "running", "EventReceivedCount": received.to_string(),
                         "EventAcceptedCount": received.to_string(), "ChannelWriteFail": "2", "RestartCount": "1"},
            "CHANNEL.a": {"Type": "CHANNEL", "State": "failed", "EventPutSuccessCount": put.to_string(),
                          "ChannelSize": "50", "ChannelCapacity": "200", "ChannelFillPercentage": "25.0",
                          "ChannelOpenFailureCount": "3"},
            "SINK.c": {"Type": "SINK", "State": "running", "EventDrainSuccessCount": delivered.to_string()},
        });
        Reading::parse(&json.to_string(), at).unwrap()
    }

    #[test]
    fn rates_are_differences_over_the_time_between_readings() {
        let t0 = Instant::now();
        let before = reading(t0, 100, 100, 0);
        let now = reading(t0 + Duration::from_secs(2), 300, 200, 50);
        let rows = rows(Some(&before), &now);
        let row = |name: &str| rows.iter().find(|r| r.name == name).unwrap().clone();
        assert_eq!(row("b").in_rate, 100.0);
        assert_eq!(row("a").in_rate, 50.0);
        assert_eq!(row("c").out_rate, 25.0);
        assert_eq!(row("b").errors, 2);
        assert_eq!(row("b").restarts, 1);
        assert_eq!(row("a").state, "failed");
        assert_eq!(row("a").errors, 3);
        assert_eq!(row("a").channel.unwrap(), ChannelFill { percent: 25.0, size: 50, capacity: 200, disk_bytes: 0 });
        // An agent that restarted has smaller counters: no negative rate.
        let restarted = reading(t0 + Duration::from_secs(3), 10, 10, 10);
        assert!(super::rows(Some(&now), &restarted).iter().all(|r| r.in_rate == 0.0 && r.out_rate >= 0.0));
        assert!(super::rows(None, &now).iter().all(|r| r.in_rate == 0.0), "no rate from one reading");
    }

    #[test]
    fn sort_keys_order_the_rows() {
        let t0 = Instant::now();
        let mut rows = rows(Some(&reading(t0, 0, 0, 0)), &reading(t0 + Duration::from_secs(1), 30, 20, 10));
        let names = |rows: &[ComponentRow]| rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(",");
        sort(&mut rows, SortKey::Name);
        assert_eq!(names(&rows), "a,b,c");
        sort(&mut rows, SortKey::In);
        assert_eq!(names(&rows), "b,a,c");
        sort(&mut rows, SortKey::Errors);
        assert_eq!(names(&rows), "a,b,c");
        sort(&mut rows, SortKey::Fill);
        assert_eq!(names(&rows)[..1], *"a");
    }

    #[test]
    fn bytes_have_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 20), "5.0 MiB");
    }
}
