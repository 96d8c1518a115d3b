//! Maglev tables written through `mmap` (BPF_F_MMAPABLE inner maps) are exactly what the
//! program reads: flows land where userspace's own Maglev table says, before and after a
//! swap, for both families and for a table whose end is not page-aligned. Also the
//! fallback for an `XLB_MAGLEV` pinned by an xlb whose template predates mmapable tables.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
};

use aya::maps::{Array, ArrayOfMaps, MapData, MapError};
use lb_common::{
    limits::{BPF_F_INNER_MAP, MAGLEV_INNER_FLAGS, MAGLEV_SLOTS, MAX_MAGLEV_SIZE, MAX_SERVICES},
    maps as map_names,
    service::{flow_hash, AF_INET, AF_INET6},
    wire::{IPPROTO_TCP, XDP_TX},
    FlowKey,
};
use lb_userspace::{
    balancer::maglev::{self, MaglevBackend},
    dataplane::aya::maps,
};
use testbed::{
    dataplane::{PinDir, TestDataplane},
    fixture::{backend_mac, install_dsr_pair, vip6, VIP4, VIP_PORT},
    packet::{self, be4, be6},
};

/// Flows per family per table: enough that a wrong stride, offset or size moves some.
const FLOWS: u32 = 300;

/// Userspace's weighted Maglev table over backends `ids`, size `m`.
fn maglev_table(ids: &[u32], m: u32) -> Vec<u32> {
    let backends: Vec<MaglevBackend> = ids
        .iter()
        .map(|&id| MaglevBackend {
            id,
            weight: 1 + id % 3,
            key: maglev::backend_key(IpAddr::from([10, 0, 1, id as u8]), 0),
        })
        .collect();
    maglev::build(&backends, m).unwrap()
}

/// Backends 1..=8 and DSR services 1 (VIP4:80) and 2 ([VIP6]:80), each with `table`.
fn configure(dp: &mut TestDataplane, table: &[u32]) {
    install_dsr_pair(dp, 8, table);
}

/// Flow `i` of a family: a distinct client address and source port each.
fn flow(i: u32, family: u8) -> (FlowKey, Vec<u8>) {
    let sport = 1024 + (i * 7919 % 60000) as u16;
    let (src, dst, frame) = if family == AF_INET {
        let client = Ipv4Addr::from(0x0a09_0000 + i);
        (
            be4(client),
            be4(VIP4),
            packet::tcp4_frame(client, VIP4, sport, VIP_PORT, packet::SYN),
        )
    } else {
        let client = Ipv6Addr::from(0xfd09_u128 << 112 | u128::from(i));
        (
            be6(client),
            be6(vip6()),
            packet::tcp6_frame(client, vip6(), sport, VIP_PORT, packet::SYN),
        )
    };
    let key = FlowKey {
        src,
        dst,
        sport_be: sport.to_be(),
        dport_be: VIP_PORT.to_be(),
        proto: IPPROTO_TCP,
        family,
        vlan: 0,
    };
    (key, frame)
}

/// Every flow's SYN (which always takes the current Maglev choice) goes to the backend
/// `table` names for it, in both families; and the installed inner maps hold `table`
/// slot for slot behind M, with `flags`.
fn assert_program_reads(dp: &mut TestDataplane, what: &str, table: &[u32], flags: u32) {
    let m = table.len() as u32;
    let mut hit = std::collections::BTreeSet::new();
    for family in [AF_INET, AF_INET6] {
        for i in 0..FLOWS {
            let (key, syn) = flow(i, family);
            let slot = flow_hash(&key, false) % m;
            let want = table[slot as usize];
            let out = dp.run(&syn);
            assert_eq!(
                out.action, XDP_TX,
                "{what}: flow {i} (family {family}) verdict"
            );
            assert_eq!(
                out.packet,
                packet::dsr_output(&syn, backend_mac(want)),
                "{what}: flow {i} (family {family}) hashes to slot {slot}: expected backend {want}"
            );
            hit.insert(want);
        }
    }
    let distinct: std::collections::BTreeSet<u32> = table.iter().copied().collect();
    assert_eq!(hit, distinct, "{what}: the flows reached every backend");

    let outer: ArrayOfMaps<&MapData, Array<MapData, u32>> =
        ArrayOfMaps::try_from(dp.dp.ebpf().map(map_names::MAGLEV).unwrap()).unwrap();
    for service in [1, 2] {
        let inner = outer.get(&service, 0).unwrap();
        let info = aya::maps::IterableMap::map(&inner).info().unwrap();
        assert_eq!(
            (info.max_entries(), info.map_flags()),
            (m + 1, flags),
            "{what}: service {service}'s inner map"
        );
        let slots: Vec<u32> = inner.iter().map(Result::unwrap).collect();
        assert_eq!(slots[0], m, "{what}: slot 0 holds M");
        assert!(slots[1..] == *table, "{what}: slots 1..=M hold the table");
    }
}

