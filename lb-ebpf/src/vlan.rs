//! 802.1Q / 802.1ad (QinQ) tags: how deep the L2 header of a tagged frame is, the
//! innermost VLAN id, and the tags copied into frames xlb rewrites (encapsulation, ICMP
//! answers), so everything sent back out of a frame keeps its VLANs (docs/vlans.md).
//!
//! The rest of the data plane is generic over the L2 header length `L2` (14 untagged,
//! 18 one tag, 22 QinQ): each length is its own copy of the code with constant offsets
//! and its own XDP program (`xlb`, `xlb_vlan`, `xlb_qinq`), so untagged frames pay
//! nothing for VLAN support but the ethertype compare that sends a tagged frame to
//! [`depth`] and a tail call into its copy (`XLB_TAGGED`).

use aya_ebpf::programs::XdpContext;
use lb_common::{
    wire::{ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, VLAN_HLEN, VLAN_VID_MASK},
    Stat,
};

use crate::parse::header;

/// L2 header length with one tag.
pub const L2_TAGGED: usize = ETH_HLEN + VLAN_HLEN;
/// L2 header length with two tags (QinQ).
pub const L2_QINQ: usize = ETH_HLEN + 2 * VLAN_HLEN;

/// `XLB_TAGGED` slot of `xlb_vlan` (one tag).
pub const SLOT_TAGGED: u32 = lb_common::service::TAGGED_SLOT_VLAN;
/// `XLB_TAGGED` slot of `xlb_qinq` (two tags).
pub const SLOT_QINQ: u32 = lb_common::service::TAGGED_SLOT_QINQ;

/// Whether an ethertype (host order) is a tag's TPID.
#[inline(always)]
pub fn is_tag(ether_type: u16) -> bool {
    ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD
}

/// The L2 header length of a frame whose outer ethertype is a TPID: [`L2_TAGGED`] or
/// [`L2_QINQ`], `None` for three tags or more (passed, counted `vlan`). A tag cut short
/// by the end of the frame is `Truncated`.
#[inline(always)]
pub fn depth(ctx: &XdpContext) -> Result<Option<usize>, Stat> {
    // SAFETY (both): `header` proved the two bytes lie inside the packet.
    let inner = u16::from_be(unsafe { *header::<u16>(ctx, L2_TAGGED - 2)? });
    if !is_tag(inner) {
        return Ok(Some(L2_TAGGED));
    }
    let inner = u16::from_be(unsafe { *header::<u16>(ctx, L2_QINQ - 2)? });
    Ok((!is_tag(inner)).then_some(L2_QINQ))
}

/// The VLAN id of the innermost tag of an `L2`-byte header (0 untagged).
#[inline(always)]
pub fn vid<const L2: usize>(ctx: &XdpContext) -> Result<u16, Stat> {
    if L2 == ETH_HLEN {
        return Ok(0);
    }
    // SAFETY: `header` proved the TCI lies inside the packet.
    let tci = u16::from_be(unsafe { *header::<u16>(ctx, L2 - 4)? });
    Ok(tci & VLAN_VID_MASK)
}

/// The tags (TPID and TCI words, as on the wire) between the MACs and the ethertype of
/// an `L2`-byte header; unused words are zero.
#[derive(Clone, Copy)]
pub struct Tags([u32; 2]);

impl Tags {
    /// Reads the tags of the frame, before it is reshaped.
    #[inline(always)]
    pub fn read<const L2: usize>(ctx: &XdpContext) -> Result<Tags, Stat> {
        let mut words = [0u32; 2];
        let mut i = 0;
        while i < (L2 - ETH_HLEN) / VLAN_HLEN {
            // SAFETY: `header` proved the four bytes lie inside the packet.
            words[i] = unsafe { *header::<u32>(ctx, 12 + i * VLAN_HLEN)? };
            i += 1;
        }
        Ok(Tags(words))
    }
}

/// Writes an `L2`-byte header at the front of the frame: the MACs, `tags`, then
/// `ether_type` (host order). Untagged, exactly the one Ethernet header store it was.
#[inline(always)]
pub fn write_l2<const L2: usize>(
    ctx: &XdpContext,
    src: [u8; 6],
    dst: [u8; 6],
    tags: Tags,
    ether_type: u16,
) -> Result<(), Stat> {
    // SAFETY (all): `header` bounds-checked each store.
    unsafe {
        if L2 == ETH_HLEN {
            *header::<crate::parse::EthHdr>(ctx, 0)? = crate::parse::EthHdr {
                dst,
                src,
                ether_type: ether_type.to_be(),
            };
            return Ok(());
        }
        *header::<[u8; 6]>(ctx, 0)? = dst;
        *header::<[u8; 6]>(ctx, 6)? = src;
        let mut i = 0;
        while i < (L2 - ETH_HLEN) / VLAN_HLEN {
            *header::<u32>(ctx, 12 + i * VLAN_HLEN)? = tags.0[i];
            i += 1;
        }
        *header::<u16>(ctx, L2 - 2)? = ether_type.to_be();
    }
    Ok(())
}
