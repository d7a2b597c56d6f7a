//! Secrets in a topology: bearer tokens, SASL passwords, key passphrases.
//!
//! An option of type [`Secret`] is written as a string in one of three forms:
//! - `"env:NAME"`: the value of environment variable `NAME`;
//! - `"file:/run/secrets/token"`: the contents of a file (relative paths are relative to the
//!   topology file's folder), with trailing line breaks (`\n`, `\r\n`) trimmed;
//! - anything else: the literal value (a literal that starts with `env:` or `file:` cannot be
//!   written; put it in a file).
//!
//! A reference is resolved when the topology is validated (a variable that is not set or a file
//! that cannot be read is a topology error at the option, naming the variable or the file, never
//! the value) and again each time the component starts, so a restart picks up a rotated file.
//! A secret shows as `***` in every `Debug` and `Display`, so it never reaches the log, `flumen
//! validate`, the metrics or the run summary through a printed option. (As Vector's and Fluent
//! Bit's `${env}` and file secrets, and Kubernetes' mounted secret files.)
//!
//! A leaf module: it imports no component and no part of [`crate::topology`].

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// A secret option: a literal, `"env:NAME"` or `"file:PATH"` (see the module documentation).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    source: Source,
}

/// Where a [`Secret`]'s value comes from.
#[derive(Clone, PartialEq, Eq)]
enum Source {
    Literal(String),
    Env(String),
    File(PathBuf),
}

/// Why a [`Secret`] could not be resolved. The messages name the variable or the file, never a
/// value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is not set.
    #[error("environment variable {name} is not set")]
    EnvNotSet {
        /// The variable's name.
        name: String,
    },
    /// The environment variable's value is not valid UTF-8.
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode {
        /// The variable's name.
        name: String,
    },
    /// The file could not be read.
    #[error("cannot read secret file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not UTF-8 text.
    #[error("secret file {} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The value is empty (an empty literal, variable or file).
    #[error("{what} is empty")]
    Empty {
        /// `"the value"`, `"environment variable NAME"` or `"secret file PATH"`.
        what: String,
    },
}

/// A resolved secret value. `Debug` and `Display` show `***`; read it with [`Revealed::expose`].
#[derive(Clone)]
pub struct Revealed(String);

impl Revealed {
    /// The value itself: hand it to the protocol that needs it, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Revealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Revealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Secret {
    /// A literal secret (tests and programs building a topology in code).
    pub fn literal(value: impl Into<String>) -> Secret {
        Secret { source: Source::Literal(value.into()) }
    }

    /// Reads `text` as a topology does: `env:NAME`, `file:PATH` or a literal.
    pub fn parse(text: &str) -> Secret {
        let source = if let Some(name) = text.strip_prefix("env:") {
            Source::Env(name.to_string())
        } else if let Some(path) = text.strip_prefix("file:") {
            Source::File(PathBuf::from(path))
        } else {
            Source::Literal(text.to_string())
        };
        Secret { source }
    }

    /// Whether the value comes from the environment or a file rather than the topology's text.
    pub fn is_reference(&self) -> bool {
        !matches!(self.source, Source::Literal(_))
    }

    /// Resolves a `file:` path against `base` (the topology file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Source::File(path) = &mut self.source {
            *path = crate::config::resolve(base, path);
        }
    }

    /// The value now: the literal, the variable's value, or the file's contents without trailing
    /// line breaks.
    ///
    /// # Errors
    /// [`SecretError`] naming the variable or the file; [`SecretError::Empty`] for an empty value.
    pub fn reveal(&self) -> Result<Revealed, SecretError> {
        let (value, what) = match &self.source {
            Source::Literal(value) => (value.clone(), "the value".to_string()),
            Source::Env(name) => match std::env::var(name) {
                Ok(value) => (value, format!("environment variable {name}")),
                Err(std::env::VarError::NotPresent) => return Err(SecretError::EnvNotSet { name: name.clone() }),
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(SecretError::EnvNotUnicode { name: name.clone() })
                }
            },
            Source::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| SecretError::Io { path: path.clone(), source })?;
                let mut text = String::from_utf8(bytes).map_err(|_| SecretError::NotUtf8 { path: path.clone() })?;
                let kept = text.trim_end_matches(['\n', '\r']).len();
                text.truncate(kept);
                (text, format!("secret file {}", path.display()))
            }
        };
        if value.is_empty() {
            return Err(SecretError::Empty { what });
        }
        Ok(Revealed(value))
    }

    /// Checks that the secret resolves, for validation: `Err` with the message to show at the
    /// option, which names the variable or file and never the value.
    ///
    /// # Errors
    /// [`Secret::reveal`]'s error.
    pub fn check(&self) -> Result<(), SecretError> {
        self.reveal().map(drop)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(Secret::parse(&text))
    }
}

/// Whether `key`, a librdkafka property, carries a secret (its value may then be an `env:` or
/// `file:` reference, and is never shown).
pub fn is_secret_property(key: &str) -> bool {
    matches!(
        key,
        "sasl.password"
            | "ssl.key.password"
            | "ssl.keystore.password"
            | "ssl.truststore.password"
            | "sasl.oauthbearer.client.secret"
            | "ssl.key.pem"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_resolve_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "s3cr3t-from-file\r\n\n").unwrap();
        let mut file = Secret::parse("file:token");
        file.resolve_paths(dir.path());
        assert_eq!(file.reveal().unwrap().expose(), "s3cr3t-from-file");
        assert!(file.is_reference());

        let literal = Secret::parse("s3cr3t-literal");
        assert_eq!(literal.reveal().unwrap().expose(), "s3cr3t-literal");
        assert!(!literal.is_reference());
        for shown in [
            format!("{literal:?}"),
            format!("{literal}"),
            format!("{file:?}"),
            format!("{:?}", literal.reveal().unwrap()),
            format!("{}", file.reveal().unwrap()),
            format!("{:?}", Some(&literal)),
        ] {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }

        std::env::set_var("FLUMEN_SECRET_UNIT_TEST", "s3cr3t-from-env");
        assert_eq!(Secret::parse("env:FLUMEN_SECRET_UNIT_TEST").reveal().unwrap().expose(), "s3cr3t-from-env");
    }

    #[test]
    fn missing_references_name_the_variable_or_file() {
        let e = Secret::parse("env:FLUMEN_SECRET_NOT_SET_ANYWHERE").reveal().unwrap_err();
        assert!(matches!(e, SecretError::EnvNotSet { .. }));
        assert_eq!(e.to_string(), "environment variable FLUMEN_SECRET_NOT_SET_ANYWHERE is not set");
        let mut f = Secret::parse("file:absent/token");
        f.resolve_paths(Path::new("/nonexistent-base"));
        let e = f.reveal().unwrap_err();
        assert!(e.to_string().starts_with("cannot read secret file /nonexistent-base/absent/token: "), "{e}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        let mut f = Secret::parse("file:empty");
        f.resolve_paths(dir.path());
        assert!(matches!(f.reveal().unwrap_err(), SecretError::Empty { .. }));
        assert!(matches!(Secret::parse("").reveal().unwrap_err(), SecretError::Empty { .. }));
    }

    #[test]
    fn it_parses_from_ron() {
        let s: Option<Secret> = ron::from_str(r#"Some("env:TOKEN")"#).unwrap();
        assert_eq!(s, Some(Secret::parse("env:TOKEN")));
        let s: Secret = ron::from_str(r#""file:/run/token""#).unwrap();
        assert_eq!(s, Secret::parse("file:/run/token"));
    }
}
