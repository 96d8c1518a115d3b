//! Path MTU discovery through the tunnel: a packet that would exceed the egress MTU once
//! encapsulated is answered from XDP with ICMP "fragmentation needed" (IPv4, DF set) or
//! ICMPv6 "packet too big", so the client's TCP lowers its segment size (docs/mtu.md).
//!
//! The limit comes from `bpf_check_mtu`, which reads the egress device's MTU on every
//! call: an `ip link set mtu` takes effect with the next packet and there is nothing
//! for the control plane to keep in sync (docs/mtu.md has the measured cost).

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::PerCpuArray,
    helpers::{
        bpf_check_mtu, bpf_csum_diff, bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    macros::btf_map,
    programs::XdpContext,
};
use lb_common::{
    service::{AF_INET, DEFAULT_TOOBIG_PER_SEC},
    wire::{
        ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, ICMPV6_PACKET_TOO_BIG, ICMP_DEST_UNREACH,
        ICMP_FRAG_NEEDED, IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4_VER_IHL, IP_DF,
    },
    Stat,
};

use crate::{
    csum,
    maps::{XLB_CONFIG, XLB_TX_PORTS},
    parse::{header, EthHdr, Ipv4Hdr, Ipv6Hdr},
    vlan::{write_l2, Tags},
};

/// Bytes of the offending packet (from its IP header on) quoted in an ICMP answer. RFC
/// 792 asks for the IP header and 8 bytes (the ports, which is what Linux matches the
/// socket by); more lets the client also check the TCP sequence number and options.
/// Fixed sizes keep the checksum one bounded helper call the verifier can prove.
pub const QUOTE4: usize = 128;
/// The same for IPv6: well under the 1280-byte limit of an ICMPv6 message (RFC 4443
/// §2.4), bounded so the answer stays small and the checksum one helper call.
pub const QUOTE6: usize = 256;
/// Smallest MTU an IPv6 host accepts in a packet-too-big (Linux TCP ignores smaller).
pub const IPV6_MIN_MTU: u32 = 1280;

const ICMP_HLEN: usize = size_of::<TooBigHdr>();
const IPV4_HLEN: usize = size_of::<Ipv4Hdr>();
const IPV6_HLEN: usize = size_of::<Ipv6Hdr>();
const REPLY_TTL: u8 = 64;
const NS_PER_SEC: u64 = 1_000_000_000;

/// ICMP type 3 code 4 / ICMPv6 type 2 header. `rest`: for IPv4 16 unused bits then
/// the next-hop MTU (RFC 1191), for IPv6 the 32-bit MTU; network order.
#[repr(C)]
struct TooBigHdr {
    kind: u8,
    code: u8,
    check: u16,
    rest: u32,
}

/// This CPU's answers in the current one-second window.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TooBigBudget {
    window_start_ns: u64,
    sent: u64,
}

/// Per CPU, so the budget needs no atomics; the global rate is the per-CPU rate times
/// the CPUs receiving big packets.
#[btf_map]
static XLB_TOOBIG_BUDGET: PerCpuArray<TooBigBudget, 1> = PerCpuArray::new();

/// `Some(device MTU)` when the frame, `outer` bytes longer once wrapped, would not fit
/// the egress: the receiving interface for XDP_TX (`tx_port` 0), else the tx-port
/// slot's interface. The MTU counts from the IP header, as the frame length minus the
/// `L2`-byte link header does.
#[inline(always)]
pub fn exceeded<const L2: usize>(
    ctx: &XdpContext,
    tx_port: u8,
    outer: usize,
) -> Result<Option<u32>, Stat> {
    let ifindex = if tx_port == 0 {
        0 // bpf_check_mtu: 0 = the device the packet arrived on
    } else {
        XLB_TX_PORTS
            .get_ifindex(u32::from(tx_port))
            .ok_or(Stat::NoTxPort)?
    };
    let mut mtu: u32 = 0;
    // SAFETY: plain helper call on our own context; `mtu` is a valid out-pointer.
    // The helper takes 14 link bytes off the frame; tags are not IP bytes either.
    let len_diff = outer as i32 - (L2 - ETH_HLEN) as i32;
    match unsafe { bpf_check_mtu(ctx.ctx.cast(), ifindex, &mut mtu, len_diff, 0) } {
        0 => Ok(None),
        1 => Ok(Some(mtu)),
        // -ENODEV: the slot's interface went away after the devmap lookup.
        _ => Err(Stat::NoTxPort),
    }
}

