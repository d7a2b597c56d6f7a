//! Path escapes of the `Hdfs` sink, as Flume's `BucketPath`: `%Y %m %d %H %M %S %y %j %s`, `%{header}`
//! and `%%`, with the timestamp optionally rounded down first.
//!
//! A header value is put into a path only when it cannot lead out of the base directory: a value
//! holding `/` or NUL, or a resolved component `..` that a header value helped make, makes the
//! event a [`Rejection`]. The template's own text may say `..` (`../var/...`, out of the topology
//! folder).

use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};
use serde::Deserialize;

use crate::event::Headers;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text copied as is.
    Text(String),
    /// `%{name}`: the value of header `name` (empty when the event has none, as Flume).
    Header(String),
    /// A time escape letter: one of `Y m d H M S y j s`.
    Time(char),
}

/// The unit of `round_value` (Flume's `hdfs.roundUnit`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum RoundUnit {
    /// Seconds; `round_value` from 1 to 60.
    Second,
    /// Minutes; `round_value` from 1 to 60.
    #[default]
    Minute,
    /// Hours; `round_value` from 1 to 24.
    Hour,
}

/// How the event time is rounded down before the time escapes are filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rounding {
    /// The field is rounded down to a multiple of this (e.g. 10 with `Minute`: 12:37 -> 12:30).
    pub value: u8,
    /// The field rounded.
    pub unit: RoundUnit,
}

/// A parsed path template, e.g. `out/%{host}/%Y-%m-%d/%H`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    pieces: Vec<Piece>,
    uses_time: bool,
    uses_headers: bool,
    /// Bytes the sink adds to the last component when it names a file (counter, suffixes).
    file_name_reserve: usize,
}

/// The longest name of one directory entry on Linux file systems (`NAME_MAX`), in bytes.
pub const NAME_MAX: usize = 255;

/// Why an event's path could not be resolved. The event goes to the `rejected` bucket (or fails
/// the batch, as configured) and is counted in `EventRejectedCount`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A header value holds `/`, is `..` in a component, or holds a control character (NUL,
    /// `\n`, `\r`, ...).
    #[error("header {header:?} value {value:?} could leave the base directory or holds a control character")]
    UnsafeHeader {
        /// The header named in the template.
        header: String,
        /// Its value.
        value: String,
    },
    /// A header value makes a path component longer than the file system allows
    /// ([`NAME_MAX`] bytes, less what the file name adds to the last component).
    #[error("header {header:?} makes a path component of {bytes} bytes (at most {max})")]
    NameTooLong {
        /// The header named in the template.
        header: String,
        /// The length of the component it made, in bytes.
        bytes: usize,
        /// The most that component may hold, in bytes.
        max: usize,
    },
    /// The template has time escapes and the event has no `timestamp` header (and the local
    /// time is not used).
    #[error("no timestamp header (set use_local_time_stamp: true, or add a Timestamp interceptor)")]
    NoTimestamp,
    /// The `timestamp` header is not a number of milliseconds since the epoch in range.
    #[error("timestamp header {0:?} is not milliseconds since the epoch")]
    BadTimestamp(String),
}

