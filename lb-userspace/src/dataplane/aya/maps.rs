//! Typed writes to the balancer's maps. The one rule: a packet never sees a half-built
//! table. A Maglev table is built completely in a fresh inner map and made live by one
//! `bpf_map_update_elem` on `XLB_MAGLEV` (map-in-map replacement): the kernel swaps the
//! pointer atomically and frees the old table after an RCU grace period, so packets in
//! flight keep reading the old table whole. (Double-buffering with a generation flip
//! would need userspace to know when no packet still reads the old half before reusing
//! it; map replacement gets that guarantee from the kernel.)

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::Ordering,
};

use aya::{
    maps::{Array, ArrayOfMaps, DevMap, HashMap, IterableMap as _, MapData, MapError},
    Ebpf,
};
use lb_common::{
    limits::{
        BPF_F_INNER_MAP, MAGLEV_INNER_FLAGS, MAGLEV_SLOTS, MAX_BACKENDS, MAX_MAGLEV_SIZE,
        MAX_SERVICES,
    },
    maps,
    service::{service_flags, vip_filter_slot, MAGLEV_SIZE_SLOT, VIP_STANDBY},
    vrrp::VRRP_FRAME_MAX,
    Backend, Config, Conn, DecapKey, FlowKey, Service, ServiceSlot, TxPort, VipAddr, VipKey,
    VrrpKey, VrrpRouter, VrrpSeen,
};

