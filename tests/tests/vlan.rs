//! 802.1Q / QinQ through BPF_PROG_TEST_RUN (docs/vlans.md): tagged VIP traffic is
//! balanced like untagged traffic, in the tail-called copies `xlb_vlan` / `xlb_qinq`,
//! and everything sent back out of a tagged frame keeps its tags. Each expected frame is
//! the untagged expectation (built independently, as in forwarding.rs) with the input's
//! tags inserted after the MACs; a third tag passes, a tag cut short drops, and a
//! VLAN-scoped service matches only its (innermost) VLAN, established flows included.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::{
    service::{flow_hash, AF_INET, AF_INET6},
    wire::{
        ETH_P_8021AD, ETH_P_8021Q, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, ICMP_ECHO_REPLY,
        ICMP_ECHO_REQUEST, IPPROTO_TCP, XDP_DROP, XDP_PASS, XDP_TX,
    },
    Config, FlowKey, ForwardMode, Service, Stat, VipKey,
};
use lb_userspace::dataplane::aya::maps;
use pnet_packet::{ethernet::EtherTypes, ip::IpNextHeaderProtocols as P};
use testbed::{
    case::{Case, CONFIRMED_TX, ESTABLISHED_TX, NEW_FLOW_TX},
    dataplane::TestDataplane,
    fixture::{backend_mac, install_dsr_pair, switch_to_encap, vip6, VIP4, VIP_PORT},
    packet::{self, be4, be6, CLIENT_MAC, LB_MAC},
};

const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// One tag, VLAN 10.
const DOT1Q: &[(u16, u16)] = &[(ETH_P_8021Q, 10)];
/// QinQ: service VLAN 100 (802.1ad) around customer VLAN 20.
const QINQ: &[(u16, u16)] = &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 20)];
/// QinQ with 0x8100 as the outer TPID too (common on switches that predate 802.1ad).
const QINQ_8100: &[(u16, u16)] = &[(ETH_P_8021Q, 200), (ETH_P_8021Q, 30)];
const MISMATCH: &[Stat] = &[Stat::Rx, Stat::Pass, Stat::VlanMismatch];
const ENCAP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GUE_PORT: u16 = 6080;
/// The IPv6 service's table after [`switch_to_encap`].
const TABLE6: [u32; 7] = [4, 5, 6, 4, 5, 6, 4];

fn client6() -> Ipv6Addr {
    "fd00::1".parse().unwrap()
}

fn encap6() -> Ipv6Addr {
    "fd00::2".parse().unwrap()
}

/// Both services of [`setup`] to `mode`, with encap sources ENCAP4 / encap6() and GUE
/// port GUE_PORT.
fn use_encap(dp: &mut TestDataplane, mode: ForwardMode) {
    maps::set_config(
        dp.dp.ebpf_mut(),
        &Config {
            encap_src_v4: be4(ENCAP4)[0],
            encap_src_v6: be6(encap6()),
            gue_port_be: GUE_PORT.to_be(),
            ..Default::default()
        },
    )
    .unwrap();
    switch_to_encap(dp, mode);
}

/// DSR services on VIP4:80 and [VIP6]:80, both with backend 1 only.
fn setup(tag: &str) -> TestDataplane {
    let mut dp = TestDataplane::load(tag);
    install_dsr_pair(&mut dp, 1, &[1]);
    dp
}

fn syn4(sport: u16) -> Vec<u8> {
    packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::SYN)
}

fn ack4(sport: u16) -> Vec<u8> {
    packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::Flags::ACK)
}

fn syn6(sport: u16) -> Vec<u8> {
    packet::tcp6_frame(client6(), vip6(), sport, VIP_PORT, packet::SYN)
}

fn ack6(sport: u16) -> Vec<u8> {
    packet::tcp6_frame(client6(), vip6(), sport, VIP_PORT, packet::Flags::ACK)
}

fn flow(family: u8, sport: u16) -> FlowKey {
    if family == AF_INET {
        packet::tcp_flow(CLIENT4.into(), VIP4.into(), sport, VIP_PORT)
    } else {
        packet::tcp_flow(client6().into(), vip6().into(), sport, VIP_PORT)
    }
}

