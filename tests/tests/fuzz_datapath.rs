//! Differential fuzzing in the suite: a fixed-seed sample of generated and mutated packets
//! through the real program (BPF_PROG_TEST_RUN) and the reference model
//! (`testbed::model`) must agree on verdict, output bytes and counters for every packet.
//! `cargo xtask fuzz-datapath --packets N` runs the same thing at scale.
//!
//! The named fixtures below pin, byte for byte, the program behaviours the fuzzer
//! tags as known findings (docs/fuzzing.md): the model predicts what the program does
//! today, so the sample stays green, and each fixture says what is wrong with it. When
//! one is fixed in lb-ebpf, its fixture and the model's rule change together.

use std::net::Ipv4Addr;

use lb_common::Stat;
use testbed::{
    fuzz::{self, hex, unhex, Harness},
    model::{Finding, XDP_DROP, XDP_TX},
    packet,
};

const SAMPLE_PACKETS: u64 = 20_000;

#[test]
fn fixed_seed_sample_agrees_with_the_model() {
    testbed::require_root();
    let report = fuzz::run(&fuzz::Options {
        packets: SAMPLE_PACKETS,
        seed: 1,
        save_dir: None,
        print_limit: 10,
    });
    println!("{}", report.summary());
    assert!(
        report.disagreements.is_empty(),
        "{} disagreements between the program and the model; first:\n{}",
        report.disagreements.len(),
        report.disagreements[0]
    );
    // The sample must keep exercising every class and every path the model knows.
    for class in fuzz::CLASSES {
        assert!(
            report.classes.get(*class).is_some_and(|c| c.packets > 0),
            "class {class} not generated"
        );
    }
    for stat in [
        Stat::Tx,
        Stat::Truncated,
        Stat::NotVip,
        Stat::Vlan,
        Stat::Ipv4Options,
        Stat::Fragment,
        Stat::Ipv6ExtHeader,
        Stat::Malformed,
        Stat::TtlExpired,
        Stat::NoBackend,
        Stat::ConnHit,
        Stat::ConnMiss,
        Stat::EncapTooBig,
        Stat::EncapError,
        Stat::IcmpEcho,
        Stat::IcmpTooBig,
        Stat::NoTxPort,
        Stat::FallbackPass,
        Stat::Standby,
    ] {
        assert!(
            report.counters.get(stat.name()).is_some_and(|n| *n > 0),
            "no packet of the sample moved {}",
            stat.name()
        );
    }
}

/// The harness itself: a model that is wrong about one backend MAC must be caught.
#[test]
fn harness_reports_a_disagreement() {
    testbed::require_root();
    let mut h = Harness::new("fuzz-self", fuzz::fuzz_tables());
    for id in 1..=4 {
        h.model.tables.backends.get_mut(&id).unwrap().mac = [0x02, 0xee, 0, 0, 0, 0];
    }
    let syn = packet::tcp4_frame(
        Ipv4Addr::new(10, 0, 0, 1),
        fuzz::VIP4A,
        40000,
        80,
        packet::SYN,
    );
    let (outcome, actual, agree) = h.check(&syn);
    assert!(!agree, "model {outcome:?} vs program {actual:?}");
    assert_eq!(actual.action, XDP_TX);
}

/// Runs `input` on a fresh harness (the fuzzer's tables) and checks the program's exact
/// output, and that the model agrees and tags `finding`.
fn fixture(
    name: &str,
    input: &str,
    verdict: u32,
    output: &str,
    counted: &[Stat],
    finding: Finding,
) {
    testbed::require_root();
    let mut h = Harness::new("fuzz-fixture", fuzz::fuzz_tables());
    let input = unhex(input);
    let (outcome, actual, agree) = h.check(&input);
    assert_eq!(actual.action, verdict, "{name}: verdict");
    assert_eq!(hex(&actual.packet), output, "{name}: output bytes");
    assert_eq!(actual.counted, counted, "{name}: counters");
    assert!(agree, "{name}: the model disagrees: {outcome:?}");
    assert_eq!(outcome.finding, Some(finding), "{name}: finding tag");
}