use super::mmap::Mapping;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {0} is missing from the loaded object")]
    Missing(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("service id {0} is out of range 1..{MAX_SERVICES}")]
    ServiceId(u32),
    #[error("table slot {0} is out of range 1..{MAGLEV_SLOTS}")]
    TableSlot(u32),
    #[error("backend id {0} is out of range 1..{MAX_BACKENDS}")]
    BackendId(u32),
    #[error("table of {0} entries: must be 1..={MAX_MAGLEV_SIZE}")]
    TableSize(usize),
    #[error("mmap of {len} bytes of a map")]
    Mmap {
        len: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("new Maglev table: slot {slot} reads {read} after the copy wrote {wrote} (array layout not as expected)")]
    TableLayout { slot: u32, wrote: u32, read: u32 },
    #[error("batch update of {name}")]
    Batch {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("VRRP router {0:?}: VRID must be 1..=255, family AF_INET/AF_INET6, version 2 (IPv4) or 3, frame 0 or 14..={VRRP_FRAME_MAX} bytes")]
    VrrpRouter(VrrpKey),
    #[error("egress slot {slot} -> ifindex {ifindex}: {error}")]
    TxPort {
        slot: u32,
        ifindex: u32,
        error: String,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

/// Writes backend `id` (its address and next-hop MAC).
pub fn set_backend(ebpf: &mut Ebpf, id: u32, backend: &Backend) -> Result<(), MapsError> {
    if id == 0 || id >= MAX_BACKENDS {
        return Err(MapsError::BackendId(id));
    }
    // Written through a mapping of the array, so the word packets decide by (family
    // and next-hop MAC, one 8-byte load in the program) changes with one atomic store:
    // a learned MAC that changes under traffic is never seen half old, half new. The
    // address is written first while the record is unused, and never changes while it
    // is live (ids are stable per address).
    let len = MAX_BACKENDS as usize * size_of::<Backend>();
    let mut mapped = map_array(ebpf, maps::BACKENDS, len)?;
    let base = id as usize * size_of::<Backend>();
    let word_index = (base + Backend::HOP_WORD_OFFSET) / size_of::<u64>();
    let addr_index = base / size_of::<u32>();
    let hop_word = backend.hop_word();
    if backend.family != 0 {
        mapped.words()[addr_index..addr_index + 4].copy_from_slice(&backend.addr);
    }
    mapped
        .u64_at(word_index)
        .ok_or(MapsError::BackendId(id))?
        .store(hop_word, Ordering::Release);
    if backend.family == 0 {
        mapped.words()[addr_index..addr_index + 4].copy_from_slice(&backend.addr);
    }
    Ok(())
}

/// Marks backend `id` unused: flows pinned to it pick a new backend on their next packet.
pub fn clear_backend(ebpf: &mut Ebpf, id: u32) -> Result<(), MapsError> {
    set_backend(ebpf, id, &Backend::default())
}

/// Builds `table` (backend ids, length M) in a new inner map and swaps it in as
/// table slot `slot` (a service id, or id + MAX_SERVICES) in one map operation.
///
/// An `XLB_MAGLEV` pinned by an xlb from before mmapable tables has a template without
/// `BPF_F_MMAPABLE`, and the kernel refuses an inner map whose flags differ from the
/// template's (EINVAL): the table is then built again with the old flags (filled by
/// `BPF_MAP_UPDATE_BATCH`), so an upgraded daemon that adopts such pins keeps working.
pub fn swap_table(ebpf: &mut Ebpf, slot: u32, table: &[u32]) -> Result<(), MapsError> {
    let inner = build_table(table)?;
    match install_table(ebpf, slot, &inner) {
        Err(e) if is_einval(&e) => {
            drop(inner);
            let legacy = build_legacy_table(table)?;
            install_table(ebpf, slot, &legacy).map_err(|_| e)
        }
        other => other,
    }
}

/// Tables made live per `BPF_MAP_UPDATE_BATCH` in [`swap_tables`]: each batch costs one
/// RCU grace period (~10 ms) instead of one per table, while the new tables of a batch
/// (512 KiB each at M = 65537) are held at once, next to the old ones still live.
const TABLES_PER_BATCH: usize = 64;

/// [`swap_table`] for many services (a reload, a start with a big config): every table
/// of a batch is built first, then the batch goes live with one
/// `BPF_MAP_UPDATE_BATCH` on `XLB_MAGLEV`. The kernel replaces one inner-map pointer per
/// service, as for a single swap, so each table still goes live whole; it then waits
/// one RCU grace period for the whole batch rather than one per table. If the batch is
/// refused (an `XLB_MAGLEV` pinned with an old template: EINVAL), the tables are
/// swapped one by one with [`swap_table`]'s fallback.
pub fn swap_tables(ebpf: &mut Ebpf, tables: &[(u32, Vec<u32>)]) -> Result<(), MapsError> {
    for chunk in tables.chunks(TABLES_PER_BATCH) {
        if let Some(&(bad, _)) = chunk
            .iter()
            .find(|(slot, _)| *slot == 0 || *slot >= MAGLEV_SLOTS)
        {
            return Err(MapsError::TableSlot(bad));
        }
        let built = chunk
            .iter()
            .map(|(_, table)| build_table(table))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<u32> = chunk.iter().map(|(id, _)| *id).collect();
        let fds: Vec<u32> = built
            .iter()
            .map(|inner| inner.map().fd().as_fd().as_raw_fd() as u32)
            .collect();
        let outer = match ebpf.map(maps::MAGLEV) {
            Some(aya::maps::Map::ArrayOfMaps(data)) => data,
            _ => return Err(MapsError::Missing(maps::MAGLEV)),
        };
        if update_batch(outer, &ids, &fds).is_err() {
            // Part of the batch may be live already: swapping every table again leaves
            // each service with its new table either way.
            drop(built);
            for (id, table) in chunk {
                swap_table(ebpf, *id, table)?;
            }
        }
    }
    Ok(())
}

const INNER_TABLE: &str = "maglev inner table";

// Both builders write M first and the backend ids after it.
const _: () = assert!(MAGLEV_SIZE_SLOT == 0);

/// Bytes between two `u32` slots in an array map's memory: the kernel stores values
/// 8-byte aligned (kernel/bpf/arraymap.c: `elem_size = round_up(value_size, 8)`), so
/// the mmapped view has 4 bytes of padding after every slot.
const ARRAY_SLOT_STRIDE: usize = size_of::<u32>().next_multiple_of(8);

/// A complete, not yet live Maglev table: slot 0 = M, slots 1..=M = `table`.
///
/// The new inner map is mmapable ([`MAGLEV_INNER_FLAGS`]), so it is filled with one
/// `mmap` and a copy: about 0.25 ms for M = 65537, most of it creating and mapping the
/// 512 KiB map, against 47-60 ms for one `bpf_map_update_elem` per slot
/// (docs/benchmarks.md). No packet can read it before [`install_table`]: that syscall
/// publishes it, after the copy is complete and unmapped.
pub fn build_table(table: &[u32]) -> Result<Array<MapData, u32>, MapsError> {
    let m = table_size(table)?;
    let inner: Array<MapData, u32> =
        Array::create(m + 1, MAGLEV_INNER_FLAGS).map_err(map_err(INNER_TABLE))?;
    {
        let bytes = (m as usize + 1) * ARRAY_SLOT_STRIDE;
        let mut mapping = Mapping::new(inner.map().fd().as_fd(), bytes)
            .map_err(|source| MapsError::Mmap { len: bytes, source })?;
        let words = mapping.words();
        let slots = words.chunks_exact_mut(ARRAY_SLOT_STRIDE / size_of::<u32>());
        for (slot, &value) in slots.zip(std::iter::once(&m).chain(table)) {
            slot[0] = value;
        }
    }
    // The copy relies on the kernel's array layout; one lookup of the last slot through
    // the syscall proves stride and length still agree with it.
    let last = inner.get(&m, 0).map_err(map_err(INNER_TABLE))?;
    if last != table[table.len() - 1] {
        return Err(MapsError::TableLayout {
            slot: m,
            wrote: table[table.len() - 1],
            read: last,
        });
    }
    Ok(inner)
}

/// [`build_table`] for an `XLB_MAGLEV` whose template predates `BPF_F_MMAPABLE`
/// (flags [`BPF_F_INNER_MAP`] only): filled with one `BPF_MAP_UPDATE_BATCH`, the next
/// fastest way to write a whole array (the kernel still updates slot by slot, but
/// without a syscall per slot).
pub fn build_legacy_table(table: &[u32]) -> Result<Array<MapData, u32>, MapsError> {
    let m = table_size(table)?;
    let inner: Array<MapData, u32> =
        Array::create(m + 1, BPF_F_INNER_MAP).map_err(map_err(INNER_TABLE))?;
    let keys: Vec<u32> = (0..=m).collect();
    let values: Vec<u32> = std::iter::once(m).chain(table.iter().copied()).collect();
    update_batch(inner.map(), &keys, &values).map_err(|source| MapsError::Batch {
        name: INNER_TABLE,
        source,
    })?;
    Ok(inner)
}

fn table_size(table: &[u32]) -> Result<u32, MapsError> {
    if table.is_empty() || table.len() > MAX_MAGLEV_SIZE as usize {
        return Err(MapsError::TableSize(table.len()));
    }
    Ok(table.len() as u32)
}

fn is_einval(e: &MapsError) -> bool {
    matches!(e, MapsError::Map { source: MapError::SyscallError(s), .. }
        if s.io_error.raw_os_error() == Some(libc::EINVAL))
}

/// Batch command numbers (`enum bpf_cmd`); aya 0.14 wraps neither.
pub const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
pub const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr` (kernel ABI, include/uapi/linux/bpf.h), for
/// the batch commands.
#[repr(C)]
#[derive(Default)]
pub struct BatchAttr {
    pub in_batch: u64,
    pub out_batch: u64,
    pub keys: u64,
    pub values: u64,
    pub count: u32,
    pub map_fd: u32,
    pub elem_flags: u64,
    pub flags: u64,
}

/// Writes `values[i]` at `keys[i]` for every i in one syscall.
fn update_batch(map: &MapData, keys: &[u32], values: &[u32]) -> std::io::Result<()> {
    assert_eq!(keys.len(), values.len());
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len() as u32,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: attr is a correctly sized, initialised bpf_attr prefix; keys and values
    // are `count` u32 each (the map's key and value size) and outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if attr.count as usize != keys.len() {
        return Err(std::io::Error::other(format!(
            "batch update wrote {} of {} slots",
            attr.count,
            keys.len()
        )));
    }
    Ok(())
}

/// Makes a built table live for `slot`: one `bpf_map_update_elem` on the outer map.
/// The pointer swap is immediate (packets read the new table from then on); the call
/// returns after an RCU grace period, when no packet can still be reading the old one.
pub fn install_table(
    ebpf: &mut Ebpf,
    slot: u32,
    inner: &Array<MapData, u32>,
) -> Result<(), MapsError> {
    if slot == 0 || slot >= MAGLEV_SLOTS {
        return Err(MapsError::TableSlot(slot));
    }
    let mut outer: ArrayOfMaps<&mut MapData, Array<MapData, u32>> = ArrayOfMaps::try_from(
        ebpf.map_mut(maps::MAGLEV)
            .ok_or(MapsError::Missing(maps::MAGLEV))?,
    )
    .map_err(map_err(maps::MAGLEV))?;
    outer.set(slot, inner, 0).map_err(map_err(maps::MAGLEV))
}

/// Adds or replaces a service entry. Install its table first ([`swap_table`]) so no
/// packet finds a service without one. The VIP is marked in the VIP filter and the VIP
/// set first, so neither ever hides a live service; the VIP set's standby bit
/// ([`VIP_STANDBY`]) then follows the services on the address.
pub fn set_service(ebpf: &mut Ebpf, key: &VipKey, service: &Service) -> Result<(), MapsError> {
    if service.id == 0 || service.id >= MAX_SERVICES {
        return Err(MapsError::ServiceId(service.id));
    }
    let standby = service.flags & service_flags::STANDBY != 0;
    set_vip_filter(ebpf, &key.addr, true)?;
    if vips(ebpf)?.get(&vip_addr(key), 0).is_err() {
        // A new address: present before its first service, in that service's state.
        mark_vip(ebpf, key, 1 | if standby { VIP_STANDBY } else { 0 })?;
    }
    let same = services(ebpf)?
        .get(key, 0)
        .is_ok_and(|old| old.id == service.id);
    // The slot before the entry: a flow pinned under this service must find it.
    update_service_slot(ebpf, service.id, |slot| {
        // Same key, same id: the same service, whose established flows must keep it.
        // Otherwise the id now means another service: a new generation orphans the
        // connection entries of the id's previous service.
        let generation = if same && slot.is_live() {
            slot.generation()
        } else {
            slot.generation().wrapping_add(1).max(1)
        };
        ServiceSlot::new(generation, service)
    })?;
    services(ebpf)?
        .insert(key, service, 0)
        .map_err(map_err(maps::SERVICES))?;
    sync_vip(ebpf, key)
}

/// Removes a service entry; its traffic is passed to the stack from then on. The VIP
/// leaves the VIP set and filter once no remaining service uses it.
pub fn remove_service(ebpf: &mut Ebpf, key: &VipKey) -> Result<(), MapsError> {
    let mut services = services(ebpf)?;
    let id = services.get(key, 0).map_err(map_err(maps::SERVICES))?.id;
    services.remove(key).map_err(map_err(maps::SERVICES))?;
    update_service_slot(ebpf, id, ServiceSlot::retired)?;
    sync_vip(ebpf, key)
}

/// A writable mapping of the first `len` bytes of the mmapable array `name`.
fn map_array(ebpf: &Ebpf, name: &'static str, len: usize) -> Result<Mapping, MapsError> {
    let map = match ebpf.map(name).ok_or(MapsError::Missing(name))? {
        aya::maps::Map::Array(data) => data,
        _ => {
            return Err(MapsError::Map {
                name,
                source: MapError::InvalidMapType { map_type: 0 },
            })
        }
    };
    Mapping::new(map.fd().as_fd(), len).map_err(|source| MapsError::Mmap { len, source })
}

/// Replaces service `id`'s slot in `XLB_SVC_SLOTS` with `f(current)`, as one atomic
/// store through an mmap of the array (see [`ServiceSlot`]).
fn update_service_slot(
    ebpf: &Ebpf,
    id: u32,
    f: impl FnOnce(ServiceSlot) -> ServiceSlot,
) -> Result<(), MapsError> {
    let len = MAX_SERVICES as usize * size_of::<u64>();
    let mapped = map_array(ebpf, maps::SERVICE_SLOTS, len)?;
    let word = mapped
        .u64_at(id as usize)
        .filter(|_| id < MAX_SERVICES)
        .ok_or(MapsError::ServiceId(id))?;
    // The daemon is the only writer, so load-then-store races with nobody.
    let current = ServiceSlot(word.load(Ordering::Acquire));
    word.store(f(current).0, Ordering::Release);
    Ok(())
}

fn services(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, VipKey, Service>, MapsError> {
    HashMap::try_from(
        ebpf.map_mut(maps::SERVICES)
            .ok_or(MapsError::Missing(maps::SERVICES))?,
    )
    .map_err(map_err(maps::SERVICES))
}

fn vips(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, VipAddr, u32>, MapsError> {
    HashMap::try_from(
        ebpf.map_mut(maps::VIPS)
            .ok_or(MapsError::Missing(maps::VIPS))?,
    )
    .map_err(map_err(maps::VIPS))
}

fn vip_addr(key: &VipKey) -> VipAddr {
    VipAddr {
        addr: key.addr,
        family: key.family,
        _pad: [0; 3],
    }
}

/// Recounts the services on `key`'s address and updates the VIP set (count, and
/// [`VIP_STANDBY`] when every one of them is standby) and filter.
fn sync_vip(ebpf: &mut Ebpf, key: &VipKey) -> Result<(), MapsError> {
    let slot = vip_filter_slot(&key.addr);
    let (mut same_addr, mut active, mut same_slot) = (0u32, false, false);
    for (k, svc) in services(ebpf)?.iter().filter_map(Result::ok) {
        if k.addr == key.addr && k.family == key.family {
            same_addr += 1;
            active |= svc.flags & service_flags::STANDBY == 0;
        }
        same_slot |= vip_filter_slot(&k.addr) == slot;
    }
    let value = match (same_addr, active) {
        (0, _) => 0,
        (n, true) => n,
        (n, false) => n | VIP_STANDBY,
    };
    mark_vip(ebpf, key, value)?;
    if !same_slot {
        set_vip_filter(ebpf, &key.addr, false)?;
    }
    Ok(())
}

/// Writes `key`'s address into the VIP set with `value` (service count and standby
/// bit; 0 removes it); a non-zero value also marks the filter slot.
fn mark_vip(ebpf: &mut Ebpf, key: &VipKey, value: u32) -> Result<(), MapsError> {
    if value != 0 {
        set_vip_filter(ebpf, &key.addr, true)?;
    }
    let mut vips = vips(ebpf)?;
    let addr = vip_addr(key);
    if value != 0 {
        vips.insert(addr, value, 0).map_err(map_err(maps::VIPS))
    } else {
        match vips.remove(&addr) {
            Err(MapError::KeyNotFound) | Ok(()) => Ok(()),
            Err(e) => Err(map_err(maps::VIPS)(e)),
        }
    }
}

fn set_vip_filter(ebpf: &mut Ebpf, addr: &[u32; 4], on: bool) -> Result<(), MapsError> {
    let mut filter: Array<&mut MapData, u8> = Array::try_from(
        ebpf.map_mut(maps::VIP_FILTER)
            .ok_or(MapsError::Missing(maps::VIP_FILTER))?,
    )
    .map_err(map_err(maps::VIP_FILTER))?;
    filter
        .set(vip_filter_slot(addr), u8::from(on), 0)
        .map_err(map_err(maps::VIP_FILTER))
}

/// Points egress slot `slot` (two-arm services) at interface `ifindex`, whose MAC
/// becomes the source of frames sent there. Must run in the interface's network
/// namespace (the kernel resolves `ifindex` there).
pub fn set_tx_port(
    ebpf: &mut Ebpf,
    slot: u32,
    ifindex: u32,
    mac: [u8; 6],
) -> Result<(), MapsError> {
    // Devmap slot first: the data plane treats a set MAC as "slot ready".
    let mut ports: DevMap<&mut MapData> = DevMap::try_from(
        ebpf.map_mut(maps::TX_PORTS)
            .ok_or(MapsError::Missing(maps::TX_PORTS))?,
    )
    .map_err(map_err(maps::TX_PORTS))?;
    ports
        .set(slot, ifindex, None, 0)
        .map_err(|e| MapsError::TxPort {
            slot,
            ifindex,
            error: e.to_string(),
        })?;
    let mut macs: Array<&mut MapData, TxPort> = Array::try_from(
        ebpf.map_mut(maps::TX_MACS)
            .ok_or(MapsError::Missing(maps::TX_MACS))?,
    )
    .map_err(map_err(maps::TX_MACS))?;
    macs.set(slot, TxPort { mac, _pad: [0; 2] }, 0)
        .map_err(map_err(maps::TX_MACS))
}

/// Writes the global settings (encapsulation source addresses).
pub fn set_config(ebpf: &mut Ebpf, config: &Config) -> Result<(), MapsError> {
    let mut array: Array<&mut MapData, Config> = Array::try_from(
        ebpf.map_mut(maps::CONFIG)
            .ok_or(MapsError::Missing(maps::CONFIG))?,
    )
    .map_err(map_err(maps::CONFIG))?;
    array.set(0, config, 0).map_err(map_err(maps::CONFIG))
}

/// Makes `XLB_DECAP_ALLOW` hold exactly `allow.entries` and `XLB_DECAP_LENS`
/// `allow.lens`: new and changed entries first, then the lengths, then the stale
/// entries are deleted (a pair kept across the change, whose length both lists hold,
/// is never missing).
pub fn set_decap_allowed(
    ebpf: &mut Ebpf,
    allow: &crate::dataplane::decap::DecapAllow,
) -> Result<(), MapsError> {
    let entries = &allow.entries;
    let mut map: HashMap<&mut MapData, DecapKey, u32> = HashMap::try_from(
        ebpf.map_mut(maps::DECAP_ALLOW)
            .ok_or(MapsError::Missing(maps::DECAP_ALLOW))?,
    )
    .map_err(map_err(maps::DECAP_ALLOW))?;
    for (key, value) in entries {
        map.insert(key, value, 0)
            .map_err(map_err(maps::DECAP_ALLOW))?;
    }
    let mut lens: Array<&mut MapData, u32> = Array::try_from(
        ebpf.map_mut(maps::DECAP_LENS)
            .ok_or(MapsError::Missing(maps::DECAP_LENS))?,
    )
    .map_err(map_err(maps::DECAP_LENS))?;
    for (i, len) in (0u32..).zip(allow.lens) {
        lens.set(i, len, 0).map_err(map_err(maps::DECAP_LENS))?;
    }
    let mut map: HashMap<&mut MapData, DecapKey, u32> = HashMap::try_from(
        ebpf.map_mut(maps::DECAP_ALLOW)
            .ok_or(MapsError::Missing(maps::DECAP_ALLOW))?,
    )
    .map_err(map_err(maps::DECAP_ALLOW))?;
    let stale: Vec<DecapKey> = map
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !entries.contains_key(k))
        .collect();
    for key in &stale {
        ignore_missing(map.remove(key), maps::DECAP_ALLOW)?;
    }
    Ok(())
}

/// Deletes every entry of the connection table and of the unconfirmed table that points
/// at one of backends `ids`, so the ids can be given to other backends without their old
/// flows following them there. Call after the backends' records are cleared and no
/// table names them: from then on no new entry can point at them. Returns how many
/// entries were removed. Costs one pass over each table, whatever the number of ids.
pub fn forget_backend_flows(ebpf: &mut Ebpf, ids: &[u32]) -> Result<usize, MapsError> {
    let ids: std::collections::HashSet<u32> = ids.iter().copied().collect();
    let mut removed = 0;
    for name in [maps::CONNS, maps::CONNS_NEW] {
        let mut conns: HashMap<&mut MapData, FlowKey, Conn> =
            HashMap::try_from(ebpf.map_mut(name).ok_or(MapsError::Missing(name))?)
                .map_err(map_err(name))?;
        let stale: Vec<FlowKey> = conns
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, conn)| ids.contains(&conn.backend_id))
            .map(|(key, _)| key)
            .collect();
        for key in &stale {
            // An entry the LRU evicted meanwhile is already gone: fine.
            let _ = conns.remove(key);
        }
        removed += stale.len();
    }
    Ok(removed)
}

/// Configures (or replaces) the VRRP virtual router `key` for the data plane, and marks
/// its interface as running VRRP (docs/vrrp-xdp.md). Replacing a value is one
/// `bpf_map_update_elem`, so XDP never reads a half-written router.
pub fn set_vrrp_router(
    ebpf: &mut Ebpf,
    key: &VrrpKey,
    router: &VrrpRouter,
) -> Result<(), MapsError> {
    if !crate::dataplane::vrrp_router_is_valid(key, router) {
        return Err(MapsError::VrrpRouter(*key));
    }
    let mut routers = vrrp_routers(ebpf)?;
    let marker = VrrpKey::marker(key.ifindex);
    // Router first, marker second: a packet never finds the marker without its router
    // (it would drop the router's adverts as unknown VRID).
    routers
        .insert(key, router, 0)
        .map_err(map_err(maps::VRRP_ROUTERS))?;
    routers
        .insert(marker, VrrpRouter::default(), 0)
        .map_err(map_err(maps::VRRP_ROUTERS))
}

/// Removes the VRRP virtual router `key` and what XDP saw of it; the interface marker
/// goes with the interface's last router, after which adverts there pass untouched.
pub fn remove_vrrp_router(ebpf: &mut Ebpf, key: &VrrpKey) -> Result<(), MapsError> {
    let mut routers = vrrp_routers(ebpf)?;
    ignore_missing(routers.remove(key), maps::VRRP_ROUTERS)?;
    let last = !routers
        .keys()
        .filter_map(Result::ok)
        .any(|k| k.ifindex == key.ifindex && !k.is_marker());
    if last {
        ignore_missing(
            routers.remove(&VrrpKey::marker(key.ifindex)),
            maps::VRRP_ROUTERS,
        )?;
    }
    let mut seen: HashMap<&mut MapData, VrrpKey, VrrpSeen> = HashMap::try_from(
        ebpf.map_mut(maps::VRRP_SEEN)
            .ok_or(MapsError::Missing(maps::VRRP_SEEN))?,
    )
    .map_err(map_err(maps::VRRP_SEEN))?;
    ignore_missing(seen.remove(key), maps::VRRP_SEEN)
}

/// Every `XLB_VRRP_SEEN` entry: the last valid advert XDP saw per virtual router.
pub fn read_vrrp_seen(ebpf: &Ebpf) -> Result<Vec<(VrrpKey, VrrpSeen)>, MapsError> {
    let seen: HashMap<&MapData, VrrpKey, VrrpSeen> = HashMap::try_from(
        ebpf.map(maps::VRRP_SEEN)
            .ok_or(MapsError::Missing(maps::VRRP_SEEN))?,
    )
    .map_err(map_err(maps::VRRP_SEEN))?;
    collect_seen(&seen)
}

/// [`read_vrrp_seen`] from the map pinned under `pin_dir` (another process's data plane).
pub fn read_pinned_vrrp_seen(
    pin_dir: &std::path::Path,
) -> Result<Vec<(VrrpKey, VrrpSeen)>, MapsError> {
    let data =
        MapData::from_pin(pin_dir.join(maps::VRRP_SEEN)).map_err(map_err(maps::VRRP_SEEN))?;
    let seen: HashMap<MapData, VrrpKey, VrrpSeen> =
        HashMap::try_from(aya::maps::Map::HashMap(data)).map_err(map_err(maps::VRRP_SEEN))?;
    collect_seen(&seen)
}

fn collect_seen<T: std::borrow::Borrow<MapData>>(
    seen: &HashMap<T, VrrpKey, VrrpSeen>,
) -> Result<Vec<(VrrpKey, VrrpSeen)>, MapsError> {
    seen.iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(map_err(maps::VRRP_SEEN))
}

fn vrrp_routers(ebpf: &mut Ebpf) -> Result<HashMap<&mut MapData, VrrpKey, VrrpRouter>, MapsError> {
    HashMap::try_from(
        ebpf.map_mut(maps::VRRP_ROUTERS)
            .ok_or(MapsError::Missing(maps::VRRP_ROUTERS))?,
    )
    .map_err(map_err(maps::VRRP_ROUTERS))
}

/// A delete of a key that is not there is fine (aya reports it as ENOENT).
fn ignore_missing(result: Result<(), MapError>, name: &'static str) -> Result<(), MapsError> {
    match result {
        Err(MapError::KeyNotFound) | Ok(()) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(e) => Err(map_err(name)(e)),
    }
}
