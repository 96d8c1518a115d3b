//! Backend health checking, keepalived style: active probes plus rise/fall hysteresis.
//!
//! - [`icmp`]: an ICMP/ICMPv6 echo check (the host is up at L3; keepalived's
//!   `PING_CHECK`).
//! - [`tcp`]: a TCP connect check (the backend accepts connections), optionally
//!   sending bytes and expecting bytes back.
//! - [`udp`]: a UDP request/reply check, and a DNS query check built on it.
//! - [`http`]: an HTTP/1.1 `GET` check, plain or over TLS (expected status, optional
//!   body substring, optional MD5 digest of the body).
//! - [`exec`]: runs a program, exit status 0 means up (keepalived's `MISC_CHECK`).
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
pub mod budget;
pub mod check;
pub mod exec;
pub mod http;
pub mod icmp;
pub mod latency;
pub mod monitor;
pub mod notify;
mod source;
pub mod state;
pub mod tcp;
pub mod udp;

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
    /// An ICMP error quoting our probe came back: e.g. "host unreachable from
    /// 10.71.0.2". Faster and more telling than waiting for the timeout.
    Unreachable(String),
    /// A TCP or UDP reply did not contain the expected bytes. Both are shown
    /// escaped and shortened (see [`printable`]).
    ReplyMismatch {
        /// The expected bytes.
        expected: String,
        /// The start of what arrived.
        got: String,
    },
    /// A reply arrived but is not a valid answer: e.g. a DNS reply with an error
    /// code, or one that does not answer our query.
    BadReply(String),
    /// The MD5 digest of the HTTP body (hex) is not the expected one.
    DigestMismatch {
        /// The configured digest.
        expected: String,
        /// The digest of the body that arrived.
        got: String,
    },
    /// The TLS handshake failed: untrusted or mismatching certificate, no common
    /// protocol version or cipher, not a TLS server, ...
    Tls(String),
    /// The check program did not exit with status 0: "exit status 3" or "killed by
    /// signal 9", followed by the first line of its standard error, if any.
    Exit(String),
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
            FailReason::Unreachable(what) => write!(f, "unreachable: {what}"),
            FailReason::ReplyMismatch { expected, got } => {
                write!(f, "reply does not contain \"{expected}\" (got \"{got}\")")
            }
            FailReason::BadReply(what) => write!(f, "bad reply: {what}"),
            FailReason::DigestMismatch { expected, got } => {
                write!(f, "body digest {got} is not {expected}")
            }
            FailReason::Tls(what) => write!(f, "TLS: {what}"),
            FailReason::Exit(what) => f.write_str(what),
        }
    }
}

impl FailReason {
    /// Whether the failure is an answer, not a silence: the host refused the connection
    /// or an ICMP error came back. Such a failure is confirmed at once by re-probing
    /// rather than waiting whole intervals (a dead server's kernel answers in
    /// microseconds; a slow one still needs `fall` timeouts).
    pub fn is_definitive(&self) -> bool {
        matches!(self, FailReason::Refused | FailReason::Unreachable(_))
    }

    /// Classifies a socket error from connecting, writing or reading.
    pub(crate) fn from_io(e: &io::Error) -> FailReason {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => FailReason::Refused,
            io::ErrorKind::TimedOut => FailReason::Io("connection timed out (kernel)".into()),
            _ => FailReason::Io(e.to_string()),
        }
    }
}

/// At most this many bytes of peer data go into a failure reason.
const MAX_SHOWN: usize = 64;

/// Peer bytes as operators can read them in a log line: ASCII escaped the way Rust
/// escapes byte strings (`\n`, `\x00`), cut to [`MAX_SHOWN`] input bytes with "..."
/// appended when longer. Whatever the peer sends, the result is one short line.
pub fn printable(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(MAX_SHOWN)];
    let mut out = shown.escape_ascii().to_string();
    if bytes.len() > MAX_SHOWN {
        out.push_str("...");
    }
    out
}

/// True if `needle` occurs in `haystack` (an empty needle always does).
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
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
            (
                FailReason::Unreachable("host unreachable from 10.71.0.2".into()),
                "unreachable: host unreachable from 10.71.0.2",
            ),
            (
                FailReason::ReplyMismatch {
                    expected: printable(b"+OK"),
                    got: printable(b"-ERR\r\n"),
                },
                "reply does not contain \"+OK\" (got \"-ERR\\r\\n\")",
            ),
            (
                FailReason::BadReply("DNS rcode 3 (NXDOMAIN)".into()),
                "bad reply: DNS rcode 3 (NXDOMAIN)",
            ),
            (
                FailReason::DigestMismatch {
                    expected: "444bcb3a3fcf8389296c49467f27e1d6".into(),
                    got: "d41d8cd98f00b204e9800998ecf8427e".into(),
                },
                "body digest d41d8cd98f00b204e9800998ecf8427e is not \
                 444bcb3a3fcf8389296c49467f27e1d6",
            ),
            (
                FailReason::Tls("invalid peer certificate: UnknownIssuer".into()),
                "TLS: invalid peer certificate: UnknownIssuer",
            ),
            (
                FailReason::Exit("exit status 3: backend not ready".into()),
                "exit status 3: backend not ready",
            ),
        ];
        for (reason, text) in cases {
            assert_eq!(reason.to_string(), text);
            assert_eq!(CheckResult::Fail(reason).to_string(), text);
        }
        assert_eq!(CheckResult::Ok.to_string(), "ok");
    }

    #[test]
    fn peer_bytes_are_shown_escaped_and_short() {
        assert_eq!(printable(b"be\n"), "be\\n");
        assert_eq!(printable(b"\x00\xff\"q\""), "\\x00\\xff\\\"q\\\"");
        let long = printable(&[b'a'; 1000]);
        assert_eq!(long, format!("{}...", "a".repeat(MAX_SHOWN)));
        assert!(contains(b"status: ok", b"ok"));
        assert!(!contains(b"status: o k", b"ok"));
        assert!(contains(b"", b""));
        assert!(!contains(b"o", b"ok"));
    }

    #[test]
    fn refused_is_classified() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(FailReason::from_io(&e), FailReason::Refused);
        let e = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert!(matches!(FailReason::from_io(&e), FailReason::Io(_)));
    }
}
