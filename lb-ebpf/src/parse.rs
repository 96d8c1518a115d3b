//! Bounds-checked header access. Every read goes through [`header`], which proves to the
//! verifier that the whole header lies inside the packet.

use aya_ebpf::programs::XdpContext;

/// Why a packet could not be parsed; each maps to a verdict and a drop-reason counter.
#[derive(Clone, Copy)]
pub enum ParseError {
    /// The packet ends before the header being read.
    Truncated,
}

/// Ethernet II header as it sits on the wire (`ether_type` in network byte order).
#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ether_type: u16,
}

/// Returns a pointer to a `T` at `offset` bytes into the packet, or `Truncated` when the
/// packet is too short to hold it.
#[inline(always)]
pub fn header<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, ParseError> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(ParseError::Truncated);
    }
    Ok((start + offset) as *const T)
}

/// The Ethernet header at the start of the frame.
#[inline(always)]
pub fn ethernet(ctx: &XdpContext) -> Result<&EthHdr, ParseError> {
    // SAFETY: `header` checked that the header lies within [data, data_end).
    header::<EthHdr>(ctx, 0).map(|p| unsafe { &*p })
}
