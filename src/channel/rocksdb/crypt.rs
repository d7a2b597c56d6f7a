//! Encryption at rest for the `RocksDb` channel: every stored value that carries event content
//! (queued events, dead letters, salvaged copies, imported events) sealed with AES-256-GCM.
//!
//! The model is Flume's file channel encryption (`encryption.activeKey`, `encryption.keys`, a key
//! provider, `AESCTRNoPaddingProvider`): a set of named keys, one of them active; values are
//! sealed under the active key and carry the name (key id) of the key they were sealed under, so
//! that values under older keys stay readable after a rotation. Unlike Flume's AES-CTR, GCM also
//! authenticates: a flipped bit, a value moved to another key or column family, or a wrong key
//! fails to open instead of reading garbage.
//!
//! # Stored layout of a sealed value
//!
//! ```text
//! magic FF FF FF F5 | version 01 | key id length (u8) | key id (UTF-8) | nonce (12 bytes) | ciphertext | tag (16 bytes)
//! ```
//!
//! The magic can never begin a plaintext value: those begin with their header count as a
//! little-endian `u32` ([`Event::encode`](crate::event::Event::encode)), and 0xF5FFFFFF headers
//! would need more than 32 GiB. The nonce is 96 random bits from the operating system's generator
//! (`getrandom(2)`, through aes-gcm's `OsRng`), fresh for every value. The associated data is
//! the header up to the nonce, the column family (`q` for the queue, `d` for dead letters) and the
//! value's RocksDB key (its sequence number): a value copied under another key or into another
//! family does not authenticate. The channel's name and directory are not bound, so a renamed
//! channel or a moved directory stays readable.
//!
//! # Key files
//!
//! 32 raw bytes, or 64 hex digits, or the standard base64 of 32 bytes (surrounding whitespace
//! allowed for the text forms); paths relative to the topology's folder. A key file that its group
//! or others may read (`mode & 0o077 != 0`) is refused, as ssh refuses such private keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::{AeadInPlace, KeyInit, OsRng};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;

use crate::channel::{ChannelError, KeyProblem};

/// The first bytes of every sealed value.
pub const MAGIC: [u8; 4] = [0xFF, 0xFF, 0xFF, 0xF5];
/// The layout version after the magic: AES-256-GCM with a 96-bit nonce.
pub const VERSION: u8 = 1;
const NONCE: usize = 12;
const TAG: usize = 16;

/// The `encryption` option of a `RocksDb` channel:
/// `Some(Aes256Gcm(keys: {"2026-12": "keys/2026-12.key"}, active: "2026-12"))`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub enum EncryptionConfig {
    /// AES-256-GCM (RustCrypto `aes-gcm`).
    Aes256Gcm(Aes256GcmConfig),
}

/// The keys of [`EncryptionConfig::Aes256Gcm`].
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Aes256GcmConfig {
    /// Key id → key file (32 raw bytes, 64 hex digits or base64; relative to the topology's
    /// folder; not readable by group or others). Key ids are 1 to 255 bytes.
    pub keys: BTreeMap<String, PathBuf>,
    /// The key id new values are sealed under; one of `keys`.
    pub active: String,
}

impl EncryptionConfig {
    fn inner(&self) -> &Aes256GcmConfig {
        match self {
            EncryptionConfig::Aes256Gcm(c) => c,
        }
    }

