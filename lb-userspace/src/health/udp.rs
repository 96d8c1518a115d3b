//! UDP check: send one datagram, expect one back (keepalived's `UDP_CHECK` with
//! `payload`/`require_reply`), and a DNS check built on it (keepalived's `DNS_CHECK`).
//!
//! UDP has no handshake, so only services that answer a request can be checked this
//! way: DNS, NTP, RADIUS, syslog-ng with a responder, a game server's status query...
//! A silent service looks exactly like a dead host (timeout). What UDP does give is
//! a fast negative: a host with nothing on the port answers with ICMP port
//! unreachable, which the kernel reports on a *connected* UDP socket as
//! ECONNREFUSED. Hence one connected socket per probe (it also makes the kernel drop
//! datagrams from anyone but the backend, and gives each probe a fresh port, so a
//! late reply to an earlier probe never counts for this one).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicU16, Ordering},
    time::Duration,
};

use tokio::net::UdpSocket;

use super::{contains, printable, CheckResult, FailReason};

/// Replies are read into a buffer this big; longer datagrams are truncated (and only
/// their first [`MAX_REPLY`] bytes searched). 4 KiB covers DNS over UDP (512 bytes,
/// or the usual EDNS 1232) and any status reply.
pub const MAX_REPLY: usize = 4096;

/// DNS header: id, flags, then four 16-bit counts.
const DNS_HEADER: usize = 12;
/// QTYPE A and QCLASS IN.
const QTYPE_A: u16 = 1;
const QCLASS_IN: u16 = 1;

/// Sends `send` to `addr` and waits up to `timeout` for a reply.
///
/// The socket is created in the network namespace of the calling thread.
///
/// - a reply (containing `expect`, when given) is [`CheckResult::Ok`];
/// - a reply without `expect` is [`FailReason::ReplyMismatch`] (the socket is
///   connected, so the reply is the backend's);
/// - ICMP port unreachable is [`FailReason::Refused`];
/// - no reply within `timeout` is [`FailReason::Timeout`]: the host is down, the
///   datagram or the reply was dropped, or the service ignored it.
pub async fn check(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
    send: &[u8],
    expect: Option<&[u8]>,
) -> CheckResult {
    let exchange = async {
        let socket = connect(addr, source).await?;
        socket
            .send(send)
            .await
            .map_err(|e| FailReason::from_io(&e))?;
        let mut buf = vec![0u8; MAX_REPLY];
        let len = socket
            .recv(&mut buf)
            .await
            .map_err(|e| FailReason::from_io(&e))?;
        let reply = &buf[..len];
        match expect {
            Some(expected) if !contains(reply, expected) => Err(FailReason::ReplyMismatch {
                expected: printable(expected),
                got: printable(reply),
            }),
            _ => Ok(()),
        }
    };
    finish(timeout, exchange).await
}

/// Asks the DNS server at `addr` for the A record of `name` (recursion desired) and
/// waits up to `timeout` for the answer.
///
/// Healthy means the server answered *our* query (same id, same question, QR set)
/// with RCODE 0 (NOERROR); an empty answer section (the name has no A record) still
/// counts: the server works. A reply with another id is ignored (it cannot be ours),
/// anything else malformed, or another RCODE (SERVFAIL, REFUSED, NXDOMAIN), is
/// [`FailReason::BadReply`]. Port unreachable and timeout as in [`check`].
pub async fn check_dns(
    addr: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
    name: &str,
) -> CheckResult {
    static NEXT_ID: AtomicU16 = AtomicU16::new(0);
    // Any id works on a connected socket with a fresh port; vary it anyway, so that
    // captures tell probes apart.
    let id = NEXT_ID
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(std::process::id() as u16);
    let query = match dns_query(id, name) {
        Ok(query) => query,
        Err(e) => return CheckResult::Fail(FailReason::Io(format!("invalid DNS check: {e}"))),
    };
    let exchange = async {
        let socket = connect(addr, source).await?;
        socket
            .send(&query)
            .await
            .map_err(|e| FailReason::from_io(&e))?;
        let mut buf = vec![0u8; MAX_REPLY];
        loop {
            let len = socket
                .recv(&mut buf)
                .await
                .map_err(|e| FailReason::from_io(&e))?;
            match dns_verdict(&query, &buf[..len]) {
                DnsVerdict::NotOurs => {}
                DnsVerdict::Ok => return Ok(()),
                DnsVerdict::Bad(what) => return Err(FailReason::BadReply(what)),
            }
        }
    };
    finish(timeout, exchange).await
}

