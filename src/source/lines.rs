//! Splitting a byte stream into line events: LF or CRLF ends a line and is not part of the body.
//!
//! Lines longer than a limit are cut to the limit and flagged (the caller counts them); the rest
//! of such a line is skipped up to its end. [`LineBuffer`] copies each line body, as it hands it
//! out, into a body buffer sized to the bytes buffered (at most [`BODY_CHUNK`]), the bodies back
//! to back; so an event held in a channel keeps its own bytes, not the connection's read buffer,
//! alive, and the read buffer, never shared, is reused in place. Framings that cut bodies out of
//! their read buffer ([`Framing`]) get them copied by [`read_batch`] (`SyslogTcp`'s octet
//! counting), into one allocation of their size ([`compact`]). Stream read buffers start at
//! [`MIN_READ`] bytes, grow while reads fill them (up to [`READ_CHUNK`]) and shrink back when the
//! stream pauses.

use bytes::{Buf, Bytes, BytesMut};

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
    /// Bytes at the start of `buf` already handed out (dropped from `buf` before the next read).
    read: usize,
    /// Where bodies are copied as they are handed out; its spare room is for the next bodies.
    bodies: BytesMut,
    room: ReadRoom,
    max_line: usize,
    skipping: bool,
    consumed: u64,
}

/// The most room a read gets in a buffer, in bytes.
pub const READ_CHUNK: usize = 256 * 1024;

/// The largest body buffer of a [`LineBuffer`], in bytes (a single longer body gets one of its
/// own size): the most one event may keep alive beyond its own body, when the bytes buffered
/// with it turn out not to be lines (the skipped rest of an overlong line).
pub const BODY_CHUNK: usize = 32 * 1024;

/// The room a stream read gets at first and after the stream paused, in bytes.
pub const MIN_READ: usize = 4 * 1024;

/// How much room the next read of a stream gets in its buffer: [`MIN_READ`] at first and after
/// the stream paused, doubled after each read that filled the room, up to [`READ_CHUNK`]. A busy
/// connection reads in large chunks; an idle or slow one holds a few KiB.
#[derive(Debug)]
pub struct ReadRoom {
    want: usize,
    offered: usize,
}

impl Default for ReadRoom {
    fn default() -> Self {
        ReadRoom { want: MIN_READ, offered: 0 }
    }
}

impl ReadRoom {
    /// Makes room in `buf` for the next read (at least a quarter of the wanted size).
    pub fn prepare<'a>(&mut self, buf: &'a mut BytesMut) -> &'a mut BytesMut {
        if buf.capacity() - buf.len() < self.want / 4 {
            buf.reserve(self.want);
        }
        self.offered = buf.capacity() - buf.len();
        buf
    }

    /// Says a read brought `n` bytes: one that filled the room doubles the next one.
    pub fn filled(&mut self, n: usize) {
        if n > 0 && n >= self.offered {
            self.want = (self.want * 2).min(READ_CHUNK);
        }
    }

    /// The stream paused: back to [`MIN_READ`], and `buf` moved into a small allocation when it
    /// holds a large one (what it holds is kept).
    pub fn idle(&mut self, buf: &mut BytesMut) {
        self.want = MIN_READ;
        let keep = buf.len() + MIN_READ;
        if buf.capacity() > 2 * keep {
            let mut small = BytesMut::with_capacity(keep);
            small.extend_from_slice(buf);
            *buf = small;
        }
    }
}

