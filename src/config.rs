//! Value helpers of topology options, shared by every component's config: durations
//! (humantime strings), `host:port` addresses, and paths relative to the topology file.
//!
//! A leaf module: it imports no component and no part of [`crate::topology`].

use std::path::{Path, PathBuf};

/// Checks that `address` is `host:port`: an IP address or a host name, then a port from 0 to
/// 65535 (IPv6 addresses in brackets: `"[::1]:44444"`). Host names are looked up only when the
/// component starts.
///
/// # Errors
/// What is wrong with it, in words.
pub fn check_address(address: &str) -> Result<(), String> {
    if address.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err("it has no :port".into());
    };
    if port.parse::<u16>().is_err() {
        return Err(format!("port {port:?} is not a number from 0 to 65535"));
    }
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.starts_with('[') || host.contains(':') || host.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{host:?} is not an IP address (IPv6 goes in brackets: \"[::1]:44444\")"));
    }
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    if labels.iter().all(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return Err(format!("{host:?} is not an IP address"));
    }
    if !labels.into_iter().all(label) {
        return Err(format!("{host:?} is neither an IP address nor a host name"));
    }
    Ok(())
}

/// Resolves `path` against `base` unless it is absolute.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// `path` for people to read: `.` components dropped and each `..` folded into the component
/// before it (`topologies/../var/quickstart/archive` → `var/quickstart/archive`).
///
/// Lexical only: the file system is not asked, so a path need not exist, and a symbolic link
/// followed by `..` is folded as if it were a directory (use it for showing paths, not opening
/// them). A `..` at the start of a relative path stays; one right after the root is dropped.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_lexically() {
        let n = |p: &str| normalize(Path::new(p)).display().to_string();
        assert_eq!(n("topologies/../var/quickstart/archive"), "var/quickstart/archive");
        assert_eq!(n("/srv/flumen/topologies/./../var/out/"), "/srv/flumen/var/out");
        assert_eq!(n("../a/b/../../c"), "../c");
        assert_eq!(n("a/.."), ".");
        assert_eq!(n("/../x"), "/x");
        assert_eq!(n("../../x"), "../../x");
        assert_eq!(n("does/not/exist/.."), "does/not");
    }

    #[test]
    fn addresses_are_host_and_port() {
        for good in ["127.0.0.1:44444", "0.0.0.0:0", "[::1]:41414", "localhost:44444", "collector-1.example.org:80"] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:99999",
            "localhost:http",
            ":44444",
            "::1:44444",
            "bad_host:1",
            "[::1:80",
            "256.0.0.1:80",
        ] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }
}

/// Serde helpers for durations written as strings: `"250ms"`, `"30s"`, `"5m"` (humantime).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Deserializes a humantime duration string.
    ///
    /// # Errors
    /// A serde error naming the string when it does not parse.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!("bad duration {text:?} ({e}); write e.g. \"250ms\", \"30s\", \"5m\""))
        })
    }
}
