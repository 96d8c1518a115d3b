//! VIP forwarding through BPF_PROG_TEST_RUN: service lookup, Maglev choice, connection
//! tracking, DSR output bytes, atomic table swaps, and the deliberate edge cases.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::{
    service::{flow_hash, AF_INET, AF_INET6},
    wire::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST,
        ICMPV6_PACKET_TOO_BIG, ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST,
        ICMP_FRAG_NEEDED, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ROUTING,
        IPPROTO_TCP, IPV4_HLEN, IPV6_HLEN, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
    },
    FlowKey, ForwardMode, Service, Stat, VipKey,
};
use lb_userspace::dataplane::aya::maps;
use testbed::{
    case::{Case, CONFIRMED_TX, ESTABLISHED_TX, NEW_FLOW_TX, NOT_VIP},
    dataplane::TestDataplane,
    fixture::{backend_mac, install_dsr_pair, switch_to_encap, vip6, VIP4, VIP_PORT},
    packet::{self, be4, be6},
};

const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const TABLE: [u32; 7] = [1, 2, 3, 1, 2, 3, 1];

fn client6() -> Ipv6Addr {
    "fd00::1".parse().unwrap()
}

/// A data plane with backends 1..=3 and DSR services on VIP4:80/tcp and [VIP6]:80/tcp
/// using `TABLE`.
fn setup(tag: &str) -> TestDataplane {
    let mut dp = TestDataplane::load(tag);
    install_dsr_pair(&mut dp, 3, &TABLE);
    dp
}

/// The key of the DSR service on VIP4:80/tcp that [`setup`] installs.
fn key4() -> VipKey {
    VipKey {
        addr: be4(VIP4),
        port_be: VIP_PORT.to_be(),
        proto: IPPROTO_TCP,
        family: AF_INET,
    }
}

fn flow4(sport: u16) -> FlowKey {
    FlowKey {
        src: be4(CLIENT4),
        dst: be4(VIP4),
        sport_be: sport.to_be(),
        dport_be: VIP_PORT.to_be(),
        proto: IPPROTO_TCP,
        family: AF_INET,
        vlan: 0,
    }
}

fn flow6(sport: u16) -> FlowKey {
    FlowKey {
        src: be6(client6()),
        dst: be6(vip6()),
        sport_be: sport.to_be(),
        dport_be: VIP_PORT.to_be(),
        proto: IPPROTO_TCP,
        family: AF_INET6,
        vlan: 0,
    }
}

/// The backend `table` assigns to `flow` (the data plane's own hash, shared via lb-common).
fn expected_backend(flow: &FlowKey, table: &[u32]) -> u32 {
    table[(flow_hash(flow, false) % table.len() as u32) as usize]
}

#[test]
fn dsr_forwards_new_and_established_flows_to_the_maglev_backend() {
    let mut dp = setup("dsr");
    let mut per_backend = [0u64; 4];
    let mut cases = Vec::new();
    for sport in [40000u16, 40001, 40002, 40003, 40004, 40005] {
        let syn = packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::SYN);
        let ack = packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::Flags::ACK);
        let id = expected_backend(&flow4(sport), &TABLE);
        per_backend[id as usize] += 1;
        cases.push(Case::new(
            format!("SYN from :{sport}"),
            syn.clone(),
            XDP_TX,
            packet::dsr_output(&syn, backend_mac(id)),
            NEW_FLOW_TX,
        ));
        cases.push(Case::new(
            format!("ACK from :{sport}"),
            ack.clone(),
            XDP_TX,
            packet::dsr_output(&ack, backend_mac(id)),
            CONFIRMED_TX,
        ));
        cases.push(Case::new(
            format!("next ACK from :{sport}"),
            ack.clone(),
            XDP_TX,
            packet::dsr_output(&ack, backend_mac(id)),
            ESTABLISHED_TX,
        ));
    }
    dp.run_cases(cases);

    // Per-service and per-backend counters: 6 flows of 3 packets each.
    let (services, backends) =
        lb_userspace::dataplane::aya::stats::read_loaded_flows(dp.dp.ebpf()).unwrap();
    let svc = services
        .iter()
        .find(|s| s.id == 1)
        .expect("service 1 listed");
    assert_eq!(
        (svc.counter.packets, svc.counter.new_flows),
        (18, 6),
        "{svc:?}"
    );
    let frame_len = packet::tcp4_frame(CLIENT4, VIP4, 1, VIP_PORT, packet::SYN).len() as u64;
    assert_eq!(svc.counter.bytes, 18 * frame_len);
    for b in &backends {
        let flows = per_backend[b.id as usize];
        assert_eq!(
            (b.counter.packets, b.counter.new_flows),
            (3 * flows, flows),
            "backend {}",
            b.id
        );
    }
}

#[test]
fn dsr_forwards_ipv6() {
    let mut dp = setup("dsr6");
    let input = packet::tcp6_frame(client6(), vip6(), 40000, VIP_PORT, packet::SYN);
    let output = packet::dsr_output(&input, backend_mac(expected_backend(&flow6(40000), &TABLE)));
    dp.run_case(&Case::new("IPv6 SYN", input, XDP_TX, output, NEW_FLOW_TX));
}

/// Issue 15, item 4: hop-by-hop and destination options before TCP are walked, so such
/// VIP traffic is balanced (DSR: the same frame, MACs rewritten), not passed; beyond
/// three of them it is passed as before.
#[test]
fn dsr_forwards_ipv6_behind_options_headers() {
    let mut dp = setup("dsr6opt");
    let chains: [&[u8]; 3] = [
        &[IPPROTO_HOPOPTS],
        &[IPPROTO_DSTOPTS],
        &[IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS],
    ];
    for chain in chains {
        let input = packet::tcp6_frame_with_ext(client6(), vip6(), 40000, VIP_PORT, chain);
        let output =
            packet::dsr_output(&input, backend_mac(expected_backend(&flow6(40000), &TABLE)));
        dp.run_case(&Case::new(
            format!("IPv6 SYN behind {chain:?}"),
            input,
            XDP_TX,
            output,
            NEW_FLOW_TX,
        ));
    }
    let four = [
        IPPROTO_HOPOPTS,
        IPPROTO_DSTOPTS,
        IPPROTO_DSTOPTS,
        IPPROTO_DSTOPTS,
    ];
    dp.run_case(&Case::unchanged(
        "IPv6 SYN behind four options headers",
        packet::tcp6_frame_with_ext(client6(), vip6(), 40000, VIP_PORT, &four),
        XDP_PASS,
        &[Stat::Rx, Stat::Pass, Stat::Ipv6ExtHeader],
    ));
}

/// Opens a TCP flow as a client does (SYN, then ACK: the ACK confirms the SYN's
/// unconfirmed entry) and checks that both went to `backend` by DSR.
fn open_flow(dp: &mut TestDataplane, syn: &[u8], ack: &[u8], backend: u32) {
    let to = |frame: &[u8]| packet::dsr_output(frame, backend_mac(backend));
    dp.run_cases([
        Case::new("SYN", syn.to_vec(), XDP_TX, to(syn), NEW_FLOW_TX),
        Case::new("its ACK", ack.to_vec(), XDP_TX, to(ack), CONFIRMED_TX),
    ]);
}

