//! Header parsing. Every read goes through [`header`], which proves to the verifier that
//! the whole header lies inside the packet; nothing is forwarded unless every header up
//! to and including the L4 ports was parsed here.
//!
//! Offsets are relative to `L2`, the link header's length (14, or 18 / 22 with one or
//! two 802.1Q tags, see [`crate::vlan`]): a constant in each copy of the code.
//!
//! L4 bytes (ports, TCP flags, the ICMP header, the headers an ICMP error quotes) must lie
//! within the IP datagram, not just within the frame: the datagram ends at `L2 + total
//! length` (IPv4) or `L2 + 40 + payload length` (IPv6), and what follows is Ethernet padding
//! or trailing bytes, never payload ([`l4_header`]). A datagram too short for what is read
//! is treated exactly like a frame that is too short:
//! - TCP/UDP ports beyond the datagram: drop `truncated` (whatever the destination, as
//!   for a short frame);
//! - the TCP flags byte beyond the datagram: not a SYN (the flow follows the connection
//!   table);
//! - the ICMP / ICMPv6 header beyond the datagram: drop `truncated` (so an echo request
//!   without a whole header is never answered);
//! - an ICMP frag-needed / ICMPv6 too-big whose quoted IP header or quoted ports are
//!   beyond the datagram: drop `truncated`, as for a quote cut short by the frame.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    service::AF_INET,
    service::AF_INET6,
    wire::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, ICMPV6_ECHO_REQUEST,
        ICMPV6_PACKET_TOO_BIG, ICMP_DEST_UNREACH, ICMP_ECHO_REQUEST, ICMP_FRAG_NEEDED, ICMP_HLEN,
        IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HIP, IPPROTO_HOPOPTS, IPPROTO_ICMP,
        IPPROTO_ICMPV6, IPPROTO_MH, IPPROTO_ROUTING, IPPROTO_SHIM6, IPPROTO_TCP, IPPROTO_UDP,
        IPPROTO_VRRP, IPV4_VER_IHL, IP_MF, IP_OFFSET, TCP_ACK, TCP_FIN, TCP_FLAGS_OFFSET, TCP_RST,
        TCP_SYN,
    },
    FlowKey, Stat,
};

/// Ethernet II header as it sits on the wire.
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub ether_type: u16,
}

/// IPv4 header without options; multi-byte fields in network byte order.
#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub src: u32,
    pub dst: u32,
}

/// IPv6 fixed header; multi-byte fields in network byte order.
#[repr(C)]
pub struct Ipv6Hdr {
    pub ver_tc_flow: u32,
    pub payload_len: u16,
    pub next_hdr: u8,
    pub hop_limit: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
}

/// ICMP / ICMPv6 header start: type, code, checksum (network order).
#[repr(C)]
pub struct IcmpHdr {
    pub kind: u8,
    pub code: u8,
    pub check: u16,
}

/// Whether the TCP header at `l4` is a SYN without ACK. A header too short to hold
/// the flags (in the frame or in the datagram ending at `ip_end`) counts as not a SYN:
/// it follows the connection table like before.
#[inline(always)]
fn tcp_flags(ctx: &XdpContext, l4: usize, ip_end: usize) -> u8 {
    match l4_header::<u8>(ctx, l4 + TCP_FLAGS_OFFSET, ip_end) {
        // SAFETY: `header` checked that the byte lies inside the packet.
        Ok(flags) => unsafe { *flags },
        Err(_) => 0,
    }
}

/// (new flow, closing) from a TCP header's flags: a SYN without ACK opens a
/// connection; a FIN or RST from the client closes it.
#[inline(always)]
fn tcp_state(flags: u8) -> (bool, bool) {
    (
        flags & (TCP_SYN | TCP_ACK) == TCP_SYN,
        flags & (TCP_FIN | TCP_RST) != 0,
    )
}

/// IPv6 hop-by-hop and destination-options headers walked before the transport header,
/// at most (RFC 8200 allows one hop-by-hop and two destination-options headers).
const MAX_IPV6_OPTS: usize = 3;

/// Source and destination port, the first four bytes of both TCP and UDP headers.
#[repr(C)]
struct Ports {
    src: u16,
    dst: u16,
}

