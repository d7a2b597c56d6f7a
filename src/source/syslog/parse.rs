//! Parsing one syslog message (RFC 5424 or RFC 3164) into event headers and a body.
//!
//! The body is the message's MSG part (RFC 5424 MSG without its UTF-8 BOM; RFC 3164 CONTENT after
//! `TAG[PID]: `), as Flume's syslog sources make the message the body. The header fields become
//! headers: `facility` and `severity` (numbers, from PRI), `timestamp` (milliseconds since the Unix
//! epoch, as Flume's syslog sources and the `Timestamp` interceptor), `hostname`, `app_name`,
//! `proc_id`, `msg_id` and `structured_data` (the STRUCTURED-DATA elements verbatim, brackets
//! included). A field that is absent or the NILVALUE `-` sets no header.
//!
//! A message without a valid PRI, or one announcing RFC 5424 (`<PRI>1 `) whose header does not
//! follow RFC 5424 §6, does not parse: it is kept whole as the body and flagged with
//! `syslog_invalid: "true"` (Flume's `flume.syslog.status: Invalid`).

use bytes::Bytes;

use crate::event::{Event, Headers};

/// The header flagging a message that did not parse (its body is the whole message).
pub const INVALID_HEADER: &str = "syslog_invalid";

/// The event for one syslog message, and whether it parsed.
///
/// `now_ms` (milliseconds since the Unix epoch) gives the year of RFC 3164 timestamps, which have
/// none: the current year in UTC, or the year before when that puts the message more than 31 days
/// in the future (a message from December read in January). RFC 3164 timestamps are read as UTC.
///
/// A message that does not parse is the whole body, with header `syslog_invalid: "true"`.
pub fn to_event(message: Bytes, now_ms: i64) -> (Event, bool) {
    match parse(&message, now_ms) {
        Some((headers, start)) => (Event { headers, body: message.slice(start..) }, true),
        None => (Event::new(message).with_header(INVALID_HEADER, "true"), false),
    }
}

/// The headers of `m` and where its body starts, or `None` when it does not parse.
pub fn parse(m: &[u8], now_ms: i64) -> Option<(Headers, usize)> {
    let (pri, at) = pri(m)?;
    let mut headers = Headers::new();
    headers.insert("facility".into(), (pri / 8).to_string());
    headers.insert("severity".into(), (pri % 8).to_string());
    if m[at..].starts_with(b"1 ") {
        let start = rfc5424(m, at + 2, &mut headers)?;
        Some((headers, start))
    } else {
        let start = rfc3164(m, at, now_ms, &mut headers);
        Some((headers, start))
    }
}

/// PRI (RFC 5424 §6.2.1): `<` 1 to 3 digits `>`, at most 191. Answers the value and what follows.
fn pri(m: &[u8]) -> Option<(u8, usize)> {
    if m.first() != Some(&b'<') {
        return None;
    }
    let digits = m[1..].iter().take(4).take_while(|b| b.is_ascii_digit()).count();
    if !(1..=3).contains(&digits) || m.get(1 + digits) != Some(&b'>') {
        return None;
    }
    let value: u16 = std::str::from_utf8(&m[1..1 + digits]).ok()?.parse().ok()?;
    (value <= 191).then_some((value as u8, digits + 2))
}

/// The header of an RFC 5424 message after `VERSION SP`; answers where MSG starts.
fn rfc5424(m: &[u8], mut at: usize, headers: &mut Headers) -> Option<usize> {
    let (timestamp, next) = field(m, at, 64)?;
    if timestamp != "-" {
        headers.insert("timestamp".into(), rfc3339_ms(timestamp)?.to_string());
    }
    at = next;
    for (name, max) in [("hostname", 255), ("app_name", 48), ("proc_id", 128), ("msg_id", 32)] {
        let (value, next) = field(m, at, max)?;
        if value != "-" {
            headers.insert(name.into(), value.to_string());
        }
        at = next;
    }
    let sd_end = structured_data(m, at)?;
    if &m[at..sd_end] != b"-" {
        headers.insert("structured_data".into(), std::str::from_utf8(&m[at..sd_end]).ok()?.to_string());
    }
    match m.get(sd_end) {
        None => Some(sd_end),
        Some(b' ') => {
            let msg = sd_end + 1;
            Some(if m[msg..].starts_with(b"\xEF\xBB\xBF") { msg + 3 } else { msg })
        }
        Some(_) => None,
    }
}

/// A header field of RFC 5424: 1 to `max` printable US-ASCII characters, then SP.
/// Answers the field and where the next one starts.
fn field(m: &[u8], at: usize, max: usize) -> Option<(&str, usize)> {
    let len = m.get(at..)?.iter().take(max + 1).take_while(|&&b| (33..=126).contains(&b)).count();
    if len == 0 || len > max || m.get(at + len) != Some(&b' ') {
        return None;
    }
    Some((std::str::from_utf8(&m[at..at + len]).ok()?, at + len + 1))
}

