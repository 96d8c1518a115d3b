//! Encapsulation towards backends — IP-in-IP (LVS "TUN", Katran's default) and GUE
//! (RFC draft "GUE" variant 1: the IP packet directly in UDP, for networks that only
//! route UDP) — and the backend-side decapsulation of both. The outer source is the
//! balancer's configured encap address, or, with a prefix configured, a per-flow
//! address in it (the flow hash in the host bits, as Katran and Cilium do); GUE's UDP
//! source port carries the flow hash too. Either way the backend's RSS and any ECMP on
//! the way spread tunnelled flows, which a single (source, destination) pair would
//! put on one receive queue. The hash is the one stored with the flow's connection
//! entry, so established packets do not rehash.

use aya_ebpf::{helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{
    limits::MAX_DECAP_LENS,
    service::{
        decap_lens_base, entropy_source, gue_source_port_be, prefix_mask, AF_INET, AF_INET6,
        DECAP_PAIR, DECAP_SOURCE,
    },
    wire::{
        ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_UDP, IPV4_VER_IHL,
        IP_MF, IP_OFFSET,
    },
    Backend, DecapKey, Stat,
};

use crate::{
    csum,
    maps::{XLB_CONFIG, XLB_DECAP_ALLOW, XLB_DECAP_LENS},
    parse::{header, EthHdr, Ipv4Hdr, Ipv6Hdr},
    vlan::{write_l2, Tags},
};

/// UDP header (network order).
#[repr(C)]
struct UdpHdr {
    src: u16,
    dst: u16,
    len: u16,
    check: u16,
}

const UDP_HLEN: usize = size_of::<UdpHdr>();

const IPV4_HLEN: usize = size_of::<Ipv4Hdr>();
const IPV6_HLEN: usize = size_of::<Ipv6Hdr>();
const OUTER_TTL: u8 = 64;

/// How to wrap: plain IP-in-IP, or GUE with this UDP (source, destination) port pair.
#[derive(Clone, Copy)]
pub enum Wrap {
    Ipip,
    Gue { sport_be: u16, dport_be: u16 },
}

impl Wrap {
    /// GUE towards the configured port, with the flow's hash ([`lb_common::Conn::flow_hash`]) as
    /// source port entropy (kept in the dynamic range 49152..=65535).
    #[inline(always)]
    pub fn gue(flow_hash: u32) -> Result<Self, Stat> {
        let dport_be = XLB_CONFIG.get(0).map_or(0, |c| c.gue_port_be);
        if dport_be == 0 {
            return Err(Stat::EncapError);
        }
        Ok(Wrap::Gue {
            sport_be: gue_source_port_be(flow_hash),
            dport_be,
        })
    }

    /// Bytes added beyond the outer IP header (GUE's UDP header).
    #[inline(always)]
    pub fn extra(self) -> usize {
        match self {
            Wrap::Ipip => 0,
            Wrap::Gue { .. } => UDP_HLEN,
        }
    }
}

/// Writes the UDP header of a GUE packet at `offset` (checksum 0: allowed for IPv4, and
/// for IPv6 tunnels by RFC 6935; our decap strips it in XDP before any socket sees it).
#[inline(always)]
fn write_udp(ctx: &XdpContext, offset: usize, wrap: Wrap, inner_len: u16) -> Result<(), Stat> {
    if let Wrap::Gue { sport_be, dport_be } = wrap {
        // SAFETY: `header` bounds-checked the UDP header.
        unsafe {
            *header::<UdpHdr>(ctx, offset)? = UdpHdr {
                src: sport_be,
                dst: dport_be,
                len: (inner_len + UDP_HLEN as u16).to_be(),
                check: 0,
            };
        }
    }
    Ok(())
}

/// Wraps the IPv4 packet (IPIP or GUE) towards `backend`; [`crate::forward::send`]
/// sends it. The outer header goes after the `L2`-byte link header, whose tags stay.
/// The source MAC is the input's destination MAC (unicast: see [`crate::forward::dsr`]).
#[inline(always)]
pub fn encap4<const L2: usize>(
    ctx: &XdpContext,
    len: usize,
    backend: &Backend,
    wrap: Wrap,
    flow_hash: u32,
) -> Result<(), Stat> {
    let (base, host) = XLB_CONFIG
        .get(0)
        .map_or((0, 0), |c| (c.encap_src_v4, c.encap_host_v4));
    if base == 0 {
        return Err(Stat::EncapError);
    }
    let src = entropy_source(base, host, flow_hash);
    let (our_mac, inner_len, tos) = {
        // SAFETY: `header` bounds-checked both headers.
        let eth = unsafe { &*header::<EthHdr>(ctx, 0)? };
        let ip = unsafe { &*header::<Ipv4Hdr>(ctx, L2)? };
        (eth.dst, u16::from_be(ip.tot_len), ip.tos)
    };
    let tags = Tags::read::<L2>(ctx)?;
    let extra = wrap.extra();
    grow(ctx, IPV4_HLEN + extra, len)?;
    let mut outer = Ipv4Hdr {
        ver_ihl: IPV4_VER_IHL,
        tos,
        tot_len: (inner_len + (IPV4_HLEN + extra) as u16).to_be(),
        id: 0,
        frag_off: 0,
        ttl: OUTER_TTL,
        proto: match wrap {
            Wrap::Ipip => IPPROTO_IPIP,
            Wrap::Gue { .. } => IPPROTO_UDP,
        },
        check: 0,
        src,
        dst: backend.addr[0],
    };
    // SAFETY: Ipv4Hdr is 20 bytes of plain integers, as is [u16; 10].
    outer.check = csum::ipv4_header(unsafe { &*(&outer as *const Ipv4Hdr).cast() });
    write_l2::<L2>(ctx, our_mac, backend.mac, tags, ETH_P_IPV4)?;
    // SAFETY: `header` bounds-checked the outer header's room after the grow.
    unsafe { *header::<Ipv4Hdr>(ctx, L2)? = outer };
    write_udp(ctx, L2 + IPV4_HLEN, wrap, inner_len)
}

/// Wraps the IPv6 packet (IPv6-in-IPv6 or GUE) towards `backend`.
#[inline(always)]
pub fn encap6<const L2: usize>(
    ctx: &XdpContext,
    len: usize,
    backend: &Backend,
    wrap: Wrap,
    flow_hash: u32,
) -> Result<(), Stat> {
    let Some((mut src, host)) = XLB_CONFIG.get(0).map(|c| (c.encap_src_v6, c.encap_host_v6)) else {
        return Err(Stat::EncapError);
    };
    if src == [0; 4] {
        return Err(Stat::EncapError);
    }
    // Prefixes are /96 or longer: the host bits are all in the last word.
    src[3] = entropy_source(src[3], host, flow_hash);
    let (our_mac, inner_len, vtc) = {
        // SAFETY: `header` bounds-checked both headers.
        let eth = unsafe { &*header::<EthHdr>(ctx, 0)? };
        let ip = unsafe { &*header::<Ipv6Hdr>(ctx, L2)? };
        (
            eth.dst,
            u16::from_be(ip.payload_len) + IPV6_HLEN as u16,
            // Keep the traffic class; the flow label is the inner flow's business.
            ip.ver_tc_flow & 0xfff0_0000u32.to_be(),
        )
    };
    let tags = Tags::read::<L2>(ctx)?;
    let extra = wrap.extra();
    grow(ctx, IPV6_HLEN + extra, len)?;
    let outer = Ipv6Hdr {
        ver_tc_flow: vtc,
        payload_len: (inner_len + extra as u16).to_be(),
        next_hdr: match wrap {
            Wrap::Ipip => IPPROTO_IPV6,
            Wrap::Gue { .. } => IPPROTO_UDP,
        },
        hop_limit: OUTER_TTL,
        src,
        dst: backend.addr,
    };
    write_l2::<L2>(ctx, our_mac, backend.mac, tags, ETH_P_IPV6)?;
    // SAFETY: `header` bounds-checked the outer header's room after the grow.
    unsafe { *header::<Ipv6Hdr>(ctx, L2)? = outer };
    write_udp(ctx, L2 + IPV6_HLEN, wrap, inner_len)
}

/// Makes room for `outer` bytes in front of the IP header. The caller checked the
/// result fits the egress MTU (`toobig::exceeded`).
#[inline(always)]
fn grow(ctx: &XdpContext, outer: usize, _len: usize) -> Result<(), Stat> {
    // SAFETY: plain helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer as i32)) } != 0 {
        return Err(Stat::EncapError);
    }
    Ok(())
}