#[test]
fn table_swap_keeps_established_flows_and_moves_new_ones() {
    let mut dp = setup("swap");
    // Pick a flow whose old backend is 1, and establish it.
    let sport = (40000u16..)
        .find(|p| expected_backend(&flow4(*p), &TABLE) == 1)
        .unwrap();
    let syn = packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::SYN);
    let ack = packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::Flags::ACK);
    open_flow(&mut dp, &syn, &ack, 1);

    // A second flow on backend 1, in each family, for the reused-4-tuple checks.
    let sport_b = (sport + 1..)
        .find(|p| expected_backend(&flow4(*p), &TABLE) == 1)
        .unwrap();
    let syn_b = packet::tcp4_frame(CLIENT4, VIP4, sport_b, VIP_PORT, packet::SYN);
    let ack_b = packet::tcp4_frame(CLIENT4, VIP4, sport_b, VIP_PORT, packet::Flags::ACK);
    open_flow(&mut dp, &syn_b, &ack_b, 1);
    let sport6 = (40000u16..)
        .find(|p| expected_backend(&flow6(*p), &TABLE) == 1)
        .unwrap();
    let syn6 = packet::tcp6_frame(client6(), vip6(), sport6, VIP_PORT, packet::SYN);
    let ack6 = packet::tcp6_frame(client6(), vip6(), sport6, VIP_PORT, packet::Flags::ACK);
    open_flow(&mut dp, &syn6, &ack6, 1);

    // New table without backend 1 (backend 1 still exists: drain semantics).
    let new_table = [2, 3, 2, 3, 2, 3, 2];
    maps::swap_table(dp.dp.ebpf_mut(), 1, &new_table).unwrap();
    maps::swap_table(dp.dp.ebpf_mut(), 2, &new_table).unwrap();
    let synack = packet::tcp4_frame(
        CLIENT4,
        VIP4,
        sport,
        VIP_PORT,
        packet::SYN | packet::Flags::ACK,
    );
    let reused = expected_backend(&flow4(sport_b), &new_table);
    let id6 = expected_backend(&flow6(sport6), &new_table);
    let other = (41000u16..)
        .find(|p| expected_backend(&flow4(*p), &TABLE) == 1)
        .unwrap();
    let syn2 = packet::tcp4_frame(CLIENT4, VIP4, other, VIP_PORT, packet::SYN);
    let id = expected_backend(&flow4(other), &new_table);
    assert_ne!(id, 1);
    let to = |frame: &[u8], id| packet::dsr_output(frame, backend_mac(id));
    dp.run_cases([
        Case::new(
            "established flow after swap",
            ack.clone(),
            XDP_TX,
            to(&ack, 1),
            ESTABLISHED_TX,
        ),
        // A new connection on the same 4-tuple (a client reusing its port) is a SYN: it
        // follows the new table, never the drained backend the old entry names, and takes
        // over the entry. Both address families.
        Case::new(
            "SYN on a reused 4-tuple",
            syn_b.clone(),
            XDP_TX,
            to(&syn_b, reused),
            NEW_FLOW_TX,
        ),
        // The old connection's entry went with that SYN: the ACK confirms the new one.
        Case::new(
            "its ACK follows the new entry",
            ack_b.clone(),
            XDP_TX,
            to(&ack_b, reused),
            CONFIRMED_TX,
        ),
        // Only SYN-without-ACK is new: a SYN+ACK follows the entry like any other packet.
        Case::new(
            "SYN+ACK follows the entry",
            synack.clone(),
            XDP_TX,
            to(&synack, 1),
            ESTABLISHED_TX,
        ),
        Case::new(
            "IPv6 SYN on a reused 4-tuple",
            syn6.clone(),
            XDP_TX,
            to(&syn6, id6),
            NEW_FLOW_TX,
        ),
        // A new flow follows the new table.
        Case::new(
            "new flow after swap",
            syn2.clone(),
            XDP_TX,
            to(&syn2, id),
            NEW_FLOW_TX,
        ),
    ]);

    // Removing backend 1 (reset semantics) moves its established flow to the new table.
    maps::clear_backend(dp.dp.ebpf_mut(), 1).unwrap();
    let id = expected_backend(&flow4(sport), &new_table);
    dp.run_case(&Case::new(
        "flow of a removed backend",
        ack.clone(),
        XDP_TX,
        to(&ack, id),
        NEW_FLOW_TX,
    ));
}

#[test]
fn edge_cases_have_defined_verdicts_and_counters() {
    let mut dp = setup("edges");
    let syn = packet::tcp4_frame(CLIENT4, VIP4, 40000, VIP_PORT, packet::SYN);
    let options = [1, 1, 1, 0];
    let tweaked = |f: &dyn Fn(&mut pnet_packet::ipv4::MutableIpv4Packet)| {
        let mut frame = syn.clone();
        packet::tweak_ipv4(&mut frame, f);
        frame
    };
    let mut cases = vec![
        Case::unchanged(
            "VIP, port without service",
            packet::tcp4_frame(CLIENT4, VIP4, 40000, 81, packet::SYN),
            XDP_PASS,
            NOT_VIP,
        ),
        Case::unchanged(
            "VIP, protocol without service",
            packet::udp4_frame(CLIENT4, VIP4, 40000, VIP_PORT, b"x"),
            XDP_PASS,
            NOT_VIP,
        ),
        Case::unchanged(
            "IPv4 options to a VIP",
            packet::tcp4_frame_with_options(CLIENT4, VIP4, 40000, VIP_PORT, &options),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Ipv4Options],
        ),
        Case::unchanged(
            "IPv4 options, not a VIP",
            packet::tcp4_frame_with_options(
                CLIENT4,
                Ipv4Addr::new(10, 0, 0, 5),
                40000,
                VIP_PORT,
                &options,
            ),
            XDP_PASS,
            NOT_VIP,
        ),
        Case::unchanged(
            "first fragment to a VIP",
            tweaked(&|ip| ip.set_flags(0b001)),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Fragment],
        ),
        Case::unchanged(
            "later fragment (no ports; no all-ports service)",
            tweaked(&|ip| ip.set_fragment_offset(100)),
            XDP_PASS,
            NOT_VIP,
        ),
    ];
    for ttl in [0u8, 1] {
        cases.push(Case::unchanged(
            format!("TTL {ttl} to a VIP"),
            tweaked(&|ip| ip.set_ttl(ttl)),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::TtlExpired],
        ));
    }
    cases.extend([
        Case::unchanged(
            "IP version 5 in an IPv4 frame",
            tweaked(&|ip| ip.set_version(5)),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Malformed],
        ),
        Case::unchanged(
            "IHL 4",
            tweaked(&|ip| ip.set_header_length(4)),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Malformed],
        ),
        // The IP header promises a TCP header the frame does not carry.
        Case::unchanged(
            "frame cut inside the TCP header",
            syn[..ETH_HLEN + IPV4_HLEN + 2].to_vec(),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Truncated],
        ),
        Case::unchanged(
            "frame cut inside the IPv4 header",
            syn[..ETH_HLEN + 10].to_vec(),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Truncated],
        ),
        // One tag and QinQ are balanced (tests/tests/vlan.rs); a third tag is not parsed.
        Case::unchanged(
            "VIP traffic behind three 802.1Q tags",
            packet::tagged(
                &syn,
                &[(ETH_P_8021AD, 42), (ETH_P_8021Q, 43), (ETH_P_8021Q, 44)],
            ),
            XDP_PASS,
            &[Stat::Rx, Stat::Pass, Stat::Vlan],
        ),
        Case::unchanged(
            "IPv6 routing header to a VIP",
            packet::tcp6_frame_with_ext(client6(), vip6(), 40000, VIP_PORT, &[IPPROTO_ROUTING]),
            XDP_PASS,
            &[Stat::Rx, Stat::Pass, Stat::Ipv6ExtHeader],
        ),
        Case::unchanged(
            "IPv6 fragment header behind hop-by-hop options to a VIP",
            packet::tcp6_frame_with_ext(
                client6(),
                vip6(),
                40000,
                VIP_PORT,
                &[IPPROTO_HOPOPTS, IPPROTO_FRAGMENT],
            ),
            XDP_PASS,
            &[Stat::Rx, Stat::Pass, Stat::Ipv6ExtHeader],
        ),
        Case::unchanged(
            "unknown protocol to a VIP",
            packet::ethernet(
                packet::CLIENT_MAC,
                packet::LB_MAC,
                pnet_packet::ethernet::EtherTypes::Ipv4,
                &packet::ipv4(
                    CLIENT4,
                    VIP4,
                    pnet_packet::ip::IpNextHeaderProtocols::Gre,
                    &[0u8; 8],
                ),
            ),
            XDP_PASS,
            NOT_VIP,
        ),
    ]);
    dp.run_cases(cases);
}

