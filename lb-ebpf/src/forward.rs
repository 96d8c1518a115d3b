//! Forwarding to the chosen backend. DSR (LVS "DR"): the backend holds the VIP on lo, so
//! only the Ethernet header changes and the frame goes back out the way it came.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{Backend, Stat};

use crate::{
    maps::{XLB_TX_MACS, XLB_TX_PORTS},
    parse::{header, EthHdr},
};

/// Rewrites the MACs towards `backend`. The frame was addressed to us, so its
/// destination MAC becomes the new source (two-arm egress replaces it again); it is a
/// unicast MAC, since VIP traffic in group frames is passed first (`l2_group`).
#[inline(always)]
pub fn dsr(ctx: &XdpContext, backend: &Backend) -> Result<(), Stat> {
    // SAFETY: `header` proved the Ethernet header lies within the packet.
    let eth = unsafe { &mut *header::<EthHdr>(ctx, 0)? };
    eth.src = eth.dst;
    eth.dst = backend.mac;
    Ok(())
}

/// The source MAC of a two-arm service's egress interface, checked before the packet is
/// touched so an unconfigured egress drops the packet unmodified. `None`: one-arm.
#[inline(always)]
pub fn egress_mac(tx_port: u8) -> Result<Option<[u8; 6]>, Stat> {
    if tx_port == 0 {
        return Ok(None);
    }
    // The control plane writes the MAC after the devmap slot: a set MAC means ready.
    let mac = XLB_TX_MACS
        .get(u32::from(tx_port))
        .ok_or(Stat::NoTxPort)?
        .mac;
    if mac == [0; 6] {
        return Err(Stat::NoTxPort);
    }
    Ok(Some(mac))
}

/// Sends the finished frame: back out of the receiving interface (one-arm, XDP_TX) or
/// out of the service's egress interface with its MAC as the source (two-arm).
#[inline(always)]
pub fn send(ctx: &XdpContext, tx_port: u8, mac: Option<[u8; 6]>) -> Result<u32, Stat> {
    let Some(mac) = mac else {
        return Ok(xdp_action::XDP_TX);
    };
    // SAFETY: `header` bounds-checked the Ethernet header.
    unsafe { (*header::<EthHdr>(ctx, 0)?).src = mac };
    XLB_TX_PORTS
        .redirect(u32::from(tx_port), 0)
        .map_err(|_| Stat::NoTxPort)
}
