//! A plain-Rust reference model of the balancer program's forwarding decision (`xlb` in
//! lb-ebpf), for differential testing ([`crate::fuzz`]).
//!
//! Given the configured tables ([`Tables`]: services by (VIP, port, proto) with the
//! all-ports fallback, service flags and mode, Maglev tables, backends, encap config,
//! egress MACs, and the connection table the model writes: [`Tables`] is the in-memory
//! data-plane port), and an
//! input frame, [`Model::step`] returns what the program must do: the verdict, the exact
//! output bytes and the set of [`Stat`] counters that move by one packet. The output
//! frames are built here byte by byte (the model parses with its own offsets and writes
//! its own headers and checksums); the only code shared with the data plane is
//! `lb_common::service::flow_hash_seeded` (under the config's `hash_seed`), which is the hash *contract* between control and
//! data plane (the same function `forwarding.rs`'s `expected_backend` uses), and the
//! plain data types of `lb_common`.
//!
//! # Decision rules, in order (each one deliberate program behaviour)
//!
//! Counters: `rx` and exactly one verdict counter for every packet, plus the reasons
//! listed below. `len` is the whole frame length.
//!
//! 0. **Tags.** Ethertype 0x8100 / 0x88a8 (802.1Q / 802.1ad): up to two tags are taken
//!    off (a frame that ends inside a tag or before the ethertype after it: drop
//!    `truncated`; a third tag: pass `vlan`), the rest of the rules apply to the untagged
//!    frame with the innermost tag's VLAN id in the flow key (`FlowKey::vlan`), and the
//!    tags are put back after the MACs of whatever frame comes out. So a tagged frame
//!    is decided exactly as untagged, except: VRRP → pass `vlan` (rule 3), and a
//!    VLAN-scoped service (rule 8).
//! 1. **Ethernet.** Frames shorter than 14 bytes: drop `truncated` (BPF_PROG_TEST_RUN
//!    refuses such frames, so the fuzzer never sends them). Ethertype 0x0800 → IPv4,
//!    0x86dd → IPv6, anything else (ARP, LLDP, ...) → pass `not_vip`.
//! 2. **IPv4 header.** Fewer than 20 bytes after Ethernet: drop `truncated`. Version ≠ 4,
//!    IHL < 5 or total length < IHL×4: drop `malformed` — *whatever the destination*
//!    (the kernel would drop it too). 14 + total length > frame: drop `truncated`.
//!    Bytes after the datagram (Ethernet padding) are allowed and kept, but they are
//!    not payload: every L4 byte read below (ICMP header, quoted header and ports,
//!    ports, TCP flags) must end within the datagram (`14 + total length`, IPv6 `54 +
//!    payload length`); "in the datagram" below means that (which implies in the frame).
//! 3. **VRRP** (protocol / next header 112) after the length checks: tagged → pass
//!    `vlan`; with no VRRP router configured on the ingress interface (the fuzzer
//!    configures none) → pass `not_vip`.
//! 4. **ICMP (IPv4)**, option-less and unfragmented only: the 4-byte ICMP header must be
//!    in the datagram (else drop `truncated`). Echo request (8/0) → pass `not_vip` unless
//!    the destination is exactly a VIP address (any service, any port); pass `standby`
//!    if every service on that address is STANDBY; pass `l2_group` if the frame was
//!    sent to a group MAC (I/G bit of the destination MAC); else answered.
//!    Destination unreachable / fragmentation needed (3/4) → the quoted header (must be
//!    in the datagram, else `truncated`) must be exactly 0x45 and TCP/UDP (else pass
//!    `not_vip`), its ports in the datagram (else `truncated`); the flow looked up is the
//!    quoted one turned around (client → VIP), with the *outer* TTL, never a new flow.
//!    Every other ICMP (and ICMP with options / fragments) → pass `not_vip`.
//! 5. Other non-TCP/UDP protocols → pass `not_vip`.
//! 6. **TCP/UDP over IPv4.** IHL ≠ 5 marks the packet unforwardable (`ipv4_options`); a
//!    fragment (MF set or offset ≠ 0) marks it `fragment` (this wins over options). A
//!    later fragment (offset ≠ 0) has no ports: it is looked up with ports 0, so it only
//!    matches an all-ports service. Otherwise the 4 port bytes must be in the datagram
//!    (else drop `truncated`, whatever the destination). A TCP packet is a new flow iff
//!    its flags byte (offset 13) is in the datagram and has SYN without ACK.
//! 7. **IPv6.** Fewer than 40 bytes: drop `truncated`; version ≠ 6: drop `malformed`;
//!    54 + payload length > frame: drop `truncated`. Next header TCP/UDP → ports (in the
//!    datagram, else `truncated`) and SYN as for IPv4; 112 → VRRP (rule 3); 58 → ICMPv6
//!    header in the datagram (else `truncated`): echo request (128/0) as rule 4, packet
//!    too big (type 2, any code) → quoted IPv6 header + ports in the datagram (else
//!    `truncated`), quoted next header TCP/UDP (else pass `not_vip`; the quoted version
//!    nibble is not checked), flow turned around; other ICMPv6 → pass `not_vip`.
//!    Hop-by-hop (0) and destination options (60) are walked first, at most three, each
//!    2 bytes in the datagram (else `truncated`) then (len + 1) × 8 bytes, and the rules
//!    apply to the header after them (VRRP and ICMPv6 behind them → pass `not_vip`).
//!    Other extension headers (43, 44, 51, 135, 139, 140, or 0/60 beyond the third) →
//!    pass `ipv6_ext_header`, whatever the destination; anything else → pass `not_vip`.
//! 8. **Service lookup**: a packet that is neither a new flow nor unforwardable and
//!    has a connection-table entry whose service is still the one it was pinned under
//!    (same id and the slot generation the tables hold for it) takes the service as its
//!    slot describes it (flags, mode, egress, table slot: not the entry), i.e.
//!    that service, even where another service would now match (an established flow
//!    stays with its service). Otherwise exact (VIP, port, proto, family), then (VIP, 0,
//!    proto, family). None → pass `not_vip`. A service found by the lookup (not through
//!    an entry) with a VLAN scope other than the flow's VLAN → pass `vlan_mismatch`.
//!    (The VIP filter is only a fast path: it never changes the answer, so the model
//!    has none.)
//! 9. Service flag STANDBY → pass `standby` (before anything else, even for fragments).
//!    Then a frame sent to a group MAC (broadcast / multicast) → pass `l2_group`:
//!    forwarding would make that group address the source MAC.
//! 10. Unforwardable (options / fragment) → drop `ipv4_options` / `fragment`.
//! 11. TTL / hop limit ≤ 1 → drop `ttl_expired`.
//! 12. An ICMP too-big flow counts `icmp_too_big` (and is then forwarded like the flow).
//! 13. **Backend.** Unless the packet is a new flow (TCP SYN without ACK), a
//!     connection-table entry for the flow that names this service and a live backend
//!     (family ≠ 0) is used: `conn_hit`. Otherwise, for a packet that is neither a new
//!     flow nor an ICMP too-big, such an entry in the unconfirmed table is used and
//!     moved into the connection table: `conn_hit` + `conn_confirmed`. Otherwise
//!     `conn_miss`, and the Maglev choice
//!     `table[flow_hash_seeded(flow, source_affinity, hash_seed) % M]`: no table, id 0 or a dead backend →
//!     `no_backend` (drop, or pass `fallback_pass` with FALLBACK_PASS). The flow's
//!     `flow_hash` is the entry's (a hit, confirmed or not) or
//!     `flow_hash_seeded(flow, false, hash_seed)` (a miss; stored in the new entry). A successful
//!     Maglev choice is written to the unconfirmed table (never for an ICMP too-big;
//!     a new flow also deletes the flow's connection-table entry, even when it then
//!     finds no backend)
//!     **before** the steps below, so it stays even when the packet is then dropped
//!     (no_tx_port, encap errors); the per-service / per-backend counters, by contrast,
//!     only count packets actually sent (not modelled; tests/tests/fuzz_datapath.rs
//!     checks them).
//! 14. **Egress.** `tx_port` ≠ 0 without a configured MAC → drop `no_tx_port` (the model
//!     does not cover a *configured* two-arm port: that needs a devmap target).
//! 15. **Mode.** DSR: destination MAC = backend MAC, source MAC = the input's
//!     destination MAC, XDP_TX. IPIP / GUE: GUE needs a GUE port (else drop
//!     `encap_error`), both need the family's encap source (else `encap_error`); the
//!     IP packet plus the outer header (20 / 40, GUE +8) always fits the loopback's
//!     MTU the model runs on ([`LOOPBACK_MTU`]; answers to bigger ones are not
//!     modelled, see "Not modelled"). The output is Ethernet (backend MAC ← our MAC, outer ethertype),
//!     the outer IPv4 header (source `encap_src_v4 | (flow_hash & encap_host_v4)`, the
//!     IPv6 one's last word likewise with `encap_host_v6`; TOS copied, id 0, no flags, TTL 64, proto 4 / 17, fresh
//!     checksum, total length = inner *total length* + outer) or IPv6 header (version
//!     and traffic class copied, flow label 0, hop limit 64, next header 41 / 17,
//!     payload length = inner IPv6 length + UDP), for GUE a UDP header (source port
//!     `0xc000 | (flow_hash & 0x3fff)`, destination the GUE port, length
//!     inner + 8, checksum 0), then the input frame from the IP header on, padding
//!     included. Any other mode value → drop `encap_error`.
//!
//! Echo replies (rule 4): MACs swapped; IPv4: addresses swapped, TTL 64, header checksum
//! recomputed from scratch; IPv6: addresses swapped, hop limit 64; type 0 / 129 and the
//! ICMP checksum updated incrementally (RFC 1624 eqn. 3), so a wrong input checksum stays
//! wrong by the same amount. Counted `icmp_echo` + `tx`.
//!
//! # Not modelled
//!
//! ICMP "fragmentation needed" / "packet too big" answers (frames over an interface
//! MTU: tests/tests/pmtud.rs), configured two-arm ports (XDP_REDIRECT), VRRP routers on the ingress interface,
//! per-service / per-backend counters, counter byte counts (only packets), LRU
//! eviction (the fuzzer keeps the table far below its capacity), the decap program,
//! backends of the other family than their service, and frames under 14 bytes.