    /// Resolves the key files against `base` (the topology's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        match self {
            EncryptionConfig::Aes256Gcm(c) => {
                for path in c.keys.values_mut() {
                    *path = crate::config::resolve(base, path);
                }
            }
        }
    }

    /// What is wrong with the option, for validation: `(None, why)` is about `active`,
    /// `(Some(id), why)` about the key file of key `id`.
    pub fn problems(&self) -> Vec<(Option<String>, String)> {
        let c = self.inner();
        let mut out = Vec::new();
        if !c.keys.contains_key(&c.active) {
            let known: Vec<&str> = c.keys.keys().map(String::as_str).collect();
            out.push((None, format!("active key \"{}\" is not among keys {known:?}", c.active)));
        }
        for (id, path) in &c.keys {
            if id.is_empty() || id.len() > 255 {
                out.push((Some(id.clone()), format!("key id \"{id}\" must be 1 to 255 bytes")));
            } else if let Err(e) = read_key_file(path) {
                out.push((Some(id.clone()), format!("key \"{id}\": {e}")));
            }
        }
        out
    }

    /// Reads every key file and makes the cipher of channel `channel`.
    ///
    /// # Errors
    /// [`ChannelError::Key`] naming the key id and the channel: a key file missing, unreadable,
    /// readable by others or not 32 bytes; `active` not among the keys.
    pub fn load(&self, channel: &str) -> Result<Cipher, ChannelError> {
        let c = self.inner();
        let mut keys = BTreeMap::new();
        for (id, path) in &c.keys {
            let key = read_key_file(path).map_err(|detail| ChannelError::Key {
                channel: channel.into(),
                key_id: id.clone(),
                problem: KeyProblem::File,
                detail,
            })?;
            keys.insert(id.clone(), Aes256Gcm::new((&key).into()));
        }
        if !keys.contains_key(&c.active) {
            return Err(ChannelError::Key {
                channel: channel.into(),
                key_id: c.active.clone(),
                problem: KeyProblem::Unknown,
                detail: "the active key is not among `keys`".into(),
            });
        }
        Ok(Cipher { inner: Arc::new(Inner { channel: channel.into(), keys, active: c.active.clone() }) })
    }
}

/// Reads a key file: 32 raw bytes, 64 hex digits or base64 of 32 bytes; refused when its group
/// or others may read it.
///
/// # Errors
/// What is wrong, in words.
pub fn read_key_file(path: &Path) -> Result<[u8; 32], String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("key file {} is readable by others (mode {mode:03o}): `chmod 600` it", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("key file {}: {e}", path.display()))?;
    parse_key(&bytes).map_err(|why| format!("key file {}: {why}", path.display()))
}

/// Parses key material: 32 raw bytes, or (trimmed) 64 hex digits or base64 of 32 bytes.
///
/// # Errors
/// Which of the forms it is not.
pub fn parse_key(bytes: &[u8]) -> Result<[u8; 32], String> {
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Ok(raw);
    }
    let text = bytes.trim_ascii();
    if text.len() == 64 && text.iter().all(u8::is_ascii_hexdigit) {
        let mut key = [0u8; 32];
        for (i, pair) in text.chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16).expect("checked") as u8;
            key[i] = digit(pair[0]) << 4 | digit(pair[1]);
        }
        return Ok(key);
    }
    if let Ok(decoded) = BASE64.decode(text) {
        if let Ok(key) = <[u8; 32]>::try_from(decoded.as_slice()) {
            return Ok(key);
        }
    }
    Err(format!("{} bytes, expected 32 raw bytes, 64 hex digits or the base64 of 32 bytes", bytes.len()))
}

/// Fills `nonces` with `n` fresh random 96-bit nonces (`12 * n` bytes) from the operating
/// system's generator, in one call.
pub fn fill_nonces(nonces: &mut Vec<u8>, n: usize) {
    nonces.resize(NONCE * n, 0);
    OsRng.fill_bytes(nonces);
}

/// Where a value is stored: part of the associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The queue (the default column family).
    Queue,
    /// The dead letters.
    DeadLetter,
}

impl Family {
    fn tag(self) -> u8 {
        match self {
            Family::Queue => b'q',
            Family::DeadLetter => b'd',
        }
    }
}

/// What a stored value's first bytes say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sealing<'a> {
    /// Plaintext (written without encryption).
    Plain,
    /// Sealed under key `id`.
    Sealed(&'a str),
    /// Begins with the magic but its header is cut or of an unknown version.
    Malformed,
}

