//! Packets in → exact packets out: the balancer program run through BPF_PROG_TEST_RUN on
//! the real kernel (verifier included), table-driven.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{programs::ProgramError, sys::SyscallError, TestRun as _, TestRunOptions};
use lb_common::{maps, service::AF_INET, Conn, FlowKey, Stat};
use pnet_packet::ethernet::EtherTypes;
use testbed::{
    bench::{self, BenchPrograms},
    dataplane::TestDataplane,
    packet, test_run,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

struct Fixture {
    description: &'static str,
    input: Vec<u8>,
    verdict: u32,
    /// `None`: the packet must come out byte-for-byte unchanged.
    output: Option<Vec<u8>>,
    /// Counter slots that must move by exactly one packet (and the input's bytes).
    counted: &'static [Stat],
}

fn fixtures() -> Vec<Fixture> {
    let c4 = Ipv4Addr::new(10, 0, 0, 1);
    let v4 = Ipv4Addr::new(10, 0, 0, 100);
    let c6: Ipv6Addr = "fd00::1".parse().unwrap();
    let v6: Ipv6Addr = "fd00::100".parse().unwrap();
    vec![
        Fixture {
            description: "IPv4 UDP passes untouched",
            input: packet::udp4_frame(c4, v4, 40000, 53, b"hello"),
            verdict: XDP_PASS,
            output: None,
            counted: &[Stat::Rx, Stat::Pass, Stat::NotVip],
        },
        Fixture {
            description: "IPv4 TCP SYN passes untouched",
            input: packet::tcp4_frame(c4, v4, 40000, 80, packet::SYN),
            verdict: XDP_PASS,
            output: None,
            counted: &[Stat::Rx, Stat::Pass, Stat::NotVip],
        },
        Fixture {
            description: "IPv6 TCP SYN passes untouched",
            input: packet::tcp6_frame(c6, v6, 40000, 80, packet::SYN),
            verdict: XDP_PASS,
            output: None,
            counted: &[Stat::Rx, Stat::Pass, Stat::NotVip],
        },
        Fixture {
            description: "ARP passes untouched",
            input: packet::ethernet(packet::CLIENT_MAC, [0xff; 6], EtherTypes::Arp, &[0u8; 28]),
            verdict: XDP_PASS,
            output: None,
            counted: &[Stat::Rx, Stat::Pass, Stat::NotVip],
        },
        Fixture {
            description: "IPv4 ethertype without an IPv4 header is dropped as truncated",
            input: packet::ethernet(packet::CLIENT_MAC, packet::LB_MAC, EtherTypes::Ipv4, &[]),
            verdict: XDP_DROP,
            output: None,
            counted: &[Stat::Rx, Stat::Drop, Stat::Truncated],
        },
    ]
}

#[test]
fn fixtures_verdicts_outputs_and_counters() {
    let mut dp = TestDataplane::load("packets");
    for f in fixtures() {
        let before = dp.stats();
        let out = dp.run(&f.input);
        assert_eq!(out.action, f.verdict, "{}: verdict", f.description);
        let expected = f.output.as_ref().unwrap_or(&f.input);
        assert_eq!(&out.packet, expected, "{}: output bytes", f.description);
        let after = dp.stats();
        for &stat in Stat::ALL {
            let (b, a) = (before.get(stat), after.get(stat));
            let (dp_, db) = (a.packets - b.packets, a.bytes - b.bytes);
            if f.counted.contains(&stat) {
                assert_eq!(
                    (dp_, db),
                    (1, f.input.len() as u64),
                    "{}: counter {}",
                    f.description,
                    stat.name()
                );
            } else {
                assert_eq!(
                    (dp_, db),
                    (0, 0),
                    "{}: counter {} must not move",
                    f.description,
                    stat.name()
                );
            }
        }
    }
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
        _pad: [0; 2],
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
