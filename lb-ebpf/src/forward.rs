//! Forwarding to the chosen backend. DSR (LVS "DR"): the backend holds the VIP on lo, so
//! only the Ethernet header changes and the frame goes back out the way it came.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{Backend, Stat};

use crate::parse::{header, EthHdr};

/// Rewrites the MACs towards `backend` and transmits. The frame was addressed to us, so
/// its destination MAC becomes the new source.
#[inline(always)]
pub fn dsr(ctx: &XdpContext, backend: &Backend) -> Result<u32, Stat> {
    // SAFETY: `header` proved the Ethernet header lies within the packet.
    let eth = unsafe { &mut *header::<EthHdr>(ctx, 0)? };
    eth.src = eth.dst;
    eth.dst = backend.mac;
    Ok(xdp_action::XDP_TX)
}