#[test]
fn mmap_filled_tables_are_what_the_program_reads() {
    let mut dp = TestDataplane::load("swap-mmap");
    // M = 65537: 65538 slots of 8 bytes end 16 bytes into a page (the copy must map
    // the page-rounded length and use the kernel's 8-byte slot stride).
    let before = maglev_table(&[1, 2, 3, 4, 5], maglev::DEFAULT_TABLE_SIZE);
    configure(&mut dp, &before);
    assert_program_reads(&mut dp, "before the swap", &before, MAGLEV_INNER_FLAGS);

    let after = maglev_table(&[3, 4, 5, 6, 7, 8], maglev::DEFAULT_TABLE_SIZE);
    for service in [1, 2] {
        maps::swap_table(dp.dp.ebpf_mut(), service, &after).unwrap();
    }
    assert_program_reads(&mut dp, "after the swap", &after, MAGLEV_INNER_FLAGS);

    // A smaller table replacing a bigger one (M changes with the contents).
    let small = maglev_table(&[2, 8], 251);
    for service in [1, 2] {
        maps::swap_table(dp.dp.ebpf_mut(), service, &small).unwrap();
    }
    assert_program_reads(
        &mut dp,
        "after shrinking to M = 251",
        &small,
        MAGLEV_INNER_FLAGS,
    );
}

/// A batch swap (`maps::swap_tables`, what a reload uses) makes every table of the batch
/// live whole, with its own M; and the legacy-template fallback still applies per table.
#[test]
fn batched_swaps_make_every_table_live_whole() {
    let mut dp = TestDataplane::load("swap-batch");
    let before = maglev_table(&[1, 2, 3, 4, 5], maglev::DEFAULT_TABLE_SIZE);
    configure(&mut dp, &before);
    let after = maglev_table(&[2, 5, 6, 7], 4093);
    maps::swap_tables(dp.dp.ebpf_mut(), &[(1, after.clone()), (2, after.clone())]).unwrap();
    assert_program_reads(&mut dp, "after a batch swap", &after, MAGLEV_INNER_FLAGS);
    assert!(matches!(
        maps::swap_tables(
            dp.dp.ebpf_mut(),
            &[(1, after.clone()), (MAGLEV_SLOTS, after)]
        ),
        Err(maps::MapsError::TableSlot(MAGLEV_SLOTS))
    ));
}

#[test]
fn build_table_rejects_sizes_the_template_cannot_hold() {
    let too_big = vec![1u32; MAX_MAGLEV_SIZE as usize + 1];
    for table in [&[][..], &too_big[..]] {
        assert!(matches!(
            maps::build_table(table),
            Err(maps::MapsError::TableSize(n)) if n == table.len()
        ));
    }
}

