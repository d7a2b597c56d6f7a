//! A body in JSON text, as the NDJSON lines of `flumen tap` and of `flumen channel export` /
//! `import` carry it: `"body": "..."` when the body is UTF-8, else `"body_base64": "..."`
//! (standard alphabet, with padding), so that every body comes out byte for byte.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;

/// A body split into the two JSON fields: `(Some(text), None)` for a UTF-8 body, else
/// `(None, Some(base64))`.
pub fn to_fields(body: &[u8]) -> (Option<&str>, Option<String>) {
    match std::str::from_utf8(body) {
        Ok(text) => (Some(text), None),
        Err(_) => (None, Some(BASE64.encode(body))),
    }
}

/// Why the two JSON fields do not give a body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyFieldsError {
    /// `body_base64` is not base64.
    #[error("body_base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Both fields are present.
    #[error("has both `body` and `body_base64`")]
    Both,
    /// Neither field is present.
    #[error("has neither `body` nor `body_base64`")]
    Neither,
}

/// The body the two JSON fields give (the inverse of [`to_fields`]); surrounding whitespace of
/// `body_base64` is ignored.
///
/// # Errors
/// [`BodyFieldsError`] when `body_base64` is not base64, or when both or neither are present.
pub fn from_fields(body: Option<String>, body_base64: Option<&str>) -> Result<Bytes, BodyFieldsError> {
    match (body, body_base64) {
        (Some(text), None) => Ok(Bytes::from(text)),
        (None, Some(b64)) => Ok(Bytes::from(BASE64.decode(b64.trim())?)),
        (Some(_), Some(_)) => Err(BodyFieldsError::Both),
        (None, None) => Err(BodyFieldsError::Neither),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_bodies_round_trip() {
        let text = "Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure".as_bytes();
        let (body, b64) = to_fields(text);
        assert_eq!((body, b64.as_deref()), (std::str::from_utf8(text).ok(), None));
        assert_eq!(from_fields(body.map(String::from), None).unwrap(), text);
        let binary = [0xff, 0x00, b'x'];
        let (body, b64) = to_fields(&binary);
        assert_eq!(body, None);
        assert_eq!(from_fields(None, b64.as_deref()).unwrap(), &binary[..]);
        assert_eq!(from_fields(Some("x".into()), Some("eA==")), Err(BodyFieldsError::Both));
        assert_eq!(from_fields(None, None), Err(BodyFieldsError::Neither));
        assert!(matches!(from_fields(None, Some("%%")), Err(BodyFieldsError::Base64(_))));
    }
}
