//! Splitting a byte stream into line events: LF or CRLF ends a line and is not part of the body.
//!
//! Lines longer than a limit are cut to the limit and flagged (the caller counts them); the rest
//! of such a line is skipped up to its end. Line bodies are zero-copy slices of the read buffer.

use bytes::{Bytes, BytesMut};

/// One line read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The line without its LF or CRLF (cut to the limit when `truncated`).
    pub body: Bytes,
    /// Whether the line was longer than the limit and was cut.
    pub truncated: bool,
}

/// A read buffer that hands out complete lines and counts the stream bytes they used.
#[derive(Debug)]
pub struct LineBuffer {
    buf: BytesMut,
    max_line: usize,
    skipping: bool,
    consumed: u64,
}

/// How much room a read gets in the buffer, in bytes.
pub const READ_CHUNK: usize = 256 * 1024;

impl LineBuffer {
    /// A buffer cutting lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineBuffer { buf: BytesMut::with_capacity(READ_CHUNK), max_line: max_line.max(1), skipping: false, consumed: 0 }
    }

    /// The buffer to read more bytes into (with room for a read of at least a quarter [`READ_CHUNK`]).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        &mut self.buf
    }

    /// Stream bytes used by the lines handed out so far, skipped remainders of cut lines included.
    ///
    /// A reader that put every line handed out so far may acknowledge the input up to here.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Bytes buffered that are not yet part of a line handed out.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Whether the buffer holds nothing: no buffered bytes, and not inside the skipped rest of a
    /// cut line. Such a buffer may be dropped and a new one started at [`LineBuffer::consumed`].
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && !self.skipping
    }

    /// The next complete line, if the buffer holds one (or a cut one when it is over the limit).
    pub fn next_line(&mut self) -> Option<Line> {
        if self.skipping {
            match memchr::memchr(b'\n', &self.buf) {
                Some(pos) => {
                    let _ = self.buf.split_to(pos + 1);
                    self.consumed += pos as u64 + 1;
                    self.skipping = false;
                }
                None => {
                    self.consumed += self.buf.len() as u64;
                    self.buf.clear();
                    return None;
                }
            }
        }
        let limit = self.buf.len().min(self.max_line + 2);
        match memchr::memchr(b'\n', &self.buf[..limit]) {
            Some(pos) => {
                let mut line = self.buf.split_to(pos + 1);
                self.consumed += pos as u64 + 1;
                let mut end = pos;
                if end > 0 && line[end - 1] == b'\r' {
                    end -= 1;
                }
                let truncated = end > self.max_line;
                line.truncate(end.min(self.max_line));
                Some(Line { body: line.freeze(), truncated })
            }
            None if self.buf.len() > self.max_line + 1 => {
                let body = self.buf.split_to(self.max_line).freeze();
                self.consumed += self.max_line as u64;
                self.skipping = true;
                Some(Line { body, truncated: true })
            }
            None => None,
        }
    }

    /// At the end of the stream: the final line if it has no line ending (it is still an event).
    pub fn finish(&mut self) -> Option<Line> {
        if self.skipping {
            self.consumed += self.buf.len() as u64;
            self.buf.clear();
            self.skipping = false;
            return None;
        }
        if self.buf.is_empty() {
            return None;
        }
        let mut line = self.buf.split();
        self.consumed += line.len() as u64;
        if line.ends_with(b"\r") {
            line.truncate(line.len() - 1);
        }
        let truncated = line.len() > self.max_line;
        line.truncate(line.len().min(self.max_line));
        Some(Line { body: line.freeze(), truncated })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lb: &mut LineBuffer, data: &[u8]) {
        lb.buffer_mut().extend_from_slice(data);
    }

    #[test]
    fn splits_lf_and_crlf_and_counts_bytes() {
        let mut lb = LineBuffer::new(100);
        feed(&mut lb, b"[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok\r\nsecond line\nthi");
        assert_eq!(lb.next_line().unwrap().body, &b"[Sun Dec 04 04:47:44 2005] [notice] workerEnv.init() ok"[..]);
        assert_eq!(lb.next_line().unwrap().body, &b"second line"[..]);
        assert_eq!(lb.next_line(), None);
        assert_eq!(lb.consumed(), 57 + 12);
        feed(&mut lb, b"rd\n");
        assert_eq!(lb.next_line().unwrap().body, &b"third"[..]);
        assert_eq!(lb.consumed(), 57 + 12 + 6);
    }

    #[test]
    fn long_lines_are_cut_flagged_and_their_rest_skipped() {
        let mut lb = LineBuffer::new(5);
        feed(&mut lb, b"abcdefgh");
        let line = lb.next_line().unwrap();
        assert_eq!((line.body.as_ref(), line.truncated), (&b"abcde"[..], true));
        assert_eq!(lb.next_line(), None);
        feed(&mut lb, b"ij\nok\n");
        let line = lb.next_line().unwrap();
        assert_eq!((line.body.as_ref(), line.truncated), (&b"ok"[..], false));
        assert_eq!(lb.consumed(), 14);
        feed(&mut lb, b"abcdefg\n");
        let line = lb.next_line().unwrap();
        assert_eq!((line.body.as_ref(), line.truncated), (&b"abcde"[..], true));
        assert_eq!(lb.next_line(), None);
        assert_eq!(lb.consumed(), 22);
    }

    #[test]
    fn final_line_without_newline_is_an_event() {
        let mut lb = LineBuffer::new(100);
        feed(&mut lb, b"one\ntwo");
        assert_eq!(lb.next_line().unwrap().body, &b"one"[..]);
        assert_eq!(lb.next_line(), None);
        assert_eq!(lb.finish().unwrap().body, &b"two"[..]);
        assert_eq!(lb.consumed(), 7);
        assert_eq!(lb.finish(), None);
    }
}

