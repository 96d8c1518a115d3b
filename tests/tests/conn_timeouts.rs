//! Connection-entry lifecycle (issue 16 item 3), through BPF_PROG_TEST_RUN on the real
//! program: entries are refreshed in place by every packet of their flow, a TCP flow
//! whose client sent FIN or RST expires after the closing timeout, other TCP after the
//! idle timeout, UDP after its own; an expired entry no longer pins its flow (its next
//! packet takes the Maglev choice, as a new flow's does).
//!
//! Time is not waited for: the test ages an entry by writing an older `seen` tick
//! (the kernel's coarse monotonic clock, which the daemon reads as
//! CLOCK_MONOTONIC_COARSE: `conns::now_ticks`), then sends the flow's next packet.

use std::net::Ipv4Addr;

use aya::maps::HashMap;
use lb_common::{
    maps as map_names,
    service::{conn_flags, AF_INET},
    wire::{IPPROTO_TCP, IPPROTO_UDP, XDP_TX},
    Config, Conn, ConnTimeoutTicks, FlowKey, Stat,
};
use lb_userspace::dataplane::aya::{conns::now_ticks, maps};
use testbed::{
    dataplane::TestDataplane,
    fixture::{install_dsr_pair, install_udp_service, UDP_PORT, VIP4, VIP_PORT},
    packet::{self, be4},
};

const TABLE: [u32; 7] = [1, 2, 3, 1, 2, 3, 1];
const TIMEOUTS: ConnTimeoutTicks = ConnTimeoutTicks {
    tcp_idle: 100,
    tcp_closing: 5,
    udp_idle: 10,
};

fn setup(tag: &str) -> TestDataplane {
    let mut dp = TestDataplane::load(tag);
    install_dsr_pair(&mut dp, 3, &TABLE);
    install_udp_service(&mut dp, &TABLE);
    let ebpf = dp.dp.ebpf_mut();
    let config = Config {
        timeouts: TIMEOUTS,
        ..Default::default()
    };
    maps::set_config(ebpf, &config).unwrap();
    dp
}

fn key(client: Ipv4Addr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: be4(client),
        dst: be4(VIP4),
        sport_be: sport.to_be(),
        dport_be: dport.to_be(),
        proto,
        family: AF_INET,
        vlan: 0,
    }
}

fn table<'a>(
    dp: &'a mut TestDataplane,
    name: &str,
) -> HashMap<&'a mut aya::maps::MapData, FlowKey, Conn> {
    HashMap::try_from(dp.dp.ebpf_mut().map_mut(name).unwrap()).unwrap()
}

fn entry(dp: &mut TestDataplane, name: &str, key: &FlowKey) -> Option<Conn> {
    table(dp, name).get(key, 0).ok()
}

/// Ages the flow's entry in table `name`: it was last seen `ago` ticks before now.
fn age(dp: &mut TestDataplane, name: &str, key: &FlowKey, ago: u32) {
    let mut conn = entry(dp, name, key).expect("the flow has an entry");
    conn.seen = now_ticks().wrapping_sub(ago);
    table(dp, name).insert(key, conn, 0).unwrap();
}

/// Sends `frame`; returns the backend it went to (last byte of the DSR MAC) and the
/// connection counters it moved.
fn send(dp: &mut TestDataplane, frame: &[u8]) -> (u8, Vec<Stat>) {
    let before = dp.stats();
    let out = dp.run(frame);
    assert_eq!(out.action, XDP_TX, "forwarded");
    let after = dp.stats();
    let moved = [Stat::ConnHit, Stat::ConnMiss, Stat::ConnConfirmed]
        .into_iter()
        .filter(|s| after.get(*s).packets > before.get(*s).packets)
        .collect();
    (out.packet[5], moved)
}

/// Drains the flow's backend: every table points elsewhere, so a flow whose entry no
/// longer pins it goes to another backend.
fn drain(dp: &mut TestDataplane, backend: u8) {
    let others: Vec<u32> = [1u32, 2, 3]
        .into_iter()
        .filter(|b| *b != u32::from(backend))
        .collect();
    let table: Vec<u32> = (0..7).map(|i| others[i % 2]).collect();
    for id in [1, 3] {
        maps::swap_table(dp.dp.ebpf_mut(), id, &table).unwrap();
    }
}

const HIT: &[Stat] = &[Stat::ConnHit];
const MISS: &[Stat] = &[Stat::ConnMiss];

#[test]
fn entries_are_refreshed_in_place_by_their_flow() {
    let mut dp = setup("ct-refresh");
    let client = Ipv4Addr::new(10, 0, 0, 1);
    let k = key(client, 40000, VIP_PORT, IPPROTO_TCP);
    let ack = packet::tcp4_frame(client, VIP4, 40000, VIP_PORT, packet::Flags::ACK);
    send(
        &mut dp,
        &packet::tcp4_frame(client, VIP4, 40000, VIP_PORT, packet::SYN),
    );
    send(&mut dp, &ack);
    let fresh = entry(&mut dp, map_names::CONNS, &k).unwrap();
    assert!(
        now_ticks().wrapping_sub(fresh.seen) <= 1,
        "stamped now: {fresh:?}"
    );
    assert_eq!(fresh.flags, 0);
    // An entry 90 ticks old (of 100) is still live, and the packet stamps it again.
    age(&mut dp, map_names::CONNS, &k, 90);
    let (_, counted) = send(&mut dp, &ack);
    assert_eq!(counted, HIT);
    let refreshed = entry(&mut dp, map_names::CONNS, &k).unwrap();
    assert!(
        now_ticks().wrapping_sub(refreshed.seen) <= 1,
        "{refreshed:?}"
    );
    assert_eq!(
        (refreshed.backend_id, refreshed.flow_hash),
        (fresh.backend_id, fresh.flow_hash),
        "only the stamp changes"
    );
}

