//! Flood admission (issue 16 item 4), through BPF_PROG_TEST_RUN on the real program: a
//! flood of spoofed first packets (SYNs, mid-flow ACKs, single UDP datagrams from
//! random sources) must not displace confirmed flows from the connection table.
//!
//! Before the unconfirmed table, every such packet inserted a connection entry, so a
//! flood turned the whole table over: a confirmed flow lost its entry, and once the
//! Maglev table had changed (here: backend 1 drained) its next packet went elsewhere.
//! Now first packets are remembered in `XLB_CONNS_NEW` only, and a flow's second
//! packet confirms it into `XLB_CONNS`.

use std::net::Ipv4Addr;

use aya::maps::HashMap;
use lb_common::{maps as map_names, wire::XDP_TX, Conn, FlowKey};
use lb_userspace::dataplane::aya::maps;
use testbed::{
    dataplane::{PinDir, TestDataplane},
    fixture::{install_dsr_pair, install_udp_service, UDP_PORT, VIP4, VIP_PORT},
    packet::{self},
};

const TABLE: [u32; 7] = [1, 2, 3, 1, 2, 3, 1];
/// Backend 1 drained (weight 0, still live): its flows must stay with it.
const DRAINED: [u32; 7] = [2, 3, 2, 3, 2, 3, 2];
/// The connection table: twice the held flows, so without a flood nothing is evicted.
const ENTRIES: u32 = 16_384;
const HELD_TCP: u32 = 7_000;
const HELD_UDP: u32 = 1_000;
const FLOOD: u32 = 200_000;
/// A legitimate connection opens every this many flood packets, with this many flood
/// packets between its SYN and its ACK (its round trip).
const LEGIT_EVERY: u32 = 2_000;
const LEGIT_RTT: u32 = 100;

#[derive(Clone, Copy, Debug)]
enum Flood {
    Syn,
    Ack,
    Udp,
}

/// A flow and the backend it was confirmed on.
struct Held {
    /// A packet of the flow after its first two.
    next: Vec<u8>,
    backend: u8,
}

/// Backends 1..=3, the DSR service on VIP4:80/tcp (from the fixture) and one on
/// VIP4:53/udp, all on `TABLE`, with a connection table of [`ENTRIES`].
fn setup(tag: &str) -> TestDataplane {
    let mut dp = TestDataplane::load_sized(PinDir::new(tag), Some(ENTRIES));
    install_dsr_pair(&mut dp, 3, &TABLE);
    install_udp_service(&mut dp, &TABLE);
    dp
}

fn drain_backend_1(dp: &mut TestDataplane) {
    for id in [1, 3] {
        maps::swap_table(dp.dp.ebpf_mut(), id, &DRAINED).unwrap();
    }
}

/// The backend a DSR output frame goes to (last byte of `backend_mac`).
fn sent_to(dp: &mut TestDataplane, frame: &[u8]) -> Option<u8> {
    let out = dp.run(frame);
    (out.action == XDP_TX).then(|| out.packet[5])
}

/// Opens a flow with its first two packets (the second confirms it) and checks both
/// went to the same backend.
fn open(dp: &mut TestDataplane, first: &[u8], second: Vec<u8>) -> Held {
    let backend = sent_to(dp, first).expect("first packet forwarded");
    assert_eq!(
        sent_to(dp, &second),
        Some(backend),
        "second packet to the first one's backend"
    );
    Held {
        next: second,
        backend,
    }
}

fn tcp_flow(dp: &mut TestDataplane, client: Ipv4Addr, sport: u16) -> Held {
    let syn = packet::tcp4_frame(client, VIP4, sport, VIP_PORT, packet::SYN);
    let ack = packet::tcp4_frame(client, VIP4, sport, VIP_PORT, packet::Flags::ACK);
    open(dp, &syn, ack)
}

fn udp_flow(dp: &mut TestDataplane, client: Ipv4Addr, sport: u16) -> Held {
    let datagram = packet::udp4_frame(client, VIP4, sport, UDP_PORT, b"query");
    open(dp, &datagram, datagram.clone())
}

/// Held clients live in 10.1.0.0/16, one flow each.
fn held_client(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 1) as u8)
}

/// xorshift32: spoofed sources and ports, reproducible.
fn next(state: &mut u32) -> u32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    *state
}

