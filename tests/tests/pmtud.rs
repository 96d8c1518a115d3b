//! Path MTU discovery through the tunnel, on exact frames (BPF_PROG_TEST_RUN): a packet
//! that would exceed the egress interface's MTU once wrapped is answered with ICMP
//! "fragmentation needed" / ICMPv6 "packet too big" (docs/mtu.md), and the limit is the
//! interface's MTU as it is now. Frames "arrive" on a veth of a fresh namespace
//! (`xdp_md.ingress_ifindex`), whose MTU the tests set; the expected answers are built
//! here byte by byte and their checksums verified independently.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::{
    service::{AF_INET, AF_INET6},
    wire::{ETH_P_8021AD, ETH_P_8021Q, IPPROTO_TCP, XDP_DROP, XDP_REDIRECT, XDP_TX},
    Backend, Config, ForwardMode, Service, Stat, VipKey,
};
use lb_userspace::dataplane::aya::maps;
use pnet_packet::{ethernet::EtherTypes, ip::IpNextHeaderProtocols};
use testbed::{
    dataplane::TestDataplane,
    fixture::{backend_mac, vip6, VIP4, VIP_PORT},
    packet::{self, be4, be6, CLIENT_MAC, LB_MAC},
    Netns,
};

const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const ENCAP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GUE_PORT: u16 = 6080;
/// Bytes of the offending IP packet the answers quote (lb-ebpf toobig::QUOTE4/QUOTE6).
const QUOTE4: usize = 128;
const QUOTE6: usize = 256;
const TOO_BIG4: &[Stat] = &[Stat::Rx, Stat::Tx, Stat::ConnMiss, Stat::IcmpTooBigSentV4];
const TOO_BIG6: &[Stat] = &[Stat::Rx, Stat::Tx, Stat::ConnMiss, Stat::IcmpTooBigSentV6];
const FORWARDED: &[Stat] = &[Stat::Rx, Stat::Tx, Stat::ConnMiss];

fn client6() -> Ipv6Addr {
    "fd00::1".parse().unwrap()
}

fn encap6() -> Ipv6Addr {
    "fd00::2".parse().unwrap()
}

/// A data plane with `mode` services on VIP4:80/tcp (backend 10.0.1.1) and
/// [vip6]:80/tcp (backend fd00:1::4), and a namespace holding the veth `va` the
/// frames arrive on. `rate`: `Config::toobig_per_sec`.
fn setup(tag: &str, mode: ForwardMode, rate: u32) -> (TestDataplane, Netns, u32) {
    let mut dp = TestDataplane::load(tag);
    let ebpf = dp.dp.ebpf_mut();
    maps::set_config(
        ebpf,
        &Config {
            encap_src_v4: be4(ENCAP4)[0],
            encap_src_v6: be6(encap6()),
            gue_port_be: GUE_PORT.to_be(),
            _pad: [0; 2],
            hash_seed: 0,
            toobig_per_sec: rate,
            ..Default::default()
        },
    )
    .unwrap();
    for (id, addr, family, backend) in [
        (1, be4(VIP4), AF_INET, be4(Ipv4Addr::new(10, 0, 1, 1))),
        (2, be6(vip6()), AF_INET6, be6("fd00:1::4".parse().unwrap())),
    ] {
        let b = Backend {
            addr: backend,
            family,
            mac: backend_mac(id),
            ..Default::default()
        };
        maps::set_backend(ebpf, id, &b).unwrap();
        maps::swap_table(ebpf, id, &[id]).unwrap();
        let key = VipKey {
            addr,
            port_be: VIP_PORT.to_be(),
            proto: IPPROTO_TCP,
            family,
        };
        let svc = Service {
            id,
            mode: mode as u8,
            ..Default::default()
        };
        maps::set_service(ebpf, &key, &svc).unwrap();
    }
    let ns = Netns::new(tag);
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    let ifindex = ns.ifindex("va");
    (dp, ns, ifindex)
}

/// A client→VIP TCP ACK frame whose IP packet is `ip_len` bytes long (DF set).
fn tcp4_of(ip_len: usize, sport: u16) -> Vec<u8> {
    let mut l4 = packet::tcp4(CLIENT4, VIP4, sport, VIP_PORT, packet::Flags::ACK);
    l4.resize(ip_len - 20, 0x5a);
    let l3 = packet::ipv4(CLIENT4, VIP4, IpNextHeaderProtocols::Tcp, &l4);
    packet::ethernet(CLIENT_MAC, LB_MAC, EtherTypes::Ipv4, &l3)
}

