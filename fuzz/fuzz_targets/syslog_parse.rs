//! The syslog message parser (RFC 5424 and RFC 3164) on any bytes: it never panics, a message
//! that parses keeps its body inside the message, and one that does not is kept whole and flagged.
#![no_main]

use bytes::Bytes;
use flumen::source::syslog::parse;
use libfuzzer_sys::fuzz_target;

/// 2024-02-29T12:00:00Z in milliseconds: a leap day, so RFC 3164 `Feb 29` has a year.
const NOW_MS: i64 = 1_709_208_000_000;

fuzz_target!(|data: &[u8]| {
    if let Some((_, start)) = parse::parse(data, NOW_MS) {
        assert!(start <= data.len(), "body start {start} past the message's {} bytes", data.len());
    }
    // Also on 2024-01-01 (a December timestamp is last year's) and at the epoch.
    for now in [NOW_MS, 1_704_067_200_000, 0] {
        let (event, parsed) = parse::to_event(Bytes::copy_from_slice(data), now);
        if parsed {
            assert!(data.ends_with(&event.body));
        } else {
            assert_eq!(&event.body[..], data, "an unparsed message is kept whole");
            assert_eq!(event.headers.get("syslog_invalid").map(String::as_str), Some("true"));
        }
    }
});