/// The end of STRUCTURED-DATA starting at `at` (RFC 5424 §6.3): `-`, or one or more
/// `[SD-ID *(SP PARAM-NAME="PARAM-VALUE")]` where a value escapes `"`, `\` and `]` with `\`.
fn structured_data(m: &[u8], at: usize) -> Option<usize> {
    if m.get(at) == Some(&b'-') {
        return Some(at + 1);
    }
    let mut i = at;
    while m.get(i) == Some(&b'[') {
        i += 1;
        let id = m[i..].iter().take_while(|&&b| (33..=126).contains(&b) && !b"= ]\"".contains(&b)).count();
        if id == 0 {
            return None;
        }
        i += id;
        let mut quoted = false;
        loop {
            match *m.get(i)? {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b']' if !quoted => break,
                _ => {}
            }
            i += 1;
        }
        i += 1;
    }
    (i > at).then_some(i)
}

/// An RFC 3339 timestamp as RFC 5424 §6.2.3 allows it (`2003-08-24T05:14:15.000003-07:00`), in
/// milliseconds since the Unix epoch (fractions below a millisecond are dropped).
fn rfc3339_ms(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut millis = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&digits) {
            return None;
        }
        let frac = &t[i + 1..i + 1 + digits.min(3)];
        millis = frac.parse::<i64>().ok()? * 10_i64.pow(3 - frac.len() as u32);
        i += 1 + digits;
    }
    let offset_min = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'+' {
                h * 60 + m
            } else {
                -(h * 60 + m)
            }
        }
        _ => return None,
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_min * 60;
    Some(seconds * 1000 + millis)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year (UTC) of `ms` milliseconds since the Unix epoch.