fn tcp6_of(ip_len: usize, sport: u16) -> Vec<u8> {
    let mut l4 = packet::tcp6(client6(), vip6(), sport, VIP_PORT, packet::Flags::ACK);
    l4.resize(ip_len - 40, 0x5a);
    let l3 = packet::ipv6(client6(), vip6(), IpNextHeaderProtocols::Tcp, &l4);
    packet::ethernet(CLIENT_MAC, LB_MAC, EtherTypes::Ipv6, &l3)
}

/// One's-complement sum of big-endian 16-bit words (odd tail padded with zero).
fn ones_sum(bytes: &[u8]) -> u32 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

fn checksum(bytes: &[u8]) -> [u8; 2] {
    (!(ones_sum(bytes) as u16)).to_be_bytes()
}

/// The ICMP "fragmentation needed" the balancer must send for `input` (next-hop MTU
/// `mtu`): from the VIP to the client, MACs swapped, quoting [`QUOTE4`] bytes.
fn frag_needed(input: &[u8], mtu: u16) -> Vec<u8> {
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&input[14..14 + QUOTE4]);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c);
    let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&VIP4.octets());
    ip.extend_from_slice(&CLIENT4.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c);
    ip.extend_from_slice(&icmp);
    packet::ethernet(LB_MAC, CLIENT_MAC, EtherTypes::Ipv4, &ip)
}

/// The ICMPv6 "packet too big" for `input` (MTU `mtu`), quoting [`QUOTE6`] bytes.
fn packet_too_big(input: &[u8], mtu: u32) -> Vec<u8> {
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(&input[14..14 + QUOTE6]);
    // RFC 8200 §8.1 pseudo-header: source, destination, upper-layer length, next header.
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&vip6().octets());
    pseudo.extend_from_slice(&client6().octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let c = checksum(&pseudo);
    icmp[2..4].copy_from_slice(&c);
    let ip = packet::ipv6(vip6(), client6(), IpNextHeaderProtocols::Icmpv6, &icmp);
    packet::ethernet(LB_MAC, CLIENT_MAC, EtherTypes::Ipv6, &ip)
}

/// Independent checks of an answer's checksums (they must sum to 0xffff).
fn assert_checksums(frame: &[u8]) {
    if frame[12..14] == [0x08, 0x00] {
        assert_eq!(ones_sum(&frame[14..34]), 0xffff, "IPv4 header checksum");
        assert_eq!(ones_sum(&frame[34..]), 0xffff, "ICMP checksum");
    } else {
        let mut pseudo = frame[22..54].to_vec();
        pseudo.extend_from_slice(&((frame.len() - 54) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(&frame[54..]);
        assert_eq!(ones_sum(&pseudo), 0xffff, "ICMPv6 checksum");
    }
}

#[test]
fn ipv4_too_big_for_the_egress_mtu_is_answered_with_frag_needed() {
    let (mut dp, ns, va) = setup("pmtud4", ForwardMode::Ipip, 0);
    let expected = frag_needed(&tcp4_of(1500, 40000), 1480);
    assert_checksums(&expected);
    ns.run(|| {
        // 1480 + 20 = 1500: fits the 1500-byte MTU exactly, so it is wrapped.
        let fits = tcp4_of(1480, 40001);
        let out = packet::ipip4_output(&fits, backend_mac(1), ENCAP4, Ipv4Addr::new(10, 0, 1, 1));
        dp.check_on(va, "1480 bytes: wrapped", &fits, XDP_TX, &out, FORWARDED);
        let big = tcp4_of(1481, 40002);
        let answer = frag_needed(&big, 1480);
        dp.check_on(va, "1481 bytes: answered", &big, XDP_TX, &answer, TOO_BIG4);
        let full = tcp4_of(1500, 40000);
        dp.check_on(
            va,
            "1500 bytes: answered",
            &full,
            XDP_TX,
            &expected,
            TOO_BIG4,
        );
    });
}

#[test]
fn the_limit_follows_an_mtu_change_of_the_egress_interface() {
    let (mut dp, ns, va) = setup("pmtud-follow", ForwardMode::Ipip, 0);
    let input = tcp4_of(1400, 40000);
    let out = packet::ipip4_output(&input, backend_mac(1), ENCAP4, Ipv4Addr::new(10, 0, 1, 1));
    ns.run(|| {
        dp.check_on(
            va,
            "1400 bytes at MTU 1500",
            &input,
            XDP_TX,
            &out,
            FORWARDED,
        );
    });
    ns.ip(&["link", "set", "dev", "va", "mtu", "1400"]);
    let input = tcp4_of(1400, 40001);
    let answer = frag_needed(&input, 1380);
    ns.run(|| {
        dp.check_on(
            va,
            "1400 bytes at MTU 1400",
            &input,
            XDP_TX,
            &answer,
            TOO_BIG4,
        );
    });
    ns.ip(&["link", "set", "dev", "va", "mtu", "9000"]);
    let jumbo = tcp4_of(3000, 40003);
    let out = packet::ipip4_output(&jumbo, backend_mac(1), ENCAP4, Ipv4Addr::new(10, 0, 1, 1));
    ns.run(|| {
        dp.check_on(
            va,
            "3000 bytes at MTU 9000",
            &jumbo,
            XDP_TX,
            &out,
            FORWARDED,
        );
    });
}

/// Tagged frames (one tag, QinQ): the MTU counts IP bytes only, so the same sizes fit
/// or are answered as untagged, and the answer leaves on the request's VLANs (the
/// untagged answer with the request's tags after the MACs).
#[test]
fn tagged_too_big_is_answered_on_the_same_vlans() {
    let (mut dp, ns, va) = setup("pmtud-vlan", ForwardMode::Ipip, 0);
    for tags in [
        &[(ETH_P_8021Q, 10)][..],
        &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 20)][..],
    ] {
        let fits = tcp4_of(1480, 40001);
        let wrapped =
            packet::ipip4_output(&fits, backend_mac(1), ENCAP4, Ipv4Addr::new(10, 0, 1, 1));
        let big = tcp4_of(1481, 40002);
        let big6 = tcp6_of(1461, 40003);
        ns.run(|| {
            dp.check_on(
                va,
                &format!("{tags:04x?} 1480 bytes: wrapped"),
                &packet::tagged(&fits, tags),
                XDP_TX,
                &packet::tagged(&wrapped, tags),
                FORWARDED,
            );
            dp.check_on(
                va,
                &format!("{tags:04x?} 1481 bytes: answered"),
                &packet::tagged(&big, tags),
                XDP_TX,
                &packet::tagged(&frag_needed(&big, 1480), tags),
                TOO_BIG4,
            );
            dp.check_on(
                va,
                &format!("{tags:04x?} IPv6 1461 bytes: answered"),
                &packet::tagged(&big6, tags),
                XDP_TX,
                &packet::tagged(&packet_too_big(&big6, 1460), tags),
                TOO_BIG6,
            );
        });
    }
}

