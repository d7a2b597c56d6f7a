//! Telling a service manager what the agent does: systemd's `Type=notify` protocol
//! (sd_notify(3)), through the `sd-notify` crate.
//!
//! Each message is one datagram (`KEY=VALUE` lines) on the unix socket that the environment
//! variable `NOTIFY_SOCKET` names (a path, or an abstract name starting with `@`); systemd sets it
//! for a `Type=notify` unit. Without `NOTIFY_SOCKET` every function here is a no-op, so `flumen
//! run` in a terminal, a container or under another supervisor behaves as before.
//!
//! The sequence of one run: [`ready`] once every component started (systemd then counts the
//! unit as started and `systemctl start` returns); on a reload, [`reloading`] when it begins and
//! [`ready`] again when it is done (systemd's reload protocol, `ExecReload=` sending SIGHUP);
//! [`stopping`] once shutdown begins (the sinks then drain up to `--drain-timeout`).
//!
//! A message that cannot be sent (the socket is gone) is logged as a warning and otherwise
//! ignored: the agent goes on; the service manager then acts on its own timeouts.

use sd_notify::NotifyState;

/// Sends `READY=1` (and `STATUS=running`): the agent started. Answers whether a message was sent.
pub fn ready() -> bool {
    send("READY=1", &[NotifyState::Ready, NotifyState::Status("running")])
}

/// Sends `RELOADING=1` with `MONOTONIC_USEC` (the current `CLOCK_MONOTONIC` time in µs, which
/// systemd 253 and later require beside it) and `STATUS=reloading`: a reload begins. Call
/// [`ready`] when it is done (also when it failed and the running topology stays). Answers
/// whether a message was sent.
pub fn reloading() -> bool {
    let mut states = vec![NotifyState::Reloading, NotifyState::Status("reloading")];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.insert(1, now);
    }
    send("RELOADING=1", &states)
}

/// Sends `STOPPING=1` (and `STATUS=stopping`): shutdown begins. Answers whether a message was
/// sent.
pub fn stopping() -> bool {
    send("STOPPING=1", &[NotifyState::Stopping, NotifyState::Status("stopping")])
}

fn send(what: &str, states: &[NotifyState<'_>]) -> bool {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else { return false };
    match sd_notify::notify(states) {
        Ok(()) => {
            tracing::debug!(socket = %socket.to_string_lossy(), "service manager told {what}");
            true
        }
        Err(e) => {
            tracing::warn!(socket = %socket.to_string_lossy(), error = %e, "cannot tell the service manager {what}");
            false
        }
    }
}
