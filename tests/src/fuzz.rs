//! Differential fuzzing of the balancer program against [`crate::model`]: structured
//! packets (valid VIP traffic with random fields, ICMP errors, VRRP, VLANs, IPv6
//! extension chains, ...) are generated from a fixed-seed xorshift PRNG, often mutated
//! (truncated, bytes flipped, lengths / IHL / version / TTL / flags changed, padding
//! appended), and run through the real program (BPF_PROG_TEST_RUN, one run per packet)
//! and through the model. Verdict, output bytes and every `XLB_STATS` packet counter are
//! compared; the model's connection table follows the program's by applying the same
//! insert rule, and both are cleared every [`CONN_RESET_EVERY`] packets (and after any
//! disagreement) so the kernel LRU never evicts.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, AsRawFd, RawFd},
    path::PathBuf,
};

use lb_common::{
    maps as map_names,
    service::{service_flags, AF_INET, AF_INET6},
    wire::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6,
        ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, ICMP_DEST_UNREACH, ICMP_ECHO_REQUEST,
        ICMP_FRAG_NEEDED, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT, IPPROTO_HIP,
        IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_MH, IPPROTO_ROUTING, IPPROTO_SHIM6,
        IPPROTO_TCP, IPPROTO_UDP, IPPROTO_VRRP, IP_DF, IP_MF, IP_OFFSET, TCP_ACK, TCP_PSH, TCP_SYN,
        VRRP_TTL,
    },
    Backend, Config, Conn, Counter, FlowKey, ForwardMode, Service, Stat, VipKey,
};
use lb_userspace::dataplane::{
    aya::maps::{BatchAttr, BPF_MAP_LOOKUP_BATCH},
    DataPlane as _,
};

use crate::{
    dataplane::TestDataplane,
    model::{Expected, Model, Outcome, Tables},
    test_run,
};

/// Connection-table entries are cleared (program and model) this often.
pub const CONN_RESET_EVERY: u64 = 20_000;

/// xorshift64* — small, fixed-seed, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform-ish in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------
// The fuzzed configuration.

pub const VIP4A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const VIP4B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);
/// A VIP whose only service is STANDBY.
pub const VIP4C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 102);
pub const ENCAP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
pub const GUE_PORT: u16 = 6080;
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

pub fn vip6a() -> Ipv6Addr {
    "fd00::100".parse().unwrap()
}
pub fn vip6b() -> Ipv6Addr {
    "fd00::101".parse().unwrap()
}
pub fn encap6() -> Ipv6Addr {
    "fd00::2".parse().unwrap()
}

pub use crate::packet::{be4, be6};
pub fn backend_mac(id: u32) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 0, id as u8]
}

/// A hash seed other than the default, so model and program must agree on seeded
/// hashing (Maglev slot and GUE source port), not only on the built-in constant.
pub const HASH_SEED: u32 = 0x5eed_c0de;

/// The full encap configuration (v4 and v6 sources, GUE port) and [`HASH_SEED`]. The
/// sources are single addresses; [`prefix_config`] gives them flow-entropy prefixes.
pub fn full_config() -> Config {
    Config {
        encap_src_v4: be4(ENCAP4)[0],
        encap_src_v6: be6(encap6()),
        gue_port_be: GUE_PORT.to_be(),
        _pad: [0; 2],
        hash_seed: HASH_SEED,
        toobig_per_sec: 0,
        encap_host_v4: 0,
        encap_host_v6: 0,
        // Entries never expire here: the model has no clock.
        timeouts: lb_common::ConnTimeoutTicks::default(),
    }
}

/// [`full_config`] with the outer sources taken from per-flow addresses: the low byte
/// of the IPv4 source and the low 16 bits of the IPv6 source carry the flow hash, ORed
/// into the base address (whose own bits there validation would refuse; the data plane
/// ORs either way).
pub fn prefix_config() -> Config {
    Config {
        encap_host_v4: u32::from_ne_bytes([0, 0, 0, 0xff]),
        encap_host_v6: u32::from_ne_bytes([0, 0, 0xff, 0xff]),
        ..full_config()
    }
}