/// Whether `stored` is sealed, and under which key id.
pub fn sealing(stored: &[u8]) -> Sealing<'_> {
    match parse_header(stored) {
        None if stored.starts_with(&MAGIC) => Sealing::Malformed,
        None => Sealing::Plain,
        Some((id, _)) => Sealing::Sealed(id),
    }
}

/// The key id and where the nonce starts.
fn parse_header(stored: &[u8]) -> Option<(&str, usize)> {
    if !stored.starts_with(&MAGIC) || *stored.get(4)? != VERSION {
        return None;
    }
    let n = *stored.get(5)? as usize;
    let id = std::str::from_utf8(stored.get(6..6 + n)?).ok()?;
    let nonce_at = 6 + n;
    (stored.len() >= nonce_at + NONCE + TAG).then_some((id, nonce_at))
}

/// The keys of one channel, cheap to clone.
#[derive(Clone)]
pub struct Cipher {
    inner: Arc<Inner>,
}

struct Inner {
    channel: String,
    keys: BTreeMap<String, Aes256Gcm>,
    active: String,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("Cipher")
            .field("channel", &self.inner.channel)
            .field("keys", &self.inner.keys.keys().collect::<Vec<_>>())
            .field("active", &self.inner.active)
            .finish()
    }
}

fn aad(header: &[u8], family: Family, key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 1 + key.len());
    aad.extend_from_slice(header);
    aad.push(family.tag());
    aad.extend_from_slice(key);
    aad
}

impl Cipher {
    /// The channel's name.
    pub fn channel(&self) -> &str {
        &self.inner.channel
    }

    /// The active key id.
    pub fn active(&self) -> &str {
        &self.inner.active
    }

    /// Whether `id` is one of the keys.
    pub fn knows(&self, id: &str) -> bool {
        self.inner.keys.contains_key(id)
    }

    /// Seals `plain` stored under `key` in `family` into `out` (cleared first), under the active
    /// key with a fresh random nonce. `out` ends up `plain.len()` + header + 16 bytes long.
    pub fn seal_into(&self, family: Family, key: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE];
        OsRng.fill_bytes(&mut nonce);
        self.seal_with(family, key, plain, &nonce, out);
    }

    /// [`Cipher::seal_into`] into a fresh buffer.
    pub fn seal(&self, family: Family, key: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(family, key, plain, &mut out);
        out
    }

    /// Seals with a given nonce (from a batch of random nonces drawn at once) into `out`
    /// (cleared first).
    pub fn seal_with(&self, family: Family, key: &[u8], plain: &[u8], nonce: &[u8; NONCE], out: &mut Vec<u8>) {
        out.clear();
        self.seal_append(family, key, plain, nonce, out);
    }

    /// Seals with a given nonce, appending the sealed value to `out`.
    pub fn seal_append(&self, family: Family, key: &[u8], plain: &[u8], nonce: &[u8; NONCE], out: &mut Vec<u8>) {
        let id = self.inner.active.as_bytes();
        let start = out.len();
        out.reserve(6 + id.len() + NONCE + plain.len() + TAG);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        let aad = aad(&out[start..], family, key);
        out.extend_from_slice(nonce);
        let body = out.len();
        out.extend_from_slice(plain);
        let cipher = &self.inner.keys[&self.inner.active];
        let tag = cipher
            .encrypt_in_place_detached(Nonce::from_slice(nonce), &aad, &mut out[body..])
            .expect("AES-GCM seals any value under 64 GiB");
        out.extend_from_slice(&tag);
    }

    /// Opens a stored value: a sealed one is authenticated and decrypted, a plaintext one (written
    /// before encryption was turned on) is answered as it is.
    ///
    /// # Errors
    /// [`ChannelError::Key`]: `Unknown` for a key id that is not among the keys, `Authentication`
    /// when the value does not authenticate (a wrong key file, or damage), `Malformed` for a cut
    /// header.
    pub fn open(&self, family: Family, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, ChannelError> {
        let Some((id, nonce_at)) = parse_header(stored) else {
            if stored.starts_with(&MAGIC) {
                return Err(self.error(
                    "",
                    KeyProblem::Malformed,
                    "the sealed value's header is cut or of another version",
                ));
            }
            return Ok(stored.to_vec());
        };
        let Some(cipher) = self.inner.keys.get(id) else {
            return Err(self.error(
                id,
                KeyProblem::Unknown,
                "the value is sealed under a key that is not among `keys`",
            ));
        };
        let aad = aad(&stored[..nonce_at], family, key);
        let nonce = Nonce::from_slice(&stored[nonce_at..nonce_at + NONCE]);
        let (body, tag) = stored[nonce_at + NONCE..].split_at(stored.len() - nonce_at - NONCE - TAG);
        let mut plain = body.to_vec();
        cipher.decrypt_in_place_detached(nonce, &aad, &mut plain, Tag::from_slice(tag)).map_err(|_| {
            self.error(
                id,
                KeyProblem::Authentication,
                "the value does not authenticate (a wrong key file, or the value is damaged)",
            )
        })?;
        Ok(plain)
    }

    fn error(&self, id: &str, problem: KeyProblem, detail: &str) -> ChannelError {
        ChannelError::Key { channel: self.inner.channel.clone(), key_id: id.into(), problem, detail: detail.into() }
    }
}

