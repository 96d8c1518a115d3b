//! xlb data plane: XDP programs loaded by `lb-userspace`.
//!
//! `xlb` is the balancer's entry point; `xlb_pass` is a do-nothing companion that must sit
//! on the *receiving* end of a veth pair before native-mode XDP_TX/redirect frames are
//! delivered there (a veth driver requirement, see docs/kernel-notes.md).
#![no_std]
#![no_main]

mod csum;
mod encap;
mod forward;
mod icmp;
mod lookup;
mod maps;
mod parse;
mod stats;
mod toobig;
mod vlan;
mod vrrp;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::{debug, trace};
use lb_common::{
    service::service_flags,
    wire::{self, ETH_HLEN},
    ForwardMode, Stat,
};

use crate::parse::Parsed;

/// Balancer entry point. Thin on purpose: every outcome of [`try_xlb`] becomes exactly one
/// explicit verdict and one verdict counter (plus at most one reason counter), which is
/// why `rx` needs no counter of its own: readers sum the verdicts.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn xlb(ctx: XdpContext) -> u32 {
    balance::<ETH_HLEN>(&ctx)
}

/// The balancer for frames with one 802.1Q / 802.1ad tag, tail-called by `xlb`.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn xlb_vlan(ctx: XdpContext) -> u32 {
    balance::<{ vlan::L2_TAGGED }>(&ctx)
}

/// The balancer for QinQ frames (two tags), tail-called by `xlb`.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn xlb_qinq(ctx: XdpContext) -> u32 {
    balance::<{ vlan::L2_QINQ }>(&ctx)
}

/// One entry point's work for an `L2`-byte link header.
#[inline(always)]
fn balance<const L2: usize>(ctx: &XdpContext) -> u32 {
    // Opaque to LLVM: knowing `len == data_end - data`, it would drop packet bounds
    // checks that the datagram-length checks (`ip_end <= len`) make redundant in
    // arithmetic, but the verifier only accepts checks against `data_end`.
    let len = core::hint::black_box((ctx.data_end() - ctx.data()) as u64);
    let action = verdict(try_xlb::<L2>(ctx, len), len);
    stats::count_verdict(action, len);
    action
}

/// The verdict of a [`try_xlb`] result, counting a drop's reason.
#[inline(always)]
fn verdict(result: Result<u32, Stat>, len: u64) -> u32 {
    match result {
        Ok(action) => action,
        Err(reason) => {
            stats::count(reason, len);
            xdp_action::XDP_DROP
        }
    }
}

/// A tagged frame: a tail call into the balancer's copy for its tag depth, `xlb_vlan`
/// or `xlb_qinq` ([`vlan`]). A tail call rather than a function call: the copy gets a
/// stack of its own (with this frame's, a call would exceed 512 bytes) and the untagged
/// path keeps its code and registers as they were. Returns only if the copy is not
/// installed in `XLB_TAGGED` (not loaded by this control plane): passed, `vlan`.
#[inline(always)]
fn tagged(ctx: &XdpContext, len: u64) -> Result<u32, Stat> {
    let slot = match vlan::depth(ctx)? {
        Some(vlan::L2_TAGGED) => vlan::SLOT_TAGGED,
        Some(_) => vlan::SLOT_QINQ,
        None => return Ok(pass(ctx, Stat::Vlan, len)),
    };
    // SAFETY: the slots hold XDP programs of this object, which expect this context.
    unsafe { maps::XLB_TAGGED.tail_call(ctx, slot) };
    Ok(pass(ctx, Stat::Vlan, len))
}

