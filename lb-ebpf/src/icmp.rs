//! ICMP echo to a VIP, answered from XDP: the balancer owns the VIP's reachability, and
//! answering here keeps pings off the backends and off the balancer's own stack.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{
    service::AF_INET,
    wire::{ICMPV6_ECHO_REPLY, ICMP_ECHO_REPLY},
    Stat,
};

use crate::{
    csum,
    parse::{header, EthHdr, IcmpHdr, Ipv4Hdr, Ipv6Hdr},
};

const REPLY_TTL: u8 = 64;

/// Turns the echo request into its reply in place and transmits it back (the `L2`-byte
/// link header keeps its tags: only the MACs swap). The caller
/// checked that the request was sent to a unicast MAC (it becomes the source).
#[inline(always)]
pub fn echo_reply<const L2: usize>(ctx: &XdpContext, family: u8) -> Result<u32, Stat> {
    // SAFETY (all derefs): `header` bounds-checked each header; parse already checked
    // the IPv4 header has no options.
    let eth = unsafe { &mut *header::<EthHdr>(ctx, 0)? };
    core::mem::swap(&mut eth.src, &mut eth.dst);
    let (icmp_off, reply) = if family == AF_INET {
        let ip = unsafe { &mut *header::<Ipv4Hdr>(ctx, L2)? };
        core::mem::swap(&mut ip.src, &mut ip.dst);
        ip.ttl = REPLY_TTL;
        ip.check = 0;
        // SAFETY: Ipv4Hdr is 20 bytes of plain integers, as is [u16; 10].
        ip.check = csum::ipv4_header(unsafe { &*(ip as *const Ipv4Hdr).cast() });
        (L2 + size_of::<Ipv4Hdr>(), ICMP_ECHO_REPLY)
    } else {
        let ip = unsafe { &mut *header::<Ipv6Hdr>(ctx, L2)? };
        // Swapping source and destination leaves the pseudo-header sum unchanged.
        core::mem::swap(&mut ip.src, &mut ip.dst);
        ip.hop_limit = REPLY_TTL;
        (L2 + size_of::<Ipv6Hdr>(), ICMPV6_ECHO_REPLY)
    };
    let icmp = unsafe { &mut *header::<IcmpHdr>(ctx, icmp_off)? };
    let old = u16::from_be_bytes([icmp.kind, icmp.code]);
    icmp.kind = reply;
    let new = u16::from_be_bytes([icmp.kind, icmp.code]);
    icmp.check = csum::replace16(icmp.check, old, new);
    Ok(xdp_action::XDP_TX)
}
