//! Packets in → exact packets out: the balancer program run through BPF_PROG_TEST_RUN on
//! the real kernel (verifier included), table-driven.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::{
    wire::{XDP_DROP, XDP_PASS},
    Stat,
};
use pnet_packet::ethernet::EtherTypes;
use testbed::{
    case::{Case, NOT_VIP},
    dataplane::TestDataplane,
    packet,
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
    let err = lb_userspace::test_run::run_xdp(prog.fd().unwrap(), &[0u8; 13], 1, 0)
        .expect_err("a 13-byte frame must be rejected");
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
}