/// How one channel's values are stored: its name (for errors) and its cipher, if it has
/// `encryption`. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    /// The channel's name.
    pub channel: String,
    /// The cipher; `None`: values are written as plaintext.
    pub cipher: Option<Cipher>,
}

impl Keys {
    /// Plaintext storage for channel `channel`.
    pub fn plain(channel: &str) -> Self {
        Keys { channel: channel.into(), cipher: None }
    }

    /// The keys of channel `channel` with option `encryption`, reading the key files.
    ///
    /// # Errors
    /// As [`EncryptionConfig::load`].
    pub fn load(channel: &str, encryption: Option<&EncryptionConfig>) -> Result<Self, ChannelError> {
        Ok(Keys { channel: channel.into(), cipher: encryption.map(|e| e.load(channel)).transpose()? })
    }

    /// Seals `plain` into `out` (a copy of it without a cipher).
    pub fn seal_into(&self, family: Family, key: &[u8], plain: &[u8], out: &mut Vec<u8>) {
        match &self.cipher {
            Some(c) => c.seal_into(family, key, plain, out),
            None => {
                out.clear();
                out.extend_from_slice(plain);
            }
        }
    }

    /// [`Keys::seal_into`] into a fresh buffer.
    pub fn seal(&self, family: Family, key: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.seal_into(family, key, plain, &mut out);
        out
    }

