//! Packets in → exact packets out: the balancer program run through BPF_PROG_TEST_RUN on
//! the real kernel (verifier included), table-driven.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::{
    wire::{XDP_DROP, XDP_PASS},
    Stat,
};
use pnet_packet::ethernet::EtherTypes;
use testbed::{dataplane::TestDataplane, packet};

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
    let err = lb_userspace::test_run::run_xdp(prog.fd().unwrap(), &[0u8; 13], 1, 0)
        .expect_err("a 13-byte frame must be rejected");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
}
