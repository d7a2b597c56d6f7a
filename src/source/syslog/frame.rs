//! Cutting a syslog TCP stream into messages (RFC 6587): octet counting (§3.4.1, `LEN SP MSG`)
//! or non-transparent framing (§3.4.2, a message ends at LF; a CR before it is dropped).
//!
//! The method is chosen per message: one that starts with 1 to 9 digits, a space and `<` is
//! octet-counted, anything else runs to the next LF. Messages longer than the limit are cut to it
//! and flagged (the caller counts them); the rest of such a message is skipped. Blank lines between
//! messages are not messages and are skipped.

use bytes::{Buf, BytesMut};

use crate::source::lines::{Framing, Line, ReadRoom};

/// A read buffer that hands out complete syslog messages.
#[derive(Debug)]
pub struct SyslogFrames {
    buf: BytesMut,
    room: ReadRoom,
    max: usize,
    /// Bytes of a cut octet-counted message still to skip.
    skip: usize,
    /// Skipping the rest of a cut LF-terminated message.
    skip_line: bool,
}

/// What the start of the buffer says about the next message's framing.
enum Start {
    /// Octet counting: the message length and the length of `LEN SP`.
    Counted(usize, usize),
    /// Up to the next LF.
    Line,
    /// Not enough bytes to tell.
    Unknown,
}

impl SyslogFrames {
    /// A buffer cutting messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        SyslogFrames { buf: BytesMut::new(), room: ReadRoom::default(), max: max.max(1), skip: 0, skip_line: false }
    }

    fn start(&self) -> Start {
        start(&self.buf)
    }

    /// Drops what is left of a cut message; answers whether that is done.
    fn skip_rest(&mut self) -> bool {
        if self.skip > 0 {
            let n = self.skip.min(self.buf.len());
            self.buf.advance(n);
            self.skip -= n;
            return self.skip == 0;
        }
        if self.skip_line {
            match memchr::memchr(b'\n', &self.buf) {
                Some(pos) => {
                    self.buf.advance(pos + 1);
                    self.skip_line = false;
                }
                None => {
                    self.buf.clear();
                    return false;
                }
            }
        }
        true
    }
}

impl Framing for SyslogFrames {
    fn buffer_mut(&mut self) -> &mut BytesMut {
        self.room.prepare(&mut self.buf)
    }

    fn filled(&mut self, n: usize) {
        self.room.filled(n);
    }

    fn idle(&mut self) {
        self.room.idle(&mut self.buf);
    }

    fn next_line(&mut self) -> Option<Line> {
        loop {
            if !self.skip_rest() {
                return None;
            }
            // Blank lines between messages.
            let blank = self.buf.iter().take_while(|&&b| b == b'\n' || b == b'\r').count();
            if blank == self.buf.len() && self.buf.last() == Some(&b'\r') {
                // A CR that may start a CRLF: keep it until the next byte comes.
                self.buf.advance(blank - 1);
                return None;
            }
            self.buf.advance(blank);
            if self.buf.is_empty() {
                return None;
            }
            match self.start() {
                Start::Unknown => return None,
                Start::Counted(len, head) => {
                    let keep = len.min(self.max);
                    if self.buf.len() < head + keep {
                        return None;
                    }
                    self.buf.advance(head);
                    let body = self.buf.split_to(keep).freeze();
                    self.skip = len - keep;
                    return Some(Line { body, truncated: len > keep });
                }
                Start::Line => {
                    let limit = self.buf.len().min(self.max + 2);
                    match memchr::memchr(b'\n', &self.buf[..limit]) {
                        Some(pos) => {
                            let mut line = self.buf.split_to(pos + 1);
                            let end = if pos > 0 && line[pos - 1] == b'\r' { pos - 1 } else { pos };
                            if end == 0 {
                                continue;
                            }
                            line.truncate(end.min(self.max));
                            return Some(Line { body: line.freeze(), truncated: end > self.max });
                        }
                        None if self.buf.len() > self.max + 1 => {
                            let body = self.buf.split_to(self.max).freeze();
                            self.skip_line = true;
                            return Some(Line { body, truncated: true });
                        }
                        None => return None,
                    }
                }
            }
        }
    }