fn spoofed(kind: Flood, rng: &mut u32) -> Vec<u8> {
    // 172.16.0.0/12: never a held or legitimate client.
    let src = Ipv4Addr::from(0xac10_0000 | (next(rng) & 0x000f_ffff));
    let sport = (next(rng) % 64_512 + 1_024) as u16;
    match kind {
        Flood::Syn => packet::tcp4_frame(src, VIP4, sport, VIP_PORT, packet::SYN),
        Flood::Ack => packet::tcp4_frame(src, VIP4, sport, VIP_PORT, packet::Flags::ACK),
        Flood::Udp => packet::udp4_frame(src, VIP4, sport, UDP_PORT, b"spoofed"),
    }
}

fn confirmed_flows(dp: &mut TestDataplane) -> usize {
    let table: HashMap<_, FlowKey, Conn> =
        HashMap::try_from(dp.dp.ebpf_mut().map_mut(map_names::CONNS).unwrap()).unwrap();
    table.keys().filter(Result::is_ok).count()
}

/// What one flood did: held flows that went to another backend afterwards, and
/// legitimate connections opened during it that did not reach the backend Maglev
/// chose for them.
#[derive(Debug, PartialEq, Eq)]
struct Damage {
    moved: usize,
    legit_failed: usize,
}

fn flood_and_count(kind: Flood) -> (Damage, usize, usize) {
    let mut dp = setup(&format!("flood-{kind:?}").to_lowercase());
    let mut held: Vec<Held> = (0..HELD_TCP)
        .map(|i| tcp_flow(&mut dp, held_client(i), 40_000))
        .collect();
    held.extend((0..HELD_UDP).map(|i| udp_flow(&mut dp, held_client(HELD_TCP + i), 40_000)));
    let before = confirmed_flows(&mut dp);
    assert_eq!(
        before,
        held.len(),
        "every held flow confirmed, none evicted"
    );
    drain_backend_1(&mut dp);
    let on_drained = held.iter().filter(|h| h.backend == 1).count();
    assert!(
        on_drained > 1_000,
        "{on_drained} held flows on the drained backend"
    );

    let mut rng = 0x2545_f491;
    let mut legit = 0u32;
    let mut legit_failed = 0;
    let mut pending: Option<(Vec<u8>, u8, u32)> = None;
    for i in 0..FLOOD {
        let frame = spoofed(kind, &mut rng);
        assert_eq!(
            dp.run(&frame).action,
            XDP_TX,
            "a spoofed packet is forwarded"
        );
        if i % LEGIT_EVERY == 0 {
            // 10.2.0.0/16: legitimate clients opening connections during the flood.
            let client = Ipv4Addr::new(10, 2, (legit / 250) as u8, (legit % 250 + 1) as u8);
            legit += 1;
            let syn = packet::tcp4_frame(client, VIP4, 50_000, VIP_PORT, packet::SYN);
            let ack = packet::tcp4_frame(client, VIP4, 50_000, VIP_PORT, packet::Flags::ACK);
            match sent_to(&mut dp, &syn) {
                Some(backend) if backend != 1 => pending = Some((ack, backend, i)),
                _ => legit_failed += 1,
            }
        }
        if let Some((ack, backend, _)) = pending.take_if(|(_, _, at)| i == *at + LEGIT_RTT) {
            // The handshake's ACK and the request after it reach the SYN's backend.
            if sent_to(&mut dp, &ack) != Some(backend) || sent_to(&mut dp, &ack) != Some(backend) {
                legit_failed += 1;
            }
        }
    }
    let moved = held
        .iter()
        .filter(|h| sent_to(&mut dp, &h.next) != Some(h.backend))
        .count();
    let after = confirmed_flows(&mut dp);
    (
        Damage {
            moved,
            legit_failed,
        },
        after,
        held.len() + legit as usize,
    )
}

/// 8,000 confirmed flows (7,000 TCP, 1,000 UDP; over 1,000 of them on a drained
/// backend) in a 16,384-entry table, then 200,000 spoofed first packets of each kind:
/// every held flow stays on its backend, every legitimate connection opened meanwhile
/// gets through, and the connection table holds exactly the confirmed flows (the flood
/// left nothing in it).
#[test]
fn confirmed_flows_survive_a_flood_of_first_packets() {
    testbed::require_root();
    for kind in [Flood::Syn, Flood::Ack, Flood::Udp] {
        let (damage, after, confirmed) = flood_and_count(kind);
        eprintln!("{kind:?} flood: {damage:?}, {after} flows in the table, {confirmed} confirmed");
        assert_eq!(
            damage,
            Damage {
                moved: 0,
                legit_failed: 0
            },
            "{kind:?} flood of {FLOOD} into {ENTRIES} entries ({} held flows)",
            HELD_TCP + HELD_UDP
        );
        assert_eq!(
            after, confirmed,
            "{kind:?} flood: the connection table holds the confirmed flows only"
        );
    }
}
