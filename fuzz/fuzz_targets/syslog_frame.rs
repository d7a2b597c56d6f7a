//! The syslog TCP framer (RFC 6587 octet counting and LF framing) on any stream cut into any
//! reads: it never panics, never hands out a message longer than its limit, and never buffers
//! more than its limit plus one read.
//!
//! Input: byte 0 picks the limit (1 to 256 bytes, or 64 KiB), byte 1 the read size (1 to 256
//! bytes); the rest is the stream.
#![no_main]

use flumen::source::lines::Framing;
use flumen::source::syslog::frame::SyslogFrames;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [limit, read, stream @ ..] = data else { return };
    let max = if *limit == 0 { 65_536 } else { usize::from(*limit) };
    let read = usize::from(*read) + 1;
    let mut frames = SyslogFrames::new(max);
    let mut out = 0usize;
    for chunk in stream.chunks(read) {
        frames.buffer_mut().extend_from_slice(chunk);
        while let Some(line) = frames.next_line() {
            assert!(line.body.len() <= max, "message of {} bytes over the limit {max}", line.body.len());
            assert!(!line.body.is_empty(), "an empty message");
            out += line.body.len();
        }
        assert!(frames.buffer_mut().len() <= max + 10, "buffered beyond the limit");
    }
    while let Some(line) = frames.finish() {
        assert!(line.body.len() <= max);
        out += line.body.len();
    }
    assert!(out <= stream.len());
});