/// A row whose tagged input must come out as the untagged `output` with the same tags.
fn tagged_case(
    what: &str,
    tags: &[(u16, u16)],
    input: &[u8],
    verdict: u32,
    output: &[u8],
    counted: &[Stat],
) -> Case {
    Case::new(
        format!("{what} (tags {tags:04x?})"),
        packet::tagged(input, tags),
        verdict,
        packet::tagged(output, tags),
        counted,
    )
}

#[test]
fn dsr_balances_tagged_frames_and_keeps_their_tags() {
    let mut dp = setup("vlan-dsr");
    let mut cases = Vec::new();
    for (i, tags) in [DOT1Q, QINQ, QINQ_8100].into_iter().enumerate() {
        let sport = 40000 + i as u16;
        for (family, syn, ack) in [
            ("v4", syn4(sport), ack4(sport)),
            ("v6", syn6(sport), ack6(sport)),
        ] {
            let mac = backend_mac(1);
            let (syn_out, ack_out) = (packet::dsr_output(&syn, mac), packet::dsr_output(&ack, mac));
            cases.push(tagged_case(
                &format!("{family} SYN"),
                tags,
                &syn,
                XDP_TX,
                &syn_out,
                NEW_FLOW_TX,
            ));
            // The first ACK confirms the SYN's entry, the next one is established.
            for (what, counted) in [("ACK", CONFIRMED_TX), ("2nd ACK", ESTABLISHED_TX)] {
                cases.push(tagged_case(
                    &format!("{family} {what}"),
                    tags,
                    &ack,
                    XDP_TX,
                    &ack_out,
                    counted,
                ));
            }
        }
    }
    dp.run_cases(cases);
}

#[test]
fn a_flow_is_its_five_tuple_on_one_vlan() {
    let mut dp = setup("vlan-flow-key");
    let (syn, ack) = (syn4(41000), ack4(41000));
    let out = packet::dsr_output(&ack, backend_mac(1));
    dp.run_cases([
        tagged_case(
            "SYN on VLAN 10",
            DOT1Q,
            &syn,
            XDP_TX,
            &packet::dsr_output(&syn, backend_mac(1)),
            NEW_FLOW_TX,
        ),
        tagged_case("ACK on VLAN 10", DOT1Q, &ack, XDP_TX, &out, CONFIRMED_TX),
        // The same 5-tuple on VLAN 11 and untagged: no entry of their own yet.
        tagged_case(
            "ACK on VLAN 11",
            &[(ETH_P_8021Q, 11)],
            &ack,
            XDP_TX,
            &out,
            NEW_FLOW_TX,
        ),
        Case::new(
            "ACK untagged",
            ack.clone(),
            XDP_TX,
            out.clone(),
            NEW_FLOW_TX,
        ),
        // QinQ: the innermost VLAN names the flow (10, as the single tag above, whose
        // entry the ACK confirmed).
        tagged_case(
            "ACK on QinQ 300/10",
            &[(ETH_P_8021AD, 300), (ETH_P_8021Q, 10)],
            &ack,
            XDP_TX,
            &out,
            ESTABLISHED_TX,
        ),
    ]);
}