use lb_common::{
    limits::MAX_TX_PORTS,
    service::{flow_hash_seeded, service_flags, AF_INET, AF_INET6},
    wire::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, ICMPV6_ECHO_REPLY,
        ICMPV6_ECHO_REQUEST, ICMPV6_PACKET_TOO_BIG, ICMP_DEST_UNREACH, ICMP_ECHO_REPLY,
        ICMP_ECHO_REQUEST, ICMP_FRAG_NEEDED, IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_FRAGMENT,
        IPPROTO_HIP, IPPROTO_HOPOPTS, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_IPIP, IPPROTO_IPV6,
        IPPROTO_MH, IPPROTO_ROUTING, IPPROTO_SHIM6, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_VRRP,
        IPV4_VER_IHL, IP_MF, IP_OFFSET, TCP_ACK, TCP_FLAGS_OFFSET, TCP_SYN, VLAN_VID_MASK,
        XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,
    },
    Backend, Conn, FlowKey, Stat, VipKey,
};
use lb_userspace::dataplane::memory::{replay, MemoryPort};

/// What the program must do with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    pub action: u32,
    /// The frame as the program leaves it (the input itself for pass / drop).
    pub packet: Vec<u8>,
    /// Counters that move by exactly one packet; all others stay.
    pub counted: Vec<Stat>,
}