    /// Opens a stored value: with a cipher as [`Cipher::open`]; without one, plaintext is
    /// answered as it is and a sealed value is an error naming its key id and the channel.
    ///
    /// # Errors
    /// As [`Cipher::open`]; [`KeyProblem::NoEncryption`] for a sealed value without a cipher.
    pub fn open(&self, family: Family, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, ChannelError> {
        if let Some(c) = &self.cipher {
            return c.open(family, key, stored);
        }
        let (key_id, problem, detail) = match sealing(stored) {
            Sealing::Plain => return Ok(stored.to_vec()),
            Sealing::Sealed(id) => (
                id.to_string(),
                KeyProblem::NoEncryption,
                "the value is sealed, but the channel has no `encryption` option",
            ),
            Sealing::Malformed => {
                (String::new(), KeyProblem::Malformed, "the sealed value's header is cut or of another version")
            }
        };
        Err(ChannelError::Key { channel: self.channel.clone(), key_id, problem, detail: detail.into() })
    }
}

/// A cipher for tests and tools: keys given as material.
#[doc(hidden)]
pub fn cipher_of(channel: &str, keys: &[(&str, [u8; 32])], active: &str) -> Cipher {
    let keys = keys.iter().map(|(id, k)| (id.to_string(), Aes256Gcm::new(k.into()))).collect();
    Cipher { inner: Arc::new(Inner { channel: channel.into(), keys, active: active.into() }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &[u8] = b"081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_38865049064139660 terminating";

    #[test]
    fn sealed_values_open_only_under_their_key_and_place() {
        let a = cipher_of("c1", &[("a", [1; 32])], "a");
        let sealed = a.seal(Family::Queue, &7u64.to_be_bytes(), LINE);
        assert!(!sealed.windows(8).any(|w| LINE.windows(8).any(|l| l == w)), "no plaintext left");
        assert_eq!(sealing(&sealed), Sealing::Sealed("a"));
        assert_eq!(a.open(Family::Queue, &7u64.to_be_bytes(), &sealed).unwrap(), LINE);
        let again = a.seal(Family::Queue, &7u64.to_be_bytes(), LINE);
        assert_ne!(again, sealed, "a fresh nonce for every value");
        for (family, key) in [(Family::Queue, 8u64), (Family::DeadLetter, 7)] {
            let e = a.open(family, &key.to_be_bytes(), &sealed).unwrap_err();
            assert!(matches!(e, ChannelError::Key { problem: KeyProblem::Authentication, .. }), "{e}");
        }
        let mut flipped = sealed.clone();
        let last = flipped.len() - 20;
        flipped[last] ^= 1;
        assert!(a.open(Family::Queue, &7u64.to_be_bytes(), &flipped).is_err());
        let wrong = cipher_of("c1", &[("a", [2; 32])], "a");
        let e = wrong.open(Family::Queue, &7u64.to_be_bytes(), &sealed).unwrap_err();
        assert!(e.to_string().contains("\"a\"") && e.to_string().contains("c1"), "{e}");
        let other = cipher_of("c1", &[("b", [1; 32])], "b");
        let e = other.open(Family::Queue, &7u64.to_be_bytes(), &sealed).unwrap_err();
        assert!(
            matches!(e, ChannelError::Key { problem: KeyProblem::Unknown, ref key_id, .. } if key_id == "a"),
            "{e}"
        );
        assert_eq!(a.open(Family::Queue, &[0; 8], LINE).unwrap(), LINE, "plaintext is read as it is");
        let e = Keys::plain("c1").open(Family::Queue, &7u64.to_be_bytes(), &sealed).unwrap_err();
        assert!(matches!(e, ChannelError::Key { problem: KeyProblem::NoEncryption, .. }), "{e}");
    }

    #[test]
    fn rotation_reads_old_values_and_seals_new_ones_under_the_active_key() {
        let old = cipher_of("c1", &[("a", [1; 32])], "a");
        let sealed = old.seal(Family::Queue, &[0; 8], LINE);
        let rotated = cipher_of("c1", &[("a", [1; 32]), ("b", [3; 32])], "b");
        assert_eq!(rotated.open(Family::Queue, &[0; 8], &sealed).unwrap(), LINE);
        assert_eq!(sealing(&rotated.seal(Family::Queue, &[0; 8], LINE)), Sealing::Sealed("b"));
    }

    #[test]
    fn key_files_are_raw_hex_or_base64_and_private() {
        let raw = [0x5au8; 32];
        assert_eq!(parse_key(&raw).unwrap(), raw);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parse_key(format!("{hex}\n").as_bytes()).unwrap(), raw);
        assert_eq!(parse_key(format!("{}\n", BASE64.encode(raw)).as_bytes()).unwrap(), raw);
        assert!(parse_key(&[1; 31]).unwrap_err().contains("31 bytes"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, raw).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key_file(&path).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path).unwrap(), raw);
        assert!(read_key_file(&dir.path().join("missing")).is_err());
    }
}