/// What the balancer needs from a parsed IP packet. Its flow's destination has passed
/// the VIP filter ([`crate::lookup::maybe_vip`]): the parser stops at the filter for
/// every other address, as soon as the headers it must check are checked.
pub struct Packet {
    pub flow: FlowKey,
    /// TTL / hop limit.
    pub ttl: u8,
    /// Set when the packet cannot be forwarded even if it targets a VIP; the counter
    /// says why (IPv4 options, fragment). Only VIP traffic is affected: everything else
    /// is passed untouched whatever it carries.
    pub unforwardable: Option<Stat>,
    /// An ICMP "too big" error whose `flow` is the quoted flow, turned around to the
    /// client→VIP direction: it goes wherever that flow goes.
    pub icmp_too_big: bool,
    /// The frame was sent to a group (broadcast / multicast) MAC: VIP traffic in it is
    /// passed (`l2_group`), since forwarding it would use that MAC as the source.
    pub l2_group: bool,
    /// A TCP SYN without ACK: the start of a new connection. It always takes the
    /// current Maglev choice, whatever the connection table remembers for its 4-tuple:
    /// a client reusing a port (after a refused or reset attempt, or once TIME_WAIT
    /// expired) must not be sent back to a backend that is drained or dead.
    pub new_flow: bool,
    /// A TCP FIN or RST from the client: its connection entry gets the closing
    /// timeout from now on.
    pub closing: bool,
}

/// Why parsing stopped.
pub enum Parsed {
    /// A TCP/UDP packet over IPv4/IPv6 whose VIP tuple can be looked up.
    Ip(Packet),
    /// An ICMP / ICMPv6 echo request (option-less, unfragmented) to `dst`, answered
    /// from XDP when `dst` is a VIP.
    /// `l2_group`: the frame was sent to a broadcast / multicast MAC (never answered).
    Echo {
        dst: [u32; 4],
        family: u8,
        l2_group: bool,
    },
    /// A VRRP packet (IPv4 protocol / IPv6 next header 112, the IP header's lengths
    /// checked against the frame), handled by `vrrp::advert`.
    Vrrp { family: u8 },
    /// Not for the balancer; pass to the stack and count the reason.
    Pass(Stat),
    /// An 802.1Q / 802.1ad tagged frame (untagged parse only): parsed again by the
    /// copy for its tag depth ([`crate::vlan::depth`]).
    Tagged,
}

/// Returns a pointer to a `T` at `offset` bytes into the packet, or `Truncated` when the
/// packet is too short to hold it.
#[inline(always)]
pub fn header<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Stat> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(Stat::Truncated);
    }
    Ok((start + offset) as *mut T)
}

/// [`header`] for bytes past the IP header: the `T` must also end within the IP datagram,
/// which ends `ip_end` bytes into the frame (Ethernet header included; already checked
/// against the frame length). Both failures are `Truncated` (module docs). The datagram
/// check is plain scalar arithmetic; the verifier's proof still comes from [`header`].
#[inline(always)]
fn l4_header<T>(ctx: &XdpContext, offset: usize, ip_end: usize) -> Result<*mut T, Stat> {
    if offset + size_of::<T>() > ip_end {
        return Err(Stat::Truncated);
    }
    header::<T>(ctx, offset)
}

/// Parses the `L2`-byte link header (Ethernet, then any 802.1Q tags: [`crate::vlan`]),
/// IPv4/IPv6 and the L4 ports of a `len`-byte frame (`len` comes from the entry point,
/// see [`crate::encap`]'s `grow`). `Err` is a drop reason.
#[inline(always)]
pub fn parse<const L2: usize>(ctx: &XdpContext, len: usize) -> Result<Parsed, Stat> {
    // SAFETY (all header derefs below): `header` proved the bytes are in the packet.
    let eth = unsafe { &*header::<EthHdr>(ctx, 0)? };
    // The I/G bit: broadcast and multicast destinations.
    let group = eth.dst[0] & 1 != 0;
    let ether_type = if L2 == ETH_HLEN {
        eth.ether_type
    } else {
        // The innermost ethertype; `vlan::depth` chose L2 so that it is not a TPID.
        unsafe { *header::<u16>(ctx, L2 - 2)? }
    };
    let mut parsed = match u16::from_be(ether_type) {
        ETH_P_IPV4 => ipv4::<L2>(ctx, len)?,
        ETH_P_IPV6 => ipv6::<L2>(ctx, len)?,
        // Only seen untagged: the tagged copies are entered past their tags.
        ETH_P_8021Q | ETH_P_8021AD => Parsed::Tagged,
        _ => Parsed::Pass(Stat::NotVip),
    };
    match &mut parsed {
        Parsed::Ip(pkt) => {
            pkt.l2_group = group;
            if L2 != ETH_HLEN {
                pkt.flow.vlan = crate::vlan::vid::<L2>(ctx)?;
            }
        }
        Parsed::Echo { l2_group, .. } => *l2_group = group,
        _ => {}
    }
    Ok(parsed)
}