/// Services covering every mode, flag and failure path the model knows (ids in the
/// comments are service ids; backends 1..=4 are IPv4, 5..=8 IPv6, 9 never exists):
///
/// | id | VIP | port/proto | mode | flags / table |
/// |---|---|---|---|---|
/// | 1 | 10.0.0.100 | 80/tcp | DSR | [1,2,3,1,2,3,1] |
/// | 2 | 10.0.0.100 | 53/udp | IPIP | 13 slots over 1..=4 |
/// | 3 | 10.0.0.100 | all/tcp | GUE | source affinity, [2,3,4,2,3] |
/// | 4 | 10.0.0.101 | 443/tcp | DSR | standby |
/// | 5 | 10.0.0.101 | all/udp | DSR | fallback pass, [9,0,9] (never a backend) |
/// | 6 | 10.0.0.101 | 80/tcp | DSR | tx_port 7, not configured |
/// | 7 | 10.0.0.101 | 8080/tcp | mode 9 (invalid) | |
/// | 8 | 10.0.0.101 | 81/tcp | DSR | [9,9,1]: mostly dead, no fallback |
/// | 9 | fd00::100 | 80/tcp | DSR | [5,6,7,5,6,7,5] |
/// | 10 | fd00::100 | 53/udp | IPIP | [5,6,7,8,5] |
/// | 11 | fd00::100 | all/tcp | GUE | [8,7,6] |
/// | 12 | fd00::101 | 80/tcp | IPIP | no Maglev table installed |
/// | 13 | fd00::101 | all/udp | DSR | fallback pass, [5,0] |
/// | 14 | 10.0.0.102 | 80/tcp | DSR | standby (the VIP's only service) |
pub fn fuzz_tables() -> Tables {
    /// (id, VIP, family, port, proto, flags, mode, Maglev table)
    type ServiceRow = (u32, [u32; 4], u8, u16, u8, u32, u8, Option<Vec<u32>>);
    // Written through the port, in the control plane's order (config, backends, tables,
    // services), so the same sequence replays into the kernel.
    let mut t = Tables::new();
    t.set_config(&full_config()).unwrap();
    for id in 1..=4u32 {
        t.set_backend(
            id,
            &Backend {
                addr: be4(Ipv4Addr::new(10, 0, 1, id as u8)),
                family: AF_INET,
                mac: backend_mac(id),
                ..Default::default()
            },
        )
        .unwrap();
    }
    for id in 5..=8u32 {
        t.set_backend(
            id,
            &Backend {
                addr: be6(format!("fd00:1::{id}").parse().unwrap()),
                family: AF_INET6,
                mac: backend_mac(id),
                ..Default::default()
            },
        )
        .unwrap();
    }
    let (dsr, ipip, gue) = (
        ForwardMode::Dsr as u8,
        ForwardMode::Ipip as u8,
        ForwardMode::Gue as u8,
    );
    let (v4a, v4b, v6a, v6b) = (be4(VIP4A), be4(VIP4B), be6(vip6a()), be6(vip6b()));
    let v4c = be4(VIP4C);
    let t1 = vec![1, 2, 3, 1, 2, 3, 1];
    #[rustfmt::skip]
    let services: [ServiceRow; 14] = [
        (1, v4a, AF_INET, 80, 6, 0, dsr, Some(t1.clone())),
        (2, v4a, AF_INET, 53, 17, 0, ipip, Some(vec![1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4, 1])),
        (3, v4a, AF_INET, 0, 6, service_flags::SOURCE_AFFINITY, gue, Some(vec![2, 3, 4, 2, 3])),
        (4, v4b, AF_INET, 443, 6, service_flags::STANDBY, dsr, Some(t1.clone())),
        (5, v4b, AF_INET, 0, 17, service_flags::FALLBACK_PASS, dsr, Some(vec![9, 0, 9])),
        (6, v4b, AF_INET, 80, 6, 0, dsr, Some(t1.clone())),
        (7, v4b, AF_INET, 8080, 6, 0, 9, Some(t1)),
        (8, v4b, AF_INET, 81, 6, 0, dsr, Some(vec![9, 9, 1])),
        (9, v6a, AF_INET6, 80, 6, 0, dsr, Some(vec![5, 6, 7, 5, 6, 7, 5])),
        (10, v6a, AF_INET6, 53, 17, 0, ipip, Some(vec![5, 6, 7, 8, 5])),
        (11, v6a, AF_INET6, 0, 6, 0, gue, Some(vec![8, 7, 6])),
        (12, v6b, AF_INET6, 80, 6, 0, ipip, None),
        (13, v6b, AF_INET6, 0, 17, service_flags::FALLBACK_PASS, dsr, Some(vec![5, 0])),
        (14, v4c, AF_INET, 80, 6, service_flags::STANDBY, dsr, Some(vec![1, 2])),
    ];
    let tables: Vec<(u32, Vec<u32>)> = services
        .iter()
        .filter_map(|s| s.7.clone().map(|table| (s.0, table)))
        .collect();
    t.swap_tables(&tables).unwrap();
    for (id, addr, family, port, proto, flags, mode, _) in services {
        let key = VipKey {
            addr,
            port_be: port.to_be(),
            proto,
            family,
        };
        let svc = Service {
            id,
            flags,
            mode,
            tx_port: if id == 6 { 7 } else { 0 },
            table: 0,
            vlan: if id == 8 { 5 } else { 0 },
        };
        t.set_service(&key, &svc).unwrap();
    }
    t
}