#[test]
fn service_without_live_backend_drops() {
    let mut dp = setup("nobackend");
    for id in 1..=3 {
        maps::clear_backend(dp.dp.ebpf_mut(), id).unwrap();
    }
    dp.run_case(&Case::unchanged(
        "all backends removed",
        packet::tcp4_frame(CLIENT4, VIP4, 40000, VIP_PORT, packet::SYN),
        XDP_DROP,
        &[Stat::Rx, Stat::Drop, Stat::ConnMiss, Stat::NoBackend],
    ));
}

/// `fallback: "pass"`: with no usable backend, new flows go to the local stack untouched
/// (counted `fallback_pass`), while established flows still reach their backend.
#[test]
fn fallback_pass_hands_new_flows_to_the_stack_when_no_backend_is_left() {
    let mut dp = setup("fallback");
    let key = key4();
    let svc = Service {
        id: 1,
        mode: ForwardMode::Dsr as u8,
        flags: lb_common::service::service_flags::FALLBACK_PASS,
        ..Default::default()
    };
    maps::set_service(dp.dp.ebpf_mut(), &key, &svc).unwrap();
    let syn = packet::tcp4_frame(CLIENT4, VIP4, 40000, VIP_PORT, packet::SYN);
    let ack = packet::tcp4_frame(CLIENT4, VIP4, 40000, VIP_PORT, packet::Flags::ACK);
    let id = expected_backend(&flow4(40000), &TABLE);
    open_flow(&mut dp, &syn, &ack, id);
    // Every backend drained: an all-zero table (what the control plane installs).
    maps::swap_table(dp.dp.ebpf_mut(), 1, &[0; 7]).unwrap();
    dp.run_cases([
        Case::unchanged(
            "new flow, no backend",
            packet::tcp4_frame(CLIENT4, VIP4, 40001, VIP_PORT, packet::SYN),
            XDP_PASS,
            &[Stat::Rx, Stat::Pass, Stat::ConnMiss, Stat::FallbackPass],
        ),
        Case::new(
            "established flow of a drained backend",
            ack.clone(),
            XDP_TX,
            packet::dsr_output(&ack, backend_mac(id)),
            ESTABLISHED_TX,
        ),
    ]);
}

const ENCAP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GUE_PORT: u16 = 6080;

fn encap6() -> Ipv6Addr {
    "fd00::2".parse().unwrap()
}

/// Lets the decap program unwrap what the balancer (ENCAP4 / encap6()) sends to
/// `local` (as `xlb decap --allow-source` on a host holding those addresses).
fn allow_decap(dp: &mut TestDataplane, local: &[&str]) {
    use lb_userspace::dataplane::DataPlane as _;
    let local: Vec<std::net::IpAddr> = local.iter().map(|a| a.parse().unwrap()).collect();
    let allowed = lb_userspace::dataplane::decap::allowlist::<std::net::IpAddr>(
        &[ENCAP4.into(), encap6().into()],
        &local,
    )
    .unwrap();
    dp.dp.set_decap_allowed(&allowed).unwrap();
}

/// Switches both services of `setup` to IPIP with encap sources ENCAP4 / encap6().
fn use_ipip(dp: &mut TestDataplane) {
    use_encap(dp, ForwardMode::Ipip);
}

/// Switches both services of `setup` to `mode` (IPIP or GUE) with encap sources ENCAP4 /
/// encap6() and GUE port GUE_PORT.
fn use_encap(dp: &mut TestDataplane, mode: ForwardMode) {
    maps::set_config(
        dp.dp.ebpf_mut(),
        &lb_common::Config {
            encap_src_v4: be4(ENCAP4)[0],
            encap_src_v6: be6(encap6()),
            gue_port_be: GUE_PORT.to_be(),
            _pad: [0; 2],
            hash_seed: 0,
            toobig_per_sec: 0,
            ..Default::default()
        },
    )
    .unwrap();
    switch_to_encap(dp, mode);
}

#[test]
fn ipip4_encapsulates_to_the_maglev_backend() {
    let mut dp = setup("ipip4");
    use_ipip(&mut dp);
    dp.run_cases([40000u16, 40001, 40002].map(|sport| {
        let input = packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::SYN);
        let id = expected_backend(&flow4(sport), &TABLE);
        let backend = Ipv4Addr::new(10, 0, 1, id as u8);
        let output = packet::ipip4_output(&input, backend_mac(id), ENCAP4, backend);
        Case::new(
            format!("IPIP SYN from :{sport}"),
            input,
            XDP_TX,
            output,
            NEW_FLOW_TX,
        )
    }));
}

#[test]
fn ipip6_encapsulates_to_the_maglev_backend() {
    let mut dp = setup("ipip6");
    use_ipip(&mut dp);
    let input = packet::tcp6_frame(client6(), vip6(), 40000, VIP_PORT, packet::SYN);
    let id = expected_backend(&flow6(40000), &[4, 5, 6, 4, 5, 6, 4]);
    let backend: Ipv6Addr = format!("fd00:1::{id}").parse().unwrap();
    let output = packet::ipip6_output(&input, backend_mac(id), encap6(), backend);
    dp.run_case(&Case::new(
        "IPv6-in-IPv6 SYN",
        input,
        XDP_TX,
        output,
        NEW_FLOW_TX,
    ));
}

#[test]
/// (Frames too big for the egress MTU once wrapped: pmtud.rs.)
fn ipip_without_encap_source_drops() {
    let mut dp = setup("ipipcfg");
    use_ipip(&mut dp);
    maps::set_config(dp.dp.ebpf_mut(), &lb_common::Config::default()).unwrap();
    dp.run_case(&Case::unchanged(
        "IPIP with no encap source",
        packet::tcp4_frame(CLIENT4, VIP4, 40000, VIP_PORT, packet::SYN),
        XDP_DROP,
        &[Stat::Rx, Stat::Drop, Stat::ConnMiss, Stat::EncapError],
    ));
}

