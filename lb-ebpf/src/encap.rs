//! IP-in-IP encapsulation towards backends (LVS "TUN", Katran's default) and the
//! backend-side decapsulation. The outer header gets a fixed source (the balancer's
//! configured encap address) so backends and firewalls see one well-known sender.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{limits::MAX_ENCAP_FRAME, Backend, Stat};

use crate::{
    csum,
    maps::XLB_CONFIG,
    parse::{
        header, EthHdr, Ipv4Hdr, Ipv6Hdr, ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP,
        IPPROTO_IPV6,
    },
};

const IPV4_HLEN: usize = size_of::<Ipv4Hdr>();
const IPV6_HLEN: usize = size_of::<Ipv6Hdr>();
const OUTER_TTL: u8 = 64;

/// Wraps the IPv4 packet in an outer IPv4 header to `backend` and transmits it.
#[inline(always)]
pub fn ipip4(ctx: &XdpContext, backend: &Backend) -> Result<u32, Stat> {
    let src = XLB_CONFIG.get(0).map_or(0, |c| c.encap_src_v4);
    if src == 0 {
        return Err(Stat::EncapError);
    }
    let (our_mac, inner_len, tos) = {
        // SAFETY: `header` bounds-checked both headers.
        let eth = unsafe { &*header::<EthHdr>(ctx, 0)? };
        let ip = unsafe { &*header::<Ipv4Hdr>(ctx, ETH_HLEN)? };
        (eth.dst, u16::from_be(ip.tot_len), ip.tos)
    };
    grow(ctx, IPV4_HLEN)?;
    let mut outer = Ipv4Hdr {
        ver_ihl: 0x45,
        tos,
        tot_len: (inner_len + IPV4_HLEN as u16).to_be(),
        id: 0,
        frag_off: 0,
        ttl: OUTER_TTL,
        proto: IPPROTO_IPIP,
        check: 0,
        src,
        dst: backend.addr[0],
    };
    // SAFETY: Ipv4Hdr is 20 bytes of plain integers, as is [u16; 10].
    outer.check = csum::ipv4_header(unsafe { &*(&outer as *const Ipv4Hdr).cast() });
    write_eth(ctx, our_mac, backend.mac, ETH_P_IP)?;
    // SAFETY: `header` bounds-checked the outer header's room after the grow.
    unsafe { *header::<Ipv4Hdr>(ctx, ETH_HLEN)? = outer };
    Ok(xdp_action::XDP_TX)
}

/// Wraps the IPv6 packet in an outer IPv6 header to `backend` and transmits it.
#[inline(always)]
pub fn ipip6(ctx: &XdpContext, backend: &Backend) -> Result<u32, Stat> {
    let Some(src) = XLB_CONFIG.get(0).map(|c| c.encap_src_v6) else {
        return Err(Stat::EncapError);
    };
    if src == [0; 4] {
        return Err(Stat::EncapError);
    }
    let (our_mac, inner_len, vtc) = {
        // SAFETY: `header` bounds-checked both headers.
        let eth = unsafe { &*header::<EthHdr>(ctx, 0)? };
        let ip = unsafe { &*header::<Ipv6Hdr>(ctx, ETH_HLEN)? };
        (
            eth.dst,
            u16::from_be(ip.payload_len) + IPV6_HLEN as u16,
            // Keep the traffic class; the flow label is the inner flow's business.
            ip.ver_tc_flow & 0xfff0_0000u32.to_be(),
        )
    };
    grow(ctx, IPV6_HLEN)?;
    let outer = Ipv6Hdr {
        ver_tc_flow: vtc,
        payload_len: inner_len.to_be(),
        next_hdr: IPPROTO_IPV6,
        hop_limit: OUTER_TTL,
        src,
        dst: backend.addr,
    };
    write_eth(ctx, our_mac, backend.mac, ETH_P_IPV6)?;
    // SAFETY: `header` bounds-checked the outer header's room after the grow.
    unsafe { *header::<Ipv6Hdr>(ctx, ETH_HLEN)? = outer };
    Ok(xdp_action::XDP_TX)
}

/// Makes room for `outer` bytes in front of the IP header.
#[inline(always)]
fn grow(ctx: &XdpContext, outer: usize) -> Result<(), Stat> {
    if ctx.data_end() - ctx.data() + outer > MAX_ENCAP_FRAME {
        return Err(Stat::EncapTooBig);
    }
    // SAFETY: plain helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(outer as i32)) } != 0 {
        return Err(Stat::EncapError);
    }
    Ok(())
}

#[inline(always)]
fn write_eth(ctx: &XdpContext, src: [u8; 6], dst: [u8; 6], ether_type: u16) -> Result<(), Stat> {
    // SAFETY: `header` bounds-checked the Ethernet header.
    unsafe {
        *header::<EthHdr>(ctx, 0)? = EthHdr {
            dst,
            src,
            ether_type: ether_type.to_be(),
        };
    }
    Ok(())
}

/// Backend side: strips one IPIP or IPv6-in-IPv6 header so the inner packet (addressed
/// to the VIP, which the backend holds on lo) reaches the local stack. Anything else is
/// passed untouched. `Ok(true)` when a packet was unwrapped.
#[inline(always)]
pub fn decap(ctx: &XdpContext) -> Result<bool, Stat> {
    // SAFETY (all derefs): `header` bounds-checked each header.
    let eth = unsafe { &*header::<EthHdr>(ctx, 0)? };
    let (dst, src) = (eth.dst, eth.src);
    let (outer, inner_type) = match u16::from_be(eth.ether_type) {
        ETH_P_IP => {
            let ip = unsafe { &*header::<Ipv4Hdr>(ctx, ETH_HLEN)? };
            // Only option-less, unfragmented outer headers: that is all we send.
            if ip.proto != IPPROTO_IPIP
                || ip.ver_ihl != 0x45
                || u16::from_be(ip.frag_off) & 0x3fff != 0
            {
                return Ok(false);
            }
            // The inner header must be whole before we expose it to the stack.
            header::<Ipv4Hdr>(ctx, ETH_HLEN + IPV4_HLEN)?;
            (IPV4_HLEN, ETH_P_IP)
        }
        ETH_P_IPV6 => {
            let ip = unsafe { &*header::<Ipv6Hdr>(ctx, ETH_HLEN)? };
            if ip.next_hdr != IPPROTO_IPV6 {
                return Ok(false);
            }
            header::<Ipv6Hdr>(ctx, ETH_HLEN + IPV6_HLEN)?;
            (IPV6_HLEN, ETH_P_IPV6)
        }
        _ => return Ok(false),
    };
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
    Ok(true)
}