#[inline(always)]
fn ipv4<const L2: usize>(ctx: &XdpContext, len: usize) -> Result<Parsed, Stat> {
    let ip = unsafe { &*header::<Ipv4Hdr>(ctx, L2)? };
    let ihl = usize::from(ip.ver_ihl & 0x0f) * 4;
    let tot_len = usize::from(u16::from_be(ip.tot_len));
    if ip.ver_ihl >> 4 != 4 || ihl < 20 || tot_len < ihl {
        return Err(Stat::Malformed);
    }
    let ip_end = L2 + tot_len;
    if ip_end > len {
        return Err(Stat::Truncated);
    }
    if ip.proto == IPPROTO_VRRP {
        return Ok(Parsed::Vrrp { family: AF_INET });
    }
    let frag = u16::from_be(ip.frag_off);
    if ip.proto == IPPROTO_ICMP && ihl == 20 && frag & (IP_MF | IP_OFFSET) == 0 {
        let icmp = unsafe { &*l4_header::<IcmpHdr>(ctx, L2 + 20, ip_end)? };
        if icmp.kind == ICMP_ECHO_REQUEST && icmp.code == 0 {
            return Ok(Parsed::Echo {
                dst: [ip.dst, 0, 0, 0],
                family: AF_INET,
                l2_group: false,
            });
        }
        if icmp.kind == ICMP_DEST_UNREACH && icmp.code == ICMP_FRAG_NEEDED {
            return too_big4::<L2>(ctx, ip.ttl, ip_end);
        }
    }
    if ip.proto != IPPROTO_TCP && ip.proto != IPPROTO_UDP {
        return Ok(Parsed::Pass(Stat::NotVip));
    }
    if !crate::lookup::maybe_vip(&[ip.dst, 0, 0, 0]) {
        // Most of what an edge host sees ends here, before the flow is built: once the
        // ports are known to lie in the datagram (a truncated header is `truncated`
        // whatever the destination, so the answer never depends on the filter).
        if frag & IP_OFFSET == 0 {
            l4_header::<Ports>(ctx, L2 + ihl, ip_end)?;
        }
        return Ok(Parsed::Pass(Stat::NotVip));
    }
    let mut unforwardable = None;
    let (mut new_flow, mut closing) = (false, false);
    if ihl != 20 {
        unforwardable = Some(Stat::Ipv4Options);
    }
    let ports = if frag & IP_OFFSET != 0 {
        // A later fragment has no L4 header: match the VIP's all-ports service only.
        unforwardable = Some(Stat::Fragment);
        Ports { src: 0, dst: 0 }
    } else {
        if frag & IP_MF != 0 {
            unforwardable = Some(Stat::Fragment);
        }
        let p = unsafe { &*l4_header::<Ports>(ctx, L2 + ihl, ip_end)? };
        if ip.proto == IPPROTO_TCP {
            (new_flow, closing) = tcp_state(tcp_flags(ctx, L2 + ihl, ip_end));
        }
        Ports {
            src: p.src,
            dst: p.dst,
        }
    };
    Ok(Parsed::Ip(Packet {
        flow: FlowKey {
            src: [ip.src, 0, 0, 0],
            dst: [ip.dst, 0, 0, 0],
            sport_be: ports.src,
            dport_be: ports.dst,
            proto: ip.proto,
            family: AF_INET,
            vlan: 0,
        },
        ttl: ip.ttl,
        unforwardable,
        icmp_too_big: false,
        new_flow,
        closing,
        l2_group: false,
    }))
}

/// ICMP "fragmentation needed": the quoted packet is one a backend sent (VIP → client);
/// the flow to look up is its reverse. Quotes with options or without TCP/UDP ports pass;
/// a quote (header or ports) beyond the datagram ending at `ip_end` is `Truncated`.
#[inline(always)]
fn too_big4<const L2: usize>(ctx: &XdpContext, ttl: u8, ip_end: usize) -> Result<Parsed, Stat> {
    let quoted_off = L2 + 20 + ICMP_HLEN;
    let q = unsafe { &*l4_header::<Ipv4Hdr>(ctx, quoted_off, ip_end)? };
    if q.ver_ihl != IPV4_VER_IHL || (q.proto != IPPROTO_TCP && q.proto != IPPROTO_UDP) {
        return Ok(Parsed::Pass(Stat::NotVip));
    }
    let p = unsafe { &*l4_header::<Ports>(ctx, quoted_off + 20, ip_end)? };
    if !crate::lookup::maybe_vip(&[q.src, 0, 0, 0]) {
        return Ok(Parsed::Pass(Stat::NotVip));
    }
    Ok(Parsed::Ip(Packet {
        flow: FlowKey {
            src: [q.dst, 0, 0, 0],
            dst: [q.src, 0, 0, 0],
            sport_be: p.dst,
            dport_be: p.src,
            proto: q.proto,
            family: AF_INET,
            vlan: 0,
        },
        ttl,
        unforwardable: None,
        icmp_too_big: true,
        new_flow: false,
        closing: false,
        l2_group: false,
    }))
}

