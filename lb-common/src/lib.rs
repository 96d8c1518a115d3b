//! Types shared by the XDP data plane (`lb-ebpf`) and the control plane (`lb-userspace`).
//!
//! Everything stored in a BPF map is `#[repr(C)]`, `Copy`, free of implicit padding and
//! of `bool`/`Option`/enums with payloads, so both sides agree on every byte and bpftool
//! can print the layout from BTF.
#![no_std]

pub mod stats;

pub use stats::{Counter, Stat};

/// Map names as they appear in the object file, in `bpftool map` and under the pin
/// directory. Kept here so the loader never spells a name differently from the program.
pub mod maps {
    /// Per-CPU global counters, indexed by [`crate::Stat`].
    pub const STATS: &str = "XLB_STATS";
    /// aya-log's ring buffer; owned by aya-log, named here so the loader can skip pinning it.
    pub const LOGS: &str = "AYA_LOGS";
}

/// Program names (the Rust function names of the `#[xdp]` entry points).
pub mod programs {
    /// The balancer's XDP entry point.
    pub const BALANCER: &str = "xlb";
    /// XDP_PASS companion for the receiving peer of a veth (native XDP_TX needs it).
    pub const PASS: &str = "xlb_pass";
}

/// Default directory under bpffs where maps and the XDP link are pinned.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xlb";