/// A read buffer that cuts a byte stream into [`Line`]s: [`LineBuffer`] (LF), or another framing
/// (syslog's octet counting).
pub trait Framing {
    /// The buffer to read more bytes into.
    fn buffer_mut(&mut self) -> &mut BytesMut;
    /// The next complete frame, if the buffer holds one.
    fn next_line(&mut self) -> Option<Line>;
    /// At the end of the stream: the final frame, if bytes are left.
    fn finish(&mut self) -> Option<Line>;
}

impl Framing for LineBuffer {
    fn buffer_mut(&mut self) -> &mut BytesMut {
        LineBuffer::buffer_mut(self)
    }
    fn next_line(&mut self) -> Option<Line> {
        LineBuffer::next_line(self)
    }
    fn finish(&mut self) -> Option<Line> {
        LineBuffer::finish(self)
    }
}

/// Why [`read_batch`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// The batch is full, or the input paused for `linger` with a partial batch.
    More,
    /// The reader reached its end (the final unterminated line, if any, is in the batch).
    Eof,
    /// The agent is stopping (only returned with an empty batch).
    Stopping,
}

/// Reads up to `max` lines (frames) from `reader` through `lb`.
///
/// Waits as long as needed for a first line; once it has one, waits at most `linger` for more
/// before returning a partial batch (a source does not hold events back while its input pauses).
///
/// # Errors
/// The reader's I/O error.
pub async fn read_batch<F: Framing, R: tokio::io::AsyncRead + Unpin>(
    lb: &mut F,
    reader: &mut R,
    max: usize,
    linger: std::time::Duration,
    ctx: &super::SourceContext,
) -> std::io::Result<(Vec<Line>, ReadEnd)> {
    use tokio::io::AsyncReadExt;
    let mut lines = Vec::with_capacity(max.min(4096));
    loop {
        while lines.len() < max {
            match lb.next_line() {
                Some(l) => lines.push(l),
                None => break,
            }
        }
        if lines.len() >= max {
            return Ok((lines, ReadEnd::More));
        }
        let read = reader.read_buf(lb.buffer_mut());
        let n = if lines.is_empty() {
            tokio::select! {
                r = read => r?,
                _ = ctx.stopping() => return Ok((lines, ReadEnd::Stopping)),
            }
        } else {
            match tokio::time::timeout(linger, read).await {
                Ok(r) => r?,
                Err(_) => return Ok((lines, ReadEnd::More)),
            }
        };
        if n == 0 {
            lines.extend(lb.finish());
            return Ok((lines, ReadEnd::Eof));
        }
    }
}

/// Turns lines into events, flagging and counting cut ones (`truncated: true` header).
pub fn to_events(lines: Vec<Line>, ctx: &super::SourceContext) -> Vec<crate::event::Event> {
    let mut cut = 0;
    let events = lines
        .into_iter()
        .map(|l| {
            let mut e = crate::event::Event::new(l.body);
            if l.truncated {
                cut += 1;
                e.headers.insert("truncated".into(), "true".into());
            }
            e
        })
        .collect();
    if cut > 0 {
        ctx.counters.malformed.add(cut);
        tracing::warn!(source = %ctx.name, lines = cut, "lines over max_line_length were cut");
    }
    events
}