/// Finding `l4-beyond-ip-length`: IPv4 total length 20 (the datagram is the bare IP
/// header), a 60-byte frame whose padding holds a TCP SYN header to VIP 10.0.0.100:80.
/// The program reads ports and flags from the padding and forwards the datagram (DSR
/// to backend 3) as a new flow, inserting a connection entry. Expected instead: the
/// datagram has no L4 header, so it is too short for a VIP (drop `truncated`).
#[test]
fn finding_l4_beyond_ip_length_ports_read_from_padding() {
    fixture(
        "ports in the padding",
        "020000000002020000000001080045000014123440004006144c0a0000010a000064\
         9c400050000003e8000000005002fffffb050000000000000000",
        XDP_TX,
        "02be00000003020000000002080045000014123440004006144c0a0000010a000064\
         9c400050000003e8000000005002fffffb050000000000000000",
        &[Stat::Rx, Stat::Tx, Stat::ConnMiss],
        Finding::L4BeyondIpLength,
    );
}

/// Finding `echo-for-standby-vip`: an echo request to 10.0.0.102, whose only service is
/// STANDBY (VRRP backup here), is answered from XDP although the service's traffic is
/// passed to a stack that does not hold the VIP. Expected instead: pass (`standby`).
#[test]
fn finding_echo_for_standby_vip_is_answered() {
    fixture(
        "echo to a standby VIP",
        "02000000000202000000000108004500002012344000400114430a0000010a000066\
         0800192d0001000170696e67",
        XDP_TX,
        "02000000000102000000000208004500002012344000400114430a0000660a000001\
         0000212d0001000170696e67",
        &[Stat::Rx, Stat::Tx, Stat::IcmpEcho],
        Finding::EchoForStandbyVip,
    );
}

/// Finding `group-source-mac`: a TCP SYN to VIP 10.0.0.100:80 sent to the broadcast MAC
/// is forwarded (DSR) with source MAC ff:ff:ff:ff:ff:ff. Expected instead: a group
/// destination never becomes the source (drop or pass it, or use the interface MAC).
#[test]
fn finding_group_source_mac_on_forwarded_frames() {
    fixture(
        "SYN to the broadcast MAC",
        "ffffffffffff02000000000108004500002812344000400614380a0000010a000064\
         9c400050000003e8000000005002fffffb050000",
        XDP_TX,
        "02be00000003ffffffffffff08004500002812344000400614380a0000010a000064\
         9c400050000003e8000000005002fffffb050000",
        &[Stat::Rx, Stat::Tx, Stat::ConnMiss],
        Finding::GroupSourceMac,
    );
}

/// Finding (outside the `Stat` set the model checks): a packet dropped *after* the
/// backend choice (`encap_too_big` here; also `no_tx_port`, `encap_error`) still counts
/// as forwarded, and as a new flow, in the per-service and per-backend counters, and
/// leaves a connection entry. A 1502-byte UDP datagram to the IPIP service
/// 10.0.0.100:53 (1516 + 20 > 1514 bytes once wrapped).
#[test]
fn finding_packets_dropped_after_the_choice_count_as_forwarded() {
    testbed::require_root();
    let mut h = Harness::new("fuzz-fixture", fuzz::fuzz_tables());
    let input = packet::udp4_frame(
        Ipv4Addr::new(10, 0, 0, 1),
        fuzz::VIP4A,
        40001,
        53,
        &[0x55; 1460],
    );
    let (outcome, actual, agree) = h.check(&input);
    assert!(agree, "{outcome:?}");
    assert_eq!(actual.action, XDP_DROP);
    assert_eq!(actual.packet, input);
    assert_eq!(
        actual.counted,
        [Stat::Rx, Stat::Drop, Stat::ConnMiss, Stat::EncapTooBig]
    );
    assert!(outcome.insert.is_some(), "the model records the entry too");
    let (services, _) = lb_userspace::stats::read_loaded_flows(h.dp.dp.ebpf()).unwrap();
    let svc = services
        .iter()
        .find(|s| s.id == 2)
        .expect("service 2 listed");
    // Today: one packet "forwarded", one new flow, for a dropped packet.
    assert_eq!((svc.counter.packets, svc.counter.new_flows), (1, 1));
}