#[test]
fn gue_overhead_is_taken_off_the_announced_mtu() {
    let (mut dp, ns, va) = setup("pmtud-gue", ForwardMode::Gue, 0);
    let big = tcp4_of(1473, 40000);
    let answer = frag_needed(&big, 1472);
    ns.run(|| {
        dp.check_on(va, "GUE: 1473 + 28 > 1500", &big, XDP_TX, &answer, TOO_BIG4);
    });
    let big6 = tcp6_of(1453, 40000);
    let answer6 = packet_too_big(&big6, 1452);
    ns.run(|| {
        dp.check_on(
            va,
            "GUE6: 1453 + 48 > 1500",
            &big6,
            XDP_TX,
            &answer6,
            TOO_BIG6,
        );
    });
}

#[test]
fn ipv6_too_big_is_answered_with_packet_too_big_never_under_1280() {
    let (mut dp, ns, va) = setup("pmtud6", ForwardMode::Ipip, 0);
    let fits = tcp6_of(1460, 40001);
    let out = packet::ipip6_output(
        &fits,
        backend_mac(2),
        encap6(),
        "fd00:1::4".parse().unwrap(),
    );
    let big = tcp6_of(1500, 40000);
    let answer = packet_too_big(&big, 1460);
    assert_checksums(&answer);
    ns.run(|| {
        dp.check_on(va, "1460 bytes: wrapped", &fits, XDP_TX, &out, FORWARDED);
        dp.check_on(va, "1500 bytes: answered", &big, XDP_TX, &answer, TOO_BIG6);
    });
    // 1300 - 40 = 1260 would be ignored by the client (RFC 8201): 1280 is announced.
    ns.ip(&["link", "set", "dev", "va", "mtu", "1300"]);
    let big = tcp6_of(1500, 40002);
    let answer = packet_too_big(&big, 1280);
    ns.run(|| {
        dp.check_on(
            va,
            "MTU 1300: 1280 announced",
            &big,
            XDP_TX,
            &answer,
            TOO_BIG6,
        );
    });
}

#[test]
fn ipv4_without_df_is_dropped_not_answered() {
    let (mut dp, ns, va) = setup("pmtud-nodf", ForwardMode::Ipip, 0);
    let mut big = tcp4_of(1500, 40000);
    packet::tweak_ipv4(&mut big, |ip| ip.set_flags(0));
    let counted = [Stat::Rx, Stat::Drop, Stat::ConnMiss, Stat::TooBigNoDf];
    ns.run(|| {
        dp.check_on(va, "DF clear", &big, XDP_DROP, &big, &counted);
    });
}

