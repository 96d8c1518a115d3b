//! Virtual services, backends and flows as stored in the data plane's maps.
//!
//! Addresses are stored as four network-byte-order `u32` words (`[u32; 4]`, "be32"):
//! IPv6 uses all four, IPv4 uses word 0 and leaves the rest zero. Ports are network byte
//! order too (`port_be`), exactly as they sit in the packet, so the data plane compares
//! and hashes them without conversion.

/// Address family tags (`family` fields).
pub const AF_INET: u8 = 4;
pub const AF_INET6: u8 = 6;

/// How a service forwards to its backends (`Service::mode`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardMode {
    /// L2 direct server return: rewrite MACs, XDP_TX. Backends hold the VIP on lo.
    Dsr = 1,
    /// IP-in-IP (IPv4-in-IPv4 / IPv6-in-IPv6) to the backend.
    Ipip = 2,
    /// GUE (UDP) encapsulation.
    Gue = 3,
}

impl ForwardMode {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Dsr),
            2 => Some(Self::Ipip),
            3 => Some(Self::Gue),
            _ => None,
        }
    }
}

/// `Service::flags` bits.
pub mod service_flags {
    /// Hash on the source address only (client affinity) instead of the 5-tuple.
    pub const SOURCE_AFFINITY: u32 = 1 << 0;
    /// With no usable backend, hand new flows to the local stack (XDP_PASS) instead of
    /// dropping them: keepalived-style fallback to a service running on the balancer.
    pub const FALLBACK_PASS: u32 = 1 << 1;
    /// The VIP is held by a VRRP peer (this host is backup): do not balance, pass.
    pub const STANDBY: u32 = 1 << 2;
}

/// Key of `XLB_SERVICES`: (VIP, port, protocol). `port_be == 0` is the VIP's
/// "all ports" service, consulted when no exact port matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// VIP, be32 words (IPv4 in word 0).
    pub addr: [u32; 4],
    /// Destination port, network byte order; 0 = all ports.
    pub port_be: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub proto: u8,
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
}

/// Key of `XLB_VIPS`: a VIP address without port or protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipAddr {
    /// VIP, be32 words (IPv4 in word 0).
    pub addr: [u32; 4],
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Bit of an `XLB_VIPS` value (the low bits count the services on the address): every
/// service on the address is [`service_flags::STANDBY`] (a VRRP peer holds the VIP), so
/// the data plane does not answer for the address (ICMP echo passes, counted `standby`).
/// Standby is per VIP, so in practice all services of an address share the flag.
pub const VIP_STANDBY: u32 = 1 << 31;

/// Value of `XLB_SERVICES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index of this service's lookup table in `XLB_MAGLEV` and its stats slot; 1-based
    /// (0 = unset).
    pub id: u32,
    /// [`service_flags`] bits.
    pub flags: u32,
    /// [`ForwardMode`] as u8.
    pub mode: u8,
    /// Egress: 0 = back out of the receiving interface (XDP_TX, one-arm); n = the
    /// interface in `XLB_TX_PORTS[n]` (XDP_REDIRECT, two-arm).
    pub tx_port: u8,
    /// The `XLB_MAGLEV` slot of this service's table: `id` or `id + MAX_SERVICES`. The
    /// control plane builds a changed table in the slot not in use and then rewrites
    /// the entry, so the table and the entry's settings (mode, flags) change for new
    /// flows in one atomic map update. 0 means `id` (entries written before slots).
    pub table: u16,
    /// VLAN scope: 0 = any frame (untagged or tagged); 1..=4094 = only frames whose
    /// innermost 802.1Q tag carries this VLAN id (host order). New flows only: an
    /// established flow is held to its VLAN by [`FlowKey::vlan`]. A `u32`, not a
    /// `u16` and padding: the data plane copies the value whole (an unread padding
    /// half would be left undefined in a register, which the verifier refuses to shift).
    pub vlan: u32,
}

impl Service {
    /// The `XLB_MAGLEV` slot to read this service's table from.
    #[inline(always)]
    pub const fn table_slot(&self) -> u32 {
        if self.table == 0 {
            self.id
        } else {
            self.table as u32
        }
    }
}