/// Everything the model predicts for one frame.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub expected: Expected,
    /// The table write the program makes (rule 13).
    pub insert: Option<Insert>,
}

/// The configured data plane, as the control plane writes it: the in-memory data-plane
/// port (`lb_userspace::dataplane::memory`), which applies the kernel port's write rules
/// (slot generations, VIP set) and logs every operation, so [`install`] can replay the
/// same sequence into a loaded kernel data plane.
pub type Tables = MemoryPort;

/// Replays everything written to `tables` into a loaded data plane, in the same order.
pub fn install(tables: &Tables, dp: &mut crate::dataplane::TestDataplane) {
    assert!(
        tables.tx_ports.is_empty(),
        "configured two-arm ports need a devmap target: not modelled"
    );
    replay(&tables.log, &mut dp.dp).expect("replaying the tables into the kernel");
}

/// An entry the program writes (rule 13).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// A Maglev choice, into the unconfirmed table.
    Unconfirmed(FlowKey, Conn),
    /// A new flow's (SYN's) Maglev choice, into the unconfirmed table; the flow's
    /// connection-table entry, if any, is deleted.
    Opened(FlowKey, Conn),
    /// An unconfirmed entry confirmed by the flow's next packet, into the connection
    /// table.
    Confirmed(FlowKey, Conn),
    /// A new flow (SYN) that found no backend: only the flow's connection-table entry
    /// is deleted.
    Forgotten(FlowKey),
}

impl Insert {
    /// The entry written, whichever table (`None`: an entry deleted).
    pub fn conn(&self) -> Option<Conn> {
        match self {
            Insert::Unconfirmed(_, c) | Insert::Opened(_, c) | Insert::Confirmed(_, c) => Some(*c),
            Insert::Forgotten(_) => None,
        }
    }
}

/// The reference model: the tables, with the connection table the model writes
/// (`tables.conns`, which the control plane's `forget_backend_flows` also prunes).
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub tables: Tables,
}

/// Intermediate result of parsing.
enum Parse {
    Pass(Stat),
    Drop(Stat),
    /// Rule 3: the verdict depends on whether the frame was tagged.
    Vrrp,
    Echo {
        dst: [u32; 4],
        family: u8,
    },
    Flow(Flow),
}

struct Flow {
    key: FlowKey,
    ttl: u8,
    unforwardable: Option<Stat>,
    too_big: bool,
    syn: bool,
}

/// The service key a flow's destination looks up.
fn flow_vip_key(flow: &FlowKey) -> VipKey {
    VipKey {
        addr: flow.dst,
        port_be: flow.dport_be,
        proto: flow.proto,
        family: flow.family,
    }
}

fn words(b: &[u8]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, chunk) in b.chunks(4).take(4).enumerate() {
        w[i] = u32::from_ne_bytes(chunk.try_into().expect("4 bytes"));
    }
    w
}

