//! xlb data plane: XDP programs loaded by `lb-userspace`.
//!
//! `xlb` is the balancer's entry point; `xlb_pass` is a do-nothing companion that must sit
//! on the *receiving* end of a veth pair before native-mode XDP_TX/redirect frames are
//! delivered there (a veth driver requirement, see docs/kernel-notes.md).
#![no_std]
#![no_main]

mod parse;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use lb_common::Stat;

use crate::parse::ParseError;

/// Balancer entry point. Thin on purpose: every outcome of [`try_xlb`] becomes exactly one
/// explicit verdict and one counter, so `rx == pass + drop + tx + redirect + aborted`.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn xlb(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    stats::count(Stat::Rx, len);
    let action = match try_xlb(&ctx) {
        Ok(action) => action,
        Err(ParseError::Truncated) => {
            stats::count(Stat::Truncated, len);
            xdp_action::XDP_DROP
        }
    };
    stats::count_verdict(action, len);
    action
}

#[inline(always)]
fn try_xlb(ctx: &XdpContext) -> Result<u32, ParseError> {
    let eth = parse::ethernet(ctx)?;
    // Disabled log levels cost nothing per packet: AYA_LOG_LEVEL lives in frozen .rodata,
    // so the verifier sees a constant and removes the branch at load time.
    debug!(ctx, "rx ethertype {:x}", u16::from_be(eth.ether_type));
    Ok(xdp_action::XDP_PASS)
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