/// Pins an `XLB_MAGLEV` of `slots` slots under `pin_dir` whose template has the flags
/// BPF_F_INNER_MAP only, as an xlb from before mmapable tables left it.
fn pin_legacy_maglev(pin_dir: &PinDir, slots: u32) {
    lb_userspace::dataplane::aya::bpffs::prepare_pin_dir(pin_dir.path()).unwrap();
    let template = pin_dir.path().join("legacy_template");
    let bpftool = |args: &[&str]| {
        let out = Command::new("bpftool")
            .args(args)
            .output()
            .expect("running bpftool");
        assert!(
            out.status.success(),
            "bpftool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let template_s = template.to_str().unwrap();
    bpftool(&[
        "map",
        "create",
        template_s,
        "type",
        "array",
        "key",
        "4",
        "value",
        "4",
        "entries",
        &(MAX_MAGLEV_SIZE + 1).to_string(),
        "name",
        "legacy_tmpl",
        "flags",
        &BPF_F_INNER_MAP.to_string(),
    ]);
    bpftool(&[
        "map",
        "create",
        pin_dir.path().join(map_names::MAGLEV).to_str().unwrap(),
        "type",
        "array_of_maps",
        "key",
        "4",
        "value",
        "4",
        "entries",
        &slots.to_string(),
        "name",
        map_names::MAGLEV,
        "inner_map",
        "pinned",
        template_s,
    ]);
    std::fs::remove_file(&template).unwrap();
}

/// An `XLB_MAGLEV` pinned by an xlb from before per-service table slots (one slot per
/// service id) has no room for the second slot: it is replaced at load, and the tables
/// the daemon then writes go to both slots.
#[test]
fn a_maglev_map_without_second_slots_is_replaced() {
    let pin_dir = PinDir::new("swap-slots");
    pin_legacy_maglev(&pin_dir, MAX_SERVICES);
    let mut dp = TestDataplane::load_in(pin_dir);
    let info = aya::maps::MapInfo::from_pin(dp.pin_dir().join(map_names::MAGLEV)).unwrap();
    assert_eq!(info.max_entries(), MAGLEV_SLOTS);
    let table = maglev_table(&[1, 2, 3, 4], maglev::DEFAULT_TABLE_SIZE);
    maps::swap_tables(
        dp.dp.ebpf_mut(),
        &[(1, table.clone()), (1 + MAX_SERVICES, table)],
    )
    .unwrap();
}

/// An xlb from before mmapable tables pinned `XLB_MAGLEV` with a template of flags
/// BPF_F_INNER_MAP only; the kernel refuses an mmapable table there, so an upgraded
/// daemon adopting those pins must fall back to tables with the old flags.
#[test]
fn swap_falls_back_for_a_pinned_template_without_mmapable() {
    let pin_dir = PinDir::new("swap-legacy");
    // This build's size: a smaller outer map is replaced at load whatever its template.
    pin_legacy_maglev(&pin_dir, MAGLEV_SLOTS);

    let mut dp = TestDataplane::load_in(pin_dir);
    let table = maglev_table(&[1, 2, 3, 4], maglev::DEFAULT_TABLE_SIZE);
    let inner = maps::build_table(&table).unwrap();
    match maps::install_table(dp.dp.ebpf_mut(), 1, &inner) {
        Err(maps::MapsError::Map {
            source: MapError::SyscallError(e),
            ..
        }) if e.io_error.raw_os_error() == Some(libc::EINVAL) => {}
        other => panic!(
            "the kernel must refuse (EINVAL) an mmapable table under a template without \
             BPF_F_MMAPABLE: {other:?}"
        ),
    }
    configure(&mut dp, &table);
    assert_program_reads(&mut dp, "legacy template", &table, BPF_F_INNER_MAP);
    let next = maglev_table(&[5, 6, 7], maglev::DEFAULT_TABLE_SIZE);
    for service in [1, 2] {
        maps::swap_table(dp.dp.ebpf_mut(), service, &next).unwrap();
    }
    assert_program_reads(
        &mut dp,
        "legacy template, after a swap",
        &next,
        BPF_F_INNER_MAP,
    );
    // A batch is refused there too, and falls back table by table.
    let batch = maglev_table(&[1, 8], 251);
    maps::swap_tables(dp.dp.ebpf_mut(), &[(1, batch.clone()), (2, batch.clone())]).unwrap();
    assert_program_reads(
        &mut dp,
        "legacy template, after a batch swap",
        &batch,
        BPF_F_INNER_MAP,
    );
}
