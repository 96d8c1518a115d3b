//! Global counters: one per-CPU array slot per [`Stat`], each a packets/bytes pair.

macro_rules! stats {
    ($($(#[$doc:meta])* $variant:ident = $idx:literal, $name:literal;)*) => {
        /// Index into the per-CPU `XLB_STATS` array. Every exit of the XDP entry points
        /// counts exactly one verdict slot (`Pass`..`Aborted`). `Rx` is not written by
        /// the programs: readers derive it as `pass + drop + tx + redirect + aborted`
        /// (one counter update less per packet). The other slots explain verdicts (drop
        /// reasons, why a packet was passed) and count at most once each.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Stat {
            $($(#[$doc])* $variant = $idx,)*
        }

        impl Stat {
            /// Every slot, in index order.
            pub const ALL: &'static [Stat] = &[$(Stat::$variant,)*];
            /// The verdict slots: every packet counts exactly one of them.
            pub const VERDICTS: &'static [Stat] =
                &[Stat::Pass, Stat::Drop, Stat::Tx, Stat::Redirect, Stat::Aborted];
            /// Number of slots in the stats array.
            pub const COUNT: u32 = Self::ALL.len() as u32;

            /// Stable lower-case name used by the CLI, JSON output and metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Stat::$variant => $name,)*
                }
            }
        }
    };
}

stats! {
    /// Every packet the program saw: derived by readers from the verdicts (the slot
    /// itself stays zero in the map).
    Rx = 0, "rx";
    /// Verdict XDP_PASS: handed to the kernel stack.
    Pass = 1, "pass";
    /// Verdict XDP_DROP.
    Drop = 2, "drop";
    /// Verdict XDP_TX: sent back out of the receiving interface.
    Tx = 3, "tx";
    /// Verdict XDP_REDIRECT.
    Redirect = 4, "redirect";
    /// Verdict XDP_ABORTED: an internal error (should stay at zero).
    Aborted = 5, "aborted";
    /// Drop reason: a header ends beyond the packet.
    Truncated = 6, "truncated";
    /// Passed: not IPv4/IPv6 (ARP, LLDP, ...), or no virtual service matches.
    NotVip = 7, "not_vip";
    /// Passed: a frame with more than two 802.1Q/802.1ad tags (one tag and QinQ are
    /// parsed like untagged frames), or a tagged VRRP advert (left to the stack).
    Vlan = 8, "vlan";
    /// Drop reason: VIP traffic with IPv4 options (never forwarded half-parsed).
    Ipv4Options = 9, "ipv4_options";
    /// Drop reason: VIP traffic that is an IP fragment (first or later).
    Fragment = 10, "fragment";
    /// Passed: IPv6 with an extension header before L4 (any destination): the chain is
    /// not walked, so such packets are never forwarded.
    Ipv6ExtHeader = 11, "ipv6_ext_header";
    /// Drop reason: malformed IP header (bad version/IHL/length).
    Malformed = 12, "malformed";
    /// Drop reason: VIP traffic with TTL / hop limit <= 1.
    TtlExpired = 13, "ttl_expired";
    /// Drop reason: the service has no usable backend (empty or missing table).
    NoBackend = 14, "no_backend";
    /// Connection-table hit: the flow kept its backend.
    ConnHit = 15, "conn_hit";
    /// Connection-table miss: backend chosen by Maglev (a new flow), recorded in the
    /// unconfirmed table (`XLB_CONNS_NEW`) unless the packet is an ICMP error.
    ConnMiss = 16, "conn_miss";
    /// Drop reason: the encapsulated frame would exceed the egress MTU and may not be
    /// answered: it is itself an ICMP too-big for a VIP flow (no ICMP errors about ICMP
    /// errors), or too short to quote (only with an egress MTU under the quote size
    /// plus the overhead); otherwise see `icmp_toobig_sent_v4`/`_v6`,
    /// `icmp_toobig_rate_limited` and `too_big_no_df` (docs/mtu.md).
    EncapTooBig = 17, "encap_too_big";
    /// Drop reason: the service needs an encapsulation source address that is not set,
    /// or the kernel refused to grow the packet.
    EncapError = 18, "encap_error";
    /// Decap program: an IPIP / IPv6-in-IPv6 packet was unwrapped for the local stack.
    Decap = 19, "decap";
    /// Transmitted: an ICMP / ICMPv6 echo request to a VIP answered from XDP.
    IcmpEcho = 20, "icmp_echo";
    /// An ICMP "fragmentation needed" / ICMPv6 "packet too big" about a VIP flow, sent
    /// on to the backend that owns the quoted flow (so its path MTU learns).
    IcmpTooBig = 21, "icmp_too_big";
    /// Drop reason: the service sends out another interface (two-arm) whose devmap slot
    /// is empty.
    NoTxPort = 22, "no_tx_port";
    /// Passed: the service has no usable backend and its fallback is the local stack
    /// (`fallback: "pass"`).
    FallbackPass = 23, "fallback_pass";
    /// Passed: the service's VIP belongs to a VRRP instance that is not master here, so
    /// this host must not balance it (the stack, which no longer holds the VIP, drops
    /// it).
    Standby = 24, "standby";
    /// Passed: a valid VRRP advert for a configured virtual router, left to the
    /// userspace election (docs/vrrp-xdp.md).
    VrrpAdvert = 25, "vrrp_advert";
    /// Transmitted: a lower-priority or priority-0 VRRP advert answered from XDP with our
    /// own advertisement while we are master.
    VrrpAnswered = 26, "vrrp_answered";
    /// Drop reason: invalid VRRP advert on an interface running VRRP (TTL/hop limit not
    /// 255, IPv4 options/fragment/bad header checksum, bad version/type, length, address
    /// count or checksum, version differing from the router's).
    VrrpInvalid = 27, "vrrp_invalid";
    /// Drop reason: VRRP advert for a VRID/family with no router configured on an
    /// interface that runs VRRP.
    VrrpUnknownVrid = 28, "vrrp_unknown_vrid";
    /// Passed: a VRRP advert that would have been answered, but this router answered less
    /// than 10 ms ago.
    VrrpRateLimited = 29, "vrrp_rate_limited";
    /// Passed: VIP traffic (or an echo request to a VIP) in a frame sent to a broadcast or
    /// multicast MAC: forwarding or answering it would send a group address as the
    /// source MAC, so the stack decides.
    L2Group = 30, "l2_group";
    /// Decap program, passed untouched: a tunnel packet whose outer source is not an
    /// allowed balancer (`xlb decap --allow-source`).
    DecapForeignSource = 31, "decap_foreign_source";
    /// Decap program, passed untouched: a tunnel packet from an allowed balancer whose
    /// outer destination is not an address of this host.
    DecapForeignDest = 32, "decap_foreign_dest";
    /// Transmitted: an IPv4 packet with DF set that would exceed the egress MTU once
    /// encapsulated, answered from XDP with ICMP "fragmentation needed" (docs/mtu.md).
    IcmpTooBigSentV4 = 33, "icmp_toobig_sent_v4";
    /// Transmitted: the same for IPv6, answered with ICMPv6 "packet too big".
    IcmpTooBigSentV6 = 34, "icmp_toobig_sent_v6";
    /// Drop reason: too big once encapsulated, but this CPU's ICMP budget for the current
    /// second (`Config::toobig_per_sec`) is spent.
    IcmpTooBigRateLimited = 35, "icmp_toobig_rate_limited";
    /// Drop reason: an IPv4 packet without DF that would exceed the egress MTU once
    /// encapsulated. XDP cannot fragment, and the stack would not send it to the backend
    /// either (it holds no route from the VIP to the backend's tunnel), so it is dropped.
    TooBigNoDf = 36, "too_big_no_df";
    /// A flow's second packet found the entry its first one left in the unconfirmed
    /// table and moved it into the connection table (counted with `conn_hit`).
    ConnConfirmed = 37, "conn_confirmed";
    /// Passed: traffic for a service scoped to a VLAN (`services[i].vlan`) that arrived
    /// untagged or with another (innermost) VLAN id.
    VlanMismatch = 38, "vlan_mismatch";
}

/// One counter slot. Per CPU in the map; userspace sums the CPUs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted: the frame length as XDP saw it (L2 header included, no FCS).
    pub bytes: u64,
}

#[cfg(feature = "user")]
// SAFETY: two u64 fields, repr(C), no padding; any bit pattern is valid.
unsafe impl aya::Pod for Counter {}

impl Counter {
    /// Adds another counter (userspace summing of per-CPU values).
    pub fn add(&mut self, other: &Counter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
    }
}

/// Per-service / per-backend counter slot (per CPU in the map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowCounter {
    /// Packets forwarded.
    pub packets: u64,
    /// Bytes forwarded (frame length as received, before any encapsulation).
    pub bytes: u64,
    /// New flows (connection-table misses) assigned.
    pub new_flows: u64,
}

#[cfg(feature = "user")]
// SAFETY: three u64 fields, repr(C), no padding; any bit pattern is valid.
unsafe impl aya::Pod for FlowCounter {}

impl FlowCounter {
    /// Adds another counter (userspace summing of per-CPU values).
    pub fn add(&mut self, other: &FlowCounter) {
        self.packets = self.packets.wrapping_add(other.packets);
        self.bytes = self.bytes.wrapping_add(other.bytes);
        self.new_flows = self.new_flows.wrapping_add(other.new_flows);
    }
}