/// Value of `XLB_TX_MACS[n]`: the source MAC for frames leaving through tx port n.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxPort {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

/// Layout of one Maglev table (an inner map of `XLB_MAGLEV`, `u32` values): slot
/// [`MAGLEV_SIZE_SLOT`] holds the table size M, slots `1..=M` the backend ids. Keeping M
/// inside the table means one inner-map swap replaces size and contents together.
pub const MAGLEV_SIZE_SLOT: u32 = 0;

/// Value of `XLB_BACKENDS` (indexed by backend id; id 0 is never used).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Backend address, be32 words (IPv4 in word 0).
    pub addr: [u32; 4],
    /// [`AF_INET`] or [`AF_INET6`]; 0 marks an unused slot.
    pub family: u8,
    pub _pad: u8,
    /// Next-hop MAC towards the backend (configured, or learned by the control plane
    /// from the kernel's neighbour table).
    pub mac: [u8; 6],
}

impl Backend {
    /// Offset of the 8-byte word `family, _pad, mac`: the program reads it with one
    /// load and the control plane replaces it with one atomic store (through an mmap of
    /// the array), so a next-hop MAC that changes under traffic is never read torn.
    pub const HOP_WORD_OFFSET: usize = 16;

    /// The word at [`Backend::HOP_WORD_OFFSET`], as it lies in memory.
    #[inline(always)]
    pub const fn hop_word(&self) -> u64 {
        let m = self.mac;
        u64::from_ne_bytes([self.family, self._pad, m[0], m[1], m[2], m[3], m[4], m[5]])
    }

    /// `family, _pad, mac` from the word [`Backend::hop_word`] wrote.
    #[inline(always)]
    pub const fn with_hop_word(addr: [u32; 4], word: u64) -> Backend {
        let b = word.to_ne_bytes();
        Backend {
            addr,
            family: b[0],
            _pad: b[1],
            mac: [b[2], b[3], b[4], b[5], b[6], b[7]],
        }
    }
}

const _: () = {
    assert!(core::mem::offset_of!(Backend, family) == Backend::HOP_WORD_OFFSET);
    assert!(core::mem::offset_of!(Backend, mac) == Backend::HOP_WORD_OFFSET + 2);
    assert!(size_of::<Backend>() == Backend::HOP_WORD_OFFSET + 8);
};

/// Key of the connection table `XLB_CONNS`: the client's 5-tuple towards a VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client address, be32 words.
    pub src: [u32; 4],
    /// VIP, be32 words.
    pub dst: [u32; 4],
    /// Client port, network byte order.
    pub sport_be: u16,
    /// VIP port, network byte order.
    pub dport_be: u16,
    pub proto: u8,
    pub family: u8,
    /// VLAN id of the frame's innermost 802.1Q tag (host order), 0 untagged: a flow is
    /// its 5-tuple on one VLAN, so a connection entry never serves the same 5-tuple
    /// arriving on another VLAN (where a VLAN-scoped service may not match). Not hashed
    /// ([`flow_hash_seeded`]): a flow goes to the same backend whatever its VLAN.
    pub vlan: u16,
}

/// Value of `XLB_CONNS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// Backend the flow is pinned to.
    pub backend_id: u32,
    /// Service the flow belongs to (so a removed service's flows can be ignored).
    pub service_id: u32,
    /// [`ServiceSlot::generation`] of that service when the flow was pinned: the entry
    /// names its service only while the slot still holds the same generation.
    pub service_gen: u32,
    /// The flow's 5-tuple hash ([`flow_hash_seeded`], not source-only), computed once
    /// when the entry is made: the entropy of its tunnel headers (the outer source
    /// inside an `encap_sources` prefix, GUE's UDP source port), so established packets
    /// never rehash and every packet of a flow carries the same outer header, even
    /// after a `hash_seed` change.
    pub flow_hash: u32,
    /// When the flow last sent a packet, in [`CONN_TICK_SHIFT`] ticks of the kernel's
    /// monotonic clock; written only when it moves (about once a second per flow), in
    /// place, without a map update.
    pub seen: u32,
    /// [`conn_flags`].
    pub flags: u32,
}

/// Bits of [`Conn::flags`].
pub mod conn_flags {
    /// The client sent a FIN or RST: the entry expires after the closing timeout.
    pub const CLOSING: u32 = 1;
}