/// Answers the `len`-byte frame that does not fit (`mtu` of the egress, `outer` bytes
/// of encapsulation) with an ICMP / ICMPv6 error to its source, transmitted back out of
/// the receiving interface. The frame is rewritten in place into the answer.
#[inline(always)]
pub fn answer<const L2: usize>(
    ctx: &XdpContext,
    len: usize,
    family: u8,
    mtu: u32,
    outer: usize,
) -> Result<u32, Stat> {
    // What the client may send so that it fits once wrapped.
    let room = mtu.saturating_sub(outer as u32);
    if family == AF_INET {
        answer4::<L2>(ctx, len, room)?;
        crate::stats::count(Stat::IcmpTooBigSentV4, len as u64);
    } else {
        answer6::<L2>(ctx, len, room)?;
        crate::stats::count(Stat::IcmpTooBigSentV6, len as u64);
    }
    Ok(xdp_action::XDP_TX)
}

/// Spends one answer of this CPU's budget for the current second, or refuses.
#[inline(always)]
fn spend() -> Result<(), Stat> {
    let rate = match XLB_CONFIG.get(0).map_or(0, |c| c.toobig_per_sec) {
        0 => DEFAULT_TOOBIG_PER_SEC,
        r => r,
    };
    let budget = XLB_TOOBIG_BUDGET
        .get_ptr_mut(0)
        .ok_or(Stat::IcmpTooBigRateLimited)?;
    // SAFETY: plain helper call; per-CPU slot only this program on this CPU writes.
    unsafe {
        let now = bpf_ktime_get_ns();
        if now.wrapping_sub((*budget).window_start_ns) >= NS_PER_SEC {
            (*budget).window_start_ns = now;
            (*budget).sent = 0;
        }
        if (*budget).sent >= u64::from(rate) {
            return Err(Stat::IcmpTooBigRateLimited);
        }
        (*budget).sent += 1;
    }
    Ok(())
}

/// Folds a one's-complement sum of native-order words into a checksum field (stored
/// natively, like `csum::ipv4_header`).
#[inline(always)]
fn fold(sum: u64) -> u16 {
    let mut s = sum;
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    !(s as u16)
}

/// One's-complement sum of the `N` bytes at `offset` (N a multiple of 4, ≤ 512).
#[inline(always)]
fn sum_bytes<const N: usize>(ctx: &XdpContext, offset: usize) -> Result<u64, Stat> {
    let p = header::<[u8; N]>(ctx, offset)?;
    // SAFETY: `header` bounds-checked the N bytes; the helper only reads them.
    let s = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p.cast(), N as u32, 0) };
    if s < 0 {
        return Err(Stat::EncapError);
    }
    Ok(u64::from(s as u32))
}

