//! Receiving UDP datagrams in batches: the shared part of `SyslogUdp` and `NetcatUdp`.
//!
//! One datagram is one record. A batch starts with the first datagram and takes what arrives
//! within `linger` after it (at most `batch_size`). Batches are put in order while the next ones
//! are received (up to [`PIPELINE`] waiting). UDP has no flow control: while the channel is full,
//! datagrams wait in the socket's receive buffer, and the kernel drops what does not fit.

use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::lines::Line;
use super::netcat::PIPELINE;
use super::{SourceContext, SourceError};
use crate::event::Event;

/// The largest UDP payload (IPv4), in bytes.
pub const MAX_DATAGRAM: usize = 65_507;

/// Problems with a record length limit and a receive buffer size.
pub fn check(max_len: usize, receive_buffer_bytes: Option<usize>) -> Vec<String> {
    let mut problems = Vec::new();
    if max_len > MAX_DATAGRAM {
        problems.push(format!("the length limit {max_len} is over the largest UDP payload ({MAX_DATAGRAM} bytes)"));
    }
    if receive_buffer_bytes == Some(0) {
        problems.push("receive_buffer_bytes must be positive".into());
    }
    problems
}

/// Receives datagrams on `bind` until the agent stops; `to_events` turns each batch of records
/// (datagrams without a trailing LF or CRLF, cut to `max_len` bytes and flagged when longer) into
/// events. `receive_buffer_bytes` sets the socket's `SO_RCVBUF`.
///
/// # Errors
/// When the address cannot be bound, receiving fails, or a put fails for good.
pub async fn run(
    bind: &str,
    max_len: usize,
    receive_buffer_bytes: Option<usize>,
    ctx: SourceContext,
    to_events: impl Fn(Vec<Line>, &SourceContext) -> Vec<Event>,
) -> Result<(), SourceError> {
    let socket = open(bind, receive_buffer_bytes).await.map_err(SourceError::io(format!("bind {bind}")))?;
    let buffer = socket2::SockRef::from(&socket).recv_buffer_size().unwrap_or(0);
    tracing::info!(source = %ctx.name, bind, receive_buffer_bytes = buffer, "receiving datagrams");
    let (batches, mut to_put) = mpsc::channel::<Vec<Event>>(PIPELINE);
    let ctx = &ctx;
    let receiving = async move {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        loop {
            let first = tokio::select! {
                r = socket.recv(&mut buf) => r.map_err(SourceError::io(format!("receive on {bind}")))?,
                _ = ctx.stopping() => return Ok(()),
            };
            let mut records = vec![record(&buf[..first], max_len)];
            let deadline = tokio::time::Instant::now() + ctx.linger.max(Duration::from_micros(1));
            while records.len() < ctx.batch_size {
                match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                    Ok(r) => {
                        let n = r.map_err(SourceError::io(format!("receive on {bind}")))?;
                        records.push(record(&buf[..n], max_len));
                    }
                    Err(_) => break,
                }
            }
            if let Err(mpsc::error::SendError(lost)) = batches.send(to_events(records, ctx)).await {
                // The putting side stopped on a failed put; it reports the error.
                ctx.counters.event_dropped.add(lost.len() as u64);
                return Ok(());
            }
        }
    };
    let putting = async move {
        while let Some(events) = to_put.recv().await {
            let n = events.len() as u64;
            if let Err(e) = ctx.put(events).await {
                // A datagram cannot be handed back: what was received and not committed is lost,
                // and counted as such (the source restarts and receives anew).
                to_put.close();
                let mut lost = n;
                while let Ok(waiting) = to_put.try_recv() {
                    lost += waiting.len() as u64;
                }
                ctx.counters.event_dropped.add(lost);
                tracing::error!(source = %ctx.name, lost, error = %e, "a put failed for good; the datagrams received are lost");
                return Err(e);
            }
        }
        Ok::<(), SourceError>(())
    };
    let (received, put) = futures_util::join!(receiving, putting);
    put.and(received)
}

/// A UDP socket bound to `bind` (resolved; the first address that binds), with its receive buffer
/// set to `receive_buffer_bytes` when given.
async fn open(bind: &str, receive_buffer_bytes: Option<usize>) -> std::io::Result<UdpSocket> {
    let mut last = None;
    for addr in tokio::net::lookup_host(bind).await? {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM, None)?;
        if let Some(bytes) = receive_buffer_bytes {
            socket.set_recv_buffer_size(bytes)?;
        }
        match socket.bind(&addr.into()) {
            Ok(()) => {
                socket.set_nonblocking(true)?;
                return UdpSocket::from_std(socket.into());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address to bind")))
}

/// A datagram as a record: one trailing LF or CRLF removed, cut to `max_len` bytes.
fn record(datagram: &[u8], max_len: usize) -> Line {
    let mut end = datagram.len();
    if datagram.ends_with(b"\n") {
        end -= 1;
        if datagram[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    Line { body: Bytes::copy_from_slice(&datagram[..end.min(max_len)]), truncated: end > max_len }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_lose_one_line_ending_and_are_cut_to_the_limit() {
        let r = record(b"081109 203615 148 INFO dfs.DataNode$PacketResponder: done\r\n", 100);
        assert_eq!(
            (r.body.as_ref(), r.truncated),
            (&b"081109 203615 148 INFO dfs.DataNode$PacketResponder: done"[..], false)
        );
        let r = record(b"two\n\n", 100);
        assert_eq!(r.body.as_ref(), b"two\n");
        let r = record(b"abcdef\n", 3);
        assert_eq!((r.body.as_ref(), r.truncated), (&b"abc"[..], true));
        let r = record(b"abc\n", 3);
        assert_eq!((r.body.as_ref(), r.truncated), (&b"abc"[..], false));
    }
}