impl ConnTimeoutTicks {
    /// The idle time after which an entry of protocol `proto` (closing or not) no
    /// longer pins its flow; 0 = never.
    #[inline(always)]
    pub fn for_entry(&self, proto: u8, flags: u32) -> u32 {
        if proto != crate::wire::IPPROTO_TCP {
            self.udp_idle
        } else if flags & conn_flags::CLOSING != 0 {
            self.tcp_closing
        } else {
            self.tcp_idle
        }
    }
}

/// Whether an entry last seen at `seen` has been idle beyond `timeout` at `now` (all
/// in ticks; the clock wraps after 2^32 ticks, 146 years). `timeout` 0 = never.
#[inline(always)]
pub const fn expired(seen: u32, now: u32, timeout: u32) -> bool {
    timeout != 0 && now.wrapping_sub(seen) > timeout
}

/// Value of `XLB_SVC_SLOTS[service id]`: what an established flow needs of its service,
/// packed into one `u64` so that userspace writes it (through an mmap, with one atomic
/// store) and the data plane reads it (one 8-byte load) whole: a packet never sees the
/// flags of one configuration with the forwarding mode of another.
///
/// The connection table names a service by id; the slot's generation tells whether that
/// id still means the same service (it changes whenever the id is given to another
/// (VIP, port, protocol)). An established flow thus finds its service without the
/// `XLB_SERVICES` hash lookup, the largest single cost of its path.
///
/// Bits: 0–31 generation, 32–39 [`service_flags`] (all fit in a byte), 40–47
/// [`ForwardMode`], 48–55 tx port, 56 live, 57 the table is in the service's second
/// `XLB_MAGLEV` slot (`id + MAX_SERVICES`, see [`Service::table`]).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceSlot(pub u64);

impl ServiceSlot {
    const LIVE: u64 = 1 << 56;
    const SECOND_TABLE: u64 = 1 << 57;

    /// A live slot for `service` (its flags, mode, egress and table slot).
    #[inline(always)]
    pub const fn new(generation: u32, service: &Service) -> Self {
        let second = if service.table_slot() != service.id {
            Self::SECOND_TABLE
        } else {
            0
        };
        Self(
            generation as u64
                | ((service.flags as u8 as u64) << 32)
                | ((service.mode as u64) << 40)
                | ((service.tx_port as u64) << 48)
                | Self::LIVE
                | second,
        )
    }

    /// The `XLB_MAGLEV` slot of service `id`'s table.
    #[inline(always)]
    pub const fn table_slot(self, id: u32) -> u32 {
        if self.0 & Self::SECOND_TABLE != 0 {
            id + crate::limits::MAX_SERVICES
        } else {
            id
        }
    }

    /// The same generation, no longer live (a removed service): the generation is kept
    /// so the id's next service gets a different one.
    #[inline(always)]
    pub const fn retired(self) -> Self {
        Self(self.0 & !Self::LIVE)
    }

    #[inline(always)]
    pub const fn is_live(self) -> bool {
        self.0 & Self::LIVE != 0
    }

    #[inline(always)]
    pub const fn generation(self) -> u32 {
        self.0 as u32
    }

    #[inline(always)]
    pub const fn flags(self) -> u32 {
        (self.0 >> 32) as u8 as u32
    }

    #[inline(always)]
    pub const fn mode(self) -> u8 {
        (self.0 >> 40) as u8
    }

    #[inline(always)]
    pub const fn tx_port(self) -> u8 {
        (self.0 >> 48) as u8
    }
}

