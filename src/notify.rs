//! systemd readiness and watchdog notifications (`Type=notify`).
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the socket named in
//! `NOTIFY_SOCKET`; a leading `@` means a Linux abstract socket. Outside
//! systemd the variable is unset and every call does nothing.

use std::io;
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`) to systemd. Returns whether a socket was
/// configured.
///
/// # Errors
/// When the socket is configured but the datagram cannot be sent.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    send(&target, state.as_bytes())?;
    Ok(true)
}

#[cfg(target_os = "linux")]
fn send(target: &std::ffi::OsStr, message: &[u8]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    let socket = UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(target)?,
    };
    socket.send_to_addr(message, &addr)?;
    Ok(())
}

#[cfg(all(unix, not(target_os = "linux")))]
fn send(target: &std::ffi::OsStr, message: &[u8]) -> io::Result<()> {
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket.send_to(message, target)?;
    Ok(())
}

/// How often to ping the watchdog, if systemd asked for it: half the
/// interval in `WATCHDOG_USEC`, as sd_watchdog_enabled(3) advises.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    // Never zero, which no timer takes: a setting of a few microseconds
    // still gets pings, as often as a health check per ping makes sense.
    (usec > 0).then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}
