//! The connection tables' LRU kinds (`conn_table.lru`, issue 16 item 2), through
//! BPF_PROG_TEST_RUN on the real program from threads pinned to CPU 0 and CPU 1.
//!
//! `per_cpu` gives both LRU hashes one eviction list per CPU (`BPF_F_NO_COMMON_LRU`)
//! but keeps one hash: a flow whose packets change CPU finds its entry on either, and
//! keeps its backend after the Maglev table changes. What it costs is capacity: each
//! CPU's list holds its share of the elements, and a CPU evicts only from its own.

use std::net::Ipv4Addr;

use aya::maps::{HashMap, MapInfo};
use lb_common::{maps as map_names, programs, wire::XDP_TX, Conn, FlowKey};
use lb_userspace::{config::conn_table::LruKind, dataplane::aya::maps};
use testbed::{
    dataplane::{PinDir, TestDataplane},
    fixture::{install_dsr_pair, VIP4, VIP_PORT},
    packet, test_run,
};

const TABLE: [u32; 7] = [1, 2, 3, 1, 2, 3, 1];
const ENTRIES: u32 = 4_096;
const KINDS: [LruKind; 2] = [LruKind::Shared, LruKind::PerCpu];

fn setup(tag: &str, lru: LruKind) -> TestDataplane {
    let mut dp = TestDataplane::load_with(PinDir::new(tag), Some(ENTRIES), lru);
    install_dsr_pair(&mut dp, 3, &TABLE);
    dp
}

/// Runs each frame through the balancer on its CPU, in order, one thread per CPU
/// taking turns; returns the backend each went to (last byte of its destination
/// MAC), `None` if it was not transmitted.
fn run_on_cpus(dp: &mut TestDataplane, frames: &[(usize, Vec<u8>)]) -> Vec<Option<u8>> {
    let prog = dp.dp.xdp(programs::BALANCER).unwrap();
    let prog = test_run::handle(prog, programs::BALANCER).unwrap();
    frames
        .iter()
        .map(|(cpu, frame)| {
            std::thread::scope(|s| {
                s.spawn(|| {
                    pin_to(*cpu);
                    let out = test_run::run(&prog, frame).expect("BPF_PROG_TEST_RUN");
                    (out.action == XDP_TX).then(|| out.packet[5])
                })
                .join()
                .unwrap()
            })
        })
        .collect()
}

fn pin_to(cpu: usize) {
    use nix::{
        sched::{sched_setaffinity, CpuSet},
        unistd::Pid,
    };
    let mut set = CpuSet::new();
    set.set(cpu).unwrap();
    sched_setaffinity(Pid::from_raw(0), &set)
        .unwrap_or_else(|e| panic!("pinning a thread to CPU {cpu}: {e}"));
}

fn confirmed_flows(dp: &mut TestDataplane) -> usize {
    let table: HashMap<_, FlowKey, Conn> =
        HashMap::try_from(dp.dp.ebpf_mut().map_mut(map_names::CONNS).unwrap()).unwrap();
    table.keys().filter(Result::is_ok).count()
}

#[test]
fn both_tables_are_created_with_the_configured_kind() {
    for lru in KINDS {
        let mut dp = setup("lru-kind", lru);
        let flags = MapInfo::from_pin(dp.pin_dir().join(map_names::CONNS))
            .unwrap()
            .map_flags();
        assert_eq!(LruKind::of_flags(flags), lru, "XLB_CONNS flags {flags:#x}");
        let new = match dp.dp.ebpf().map(map_names::CONNS_NEW) {
            Some(aya::maps::Map::LruHashMap(data)) => data.info().unwrap(),
            _ => panic!("XLB_CONNS_NEW is an LRU hash"),
        };
        assert_eq!(LruKind::of_flags(new.map_flags()), lru, "XLB_CONNS_NEW");
        assert_eq!(new.max_entries(), ENTRIES / 4);
        // Pinned for the load only: each daemon starts its own unconfirmed table.
        assert!(!dp.pin_dir().join(map_names::CONNS_NEW).exists());
        let table = dp.dp.conn_table().unwrap();
        assert_eq!((table.lru, table.capacity), (lru, ENTRIES));
        // And the program forwards through them.
        let syn = packet::tcp4_frame(
            Ipv4Addr::new(10, 9, 0, 1),
            VIP4,
            40_000,
            VIP_PORT,
            packet::SYN,
        );
        assert_eq!(dp.run(&syn).action, XDP_TX, "{lru:?}");
    }
}