/// Value of `XLB_CONFIG[0]`: settings that are not per service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Outer source address for IPv4 encapsulation (be32); 0 = unset, IPIP4 refused.
    pub encap_src_v4: u32,
    /// Outer source address for IPv6 encapsulation (be32 words); zero = unset.
    pub encap_src_v6: [u32; 4],
    /// UDP destination port of GUE encapsulation, network order; 0 = GUE refused.
    pub gue_port_be: u16,
    pub _pad: [u8; 2],
    /// Seed of the flow hash ([`flow_hash_seeded`]); the control plane builds its
    /// Maglev tables with the same seed. 0 = the built-in constants (xlb before the
    /// seed existed). The same on every balancer of a group, so they place flows alike.
    pub hash_seed: u32,
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" answers each CPU may send
    /// per second (docs/mtu.md); 0 = [`DEFAULT_TOOBIG_PER_SEC`], so a config written
    /// before the field existed still answers.
    pub toobig_per_sec: u32,
    /// Host bits of the IPv4 encapsulation source prefix (be32; 0 = a single address):
    /// the outer source is `encap_src_v4 | (Conn::flow_hash & encap_host_v4)`, a
    /// per-flow address so backends spread tunnelled flows over their receive queues.
    pub encap_host_v4: u32,
    /// Host bits of the IPv6 source prefix, in its last word (prefixes are /96 or
    /// longer), be32; 0 = a single address.
    pub encap_host_v6: u32,
    /// Connection-entry idle timeouts (docs/maps.md); 0 = never, which is what a
    /// record written before the field existed (or by a test) means.
    pub timeouts: ConnTimeoutTicks,
}

/// Connection entries are stamped in ticks of 2^`CONN_TICK_SHIFT` ns (≈ 1.07 s) of
/// `bpf_ktime_get_coarse_ns`: a shift instead of a division, and coarse enough that a
/// flow's entry is written at most about once a second.
pub const CONN_TICK_SHIFT: u32 = 30;

/// Idle times after which a connection entry no longer pins its flow, in
/// [`CONN_TICK_SHIFT`] ticks; 0 = never.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnTimeoutTicks {
    /// TCP, until the client's FIN or RST.
    pub tcp_idle: u32,
    /// TCP after the client's FIN or RST.
    pub tcp_closing: u32,
    /// Any other protocol.
    pub udp_idle: u32,
}

/// The outer source for a flow: `base` with the flow hash in the host bits `host`
/// (both be32): one AND and one OR per packet.
#[inline(always)]
pub const fn entropy_source(base: u32, host: u32, flow_hash: u32) -> u32 {
    base | (flow_hash & host)
}

/// GUE's UDP source port for a flow (network order): the flow hash in the dynamic range
/// 49152..=65535, so ECMP and the backend's RSS spread flows.
#[inline(always)]
pub const fn gue_source_port_be(flow_hash: u32) -> u16 {
    (0xc000 | (flow_hash as u16 & 0x3fff)).to_be()
}

/// The network mask of a `len`-bit prefix of `family` as be32 words (IPv4 in word 0,
/// the other words zero); lengths beyond the family's width count as the full width.
#[inline(always)]
pub const fn prefix_mask(len: u32, family: u8) -> [u32; 4] {
    let words = if family == AF_INET { 1 } else { 4 };
    let mut mask = [0u32; 4];
    let mut w = 0;
    while w < words {
        let bits = len.saturating_sub(32 * w as u32);
        let m = if bits >= 32 {
            u32::MAX
        } else if bits == 0 {
            0
        } else {
            !(u32::MAX >> bits)
        };
        mask[w] = m.to_be();
        w += 1;
    }
    mask
}

/// Default of [`Config::toobig_per_sec`]: per CPU and second. PMTUD needs one answer per
/// flow and path change; a bound keeps a flood of big packets from turning the balancer
/// into an ICMP source of the same rate.
pub const DEFAULT_TOOBIG_PER_SEC: u32 = 1000;

/// Key of `XLB_DECAP_ALLOW`: an outer (source, destination) pair `xlb_decap` may
/// unwrap. The source is a balancer's encapsulation address or prefix (`--allow-source`,
/// stored masked: the program masks a packet's source with each of the family's lengths
/// in `XLB_DECAP_LENS` and probes each, longest first), the
/// destination an address of this host; both be32 words (IPv4 in word 0). One lookup of
/// the pair decides a tunnel packet, so the check costs one hash probe whatever the
/// number of balancers and local addresses.
///
/// A key whose `dst` is all zero is a *source marker* (value [`DECAP_SOURCE`]): it
/// never lets a packet through, it only tells a refused packet's reason apart (a known
/// balancer to a foreign destination, or an unknown source) on the refusal path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecapKey {
    /// Outer source address, be32 words.
    pub src: [u32; 4],
    /// Outer destination address, be32 words; zero in a source marker.
    pub dst: [u32; 4],
    /// [`AF_INET`] or [`AF_INET6`].
    pub family: u8,
    pub _pad: [u8; 3],
}