impl LineBuffer {
    /// A buffer cutting lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineBuffer {
            buf: BytesMut::new(),
            read: 0,
            bodies: BytesMut::new(),
            room: ReadRoom::default(),
            max_line: max_line.max(1),
            skipping: false,
            consumed: 0,
        }
    }

    /// The buffer to read more bytes into (with room for a read; see [`ReadRoom`]).
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        self.settle();
        self.room.prepare(&mut self.buf)
    }

    /// Drops the bytes handed out from the read buffer.
    fn settle(&mut self) {
        if self.read > 0 {
            self.buf.advance(self.read);
            self.read = 0;
        }
    }

    /// The buffered bytes not handed out yet.
    fn rest(&self) -> &[u8] {
        &self.buf[self.read..]
    }

    /// Stream bytes used by the lines handed out so far, skipped remainders of cut lines included.
    ///
    /// A reader that put every line handed out so far may acknowledge the input up to here.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Bytes buffered that are not yet part of a line handed out.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.read
    }

    /// Whether the buffer holds nothing: no buffered bytes, and not inside the skipped rest of a
    /// cut line. Such a buffer may be dropped and a new one started at [`LineBuffer::consumed`].
    pub fn is_empty(&self) -> bool {
        self.pending() == 0 && !self.skipping
    }

    /// The next complete line, if the buffer holds one (or a cut one when it is over the limit).
    pub fn next_line(&mut self) -> Option<Line> {
        if self.skipping {
            match memchr::memchr(b'\n', self.rest()) {
                Some(pos) => {
                    self.read += pos + 1;
                    self.consumed += pos as u64 + 1;
                    self.skipping = false;
                }
                None => {
                    self.consumed += self.pending() as u64;
                    self.buf.clear();
                    self.read = 0;
                    self.release_bodies();
                    return None;
                }
            }
        }
        let rest = self.rest();
        let limit = rest.len().min(self.max_line + 2);
        match memchr::memchr(b'\n', &rest[..limit]) {
            Some(pos) => {
                let mut end = pos;
                if end > 0 && rest[end - 1] == b'\r' {
                    end -= 1;
                }
                let truncated = end > self.max_line;
                let body = self.take_body(end.min(self.max_line), pos + 1);
                self.consumed += pos as u64 + 1;
                Some(Line { body, truncated })
            }
            None if rest.len() > self.max_line + 1 => {
                let body = self.take_body(self.max_line, self.max_line);
                self.consumed += self.max_line as u64;
                self.skipping = true;
                Some(Line { body, truncated: true })
            }
            None => {
                self.release_bodies();
                None
            }
        }
    }

    /// Copies the first `len` bytes not handed out yet into the body buffer, and hands out the
    /// first `used` (`len` plus the line end). A body buffer without room for `len` is replaced
    /// by one sized to the bytes buffered (those that may become bodies), at most [`BODY_CHUNK`]
    /// unless `len` is larger.
    fn take_body(&mut self, len: usize, used: usize) -> Bytes {
        let rest = &self.buf[self.read..];
        if self.bodies.capacity() < len {
            self.bodies = BytesMut::with_capacity(rest.len().min(BODY_CHUNK).max(len));
        }
        self.bodies.extend_from_slice(&rest[..len]);
        self.read += used;
        self.bodies.split().freeze()
    }

    /// Lets go of the body buffer's spare room (the buffer holds no complete line: the next
    /// bodies come from a later read), so that a paused stream keeps no body buffer alive.
    fn release_bodies(&mut self) {
        if self.bodies.capacity() > 0 {
            self.bodies = BytesMut::new();
        }
    }

    /// At the end of the stream: the final line if it has no line ending (it is still an event).
    pub fn finish(&mut self) -> Option<Line> {
        if self.skipping {
            self.consumed += self.pending() as u64;
            self.buf.clear();
            self.read = 0;
            self.skipping = false;
            return None;
        }
        if self.pending() == 0 {
            return None;
        }
        let used = self.pending();
        let end = if self.rest().ends_with(b"\r") { used - 1 } else { used };
        let truncated = end > self.max_line;
        let body = self.take_body(end.min(self.max_line), used);
        self.consumed += used as u64;
        self.release_bodies();
        Some(Line { body, truncated })
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
    fn line_bodies_do_not_keep_the_read_buffer() {
        let mut lb = LineBuffer::new(100);
        let start = lb.buffer_mut().as_ptr() as usize;
        let end = start + lb.buffer_mut().capacity();
        feed(&mut lb, b"Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown\nshort\nlast\npart");
        let mut lines = vec![lb.next_line().unwrap(), lb.next_line().unwrap(), lb.next_line().unwrap()];
        let inside = |l: &Line| (start..end).contains(&(l.body.as_ptr() as usize));
        assert!(!lines.iter().any(inside), "copied out of the read buffer");
        let at = |l: &Line| l.body.as_ptr() as usize;
        assert_eq!(at(&lines[1]), at(&lines[0]) + lines[0].body.len(), "one allocation, back to back");
        assert_eq!(at(&lines[2]), at(&lines[1]) + lines[1].body.len(), "one allocation, back to back");
        let before: Vec<usize> = lines.iter().map(at).collect();
        compact(&mut lines);
        assert_eq!(lines.iter().map(at).collect::<Vec<_>>(), before, "not copied again");
        assert_eq!(lines[0].body, &b"Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown"[..]);
        assert_eq!(lines[1].body, &b"short"[..]);
        assert_eq!(lines[2].body, &b"last"[..]);
        // The read buffer is not shared: the partial line stays where it was read.
        assert_eq!(lb.buffer_mut().as_ptr() as usize, start + 81);
        assert_eq!(lb.finish().unwrap().body, &b"part"[..]);
    }

    #[test]
    fn compacted_bodies_cut_from_a_read_buffer_do_not_keep_it() {
        let mut read = BytesMut::from(&b"12 first frame9 second!x\n"[..]);
        let (start, end) = (read.as_ptr() as usize, read.as_ptr() as usize + read.len());
        let _ = read.split_to(3);
        let first = read.split_to(11).freeze();
        let _ = read.split_to(2);
        let second = read.split_to(7).freeze();
        let mut lines = vec![
            Line { body: first, truncated: false },
            Line { body: second, truncated: false },
            Line { body: Bytes::from_static(b"static"), truncated: false },
        ];
        compact(&mut lines);
        let inside = |l: &Line| (start..end).contains(&(l.body.as_ptr() as usize));
        assert!(!lines.iter().any(inside), "copied out of the read buffer");
        assert_eq!(
            lines.iter().map(|l| l.body.as_ref()).collect::<Vec<_>>(),
            [&b"first frame"[..], b"second!", b"static"]
        );
        let at = |l: &Line| l.body.as_ptr() as usize;
        assert_eq!(at(&lines[1]), at(&lines[0]) + 11, "one allocation");
        assert_eq!(at(&lines[2]), at(&lines[1]) + 7, "one allocation");
    }

    #[test]
    fn read_room_grows_while_reads_fill_it_and_shrinks_when_idle() {
        let mut room = ReadRoom::default();
        let mut buf = BytesMut::new();
        for _ in 0..10 {
            let b = room.prepare(&mut buf);
            let n = b.capacity() - b.len();
            b.resize(b.len() + n, b'x');
            room.filled(n);
            buf.clear();
        }
        assert!(buf.capacity() >= READ_CHUNK / 2, "grew to {}", buf.capacity());
        buf.extend_from_slice(b"partial line");
        room.idle(&mut buf);
        assert!(buf.capacity() <= 2 * MIN_READ, "shrank to {}", buf.capacity());
        assert_eq!(&buf[..], b"partial line");
        let b = room.prepare(&mut buf);
        assert!(b.capacity() - b.len() <= 2 * MIN_READ);
    }

    #[actix_rt::test]
    async fn room_frees_when_every_batch_is_answered_or_the_putting_side_stopped() {
        use futures_util::FutureExt;
        let u = Unanswered::default();
        assert!(u.is_free());
        u.handed_on();
        u.handed_on();
        assert!(!u.is_free());
        assert!(u.freed().now_or_never().is_none());
        u.answered();
        assert!(!u.is_free());
        let waiting = u.freed();
        u.answered();
        assert!(u.is_free());
        assert!(waiting.now_or_never().is_some(), "the last answer wakes a waiting reader");
        u.handed_on();
        let waiting = u.freed();
        u.close();
        assert!(waiting.now_or_never().is_some(), "a stopped putting side frees the reader");
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
    /// Says the last read into [`Framing::buffer_mut`] brought `n` bytes ([`ReadRoom::filled`]).
    fn filled(&mut self, n: usize);
    /// Says the stream paused: the buffer may shrink ([`ReadRoom::idle`]).
    fn idle(&mut self);
    /// The next complete frame, if the buffer holds one.
    fn next_line(&mut self) -> Option<Line>;
    /// At the end of the stream: the final frame, if bytes are left.
    fn finish(&mut self) -> Option<Line>;
}

impl Framing for LineBuffer {
    fn buffer_mut(&mut self) -> &mut BytesMut {
        LineBuffer::buffer_mut(self)
    }
    fn filled(&mut self, n: usize) {
        self.room.filled(n);
    }
    fn idle(&mut self) {
        self.settle();
        self.room.idle(&mut self.buf);
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
    /// The batch is full, `linger` passed since its first line, or (with a `linger` of zero)
    /// nothing more was readable and the batch could be handed on at once.
    More,
    /// The reader reached its end (the final unterminated line, if any, is in the batch).
    Eof,
    /// The agent is stopping (only returned with an empty batch).
    Stopping,
}

/// Where a reader hands its batches: whether one handed on now would be put at once, with
/// nothing of the connection's in flight, and when that is so again. A batch read with a `linger`
/// of zero is handed on as soon as nothing more is readable while that holds; while earlier
/// batches are still being put, it goes on gathering what arrives until they are all answered
/// (or it is full), so batches grow with the load by themselves (as a Kafka producer's with
/// `linger.ms` 0 grow while its requests are in flight).
pub trait Room {
    /// Whether nothing handed on before is still waiting or being put.
    fn is_free(&self) -> bool;
    /// Returns once nothing handed on before is waiting or being put.
    fn freed(&self) -> impl std::future::Future<Output = ()>;
}

/// The batches of one connection handed to its putting side ([`commit_in_order`]
/// (super::netcat::commit_in_order)) and not answered yet: the reader counts one up per batch
/// it hands on, the putting side down once the batch's put answered (and its acknowledgements
/// were written).
#[derive(Debug, Default)]
pub struct Unanswered {
    count: std::cell::Cell<usize>,
    closed: std::cell::Cell<bool>,
    none: tokio::sync::Notify,
}

impl Unanswered {
    /// A batch was handed on.
    pub fn handed_on(&self) {
        self.count.set(self.count.get() + 1);
    }

    /// A batch handed on was answered (put or failed).
    pub fn answered(&self) {
        let left = self.count.get().saturating_sub(1);
        self.count.set(left);
        if left == 0 {
            self.none.notify_waiters();
        }
    }

    /// The putting side stopped (a put failed for good): nothing will be answered any more, so
    /// a reader waiting for room stops waiting and finds the queue closed when it hands on.
    pub fn close(&self) {
        self.closed.set(true);
        self.none.notify_waiters();
    }
}

impl Room for Unanswered {
    fn is_free(&self) -> bool {
        self.count.get() == 0 || self.closed.get()
    }
    async fn freed(&self) {
        loop {
            // Registered before the check: an answer between the two wakes it.
            let none = self.none.notified();
            if self.is_free() {
                return;
            }
            none.await;
        }
    }
}

/// A reader that puts each batch itself before it reads on: there is always room.
#[derive(Debug, Clone, Copy, Default)]
pub struct PutsItself;

impl Room for PutsItself {
    fn is_free(&self) -> bool {
        true
    }
    async fn freed(&self) {}
}

/// Reads up to `max` lines (frames) from `reader` through `lb`; the bytes read are added to
/// `held` (the source's [`ReadBudget`](super::conn_limits::ReadBudget), if any).
///
/// Waits as long as needed for a first line (but at most `ctx.idle_timeout` for a byte: then
/// what is buffered is the final line, the idle close is counted, and it answers
/// [`ReadEnd::Eof`]); once it has one, the batch is returned when it is full or `linger` after
/// its first line was read, whichever comes first: `linger` is a deadline counted from the
/// batch's first event, not an idle time between reads, so no event waits in a partial batch
/// longer than `linger` however steadily the input trickles (Kafka's `linger.ms`, Vector's batch
/// `timeout_secs`). Bytes already readable when the deadline has passed are left for the next
/// batch. With a `linger` of zero, the batch is returned as soon as nothing more is readable and
/// `room` is free (nothing of the connection in flight), or when it frees up later (see [`Room`]). When the source's read budget
/// is spent, a partial batch is returned at once and an empty one waits before reading. The
/// bodies of the batch are copied into one allocation of their size ([`compact`]).
///
/// # Errors
/// The reader's I/O error.
pub async fn read_batch<F: Framing, R: tokio::io::AsyncRead + Unpin>(
    lb: &mut F,
    reader: &mut R,
    max: usize,
    room: &impl Room,
    held: &mut super::conn_limits::Held,
    ctx: &super::SourceContext,
) -> std::io::Result<(Vec<Line>, ReadEnd)> {
    use futures_util::FutureExt;
    use tokio::io::AsyncReadExt;
    let linger = ctx.linger;
    let budget = ctx.read_budget.as_deref();
    let spent = || budget.is_some_and(|b| b.is_spent());
    // Grown as lines come: a connection waiting for its first line holds no room for a batch.
    let mut lines = Vec::new();
    // When the batch is due: `linger` after its first line was read.
    let mut due: Option<tokio::time::Instant> = None;
    let done = |mut lines: Vec<Line>, end: ReadEnd| {
        compact(&mut lines);
        Ok((lines, end))
    };
    loop {
        while lines.len() < max {
            match lb.next_line() {
                Some(l) => lines.push(l),
                None => break,
            }
        }
        if lines.len() >= max || (!lines.is_empty() && spent()) {
            return done(lines, ReadEnd::More);
        }
        if !lines.is_empty() && due.is_none() {
            // A `linger` too long to add (`"1000000 years"`) never expires, as tokio's own
            // far-future deadline (about 30 years).
            let now = tokio::time::Instant::now();
            due = Some(now.checked_add(linger).unwrap_or(now + std::time::Duration::from_secs(86400 * 365 * 30)));
        }
        let n = if lines.is_empty() {
            if let Some(budget) = budget.filter(|b| b.is_spent()) {
                // Waiting for the source's other connections: hold a small buffer meanwhile.
                lb.idle();
                tokio::select! {
                    _ = budget.below_limit() => {}
                    _ = ctx.stopping() => return Ok((lines, ReadEnd::Stopping)),
                }
            }
            match reader.read_buf(lb.buffer_mut()).now_or_never() {
                Some(r) => r?,
                None => {
                    // Nothing to read now: the stream paused. Hold a small buffer while waiting.
                    lb.idle();
                    let idle = ctx.idle_timeout.unwrap_or(std::time::Duration::MAX);
                    tokio::select! {
                        r = reader.read_buf(lb.buffer_mut()) => r?,
                        _ = ctx.stopping() => return Ok((lines, ReadEnd::Stopping)),
                        _ = tokio::time::sleep(idle), if ctx.idle_timeout.is_some() => {
                            ctx.counters.connection_idle_closed.inc();
                            tracing::debug!(source = %ctx.name, ?idle, "nothing received for idle_timeout: closing the connection");
                            lines.extend(lb.finish());
                            return done(lines, ReadEnd::Eof);
                        }
                    }
                }
            }
        } else if linger.is_zero() {
            match reader.read_buf(lb.buffer_mut()).now_or_never() {
                Some(r) => r?,
                None if room.is_free() => return done(lines, ReadEnd::More),
                // No room: gather what arrives until there is (read_buf is cancel safe).
                None => tokio::select! {
                    r = reader.read_buf(lb.buffer_mut()) => r?,
                    _ = room.freed() => return done(lines, ReadEnd::More),
                    _ = ctx.stopping() => return done(lines, ReadEnd::More),
                },
            }
        } else {
            let due = due.expect("set with the batch's first line");
            if tokio::time::Instant::now() >= due {
                return done(lines, ReadEnd::More);
            }
            match tokio::time::timeout_at(due, reader.read_buf(lb.buffer_mut())).await {
                Ok(r) => r?,
                Err(_) => return done(lines, ReadEnd::More),
            }
        };
        held.add(n);
        lb.filled(n);
        if n == 0 {
            lines.extend(lb.finish());
            return done(lines, ReadEnd::Eof);
        }
    }
}

/// Copies the bodies of `lines` that a framing cut out of its read buffer into one allocation of
/// their total size, each body a slice of it: the batch no longer keeps the read buffer it was
/// cut from alive (a 512-byte event held in a channel would otherwise pin a read buffer of up to
/// [`READ_CHUNK`]), and the read buffer, no longer shared, is reused for the next reads. One
/// allocation and one copy per batch.
///
/// Bodies lying back to back with a neighbour are left as they are: they were copied already
/// ([`LineBuffer`]'s body buffer), as bodies cut out of a read buffer never lie back to back (a
/// line end or a length prefix lies between them).
pub fn compact(lines: &mut [Line]) {
    let joined = |a: &Bytes, b: &Bytes| a.as_ptr().wrapping_add(a.len()) == b.as_ptr();
    let copied = |lines: &[Line], i: usize| {
        (i > 0 && joined(&lines[i - 1].body, &lines[i].body))
            || (i + 1 < lines.len() && joined(&lines[i].body, &lines[i + 1].body))
    };
    if (0..lines.len()).all(|i| copied(lines, i)) {
        return;
    }
    let keep: Vec<bool> = (0..lines.len()).map(|i| copied(lines, i)).collect();
    let total: usize = lines.iter().zip(&keep).filter(|(_, k)| !**k).map(|(l, _)| l.body.len()).sum();
    let mut arena = BytesMut::with_capacity(total);
    for (line, keep) in lines.iter_mut().zip(keep) {
        if !keep {
            arena.extend_from_slice(&line.body);
            line.body = arena.split().freeze();
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