/// A connected UDP socket towards `addr`, bound to an ephemeral port (of `source`,
/// if given).
async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<UdpSocket, FailReason> {
    let io = |e: io::Error| FailReason::from_io(&e);
    let socket = UdpSocket::bind(super::source::udp_local(addr, source))
        .await
        .map_err(|e| match source {
            Some(source) => super::source::bind_error(source, &e),
            None => e,
        })
        .map_err(io)?;
    socket.connect(addr).await.map_err(io)?;
    Ok(socket)
}

async fn finish(
    timeout: Duration,
    exchange: impl std::future::Future<Output = Result<(), FailReason>>,
) -> CheckResult {
    match tokio::time::timeout(timeout, exchange).await {
        Err(_elapsed) => CheckResult::Fail(FailReason::Timeout(timeout)),
        Ok(Err(reason)) => CheckResult::Fail(reason),
        Ok(Ok(())) => CheckResult::Ok,
    }
}

/// A DNS query (RFC 1035 4.1) with id `id` for the A record of `name`, with RD
/// (recursion desired) set and nothing else: one question, no EDNS.
///
/// `name` is a dotted name such as `example.com` or `example.com.`; each label must
/// be 1 to 63 bytes and the whole name at most 253 characters. The root name is
/// written `.`. Labels go on the wire as they are: no IDNA, no escapes.
pub fn dns_query(id: u16, name: &str) -> Result<Vec<u8>, String> {
    crate::config::check::dns_name_rules(name)?;
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(DNS_HEADER + trimmed.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    // Flags: QR 0 (query), opcode 0, RD 1.
    out.extend_from_slice(&0x0100u16.to_be_bytes());
    // QDCOUNT 1; ANCOUNT, NSCOUNT, ARCOUNT 0.
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            // 1 to 63 bytes: checked by dns_name_rules.
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    out.extend_from_slice(&QTYPE_A.to_be_bytes());
    out.extend_from_slice(&QCLASS_IN.to_be_bytes());
    Ok(out)
}

/// What a datagram on the DNS probe's socket means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DnsVerdict {
    /// Too short to carry an id, or another id: not an answer to this query.
    NotOurs,
    /// Our answer, NOERROR.
    Ok,
    /// Our answer, but an error or malformed.
    Bad(String),
}

/// Judges `reply` as an answer to `query` (as built by [`dns_query`]).
fn dns_verdict(query: &[u8], reply: &[u8]) -> DnsVerdict {
    if reply.len() < 2 || reply[..2] != query[..2] {
        return DnsVerdict::NotOurs;
    }
    if reply.len() < DNS_HEADER {
        return DnsVerdict::Bad(format!(
            "DNS reply of {} bytes, shorter than a header",
            reply.len()
        ));
    }
    let flags = u16::from_be_bytes([reply[2], reply[3]]);
    if flags & 0x8000 == 0 {
        return DnsVerdict::Bad("DNS reply without the QR (response) bit".into());
    }
    let opcode = (flags >> 11) & 0xf;
    if opcode != 0 {
        return DnsVerdict::Bad(format!("DNS reply with opcode {opcode}, not QUERY"));
    }
    let rcode = flags & 0xf;
    if rcode != 0 {
        return DnsVerdict::Bad(format!("DNS rcode {rcode} ({})", rcode_name(rcode)));
    }
    // A NOERROR answer must repeat our single question; compared byte for byte
    // except for letter case (servers may echo 0x20-randomised case differently).
    let qdcount = u16::from_be_bytes([reply[4], reply[5]]);
    let question = &query[DNS_HEADER..];
    let echoed = reply.get(DNS_HEADER..DNS_HEADER + question.len());
    if qdcount != 1 || !echoed.is_some_and(|echoed| echoed.eq_ignore_ascii_case(question)) {
        return DnsVerdict::Bad("DNS reply does not repeat our question".into());
    }
    DnsVerdict::Ok
}