#[test]
fn decap_unwraps_what_the_balancer_wrapped() {
    let mut dp = setup("decap");
    allow_decap(&mut dp, &["10.0.1.1", "fd00:1::4"]);
    let inner4 = packet::tcp4_frame(CLIENT4, VIP4, 40000, VIP_PORT, packet::SYN);
    let wrapped4 =
        packet::ipip4_output(&inner4, backend_mac(1), ENCAP4, Ipv4Addr::new(10, 0, 1, 1));
    let inner6 = packet::tcp6_frame(client6(), vip6(), 40000, VIP_PORT, packet::SYN);
    let wrapped6 = packet::ipip6_output(
        &inner6,
        backend_mac(4),
        encap6(),
        "fd00:1::4".parse().unwrap(),
    );
    for (what, wrapped, inner) in [
        ("IPIP", &wrapped4, &inner4),
        ("IPv6-in-IPv6", &wrapped6, &inner6),
    ] {
        let before = dp.stats();
        let out = dp.run_program(lb_common::programs::DECAP, wrapped);
        assert_eq!(out.action, XDP_PASS, "{what}: verdict");
        // The Ethernet header now carries the outer frame's MACs and the inner type.
        let mut expected = inner.clone();
        expected[..12].copy_from_slice(&wrapped[..12]);
        assert_eq!(&out.packet, &expected, "{what}: inner frame");
        let moved = dp.stats().get(Stat::Decap).packets - before.get(Stat::Decap).packets;
        assert_eq!(moved, 1, "{what}: decap counter");
    }
    // Plain traffic is left alone.
    let out = dp.run_program(lb_common::programs::DECAP, &inner4);
    assert_eq!((out.action, &out.packet), (XDP_PASS, &inner4));
}

/// A removed backend's id must not carry its old flows to whichever backend gets the id
/// next (found by the DSR end-to-end work): `apply` forgets the id's connection entries
/// before the id can be reused.
#[test]
fn removed_backend_flows_never_follow_its_id_to_another_backend() {
    use lb_userspace::{
        balancer::Balancer,
        config::{BackendSpec, MacAddr, Mode, Protocol, ServiceSpec},
    };
    let mut dp = TestDataplane::load("idreuse");
    let backend = |last: u8| {
        BackendSpec::new(
            std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 1, last)),
            MacAddr([2, 0, 0, 0, 0, last]),
            1,
        )
    };
    let service = |vip: Ipv4Addr, backends: Vec<BackendSpec>| ServiceSpec {
        table_size: 251,
        ..ServiceSpec::new(
            vip.into(),
            Some(VIP_PORT),
            Protocol::Tcp,
            Mode::Dsr,
            backends,
        )
    };
    let vip_t = Ipv4Addr::new(10, 0, 0, 200);
    let mut balancer = Balancer::default();
    balancer
        .apply(&mut dp.dp, &[service(VIP4, vec![backend(10), backend(11)])])
        .unwrap();
    let x = balancer.backend_id(backend(11).address).unwrap();

    // Establish flows until one lands on X.
    let (sport, ack) = (40000u16..)
        .find_map(|sport| {
            let syn = packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::SYN);
            let out = dp.run(&syn);
            (out.packet[..6] == [2, 0, 0, 0, 0, 11]).then(|| {
                (
                    sport,
                    packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::Flags::ACK),
                )
            })
        })
        .unwrap();

    // Remove X: its connection entries are gone right away.
    balancer
        .apply(&mut dp.dp, &[service(VIP4, vec![backend(10)])])
        .unwrap();
    let conns: aya::maps::HashMap<_, FlowKey, lb_common::Conn> =
        aya::maps::HashMap::try_from(dp.dp.ebpf().map(lb_common::maps::CONNS).unwrap()).unwrap();
    let left: Vec<_> = conns
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, c)| c.backend_id == x)
        .collect();
    assert!(
        left.is_empty(),
        "entries still point at removed backend {x}: {left:?}"
    );

    // A new service's backend appears; the old flow must go to A (Maglev), never to Z.
    balancer
        .apply(
            &mut dp.dp,
            &[
                service(VIP4, vec![backend(10)]),
                service(vip_t, vec![backend(12)]),
            ],
        )
        .unwrap();
    let out = dp.run(&ack);
    assert_eq!(out.action, XDP_TX);
    assert_eq!(
        &out.packet[..6],
        &[2, 0, 0, 0, 0, 10],
        "flow :{sport} went to the wrong backend"
    );
}

/// The VIP filter in front of the service lookup never hides a live service: removing
/// one of two services on the same VIP keeps the other forwarding; removing the last
/// one makes the VIP plain traffic.
#[test]
fn vip_filter_follows_service_removal() {
    let mut dp = setup("vipfilter");
    let ebpf = dp.dp.ebpf_mut();
    let key = |port: u16| VipKey {
        addr: be4(VIP4),
        port_be: port.to_be(),
        proto: IPPROTO_TCP,
        family: AF_INET,
    };
    maps::set_service(
        ebpf,
        &key(81),
        &Service {
            id: 1,
            mode: ForwardMode::Dsr as u8,
            ..Default::default()
        },
    )
    .unwrap();
    maps::remove_service(ebpf, &key(VIP_PORT)).unwrap();

    let to81 = packet::tcp4_frame(CLIENT4, VIP4, 40000, 81, packet::SYN);
    let out = dp.run(&to81);
    assert_eq!(
        out.action, XDP_TX,
        "the VIP's other service must still forward"
    );
    let to80 = packet::tcp4_frame(CLIENT4, VIP4, 40000, VIP_PORT, packet::SYN);
    dp.run_case(&Case::unchanged("removed service", to80, XDP_PASS, NOT_VIP));

    maps::remove_service(dp.dp.ebpf_mut(), &key(81)).unwrap();
    dp.run_case(&Case::unchanged(
        "last service of the VIP removed",
        to81,
        XDP_PASS,
        NOT_VIP,
    ));
    let filter: aya::maps::Array<_, u8> =
        aya::maps::Array::try_from(dp.dp.ebpf().map(lb_common::maps::VIP_FILTER).unwrap()).unwrap();
    let slot = lb_common::service::vip_filter_slot(&be4(VIP4));
    assert_eq!(filter.get(&slot, 0).unwrap(), 0, "filter slot cleared");
}

