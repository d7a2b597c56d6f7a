//! flumen's binary event codec: the `Events` format of the `Http` hop
//! (`application/x-flumen-events`) and the value of every event in a `RocksDb` channel.
//!
//! One event: a little-endian `u32` header count, then per header its key and value (each a
//! `u32` length and the UTF-8 bytes), then the body (a `u32` length and the bytes). Events follow
//! each other without separators.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::event::{Event, Headers};

impl Event {
    /// The number of bytes the codec needs for this event.
    pub fn encoded_len(&self) -> usize {
        4 + self.headers.iter().map(|(k, v)| 8 + k.len() + v.len()).sum::<usize>() + 4 + self.body.len()
    }

    /// Appends the binary encoding of this event to `out`.
    ///
    /// Layout (all integers little-endian `u32`): header count, then per header key length, key
    /// bytes, value length, value bytes; then body length and body bytes.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(self.encoded_len());
        out.put_u32_le(self.headers.len() as u32);
        for (k, v) in &self.headers {
            out.put_u32_le(k.len() as u32);
            out.put_slice(k.as_bytes());
            out.put_u32_le(v.len() as u32);
            out.put_slice(v.as_bytes());
        }
        out.put_u32_le(self.body.len() as u32);
        out.put_slice(&self.body);
    }

    /// Encodes this event into a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut out);
        out.freeze()
    }

    /// Decodes one event from the front of `buf`, advancing it past the event.
    ///
    /// The body is a zero-copy slice of `buf`.
    ///
    /// # Errors
    /// [`CodecError`] when `buf` ends inside the event or a header is not UTF-8.
    pub fn decode(buf: &mut Bytes) -> Result<Event, CodecError> {
        let count = take_u32(buf)? as usize;
        let mut headers = Headers::new();
        for _ in 0..count {
            let key = take_string(buf)?;
            let value = take_string(buf)?;
            headers.insert(key, value);
        }
        let len = take_u32(buf)? as usize;
        if buf.remaining() < len {
            return Err(CodecError::Truncated);
        }
        let body = buf.split_to(len);
        Ok(Event { headers, body })
    }
}

/// Why bytes could not be decoded into an event.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// The buffer ends inside an event.
    #[error("encoded event is truncated")]
    Truncated,
    /// A header key or value is not valid UTF-8.
    #[error("encoded event has a header that is not UTF-8")]
    NotUtf8,
}

fn take_u32(buf: &mut Bytes) -> Result<u32, CodecError> {
    if buf.remaining() < 4 {
        return Err(CodecError::Truncated);
    }
    Ok(buf.get_u32_le())
}

fn take_string(buf: &mut Bytes) -> Result<String, CodecError> {
    let len = take_u32(buf)? as usize;
    if buf.remaining() < len {
        return Err(CodecError::Truncated);
    }
    let raw = buf.split_to(len);
    String::from_utf8(raw.to_vec()).map_err(|_| CodecError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_round_trips_headers_and_body() {
        let line = "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating";
        let event = Event::new(line.as_bytes().to_vec()).with_header("host", "edge-1").with_header("level", "INFO");
        let mut buf = BytesMut::new();
        event.encode(&mut buf);
        event.encode(&mut buf);
        assert_eq!(buf.len(), 2 * event.encoded_len());
        let mut bytes = buf.freeze();
        assert_eq!(Event::decode(&mut bytes).unwrap(), event);
        assert_eq!(Event::decode(&mut bytes).unwrap(), event);
        assert!(bytes.is_empty());
    }

    #[test]
    fn truncated_input_is_an_error() {
        let event =
            Event::new("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure").with_header("k", "v");
        let full = event.to_bytes();
        for cut in 0..full.len() {
            let mut part = full.slice(..cut);
            assert_eq!(Event::decode(&mut part), Err(CodecError::Truncated), "cut at {cut}");
        }
    }
}