#[test]
fn answers_are_rate_limited_per_cpu_and_second() {
    let (mut dp, ns, va) = setup("pmtud-rate", ForwardMode::Ipip, 2);
    let limited = [
        Stat::Rx,
        Stat::Drop,
        Stat::ConnMiss,
        Stat::IcmpTooBigRateLimited,
    ];
    // One flow per packet, so each is a connection-table miss.
    let big = |sport| tcp4_of(1500, sport);
    ns.run(|| {
        // The budget is per CPU: keep every run on one.
        pin_to_one_cpu();
        for (what, sport) in [("first", 40000), ("second", 40001)] {
            let answer = frag_needed(&big(sport), 1480);
            dp.check_on(va, what, &big(sport), XDP_TX, &answer, TOO_BIG4);
        }
        let third = big(40002);
        dp.check_on(va, "third: over budget", &third, XDP_DROP, &third, &limited);
        // A second later the budget is back.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let answer = frag_needed(&big(40003), 1480);
        dp.check_on(va, "next second", &big(40003), XDP_TX, &answer, TOO_BIG4);
    });
}

fn pin_to_one_cpu() {
    // SAFETY: a zeroed cpu_set_t is valid; the calls only touch this thread's mask.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        let cpu = (0..libc::CPU_SETSIZE as usize)
            .find(|&c| libc::CPU_ISSET(c, &set))
            .expect("some allowed CPU");
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// Two-arm: the limit is the tx-port slot's interface (here MTU 1400), not the
/// receiving one (1500); the answer still goes back out of the receiving interface.
#[test]
fn a_two_arm_service_is_limited_by_its_egress_interface() {
    let (mut dp, ns, va) = setup("pmtud-2arm", ForwardMode::Ipip, 0);
    ns.ip(&["link", "add", "ea", "type", "veth", "peer", "name", "eb"]);
    ns.ip(&["link", "set", "dev", "ea", "mtu", "1400"]);
    let (egress, mac) = (ns.ifindex("ea"), ns.mac("ea"));
    let ebpf = dp.dp.ebpf_mut();
    // The devmap resolves the ifindex in the namespace of the thread that sets it.
    ns.run(|| maps::set_tx_port(ebpf, 1, egress, mac)).unwrap();
    let key = VipKey {
        addr: be4(VIP4),
        port_be: VIP_PORT.to_be(),
        proto: IPPROTO_TCP,
        family: AF_INET,
    };
    let svc = Service {
        id: 1,
        mode: ForwardMode::Ipip as u8,
        tx_port: 1,
        ..Default::default()
    };
    maps::set_service(dp.dp.ebpf_mut(), &key, &svc).unwrap();
    let fits = tcp4_of(1380, 40000);
    let mut out = packet::ipip4_output(&fits, backend_mac(1), ENCAP4, Ipv4Addr::new(10, 0, 1, 1));
    out[6..12].copy_from_slice(&mac);
    let big = tcp4_of(1381, 40001);
    let answer = frag_needed(&big, 1380);
    let redirected = [Stat::Rx, Stat::Redirect, Stat::ConnMiss];
    ns.run(|| {
        dp.check_on(
            va,
            "1380 bytes: wrapped, redirected",
            &fits,
            XDP_REDIRECT,
            &out,
            &redirected,
        );
        dp.check_on(
            va,
            "1381 bytes: answered on ingress",
            &big,
            XDP_TX,
            &answer,
            TOO_BIG4,
        );
    });
}

/// A too-big ICMP about a VIP flow (forwarded to the flow's backend when it fits) that
/// does not fit once wrapped is dropped, never answered: no ICMP error about an ICMP
/// error (RFC 1122 §3.2.2).
#[test]
fn an_icmp_error_too_big_to_wrap_is_dropped_not_answered() {
    let (mut dp, ns, va) = setup("pmtud-icmp", ForwardMode::Ipip, 0);
    // A router's frag-needed about the VIP's reply to the client, padded to 1500 bytes.
    let quoted_l4 = packet::tcp4(VIP4, CLIENT4, VIP_PORT, 40000, packet::Flags::ACK);
    let quoted = packet::ipv4(VIP4, CLIENT4, IpNextHeaderProtocols::Tcp, &quoted_l4);
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(&quoted);
    icmp.resize(1500 - 20, 0);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c);
    let router = Ipv4Addr::new(10, 0, 0, 254);
    let l3 = packet::ipv4(router, VIP4, IpNextHeaderProtocols::Icmp, &icmp);
    let frame = packet::ethernet(CLIENT_MAC, LB_MAC, EtherTypes::Ipv4, &l3);
    let counted = [
        Stat::Rx,
        Stat::Drop,
        Stat::IcmpTooBig,
        Stat::ConnMiss,
        Stat::EncapTooBig,
    ];
    ns.run(|| {
        dp.check_on(
            va,
            "1500-byte frag-needed",
            &frame,
            XDP_DROP,
            &frame,
            &counted,
        );
    });
}