/// `Ok(verdict)`, or `Err(drop reason)`, for a frame whose link header is `L2` bytes
/// long (untagged, one tag or QinQ: [`vlan`]).
#[inline(always)]
fn try_xlb<const L2: usize>(ctx: &XdpContext, len: u64) -> Result<u32, Stat> {
    let pkt = match parse::parse::<L2>(ctx, len as usize)? {
        Parsed::Ip(pkt) => pkt,
        Parsed::Pass(reason) => return Ok(pass(ctx, reason, len)),
        // Const-folded: only the untagged copy hands over to the tagged ones.
        Parsed::Tagged if L2 == ETH_HLEN => return tagged(ctx, len),
        Parsed::Tagged => return Ok(pass(ctx, Stat::Vlan, len)),
        Parsed::Echo {
            dst,
            family,
            l2_group,
        } => {
            // Answered only for an address this host serves, in a unicast frame (the
            // reply's source MAC is the request's destination MAC).
            let reason = match lookup::vip(&dst, family) {
                lookup::Vip::No => Stat::NotVip,
                lookup::Vip::Standby => Stat::Standby,
                lookup::Vip::Active if l2_group => Stat::L2Group,
                lookup::Vip::Active => {
                    stats::count(Stat::IcmpEcho, len);
                    return icmp::echo_reply::<L2>(ctx, family);
                }
            };
            return Ok(pass(ctx, reason, len));
        }
        // XDP answers adverts on the untagged link only; tagged ones go to the stack.
        Parsed::Vrrp { .. } if L2 != ETH_HLEN => return Ok(pass(ctx, Stat::Vlan, len)),
        // Before any VIP lookup: adverts are addressed to the VRRP group, never a VIP.
        Parsed::Vrrp { family } => {
            return Ok(match vrrp::advert(ctx, family)? {
                vrrp::Verdict::Pass(reason) => pass(ctx, reason, len),
                vrrp::Verdict::Answered => {
                    stats::count(Stat::VrrpAnswered, len);
                    xdp_action::XDP_TX
                }
                vrrp::Verdict::Aborted => xdp_action::XDP_ABORTED,
            });
        }
    };
    // Most VIP packets belong to established flows: their connection entry names the
    // service, which spares the service hash lookup. A SYN always takes the current
    // Maglev choice (Katran's rule), and a fragment or a packet with IP options has no
    // trustworthy ports, so neither consults the table.
    let at = lookup::Moment::now(pkt.closing);
    let known = if pkt.new_flow || pkt.unforwardable.is_some() {
        None
    } else {
        lookup::conn(&pkt.flow, &at)
    };
    // A `None` leaves the entry's bytes undefined, and LLVM compares them (the service
    // id and generation `lookup::backend` checks) before the `Some` test: in the tagged
    // copies that register held a packet pointer, which the verifier refuses to shift,
    // or nothing at all (`!read_ok`). There the entry is made whole first; the untagged
    // copy is left as it was (const-folded), where that would cost every packet.
    let known = if L2 == ETH_HLEN {
        known
    } else {
        lookup::defined(known)
    };
    let (svc, service_gen) = match known.as_ref().and_then(lookup::conn_service) {
        Some(found) => found,
        None => match lookup::service(&pkt.flow) {
            // A VLAN-scoped service: checked for new flows only, since an established
            // flow's entry is keyed by its VLAN too (`FlowKey::vlan`).
            Some(svc) if svc.vlan != 0 && svc.vlan != u32::from(pkt.flow.vlan) => {
                return Ok(pass(ctx, Stat::VlanMismatch, len));
            }
            Some(svc) => (svc, lookup::generation(svc.id)),
            None => return Ok(pass(ctx, Stat::NotVip, len)),
        },
    };
    if svc.flags & service_flags::STANDBY != 0 {
        return Ok(pass(ctx, Stat::Standby, len));
    }
    // DSR, IPIP/GUE take the source MAC from the destination MAC: never a group address.
    if pkt.l2_group {
        return Ok(pass(ctx, Stat::L2Group, len));
    }
    if let Some(reason) = pkt.unforwardable {
        return Err(reason);
    }
    if pkt.ttl <= 1 {
        return Err(Stat::TtlExpired);
    }
    if pkt.icmp_too_big {
        stats::count(Stat::IcmpTooBig, len);
    }
    let evidence = if pkt.new_flow {
        lookup::Evidence::Opening
    } else if pkt.icmp_too_big {
        lookup::Evidence::Error
    } else {
        lookup::Evidence::Continuing
    };
    let choice = match lookup::backend(&pkt.flow, &svc, service_gen, known, evidence, &at, len) {
        Ok(c) => c,
        Err(Stat::NoBackend) if svc.flags & service_flags::FALLBACK_PASS != 0 => {
            return Ok(pass(ctx, Stat::FallbackPass, len));
        }
        Err(reason) => return Err(reason),
    };
    let backend = choice.backend;
    debug!(
        ctx,
        "service {} -> backend {:i}",
        svc.id,
        u32::from_be(backend.addr[0])
    );
    let egress_mac = forward::egress_mac(svc.tx_port)?;
    match ForwardMode::from_u8(svc.mode) {
        Some(ForwardMode::Dsr) => forward::dsr(ctx, &backend)?,
        Some(mode) => {
            let wrap = match mode {
                ForwardMode::Gue => encap::Wrap::gue(choice.flow_hash)?,
                _ => encap::Wrap::Ipip,
            };
            let v4 = pkt.flow.family == lb_common::service::AF_INET;
            let outer = if v4 { 20 } else { 40 } + wrap.extra();
            if let Some(mtu) = toobig::exceeded::<L2>(ctx, svc.tx_port, outer)? {
                // Never an ICMP error about an ICMP error (RFC 1122 §3.2.2, RFC 4443
                // §2.4 e): a too-big ICMP for a VIP flow that does not fit is dropped.
                if pkt.icmp_too_big {
                    return Err(Stat::EncapTooBig);
                }
                // Not forwarded, so not counted for the service: answered or dropped.
                return toobig::answer::<L2>(ctx, len as usize, pkt.flow.family, mtu, outer);
            }
            if v4 {
                encap::encap4::<L2>(ctx, len as usize, &backend, wrap, choice.flow_hash)?;
            } else {
                encap::encap6::<L2>(ctx, len as usize, &backend, wrap, choice.flow_hash)?;
            }
        }
        None => return Err(Stat::EncapError),
    };
    let action = forward::send(ctx, svc.tx_port, egress_mac)?;
    // Only now is the packet on its way: count it for its service and backend.
    stats::count_forward(svc.id, choice.backend_id, len, choice.new);
    Ok(action)
}