impl PathTemplate {
    /// Parses `text`.
    ///
    /// # Errors
    /// An unknown escape (`%q`), an unclosed `%{`, or an empty header name, in words.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text_buf = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text_buf.push(c);
                continue;
            }
            let piece = match chars.next() {
                Some('%') => {
                    text_buf.push('%');
                    continue;
                }
                Some('{') => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => name.push(ch),
                            None => return Err(format!("unclosed %{{ in path {text:?}")),
                        }
                    }
                    if name.is_empty() {
                        return Err(format!("empty header name %{{}} in path {text:?}"));
                    }
                    Piece::Header(name)
                }
                Some(l @ ('Y' | 'm' | 'd' | 'H' | 'M' | 'S' | 'y' | 'j' | 's')) => Piece::Time(l),
                Some(other) => {
                    return Err(format!(
                        "unknown escape %{other} in path {text:?} (known: %Y %m %d %H %M %S %y %j %s %{{header}} %%)"
                    ))
                }
                None => return Err(format!("path {text:?} ends with a lone %")),
            };
            if !text_buf.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text_buf)));
            }
            pieces.push(piece);
        }
        if !text_buf.is_empty() {
            pieces.push(Piece::Text(text_buf));
        }
        let uses_time = pieces.iter().any(|p| matches!(p, Piece::Time(_)));
        let uses_headers = pieces.iter().any(|p| matches!(p, Piece::Header(_)));
        Ok(PathTemplate { pieces, uses_time, uses_headers, file_name_reserve: 0 })
    }

    /// The same template, for a path whose last component the sink extends by `bytes` when it
    /// names a file: a header may then make that component at most [`NAME_MAX`] `- bytes` long.
    #[must_use]
    pub fn with_file_name_reserve(mut self, bytes: usize) -> Self {
        self.file_name_reserve = bytes;
        self
    }

    /// Whether the template has time escapes (and so needs an event time).
    pub fn uses_time(&self) -> bool {
        self.uses_time
    }

    /// Whether the template has header escapes.
    pub fn uses_headers(&self) -> bool {
        self.uses_headers
    }

    /// The leading components that hold no escape: where the `rejected` bucket goes.
    /// `out/%{host}/%Y` -> `out`; `%{host}` -> `` (the topology folder).
    pub fn static_prefix(&self) -> String {
        let mut literal = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => literal.push_str(t),
                _ => {
                    // Keep whole components only: cut back to the last '/'.
                    return match literal.rfind('/') {
                        Some(i) => literal[..i].to_string(),
                        None => String::new(),
                    };
                }
            }
        }
        literal
    }

    /// The path for an event with `headers`, whose time is `time` (already rounded).
    ///
    /// # Errors
    /// [`Rejection::UnsafeHeader`] when a header value could leave the base directory;
    /// [`Rejection::NoTimestamp`] when the template has time escapes and `time` is `None`.
    pub fn resolve(&self, headers: &Headers, time: Option<&Zoned>) -> Result<String, Rejection> {
        let mut out = String::new();
        // Where each header's value went in `out`: a `..` component is refused only when a header
        // made it (the template's own text may climb out of the topology folder, `../var/...`).
        let mut spans: Vec<(usize, usize, &str)> = Vec::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Header(name) => {
                    let value = headers.get(name).map_or("", String::as_str);
                    if value.contains('/') || value.chars().any(char::is_control) {
                        return Err(Rejection::UnsafeHeader { header: name.clone(), value: value.into() });
                    }
                    if !value.is_empty() {
                        spans.push((out.len(), out.len() + value.len(), name));
                    }
                    out.push_str(value);
                }
                Piece::Time(letter) => {
                    let t = time.ok_or(Rejection::NoTimestamp)?;
                    use std::fmt::Write as _;
                    let _ = match letter {
                        'Y' => write!(out, "{:04}", t.year()),
                        'm' => write!(out, "{:02}", t.month()),
                        'd' => write!(out, "{:02}", t.day()),
                        'H' => write!(out, "{:02}", t.hour()),
                        'M' => write!(out, "{:02}", t.minute()),
                        'S' => write!(out, "{:02}", t.second()),
                        'y' => write!(out, "{:02}", t.year().rem_euclid(100)),
                        'j' => write!(out, "{:03}", t.day_of_year()),
                        _ => write!(out, "{}", t.timestamp().as_second()),
                    };
                }
            }
        }
        if self.uses_headers {
            // An empty header value first would turn a relative template into an absolute path.
            let relative = !matches!(self.pieces.first(), Some(Piece::Text(t)) if t.starts_with('/'));
            if relative && out.starts_with('/') {
                return Err(Rejection::UnsafeHeader { header: String::new(), value: String::new() });
            }
            let mut start = 0;
            let last = out.matches('/').count();
            for (i, component) in out.split('/').enumerate() {
                let end = start + component.len();
                let header = spans.iter().find(|(s, e, _)| *s < end && *e > start).map(|(_, _, h)| *h);
                if let Some(header) = header {
                    if component == ".." {
                        return Err(Rejection::UnsafeHeader { header: header.to_string(), value: component.into() });
                    }
                    let max = if i == last { NAME_MAX.saturating_sub(self.file_name_reserve) } else { NAME_MAX };
                    if component.len() > max {
                        return Err(Rejection::NameTooLong { header: header.to_string(), bytes: component.len(), max });
                    }
                }
                start = end + 1;
            }
        }
        Ok(out)
    }
}

/// The event time in `tz`, rounded down as `round` says: the `timestamp` header (milliseconds
/// since the epoch), or with `use_local_time_stamp` the local clock for every event (as Flume's
/// `hdfs.useLocalTimeStamp`, which ignores the header).
///
/// # Errors
/// [`Rejection::BadTimestamp`] when the header is not a number of milliseconds in range;
/// [`Rejection::NoTimestamp`] when there is none and the local clock is not to be used.
pub fn event_time(
    headers: &Headers,
    use_local_time_stamp: bool,
    tz: &TimeZone,
    round: Option<Rounding>,
) -> Result<Zoned, Rejection> {
    Ok(zoned(event_timestamp(headers, use_local_time_stamp)?, tz, round))
}

