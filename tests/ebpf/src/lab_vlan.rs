//! Lab programs for the VLAN end-to-end tests (`testbed::vlan_lab`): this kernel cannot
//! create `type vlan` links, so the lab tags and untags frames itself. `lab_vlan_push`
//! (on the switch port the client sends into) tags the client's frames to the VIP and
//! redirects them straight to the lb's port, `lab_vlan_pop` (on the switch port the
//! balancer sends into) takes the tags off what the balancer sends, so backends see
//! plain frames. Everything else passes untouched: ARP / neighbour discovery stay
//! untagged, as on a host whose VLAN is its port's.
//!
//! Why a redirect and not XDP_PASS into the bridge: the kernel's receive path takes a
//! tag out of the frame into skb metadata (`skb_vlan_untag`), and a veth sends it on as
//! metadata (VLAN TX offload), so the lb's XDP would see the frame untagged: as it
//! would behind a real NIC with VLAN RX offload on (docs/vlans.md). An XDP frame
//! redirected into a veth keeps its bytes as they are.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_redirect, bpf_xdp_adjust_head},
    macros::xdp,
    programs::XdpContext,
};

use crate::header;

/// The tags `lab_vlan_push` inserts, as on the wire (TPID and TCI, network order),
/// outermost first; set by the loader (`.rodata`).
#[unsafe(no_mangle)]
static LAB_TAGS: [u32; 2] = [0; 2];
/// How many of [`LAB_TAGS`] are used (1 or 2; 0 tags nothing).
#[unsafe(no_mangle)]
static LAB_TAG_COUNT: u32 = 0;
/// The VIPs whose frames are tagged (network order; zero = none of that family).
#[unsafe(no_mangle)]
static LAB_VIP4: u32 = 0;
#[unsafe(no_mangle)]
static LAB_VIP6: [u32; 4] = [0; 4];
/// Where tagged frames go: the ifindex of the switch's port towards the lb.
#[unsafe(no_mangle)]
static LAB_REDIRECT_IFINDEX: u32 = 0;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;

/// Tags a frame to a configured VIP with the configured tags.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn lab_vlan_push(ctx: XdpContext) -> u32 {
    // SAFETY: plain reads of this program's read-only globals (volatile: the loader
    // sets them, the compiler must not fold the zero initialisers).
    let count = unsafe { core::ptr::read_volatile(&LAB_TAG_COUNT) };
    if !to_vip(&ctx) {
        return xdp_action::XDP_PASS;
    }
    let pushed = match count {
        1 => push::<1>(&ctx),
        2 => push::<2>(&ctx),
        _ => false,
    };
    if !pushed {
        return xdp_action::XDP_DROP;
    }
    // SAFETY: as above; then a plain helper call.
    let ifindex = unsafe { core::ptr::read_volatile(&LAB_REDIRECT_IFINDEX) };
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

/// Takes up to two 802.1Q / 802.1ad tags off a frame.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn lab_vlan_pop(ctx: XdpContext) -> u32 {
    let is_tag = |offset: usize| {
        // SAFETY: `header` bounds-checked the two bytes.
        header::<u16>(&ctx, offset)
            .is_some_and(|t| matches!(u16::from_be(unsafe { *t }), 0x8100 | 0x88a8))
    };
    if is_tag(12) {
        if is_tag(16) {
            pop::<2>(&ctx);
        } else {
            pop::<1>(&ctx);
        }
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn to_vip(ctx: &XdpContext) -> bool {
    let Some(ether_type) = header::<u16>(ctx, 12) else {
        return false;
    };
    // SAFETY (all): `header` bounds-checked each read; the globals as above.
    match u16::from_be(unsafe { *ether_type }) {
        ETH_P_IPV4 => header::<u32>(ctx, 14 + 16)
            .is_some_and(|dst| unsafe { *dst == core::ptr::read_volatile(&LAB_VIP4) && *dst != 0 }),
        ETH_P_IPV6 => header::<[u32; 4]>(ctx, 14 + 24).is_some_and(|dst| unsafe {
            let vip = core::ptr::read_volatile(&LAB_VIP6);
            *dst == vip && vip != [0; 4]
        }),
        _ => false,
    }
}

/// Inserts the first `N` of [`LAB_TAGS`] after the MACs; false if it could not.
#[inline(always)]
fn push<const N: usize>(ctx: &XdpContext) -> bool {
    // SAFETY: plain helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(4 * N as i32)) } != 0 {
        return false;
    }
    let (Some(from), Some(to)) = (header::<[u8; 12]>(ctx, 4 * N), header::<[u8; 12]>(ctx, 0))
    else {
        return false;
    };
    // SAFETY: `header` bounds-checked both; the globals as above.
    unsafe {
        let macs = *from;
        *to = macs;
        let tags = core::ptr::read_volatile(&LAB_TAGS);
        for (i, tag) in tags.iter().enumerate().take(N) {
            let Some(at) = header::<u32>(ctx, 12 + 4 * i) else {
                return false;
            };
            *at = *tag;
        }
    }
    true
}

/// Removes `N` tags: the MACs move forward over them and the front is dropped.
#[inline(always)]
fn pop<const N: usize>(ctx: &XdpContext) {
    let (Some(from), Some(to)) = (header::<[u8; 12]>(ctx, 0), header::<[u8; 12]>(ctx, 4 * N))
    else {
        return;
    };
    // SAFETY: `header` bounds-checked both; then a plain helper call.
    unsafe {
        let macs = *from;
        *to = macs;
        bpf_xdp_adjust_head(ctx.ctx, 4 * N as i32);
    }
}