/// Counts why a packet goes to the stack untouched.
#[inline(always)]
fn pass(ctx: &XdpContext, reason: Stat, len: u64) -> u32 {
    stats::count(reason, len);
    trace!(ctx, "pass: {} ({} bytes)", reason.name(), len);
    xdp_action::XDP_PASS
}

/// Backend-side decapsulation: unwraps IPIP / IPv6-in-IPv6 / GUE from an allowed balancer
/// to an address of this host (`XLB_DECAP_ALLOW`) and passes the inner packet to the
/// local stack; everything else, refused tunnel packets included, passes untouched.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn xlb_decap(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    match encap::decap(&ctx) {
        Ok(encap::Decap::Unwrapped) => stats::count(Stat::Decap, len),
        Ok(encap::Decap::NotTunnel) => {}
        Ok(encap::Decap::Refused(reason)) | Err(reason) => stats::count(reason, len),
    }
    // Even a packet we could not or may not unwrap goes to the stack untouched: it
    // decides, not us (a refused tunnel packet may be the host's own tunnel; with no
    // such tunnel configured the kernel drops it, as it would without xlb_decap).
    stats::count(Stat::Pass, len);
    xdp_action::XDP_PASS
}

/// Companion for the peer end of a veth: passes everything, counts nothing.
#[xdp]
pub fn xlb_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

// The verdict numbers the tests and tools use (`lb_common::wire`) are the kernel's.
const _: () = assert!(
    wire::XDP_ABORTED == xdp_action::XDP_ABORTED
        && wire::XDP_DROP == xdp_action::XDP_DROP
        && wire::XDP_PASS == xdp_action::XDP_PASS
        && wire::XDP_TX == xdp_action::XDP_TX
        && wire::XDP_REDIRECT == xdp_action::XDP_REDIRECT
);