/// Echo requests follow the VIP's VRRP state as `Balancer::apply` sets it: answered
/// while any service on the address is active, passed (`standby`) once all of them are
/// standby (the control plane marks the address in `XLB_VIPS`), answered again when the
/// VIP comes back, and passed as `not_vip` once no service uses the address.
#[test]
fn echo_follows_the_vip_standby_state() {
    use lb_userspace::{
        balancer::Balancer,
        config::{BackendSpec, MacAddr, Mode, Protocol, ServiceSpec},
    };
    use pnet_packet::{ethernet::EtherTypes, ip::IpNextHeaderProtocols as P};
    let mut dp = TestDataplane::load("echostandby");
    let backend = BackendSpec::new(
        std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 1, 10)),
        MacAddr([2, 0, 0, 0, 0, 10]),
        1,
    );
    let service = |port: u16, protocol: Protocol, standby: bool| ServiceSpec {
        table_size: 251,
        standby,
        ..ServiceSpec::new(
            VIP4.into(),
            Some(port),
            protocol,
            Mode::Dsr,
            vec![backend.clone()],
        )
    };
    let request = packet::ethernet(
        packet::CLIENT_MAC,
        packet::LB_MAC,
        EtherTypes::Ipv4,
        &packet::ipv4(
            CLIENT4,
            VIP4,
            P::Icmp,
            &packet::icmp4_echo(ICMP_ECHO_REQUEST, 7, 1, b"vrrp"),
        ),
    );
    let mut balancer = Balancer::default();
    let mut step = |dp: &mut TestDataplane, what: &str, specs: &[ServiceSpec], answered: Stat| {
        balancer.apply(&mut dp.dp, specs).unwrap();
        let before = dp.stats();
        let out = dp.run(&request);
        let after = dp.stats();
        let moved = |s: Stat| after.get(s).packets - before.get(s).packets;
        let verdict = if answered == Stat::IcmpEcho {
            XDP_TX
        } else {
            XDP_PASS
        };
        assert_eq!(out.action, verdict, "{what}");
        assert_eq!(moved(answered), 1, "{what}: {} counted", answered.name());
    };
    let both = |standby_tcp, standby_udp| {
        vec![
            service(VIP_PORT, Protocol::Tcp, standby_tcp),
            service(53, Protocol::Udp, standby_udp),
        ]
    };
    step(&mut dp, "active", &both(false, false), Stat::IcmpEcho);
    step(&mut dp, "standby", &both(true, true), Stat::Standby);
    step(
        &mut dp,
        "one service active",
        &both(true, false),
        Stat::IcmpEcho,
    );
    step(&mut dp, "standby again", &both(true, true), Stat::Standby);
    step(&mut dp, "master again", &both(false, false), Stat::IcmpEcho);
    step(
        &mut dp,
        "standby, then removed",
        &both(true, true),
        Stat::Standby,
    );
    step(&mut dp, "no service", &[], Stat::NotVip);
    step(
        &mut dp,
        "new standby service",
        &both(true, true)[..1],
        Stat::Standby,
    );
}

/// Echo requests to a VIP are answered from XDP with exact reply bytes (checksums
/// computed independently by pnet); echo to other addresses passes untouched.
#[test]
fn icmp_echo_to_a_vip_is_answered_from_xdp() {
    use pnet_packet::{ethernet::EtherTypes, ip::IpNextHeaderProtocols as P};
    let mut dp = setup("echo");
    let payload = b"xlb ping payload";

    let request = packet::ethernet(
        packet::CLIENT_MAC,
        packet::LB_MAC,
        EtherTypes::Ipv4,
        &packet::ipv4(
            CLIENT4,
            VIP4,
            P::Icmp,
            &packet::icmp4_echo(ICMP_ECHO_REQUEST, 7, 1, payload),
        ),
    );
    let mut reply_ip = packet::ipv4(
        VIP4,
        CLIENT4,
        P::Icmp,
        &packet::icmp4_echo(ICMP_ECHO_REPLY, 7, 1, payload),
    );
    // The reply keeps the request's IP id and flags; only TTL (64) and the addresses change.
    reply_ip[4..8].copy_from_slice(&request[ETH_HLEN + 4..ETH_HLEN + 8]);
    let mut reply = packet::ethernet(
        packet::LB_MAC,
        packet::CLIENT_MAC,
        EtherTypes::Ipv4,
        &reply_ip,
    );
    packet::tweak_ipv4(&mut reply, |_| {});

    let other = Ipv4Addr::new(10, 0, 0, 5);
    let to_other = packet::ethernet(
        packet::CLIENT_MAC,
        packet::LB_MAC,
        EtherTypes::Ipv4,
        &packet::ipv4(
            CLIENT4,
            other,
            P::Icmp,
            &packet::icmp4_echo(ICMP_ECHO_REQUEST, 7, 1, payload),
        ),
    );

    let (c6, v6) = (client6(), vip6());
    let request6 = packet::ethernet(
        packet::CLIENT_MAC,
        packet::LB_MAC,
        EtherTypes::Ipv6,
        &packet::ipv6(
            c6,
            v6,
            P::Icmpv6,
            &packet::icmp6_echo(ICMPV6_ECHO_REQUEST, c6, v6, 9, 2, payload),
        ),
    );
    let reply6 = packet::ethernet(
        packet::LB_MAC,
        packet::CLIENT_MAC,
        EtherTypes::Ipv6,
        &packet::ipv6(
            v6,
            c6,
            P::Icmpv6,
            &packet::icmp6_echo(ICMPV6_ECHO_REPLY, v6, c6, 9, 2, payload),
        ),
    );
    const ECHO: &[Stat] = &[Stat::Rx, Stat::Tx, Stat::IcmpEcho];
    dp.run_cases([
        Case::new("ICMP echo to VIP4", request.clone(), XDP_TX, reply, ECHO),
        Case::unchanged("ICMP echo to a non-VIP", to_other, XDP_PASS, NOT_VIP),
        Case::new("ICMPv6 echo to VIP6", request6, XDP_TX, reply6, ECHO),
    ]);

    // Once its last service is gone, the address is no longer answered for.
    let key = key4();
    maps::remove_service(dp.dp.ebpf_mut(), &key).unwrap();
    dp.run_case(&Case::unchanged(
        "ICMP echo after the VIP's last service left",
        request,
        XDP_PASS,
        NOT_VIP,
    ));
}

/// With source affinity, every flow of a client goes to the backend its address hashes
/// to, whatever the ports (the same hash the data plane uses, from lb-common).
#[test]
fn source_affinity_pins_a_client_to_one_backend() {
    let mut dp = setup("affinity");
    let key = key4();
    let svc = Service {
        id: 1,
        flags: lb_common::service::service_flags::SOURCE_AFFINITY,
        mode: ForwardMode::Dsr as u8,
        ..Default::default()
    };
    maps::set_service(dp.dp.ebpf_mut(), &key, &svc).unwrap();
    for client in [
        CLIENT4,
        Ipv4Addr::new(10, 0, 0, 7),
        Ipv4Addr::new(10, 0, 0, 9),
    ] {
        let flow = FlowKey {
            src: be4(client),
            ..flow4(0)
        };
        let id = TABLE[(flow_hash(&flow, true) % TABLE.len() as u32) as usize];
        for sport in [40000u16, 40001, 50000, 61000] {
            let syn = packet::tcp4_frame(client, VIP4, sport, VIP_PORT, packet::SYN);
            let out = dp.run(&syn);
            assert_eq!(
                out.packet,
                packet::dsr_output(&syn, backend_mac(id)),
                "{client}:{sport}"
            );
        }
    }
}

/// GUE source port the data plane derives from the flow hash.
fn gue_sport(flow: &FlowKey) -> u16 {
    0xc000 | (flow_hash(flow, false) as u16 & 0x3fff)
}

