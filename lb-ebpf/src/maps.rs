//! The balancer's maps (all BTF-defined, so bpftool prints field names). Names and sizes
//! come from `lb_common` so the control plane can never disagree with the program.

use aya_ebpf::{
    btf_maps::{Array, ArrayOfMaps, DevMap, HashMap, LruHashMap},
    macros::btf_map,
};
use lb_common::{
    limits::{
        BPF_F_INNER_MAP, MAX_BACKENDS, MAX_CONNS, MAX_MAGLEV_SIZE, MAX_SERVICES, MAX_TX_PORTS,
        VIP_FILTER_SLOTS,
    },
    Backend, Config, Conn, FlowKey, Service, TxPort, VipAddr, VipKey,
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

#[btf_map]
pub static XLB_BACKENDS: Array<Backend, { MAX_BACKENDS as usize }> = Array::new();

/// Template inner map: slot 0 = M, slots 1..=M = backend ids (see lb_common).
pub type MaglevTable = Array<u32, { MAX_MAGLEV_SIZE as usize + 1 }, { BPF_F_INNER_MAP as usize }>;

#[btf_map]
pub static XLB_MAGLEV: ArrayOfMaps<MaglevTable, { MAX_SERVICES as usize }> = ArrayOfMaps::new();

/// One LRU shared by all CPUs rather than per-CPU LRUs: a flow's packets can arrive on
/// different CPUs (RSS changes, veth/XDP_TX paths), and a per-CPU table would then pick a
/// backend again on each CPU; shared-LRU lookups cost one hash probe either way.
#[btf_map]
pub static XLB_CONNS: LruHashMap<FlowKey, Conn, { MAX_CONNS as usize }> = LruHashMap::new();

#[btf_map]
pub static XLB_CONFIG: Array<Config, 1> = Array::new();

/// Egress interfaces of two-arm services.
#[btf_map]
pub static XLB_TX_PORTS: DevMap<{ MAX_TX_PORTS as usize }> = DevMap::new();

/// Source MAC per egress slot.
#[btf_map]
pub static XLB_TX_MACS: Array<TxPort, { MAX_TX_PORTS as usize }> = Array::new();
