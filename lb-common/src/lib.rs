//! Types shared by the XDP data plane (`lb-ebpf`) and the control plane (`lb-userspace`).
//!
//! Everything stored in a BPF map is `#[repr(C)]`, `Copy`, free of implicit padding and
//! of `bool`/`Option`/enums with payloads, so both sides agree on every byte and bpftool
//! can print the layout from BTF.
#![no_std]

pub mod service;
pub mod stats;
pub mod vrrp;
pub mod wire;

pub use service::{
    Backend, Config, Conn, ConnTimeoutTicks, DecapKey, FlowKey, ForwardMode, Service, ServiceSlot,
    TxPort, VipAddr, VipKey,
};
pub use stats::{Counter, FlowCounter, Stat};
pub use vrrp::{VrrpKey, VrrpRouter, VrrpSeen};

/// Map names as they appear in the object file, in `bpftool map` and under the pin
/// directory. Kept here so the loader never spells a name differently from the program.
pub mod maps {
    /// Per-CPU global counters, indexed by [`crate::Stat`].
    pub const STATS: &str = "XLB_STATS";
    /// Virtual services: [`crate::VipKey`] → [`crate::Service`].
    pub const SERVICES: &str = "XLB_SERVICES";
    /// Backends by id: `u32` → [`crate::Backend`].
    pub const BACKENDS: &str = "XLB_BACKENDS";
    /// Per-service Maglev tables: array of maps, index = service id, inner = `u32` array
    /// of backend ids. Replacing an inner map is the atomic table swap.
    pub const MAGLEV: &str = "XLB_MAGLEV";
    /// Service by id for established flows: `u32` → [`crate::ServiceSlot`]
    /// (mmapable array, written atomically by userspace).
    pub const SERVICE_SLOTS: &str = "XLB_SVC_SLOTS";
    /// Connection table: [`crate::FlowKey`] → [`crate::Conn`] (LRU).
    pub const CONNS: &str = "XLB_CONNS";
    /// Unconfirmed flows (a SYN, a first datagram): [`crate::FlowKey`] → [`crate::Conn`]
    /// (LRU), promoted to [`CONNS`] by the flow's next packet, so a flood of first
    /// packets turns over only this table (docs/robustness.md). Not pinned: what it
    /// holds is at most one round trip old.
    pub const CONNS_NEW: &str = "XLB_CONNS_NEW";
    /// Per-service counters, per CPU: index = service id → [`crate::FlowCounter`].
    pub const SERVICE_STATS: &str = "XLB_SERVICE_STATS";
    /// Per-backend counters, per CPU: index = backend id → [`crate::FlowCounter`].
    pub const BACKEND_STATS: &str = "XLB_BACKEND_STATS";
    /// "Maybe a VIP" filter: `u8` array indexed by [`crate::service::vip_filter_slot`] of
    /// the destination address; non-zero = some service may use the address.
    pub const VIP_FILTER: &str = "XLB_VIP_FILTER";
    /// Exact set of VIP addresses ([`crate::VipAddr`] → number of services using it,
    /// plus [`crate::service::VIP_STANDBY`] when all of them are standby), for decisions
    /// that have no port (ICMP echo).
    pub const VIPS: &str = "XLB_VIPS";
    /// Egress interfaces of two-arm services (devmap; slot 0 unused = one-arm XDP_TX).
    pub const TX_PORTS: &str = "XLB_TX_PORTS";
    /// Source MAC per egress slot: [`crate::TxPort`].
    pub const TX_MACS: &str = "XLB_TX_MACS";
    /// Global data-plane settings: one [`crate::Config`] at index 0.
    pub const CONFIG: &str = "XLB_CONFIG";
    /// VRRP virtual routers configured by userspace: [`crate::VrrpKey`] →
    /// [`crate::VrrpRouter`], plus one marker key per interface in use
    /// ([`crate::VrrpKey::marker`]).
    pub const VRRP_ROUTERS: &str = "XLB_VRRP_ROUTERS";
    /// Last valid VRRP advert seen by XDP per router: [`crate::VrrpKey`] →
    /// [`crate::VrrpSeen`].
    pub const VRRP_SEEN: &str = "XLB_VRRP_SEEN";
    /// Outer (source, destination) pairs `xlb_decap` unwraps: [`crate::DecapKey`] →
    /// [`crate::service::DECAP_PAIR`], plus one source marker per allowed source.
    pub const DECAP_ALLOW: &str = "XLB_DECAP_ALLOW";
    /// Prefix lengths of `XLB_DECAP_ALLOW`'s sources: `u32` array, IPv4 lengths at
    /// 0..[`crate::limits::MAX_DECAP_LENS`], IPv6 after them, longest first, 0 = end.
    pub const DECAP_LENS: &str = "XLB_DECAP_LENS";
    /// The balancer's copies for 802.1Q-tagged frames, tail-called by `xlb`:
    /// [`crate::service::TAGGED_SLOT_VLAN`] → `xlb_vlan`,
    /// [`crate::service::TAGGED_SLOT_QINQ`] → `xlb_qinq` (program array).
    pub const TAGGED: &str = "XLB_TAGGED";
    /// aya-log's ring buffer; owned by aya-log, named here so the loader can skip pinning it.
    pub const LOGS: &str = "AYA_LOGS";
}

