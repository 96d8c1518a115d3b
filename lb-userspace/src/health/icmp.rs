//! ICMP echo check (keepalived's `PING_CHECK`): the host answers a ping.
//!
//! This only proves the host is up at L3 (its kernel answers), not that any service
//! runs on it; it is for backends whose service cannot be probed (or as a cheap
//! first check).
//!
//! Why a raw socket: the unprivileged "ping socket" (`SOCK_DGRAM` + `IPPROTO_ICMP`)
//! is only allowed for groups in `net.ipv4.ping_group_range`, which is empty on many
//! distributions, whereas the daemon runs with `CAP_NET_RAW` anyway (it loads XDP).
//! The price is that a raw ICMP socket sees every ICMP packet of the namespace: other
//! probes' replies, other programs' pings, our own requests on loopback, errors for
//! other traffic. So each probe gets its own (identifier, sequence) pair and a
//! payload of its own, and everything that does not match all of them, and come from
//! the probed address, is ignored.
//!
//! An ICMP error that quotes our request (destination unreachable, time exceeded)
//! ends the probe early with [`FailReason::Unreachable`]: a router (or the local
//! kernel, after failed ARP/ND) saying so is better than waiting for the timeout.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use pnet_packet::{
    icmp::{self, IcmpPacket, IcmpTypes},
    icmpv6::{Icmpv6Packet, Icmpv6Types},
    ip::IpNextHeaderProtocols,
    ipv4::Ipv4Packet,
    ipv6::Ipv6Packet,
    Packet,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{CheckResult, FailReason};

/// Probes started by this process; with the pid it makes (identifier, sequence).
static PROBES: AtomicU32 = AtomicU32::new(0);

/// Bytes after the echo header: a fixed tag (recognisable in a capture) and the
/// probe's 32-bit number, so even another process that happens to use the same
/// identifier and sequence cannot complete our probe with its reply.
const TAG: &[u8; 12] = b"xlb-health\0\0";
const PAYLOAD_LEN: usize = TAG.len() + 4;
/// Echo header (type, code, checksum, identifier, sequence) plus payload.
const REQUEST_LEN: usize = 8 + PAYLOAD_LEN;
/// Big enough for any ICMP packet that can match: replies echo our 28 bytes, errors
/// quote at most 576 (IPv4) or 1280 (IPv6) bytes. Longer datagrams are truncated,
/// which is fine: they are not ours.
const RECV_BUF: usize = 2048;

/// One probe's identity on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Probe {
    id: u16,
    seq: u16,
    payload: [u8; PAYLOAD_LEN],
}