    /// At the end of the stream: what is left is a last message without its LF, or an
    /// octet-counted message cut short by the sender (flagged as cut).
    fn finish(&mut self) -> Option<Line> {
        if let Some(line) = self.next_line() {
            return Some(line);
        }
        if self.skip > 0 || self.skip_line {
            self.buf.clear();
            (self.skip, self.skip_line) = (0, false);
            return None;
        }
        let mut rest = self.buf.split();
        let mut truncated = false;
        if let Start::Counted(len, head) = start(&rest) {
            rest.advance(head);
            truncated = rest.len() < len;
        }
        while rest.last().is_some_and(|&b| b == b'\r' || b == b'\n') {
            rest.truncate(rest.len() - 1);
        }
        if rest.is_empty() {
            return None;
        }
        truncated |= rest.len() > self.max;
        rest.truncate(rest.len().min(self.max));
        Some(Line { body: rest.freeze(), truncated })
    }
}

/// How the message at the start of `buf` is framed. An octet count is `NONZERO-DIGIT *DIGIT`
/// (RFC 6587 §3.4.1): `0 <...` or `012 <...` starts a line, not an empty or zero-led message.
fn start(buf: &[u8]) -> Start {
    let digits = buf.iter().take(10).take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 || buf[0] == b'0' {
        return Start::Line;
    }
    match (buf.get(digits), buf.get(digits + 1)) {
        (None, _) | (Some(b' '), None) => Start::Unknown,
        (Some(b' '), Some(b'<')) => {
            let len = std::str::from_utf8(&buf[..digits]).ok().and_then(|s| s.parse().ok());
            len.map_or(Start::Line, |len| Start::Counted(len, digits + 1))
        }
        _ => Start::Line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], max: usize) -> Vec<(String, bool)> {
        let mut f = SyslogFrames::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            f.buffer_mut().extend_from_slice(chunk);
            while let Some(l) = f.next_line() {
                out.push((String::from_utf8(l.body.to_vec()).unwrap(), l.truncated));
            }
        }
        out.extend(f.finish().map(|l| (String::from_utf8(l.body.to_vec()).unwrap(), l.truncated)));
        out
    }

    fn ok(s: &str) -> (String, bool) {
        (s.to_string(), false)
    }

    #[test]
    fn octet_counted_and_lf_framed_messages_mix_per_message() {
        let counted = |m: &str| format!("{} {m}", m.len());
        let stream = format!(
            "{}<14>plain line\r\n\n{}{}{}",
            counted("<13>1 - - x"),
            counted("<1>abc"),
            counted("<13>1 - - - - - -\n"),
            counted("<2>a\nb\n")
        );
        let stream = stream.as_bytes();
        assert_eq!(
            frames(&[stream], 100),
            vec![ok("<13>1 - - x"), ok("<14>plain line"), ok("<1>abc"), ok("<13>1 - - - - - -\n"), ok("<2>a\nb\n")]
        );
        // The same stream a byte at a time.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frames(&bytes, 100), frames(&[stream], 100));
    }

    #[test]
    fn digits_without_a_following_pri_are_a_line() {
        assert_eq!(frames(&[b"2024 was a year\n12 x\n"], 100), vec![ok("2024 was a year"), ok("12 x")]);
    }

    #[test]
    fn a_length_of_zero_or_with_a_leading_zero_is_not_octet_counting() {
        // Found by fuzz/fuzz_targets/syslog_frame.rs: "0 <" was an empty message.
        assert_eq!(frames(&[b"0 <"], 114), vec![ok("0 <")]);
        assert_eq!(frames(&[b"0 <13>a\n", b"05 <1>b\n4 <1>c"], 100), vec![ok("0 <13>a"), ok("05 <1>b"), ok("<1>c")]);
    }

    #[test]
    fn long_messages_are_cut_and_their_rest_skipped() {
        assert_eq!(
            frames(&[b"10 <1>abcdefg", b"<2>b\n", b"<3>0123456789\n<4>ok\n"], 5),
            vec![("<1>ab".into(), true), ok("<2>b"), ("<3>01".into(), true), ok("<4>ok")]
        );
    }

    #[test]
    fn a_short_octet_counted_message_at_the_end_is_kept_and_flagged() {
        assert_eq!(frames(&[b"30 <1>1 - - - - - - cut"], 100), vec![("<1>1 - - - - - - cut".into(), true)]);
        assert_eq!(frames(&[b"<1>last without LF"], 100), vec![ok("<1>last without LF")]);
    }
}