/// Map capacities, shared so the control plane validates against what the program has.
pub mod limits {
    /// Services (`XLB_SERVICES` entries and service slots; id 0 unused).
    pub const MAX_SERVICES: u32 = 1024;
    /// `XLB_MAGLEV` slots: two per service id (`id` and `id + MAX_SERVICES`), so a new
    /// table goes live together with new entry settings (see `Service::table`).
    pub const MAGLEV_SLOTS: u32 = 2 * MAX_SERVICES;
    /// Backends (`XLB_BACKENDS` slots; id 0 unused). Sized with the per-CPU backend
    /// counters in mind: 16384 × 24 bytes × CPUs (24 MiB on 64 CPUs).
    pub const MAX_BACKENDS: u32 = 16384;
    /// Largest Maglev table size M; the inner template has M + 1 slots (slot 0 holds
    /// M). Per-service tables may be smaller (the template carries BPF_F_INNER_MAP).
    pub const MAX_MAGLEV_SIZE: u32 = 65537;
    /// Flags of the Maglev inner-map template and of every table userspace installs:
    /// the kernel refuses an inner map whose flags differ from the template's
    /// (`bpf_map_meta_equal`). `BPF_F_MMAPABLE` lets userspace fill a new table with
    /// one `mmap` and a copy instead of one syscall per slot.
    pub const MAGLEV_INNER_FLAGS: u32 = BPF_F_INNER_MAP | BPF_F_MMAPABLE;
    /// Egress interfaces (devmap slots; 0 unused).
    pub const MAX_TX_PORTS: u32 = 64;
    /// `XLB_TAGGED` slots: one tag, two tags.
    pub const TAGGED_SLOTS: u32 = 2;
    /// Slots of the VIP filter (a power of two).
    pub const VIP_FILTER_SLOTS: u32 = 1 << 16;
    /// Connection-table entries (shared LRU).
    pub const MAX_CONNS: u32 = 262_144;
    /// Unconfirmed-flow entries (`XLB_CONNS_NEW`) in the object; the daemon sizes it
    /// from `conn_table.unconfirmed_entries`.
    pub const MAX_NEW_CONNS: u32 = MAX_CONNS / 4;
    /// `XLB_VRRP_ROUTERS` entries (virtual routers plus one marker per interface) and
    /// `XLB_VRRP_SEEN` entries.
    pub const MAX_VRRP_ROUTERS: u32 = 256;
    /// `XLB_DECAP_ALLOW` entries: (allowed sources) × (local addresses + 1 marker).
    pub const MAX_DECAP_ENTRIES: u32 = 4096;
    /// Allowed outer sources of `xlb decap` (`--allow-source`).
    pub const MAX_DECAP_SOURCES: usize = 64;
    /// Distinct prefix lengths of `--allow-source` per family (`XLB_DECAP_LENS`): each
    /// costs a tunnel packet one more mask and hash probe.
    pub const MAX_DECAP_LENS: u32 = 4;
    /// `BPF_F_INNER_MAP`: inner maps may differ in max_entries from the template.
    pub const BPF_F_INNER_MAP: u32 = 1 << 12;
    /// `BPF_F_MMAPABLE`: an array map userspace can `mmap` (kernel >= 5.5), and so write
    /// with plain or atomic stores.
    pub const BPF_F_MMAPABLE: u32 = 1 << 10;
}

/// Program names (the Rust function names of the `#[xdp]` entry points).
pub mod programs {
    /// The balancer's XDP entry point.
    pub const BALANCER: &str = "xlb";
    /// Backend-side decapsulation of IPIP / IPv6-in-IPv6 (the kernel here has no ipip).
    pub const DECAP: &str = "xlb_decap";
    /// XDP_PASS companion for the receiving peer of a veth (native XDP_TX needs it).
    pub const PASS: &str = "xlb_pass";
    /// The balancer for frames with one 802.1Q tag (tail-called by [`BALANCER`]).
    pub const BALANCER_VLAN: &str = "xlb_vlan";
    /// The balancer for QinQ frames (tail-called by [`BALANCER`]).
    pub const BALANCER_QINQ: &str = "xlb_qinq";
}

/// Default directory under bpffs where maps and the XDP link are pinned.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/xlb";