/// ICMP type 3 code 4 with next-hop MTU `room`, quoting [`QUOTE4`] bytes.
#[inline(always)]
fn answer4<const L2: usize>(ctx: &XdpContext, len: usize, room: u32) -> Result<(), Stat> {
    // SAFETY (all derefs): `header` bounds-checked each header.
    let (mac_src, mac_dst, client, vip, frag_off) = {
        let eth = unsafe { &*header::<EthHdr>(ctx, 0)? };
        let ip = unsafe { &*header::<Ipv4Hdr>(ctx, L2)? };
        (eth.src, eth.dst, ip.src, ip.dst, u16::from_be(ip.frag_off))
    };
    // The answer leaves on the request's VLANs.
    let tags = Tags::read::<L2>(ctx)?;
    // XDP cannot fragment, and passing the packet to the stack would not get it to the
    // backend (the stack has no route from the VIP into the tunnel): dropped.
    if frag_off & IP_DF == 0 {
        return Err(Stat::TooBigNoDf);
    }
    if len < L2 + QUOTE4 {
        return Err(Stat::EncapTooBig);
    }
    spend()?;
    let front = IPV4_HLEN + ICMP_HLEN;
    let total = L2 + front + QUOTE4;
    // SAFETY: plain helper calls on our own context.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (L2 + QUOTE4) as i32 - len as i32) } != 0 {
        return Err(Stat::EncapError);
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(front as i32)) } != 0 {
        return Err(Stat::EncapError);
    }
    write_l2::<L2>(ctx, mac_dst, mac_src, tags, ETH_P_IPV4)?;
    let mut ip = Ipv4Hdr {
        ver_ihl: IPV4_VER_IHL,
        tos: 0,
        tot_len: ((total - L2) as u16).to_be(),
        id: 0,
        frag_off: 0,
        ttl: REPLY_TTL,
        proto: IPPROTO_ICMP,
        check: 0,
        // From the VIP, the address the client sent to.
        src: vip,
        dst: client,
    };
    // SAFETY: Ipv4Hdr is 20 bytes of plain integers, as is [u16; 10].
    ip.check = csum::ipv4_header(unsafe { &*(&ip as *const Ipv4Hdr).cast() });
    let icmp_off = L2 + IPV4_HLEN;
    // SAFETY: `header` bounds-checked both headers after the reshaping.
    unsafe {
        *header::<Ipv4Hdr>(ctx, L2)? = ip;
        *header::<TooBigHdr>(ctx, icmp_off)? = TooBigHdr {
            kind: ICMP_DEST_UNREACH,
            code: ICMP_FRAG_NEEDED,
            check: 0,
            rest: (room & 0xffff).to_be(),
        };
    }
    let sum = sum_bytes::<{ ICMP_HLEN + QUOTE4 }>(ctx, icmp_off)?;
    // SAFETY: `header` bounds-checked the ICMP header.
    unsafe { (*header::<TooBigHdr>(ctx, icmp_off)?).check = fold(sum) };
    Ok(())
}

/// ICMPv6 packet too big with MTU `room` (at least [`IPV6_MIN_MTU`]), quoting
/// [`QUOTE6`] bytes.
#[inline(always)]
fn answer6<const L2: usize>(ctx: &XdpContext, len: usize, room: u32) -> Result<(), Stat> {
    // SAFETY (all derefs): `header` bounds-checked each header.
    let (mac_src, mac_dst, client, vip) = {
        let eth = unsafe { &*header::<EthHdr>(ctx, 0)? };
        let ip = unsafe { &*header::<Ipv6Hdr>(ctx, L2)? };
        (eth.src, eth.dst, ip.src, ip.dst)
    };
    let tags = Tags::read::<L2>(ctx)?;
    if len < L2 + QUOTE6 {
        return Err(Stat::EncapTooBig);
    }
    spend()?;
    let front = IPV6_HLEN + ICMP_HLEN;
    let payload = ICMP_HLEN + QUOTE6;
    // SAFETY: plain helper calls on our own context.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, (L2 + QUOTE6) as i32 - len as i32) } != 0 {
        return Err(Stat::EncapError);
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(front as i32)) } != 0 {
        return Err(Stat::EncapError);
    }
    write_l2::<L2>(ctx, mac_dst, mac_src, tags, ETH_P_IPV6)?;
    let icmp_off = L2 + IPV6_HLEN;
    // SAFETY: `header` bounds-checked both headers after the reshaping.
    unsafe {
        *header::<Ipv6Hdr>(ctx, L2)? = Ipv6Hdr {
            ver_tc_flow: 0x6000_0000u32.to_be(),
            payload_len: (payload as u16).to_be(),
            next_hdr: IPPROTO_ICMPV6,
            hop_limit: REPLY_TTL,
            src: vip,
            dst: client,
        };
        // A smaller MTU would be ignored (RFC 8201 §4, Linux tcp_v6_err): announce the
        // minimum; a tunnel path under 1280 + overhead breaks IPv6 (RFC 2473 §7.1).
        *header::<TooBigHdr>(ctx, icmp_off)? = TooBigHdr {
            kind: ICMPV6_PACKET_TOO_BIG,
            code: 0,
            check: 0,
            rest: room.max(IPV6_MIN_MTU).to_be(),
        };
    }
    // Pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
    let sum = sum_bytes::<32>(ctx, L2 + 8)?
        + sum_bytes::<{ ICMP_HLEN + QUOTE6 }>(ctx, icmp_off)?
        + u64::from((payload as u16).to_be())
        + u64::from(u16::from(IPPROTO_ICMPV6).to_be());
    // SAFETY: `header` bounds-checked the ICMPv6 header.
    unsafe { (*header::<TooBigHdr>(ctx, icmp_off)?).check = fold(sum) };
    Ok(())
}
