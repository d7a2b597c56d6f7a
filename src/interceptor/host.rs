//! `Host`: the agent's host name or IP address, as Flume's `HostInterceptor`.

use serde::Deserialize;

use super::{set_header, Intercept};
use crate::event::Event;

/// `Host(header: "host", use_ip: false, preserve_existing: false)`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    /// The header to set. Default `"host"`.
    pub header: String,
    /// Use the first non-loopback IPv4/IPv6 address of the host name instead of the name.
    /// Default `false`.
    pub use_ip: bool,
    /// Keep a value the event already has. Default `false`.
    pub preserve_existing: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig { header: "host".into(), use_ip: false, preserve_existing: false }
    }
}

/// A built `Host` interceptor: the value is looked up once.
pub struct HostInterceptor {
    config: HostConfig,
    value: String,
}

impl HostConfig {
    /// Looks the host up.
    ///
    /// # Errors
    /// When the host name cannot be read.
    pub fn build(&self) -> Result<HostInterceptor, String> {
        let name = hostname().map_err(|e| format!("Host interceptor: cannot read the host name: {e}"))?;
        let value = if self.use_ip {
            use std::net::ToSocketAddrs;
            match (name.as_str(), 0).to_socket_addrs() {
                Ok(addrs) => {
                    let addrs: Vec<_> = addrs.collect();
                    match addrs.iter().find(|a| !a.ip().is_loopback()).or(addrs.first()) {
                        Some(a) => a.ip().to_string(),
                        None => {
                            tracing::warn!(host = %name, "Host interceptor: the host name resolves to no address; using 127.0.0.1");
                            "127.0.0.1".to_string()
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(host = %name, error = %e, "Host interceptor: looking up the host's address failed; using 127.0.0.1");
                    "127.0.0.1".to_string()
                }
            }
        } else {
            name
        };
        Ok(HostInterceptor { config: self.clone(), value })
    }
}

/// The host name, from `gethostname(2)`.
pub(crate) fn hostname() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
}

impl Intercept for HostInterceptor {
    fn intercept(&self, batch: &mut Vec<Event>) -> u64 {
        set_header(batch, &self.config.header, self.config.preserve_existing, || self.value.clone());
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_the_host_name() {
        let mut batch = vec![Event::new("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: check pass; user unknown")];
        HostConfig::default().build().unwrap().intercept(&mut batch);
        assert_eq!(batch[0].headers["host"], hostname().unwrap());
        assert!(!batch[0].headers["host"].is_empty());
    }
}