#[test]
fn idle_and_closing_flows_stop_pinning_after_their_timeouts() {
    let mut dp = setup("ct-expiry");
    // Three TCP flows, each confirmed (SYN, ACK).
    let flows: Vec<(FlowKey, Vec<u8>, u8)> = (1..=3u8)
        .map(|i| {
            let client = Ipv4Addr::new(10, 0, 0, i);
            let syn = packet::tcp4_frame(client, VIP4, 40000, VIP_PORT, packet::SYN);
            let ack = packet::tcp4_frame(client, VIP4, 40000, VIP_PORT, packet::Flags::ACK);
            let (backend, _) = send(&mut dp, &syn);
            send(&mut dp, &ack);
            (key(client, 40000, VIP_PORT, IPPROTO_TCP), ack, backend)
        })
        .collect();
    // Flow 1 keeps its backend until idle for longer than tcp_idle; flow 2's client
    // closes (FIN), after which tcp_closing applies; flow 3 is reset (RST).
    let (k1, ack1, b1) = &flows[0];
    let (k2, ack2, b2) = &flows[1];
    let (k3, ack3, b3) = &flows[2];
    let fin2 = packet::tcp4_frame(
        Ipv4Addr::new(10, 0, 0, 2),
        VIP4,
        40000,
        VIP_PORT,
        packet::Flags::FIN | packet::Flags::ACK,
    );
    let rst3 = packet::tcp4_frame(
        Ipv4Addr::new(10, 0, 0, 3),
        VIP4,
        40000,
        VIP_PORT,
        packet::Flags::RST,
    );
    assert_eq!(send(&mut dp, &fin2), (*b2, HIT.to_vec()));
    assert_eq!(send(&mut dp, &rst3), (*b3, HIT.to_vec()));
    for k in [k2, k3] {
        let flags = entry(&mut dp, map_names::CONNS, k).unwrap().flags;
        assert_eq!(flags & conn_flags::CLOSING, conn_flags::CLOSING, "{k:?}");
    }

    // Within their timeouts the flows stay on their backends (`conn_hit`), drained.
    drain(&mut dp, *b1);
    age(&mut dp, map_names::CONNS, k1, TIMEOUTS.tcp_idle - 1);
    age(&mut dp, map_names::CONNS, k2, TIMEOUTS.tcp_closing - 1);
    assert_eq!(
        send(&mut dp, ack1),
        (*b1, HIT.to_vec()),
        "idle, not expired"
    );
    assert_eq!(
        send(&mut dp, ack2),
        (*b2, HIT.to_vec()),
        "closing, not expired"
    );

    // Beyond them the entry no longer pins: Maglev (which avoids the drained backend)
    // places the flow again, as unconfirmed.
    for (k, ack, b, ago) in [
        (k1, ack1, b1, TIMEOUTS.tcp_idle + 1),
        (k2, ack2, b2, TIMEOUTS.tcp_closing + 1),
        (k3, ack3, b3, TIMEOUTS.tcp_closing + 1),
    ] {
        drain(&mut dp, *b);
        age(&mut dp, map_names::CONNS, k, ago);
        let (to, counted) = send(&mut dp, ack);
        assert_eq!(counted, MISS, "{k:?} aged {ago} ticks");
        assert_ne!(
            to, *b,
            "{k:?} aged {ago}: still pinned to the drained backend"
        );
    }
    // An idle (not closing) flow that is still open would have kept its backend for
    // 100 ticks: the closing timeout is what ended flows 2 and 3 after 6.
}

#[test]
fn udp_and_unconfirmed_entries_expire_too() {
    let mut dp = setup("ct-udp");
    let client = Ipv4Addr::new(10, 0, 0, 9);
    let datagram = packet::udp4_frame(client, VIP4, 5353, UDP_PORT, b"query");
    let k = key(client, 5353, UDP_PORT, IPPROTO_UDP);
    let (b, _) = send(&mut dp, &datagram);
    // The first datagram's unconfirmed entry, aged beyond udp_idle, confirms nothing.
    age(&mut dp, map_names::CONNS_NEW, &k, TIMEOUTS.udp_idle + 1);
    drain(&mut dp, b);
    let (to, counted) = send(&mut dp, &datagram);
    assert_eq!(counted, MISS, "a stale unconfirmed entry is not confirmed");
    assert_ne!(to, b);
    // The next datagram confirms the fresh one; within udp_idle it pins, beyond it not.
    let (b, counted) = send(&mut dp, &datagram);
    assert_eq!(counted, [Stat::ConnHit, Stat::ConnConfirmed]);
    drain(&mut dp, b);
    age(&mut dp, map_names::CONNS, &k, TIMEOUTS.udp_idle - 1);
    assert_eq!(send(&mut dp, &datagram), (b, HIT.to_vec()));
    age(&mut dp, map_names::CONNS, &k, TIMEOUTS.udp_idle + 1);
    let (to, counted) = send(&mut dp, &datagram);
    assert_eq!(counted, MISS);
    assert_ne!(to, b);
}