#[test]
fn ipip_and_gue_put_the_outer_header_after_the_tags() {
    for mode in [ForwardMode::Ipip, ForwardMode::Gue] {
        let mut dp = setup(&format!("vlan-{mode:?}"));
        use_encap(&mut dp, mode);
        let mut cases = Vec::new();
        for (i, tags) in [DOT1Q, QINQ].into_iter().enumerate() {
            let sport = 42000 + i as u16;
            let (f4, f6) = (flow(AF_INET, sport), flow(AF_INET6, sport));
            let backend4 = Ipv4Addr::new(10, 0, 1, 1);
            let id6 = TABLE6[(flow_hash(&f6, false) % TABLE6.len() as u32) as usize];
            let backend6: Ipv6Addr = format!("fd00:1::{id6}").parse().unwrap();
            let (in4, in6) = (syn4(sport), syn6(sport));
            let (out4, out6) = match mode {
                ForwardMode::Gue => {
                    let sport_of = |f: &FlowKey| 0xc000 | (flow_hash(f, false) as u16 & 0x3fff);
                    (
                        packet::gue4_output(
                            &in4,
                            backend_mac(1),
                            ENCAP4,
                            backend4,
                            sport_of(&f4),
                            GUE_PORT,
                        ),
                        packet::gue6_output(
                            &in6,
                            backend_mac(id6),
                            encap6(),
                            backend6,
                            sport_of(&f6),
                            GUE_PORT,
                        ),
                    )
                }
                _ => (
                    packet::ipip4_output(&in4, backend_mac(1), ENCAP4, backend4),
                    packet::ipip6_output(&in6, backend_mac(id6), encap6(), backend6),
                ),
            };
            cases.push(tagged_case(
                &format!("{mode:?} v4 SYN"),
                tags,
                &in4,
                XDP_TX,
                &out4,
                NEW_FLOW_TX,
            ));
            cases.push(tagged_case(
                &format!("{mode:?} v6 SYN"),
                tags,
                &in6,
                XDP_TX,
                &out6,
                NEW_FLOW_TX,
            ));
        }
        dp.run_cases(cases);
    }
}

#[test]
fn echo_replies_keep_the_tags() {
    let mut dp = setup("vlan-echo");
    let payload = b"tagged ping";
    let request = packet::ethernet(
        CLIENT_MAC,
        LB_MAC,
        EtherTypes::Ipv4,
        &packet::ipv4(
            CLIENT4,
            VIP4,
            P::Icmp,
            &packet::icmp4_echo(ICMP_ECHO_REQUEST, 7, 1, payload),
        ),
    );
    let mut reply = packet::ethernet(
        LB_MAC,
        CLIENT_MAC,
        EtherTypes::Ipv4,
        &packet::ipv4(
            VIP4,
            CLIENT4,
            P::Icmp,
            &packet::icmp4_echo(ICMP_ECHO_REPLY, 7, 1, payload),
        ),
    );
    // The balancer answers with TTL 64 (and the checksum that goes with it).
    packet::tweak_ipv4(&mut reply, |_| {});
    let (c6, v6) = (client6(), vip6());
    let request6 = packet::ethernet(
        CLIENT_MAC,
        LB_MAC,
        EtherTypes::Ipv6,
        &packet::ipv6(
            c6,
            v6,
            P::Icmpv6,
            &packet::icmp6_echo(ICMPV6_ECHO_REQUEST, c6, v6, 9, 2, payload),
        ),
    );
    let reply6 = packet::ethernet(
        LB_MAC,
        CLIENT_MAC,
        EtherTypes::Ipv6,
        &packet::ipv6(
            v6,
            c6,
            P::Icmpv6,
            &packet::icmp6_echo(ICMPV6_ECHO_REPLY, v6, c6, 9, 2, payload),
        ),
    );
    const ECHO: &[Stat] = &[Stat::Rx, Stat::Tx, Stat::IcmpEcho];
    let mut cases = Vec::new();
    for tags in [DOT1Q, QINQ] {
        cases.push(tagged_case(
            "echo to VIP4",
            tags,
            &request,
            XDP_TX,
            &reply,
            ECHO,
        ));
        cases.push(tagged_case(
            "echo to VIP6",
            tags,
            &request6,
            XDP_TX,
            &reply6,
            ECHO,
        ));
    }
    dp.run_cases(cases);
}

