//! Packets in → exact packets out: the balancer program run through BPF_PROG_TEST_RUN on
//! the real kernel (verifier included), table-driven.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{programs::ProgramError, sys::SyscallError, TestRun as _, TestRunOptions};
use lb_common::{
    maps,
    service::AF_INET,
    wire::{XDP_DROP, XDP_PASS, XDP_TX},
    Conn, FlowKey, Stat,
};
use pnet_packet::ethernet::EtherTypes;
use testbed::{
    bench::{self, BenchPrograms},
    case::{Case, NOT_VIP},
    dataplane::TestDataplane,
    packet, test_run,
};

fn fixtures() -> Vec<Case> {
    let c4 = Ipv4Addr::new(10, 0, 0, 1);
    let v4 = Ipv4Addr::new(10, 0, 0, 100);
    let c6: Ipv6Addr = "fd00::1".parse().unwrap();
    let v6: Ipv6Addr = "fd00::100".parse().unwrap();
    vec![
        Case::unchanged(
            "IPv4 UDP passes untouched",
            packet::udp4_frame(c4, v4, 40000, 53, b"hello"),
            XDP_PASS,
            NOT_VIP,
        ),
        Case::unchanged(
            "IPv4 TCP SYN passes untouched",
            packet::tcp4_frame(c4, v4, 40000, 80, packet::SYN),
            XDP_PASS,
            NOT_VIP,
        ),
        Case::unchanged(
            "IPv6 TCP SYN passes untouched",
            packet::tcp6_frame(c6, v6, 40000, 80, packet::SYN),
            XDP_PASS,
            NOT_VIP,
        ),
        Case::unchanged(
            "ARP passes untouched",
            packet::ethernet(packet::CLIENT_MAC, [0xff; 6], EtherTypes::Arp, &[0u8; 28]),
            XDP_PASS,
            NOT_VIP,
        ),
        Case::unchanged(
            "IPv4 ethertype without an IPv4 header is dropped as truncated",
            packet::ethernet(packet::CLIENT_MAC, packet::LB_MAC, EtherTypes::Ipv4, &[]),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Truncated],
        ),
    ]
}

#[test]
fn fixtures_verdicts_outputs_and_counters() {
    let mut dp = TestDataplane::load("packets");
    dp.run_cases(fixtures());
}

#[test]
fn kernel_rejects_frames_shorter_than_ethernet() {
    // BPF_PROG_TEST_RUN refuses XDP input below ETH_HLEN, so the program's own truncation
    // branch is reachable only from real NICs; make sure that stays true.
    let mut dp = TestDataplane::load("runt");
    let prog = dp.dp.xdp(lb_common::programs::BALANCER).unwrap();
    let err = prog
        .test_run(TestRunOptions {
            data_in: Some(&[0u8; 13]),
            ..TestRunOptions::new()
        })
        .expect_err("a 13-byte frame must be rejected");
    let ProgramError::SyscallError(SyscallError { io_error, .. }) = &err else {
        panic!("not the syscall's error: {err}");
    };
    assert_eq!(io_error.raw_os_error(), Some(libc::EINVAL), "{err}");
}

/// `bench_conn`, from the benchmark object, hits exactly the flows in the data plane's
/// own connection table: both objects use one `XLB_CONNS`, so the floor is timed on the
/// flows `xlb` is timed on.
#[test]
fn bench_conn_looks_flows_up_in_the_data_planes_table() {
    let mut dp = TestDataplane::load("bench-conn");
    let floors = BenchPrograms::load(&dp.dp);
    let (client, vip) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 100));
    let flow = |sport| packet::tcp4_frame(client, vip, sport, 80, packet::Flags::ACK);
    let conn_floor = |frame: &[u8]| {
        test_run::run(floors.xdp(bench::CONN), frame)
            .expect("BPF_PROG_TEST_RUN")
            .action
    };
    assert_eq!(conn_floor(&flow(40000)), XDP_DROP, "empty table: a miss");
    let key = FlowKey {
        src: [u32::from_ne_bytes(client.octets()), 0, 0, 0],
        dst: [u32::from_ne_bytes(vip.octets()), 0, 0, 0],
        sport_be: 40000u16.to_be(),
        dport_be: 80u16.to_be(),
        proto: 6,
        family: AF_INET,
        vlan: 0,
    };
    let mut conns: aya::maps::HashMap<_, FlowKey, Conn> =
        aya::maps::HashMap::try_from(dp.dp.ebpf_mut().map_mut(maps::CONNS).unwrap()).unwrap();
    conns.insert(key, Conn::default(), 0).unwrap();
    assert_eq!(
        conn_floor(&flow(40000)),
        XDP_TX,
        "the data plane's entry: a hit"
    );
    assert_eq!(conn_floor(&flow(40001)), XDP_DROP, "another flow: a miss");
}