#[test]
fn gue_encapsulates_both_families_and_decap_unwraps_it() {
    let mut dp = setup("gue");
    use_encap(&mut dp, ForwardMode::Gue);
    let input = packet::tcp4_frame(CLIENT4, VIP4, 40000, VIP_PORT, packet::SYN);
    let flow = flow4(40000);
    let id = expected_backend(&flow, &TABLE);
    let output = packet::gue4_output(
        &input,
        backend_mac(id),
        ENCAP4,
        Ipv4Addr::new(10, 0, 1, id as u8),
        gue_sport(&flow),
        GUE_PORT,
    );

    let input6 = packet::tcp6_frame(client6(), vip6(), 40000, VIP_PORT, packet::SYN);
    let flow6 = flow6(40000);
    let id6 = expected_backend(&flow6, &[4, 5, 6, 4, 5, 6, 4]);
    let backend6: Ipv6Addr = format!("fd00:1::{id6}").parse().unwrap();
    let output6 = packet::gue6_output(
        &input6,
        backend_mac(id6),
        encap6(),
        backend6,
        gue_sport(&flow6),
        GUE_PORT,
    );
    dp.run_cases([
        Case::new(
            "GUE v4 SYN",
            input.clone(),
            XDP_TX,
            output.clone(),
            NEW_FLOW_TX,
        ),
        Case::new(
            "GUE v6 SYN",
            input6.clone(),
            XDP_TX,
            output6.clone(),
            NEW_FLOW_TX,
        ),
    ]);

    // The backend's decap (same object, same config) unwraps both.
    allow_decap(&mut dp, &[&format!("10.0.1.{id}"), &backend6.to_string()]);
    for (what, wrapped, inner) in [("GUE v4", &output, &input), ("GUE v6", &output6, &input6)] {
        let out = dp.run_program(lb_common::programs::DECAP, wrapped);
        assert_eq!(out.action, XDP_PASS, "{what}: verdict");
        let mut expected = inner.clone();
        expected[..12].copy_from_slice(&wrapped[..12]);
        assert_eq!(&out.packet, &expected, "{what}: inner frame");
    }
    // UDP to another port is not ours to unwrap.
    let mut other_port = output.clone();
    other_port[ETH_HLEN + IPV4_HLEN + 2..][..2].copy_from_slice(&6081u16.to_be_bytes());
    let out = dp.run_program(lb_common::programs::DECAP, &other_port);
    assert_eq!((out.action, &out.packet), (XDP_PASS, &other_port));
}

/// "Fragmentation needed" / "packet too big" about a VIP flow goes to the backend that
/// owns the quoted flow (whose replies were too big), not to whoever its own hash picks.
#[test]
fn icmp_too_big_follows_the_quoted_flow_to_its_backend() {
    use pnet_packet::{ethernet::EtherTypes, ip::IpNextHeaderProtocols as P};
    const TOO_BIG: &[Stat] = &[Stat::Rx, Stat::Tx, Stat::IcmpTooBig, Stat::ConnHit];
    let mut dp = setup("toobig");
    let router = Ipv4Addr::new(10, 0, 9, 1);
    // Each flow is established by its SYN and ACK, then an ICMP error quoting the backend's
    // reply follows that flow's connection entry.
    let mut cases = Vec::new();
    for sport in [40000u16, 40001, 40002, 40003] {
        let syn = packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::SYN);
        let id = expected_backend(&flow4(sport), &TABLE);
        // The backend's reply VIP:80 → client:sport, quoted (IP header + 8 bytes).
        let reply = packet::ipv4(
            VIP4,
            CLIENT4,
            P::Tcp,
            &packet::tcp4(VIP4, CLIENT4, VIP_PORT, sport, packet::Flags::ACK),
        );
        // MTU 1400
        let mut icmp = vec![ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, 0, 0, 0x05, 0x78];
        icmp.extend_from_slice(&reply[..IPV4_HLEN + 8]);
        let csum = pnet_packet::icmp::checksum(&pnet_packet::icmp::IcmpPacket::new(&icmp).unwrap());
        icmp[2..4].copy_from_slice(&csum.to_be_bytes());
        let input = packet::ethernet(
            packet::CLIENT_MAC,
            packet::LB_MAC,
            EtherTypes::Ipv4,
            &packet::ipv4(router, VIP4, P::Icmp, &icmp),
        );
        let ack = packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::Flags::ACK);
        cases.push(Case::new(
            format!("SYN from :{sport}"),
            syn.clone(),
            XDP_TX,
            packet::dsr_output(&syn, backend_mac(id)),
            NEW_FLOW_TX,
        ));
        cases.push(Case::new(
            format!("ACK from :{sport}"),
            ack.clone(),
            XDP_TX,
            packet::dsr_output(&ack, backend_mac(id)),
            CONFIRMED_TX,
        ));
        cases.push(Case::new(
            format!("frag needed for :{sport}"),
            input.clone(),
            XDP_TX,
            packet::dsr_output(&input, backend_mac(id)),
            TOO_BIG,
        ));
    }

    // ICMPv6 packet too big about a v6 flow.
    let (c6, v6) = (client6(), vip6());
    let syn6 = packet::tcp6_frame(c6, v6, 40000, VIP_PORT, packet::SYN);
    let ack6 = packet::tcp6_frame(c6, v6, 40000, VIP_PORT, packet::Flags::ACK);
    let mac6 = backend_mac(expected_backend(&flow6(40000), &TABLE));
    let reply6 = packet::ipv6(
        v6,
        c6,
        P::Tcp,
        &packet::tcp6(v6, c6, VIP_PORT, 40000, packet::Flags::ACK),
    );
    let router6: Ipv6Addr = "fd00:9::1".parse().unwrap();
    let mut body = vec![0u8, 0, 0x05, 0x00]; // MTU 1280
    body.extend_from_slice(&reply6[..IPV6_HLEN + 8]);
    let mut icmp6 = vec![ICMPV6_PACKET_TOO_BIG, 0, 0, 0];
    icmp6.extend_from_slice(&body);
    let csum = pnet_packet::icmpv6::checksum(
        &pnet_packet::icmpv6::Icmpv6Packet::new(&icmp6).unwrap(),
        &router6,
        &v6,
    );
    icmp6[2..4].copy_from_slice(&csum.to_be_bytes());
    let input6 = packet::ethernet(
        packet::CLIENT_MAC,
        packet::LB_MAC,
        EtherTypes::Ipv6,
        &packet::ipv6(router6, v6, P::Icmpv6, &icmp6),
    );
    cases.push(Case::new(
        "IPv6 SYN",
        syn6.clone(),
        XDP_TX,
        packet::dsr_output(&syn6, mac6),
        NEW_FLOW_TX,
    ));
    cases.push(Case::new(
        "IPv6 ACK",
        ack6.clone(),
        XDP_TX,
        packet::dsr_output(&ack6, mac6),
        CONFIRMED_TX,
    ));
    cases.push(Case::new(
        "packet too big (v6)",
        input6.clone(),
        XDP_TX,
        packet::dsr_output(&input6, mac6),
        TOO_BIG,
    ));

    // Other ICMP errors are the stack's business: host unreachable (code 1).
    let mut unreach = vec![ICMP_DEST_UNREACH, 1, 0, 0, 0, 0, 0, 0];
    unreach.extend_from_slice(&packet::ipv4(VIP4, CLIENT4, P::Tcp, &[0u8; 20])[..28]);
    cases.push(Case::unchanged(
        "host unreachable",
        packet::ethernet(
            packet::CLIENT_MAC,
            packet::LB_MAC,
            EtherTypes::Ipv4,
            &packet::ipv4(router, VIP4, P::Icmp, &unreach),
        ),
        XDP_PASS,
        NOT_VIP,
    ));
    dp.run_cases(cases);
}