/// ICMPv6 "packet too big": the IPv6 twin of [`too_big4`].
#[inline(always)]
fn too_big6<const L2: usize>(
    ctx: &XdpContext,
    hop_limit: u8,
    ip_end: usize,
) -> Result<Parsed, Stat> {
    let quoted_off = L2 + size_of::<Ipv6Hdr>() + ICMP_HLEN;
    let q = unsafe { &*l4_header::<Ipv6Hdr>(ctx, quoted_off, ip_end)? };
    if q.next_hdr != IPPROTO_TCP && q.next_hdr != IPPROTO_UDP {
        return Ok(Parsed::Pass(Stat::NotVip));
    }
    let p = unsafe { &*l4_header::<Ports>(ctx, quoted_off + size_of::<Ipv6Hdr>(), ip_end)? };
    if !crate::lookup::maybe_vip(&q.src) {
        return Ok(Parsed::Pass(Stat::NotVip));
    }
    Ok(Parsed::Ip(Packet {
        flow: FlowKey {
            src: q.dst,
            dst: q.src,
            sport_be: p.dst,
            dport_be: p.src,
            proto: q.next_hdr,
            family: AF_INET6,
            vlan: 0,
        },
        ttl: hop_limit,
        unforwardable: None,
        icmp_too_big: true,
        new_flow: false,
        closing: false,
        l2_group: false,
    }))
}

#[inline(always)]
fn ipv6<const L2: usize>(ctx: &XdpContext, len: usize) -> Result<Parsed, Stat> {
    let ip = unsafe { &*header::<Ipv6Hdr>(ctx, L2)? };
    if u32::from_be(ip.ver_tc_flow) >> 28 != 6 {
        return Err(Stat::Malformed);
    }
    let ip_end = L2 + size_of::<Ipv6Hdr>() + usize::from(u16::from_be(ip.payload_len));
    if ip_end > len {
        return Err(Stat::Truncated);
    }
    // Hop-by-hop and destination options carry nothing a balancer must act on: walk
    // them (at most MAX_IPV6_OPTS) to the transport header, so VIP traffic carrying
    // them is balanced like any other. Plain traffic does not enter the loop.
    let mut next = ip.next_hdr;
    let mut l4 = L2 + size_of::<Ipv6Hdr>();
    let mut walked = false;
    for _ in 0..MAX_IPV6_OPTS {
        if next != IPPROTO_HOPOPTS && next != IPPROTO_DSTOPTS {
            break;
        }
        // SAFETY: `header` checked that the two bytes lie inside the packet.
        let opt = unsafe { &*l4_header::<[u8; 2]>(ctx, l4, ip_end)? };
        next = opt[0];
        l4 += (usize::from(opt[1]) + 1) * 8;
        walked = true;
    }
    match next {
        IPPROTO_TCP | IPPROTO_UDP => {}
        // VRRP adverts carry no extension headers (RFC 5798 §5.1.2).
        IPPROTO_VRRP if !walked => return Ok(Parsed::Vrrp { family: AF_INET6 }),
        IPPROTO_ICMPV6 if !walked => {
            let icmp = unsafe { &*l4_header::<IcmpHdr>(ctx, l4, ip_end)? };
            if icmp.kind == ICMPV6_ECHO_REQUEST && icmp.code == 0 {
                return Ok(Parsed::Echo {
                    dst: ip.dst,
                    family: AF_INET6,
                    l2_group: false,
                });
            }
            if icmp.kind == ICMPV6_PACKET_TOO_BIG {
                return too_big6::<L2>(ctx, ip.hop_limit, ip_end);
            }
            return Ok(Parsed::Pass(Stat::NotVip));
        }
        // Routing, fragment, AH, mobility, HIP, shim6 (and options beyond the walk):
        // not walked, so never forwarded.
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DSTOPTS | IPPROTO_AH
        | IPPROTO_MH | IPPROTO_HIP | IPPROTO_SHIM6 => return Ok(Parsed::Pass(Stat::Ipv6ExtHeader)),
        _ => return Ok(Parsed::Pass(Stat::NotVip)),
    }
    let p = unsafe { &*l4_header::<Ports>(ctx, l4, ip_end)? };
    if !crate::lookup::maybe_vip(&ip.dst) {
        return Ok(Parsed::Pass(Stat::NotVip));
    }
    let (new_flow, closing) = if next == IPPROTO_TCP {
        tcp_state(tcp_flags(ctx, l4, ip_end))
    } else {
        (false, false)
    };
    Ok(Parsed::Ip(Packet {
        flow: FlowKey {
            src: ip.src,
            dst: ip.dst,
            sport_be: p.src,
            dport_be: p.dst,
            proto: next,
            family: AF_INET6,
            vlan: 0,
        },
        ttl: ip.hop_limit,
        unforwardable: None,
        icmp_too_big: false,
        new_flow,
        closing,
        l2_group: false,
    }))
}
