//! TCP check: the backend is healthy if it completes a TCP handshake ([`check`]),
//! and optionally if it then answers a request with the expected bytes
//! ([`check_exchange`]; keepalived's `TCP_CHECK` only connects, this is closer to
//! HAProxy's `tcp-check send`/`expect string`, e.g. `PING` / `+PONG` for Redis or
//! just the banner of an SMTP or SSH server).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{contains, printable, CheckResult, FailReason};

/// At most this many reply bytes are read (and searched) by [`check_exchange`]: a
/// backend that streams endlessly costs a bounded amount of memory.
pub const MAX_REPLY: usize = 4096;

/// Connects to `addr` within `timeout` and closes the connection at once.
///
/// The socket is created in the network namespace of the calling thread.
///
/// - a completed handshake is [`CheckResult::Ok`];
/// - a RST (nothing listening) is [`FailReason::Refused`];
/// - no answer within `timeout` (host down, ARP unanswered, packets dropped) is
///   [`FailReason::Timeout`];
/// - anything else (e.g. ICMP unreachable) is [`FailReason::Io`].
pub async fn check(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> CheckResult {
    match tokio::time::timeout(timeout, super::source::tcp_connect(addr, source)).await {
        Err(_elapsed) => CheckResult::Fail(FailReason::Timeout(timeout)),
        Ok(Err(e)) => CheckResult::Fail(FailReason::from_io(&e)),
        Ok(Ok(stream)) => {
            abort(&stream);
            drop(stream);
            CheckResult::Ok
        }
    }
}

/// Connects to `addr`, writes `send` (if any), and reads until `expect` (if any)
/// appears in the reply, all within `timeout`.
///
/// The socket is created in the network namespace of the calling thread.
///
/// - with neither `send` nor `expect` this is [`check`];
/// - the expected bytes arriving (anywhere in the first [`MAX_REPLY`] bytes) is
///   [`CheckResult::Ok`]; with `expect` unset (or empty), a successful write is
///   enough;
/// - a reply without them is [`FailReason::ReplyMismatch`], showing the start of
///   what came: as soon as the peer closes or [`MAX_REPLY`] bytes are in, else when
///   `timeout` runs out (a server that greets and then waits for more, like most,
///   never closes by itself);
/// - no reply at all within `timeout` is [`FailReason::Timeout`];
/// - connection failures are classified as in [`check`].
pub async fn check_exchange(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
    send: Option<&[u8]>,
    expect: Option<&[u8]>,
) -> CheckResult {
    let expect = expect.filter(|e| !e.is_empty());
    // Outside the timed future, so that what arrived before a timeout can still be
    // shown.
    let mut reply = Vec::new();
    let exchange = exchange(addr, source, send, expect, &mut reply);
    let result = tokio::time::timeout(timeout, exchange).await;
    let mismatch = |reply: &[u8]| {
        CheckResult::Fail(FailReason::ReplyMismatch {
            expected: printable(expect.unwrap_or_default()),
            got: printable(reply),
        })
    };
    match result {
        Err(_elapsed) if reply.is_empty() => CheckResult::Fail(FailReason::Timeout(timeout)),
        Err(_elapsed) => mismatch(&reply),
        Ok(Err(reason)) => CheckResult::Fail(reason),
        Ok(Ok(true)) => CheckResult::Ok,
        Ok(Ok(false)) => mismatch(&reply),
    }
}

/// [`check_exchange`] without its timeout: true if `expect` arrived (or is unset),
/// false if the peer closed or sent [`MAX_REPLY`] bytes without it.
async fn exchange(
    addr: SocketAddr,
    source: Option<IpAddr>,
    send: Option<&[u8]>,
    expect: Option<&[u8]>,
    reply: &mut Vec<u8>,
) -> Result<bool, FailReason> {
    let io = |e: std::io::Error| FailReason::from_io(&e);
    let mut stream = super::source::tcp_connect(addr, source).await.map_err(io)?;
    // Abortive close on drop, whichever way this returns (see `abort`); unread data
    // would make the kernel send a RST anyway.
    abort(&stream);
    if let Some(send) = send {
        stream.write_all(send).await.map_err(io)?;
    }
    let Some(expected) = expect else {
        return Ok(true);
    };
    let mut chunk = [0u8; 1024];
    while reply.len() < MAX_REPLY {
        let room = (MAX_REPLY - reply.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).await.map_err(io)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if contains(reply, expected) {
            return Ok(true);
        }
    }
    Ok(false)
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