impl Probe {
    /// A fresh probe: the sequence number is the low half of a process-wide counter,
    /// the identifier its high half mixed with the pid (as `ping` uses the pid), so
    /// concurrent probes of this process never share both, and probes of different
    /// processes rarely do.
    fn next() -> Probe {
        let n = PROBES.fetch_add(1, Ordering::Relaxed);
        // Truncations on purpose: 16-bit wire fields.
        let id = (std::process::id() as u16) ^ ((n >> 16) as u16).rotate_left(8);
        let seq = n as u16;
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..TAG.len()].copy_from_slice(TAG);
        payload[TAG.len()..].copy_from_slice(&n.to_be_bytes());
        Probe { id, seq, payload }
    }

    /// The echo request, without checksum (see [`Probe::request_v4`]).
    fn request(&self, echo_request_type: u8) -> [u8; REQUEST_LEN] {
        let mut buf = [0u8; REQUEST_LEN];
        buf[0] = echo_request_type;
        // buf[1] code 0, buf[2..4] checksum 0 for now.
        buf[4..6].copy_from_slice(&self.id.to_be_bytes());
        buf[6..8].copy_from_slice(&self.seq.to_be_bytes());
        buf[8..].copy_from_slice(&self.payload);
        buf
    }

    /// ICMPv4 echo request with its checksum: on IPv4 raw sockets the kernel sends
    /// the ICMP message exactly as given.
    fn request_v4(&self) -> [u8; REQUEST_LEN] {
        let mut buf = self.request(IcmpTypes::EchoRequest.0);
        let sum = IcmpPacket::new(&buf).map_or(0, |p| icmp::checksum(&p));
        buf[2..4].copy_from_slice(&sum.to_be_bytes());
        buf
    }

    /// ICMPv6 echo request with the checksum left 0.
    ///
    /// Why 0 is right: for raw ICMPv6 sockets the kernel computes and fills in the
    /// ICMPv6 checksum itself (RFC 3542 section 3.1, "the kernel will calculate and
    /// insert the ICMPv6 checksum"; Linux sets IPV6_CHECKSUM offset 2 on every
    /// IPPROTO_ICMPV6 raw socket and cannot be told otherwise). It has to: the
    /// checksum covers a pseudo-header with the source address, which the kernel
    /// picks at route lookup, after we hand over the packet. The ICMPv6 tests prove
    /// it: the peer's kernel drops echo requests with a wrong checksum, so a reply
    /// means the kernel filled it in. For the same reason replies arriving on the
    /// socket have already had their checksum verified (bad ones are dropped).
    fn request_v6(&self) -> [u8; REQUEST_LEN] {
        self.request(Icmpv6Types::EchoRequest.0)
    }

    /// True if `icmp` (an ICMP or ICMPv6 message, from its type byte on) is the echo
    /// message `echo_type` with our identifier, sequence and payload.
    fn is_echo(&self, icmp: &[u8], echo_type: u8) -> bool {
        icmp.len() == REQUEST_LEN
            && icmp[0] == echo_type
            && icmp[1] == 0
            && icmp[4..6] == self.id.to_be_bytes()
            && icmp[6..8] == self.seq.to_be_bytes()
            && icmp[8..] == self.payload
    }

    /// True if `quoted` (the start of an echo request quoted in an ICMP error: the
    /// standard guarantees only its first 8 bytes) carries our identifier and
    /// sequence.
    fn is_quoted(&self, quoted: &[u8], echo_request_type: u8) -> bool {
        quoted.len() >= 8
            && quoted[0] == echo_request_type
            && quoted[4..6] == self.id.to_be_bytes()
            && quoted[6..8] == self.seq.to_be_bytes()
    }
}

/// What one received datagram means for the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Not about our probe (another probe, another program, our own request seen on
    /// loopback, garbage): keep waiting.
    Ignore,
    /// Our echo reply.
    Reply,
    /// An ICMP error quoting our request.
    Error(String),
}

/// Pings `addr` once and waits up to `timeout` for the echo reply.
///
/// The socket is created in the network namespace of the calling thread, and needs
/// `CAP_NET_RAW` there.
///
/// - the matching echo reply from `addr` is [`CheckResult::Ok`];
/// - an ICMP destination unreachable or time exceeded that quotes our request is
///   [`FailReason::Unreachable`], as soon as it arrives;
/// - nothing within `timeout` is [`FailReason::Timeout`];
/// - socket errors (no permission, no route: the kernel refuses to send) are
///   [`FailReason::Io`].
///
/// IPv6 link-local addresses are not supported (an `IpAddr` has no scope).
pub async fn check(addr: IpAddr, source: Option<IpAddr>, timeout: Duration) -> CheckResult {
    match tokio::time::timeout(timeout, probe(addr, source)).await {
        Err(_elapsed) => CheckResult::Fail(FailReason::Timeout(timeout)),
        Ok(Err(reason)) => CheckResult::Fail(reason),
        Ok(Ok(())) => CheckResult::Ok,
    }
}