/// What [`decap`] did with a packet.
pub enum Decap {
    /// Not a tunnel packet of ours (plain traffic, another UDP port, ...): untouched.
    NotTunnel,
    /// A tunnel packet this host may not unwrap (the reason's counter): untouched.
    Refused(Stat),
    /// Unwrapped: the inner packet goes to the stack.
    Unwrapped,
}

/// Backend side: strips one IPIP, IPv6-in-IPv6 or GUE (to the configured port) header so
/// the inner packet (addressed to the VIP, which the backend holds on lo) reaches the
/// local stack, if its outer source is an allowed balancer and its outer destination an
/// address of this host ([`allowed`]). Anything else is left untouched.
#[inline(always)]
pub fn decap(ctx: &XdpContext) -> Result<Decap, Stat> {
    // SAFETY (all derefs): `header` bounds-checked each header.
    let eth = unsafe { &*header::<EthHdr>(ctx, 0)? };
    let (dst, src) = (eth.dst, eth.src);
    let (outer, inner_type, key) = match u16::from_be(eth.ether_type) {
        ETH_P_IPV4 => {
            let ip = unsafe { &*header::<Ipv4Hdr>(ctx, ETH_HLEN)? };
            // Only option-less, unfragmented outer headers: that is all we send.
            if ip.ver_ihl != IPV4_VER_IHL || u16::from_be(ip.frag_off) & (IP_MF | IP_OFFSET) != 0 {
                return Ok(Decap::NotTunnel);
            }
            let key = DecapKey {
                src: [ip.src, 0, 0, 0],
                dst: [ip.dst, 0, 0, 0],
                family: AF_INET,
                _pad: [0; 3],
            };
            match ip.proto {
                IPPROTO_IPIP => {
                    // The inner header must be whole before we expose it to the stack.
                    header::<Ipv4Hdr>(ctx, ETH_HLEN + IPV4_HLEN)?;
                    (IPV4_HLEN, ETH_P_IPV4, key)
                }
                IPPROTO_UDP => match gue_inner(ctx, ETH_HLEN + IPV4_HLEN)? {
                    Some(inner_type) => (IPV4_HLEN + UDP_HLEN, inner_type, key),
                    None => return Ok(Decap::NotTunnel),
                },
                _ => return Ok(Decap::NotTunnel),
            }
        }
        ETH_P_IPV6 => {
            let ip = unsafe { &*header::<Ipv6Hdr>(ctx, ETH_HLEN)? };
            let key = DecapKey {
                src: ip.src,
                dst: ip.dst,
                family: AF_INET6,
                _pad: [0; 3],
            };
            match ip.next_hdr {
                IPPROTO_IPV6 => {
                    header::<Ipv6Hdr>(ctx, ETH_HLEN + IPV6_HLEN)?;
                    (IPV6_HLEN, ETH_P_IPV6, key)
                }
                IPPROTO_UDP => match gue_inner(ctx, ETH_HLEN + IPV6_HLEN)? {
                    Some(inner_type) => (IPV6_HLEN + UDP_HLEN, inner_type, key),
                    None => return Ok(Decap::NotTunnel),
                },
                _ => return Ok(Decap::NotTunnel),
            }
        }
        _ => return Ok(Decap::NotTunnel),
    };
    if let Err(reason) = allowed(&key) {
        return Ok(Decap::Refused(reason));
    }
    // Move the Ethernet header forward over the outer IP header, then drop the front.
    unsafe {
        *header::<EthHdr>(ctx, outer)? = EthHdr {
            dst,
            src,
            ether_type: inner_type.to_be(),
        };
        if bpf_xdp_adjust_head(ctx.ctx, outer as i32) != 0 {
            return Err(Stat::EncapError);
        }
    }
    Ok(Decap::Unwrapped)
}