#[test]
fn tags_beyond_qinq_pass_and_cut_tags_drop() {
    let mut dp = setup("vlan-edges");
    let syn = syn4(43000);
    const VLAN: &[Stat] = &[Stat::Rx, Stat::Pass, Stat::Vlan];
    const TRUNCATED: &[Stat] = &[Stat::Rx, Stat::Drop, Stat::Truncated];
    let three = packet::tagged(
        &syn,
        &[(ETH_P_8021AD, 1), (ETH_P_8021Q, 2), (ETH_P_8021Q, 3)],
    );
    let one = packet::tagged(&syn, DOT1Q);
    let two = packet::tagged(&syn, QINQ);
    let arp = packet::ethernet(CLIENT_MAC, LB_MAC, EtherTypes::Arp, &[0u8; 28]);
    dp.run_cases([
        Case::unchanged("three tags", three, XDP_PASS, VLAN),
        // MACs and TPID only: the TCI is missing.
        Case::unchanged(
            "cut inside the tag",
            one[..15].to_vec(),
            XDP_DROP,
            TRUNCATED,
        ),
        // TCI, but no inner ethertype.
        Case::unchanged("cut after the TCI", one[..16].to_vec(), XDP_DROP, TRUNCATED),
        Case::unchanged(
            "cut inside the inner tag",
            two[..19].to_vec(),
            XDP_DROP,
            TRUNCATED,
        ),
        // Whole tags, IP header cut: what the untagged path says of a cut header.
        Case::unchanged(
            "cut inside the IPv4 header",
            one[..30].to_vec(),
            XDP_DROP,
            TRUNCATED,
        ),
        Case::unchanged(
            "tagged ARP",
            packet::tagged(&arp, DOT1Q),
            XDP_PASS,
            &[Stat::Rx, Stat::Pass, Stat::NotVip],
        ),
    ]);
}

#[test]
fn a_vlan_scoped_service_matches_only_its_innermost_vlan() {
    let mut dp = setup("vlan-scope");
    for (id, addr, family) in [(1, be4(VIP4), AF_INET), (2, be6(vip6()), AF_INET6)] {
        let key = VipKey {
            addr,
            port_be: VIP_PORT.to_be(),
            proto: IPPROTO_TCP,
            family,
        };
        let svc = Service {
            id,
            mode: ForwardMode::Dsr as u8,
            vlan: 10,
            ..Default::default()
        };
        maps::set_service(dp.dp.ebpf_mut(), &key, &svc).unwrap();
    }
    let mut cases = Vec::new();
    for (family, syn, ack) in [
        ("v4", syn4(44000), ack4(44000)),
        ("v6", syn6(44000), ack6(44000)),
    ] {
        let mac = backend_mac(1);
        let (syn_out, ack_out) = (packet::dsr_output(&syn, mac), packet::dsr_output(&ack, mac));
        let outer_10 = &[(ETH_P_8021AD, 10), (ETH_P_8021Q, 11)][..];
        let inner_10 = &[(ETH_P_8021AD, 99), (ETH_P_8021Q, 10)][..];
        cases.extend([
            tagged_case(
                &format!("{family} SYN on VLAN 10"),
                DOT1Q,
                &syn,
                XDP_TX,
                &syn_out,
                NEW_FLOW_TX,
            ),
            tagged_case(
                &format!("{family} ACK on VLAN 10"),
                DOT1Q,
                &ack,
                XDP_TX,
                &ack_out,
                CONFIRMED_TX,
            ),
            Case::unchanged(
                format!("{family} SYN untagged"),
                syn.clone(),
                XDP_PASS,
                MISMATCH,
            ),
            Case::unchanged(
                format!("{family} SYN on VLAN 11"),
                packet::tagged(&syn, &[(ETH_P_8021Q, 11)]),
                XDP_PASS,
                MISMATCH,
            ),
            Case::unchanged(
                format!("{family} SYN on QinQ 10/11"),
                packet::tagged(&syn, outer_10),
                XDP_PASS,
                MISMATCH,
            ),
            tagged_case(
                &format!("{family} SYN on QinQ 99/10"),
                inner_10,
                &syn,
                XDP_TX,
                &syn_out,
                NEW_FLOW_TX,
            ),
            // The established flow's entry (VLAN 10) serves no other VLAN's packets.
            Case::unchanged(
                format!("{family} ACK untagged"),
                ack.clone(),
                XDP_PASS,
                MISMATCH,
            ),
            Case::unchanged(
                format!("{family} ACK on VLAN 11"),
                packet::tagged(&ack, &[(ETH_P_8021Q, 11)]),
                XDP_PASS,
                MISMATCH,
            ),
        ]);
    }
    dp.run_cases(cases);
}