async fn probe(addr: IpAddr, source: Option<IpAddr>) -> Result<(), FailReason> {
    let socket = open(addr, source).map_err(|e| {
        let what = if e.kind() == io::ErrorKind::PermissionDenied {
            "raw ICMP socket needs CAP_NET_RAW".to_owned()
        } else {
            format!("raw ICMP socket: {e}")
        };
        FailReason::Io(what)
    })?;
    let probe = Probe::next();
    let request = match addr {
        IpAddr::V4(_) => probe.request_v4(),
        IpAddr::V6(_) => probe.request_v6(),
    };
    // Port 0: ignored for IPv4 raw sockets, "use the socket's protocol" for IPv6.
    let to = SocketAddr::new(addr, 0);
    socket
        .send_to(&request, to)
        .await
        .map_err(|e| io_reason(&e))?;
    let mut buf = [0u8; RECV_BUF];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // A pending error for an earlier datagram, or memory pressure: not an
            // answer about this probe (errors about it arrive as ICMP packets).
            Err(_) => continue,
        };
        let datagram = &buf[..len];
        let verdict = match (addr, from.ip()) {
            (IpAddr::V4(target), IpAddr::V4(from)) => classify_v4(&probe, target, from, datagram),
            (IpAddr::V6(target), IpAddr::V6(from)) => classify_v6(&probe, target, from, datagram),
            _ => Verdict::Ignore,
        };
        match verdict {
            Verdict::Ignore => {}
            Verdict::Reply => return Ok(()),
            Verdict::Error(what) => return Err(FailReason::Unreachable(what)),
        }
    }
}