fn rcode_name(rcode: u16) -> &'static str {
    match rcode {
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_query_bytes() {
        let query = dns_query(0xbeef, "example.com").unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0xbe, 0xef, // id
            0x01, 0x00, // flags: RD
            0, 1, 0, 0, 0, 0, 0, 0, // QD 1, AN 0, NS 0, AR 0
            7, b'e', b'x', b'a', b'm', b'p', b'l', b'e',
            3, b'c', b'o', b'm',
            0, // root
            0, 1, // QTYPE A
            0, 1, // QCLASS IN
        ];
        assert_eq!(query, expected);
        // A trailing dot is the same name.
        assert_eq!(dns_query(0xbeef, "example.com.").unwrap(), expected);
        // The root.
        assert_eq!(
            dns_query(1, ".").unwrap(),
            [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]
        );
    }

    #[test]
    fn dns_query_rejects_bad_names() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = ["abcdefghi"; 26].join(".");
        for name in ["", "a..b", ".com", &long_label, &long_name] {
            assert!(dns_query(1, name).is_err(), "{name:?}");
        }
        assert!(dns_query(1, &"a".repeat(63)).is_ok());
    }

    /// A reply to `query`: the query with flags set to `flags` and one answer count.
    fn reply(query: &[u8], flags: u16) -> Vec<u8> {
        let mut reply = query.to_vec();
        reply[2..4].copy_from_slice(&flags.to_be_bytes());
        reply[7] = 1;
        // An answer record's bytes; not parsed.
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
        reply
    }

    #[test]
    fn dns_replies_are_judged_strictly() {
        let query = dns_query(0x1234, "example.com").unwrap();
        assert_eq!(dns_verdict(&query, &reply(&query, 0x8180)), DnsVerdict::Ok);
        // Case changed by the server.
        let mut upper = reply(&query, 0x8180);
        upper[13..20].copy_from_slice(b"EXAMPLE");
        assert_eq!(dns_verdict(&query, &upper), DnsVerdict::Ok);

        assert_eq!(
            dns_verdict(&query, &reply(&query, 0x8183)),
            DnsVerdict::Bad("DNS rcode 3 (NXDOMAIN)".into())
        );
        assert_eq!(
            dns_verdict(&query, &reply(&query, 0x8182)),
            DnsVerdict::Bad("DNS rcode 2 (SERVFAIL)".into())
        );
        assert!(matches!(
            dns_verdict(&query, &reply(&query, 0x0100)),
            DnsVerdict::Bad(m) if m.contains("QR")
        ));
        assert!(matches!(
            dns_verdict(&query, &reply(&query, 0x8900)),
            DnsVerdict::Bad(m) if m.contains("opcode 1")
        ));
        // Another id: not ours, keep waiting.
        let mut other = reply(&query, 0x8180);
        other[1] ^= 1;
        assert_eq!(dns_verdict(&query, &other), DnsVerdict::NotOurs);
        // Truncated anywhere: never a panic, never Ok.
        let full = reply(&query, 0x8180);
        for len in 0..query.len() {
            assert_ne!(dns_verdict(&query, &full[..len]), DnsVerdict::Ok, "{len}");
        }
        // Another question.
        let other_query = dns_query(0x1234, "example.org").unwrap();
        assert!(matches!(
            dns_verdict(&query, &reply(&other_query, 0x8180)),
            DnsVerdict::Bad(m) if m.contains("question")
        ));
    }
}
