//! TCP connect check: the backend is healthy if it completes a TCP handshake.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpStream;

use super::{CheckResult, FailReason};

/// Connects to `addr` within `timeout` and closes the connection at once.
///
/// The socket is created in the network namespace of the calling thread.
///
/// - a completed handshake is [`CheckResult::Ok`];
/// - a RST (nothing listening) is [`FailReason::Refused`];
/// - no answer within `timeout` (host down, ARP unanswered, packets dropped) is
///   [`FailReason::Timeout`];
/// - anything else (e.g. ICMP unreachable) is [`FailReason::Io`].
pub async fn check(addr: SocketAddr, timeout: Duration) -> CheckResult {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_elapsed) => CheckResult::Fail(FailReason::Timeout(timeout)),
        Ok(Err(e)) => CheckResult::Fail(FailReason::from_io(&e)),
        Ok(Ok(stream)) => {
            abort(&stream);
            drop(stream);
            CheckResult::Ok
        }
    }
}

/// Sets SO_LINGER to 0 so that closing `stream` sends a RST instead of a FIN.
///
/// Why: a checker opens a connection every few seconds per backend and is always the
/// side that closes. A graceful close would leave each probe's socket in TIME_WAIT on
/// the checker for 60 s (thousands of entries with many backends, eating ephemeral
/// ports towards the same backend), and a backend that is slow to close its side can
/// leave half-closed FIN_WAIT_2/CLOSE_WAIT sockets around. An abortive close frees
/// both ends immediately. The cost, a RST in the backend's counters (and possibly a
/// "connection reset" line in its log), is what keepalived's TCP_CHECK does too.
///
/// Best effort: if setsockopt fails the socket is simply closed gracefully.
pub(crate) fn abort(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}