// ---------------------------------------------------------------------------------------
// Packet builders (by hand: checksums are irrelevant to the decision, except where noted).

fn eth(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + payload.len());
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn csum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// IPv4 header (IHL from `options`) + payload, valid header checksum.
fn ip4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    ttl: u8,
    frag: u16,
    options: &[u8],
    l4: &[u8],
) -> Vec<u8> {
    let hlen = 20 + options.len();
    let mut ip = vec![0u8; hlen];
    ip[0] = 0x40 | (hlen / 4) as u8;
    ip[2..4].copy_from_slice(&((hlen + l4.len()) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6..8].copy_from_slice(&frag.to_be_bytes());
    ip[8] = ttl;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    ip[20..].copy_from_slice(options);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(l4);
    ip
}

fn ip6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, hop: u8, l4: &[u8]) -> Vec<u8> {
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
    ip[6] = next;
    ip[7] = hop;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    ip.extend_from_slice(l4);
    ip
}

fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

/// ICMP message with a valid checksum over the whole message (no pseudo-header: for
/// ICMPv6 the checksum is deliberately not the real one; the program never checks it).
fn icmp(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = csum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

// ---------------------------------------------------------------------------------------
// The generator.

/// Packet classes, for the per-class summary.
pub const CLASSES: &[&str] = &[
    "tcp4-vip",
    "udp4-vip",
    "tcp6-vip",
    "udp6-vip",
    "l4-not-vip",
    "icmp4-echo",
    "icmp6-echo",
    "icmp4-frag-needed",
    "icmp6-too-big",
    "icmp-other",
    "vrrp",
    "arp-other-ethertype",
    "vlan",
    "ipv4-options",
    "ipv4-fragment",
    "ipv6-ext-chain",
    "random-bytes",
];

fn client4(r: &mut Rng) -> Ipv4Addr {
    if r.chance(3) {
        Ipv4Addr::from(r.next_u64() as u32)
    } else {
        Ipv4Addr::new(10, 0, 0, 1 + r.below(8) as u8)
    }
}

fn client6(r: &mut Rng) -> Ipv6Addr {
    if r.chance(3) {
        Ipv6Addr::from(u128::from(r.next_u64()) << 64 | u128::from(r.next_u64()))
    } else {
        format!("fd00::{}", 1 + r.below(8)).parse().unwrap()
    }
}

fn vip4(r: &mut Rng) -> Ipv4Addr {
    r.pick(&[VIP4A, VIP4A, VIP4A, VIP4B, VIP4B, VIP4C])
}

fn vip6(r: &mut Rng) -> Ipv6Addr {
    if r.chance(60) {
        vip6a()
    } else {
        vip6b()
    }
}

fn client_port(r: &mut Rng) -> u16 {
    if r.chance(5) {
        r.next_u64() as u16
    } else {
        40000 + r.below(8) as u16
    }
}

fn vip_port(r: &mut Rng) -> u16 {
    r.pick(&[80, 80, 80, 53, 53, 443, 8080, 81, 22, 0, 6080])
        ^ if r.chance(3) { u16::from(r.byte()) } else { 0 }
}

fn tcp_flags(r: &mut Rng) -> u8 {
    match r.below(10) {
        0..=2 => TCP_SYN,
        3..=5 => TCP_ACK,
        6 => TCP_SYN | TCP_ACK,
        7 => TCP_PSH | TCP_ACK,
        _ => r.byte(),
    }
}

fn payload(r: &mut Rng) -> Vec<u8> {
    let n = match r.below(20) {
        0 => 1400 + r.below(140),
        1 => 0,
        _ => r.below(64),
    };
    r.bytes(n)
}

fn ttl(r: &mut Rng) -> u8 {
    match r.below(20) {
        0 => 0,
        1 => 1,
        2 => 2,
        _ => 64,
    }
}

fn l4_for(r: &mut Rng, proto: u8) -> Vec<u8> {
    let (sp, dp) = (client_port(r), vip_port(r));
    let p = payload(r);
    if proto == IPPROTO_TCP {
        tcp(sp, dp, tcp_flags(r), &p)
    } else {
        udp(sp, dp, &p)
    }
}

/// One structured packet of a random class: `(class, frame)`. A few percent are sent
/// to a broadcast, multicast or random destination MAC.
pub fn generate(r: &mut Rng) -> (&'static str, Vec<u8>) {
    let class = CLASSES[r.below(CLASSES.len())];
    let mut frame = structured(r, class);
    if r.chance(4) {
        let mac = match r.below(3) {
            0 => [0xff; 6],
            1 => [0x01, 0x00, 0x5e, 0, 0, 0x12],
            _ => core::array::from_fn(|_| r.byte()),
        };
        frame[0..6].copy_from_slice(&mac);
    }
    (class, frame)
}

fn structured(r: &mut Rng, class: &str) -> Vec<u8> {
    match class {
        "tcp4-vip" | "udp4-vip" => {
            let proto = if class == "tcp4-vip" {
                IPPROTO_TCP
            } else {
                IPPROTO_UDP
            };
            let l4 = l4_for(r, proto);
            let t = ttl(r);
            eth(
                ETH_P_IPV4,
                &ip4(client4(r), vip4(r), proto, t, IP_DF, &[], &l4),
            )
        }
        "tcp6-vip" | "udp6-vip" => {
            let proto = if class == "tcp6-vip" {
                IPPROTO_TCP
            } else {
                IPPROTO_UDP
            };
            let l4 = l4_for(r, proto);
            let t = ttl(r);
            eth(ETH_P_IPV6, &ip6(client6(r), vip6(r), proto, t, &l4))
        }
        "l4-not-vip" => {
            let proto = r.pick(&[IPPROTO_TCP, IPPROTO_UDP]);
            let l4 = l4_for(r, proto);
            if r.chance(50) {
                let dst = Ipv4Addr::new(10, 0, 0, 5 + r.below(3) as u8);
                eth(ETH_P_IPV4, &ip4(client4(r), dst, proto, 64, 0, &[], &l4))
            } else {
                let dst: Ipv6Addr = "fd00::5".parse().unwrap();
                eth(ETH_P_IPV6, &ip6(client6(r), dst, proto, 64, &l4))
            }
        }
        "icmp4-echo" => {
            let dst = if r.chance(70) {
                vip4(r)
            } else {
                Ipv4Addr::new(10, 0, 0, 7)
            };
            let body = payload(r);
            let m = icmp(
                ICMP_ECHO_REQUEST,
                if r.chance(90) { 0 } else { r.byte() },
                [0, 1, 0, 1],
                &body,
            );
            eth(
                ETH_P_IPV4,
                &ip4(client4(r), dst, IPPROTO_ICMP, ttl(r), 0, &[], &m),
            )
        }
        "icmp6-echo" => {
            let dst = if r.chance(70) {
                vip6(r)
            } else {
                "fd00::7".parse().unwrap()
            };
            let body = payload(r);
            let m = icmp(
                ICMPV6_ECHO_REQUEST,
                if r.chance(90) { 0 } else { r.byte() },
                [0, 1, 0, 1],
                &body,
            );
            eth(
                ETH_P_IPV6,
                &ip6(client6(r), dst, IPPROTO_ICMPV6, ttl(r), &m),
            )
        }
        "icmp4-frag-needed" => {
            // The quoted packet is a reply VIP → client.
            let proto = r.pick(&[IPPROTO_TCP, IPPROTO_UDP]);
            let (cp, vp) = (client_port(r), vip_port(r));
            let l4 = if proto == IPPROTO_TCP {
                tcp(vp, cp, TCP_ACK, &[])
            } else {
                udp(vp, cp, &[])
            };
            let vip = vip4(r);
            let quoted = ip4(vip, client4(r), proto, 64, IP_DF, &[], &l4);
            let keep = if r.chance(80) { 28 } else { quoted.len() };
            let m = icmp(
                ICMP_DEST_UNREACH,
                ICMP_FRAG_NEEDED,
                [0, 0, 0x05, 0x78],
                &quoted[..keep],
            );
            let router = Ipv4Addr::new(10, 0, 9, 1);
            let dst = if r.chance(90) { vip } else { router };
            eth(
                ETH_P_IPV4,
                &ip4(router, dst, IPPROTO_ICMP, ttl(r), 0, &[], &m),
            )
        }
        "icmp6-too-big" => {
            let proto = r.pick(&[IPPROTO_TCP, IPPROTO_UDP]);
            let (cp, vp) = (client_port(r), vip_port(r));
            let l4 = if proto == IPPROTO_TCP {
                tcp(vp, cp, TCP_ACK, &[])
            } else {
                udp(vp, cp, &[])
            };
            let vip = vip6(r);
            let quoted = ip6(vip, client6(r), proto, 64, &l4);
            let keep = if r.chance(80) { 48 } else { quoted.len() };
            let m = icmp(
                ICMPV6_PACKET_TOO_BIG,
                0,
                [0, 0, 0x05, 0x00],
                &quoted[..keep],
            );
            let router: Ipv6Addr = "fd00:9::1".parse().unwrap();
            eth(ETH_P_IPV6, &ip6(router, vip, IPPROTO_ICMPV6, ttl(r), &m))
        }
        "icmp-other" => {
            let kind = r.byte();
            let code = r.byte() & 7;
            let n = r.below(60);
            let body = r.bytes(n);
            if r.chance(50) {
                let m = icmp(kind, code, [0; 4], &body);
                eth(
                    ETH_P_IPV4,
                    &ip4(client4(r), vip4(r), IPPROTO_ICMP, 64, 0, &[], &m),
                )
            } else {
                let m = icmp(kind, code, [0; 4], &body);
                eth(
                    ETH_P_IPV6,
                    &ip6(client6(r), vip6(r), IPPROTO_ICMPV6, 64, &m),
                )
            }
        }
        "vrrp" => {
            let mut adv = vec![0x31, 1 + r.byte() % 4, r.byte(), 1, 0, 100, 0, 0];
            adv.extend_from_slice(&VIP4A.octets());
            if r.chance(50) {
                eth(
                    ETH_P_IPV4,
                    &ip4(
                        client4(r),
                        Ipv4Addr::new(224, 0, 0, 18),
                        IPPROTO_VRRP,
                        VRRP_TTL,
                        0,
                        &[],
                        &adv,
                    ),
                )
            } else {
                eth(
                    ETH_P_IPV6,
                    &ip6(
                        client6(r),
                        "ff02::12".parse().unwrap(),
                        IPPROTO_VRRP,
                        VRRP_TTL,
                        &adv,
                    ),
                )
            }
        }
        "arp-other-ethertype" => {
            let any = r.next_u64() as u16;
            let et = r.pick(&[ETH_P_ARP, 0x88cc, 0x8847, 0x0842, any]);
            let n = r.below(60);
            eth(et, &r.bytes(n))
        }
        "vlan" => {
            // Any of the classes the balancer acts on, behind one to three tags (VLAN 5
            // scopes service 8): decided as untagged, tags kept; three pass `vlan`.
            let inner = r.pick(&[
                "tcp4-vip",
                "udp4-vip",
                "tcp6-vip",
                "udp6-vip",
                "icmp4-echo",
                "icmp6-echo",
                "icmp4-frag-needed",
                "icmp6-too-big",
                "vrrp",
            ]);
            let untagged = structured(r, inner);
            let count = match r.below(10) {
                0 => 3,
                1..=3 => 2,
                _ => 1,
            };
            let tags: Vec<(u16, u16)> = (0..count)
                .map(|_| {
                    let tpid = r.pick(&[ETH_P_8021Q, ETH_P_8021AD]);
                    let vid = if r.chance(50) {
                        5
                    } else {
                        r.next_u64() as u16 & 0x0fff
                    };
                    (tpid, vid)
                })
                .collect();
            let mut f = crate::packet::tagged(&untagged, &tags);
            if r.chance(10) {
                // Cut inside the tags (the shortest frame a test run takes is 14 bytes).
                f.truncate(14 + r.below(4 * count));
            }
            f
        }
        "ipv4-options" => {
            let proto = r.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
            let l4 = if proto == IPPROTO_ICMP {
                icmp(ICMP_ECHO_REQUEST, 0, [0; 4], &[])
            } else {
                l4_for(r, proto)
            };
            let words = 1 + r.below(10);
            let mut opts = vec![1u8; words * 4];
            if r.chance(50) {
                opts = r.bytes(words * 4);
            }
            let dst = if r.chance(80) {
                vip4(r)
            } else {
                Ipv4Addr::new(10, 0, 0, 5)
            };
            eth(ETH_P_IPV4, &ip4(client4(r), dst, proto, 64, 0, &opts, &l4))
        }
        "ipv4-fragment" => {
            let proto = r.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
            let l4 = if proto == IPPROTO_ICMP {
                icmp(
                    r.pick(&[ICMP_ECHO_REQUEST, ICMP_DEST_UNREACH]),
                    r.pick(&[0, ICMP_FRAG_NEEDED]),
                    [0; 4],
                    &r.bytes(28),
                )
            } else {
                l4_for(r, proto)
            };
            let frag = match r.below(3) {
                0 => IP_MF,
                1 => 1 + r.below(usize::from(IP_OFFSET)) as u16,
                _ => IP_MF | (1 + r.below(usize::from(IP_OFFSET)) as u16),
            };
            eth(
                ETH_P_IPV4,
                &ip4(client4(r), vip4(r), proto, 64, frag, &[], &l4),
            )
        }
        "ipv6-ext-chain" => {
            let proto = r.pick(&[IPPROTO_TCP, IPPROTO_UDP]);
            let mut body = l4_for(r, proto);
            let mut next = proto;
            for _ in 0..1 + r.below(3) {
                let kind = r.pick(&[
                    IPPROTO_HOPOPTS,
                    IPPROTO_ROUTING,
                    IPPROTO_FRAGMENT,
                    IPPROTO_DSTOPTS,
                    IPPROTO_AH,
                    IPPROTO_MH,
                    IPPROTO_HIP,
                    IPPROTO_SHIM6,
                ]);
                let mut h = vec![next, 0, 0, 0, 0, 0, 0, 0];
                if kind == IPPROTO_FRAGMENT {
                    h[3] = r.byte() & 1;
                }
                h.extend_from_slice(&body);
                body = h;
                next = kind;
            }
            eth(ETH_P_IPV6, &ip6(client6(r), vip6(r), next, 64, &body))
        }
        _ => {
            let n = 14 + r.below(120);
            let mut f = r.bytes(n);
            if r.chance(50) {
                f[12..14].copy_from_slice(&r.pick(&[ETH_P_IPV4, ETH_P_IPV6]).to_be_bytes());
            }
            f
        }
    }
}

/// Applies 1–3 random mutations. Frames stay ≥ 14 bytes (BPF_PROG_TEST_RUN's minimum).
pub fn mutate(r: &mut Rng, f: &mut Vec<u8>) {
    for _ in 0..1 + r.below(3) {
        let v6 = f.len() >= ETH_HLEN && f[12..14] == ETH_P_IPV6.to_be_bytes();
        match r.below(11) {
            0 => {
                let n = 14 + r.below(f.len().saturating_sub(13).max(1));
                f.truncate(n.max(14));
            }
            1 => {
                for _ in 0..1 + r.below(3) {
                    let i = r.below(f.len());
                    f[i] ^= 1 << r.below(8);
                }
            }
            2 => {
                let i = r.below(f.len());
                f[i] = r.byte();
            }
            3 if f.len() >= 20 => {
                // IPv4 total length / IPv6 payload length.
                let off = if v6 { 18 } else { 16 };
                let cur = u16::from_be_bytes([f[off], f[off + 1]]);
                let new = match r.below(3) {
                    0 => r.next_u64() as u16,
                    1 => cur.wrapping_sub(1 + r.below(24) as u16),
                    _ => cur.wrapping_add(1 + r.below(8) as u16),
                };
                f[off..off + 2].copy_from_slice(&new.to_be_bytes());
            }
            4 if f.len() > 14 => f[14] = (f[14] & 0xf0) | r.below(16) as u8,
            5 if f.len() > 14 => f[14] = (f[14] & 0x0f) | (r.below(16) as u8) << 4,
            6 if f.len() > 22 => {
                let off = if v6 { 21 } else { 22 };
                f[off] = r.pick(&[0, 1, 2, 255]);
            }
            7 => {
                let n = 1 + r.below(48);
                if r.chance(50) {
                    f.extend(std::iter::repeat_n(0, n));
                } else {
                    let b = r.bytes(n);
                    f.extend_from_slice(&b);
                }
            }
            8 if f.len() > 24 => {
                // Protocol / next header.
                let off = if v6 { 20 } else { 23 };
                let any = r.byte();
                f[off] = r.pick(&[0, 1, 6, 17, 41, 43, 44, 58, 60, 112, any]);
            }
            9 if f.len() > 24 => {
                // IPv4 flags / fragment offset.
                let any = r.next_u64() as u16;
                let v = r.pick(&[0u16, IP_MF, IP_DF, 0x0001, IP_OFFSET, any]);
                f[20..22].copy_from_slice(&v.to_be_bytes());
            }
            10 => {
                // TCP flags byte of an option-less header.
                let off = if v6 { 14 + 40 + 13 } else { 14 + 20 + 13 };
                if off < f.len() {
                    f[off] = r.byte();
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------
// Running both sides.

/// `XLB_STATS` read in one BPF_MAP_LOOKUP_BATCH (packets only, summed over CPUs).
struct StatsReader {
    fd: RawFd,
    cpus: usize,
    keys: Vec<u32>,
    values: Vec<Counter>,
}

impl StatsReader {
    fn read(&mut self) -> [u64; Stat::COUNT as usize] {
        let mut out_batch = 0u32;
        let mut attr = BatchAttr {
            out_batch: &raw mut out_batch as u64,
            keys: self.keys.as_mut_ptr() as u64,
            values: self.values.as_mut_ptr() as u64,
            count: Stat::COUNT,
            map_fd: self.fd as u32,
            ..Default::default()
        };
        // SAFETY: the attr points at buffers sized for COUNT keys × cpus values.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>(),
            )
        };
        let err = std::io::Error::last_os_error();
        assert!(
            rc == 0 || err.raw_os_error() == Some(libc::ENOENT),
            "BPF_MAP_LOOKUP_BATCH on XLB_STATS: {err}"
        );
        assert_eq!(attr.count, Stat::COUNT, "stats batch count");
        let mut sums = [0u64; Stat::COUNT as usize];
        for (i, &key) in self.keys.iter().enumerate() {
            sums[key as usize] = self.values[i * self.cpus..(i + 1) * self.cpus]
                .iter()
                .map(|c| c.packets)
                .sum();
        }
        // As every reader does (lb_userspace::dataplane::aya::stats): `rx` is the sum of the verdicts.
        sums[Stat::Rx as usize] = Stat::VERDICTS.iter().map(|v| sums[*v as usize]).sum();
        sums
    }
}

/// What the program did with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actual {
    pub action: u32,
    pub packet: Vec<u8>,
    pub counted: Vec<Stat>,
}

/// One frame where program and model differ.
#[derive(Clone, Debug)]
pub struct Disagreement {
    pub index: u64,
    pub class: String,
    pub input: Vec<u8>,
    pub expected: Expected,
    pub actual: Actual,
}

pub fn hex(b: &[u8]) -> String {
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

pub fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn names(stats: &[Stat]) -> String {
    stats.iter().map(|s| s.name()).collect::<Vec<_>>().join(",")
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (e, a) = (&self.expected, &self.actual);
        writeln!(f, "packet #{} class {}", self.index, self.class)?;
        writeln!(f, "input    {}", hex(&self.input))?;
        writeln!(
            f,
            "model    verdict {} counters {}",
            e.action,
            names(&e.counted)
        )?;
        writeln!(
            f,
            "program  verdict {} counters {}",
            a.action,
            names(&a.counted)
        )?;
        if e.packet != a.packet {
            writeln!(f, "model    out {}", hex(&e.packet))?;
            writeln!(f, "program  out {}", hex(&a.packet))?;
        }
        Ok(())
    }
}

/// The real program and the model, fed the same frames.
pub struct Harness {
    pub dp: TestDataplane,
    pub model: Model,
    /// Its own handle on the loaded balancer, so runs need no borrow of `dp`.
    prog: aya::programs::Xdp,
    stats: StatsReader,
    last: [u64; Stat::COUNT as usize],
}

impl Harness {
    /// Loads the data plane and installs `tables` into it and into the model.
    pub fn new(tag: &str, tables: Tables) -> Self {
        let mut dp = TestDataplane::load(tag);
        crate::model::install(&tables, &mut dp);
        let balancer = lb_common::programs::BALANCER;
        let prog = test_run::handle(dp.dp.xdp(balancer).expect("program"), balancer)
            .expect("a handle on the balancer");
        let fd = match dp.dp.ebpf().map(map_names::STATS) {
            Some(aya::maps::Map::PerCpuArray(d)) => d.fd().as_fd().as_raw_fd(),
            _ => panic!("XLB_STATS is a per-CPU array"),
        };
        let cpus = aya::util::nr_cpus().expect("possible CPUs");
        let mut stats = StatsReader {
            fd,
            cpus,
            keys: vec![0; Stat::COUNT as usize],
            values: vec![Counter::default(); Stat::COUNT as usize * cpus],
        };
        let last = stats.read();
        Self {
            dp,
            model: Model::new(tables),
            prog,
            stats,
            last,
        }
    }

    /// Changes the encap config on both sides.
    pub fn set_config(&mut self, config: Config) {
        lb_userspace::dataplane::aya::maps::set_config(self.dp.dp.ebpf_mut(), &config)
            .expect("config");
        self.model.tables.config = config;
    }

    /// Empties the connection and unconfirmed tables on both sides.
    pub fn reset_conns(&mut self) {
        for name in [map_names::CONNS, map_names::CONNS_NEW] {
            let mut conns: aya::maps::HashMap<_, FlowKey, Conn> =
                aya::maps::HashMap::try_from(self.dp.dp.ebpf_mut().map_mut(name).unwrap()).unwrap();
            let keys: Vec<FlowKey> = conns.keys().filter_map(Result::ok).collect();
            for k in keys {
                let _ = conns.remove(&k);
            }
        }
        self.model.tables.conns.clear();
        self.model.tables.unconfirmed.clear();
    }

    /// Runs `frame` through the program only.
    pub fn run_program(&mut self, frame: &[u8]) -> Actual {
        let out = test_run::run(&self.prog, frame).expect("BPF_PROG_TEST_RUN");
        let now = self.stats.read();
        let mut counted = Vec::new();
        for &s in Stat::ALL {
            let moved = now[s as usize] - self.last[s as usize];
            for _ in 0..moved {
                counted.push(s);
            }
        }
        self.last = now;
        Actual {
            action: out.action,
            packet: out.packet,
            counted,
        }
    }

    /// Runs `frame` through both; the flag says whether they agree (when they do not,
    /// the connection tables are reset so the next packets start in sync).
    pub fn check(&mut self, frame: &[u8]) -> (Outcome, Actual, bool) {
        let actual = self.run_program(frame);
        let outcome = self.model.step(frame);
        let e = &outcome.expected;
        let agree =
            e.action == actual.action && e.packet == actual.packet && e.counted == actual.counted;
        if !agree {
            self.reset_conns();
        }
        (outcome, actual, agree)
    }
}

/// Per-class tallies.
#[derive(Clone, Debug, Default)]
pub struct ClassStats {
    pub packets: u64,
    pub disagreements: u64,
    /// Packets by verdict: aborted, drop, pass, tx, redirect.
    pub verdicts: [u64; 5],
}

/// Result of a fuzzing run.
#[derive(Debug, Default)]
pub struct Report {
    pub packets: u64,
    pub seconds: f64,
    pub disagreements: Vec<Disagreement>,
    pub classes: BTreeMap<String, ClassStats>,
    /// Counter slots seen moving, with how many packets moved them.
    pub counters: BTreeMap<&'static str, u64>,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} packets in {:.1} s: {:.0} packets/s, {} disagreements",
            self.packets,
            self.seconds,
            self.packets as f64 / self.seconds.max(1e-9),
            self.disagreements.len()
        );
        let _ = writeln!(
            s,
            "{:<26} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "class", "packets", "drop", "pass", "tx", "other", "disagr"
        );
        for (name, c) in &self.classes {
            let _ = writeln!(
                s,
                "{:<26} {:>9} {:>8} {:>8} {:>8} {:>8} {:>7}",
                name,
                c.packets,
                c.verdicts[1],
                c.verdicts[2],
                c.verdicts[3],
                c.verdicts[0] + c.verdicts[4],
                c.disagreements
            );
        }
        let _ = writeln!(s, "counters moved (packets): {:?}", self.counters);
        s
    }
}

/// Fuzzing options.
#[derive(Clone, Debug)]
pub struct Options {
    pub packets: u64,
    pub seed: u64,
    /// Where each disagreement is saved (`disagreement-<n>.txt`); `None`: not saved.
    pub save_dir: Option<PathBuf>,
    /// Print each disagreement as it happens (at most this many).
    pub print_limit: usize,
}

/// Generates, mutates and checks `opts.packets` frames. From the middle on the encap
/// sources are prefixes ([`prefix_config`]: per-flow outer sources from the flows'
/// stored hashes); the last tenth runs with the encap configuration cleared (IPIP /
/// GUE services then drop `encap_error`).
pub fn run(opts: &Options) -> Report {
    let mut h = Harness::new("fuzz", fuzz_tables());
    let mut rng = Rng::new(opts.seed);
    let mut report = Report::default();
    let start = std::time::Instant::now();
    let unconfigured_from = opts.packets - opts.packets / 10;
    if let Some(dir) = &opts.save_dir {
        std::fs::create_dir_all(dir).expect("creating the save directory");
    }
    for i in 0..opts.packets {
        if i > 0 && i % CONN_RESET_EVERY == 0 {
            h.reset_conns();
        }
        if i == opts.packets / 2 && i > 0 {
            h.set_config(prefix_config());
        }
        if i == unconfigured_from && i > 0 {
            h.set_config(Config::default());
        }
        let (class, mut frame) = generate(&mut rng);
        let mutated = rng.chance(45);
        if mutated {
            mutate(&mut rng, &mut frame);
        }
        let label = if mutated {
            format!("{class}+mut")
        } else {
            class.to_owned()
        };
        let stats = report.classes.entry(label.clone()).or_default();
        stats.packets += 1;
        let (outcome, actual, agree) = h.check(&frame);
        if !agree {
            stats.disagreements += 1;
            let d = Disagreement {
                index: i,
                class: label,
                input: frame,
                expected: outcome.expected.clone(),
                actual: actual.clone(),
            };
            if report.disagreements.len() < opts.print_limit {
                eprintln!("DISAGREEMENT\n{d}");
            }
            if let Some(dir) = &opts.save_dir {
                let path = dir.join(format!("disagreement-{i}.txt"));
                std::fs::write(&path, d.to_string()).expect("saving a disagreement");
            }
            report.disagreements.push(d);
        }
        stats.verdicts[(actual.action as usize).min(4)] += 1;
        for s in &actual.counted {
            *report.counters.entry(s.name()).or_default() += 1;
        }
    }
    report.packets = opts.packets;
    report.seconds = start.elapsed().as_secs_f64();
    report
}