fn year_of(ms: i64) -> i64 {
    let days = ms.div_euclid(86_400_000);
    // Inverse of days_from_civil, year only.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

/// The rest of an RFC 3164 message after PRI (§4.1.2, §4.3): `Mmm dd hh:mm:ss SP HOSTNAME SP`
/// then MSG; answers where the body starts. Without a valid TIMESTAMP the whole rest is MSG
/// (as a relay treats it, §4.3.2). MSG opens with `TAG[PID]: ` when a TAG (1 to 48 printable
/// characters other than `[`, `]`, `:`) is followed by `:` or `[PID]:`; otherwise it has none.
fn rfc3164(m: &[u8], at: usize, now_ms: i64, headers: &mut Headers) -> usize {
    let mut msg = at;
    if let Some(ts) = bsd_timestamp(&m[at..], now_ms) {
        headers.insert("timestamp".into(), ts.to_string());
        msg = at + 16;
        let host = m[msg..].iter().take_while(|&&b| (33..=126).contains(&b)).count();
        if host > 0 && m.get(msg + host) == Some(&b' ') && m[msg + host - 1] != b':' {
            headers.insert("hostname".into(), String::from_utf8_lossy(&m[msg..msg + host]).into_owned());
            msg += host + 1;
        }
    }
    let tag_char = |b: &u8| (33..=126).contains(b) && !b"[]:".contains(b);
    let tag = m[msg..].iter().take(49).take_while(|b| tag_char(b)).count();
    if tag == 0 || tag > 48 {
        return msg;
    }
    let mut i = msg + tag;
    let mut pid = None;
    if m.get(i) == Some(&b'[') {
        let len = m[i + 1..].iter().take(129).take_while(|&&b| b != b']' && (33..=126).contains(&b)).count();
        if len == 0 || len > 128 || m.get(i + 1 + len) != Some(&b']') {
            return msg;
        }
        pid = Some(i + 1..i + 1 + len);
        i += len + 2;
    }
    if m.get(i) != Some(&b':') {
        return msg;
    }
    headers.insert("app_name".into(), String::from_utf8_lossy(&m[msg..msg + tag]).into_owned());
    if let Some(pid) = pid {
        headers.insert("proc_id".into(), String::from_utf8_lossy(&m[pid]).into_owned());
    }
    i += 1;
    if m.get(i) == Some(&b' ') {
        i += 1;
    }
    i
}

/// `Mmm dd hh:mm:ss ` (day space-padded, RFC 3164 §4.1.2) in milliseconds since the epoch, UTC.
fn bsd_timestamp(t: &[u8], now_ms: i64) -> Option<i64> {
    if t.len() < 16 || t[3] != b' ' || t[6] != b' ' || t[9] != b':' || t[12] != b':' || t[15] != b' ' {
        return None;
    }
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let month = MONTHS.iter().position(|m| &t[..3] == *m)? as i64 + 1;
    let two = |a: u8, b: u8| -> Option<i64> {
        let hi = if a == b' ' { 0 } else { a.is_ascii_digit().then(|| i64::from(a - b'0'))? };
        b.is_ascii_digit().then(|| hi * 10 + i64::from(b - b'0'))
    };
    let day = two(t[4], t[5])?;
    let (hour, minute, second) = (two(t[7], t[8])?, two(t[10], t[11])?, two(t[13], t[14])?);
    if t[7] == b' ' || t[10] == b' ' || t[13] == b' ' {
        return None;
    }
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let at = |year| (days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second) * 1000;
    let year = year_of(now_ms);
    let ms = at(year);
    Some(if ms > now_ms + 31 * 86_400_000 { at(year - 1) } else { ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-23T01:00:00Z.
    const NOW: i64 = 1_795_395_600_000;

    fn parsed(message: &str, now: i64) -> (Vec<(String, String)>, String, bool) {
        let (event, ok) = to_event(Bytes::copy_from_slice(message.as_bytes()), now);
        (event.headers.into_iter().collect(), String::from_utf8(event.body.to_vec()).unwrap(), ok)
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        v.sort();
        v
    }

    #[test]
    fn the_clock_constant_is_what_it_says() {
        assert_eq!(rfc3339_ms("2026-11-23T01:00:00Z"), Some(NOW));
        assert_eq!(year_of(NOW), 2026);
        assert_eq!(year_of(rfc3339_ms("2024-12-31T23:59:59.999Z").unwrap()), 2024);
        assert_eq!(year_of(rfc3339_ms("2025-01-01T00:00:00Z").unwrap()), 2025);
        assert_eq!(year_of(0), 1970);
    }

    #[test]
    fn rfc5424_example_1_bom_and_no_structured_data() {
        let (h, body, ok) = parsed(
            "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \u{feff}'su root' failed for lonvick on /dev/pts/8",
            NOW,
        );
        assert!(ok);
        assert_eq!(
            h,
            headers(&[
                ("facility", "4"),
                ("severity", "2"),
                ("timestamp", "1065910455003"),
                ("hostname", "mymachine.example.com"),
                ("app_name", "su"),
                ("msg_id", "ID47"),
            ])
        );
        assert_eq!(body, "'su root' failed for lonvick on /dev/pts/8");
    }

    #[test]
    fn rfc5424_example_2_offset_and_microseconds() {
        let (h, body, ok) = parsed(
            "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
            NOW,
        );
        assert!(ok);
        // 05:14:15 at -07:00 is 12:14:15Z.
        assert_eq!(
            h,
            headers(&[
                ("facility", "20"),
                ("severity", "5"),
                ("timestamp", "1061727255000"),
                ("hostname", "192.0.2.1"),
                ("app_name", "myproc"),
                ("proc_id", "8710"),
            ])
        );
        assert_eq!(body, "%% It's time to make the do-nuts.");
    }

    #[test]
    fn rfc5424_example_3_structured_data_and_bom() {
        let (h, body, ok) = parsed(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] \u{feff}An application event log entry...",
            NOW,
        );
        assert!(ok);
        assert_eq!(
            h,
            headers(&[
                ("facility", "20"),
                ("severity", "5"),
                ("timestamp", "1065910455003"),
                ("hostname", "mymachine.example.com"),
                ("app_name", "evntslog"),
                ("msg_id", "ID47"),
                ("structured_data", "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"]"),
            ])
        );
        assert_eq!(body, "An application event log entry...");
    }

    #[test]
    fn rfc5424_example_4_two_elements_and_no_msg() {
        let (h, body, ok) = parsed(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]",
            NOW,
        );
        assert!(ok);
        assert_eq!(
            h,
            headers(&[
                ("facility", "20"),
                ("severity", "5"),
                ("timestamp", "1065910455003"),
                ("hostname", "mymachine.example.com"),
                ("app_name", "evntslog"),
                ("msg_id", "ID47"),
                (
                    "structured_data",
                    "[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]"
                ),
            ])
        );
        assert_eq!(body, "");
    }

    #[test]
    fn rfc5424_escapes_in_values_and_nil_fields() {
        let (h, body, ok) = parsed("<14>1 - - - - - [a@1 x=\"q\\\"] [\\\\\"] msg", NOW);
        assert!(ok);
        assert_eq!(
            h,
            headers(&[("facility", "1"), ("severity", "6"), ("structured_data", "[a@1 x=\"q\\\"] [\\\\\"]")])
        );
        assert_eq!(body, "msg");
        let (h, body, ok) = parsed("<1>1 - - - - - -", NOW);
        assert!(ok);
        assert_eq!(h, headers(&[("facility", "0"), ("severity", "1")]));
        assert_eq!(body, "");
    }

    #[test]
    fn rfc3164_example_1() {
        let (h, body, ok) = parsed("<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8", NOW);
        assert!(ok);
        assert_eq!(
            h,
            headers(&[
                ("facility", "4"),
                ("severity", "2"),
                ("timestamp", &rfc3339_ms("2026-10-11T22:14:15Z").unwrap().to_string()),
                ("hostname", "mymachine"),
                ("app_name", "su"),
            ])
        );
        assert_eq!(body, "'su root' failed for lonvick on /dev/pts/8");
    }

    #[test]
    fn rfc3164_example_2_without_pri_is_invalid_and_kept_and_its_relayed_form_parses() {
        let (h, body, ok) = parsed("Use the BFG!", NOW);
        assert!(!ok);
        assert_eq!(h, headers(&[("syslog_invalid", "true")]));
        assert_eq!(body, "Use the BFG!");
        let (h, body, ok) = parsed("<13>Feb  5 17:32:18 10.0.0.99 Use the BFG!", NOW);
        assert!(ok);
        assert_eq!(
            h,
            headers(&[
                ("facility", "1"),
                ("severity", "5"),
                ("timestamp", &rfc3339_ms("2026-02-05T17:32:18Z").unwrap().to_string()),
                ("hostname", "10.0.0.99"),
            ])
        );
        assert_eq!(body, "Use the BFG!");
    }

    #[test]
    fn rfc3164_example_3_hostname_is_what_follows_the_timestamp() {
        let rest = "1987 mymachine myproc[10]: %% It's time to make the do-nuts.  %%  Ingredients: Mix=OK, Jelly=OK # Devices: Mixer=OK, Jelly_Injector=OK, Frier=OK # Transport: Conveyer1=OK, Conveyer2=OK # %%";
        let (h, body, ok) = parsed(&format!("<165>Aug 24 05:34:00 CST {rest}"), NOW);
        assert!(ok);
        assert_eq!(
            h,
            headers(&[
                ("facility", "20"),
                ("severity", "5"),
                ("timestamp", &rfc3339_ms("2026-08-24T05:34:00Z").unwrap().to_string()),
                ("hostname", "CST"),
            ])
        );
        assert_eq!(body, rest);
    }

    #[test]
    fn rfc3164_example_4_without_timestamp_is_all_content_and_its_relayed_form() {
        let original = "1990 Oct 22 10:52:01 TZ-6 scapegoat.dmz.example.org 10.1.2.3 sched[0]: That's All Folks!";
        let (h, body, ok) = parsed(&format!("<0>{original}"), NOW);
        assert!(ok);
        assert_eq!(h, headers(&[("facility", "0"), ("severity", "0")]));
        assert_eq!(body, original);
        let (h, body, ok) = parsed(&format!("<0>Oct 22 10:52:12 scapegoat {original}"), NOW);
        assert!(ok);
        assert_eq!(
            h,
            headers(&[
                ("facility", "0"),
                ("severity", "0"),
                ("timestamp", &rfc3339_ms("2026-10-22T10:52:12Z").unwrap().to_string()),
                ("hostname", "scapegoat"),
            ])
        );
        assert_eq!(body, original);
    }

    #[test]
    fn rfc3164_tag_with_pid_and_a_december_message_read_in_january() {
        let jan = rfc3339_ms("2027-01-02T00:00:00Z").unwrap();
        let (h, body, ok) = parsed("<38>Dec 31 23:59:59 combo sshd(pam_unix)[19939]: session opened", jan);
        assert!(ok);
        assert_eq!(
            h,
            headers(&[
                ("facility", "4"),
                ("severity", "6"),
                ("timestamp", &rfc3339_ms("2026-12-31T23:59:59Z").unwrap().to_string()),
                ("hostname", "combo"),
                ("app_name", "sshd(pam_unix)"),
                ("proc_id", "19939"),
            ])
        );
        assert_eq!(body, "session opened");
    }

    #[test]
    fn broken_messages_are_kept_whole_and_flagged() {
        for bad in [
            "",
            "<>1 - - - - - -",
            "<192>Oct 11 22:14:15 host x",
            "<1234>x",
            "<34 no end",
            "<34>1 2003-13-11T22:14:15Z host app - - - msg",
            "<34>1 2003-10-11 22:14:15Z host app - - - msg",
            "<34>1 - host app - - [unterminated msg",
            "<34>1 - host app - -- msg",
            "<34>1 - host",
        ] {
            let (h, body, ok) = parsed(bad, NOW);
            assert!(!ok, "{bad:?} parsed");
            assert_eq!(h, headers(&[("syslog_invalid", "true")]), "{bad:?}");
            assert_eq!(body, bad);
        }
    }
}
