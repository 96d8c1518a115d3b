//! The data-plane port: every operation the control plane performs on the data plane,
//! named once in [`DataPlane`], with two implementations.
//!
//! - [`aya`]: the kernel. Loads, pins and attaches the XDP object and writes its maps;
//!   the only code in the control plane that sees `aya::Ebpf`.
//! - [`memory`]: an in-process model of the same tables, so the balancing logic above
//!   (id allocation, apply ordering, reload, health transitions, VRRP standby) is tested
//!   in `cargo test` without root, a kernel or namespaces, and a packet model can decide
//!   packets against what the control plane wrote.
//!
//! The operations carry the data plane's own record types (`lb_common`); what they mean
//! (order, atomicity) is documented on each method and holds for both implementations.
//! [`addr`] converts addresses to and from the data plane's representation.

pub mod addr;
pub mod aya;
pub mod counters;
pub mod decap;
mod lru;
pub mod memory;
pub mod netdev;
pub mod prefix;

use std::path::PathBuf;

pub use lru::{unconfirmed_for, LruKind};

use lb_common::{Backend, Config, Service, VipKey, VrrpKey, VrrpRouter, VrrpSeen};

pub use self::counters::{BackendStats, GlobalStats, ServiceStats};

/// Why a data-plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A map operation of the kernel data plane.
    #[error(transparent)]
    Maps(#[from] aya::maps::MapsError),
    /// Loading, attaching or detaching the kernel data plane.
    #[error(transparent)]
    Load(#[from] Box<aya::loader::LoadError>),
    /// The operation was refused (an id out of range, a fault a test injected).
    #[error("{op}: {reason}")]
    Refused { op: &'static str, reason: String },
}

/// The connection table's size and use, for `xlb status` and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnTableUse {
    /// Entries it holds before the least recently used are evicted.
    pub capacity: u32,
    /// Its eviction lists: one shared, or one per CPU (both tables have the same).
    pub lru: LruKind,
    /// Kernel memory charged to it, where the kernel says.
    pub memory_bytes: Option<u64>,
    /// Flows at the last count (`None` before the first), and how long ago that was.
    pub flows: Option<u64>,
    pub counted_age: Option<std::time::Duration>,
    /// Expired entries deleted by the fill count's walks since the daemon started.
    pub expired: Option<u64>,
    /// The unconfirmed table (`XLB_CONNS_NEW`): its entries and kernel memory.
    pub unconfirmed_capacity: u32,
    pub unconfirmed_memory_bytes: Option<u64>,
}

/// How to attach an XDP program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode: works on every interface, slower.
    Generic,
}

/// The mode a program ended up attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Generic,
    /// An earlier daemon's link was taken over as it was.
    Adopted,
}

/// One attached program, with its link pinned at `pin_path`.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub program: &'static str,
    pub mode: AttachedMode,
    pub pin_path: PathBuf,
    /// An earlier daemon's pinned link was taken over (program replaced atomically on
    /// the live link: no moment without XDP on the interface).
    pub adopted: bool,
}

/// Everything the control plane does to a data plane.
///
/// The one rule every caller relies on: a packet never sees a half-built table. A
/// Maglev table goes live whole ([`DataPlane::swap_tables`]); a service entry is only
/// written once its table is live; a backend record is written before any table names
/// it and cleared only after no table does.
pub trait DataPlane {
    /// Writes the global settings (encapsulation sources, GUE port).
    fn set_config(&mut self, config: &Config) -> Result<(), PortError>;