fn be16(f: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([f[off], f[off + 1]])
}

fn ne16(f: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([f[off], f[off + 1]])
}

/// One's-complement sum of big-endian 16-bit words, folded.
fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in bytes.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn ones_add(a: u16, b: u16) -> u16 {
    let s = u32::from(a) + u32::from(b);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m').
fn csum_replace(hc: u16, m: u16, m_new: u16) -> u16 {
    !ones_add(ones_add(!hc, !m), m_new)
}

impl Model {
    pub fn new(tables: Tables) -> Self {
        Self { tables }
    }

    /// Predicts the program's handling of `frame` and applies its connection-table write.
    pub fn step(&mut self, frame: &[u8]) -> Outcome {
        let out = self.predict(frame);
        match out.insert {
            Some(Insert::Unconfirmed(k, c)) => {
                self.tables.unconfirmed.insert(k, c);
            }
            Some(Insert::Opened(k, c)) => {
                self.tables.conns.remove(&k);
                self.tables.unconfirmed.insert(k, c);
            }
            Some(Insert::Forgotten(k)) => {
                self.tables.conns.remove(&k);
            }
            Some(Insert::Confirmed(k, c)) => {
                self.tables.unconfirmed.remove(&k);
                self.tables.conns.insert(k, c);
            }
            None => {}
        }
        out
    }

    /// Predicts without changing the model.
    pub fn predict(&self, frame: &[u8]) -> Outcome {
        let (tags, vlan) = match untag(frame) {
            Ok(found) => found,
            Err((action, reason)) => return self.outcome(frame, action, None, vec![reason], None),
        };
        if tags.is_empty() {
            let mut insert = None;
            let (action, packet, reasons) = self.decide(frame, parse(frame), None, &mut insert);
            return self.outcome(frame, action, packet, reasons, insert);
        }
        // Rule 0: decided as the untagged frame, the tags put back on what comes out.
        let mut inner = frame[..12].to_vec();
        inner.extend_from_slice(&frame[12 + tags.len()..]);
        let mut insert = None;
        let (action, packet, reasons) = self.decide(&inner, parse(&inner), Some(vlan), &mut insert);
        let packet = packet.map(|p| {
            let mut out = p[..12].to_vec();
            out.extend_from_slice(tags);
            out.extend_from_slice(&p[12..]);
            out
        });
        self.outcome(frame, action, packet, reasons, insert)
    }

    fn outcome(
        &self,
        frame: &[u8],
        action: u32,
        packet: Option<Vec<u8>>,
        reasons: Vec<Stat>,
        insert: Option<Insert>,
    ) -> Outcome {
        let verdict = match action {
            XDP_PASS => Stat::Pass,
            XDP_DROP => Stat::Drop,
            XDP_TX => Stat::Tx,
            XDP_REDIRECT => Stat::Redirect,
            _ => Stat::Aborted,
        };
        let mut counted = vec![Stat::Rx, verdict];
        counted.extend(reasons);
        counted.sort_by_key(|s| *s as u32);
        Outcome {
            expected: Expected {
                action,
                packet: packet.unwrap_or_else(|| frame.to_vec()),
                counted,
            },
            insert,
        }
    }

    /// Rules 1–15 for an untagged `frame`; `vlan`: the innermost VLAN id it was tagged
    /// with (rule 0), `None` untagged.
    fn decide(
        &self,
        frame: &[u8],
        parsed: Parse,
        vlan: Option<u16>,
        insert: &mut Option<Insert>,
    ) -> (u32, Option<Vec<u8>>, Vec<Stat>) {
        let t = &self.tables;
        let mut flow = match parsed {
            Parse::Pass(r) => return (XDP_PASS, None, vec![r]),
            Parse::Drop(r) => return (XDP_DROP, None, vec![r]),
            Parse::Vrrp if vlan.is_some() => return (XDP_PASS, None, vec![Stat::Vlan]),
            Parse::Vrrp => return (XDP_PASS, None, vec![Stat::NotVip]),
            Parse::Echo { dst, family } => {
                if !t.is_vip(&dst, family) {
                    return (XDP_PASS, None, vec![Stat::NotVip]);
                }
                if t.all_standby(&dst, family) {
                    return (XDP_PASS, None, vec![Stat::Standby]);
                }
                if group_dst(frame) {
                    return (XDP_PASS, None, vec![Stat::L2Group]);
                }
                return (
                    XDP_TX,
                    Some(echo_reply(frame, family)),
                    vec![Stat::IcmpEcho],
                );
            }
            Parse::Flow(f) => f,
        };
        flow.key.vlan = vlan.unwrap_or(0);
        // Rules 8 and 13: the entry is looked up once, before anything else.
        let known = if flow.syn || flow.unforwardable.is_some() {
            None
        } else {
            t.conns.get(&flow.key).copied()
        };
        let current = |c: &Conn| t.generation(c.service_id) == Some(c.service_gen);
        let svc = match known
            .filter(current)
            .and_then(|c| t.slot_service(c.service_id))
        {
            Some(svc) => svc,
            None => match t.lookup(&flow_vip_key(&flow.key)) {
                Some(svc) if svc.vlan != 0 && svc.vlan != u32::from(flow.key.vlan) => {
                    return (XDP_PASS, None, vec![Stat::VlanMismatch]);
                }
                Some(svc) => svc,
                None => return (XDP_PASS, None, vec![Stat::NotVip]),
            },
        };
        if svc.flags & service_flags::STANDBY != 0 {
            return (XDP_PASS, None, vec![Stat::Standby]);
        }
        if group_dst(frame) {
            return (XDP_PASS, None, vec![Stat::L2Group]);
        }
        if let Some(r) = flow.unforwardable {
            return (XDP_DROP, None, vec![r]);
        }
        if flow.ttl <= 1 {
            return (XDP_DROP, None, vec![Stat::TtlExpired]);
        }
        let mut reasons = Vec::new();
        if flow.too_big {
            reasons.push(Stat::IcmpTooBig);
        }
        // Rule 13.
        let usable = |c: &Conn| {
            (c.service_id == svc.id && current(c))
                .then(|| t.live_backend(c.backend_id).map(|b| (b, c.flow_hash)))
                .flatten()
        };
        let unconfirmed = (!flow.syn && !flow.too_big)
            .then(|| t.unconfirmed.get(&flow.key).copied())
            .flatten()
            .and_then(|c| usable(&c).map(|b| (c, b)));
        let (backend, flow_hash) = if let Some(hit) = known.as_ref().and_then(usable) {
            reasons.push(Stat::ConnHit);
            hit
        } else if let Some((c, hit)) = unconfirmed {
            reasons.push(Stat::ConnHit);
            reasons.push(Stat::ConnConfirmed);
            *insert = Some(Insert::Confirmed(flow.key, c));
            hit
        } else {
            reasons.push(Stat::ConnMiss);
            let flow_hash = flow_hash_seeded(&flow.key, false, t.config.hash_seed);
            let choice = t.maglev.get(&svc.table_slot()).and_then(|table| {
                let affinity = svc.flags & service_flags::SOURCE_AFFINITY != 0;
                let h = flow_hash_seeded(&flow.key, affinity, t.config.hash_seed);
                let id = table[(h % table.len() as u32) as usize];
                (id != 0).then_some(id)
            });
            match choice.and_then(|id| t.live_backend(id).map(|b| (id, b))) {
                Some((id, b)) => {
                    let conn = Conn {
                        backend_id: id,
                        service_id: svc.id,
                        service_gen: t.generation(svc.id).unwrap_or(0),
                        flow_hash,
                        // The kernel stamps its clock here; the model's tables set no
                        // timeouts, so entries never expire and the stamp is unused.
                        ..Conn::default()
                    };
                    *insert = if flow.syn {
                        Some(Insert::Opened(flow.key, conn))
                    } else if flow.too_big {
                        None
                    } else {
                        Some(Insert::Unconfirmed(flow.key, conn))
                    };
                    (b, flow_hash)
                }
                None => {
                    // The SYN's delete comes before the choice, so it happens anyway.
                    if flow.syn {
                        *insert = Some(Insert::Forgotten(flow.key));
                    }
                    let (action, reason) = if svc.flags & service_flags::FALLBACK_PASS != 0 {
                        (XDP_PASS, Stat::FallbackPass)
                    } else {
                        (XDP_DROP, Stat::NoBackend)
                    };
                    reasons.push(reason);
                    return (action, None, reasons);
                }
            }
        };
        // Rule 14.
        let egress = if svc.tx_port == 0 {
            None
        } else {
            match t.tx_ports.get(&u32::from(svc.tx_port)).map(|(_, mac)| mac) {
                Some(mac) if *mac != [0; 6] && u32::from(svc.tx_port) < MAX_TX_PORTS => Some(*mac),
                _ => {
                    reasons.push(Stat::NoTxPort);
                    return (XDP_DROP, None, reasons);
                }
            }
        };
        // Rule 15.
        let out = match svc.mode {
            1 => {
                let mut out = frame.to_vec();
                out[6..12].copy_from_slice(&frame[0..6]);
                out[0..6].copy_from_slice(&backend.mac);
                Ok(out)
            }
            2 | 3 => encap(t, frame, &flow.key, flow_hash, &backend, svc.mode == 3),
            _ => Err(Stat::EncapError),
        };
        match out {
            Ok(mut out) => match egress {
                None => (XDP_TX, Some(out), reasons),
                Some(mac) => {
                    out[6..12].copy_from_slice(&mac);
                    (XDP_REDIRECT, Some(out), reasons)
                }
            },
            Err(r) => {
                reasons.push(r);
                (XDP_DROP, None, reasons)
            }
        }
    }
}

/// Whether the frame was sent to a group (broadcast / multicast) MAC: the I/G bit.
fn group_dst(f: &[u8]) -> bool {
    f[0] & 1 != 0
}

/// Rule 0: the frame's tag bytes (after the MACs, up to the ethertype that follows
/// them; empty untagged) and the innermost VLAN id, or the verdict for a frame whose
/// tags are not parsed.
fn untag(f: &[u8]) -> Result<(&[u8], u16), (u32, Stat)> {
    let is_tag = |off: usize| matches!(be16(f, off), ETH_P_8021Q | ETH_P_8021AD);
    if f.len() < ETH_HLEN || !is_tag(12) {
        return Ok((&[], 0));
    }
    let mut tags = 1;
    loop {
        // This tag's TCI and the ethertype after it.
        let next = 12 + 4 * tags;
        if f.len() < next + 2 {
            return Err((XDP_DROP, Stat::Truncated));
        }
        if !is_tag(next) {
            break;
        }
        if tags == 2 {
            return Err((XDP_PASS, Stat::Vlan));
        }
        tags += 1;
    }
    let tci = be16(f, 12 + 4 * tags - 2);
    Ok((&f[12..12 + 4 * tags], tci & VLAN_VID_MASK))
}

/// Rules 1–7.
fn parse(f: &[u8]) -> Parse {
    if f.len() < ETH_HLEN {
        return Parse::Drop(Stat::Truncated);
    }
    match be16(f, 12) {
        ETH_P_IPV4 => parse4(f),
        ETH_P_IPV6 => parse6(f),
        _ => Parse::Pass(Stat::NotVip),
    }
}

/// Whether `need` bytes at `off` are inside the IP datagram that ends `ip_end` bytes
/// into the frame (checked by the caller to be within the frame).
fn has(off: usize, need: usize, ip_end: usize) -> bool {
    off + need <= ip_end
}

fn parse4(f: &[u8]) -> Parse {
    if f.len() < ETH_HLEN + 20 {
        return Parse::Drop(Stat::Truncated);
    }
    let ver_ihl = f[ETH_HLEN];
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    let tot = usize::from(be16(f, ETH_HLEN + 2));
    if ver_ihl >> 4 != 4 || ihl < 20 || tot < ihl {
        return Parse::Drop(Stat::Malformed);
    }
    if ETH_HLEN + tot > f.len() {
        return Parse::Drop(Stat::Truncated);
    }
    let end = ETH_HLEN + tot;
    let proto = f[ETH_HLEN + 9];
    let ttl = f[ETH_HLEN + 8];
    if proto == IPPROTO_VRRP {
        return Parse::Vrrp;
    }
    let frag = be16(f, ETH_HLEN + 6);
    let (mf, offset) = (frag & IP_MF != 0, frag & IP_OFFSET);
    let src = words(&f[ETH_HLEN + 12..ETH_HLEN + 16]);
    let dst = words(&f[ETH_HLEN + 16..ETH_HLEN + 20]);
    if proto == IPPROTO_ICMP && ihl == 20 && !mf && offset == 0 {
        let icmp = ETH_HLEN + 20;
        if !has(icmp, 4, end) {
            return Parse::Drop(Stat::Truncated);
        }
        match (f[icmp], f[icmp + 1]) {
            (ICMP_ECHO_REQUEST, 0) => {
                return Parse::Echo {
                    dst,
                    family: AF_INET,
                }
            }
            (ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED) => {
                let q = icmp + 8;
                if !has(q, 20, end) {
                    return Parse::Drop(Stat::Truncated);
                }
                let qproto = f[q + 9];
                if f[q] != IPV4_VER_IHL || (qproto != IPPROTO_TCP && qproto != IPPROTO_UDP) {
                    return Parse::Pass(Stat::NotVip);
                }
                if !has(q + 20, 4, end) {
                    return Parse::Drop(Stat::Truncated);
                }
                return Parse::Flow(Flow {
                    key: FlowKey {
                        src: words(&f[q + 16..q + 20]),
                        dst: words(&f[q + 12..q + 16]),
                        sport_be: ne16(f, q + 22),
                        dport_be: ne16(f, q + 20),
                        proto: qproto,
                        family: AF_INET,
                        vlan: 0,
                    },
                    ttl,
                    unforwardable: None,
                    too_big: true,
                    syn: false,
                });
            }
            _ => {}
        }
    }
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Parse::Pass(Stat::NotVip);
    }
    let mut unforwardable = (ihl != 20).then_some(Stat::Ipv4Options);
    let l4 = ETH_HLEN + ihl;
    let (sport_be, dport_be, syn) = if offset != 0 {
        unforwardable = Some(Stat::Fragment);
        (0, 0, false)
    } else {
        if mf {
            unforwardable = Some(Stat::Fragment);
        }
        if !has(l4, 4, end) {
            return Parse::Drop(Stat::Truncated);
        }
        (
            ne16(f, l4),
            ne16(f, l4 + 2),
            proto == IPPROTO_TCP && syn_at(f, l4, end),
        )
    };
    Parse::Flow(Flow {
        key: FlowKey {
            src,
            dst,
            sport_be,
            dport_be,
            proto,
            family: AF_INET,
            vlan: 0,
        },
        ttl,
        unforwardable,
        too_big: false,
        syn,
    })
}