/// Two-arm: a service with an egress interface rewrites the source MAC to that
/// interface's and redirects through the devmap; without a devmap entry it drops.
#[test]
fn two_arm_service_redirects_out_of_its_egress_interface() {
    let mut dp = setup("twoarm");
    let key = key4();
    let svc = Service {
        id: 1,
        mode: ForwardMode::Dsr as u8,
        tx_port: 1,
        ..Default::default()
    };
    maps::set_service(dp.dp.ebpf_mut(), &key, &svc).unwrap();
    dp.run_case(&Case::unchanged(
        "egress slot not set",
        packet::tcp4_frame(CLIENT4, VIP4, 40000, VIP_PORT, packet::SYN),
        XDP_DROP,
        &[Stat::Rx, Stat::Drop, Stat::ConnMiss, Stat::NoTxPort],
    ));

    // An egress interface inside a namespace of our own (the devmap resolves the
    // ifindex in the namespace of the thread that sets it).
    let a = testbed::Netns::new("twoarm-a");
    let b = testbed::Netns::new("twoarm-b");
    let veth = testbed::VethPair::new(&a, &b);
    let (ifindex, mac) = (a.ifindex(&veth.a), a.mac(&veth.a));
    let ebpf = dp.dp.ebpf_mut();
    a.run(|| maps::set_tx_port(ebpf, 1, ifindex, mac)).unwrap();

    let id = expected_backend(&flow4(40001), &TABLE);
    let syn = packet::tcp4_frame(CLIENT4, VIP4, 40001, VIP_PORT, packet::SYN);
    let mut expected = packet::dsr_output(&syn, backend_mac(id));
    expected[6..12].copy_from_slice(&mac);
    dp.run_case(&Case::new(
        "two-arm DSR",
        syn,
        XDP_REDIRECT,
        expected,
        &[Stat::Rx, Stat::Redirect, Stat::ConnMiss],
    ));
}

/// The IPv6 twins of the edge cases: hop limit 0/1, frames cut inside the IPv6 or TCP
/// header, a payload length beyond the frame, a wrong version nibble, and two-arm
/// egress.
#[test]
fn ipv6_edge_cases_have_defined_verdicts_and_counters() {
    let mut dp = setup("edges6");
    let syn = packet::tcp6_frame(client6(), vip6(), 40000, VIP_PORT, packet::SYN);
    let edited = |f: &dyn Fn(&mut [u8])| {
        let mut frame = syn.clone();
        f(&mut frame);
        frame
    };
    let hop_limit_at = ETH_HLEN + 7;
    let mut cases: Vec<Case> = [0u8, 1]
        .map(|hops| {
            Case::unchanged(
                format!("hop limit {hops} to a VIP"),
                edited(&|f| f[hop_limit_at] = hops),
                XDP_DROP,
                &[Stat::Rx, Stat::Drop, Stat::TtlExpired],
            )
        })
        .into();
    cases.extend([
        Case::unchanged(
            "frame cut inside the TCP header",
            syn[..ETH_HLEN + IPV6_HLEN + 2].to_vec(),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Truncated],
        ),
        Case::unchanged(
            "frame cut inside the IPv6 header",
            syn[..ETH_HLEN + 20].to_vec(),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Truncated],
        ),
        Case::unchanged(
            "payload length beyond the frame",
            edited(&|f| f[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&1000u16.to_be_bytes())),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Truncated],
        ),
        Case::unchanged(
            "version 4 nibble in an IPv6 frame",
            edited(&|f| f[ETH_HLEN] = 0x40 | (f[ETH_HLEN] & 0x0f)),
            XDP_DROP,
            &[Stat::Rx, Stat::Drop, Stat::Malformed],
        ),
    ]);
    dp.run_cases(cases);

    // Two-arm egress for the IPv6 service.
    let a = testbed::Netns::new("edges6-a");
    let b = testbed::Netns::new("edges6-b");
    let veth = testbed::VethPair::new(&a, &b);
    let (ifindex, mac) = (a.ifindex(&veth.a), a.mac(&veth.a));
    let ebpf = dp.dp.ebpf_mut();
    a.run(|| maps::set_tx_port(ebpf, 2, ifindex, mac)).unwrap();
    let key = VipKey {
        addr: be6(vip6()),
        port_be: VIP_PORT.to_be(),
        proto: IPPROTO_TCP,
        family: AF_INET6,
    };
    let svc = Service {
        id: 2,
        mode: ForwardMode::Dsr as u8,
        tx_port: 2,
        ..Default::default()
    };
    maps::set_service(dp.dp.ebpf_mut(), &key, &svc).unwrap();
    let flow = flow6(40000);
    let mut expected = packet::dsr_output(&syn, backend_mac(expected_backend(&flow, &TABLE)));
    expected[6..12].copy_from_slice(&mac);
    dp.run_case(&Case::new(
        "two-arm DSR (v6)",
        syn,
        XDP_REDIRECT,
        expected,
        &[Stat::Rx, Stat::Redirect, Stat::ConnMiss],
    ));
}