/// The event's instant: its `timestamp` header, or the local clock with `use_local_time_stamp`.
///
/// # Errors
/// As [`event_time`].
pub fn event_timestamp(headers: &Headers, use_local_time_stamp: bool) -> Result<Timestamp, Rejection> {
    if use_local_time_stamp {
        return Ok(Timestamp::now());
    }
    let text = headers.get("timestamp").ok_or(Rejection::NoTimestamp)?;
    let ms: i64 = text.trim().parse().map_err(|_| Rejection::BadTimestamp(text.clone()))?;
    Timestamp::from_millisecond(ms).map_err(|_| Rejection::BadTimestamp(text.clone()))
}

/// `ts` in `tz`, rounded down as `round` says. Every escape depends only on the whole second of
/// `ts`, so callers may reuse the answer for instants within one second.
pub fn zoned(ts: Timestamp, tz: &TimeZone, round: Option<Rounding>) -> Zoned {
    let zoned = ts.to_zoned(tz.clone());
    match round {
        None => zoned,
        Some(r) => round_down(&zoned, r),
    }
}

/// Rounds the calendar field of `unit` down to a multiple of `value` and clears the smaller ones,
/// as Flume's `TimestampRoundDownUtil` (12:37:21 with 10 Minute -> 12:30:00).
pub fn round_down(t: &Zoned, r: Rounding) -> Zoned {
    let v = i8::try_from(r.value.max(1)).unwrap_or(1);
    let dt = t.datetime();
    let rounded = match r.unit {
        RoundUnit::Second => dt.with().second(dt.second() / v * v).subsec_nanosecond(0).build(),
        RoundUnit::Minute => dt.with().minute(dt.minute() / v * v).second(0).subsec_nanosecond(0).build(),
        RoundUnit::Hour => dt.with().hour(dt.hour() / v * v).minute(0).second(0).subsec_nanosecond(0).build(),
    };
    rounded.and_then(|dt| dt.to_zoned(t.time_zone().clone())).unwrap_or_else(|_| t.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// HDFS_2k.log lines start with `yyMMdd HHmmss`; this is the first one's time in ms (UTC).
    fn hdfs_line_ms(line: &str) -> i64 {
        let (date, rest) = line.split_once(' ').unwrap();
        let time = &rest[..6];
        let text = format!(
            "20{}-{}-{}T{}:{}:{}Z",
            &date[0..2],
            &date[2..4],
            &date[4..6],
            &time[0..2],
            &time[2..4],
            &time[4..6]
        );
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn loghub_hdfs_lines() -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/topologies/data/loghub/HDFS_2k.log");
        std::fs::read_to_string(path).unwrap().lines().map(String::from).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn escapes_fill_in_the_event_time_and_headers() {
        let line = &loghub_hdfs_lines()[0];
        assert!(line.starts_with("081109 203615"), "{line}");
        let ms = hdfs_line_ms(line);
        let h = headers(&[("timestamp", &ms.to_string()), ("host", "dn-1")]);
        let t = event_time(&h, false, &TimeZone::UTC, None).unwrap();
        let tpl = PathTemplate::parse("out/%{host}/%Y-%m-%d/%H%M%S/%y.%j.%s/100%%").unwrap();
        assert_eq!(tpl.resolve(&h, Some(&t)).unwrap(), "out/dn-1/2008-11-09/203615/08.314.1226262975/100%");
        assert_eq!(tpl.static_prefix(), "out");
        assert_eq!(PathTemplate::parse("%{host}/x").unwrap().static_prefix(), "");
        assert_eq!(PathTemplate::parse("a/b/c").unwrap().static_prefix(), "a/b/c");
        assert_eq!(PathTemplate::parse("a/b%Y/c").unwrap().static_prefix(), "a");
    }

    #[test]
    fn rounding_takes_the_field_down_to_a_multiple() {
        let tpl = PathTemplate::parse("%H:%M:%S").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for line in loghub_hdfs_lines().iter().take(300) {
            let ms = hdfs_line_ms(line);
            let h = headers(&[("timestamp", &ms.to_string())]);
            let exact = event_time(&h, false, &TimeZone::UTC, None).unwrap();
            for (value, unit) in [(10, RoundUnit::Second), (5, RoundUnit::Minute), (2, RoundUnit::Hour)] {
                let r = Rounding { value, unit };
                let t = event_time(&h, false, &TimeZone::UTC, Some(r)).unwrap();
                let got = tpl.resolve(&h, Some(&t)).unwrap();
                let v = i8::try_from(value).unwrap();
                let want = match unit {
                    RoundUnit::Second => {
                        format!("{:02}:{:02}:{:02}", exact.hour(), exact.minute(), exact.second() / v * v)
                    }
                    RoundUnit::Minute => format!("{:02}:{:02}:00", exact.hour(), exact.minute() / v * v),
                    RoundUnit::Hour => format!("{:02}:00:00", exact.hour() / v * v),
                };
                assert_eq!(got, want, "{line}");
                assert!(t.timestamp() <= exact.timestamp());
                seen.insert(got);
            }
        }
        assert!(seen.len() > 3, "the lines span several buckets: {seen:?}");
        // A zone other than UTC: 20:36:15 UTC is 21:36:15 in Berlin, rounded to 21:30.
        let line = &loghub_hdfs_lines()[0];
        let h = headers(&[("timestamp", &hdfs_line_ms(line).to_string())]);
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let t = event_time(&h, false, &berlin, Some(Rounding { value: 30, unit: RoundUnit::Minute })).unwrap();
        assert_eq!(tpl.resolve(&h, Some(&t)).unwrap(), "21:30:00");
    }

    #[test]
    fn header_values_that_could_leave_the_base_are_rejected() {
        let tpl = PathTemplate::parse("out/%{host}/%{dc}x").unwrap();
        for bad in ["../x", "a/b", "..", "/etc", "a\0b", "a\nb", "a\rb", "\u{1b}[31m"] {
            let err = tpl.resolve(&headers(&[("host", bad)]), None).unwrap_err();
            assert!(matches!(err, Rejection::UnsafeHeader { .. }), "{bad:?}: {err}");
        }
        // `..` made of a header and literal text is caught on the resolved component too.
        let tpl2 = PathTemplate::parse("out/.%{h}/f").unwrap();
        assert!(tpl2.resolve(&headers(&[("h", ".")]), None).is_err());
        for good in ["..x", "a.b", "...", "host-1"] {
            assert!(tpl.resolve(&headers(&[("host", good)]), None).is_ok(), "{good:?}");
        }
        // A missing header is empty, as Flume; but it may not make a relative path absolute.
        assert_eq!(tpl.resolve(&Headers::new(), None).unwrap(), "out//x");
        // The template's own `..` (out of the topology folder) is not a header's doing.
        let up = PathTemplate::parse("../var/%{host}/../%{dc}").unwrap();
        assert_eq!(up.resolve(&headers(&[("host", "h"), ("dc", "eu")]), None).unwrap(), "../var/h/../eu");
        let err = up.resolve(&headers(&[("host", "h"), ("dc", "..")]), None).unwrap_err();
        assert!(matches!(err, Rejection::UnsafeHeader { ref header, .. } if header == "dc"), "{err}");
        let first = PathTemplate::parse("%{host}/x").unwrap();
        assert!(first.resolve(&Headers::new(), None).is_err());
        assert_eq!(first.resolve(&headers(&[("host", "h")]), None).unwrap(), "h/x");
    }

    #[test]
    fn header_values_longer_than_a_file_name_are_rejected() {
        let tpl = PathTemplate::parse("out/%{host}/%{app}-log").unwrap().with_file_name_reserve(40);
        let long = "h".repeat(NAME_MAX + 1);
        let err = tpl.resolve(&headers(&[("host", &long), ("app", "a")]), None).unwrap_err();
        assert_eq!(err, Rejection::NameTooLong { header: "host".into(), bytes: 256, max: NAME_MAX });
        let ok = "h".repeat(NAME_MAX);
        assert!(tpl.resolve(&headers(&[("host", &ok), ("app", "a")]), None).is_ok());
        // The last component leaves room for what the file name adds.
        let app = "a".repeat(NAME_MAX - 40 - "-log".len());
        assert!(tpl.resolve(&headers(&[("host", "h"), ("app", &app)]), None).is_ok());
        let err = tpl.resolve(&headers(&[("host", "h"), ("app", &format!("{app}a"))]), None).unwrap_err();
        assert!(matches!(err, Rejection::NameTooLong { ref header, max: 215, .. } if header == "app"), "{err}");
        // The template's own text is the topology's business, not an event's.
        let fixed = PathTemplate::parse(&format!("{}/%{{h}}", "d".repeat(300))).unwrap();
        assert!(fixed.resolve(&headers(&[("h", "x")]), None).is_ok());
    }

    #[test]
    fn time_escapes_need_a_valid_timestamp() {
        let tpl = PathTemplate::parse("%Y").unwrap();
        assert!(tpl.uses_time());
        assert_eq!(tpl.resolve(&Headers::new(), None), Err(Rejection::NoTimestamp));
        let bad = headers(&[("timestamp", "yesterday")]);
        assert!(matches!(event_time(&bad, false, &TimeZone::UTC, None), Err(Rejection::BadTimestamp(_))));
        assert!(event_time(&Headers::new(), true, &TimeZone::UTC, None).is_ok());
    }

    #[test]
    fn templates_reject_unknown_escapes() {
        for bad in ["%q", "%{host", "%{}", "a%"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