fn syn_at(f: &[u8], l4: usize, end: usize) -> bool {
    has(l4 + TCP_FLAGS_OFFSET, 1, end) && f[l4 + TCP_FLAGS_OFFSET] & (TCP_SYN | TCP_ACK) == TCP_SYN
}

fn parse6(f: &[u8]) -> Parse {
    if f.len() < ETH_HLEN + 40 {
        return Parse::Drop(Stat::Truncated);
    }
    if f[ETH_HLEN] >> 4 != 6 {
        return Parse::Drop(Stat::Malformed);
    }
    let end = ETH_HLEN + 40 + usize::from(be16(f, ETH_HLEN + 4));
    if end > f.len() {
        return Parse::Drop(Stat::Truncated);
    }
    let mut next = f[ETH_HLEN + 6];
    let hop = f[ETH_HLEN + 7];
    let mut l4 = ETH_HLEN + 40;
    let mut walked = false;
    for _ in 0..3 {
        if next != IPPROTO_HOPOPTS && next != IPPROTO_DSTOPTS {
            break;
        }
        if !has(l4, 2, end) {
            return Parse::Drop(Stat::Truncated);
        }
        next = f[l4];
        l4 += (usize::from(f[l4 + 1]) + 1) * 8;
        walked = true;
    }
    match next {
        IPPROTO_TCP | IPPROTO_UDP => {}
        IPPROTO_VRRP if !walked => return Parse::Vrrp,
        IPPROTO_ICMPV6 if !walked => {
            if !has(l4, 4, end) {
                return Parse::Drop(Stat::Truncated);
            }
            if f[l4] == ICMPV6_ECHO_REQUEST && f[l4 + 1] == 0 {
                return Parse::Echo {
                    dst: words(&f[ETH_HLEN + 24..ETH_HLEN + 40]),
                    family: AF_INET6,
                };
            }
            if f[l4] == ICMPV6_PACKET_TOO_BIG {
                let q = l4 + 8;
                if !has(q, 40, end) {
                    return Parse::Drop(Stat::Truncated);
                }
                let qnext = f[q + 6];
                if qnext != IPPROTO_TCP && qnext != IPPROTO_UDP {
                    return Parse::Pass(Stat::NotVip);
                }
                if !has(q + 40, 4, end) {
                    return Parse::Drop(Stat::Truncated);
                }
                return Parse::Flow(Flow {
                    key: FlowKey {
                        src: words(&f[q + 24..q + 40]),
                        dst: words(&f[q + 8..q + 24]),
                        sport_be: ne16(f, q + 42),
                        dport_be: ne16(f, q + 40),
                        proto: qnext,
                        family: AF_INET6,
                        vlan: 0,
                    },
                    ttl: hop,
                    unforwardable: None,
                    too_big: true,
                    syn: false,
                });
            }
            return Parse::Pass(Stat::NotVip);
        }
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT | IPPROTO_DSTOPTS | IPPROTO_AH
        | IPPROTO_MH | IPPROTO_HIP | IPPROTO_SHIM6 => return Parse::Pass(Stat::Ipv6ExtHeader),
        _ => return Parse::Pass(Stat::NotVip),
    }
    if !has(l4, 4, end) {
        return Parse::Drop(Stat::Truncated);
    }
    Parse::Flow(Flow {
        key: FlowKey {
            src: words(&f[ETH_HLEN + 8..ETH_HLEN + 24]),
            dst: words(&f[ETH_HLEN + 24..ETH_HLEN + 40]),
            sport_be: ne16(f, l4),
            dport_be: ne16(f, l4 + 2),
            proto: next,
            family: AF_INET6,
            vlan: 0,
        },
        ttl: hop,
        unforwardable: None,
        too_big: false,
        syn: next == IPPROTO_TCP && syn_at(f, l4, end),
    })
}