/// Established flows find their service through their connection entry and the service
/// slot (`XLB_SVC_SLOTS`), not the service hash. Three things must hold for that to be
/// safe: a flag change reaches established flows at once (a VRRP backup must stop
/// forwarding them), an id given to another service orphans the old service's entries
/// (generation), and an established flow stays with its service when a more specific
/// one appears on its VIP, while new connections go to the new one.
#[test]
fn established_flows_follow_their_service_slot() {
    let mut dp = setup("svcslot");
    let key4 = key4();
    let dsr = Service {
        id: 1,
        mode: ForwardMode::Dsr as u8,
        ..Default::default()
    };
    let syn = packet::tcp4_frame(CLIENT4, VIP4, 41000, VIP_PORT, packet::SYN);
    let ack = packet::tcp4_frame(CLIENT4, VIP4, 41000, VIP_PORT, packet::Flags::ACK);
    let id = expected_backend(&flow4(41000), &TABLE);
    let to_backend = |frame: &[u8], id| packet::dsr_output(frame, backend_mac(id));
    let ack_to_backend = || {
        Case::new(
            "ACK",
            ack.clone(),
            XDP_TX,
            to_backend(&ack, id),
            ESTABLISHED_TX,
        )
    };
    dp.run_cases([
        Case::new(
            "SYN",
            syn.clone(),
            XDP_TX,
            to_backend(&syn, id),
            NEW_FLOW_TX,
        ),
        Case::new(
            "first ACK",
            ack.clone(),
            XDP_TX,
            to_backend(&ack, id),
            CONFIRMED_TX,
        ),
        ack_to_backend(),
    ]);

    // 1. STANDBY set on the service reaches the established flow, and clearing it
    //    brings the flow back to its backend.
    let standby = Service {
        flags: lb_common::service::service_flags::STANDBY,
        ..dsr
    };
    maps::set_service(dp.dp.ebpf_mut(), &key4, &standby).unwrap();
    dp.run_case(&Case::unchanged(
        "ACK, standby",
        ack.clone(),
        XDP_PASS,
        &[Stat::Rx, Stat::Pass, Stat::Standby],
    ));
    maps::set_service(dp.dp.ebpf_mut(), &key4, &dsr).unwrap();
    dp.run_case(&Case {
        description: "ACK, active again".into(),
        ..ack_to_backend()
    });

    // 2. The service is removed and its id given to a service on another port: the
    //    entry's generation no longer matches, so the flow is not forwarded by the
    //    entry (no service on VIP4:80 → not_vip), even though id 1 is live again.
    maps::remove_service(dp.dp.ebpf_mut(), &key4).unwrap();
    let other = VipKey {
        port_be: 8080u16.to_be(),
        ..key4
    };
    maps::set_service(dp.dp.ebpf_mut(), &other, &dsr).unwrap();
    dp.run_case(&Case::unchanged(
        "ACK, service gone",
        ack.clone(),
        XDP_PASS,
        NOT_VIP,
    ));
    maps::remove_service(dp.dp.ebpf_mut(), &other).unwrap();

    // 3. An all-ports service (id 3, backends 1..3 reversed) takes a flow; then an
    //    exact-port service (id 4, all to backend 2) appears on the same VIP.
    let all_ports = VipKey { port_be: 0, ..key4 };
    let reversed: Vec<u32> = TABLE.iter().map(|b| 4 - b).collect();
    maps::swap_table(dp.dp.ebpf_mut(), 3, &reversed).unwrap();
    maps::set_service(dp.dp.ebpf_mut(), &all_ports, &Service { id: 3, ..dsr }).unwrap();
    let syn2 = packet::tcp4_frame(CLIENT4, VIP4, 41001, VIP_PORT, packet::SYN);
    let ack2 = packet::tcp4_frame(CLIENT4, VIP4, 41001, VIP_PORT, packet::Flags::ACK);
    let id2 = expected_backend(&flow4(41001), &reversed);
    assert_ne!(
        id2, 2,
        "pick a flow whose all-ports backend is not the exact service's"
    );
    dp.run_cases([
        Case::new(
            "SYN, all ports",
            syn2.clone(),
            XDP_TX,
            to_backend(&syn2, id2),
            NEW_FLOW_TX,
        ),
        Case::new(
            "first ACK, all ports",
            ack2.clone(),
            XDP_TX,
            to_backend(&ack2, id2),
            CONFIRMED_TX,
        ),
    ]);
    maps::swap_table(dp.dp.ebpf_mut(), 4, &[2]).unwrap();
    maps::set_service(dp.dp.ebpf_mut(), &key4, &Service { id: 4, ..dsr }).unwrap();
    let syn3 = packet::tcp4_frame(CLIENT4, VIP4, 41002, VIP_PORT, packet::SYN);
    dp.run_cases([
        Case::new(
            "ACK stays with the all-ports service",
            ack2.clone(),
            XDP_TX,
            to_backend(&ack2, id2),
            ESTABLISHED_TX,
        ),
        Case::new(
            "a new SYN takes the exact service",
            syn3.clone(),
            XDP_TX,
            to_backend(&syn3, 2),
            NEW_FLOW_TX,
        ),
    ]);
}

/// `hash_seed`: two balancers with the same seed and config send every flow to the same
/// backend (what lets a VRRP or ECMP peer take flows over), another seed sends many of
/// them elsewhere, and each choice is the one `maglev::build_seeded` and
/// `flow_hash_seeded` predict: the program hashes with the seed in `XLB_CONFIG`.
#[test]
fn the_hash_seed_decides_where_a_flow_goes() {
    use lb_common::service::flow_hash_seeded;
    use lb_userspace::{
        balancer::{maglev, Balancer},
        config::{BackendSpec, MacAddr, Mode, Protocol, ServiceSpec},
    };
    const SEED: u32 = 0x1a2b_3c4d;
    let backends: Vec<BackendSpec> = (1..=5u8)
        .map(|last| {
            BackendSpec::new(
                std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 1, last)),
                MacAddr([2, 0, 0, 0, 0, last]),
                1,
            )
        })
        .collect();
    let service = ServiceSpec {
        table_size: 251,
        ..ServiceSpec::new(
            VIP4.into(),
            Some(VIP_PORT),
            Protocol::Tcp,
            Mode::Dsr,
            backends,
        )
    };
    let balancer_with = |tag: &str, seed: u32| {
        let mut dp = TestDataplane::load(tag);
        let mut balancer = Balancer::default();
        balancer.set_hash_seed(&mut dp.dp, seed).unwrap();
        balancer
            .apply(&mut dp.dp, std::slice::from_ref(&service))
            .unwrap();
        (dp, balancer)
    };
    let (mut a, balancer) = balancer_with("seed-a", SEED);
    let (mut b, _) = balancer_with("seed-b", SEED);
    let (mut c, _) = balancer_with("seed-c", SEED ^ 1);
    // The table and the hash the seed implies, with the ids the balancer gave.
    let predicted = |seed: u32, sport: u16| {
        let list: Vec<maglev::MaglevBackend> = service
            .backends
            .iter()
            .map(|bk| maglev::MaglevBackend {
                id: balancer.backend_id(bk.address).unwrap(),
                weight: 1,
                key: maglev::backend_key(bk.address, 0),
            })
            .collect();
        let table = maglev::build_seeded(&list, 251, seed).unwrap();
        let id = table[(flow_hash_seeded(&flow4(sport), false, seed) % 251) as usize];
        let addr = service
            .backends
            .iter()
            .find(|bk| balancer.backend_id(bk.address) == Some(id))
            .unwrap()
            .address;
        let std::net::IpAddr::V4(v4) = addr else {
            unreachable!()
        };
        [2, 0, 0, 0, 0, v4.octets()[3]]
    };
    let mut moved = 0;
    const FLOWS: u16 = 64;
    for sport in 40000..40000 + FLOWS {
        let syn = packet::tcp4_frame(CLIENT4, VIP4, sport, VIP_PORT, packet::SYN);
        let (out_a, out_b, out_c) = (a.run(&syn), b.run(&syn), c.run(&syn));
        for out in [&out_a, &out_b, &out_c] {
            assert_eq!(out.action, XDP_TX, ":{sport}");
        }
        assert_eq!(
            out_a.packet, out_b.packet,
            ":{sport}: same seed, other backend"
        );
        assert_eq!(
            out_a.packet[..6],
            predicted(SEED, sport),
            ":{sport}: seed {SEED:#x}"
        );
        assert_eq!(
            out_c.packet[..6],
            predicted(SEED ^ 1, sport),
            ":{sport}: other seed"
        );
        moved += usize::from(out_a.packet[..6] != out_c.packet[..6]);
    }
    // With 5 backends a flow stays by chance one time in five.
    assert!(
        moved > usize::from(FLOWS) / 2,
        "another seed moved only {moved} of {FLOWS} flows"
    );
}