/// Whether the outer (source, destination) pair may be unwrapped here: one hash probe
/// per configured prefix length of the family (`XLB_DECAP_LENS`, longest first; a bare
/// `--allow-source` address is a /32 or /128, one probe as before), the source masked
/// to that length. Unwrapping whatever arrives would let anyone who can reach the host
/// inject packets from any (spoofed) inner source to any inner destination, the VIP on
/// lo included, past filters that only see the outer header. Only on refusal, the
/// sources' markers name the reason.
#[inline(always)]
fn allowed(key: &DecapKey) -> Result<(), Stat> {
    if probe(
        key,
        |masked| DecapKey {
            dst: key.dst,
            ..masked
        },
        DECAP_PAIR,
    ) {
        return Ok(());
    }
    Err(if probe(key, |masked| masked, DECAP_SOURCE) {
        Stat::DecapForeignDest
    } else {
        Stat::DecapForeignSource
    })
}

/// Whether `XLB_DECAP_ALLOW` holds `want` under `entry(source marker)` for the source
/// masked to one of the family's configured lengths.
#[inline(always)]
fn probe(key: &DecapKey, entry: impl Fn(DecapKey) -> DecapKey, want: u32) -> bool {
    let base = decap_lens_base(key.family);
    for i in 0..MAX_DECAP_LENS {
        let len = XLB_DECAP_LENS.get(base + i).copied().unwrap_or(0);
        if len == 0 {
            break;
        }
        let mask = prefix_mask(len, key.family);
        let src = [
            key.src[0] & mask[0],
            key.src[1] & mask[1],
            key.src[2] & mask[2],
            key.src[3] & mask[3],
        ];
        let probe = entry(DecapKey::source(src, key.family));
        // SAFETY: hash-map values are read by copy right away.
        if unsafe { XLB_DECAP_ALLOW.get(probe) }.copied() == Some(want) {
            return true;
        }
    }
    false
}

/// If the UDP datagram at `udp_off` is GUE to our port with a whole inner IP header,
/// the inner packet's ethertype.
#[inline(always)]
fn gue_inner(ctx: &XdpContext, udp_off: usize) -> Result<Option<u16>, Stat> {
    let port = XLB_CONFIG.get(0).map_or(0, |c| c.gue_port_be);
    // SAFETY (all derefs): `header` bounds-checked each header.
    let udp = unsafe { &*header::<UdpHdr>(ctx, udp_off)? };
    if port == 0 || udp.dst != port {
        return Ok(None);
    }
    // GUE variant 1: the first nibble of the payload is the inner IP version.
    let first = unsafe { *header::<u8>(ctx, udp_off + UDP_HLEN)? };
    Ok(match first >> 4 {
        4 => {
            header::<Ipv4Hdr>(ctx, udp_off + UDP_HLEN)?;
            Some(ETH_P_IPV4)
        }
        6 => {
            header::<Ipv6Hdr>(ctx, udp_off + UDP_HLEN)?;
            Some(ETH_P_IPV6)
        }
        _ => None,
    })
}