#[test]
fn a_flow_alternating_between_cpus_keeps_its_backend() {
    for lru in KINDS {
        let mut dp = setup("lru-alternate", lru);
        let client = Ipv4Addr::new(10, 9, 0, 2);
        let syn = packet::tcp4_frame(client, VIP4, 40_000, VIP_PORT, packet::SYN);
        let ack = packet::tcp4_frame(client, VIP4, 40_000, VIP_PORT, packet::Flags::ACK);
        // The SYN on CPU 0 leaves an unconfirmed entry; the ACK on CPU 1 confirms it.
        let opened = run_on_cpus(&mut dp, &[(0, syn), (1, ack.clone())]);
        let backend = opened[0].expect("SYN forwarded");
        assert_eq!(
            opened[1],
            Some(backend),
            "{lru:?}: the ACK on the other CPU"
        );
        assert_eq!(confirmed_flows(&mut dp), 1, "{lru:?}");

        // Maglev now sends everything to another backend: only the entry keeps the
        // flow where it is.
        let other = u32::from(backend) % 3 + 1;
        maps::swap_table(dp.dp.ebpf_mut(), 1, &[other; 7]).unwrap();
        let alternating: Vec<(usize, Vec<u8>)> = (0..20).map(|i| (i % 2, ack.clone())).collect();
        let went = run_on_cpus(&mut dp, &alternating);
        assert!(
            went.iter().all(|b| *b == Some(backend)),
            "{lru:?}: flow on backend {backend}, packets alternating CPUs went to {went:?}"
        );
        // A new flow takes the new table (on either CPU), so the entry is what held.
        let fresh = |i: u8| {
            let c = Ipv4Addr::new(10, 9, 1, i);
            (
                usize::from(i % 2),
                packet::tcp4_frame(c, VIP4, 40_000, VIP_PORT, packet::SYN),
            )
        };
        let went = run_on_cpus(&mut dp, &[fresh(1), fresh(2)]);
        assert_eq!(went, [Some(other as u8); 2], "{lru:?}: new flows");
    }
}

/// `FLOWS` confirmed flows, all inserted on CPU 0.
fn fill_from_cpu0(dp: &mut TestDataplane) {
    let prog =
        test_run::handle(dp.dp.xdp(programs::BALANCER).unwrap(), programs::BALANCER).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            pin_to(0);
            for i in 0..FLOWS {
                let [_, _, c, d] = i.to_be_bytes();
                let client = Ipv4Addr::new(10, 8, c, d);
                let ack = packet::tcp4_frame(client, VIP4, 40_000, VIP_PORT, packet::Flags::ACK);
                // The second packet confirms the flow.
                for _ in 0..2 {
                    assert_eq!(test_run::run(&prog, &ack).unwrap().action, XDP_TX);
                }
            }
        });
    });
}

/// More flows than one CPU's list of a per-CPU table of [`ENTRIES`] holds on two CPUs.
const FLOWS: u32 = 3_000;

fn assume_two_possible_cpus() {
    let cpus = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    assert_eq!(
        cpus.trim(),
        "0-1",
        "the figures below assume two possible CPUs"
    );
}

/// With per-CPU lists a table of `ENTRIES` on two CPUs keeps at most half of them for
/// flows one CPU inserts; the shared list keeps them all (docs/maps.md).
#[test]
fn per_cpu_lists_split_the_capacity_between_cpus() {
    assume_two_possible_cpus();
    let mut kept = Vec::new();
    for lru in KINDS {
        let mut dp = setup("lru-capacity", lru);
        fill_from_cpu0(&mut dp);
        kept.push(confirmed_flows(&mut dp));
    }
    assert_eq!(kept[0], FLOWS as usize, "shared: all {FLOWS} flows kept");
    assert!(
        kept[1] <= (ENTRIES / 2) as usize && kept[1] > (ENTRIES / 4) as usize,
        "per_cpu: {} of {FLOWS} flows inserted on CPU 0 kept (its list has {})",
        kept[1],
        ENTRIES / 2
    );
}

/// A restart that changes the kind carries the entries over; into per-CPU lists it
/// inserts from both CPUs, so a table holding more flows than one CPU's list keeps
/// them all (from one CPU it would keep at most half the entries).
#[test]
fn a_change_of_kind_carries_every_flow_over() {
    assume_two_possible_cpus();
    let mut dp = setup("lru-carry", LruKind::Shared);
    fill_from_cpu0(&mut dp);
    assert_eq!(confirmed_flows(&mut dp), FLOWS as usize);
    let mut dp = dp.restart(Some(ENTRIES), LruKind::PerCpu);
    assert_eq!(dp.dp.conn_table().unwrap().lru, LruKind::PerCpu);
    assert_eq!(
        dp.dp.carry_over_conns().unwrap(),
        Some((ENTRIES, FLOWS as usize))
    );
    assert_eq!(
        confirmed_flows(&mut dp),
        FLOWS as usize,
        "per_cpu after the carry-over"
    );
    // And back: nothing lost either way.
    let mut dp = dp.restart(Some(ENTRIES), LruKind::Shared);
    assert_eq!(dp.dp.conn_table().unwrap().lru, LruKind::Shared);
    assert_eq!(
        dp.dp.carry_over_conns().unwrap(),
        Some((ENTRIES, FLOWS as usize))
    );
    assert_eq!(confirmed_flows(&mut dp), FLOWS as usize, "shared again");
}