impl DecapKey {
    /// The source marker of `src`.
    #[inline(always)]
    pub const fn source(src: [u32; 4], family: u8) -> Self {
        Self {
            src,
            dst: [0; 4],
            family,
            _pad: [0; 3],
        }
    }
}

/// `XLB_DECAP_LENS` index of the first prefix length of `family` (each family has
/// [`crate::limits::MAX_DECAP_LENS`] slots; a slot holding 0 ends the list).
#[inline(always)]
pub const fn decap_lens_base(family: u8) -> u32 {
    if family == AF_INET {
        0
    } else {
        crate::limits::MAX_DECAP_LENS
    }
}

/// `XLB_DECAP_ALLOW` value: the pair may be unwrapped.
pub const DECAP_PAIR: u32 = 1;
/// `XLB_DECAP_ALLOW` value of a source marker ([`DecapKey::source`]).
pub const DECAP_SOURCE: u32 = 2;

/// `XLB_TAGGED` slot of the balancer's one-tag copy (`xlb_vlan`).
pub const TAGGED_SLOT_VLAN: u32 = 0;
/// `XLB_TAGGED` slot of the balancer's QinQ copy (`xlb_qinq`).
pub const TAGGED_SLOT_QINQ: u32 = 1;

/// Default GUE destination port (the one `xlb decap` listens for unless told otherwise).
pub const DEFAULT_GUE_PORT: u16 = 6080;

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::VipAddr {}
    unsafe impl aya::Pod for super::TxPort {}
    // SAFETY (all): repr(C), fields are integers/byte arrays, explicit padding fields
    // leave no implicit padding, every bit pattern is valid.
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::Service {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Conn {}
    unsafe impl aya::Pod for super::ServiceSlot {}
    unsafe impl aya::Pod for super::DecapKey {}
}

/// Slot of `addr` (be32 words) in the VIP filter. A cheap fold, not a good hash: it
/// only has to keep unrelated addresses from sharing a slot with a VIP most of the time;
/// a collision costs the full service lookup, never a wrong verdict.
#[inline(always)]
pub fn vip_filter_slot(addr: &[u32; 4]) -> u32 {
    let w = addr[0] ^ addr[1] ^ addr[2] ^ addr[3];
    (w ^ (w >> 16)) & (crate::limits::VIP_FILTER_SLOTS - 1)
}

/// [`flow_hash_seeded`] with seed 0 (the built-in constant, the default `hash_seed`).
#[inline(always)]
pub fn flow_hash(key: &FlowKey, source_only: bool) -> u32 {
    flow_hash_seeded(key, source_only, 0)
}

/// Initial state of the flow hash for seed 0 (what every xlb used before `hash_seed`).
pub const FLOW_HASH_BASE: u32 = 0x9747_b28c;

/// Flow hash shared by the data plane (backend choice, GUE source port) and the control
/// plane (tests and tools predicting where a flow goes). Murmur3-style mixing over the
/// key words: cheap in BPF (no loops over bytes, no tables) and well spread over Maglev
/// table sizes. `seed` (`Config::hash_seed`) is XORed into the initial state, murmur3's
/// own seeding: with a seed nobody outside knows, which flows share a backend cannot be
/// computed from xlb's public source.
#[inline(always)]
pub fn flow_hash_seeded(key: &FlowKey, source_only: bool, seed: u32) -> u32 {
    let mut h: u32 = FLOW_HASH_BASE ^ seed;
    h = mix(h, key.src[0]);
    h = mix(h, key.src[1]);
    h = mix(h, key.src[2]);
    h = mix(h, key.src[3]);
    if !source_only {
        h = mix(h, key.dst[0]);
        h = mix(h, key.dst[1]);
        h = mix(h, key.dst[2]);
        h = mix(h, key.dst[3]);
        h = mix(h, (u32::from(key.sport_be) << 16) | u32::from(key.dport_be));
        h = mix(h, u32::from(key.proto));
    }
    fmix(h)
}

#[inline(always)]
fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