/// A non-blocking raw ICMP (or ICMPv6) socket for `addr`'s family, registered with
/// the runtime.
///
/// Why it ends up as a tokio `UdpSocket`: that type's `send_to`/`recv_from` are
/// plain sendto(2)/recvfrom(2) with readiness from the runtime, safe `SocketAddr`
/// conversion and `&mut [u8]` buffers, and they work on any datagram-style socket.
/// The alternatives need `unsafe`: socket2's calls take uninitialised buffers, and
/// registering a raw fd with `AsyncFd` is an unsafe call in current tokio. Nothing
/// UDP happens: the socket stays `SOCK_RAW`.
///
/// Not connected: connect(2) would make the kernel deliver only packets from `addr`,
/// and with them lose the errors sent by routers or by our own kernel.
fn open(addr: IpAddr, source: Option<IpAddr>) -> io::Result<UdpSocket> {
    let (domain, protocol) = match addr {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
    };
    let socket = Socket::new(domain, Type::RAW.cloexec(), Some(protocol))?;
    super::source::bind_raw(&socket, source)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

fn io_reason(e: &io::Error) -> FailReason {
    FailReason::Io(e.to_string())
}

/// Classifies what an IPv4 raw ICMP socket received: the whole IPv4 datagram,
/// header included.
fn classify_v4(probe: &Probe, target: Ipv4Addr, from: Ipv4Addr, datagram: &[u8]) -> Verdict {
    let Some(icmp) = ipv4_payload(datagram, IpNextHeaderProtocols::Icmp.0) else {
        return Verdict::Ignore;
    };
    // Unlike ICMPv6, nothing verified this checksum before the raw socket got it.
    let Some(packet) = IcmpPacket::new(icmp) else {
        return Verdict::Ignore;
    };
    if icmp::checksum(&packet) != packet.get_checksum() {
        return Verdict::Ignore;
    }
    let icmp_type = packet.get_icmp_type();
    if icmp_type == IcmpTypes::EchoReply {
        return if from == target && probe.is_echo(icmp, IcmpTypes::EchoReply.0) {
            Verdict::Reply
        } else {
            Verdict::Ignore
        };
    }
    let what = if icmp_type == IcmpTypes::DestinationUnreachable {
        unreachable_v4(packet.get_icmp_code().0)
    } else if icmp_type == IcmpTypes::TimeExceeded {
        "time exceeded (TTL expired in transit)".to_owned()
    } else {
        return Verdict::Ignore;
    };
    // Errors carry 4 unused bytes, then our datagram's IP header and >= 8 bytes.
    let Some(quoted_ip) = icmp.get(8..) else {
        return Verdict::Ignore;
    };
    let Some(quoted) = Ipv4Packet::new(quoted_ip) else {
        return Verdict::Ignore;
    };
    if quoted.get_destination() != target {
        return Verdict::Ignore;
    }
    let Some(quoted_icmp) = ipv4_payload(quoted_ip, IpNextHeaderProtocols::Icmp.0) else {
        return Verdict::Ignore;
    };
    if probe.is_quoted(quoted_icmp, IcmpTypes::EchoRequest.0) {
        Verdict::Error(format!("{what}, reported by {from}"))
    } else {
        Verdict::Ignore
    }
}

/// The payload of an IPv4 datagram carrying `protocol`, bounded by both the header
/// lengths and the bytes present (a quoted datagram is cut short: its total length
/// describes the original).
fn ipv4_payload(datagram: &[u8], protocol: u8) -> Option<&[u8]> {
    let ip = Ipv4Packet::new(datagram)?;
    if ip.get_version() != 4 || ip.get_next_level_protocol().0 != protocol {
        return None;
    }
    let header = usize::from(ip.get_header_length()) * 4;
    let total = usize::from(ip.get_total_length()).min(datagram.len());
    if header < 20 || header > total {
        return None;
    }
    Some(&datagram[header..total])
}

fn unreachable_v4(code: u8) -> String {
    let what = match code {
        0 => "network unreachable",
        1 => "host unreachable",
        2 => "protocol unreachable",
        3 => "port unreachable",
        4 => "fragmentation needed",
        5 => "source route failed",
        6 => "destination network unknown",
        7 => "destination host unknown",
        9 | 10 | 13 => "administratively prohibited",
        11 => "network unreachable for TOS",
        12 => "host unreachable for TOS",
        _ => return format!("destination unreachable (code {code})"),
    };
    what.to_owned()
}

/// Classifies what an IPv6 raw ICMPv6 socket received: the ICMPv6 message only (IPv6
/// raw sockets never see the IPv6 header).
fn classify_v6(probe: &Probe, target: Ipv6Addr, from: Ipv6Addr, icmp: &[u8]) -> Verdict {
    let Some(packet) = Icmpv6Packet::new(icmp) else {
        return Verdict::Ignore;
    };
    let icmp_type = packet.get_icmpv6_type();
    if icmp_type == Icmpv6Types::EchoReply {
        return if from == target && probe.is_echo(icmp, Icmpv6Types::EchoReply.0) {
            Verdict::Reply
        } else {
            Verdict::Ignore
        };
    }
    let code = packet.get_icmpv6_code().0;
    let what = if icmp_type == Icmpv6Types::DestinationUnreachable {
        unreachable_v6(code)
    } else if icmp_type == Icmpv6Types::TimeExceeded {
        "time exceeded (hop limit expired in transit)".to_owned()
    } else {
        return Verdict::Ignore;
    };
    // 4 unused bytes, then as much of our packet as fits: the fixed 40-byte IPv6
    // header (we send no extension headers) and our ICMPv6 message.
    let Some(quoted) = icmp.get(8..).and_then(Ipv6Packet::new) else {
        return Verdict::Ignore;
    };
    if quoted.get_version() != 6
        || quoted.get_destination() != target
        || quoted.get_next_header() != IpNextHeaderProtocols::Icmpv6
    {
        return Verdict::Ignore;
    }
    if probe.is_quoted(quoted.payload(), Icmpv6Types::EchoRequest.0) {
        Verdict::Error(format!("{what}, reported by {from}"))
    } else {
        Verdict::Ignore
    }
}

fn unreachable_v6(code: u8) -> String {
    let what = match code {
        0 => "no route to destination",
        1 => "administratively prohibited",
        2 => "beyond scope of source address",
        3 => "address unreachable",
        4 => "port unreachable",
        5 => "source address failed policy",
        6 => "reject route to destination",
        _ => return format!("destination unreachable (code {code})"),
    };
    what.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 2);
    const ME: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 1);

    /// An IPv4 header (no options) from `src` to `dst` around `payload`; checksum
    /// left 0: raw sockets get the header as received, nothing here checks it.
    fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let total = u16::try_from(20 + payload.len()).unwrap();
        let mut out = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        out[2..4].copy_from_slice(&total.to_be_bytes());
        out.extend_from_slice(&src.octets());
        out.extend_from_slice(&dst.octets());
        out.extend_from_slice(payload);
        out
    }

    fn with_checksum(mut icmp: Vec<u8>) -> Vec<u8> {
        icmp[2..4].fill(0);
        let sum = icmp::checksum(&IcmpPacket::new(&icmp).unwrap());
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        icmp
    }

    /// What the peer's kernel answers: the request with type 0 and a new checksum.
    fn reply_to(request: &[u8]) -> Vec<u8> {
        let mut reply = request.to_vec();
        reply[0] = 0;
        with_checksum(reply)
    }

    /// A destination unreachable quoting the IP datagram `original` (first 28 bytes).
    fn unreachable(code: u8, original: &[u8]) -> Vec<u8> {
        let mut icmp = vec![3, code, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&original[..28]);
        with_checksum(icmp)
    }

    #[test]
    fn probes_differ() {
        let (a, b) = (Probe::next(), Probe::next());
        assert_ne!((a.id, a.seq), (b.id, b.seq));
        assert_ne!(a.payload, b.payload);
        assert_eq!(&a.payload[..TAG.len()], TAG);
    }

    #[test]
    fn request_v4_has_a_valid_checksum() {
        let request = Probe::next().request_v4();
        let packet = IcmpPacket::new(&request).unwrap();
        assert_eq!(packet.get_icmp_type(), IcmpTypes::EchoRequest);
        assert_ne!(packet.get_checksum(), 0);
        assert_eq!(icmp::checksum(&packet), packet.get_checksum());
        // The kernel fills in the ICMPv6 checksum: see request_v6.
        let request = Probe::next().request_v6();
        assert_eq!((request[0], &request[2..4]), (128, &[0u8, 0][..]));
    }

    #[test]
    fn v4_reply_must_match_source_id_seq_payload_and_checksum() {
        let probe = Probe::next();
        let request = probe.request_v4();
        let reply = reply_to(&request);
        let from_target = ipv4(TARGET, ME, &reply);
        assert_eq!(
            classify_v4(&probe, TARGET, TARGET, &from_target),
            Verdict::Reply
        );

        // Our own request, seen on loopback or because we ping ourselves.
        let own = ipv4(ME, TARGET, &request);
        assert_eq!(classify_v4(&probe, TARGET, ME, &own), Verdict::Ignore);
        // The right reply from another host.
        let elsewhere = Ipv4Addr::new(10, 71, 0, 3);
        let other_host = ipv4(elsewhere, ME, &reply);
        assert_eq!(
            classify_v4(&probe, TARGET, elsewhere, &other_host),
            Verdict::Ignore
        );
        // Another probe's reply from the same host.
        let other = reply_to(&Probe::next().request_v4());
        let other = ipv4(TARGET, ME, &other);
        assert_eq!(classify_v4(&probe, TARGET, TARGET, &other), Verdict::Ignore);
        // Same id and seq, another payload (another process).
        let mut foreign = reply.clone();
        foreign[REQUEST_LEN - 1] ^= 1;
        let foreign = ipv4(TARGET, ME, &with_checksum(foreign));
        assert_eq!(
            classify_v4(&probe, TARGET, TARGET, &foreign),
            Verdict::Ignore
        );
        // Corrupted checksum.
        let mut corrupt = reply.clone();
        corrupt[2] ^= 0xff;
        let corrupt = ipv4(TARGET, ME, &corrupt);
        assert_eq!(
            classify_v4(&probe, TARGET, TARGET, &corrupt),
            Verdict::Ignore
        );
    }

    #[test]
    fn v4_errors_quoting_our_request_fail_the_probe() {
        let probe = Probe::next();
        let our_datagram = ipv4(ME, TARGET, &probe.request_v4());
        let router = Ipv4Addr::new(10, 71, 0, 254);
        let error = ipv4(router, ME, &unreachable(1, &our_datagram));
        assert_eq!(
            classify_v4(&probe, TARGET, router, &error),
            Verdict::Error("host unreachable, reported by 10.71.0.254".into())
        );
        let error = ipv4(router, ME, &unreachable(13, &our_datagram));
        assert_eq!(
            classify_v4(&probe, TARGET, router, &error),
            Verdict::Error("administratively prohibited, reported by 10.71.0.254".into())
        );

        // About someone else's ping: ignored.
        let theirs = ipv4(ME, TARGET, &Probe::next().request_v4());
        let error = ipv4(router, ME, &unreachable(1, &theirs));
        assert_eq!(classify_v4(&probe, TARGET, router, &error), Verdict::Ignore);
        // About our id/seq but to another destination: ignored.
        let elsewhere = ipv4(ME, Ipv4Addr::new(192, 0, 2, 1), &probe.request_v4());
        let error = ipv4(router, ME, &unreachable(1, &elsewhere));
        assert_eq!(classify_v4(&probe, TARGET, router, &error), Verdict::Ignore);
    }

    #[test]
    fn garbage_is_ignored_not_a_panic() {
        let probe = Probe::next();
        let reply = reply_to(&probe.request_v4());
        let datagram = ipv4(TARGET, ME, &reply);
        for len in 0..datagram.len() {
            assert_eq!(
                classify_v4(&probe, TARGET, TARGET, &datagram[..len]),
                Verdict::Ignore
            );
        }
        // Header length beyond the datagram, and an IHL below the minimum.
        let mut bad = datagram.clone();
        bad[0] = 0x4f;
        assert_eq!(classify_v4(&probe, TARGET, TARGET, &bad), Verdict::Ignore);
        bad[0] = 0x41;
        assert_eq!(classify_v4(&probe, TARGET, TARGET, &bad), Verdict::Ignore);
        // Truncated quote inside an error.
        let our_datagram = ipv4(ME, TARGET, &probe.request_v4());
        let mut error = unreachable(1, &our_datagram);
        error.truncate(8 + 20 + 4);
        let error = ipv4(TARGET, ME, &with_checksum(error));
        assert_eq!(classify_v4(&probe, TARGET, TARGET, &error), Verdict::Ignore);

        let target6: Ipv6Addr = "fd71::2".parse().unwrap();
        for len in 0..64 {
            let junk = vec![1u8; len];
            assert_eq!(
                classify_v6(&probe, target6, target6, &junk),
                Verdict::Ignore
            );
        }
    }

    #[test]
    fn v6_reply_and_error() {
        let probe = Probe::next();
        let me: Ipv6Addr = "fd71::1".parse().unwrap();
        let target: Ipv6Addr = "fd71::2".parse().unwrap();
        let request = probe.request_v6();
        let mut reply = request;
        reply[0] = Icmpv6Types::EchoReply.0;
        assert_eq!(classify_v6(&probe, target, target, &reply), Verdict::Reply);
        assert_eq!(classify_v6(&probe, target, me, &reply), Verdict::Ignore);
        assert_eq!(classify_v6(&probe, target, me, &request), Verdict::Ignore);

        // Destination unreachable, code 0, quoting our packet.
        let mut error = vec![1, 0, 0, 0, 0, 0, 0, 0];
        let mut ip6 = vec![0x60, 0, 0, 0, 0, REQUEST_LEN as u8, 58, 64];
        ip6.extend_from_slice(&me.octets());
        ip6.extend_from_slice(&target.octets());
        error.extend_from_slice(&ip6);
        error.extend_from_slice(&request);
        let router: Ipv6Addr = "fd71::fe".parse().unwrap();
        assert_eq!(
            classify_v6(&probe, target, router, &error),
            Verdict::Error("no route to destination, reported by fd71::fe".into())
        );
        // The same about another probe.
        let other = Probe::next();
        let quoted_at = 8 + 40;
        error[quoted_at..].copy_from_slice(&other.request_v6());
        assert_eq!(classify_v6(&probe, target, router, &error), Verdict::Ignore);
    }
}
