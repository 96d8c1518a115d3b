//! Backend health checking, keepalived style: active probes plus rise/fall hysteresis.
//!
//! - [`tcp`]: a TCP connect check (the backend accepts connections).
//! - [`http`]: an HTTP/1.1 `GET` check (expected status, optional body substring).
//! - [`state`]: [`state::Tracker`], which turns a stream of [`CheckResult`]s into
//!   Up/Down transitions only after `fall` consecutive failures or `rise` consecutive
//!   successes, so a flapping backend does not flap the service.
//!
//! Checks are plain async functions over ordinary sockets: they run in the network
//! namespace of the thread that polls them and keep no global state, so a caller
//! decides where (which namespace, which runtime) and how often they run.
//!
//! The daemon side: [`check`] (a check as configured, validated, and run once),
//! [`monitor`] (one scheduled task per checked backend), [`book`] (health of every
//! backend and the service set it implies), [`notify`] (operator hooks).

pub mod book;
pub mod check;
pub mod http;
pub mod monitor;
pub mod notify;
pub mod state;
pub mod tcp;

use std::{fmt, future::Future, io, time::Duration};

pub use state::{Health, Thresholds, Tracker, Transition};

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResult {
    /// The backend answered as expected.
    Ok,
    /// The backend did not; the reason is meant for operators (logs, status output).
    Fail(FailReason),
}

impl CheckResult {
    /// True for [`CheckResult::Ok`].
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => f.write_str("ok"),
            CheckResult::Fail(reason) => reason.fmt(f),
        }
    }
}

/// Why a probe failed. `Display` gives a short operator-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailReason {
    /// The whole probe (connect, and for HTTP request and response) took longer than
    /// the given timeout: e.g. the host is down and nothing answers ARP, or a firewall
    /// drops packets, or the server accepted but never answered.
    Timeout(Duration),
    /// The host answered the connection attempt with a RST: nothing listens there.
    Refused,
    /// The HTTP status was not one of the expected ones.
    Status(u16),
    /// The (first 64 KiB of the) HTTP body did not contain the expected text.
    BodyMismatch(String),
    /// The peer did not speak valid HTTP/1.x, or closed before a full header arrived.
    Protocol(String),
    /// Any other socket error (unreachable host or network, reset, ...).
    Io(String),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Duration's Debug output is the readable one: "1s", "500ms", "1.5s".
            FailReason::Timeout(after) => write!(f, "timeout after {after:?}"),
            FailReason::Refused => f.write_str("connection refused"),
            FailReason::Status(status) => write!(f, "status {status}"),
            FailReason::BodyMismatch(expected) => {
                write!(f, "body does not contain {expected:?}")
            }
            FailReason::Protocol(what) => write!(f, "invalid HTTP response: {what}"),
            FailReason::Io(what) => f.write_str(what),
        }
    }
}

impl FailReason {
    /// Classifies a socket error from connecting, writing or reading.
    pub(crate) fn from_io(e: &io::Error) -> FailReason {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => FailReason::Refused,
            io::ErrorKind::TimedOut => FailReason::Io("connection timed out (kernel)".into()),
            _ => FailReason::Io(e.to_string()),
        }
    }
}

/// Runs `fut` (e.g. a check) to completion on a fresh current-thread tokio runtime on
/// the calling thread, for callers that have no runtime: one-shot CLI commands and
/// tests. The sockets it creates belong to the calling thread's network namespace.
///
/// Panics if the runtime cannot be built (out of file descriptors or memory) or if
/// called from inside a runtime.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("build a current-thread tokio runtime")
        .block_on(fut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_well() {
        let cases = [
            (
                FailReason::Timeout(Duration::from_secs(1)),
                "timeout after 1s",
            ),
            (
                FailReason::Timeout(Duration::from_millis(250)),
                "timeout after 250ms",
            ),
            (FailReason::Refused, "connection refused"),
            (FailReason::Status(503), "status 503"),
            (
                FailReason::BodyMismatch("ok".into()),
                "body does not contain \"ok\"",
            ),
            (
                FailReason::Protocol("no status line".into()),
                "invalid HTTP response: no status line",
            ),
            (
                FailReason::Io("no route to host".into()),
                "no route to host",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(CheckResult::Fail(reason).to_string(), text);
        }
        assert_eq!(CheckResult::Ok.to_string(), "ok");
    }

    #[test]
    fn refused_is_classified() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(FailReason::from_io(&e), FailReason::Refused);
        let e = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert!(matches!(FailReason::from_io(&e), FailReason::Io(_)));
    }
}
