//! Global counters: one per-CPU array slot per [`Stat`], each a packets/bytes pair.

/// Index into the per-CPU `XLB_STATS` array. Every exit of the XDP entry point counts
/// exactly one verdict slot; `Rx` counts every packet seen, so
/// `Rx == Pass + Drop + Tx + Redirect + Aborted` always holds.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// Every packet the program saw.
    Rx = 0,
    /// Verdict XDP_PASS: handed to the kernel stack.
    Pass = 1,
    /// Verdict XDP_DROP.
    Drop = 2,
    /// Verdict XDP_TX: sent back out of the receiving interface.
    Tx = 3,
    /// Verdict XDP_REDIRECT.
    Redirect = 4,
    /// Verdict XDP_ABORTED: an internal error (should stay at zero).
    Aborted = 5,
    /// Frames too short to hold an Ethernet header (a subset of Drop).
    Truncated = 6,
}

impl Stat {
    /// Number of slots in the stats array.
    pub const COUNT: u32 = 7;

    /// Every slot, in index order, for userspace iteration.
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::Rx,
        Stat::Pass,
        Stat::Drop,
        Stat::Tx,
        Stat::Redirect,
        Stat::Aborted,
        Stat::Truncated,
    ];

    /// Stable lower-case name used by the CLI, JSON output and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Stat::Rx => "rx",
            Stat::Pass => "pass",
            Stat::Drop => "drop",
            Stat::Tx => "tx",
            Stat::Redirect => "redirect",
            Stat::Aborted => "aborted",
            Stat::Truncated => "truncated",
        }
    }
}

/// One counter slot. Per CPU in the map; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted: the frame length as XDP saw it (L2 header included, no FCS).
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: two u64 fields, repr(C), no padding; any bit pattern is valid.
unsafe impl aya::Pod for Counter {}

impl Counter {
    /// Adds another counter (userspace summing of per-CPU values).
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}