/// The echo reply built in place from the request (see the module docs).
fn echo_reply(f: &[u8], family: u8) -> Vec<u8> {
    let mut out = f.to_vec();
    out[0..6].copy_from_slice(&f[6..12]);
    out[6..12].copy_from_slice(&f[0..6]);
    let icmp = if family == AF_INET {
        out[ETH_HLEN + 12..ETH_HLEN + 16].copy_from_slice(&f[ETH_HLEN + 16..ETH_HLEN + 20]);
        out[ETH_HLEN + 16..ETH_HLEN + 20].copy_from_slice(&f[ETH_HLEN + 12..ETH_HLEN + 16]);
        out[ETH_HLEN + 8] = 64;
        out[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
        let c = !ones_sum(&out[ETH_HLEN..ETH_HLEN + 20]);
        out[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
        ETH_HLEN + 20
    } else {
        out[ETH_HLEN + 8..ETH_HLEN + 24].copy_from_slice(&f[ETH_HLEN + 24..ETH_HLEN + 40]);
        out[ETH_HLEN + 24..ETH_HLEN + 40].copy_from_slice(&f[ETH_HLEN + 8..ETH_HLEN + 24]);
        out[ETH_HLEN + 7] = 64;
        ETH_HLEN + 40
    };
    let old = be16(&out, icmp);
    out[icmp] = if family == AF_INET {
        ICMP_ECHO_REPLY
    } else {
        ICMPV6_ECHO_REPLY
    };
    let new = be16(&out, icmp);
    let c = csum_replace(be16(&out, icmp + 2), old, new);
    out[icmp + 2..icmp + 4].copy_from_slice(&c.to_be_bytes());
    out
}

/// MTU of the loopback device the model's frames run on (rule 15).
pub const LOOPBACK_MTU: usize = 65536;

/// IPIP / GUE output (rule 15), or the drop reason.
fn encap(
    t: &Tables,
    f: &[u8],
    flow: &FlowKey,
    flow_hash: u32,
    b: &Backend,
    gue: bool,
) -> Result<Vec<u8>, Stat> {
    let extra = if gue { 8 } else { 0 };
    let gue_port = t.config.gue_port_be;
    if gue && gue_port == 0 {
        return Err(Stat::EncapError);
    }
    let v4 = flow.family == AF_INET;
    let (outer_len, inner_len) = if v4 {
        if t.config.encap_src_v4 == 0 {
            return Err(Stat::EncapError);
        }
        (20, be16(f, ETH_HLEN + 2))
    } else {
        if t.config.encap_src_v6 == [0; 4] {
            return Err(Stat::EncapError);
        }
        (40, be16(f, ETH_HLEN + 4) + 40)
    };
    // The egress MTU: BPF_PROG_TEST_RUN without a context runs on the loopback
    // (65536), which no test-run frame reaches; the ICMP answers to frames over an
    // interface's MTU are not modelled (pmtud.rs checks them on exact frames).
    assert!(
        f.len() - ETH_HLEN + outer_len + extra <= LOOPBACK_MTU,
        "frames over the loopback MTU are not modelled"
    );
    let mut out = Vec::with_capacity(f.len() + outer_len + extra);
    out.extend_from_slice(&b.mac);
    out.extend_from_slice(&f[0..6]);
    out.extend_from_slice(&(if v4 { ETH_P_IPV4 } else { ETH_P_IPV6 }).to_be_bytes());
    let proto = if gue {
        IPPROTO_UDP
    } else if v4 {
        IPPROTO_IPIP
    } else {
        IPPROTO_IPV6
    };
    if v4 {
        let mut ip = [0u8; 20];
        ip[0] = IPV4_VER_IHL;
        ip[1] = f[ETH_HLEN + 1];
        ip[2..4].copy_from_slice(&(inner_len + 20 + extra as u16).to_be_bytes());
        ip[8] = 64;
        ip[9] = proto;
        let src = t.config.encap_src_v4 | (flow_hash & t.config.encap_host_v4);
        ip[12..16].copy_from_slice(&src.to_ne_bytes());
        ip[16..20].copy_from_slice(&b.addr[0].to_ne_bytes());
        let c = !ones_sum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&ip);
    } else {
        out.extend_from_slice(&[f[ETH_HLEN], f[ETH_HLEN + 1] & 0xf0, 0, 0]);
        out.extend_from_slice(&(inner_len + extra as u16).to_be_bytes());
        out.extend_from_slice(&[proto, 64]);
        let mut src = t.config.encap_src_v6;
        src[3] |= flow_hash & t.config.encap_host_v6;
        for w in src.iter().chain(b.addr.iter()) {
            out.extend_from_slice(&w.to_ne_bytes());
        }
    }
    if gue {
        let sport = 0xc000 | (flow_hash as u16 & 0x3fff);
        out.extend_from_slice(&sport.to_be_bytes());
        out.extend_from_slice(&gue_port.to_ne_bytes());
        out.extend_from_slice(&(inner_len + 8).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    out.extend_from_slice(&f[ETH_HLEN..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_checksum_matches_a_full_recompute() {
        // ICMP echo request header with payload, valid checksum.
        let mut icmp = vec![8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'a', b'b', b'c', b'd'];
        let c = !ones_sum(&icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let new = csum_replace(c, 0x0800, 0x0000);
        icmp[0] = 0;
        icmp[2..4].copy_from_slice(&[0, 0]);
        assert_eq!(new, !ones_sum(&icmp));
    }
}
