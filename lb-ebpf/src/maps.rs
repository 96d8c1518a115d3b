//! The balancer's maps (all BTF-defined, so bpftool prints field names). Names and sizes
//! come from `lb_common` so the control plane can never disagree with the program.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, DevMap, HashMap, LruHashMap, ProgramArray},
    macros::btf_map,
};
use lb_common::{
    limits::{
        BPF_F_MMAPABLE, MAGLEV_INNER_FLAGS, MAGLEV_SLOTS, MAX_BACKENDS, MAX_CONNS,
        MAX_DECAP_ENTRIES, MAX_DECAP_LENS, MAX_MAGLEV_SIZE, MAX_NEW_CONNS, MAX_SERVICES,
        MAX_TX_PORTS, MAX_VRRP_ROUTERS, TAGGED_SLOTS, VIP_FILTER_SLOTS,
    },
    Backend, Config, Conn, DecapKey, FlowKey, Service, ServiceSlot, TxPort, VipAddr, VipKey,
    VrrpKey, VrrpRouter, VrrpSeen,
};

#[btf_map]
pub static XLB_SERVICES: HashMap<VipKey, Service, { MAX_SERVICES as usize }> = HashMap::new();

/// Direct-indexed "maybe a VIP" filter in front of the service hash: an array lookup is
/// inlined by the verifier into a bounds check and a load, so traffic to non-VIP
/// addresses (most of what an edge host sees) skips both hash lookups.
#[btf_map]
pub static XLB_VIP_FILTER: Array<u8, { VIP_FILTER_SLOTS as usize }> = Array::new();

/// Exact VIP addresses (value: number of services on the address).
#[btf_map]
pub static XLB_VIPS: HashMap<VipAddr, u32, { MAX_SERVICES as usize }> = HashMap::new();

/// `XLB_SERVICES` by id, for flows found in the connection table (see
/// [`ServiceSlot`]). Mmapable so userspace writes a slot with one atomic store; an array
/// lookup is inlined by the verifier, unlike a hash lookup.
#[btf_map]
pub static XLB_SVC_SLOTS: Array<
    ServiceSlot,
    { MAX_SERVICES as usize },
    { BPF_F_MMAPABLE as usize },
> = Array::new();

/// Mmapable so userspace replaces a backend's family+MAC word with one atomic store
/// (see [`Backend::HOP_WORD_OFFSET`]).
#[btf_map]
pub static XLB_BACKENDS: Array<Backend, { MAX_BACKENDS as usize }, { BPF_F_MMAPABLE as usize }> =
    Array::new();

/// Template inner map: slot 0 = M, slots 1..=M = backend ids (see lb_common). Its flags
/// are the ones every installed table must carry (mmapable: userspace fills it by copy).
pub type MaglevTable =
    Array<u32, { MAX_MAGLEV_SIZE as usize + 1 }, { MAGLEV_INNER_FLAGS as usize }>;

#[btf_map]
pub static XLB_MAGLEV: ArrayOfMaps<MaglevTable, { MAGLEV_SLOTS as usize }> = ArrayOfMaps::new();

/// One hash for all CPUs, not one table per CPU (Katran's array of per-CPU LRUs), because:
/// - correctness: a flow's packets can arrive on different CPUs (RSS re-steering, veth
///   and XDP_TX paths); a per-CPU table would pick a backend again on each CPU, and
///   after a table change could split one connection across backends;
/// - memory: an entry costs 128 bytes (40-byte key, 24-byte value,
///   element and LRU node): `bpftool map show` reports memlock 33,555,328 B for 262,144
///   flows. Per-CPU tables need that per CPU for the same capacity (2 GB on 64 CPUs) or
///   divide the capacity by the CPU count.
///
/// Its eviction lists are configured (`conn_table.lru`): one shared (declared here) or
/// one per CPU (`BPF_F_NO_COMMON_LRU`; userspace then creates this map and the next one
/// before the load, and the loader reuses them by pin path). On two CPUs per-CPU lists
/// are never faster, for established or new flows: the shared list's per-CPU free lists
/// already keep most inserts off its lock (docs/maps.md, `cargo xtask bench lru`); and
/// the shared one keeps the whole capacity for whichever CPU needs it.
#[btf_map]
pub static XLB_CONNS: LruHashMap<FlowKey, Conn, { MAX_CONNS as usize }> = LruHashMap::new();

/// Flows seen once (a SYN, a first datagram, a mid-flow packet of a flow this host
/// has no entry for): their Maglev choice waits here for the flow's next packet,
/// which moves it into `XLB_CONNS`. A flood of spoofed first packets therefore only
/// turns this table over, never the confirmed flows (docs/robustness.md).
#[btf_map]
pub static XLB_CONNS_NEW: LruHashMap<FlowKey, Conn, { MAX_NEW_CONNS as usize }> = LruHashMap::new();

#[btf_map]
pub static XLB_CONFIG: Array<Config, 1> = Array::new();

/// Egress interfaces of two-arm services.
#[btf_map]
pub static XLB_TX_PORTS: DevMap<{ MAX_TX_PORTS as usize }> = DevMap::new();

/// Source MAC per egress slot.
#[btf_map]
pub static XLB_TX_MACS: Array<TxPort, { MAX_TX_PORTS as usize }> = Array::new();

/// VRRP virtual routers (written by userspace) plus one marker key per interface that
/// runs VRRP (`VrrpKey::marker`): see docs/vrrp-xdp.md.
#[btf_map]
pub static XLB_VRRP_ROUTERS: HashMap<VrrpKey, VrrpRouter, { MAX_VRRP_ROUTERS as usize }> =
    HashMap::new();

/// Last valid advert per virtual router (written by XDP, read by the election).
#[btf_map]
pub static XLB_VRRP_SEEN: HashMap<VrrpKey, VrrpSeen, { MAX_VRRP_ROUTERS as usize }> =
    HashMap::new();

/// Outer (source, destination) pairs `xlb_decap` unwraps, plus one marker per allowed
/// source (see [`DecapKey`]); written by `xlb decap`.
#[btf_map]
pub static XLB_DECAP_ALLOW: HashMap<DecapKey, u32, { MAX_DECAP_ENTRIES as usize }> = HashMap::new();

/// Prefix lengths of `XLB_DECAP_ALLOW`'s sources per family (IPv4 slots first, longest
/// first, 0 ends a family's list): `xlb_decap` masks a tunnel packet's outer source with
/// each and probes the pair, so `--allow-source` may name a balancer's whole entropy
/// prefix. An array, so each length costs an inlined load.
#[btf_map]
pub static XLB_DECAP_LENS: Array<u32, { 2 * MAX_DECAP_LENS as usize }> = Array::new();

/// The balancer's copies for tagged frames (`xlb_vlan`, `xlb_qinq`, see `crate::vlan`),
/// tail-called by `xlb`; installed by the control plane after it loads them.
#[btf_map]
pub static XLB_TAGGED: ProgramArray<{ TAGGED_SLOTS as usize }> = ProgramArray::new();