    /// Writes backend `id` (1..MAX_BACKENDS): its address and next-hop MAC.
    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), PortError>;

    /// Marks backend `id` unused: flows pinned to it pick a new backend on their next
    /// packet.
    fn clear_backend(&mut self, id: u32) -> Result<(), PortError> {
        self.set_backend(id, &Backend::default())
    }

    /// Makes each `(table slot, table)` live, each table whole (a packet reads either
    /// the old table or the new one, never a mix), in as few kernel waits as possible.
    /// A service reads the slot its entry names (`Service::table_slot`).
    fn swap_tables(&mut self, tables: &[(u32, Vec<u32>)]) -> Result<(), PortError>;

    /// Replaces the tables in `slots` (no entry names them any more) with an empty one,
    /// freeing their memory; like [`DataPlane::swap_tables`] it returns once no packet
    /// can still be reading them (one RCU grace period per batch in the kernel).
    fn retire_tables(&mut self, slots: &[u32]) -> Result<(), PortError> {
        let empty: Vec<(u32, Vec<u32>)> = slots.iter().map(|s| (*s, vec![0])).collect();
        self.swap_tables(&empty)
    }

    /// Adds or replaces a service entry (its table must already be live); the VIP
    /// filter and VIP set follow. Same key and id keep the service's established flows;
    /// an id given to another service starts a new slot generation, orphaning the old
    /// service's connection entries.
    fn set_service(&mut self, key: &VipKey, service: &Service) -> Result<(), PortError>;

    /// Removes a service entry; its traffic is passed to the stack from then on.
    fn remove_service(&mut self, key: &VipKey) -> Result<(), PortError>;

    /// Points egress slot `slot` (two-arm services) at interface `ifindex`, whose MAC
    /// becomes the source of frames sent there.
    fn set_tx_port(&mut self, slot: u32, ifindex: u32, mac: [u8; 6]) -> Result<(), PortError>;

    /// Deletes every connection entry that points at one of backends `ids` (call once
    /// no table names them), so the ids can be reused; returns how many went. One walk
    /// of the connection table for all of them, however many.
    fn forget_backend_flows(&mut self, ids: &[u32]) -> Result<usize, PortError>;

    /// Configures (or replaces) VRRP router `key` for XDP, marking its interface.
    fn set_vrrp_router(&mut self, key: &VrrpKey, router: &VrrpRouter) -> Result<(), PortError>;

    /// Removes VRRP router `key` and what XDP saw of it; the interface marker goes with
    /// the interface's last router.
    fn remove_vrrp_router(&mut self, key: &VrrpKey) -> Result<(), PortError>;

    /// The last valid advert XDP saw per virtual router.
    fn vrrp_seen(&self) -> Result<Vec<(VrrpKey, VrrpSeen)>, PortError>;

    /// Replaces what the decap program may unwrap (`XLB_DECAP_ALLOW`, `XLB_DECAP_LENS`)
    /// with `allow` ([`decap::allowlist`]): new pairs are added, then the prefix lengths
    /// written, then stale pairs removed, so a pair in both the old and the new list
    /// (whose length is in both) is never refused in between.
    fn set_decap_allowed(&mut self, allow: &decap::DecapAllow) -> Result<(), PortError>;

    /// Global counters, summed over CPUs.
    fn global_stats(&self) -> Result<GlobalStats, PortError>;

    /// Every installed service (sorted by id) and live backend, with their counters:
    /// what an earlier daemon left behind (adoption) and what the views show.
    fn flows(&self) -> Result<(Vec<ServiceStats>, Vec<BackendStats>), PortError>;

    /// Attaches `program` to `iface` (adopting a link an earlier daemon left).
    fn attach(
        &mut self,
        program: &'static str,
        iface: &str,
        mode: AttachMode,
    ) -> Result<Attachment, PortError>;

    /// Detaches every program and removes everything pinned: the data plane is gone.
    fn detach_all(&mut self) -> Result<(), PortError>;

    /// The connection table's size, memory and fill.
    fn conn_table(&self) -> Result<ConnTableUse, PortError>;
}

/// Whether XDP can use this VRRP router record: a real VRID (not the interface marker),
/// AF_INET/AF_INET6, version 3 (or 2 over IPv4), and a prebuilt advert frame of
/// 14..=VRRP_FRAME_MAX bytes, or none (0: XDP records the peer's adverts for the
/// election but never answers, as for unicast peers). Both ports refuse anything else.
pub fn vrrp_router_is_valid(key: &VrrpKey, router: &VrrpRouter) -> bool {
    use lb_common::service::{AF_INET, AF_INET6};
    let v2_ok = router.version == 2 && key.family == AF_INET;
    !key.is_marker()
        && key.vrid != 0
        && matches!(key.family, AF_INET | AF_INET6)
        && (v2_ok || router.version == 3)
        && (router.frame_len == 0
            || (14..=lb_common::vrrp::VRRP_FRAME_MAX).contains(&usize::from(router.frame_len)))
}
