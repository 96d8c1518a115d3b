//! A virtual service as the operator writes it: (VIP, port, protocol), forwarding mode,
//! backends, and what happens when they fail. Plain data (serde); validated as a whole
//! by [`super::validate`].

use std::{fmt, net::IpAddr};

use lb_common::{
    wire::{IPPROTO_TCP, IPPROTO_UDP},
    ForwardMode, VipKey,
};
use serde::{Deserialize, Serialize};

use super::check::CheckSpec;
use crate::dataplane::{addr::be_words, prefix::Prefix};

/// Default (and largest, see `lb_common::limits::MAX_MAGLEV_SIZE`) table size: a prime
/// comfortably above 100 × the number of backends a service is expected to have, which
/// keeps per-backend shares within about 1% of each other (paper, section 3.4).
pub const DEFAULT_TABLE_SIZE: u32 = 65537;
const _: () = assert!(DEFAULT_TABLE_SIZE <= lb_common::limits::MAX_MAGLEV_SIZE);

/// Whether `n` is prime (trial division; at most ~32 768 divisions for any `u32`).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    // d <= n / d avoids overflowing d * d.
    while d <= n / d {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Highest backend weight (keeps weighted Maglev rounds and operator intent sane).
pub const MAX_WEIGHT: u32 = 65_535;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// L2 direct server return (LVS "DR").
    Dsr,
    /// IP-in-IP encapsulation (LVS "TUN").
    Ipip,
    /// GUE (UDP) encapsulation.
    Gue,
}

impl From<Mode> for ForwardMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Dsr => ForwardMode::Dsr,
            Mode::Ipip => ForwardMode::Ipip,
            Mode::Gue => ForwardMode::Gue,
        }
    }
}

/// One virtual service: (VIP, port, protocol) and its backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub vip: IpAddr,
    /// Destination port; `None` makes this the VIP's all-ports service.
    #[serde(default)]
    pub port: Option<u16>,
    pub protocol: Protocol,
    pub mode: Mode,
    /// Hash on the client address only, so a client always reaches the same backend.
    #[serde(default)]
    pub source_affinity: bool,
    /// Maglev table size: a prime, larger than the number of backends.
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// Two-arm: send to backends out of this interface (XDP_REDIRECT) instead of back
    /// out of the receiving one (XDP_TX).
    #[serde(default)]
    pub egress: Option<String>,
    /// Only frames whose (innermost) 802.1Q tag carries this VLAN id (1..=4094) match;
    /// none = untagged and tagged frames alike (docs/vlans.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// Health check of every backend (a backend may override it); none = backends
    /// are always considered up.
    #[serde(default)]
    pub check: Option<CheckSpec>,
    /// What a failed or disabled backend loses: new flows only, or everything.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// What new flows get when no backend is usable.
    #[serde(default)]
    pub fallback: Fallback,
    /// Command (argv, no shell) run on every health transition of a backend of this
    /// service; see docs/health.md for its arguments.
    #[serde(default)]
    pub notify: Option<Vec<String>>,
    pub backends: Vec<BackendSpec>,
    /// Runtime only (never in the file): a VRRP peer holds this VIP, so the data plane
    /// passes its traffic instead of balancing it.
    #[serde(skip)]
    pub standby: bool,
}

/// What a failed (or administratively disabled) backend loses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Weight 0: no new flows, established flows continue (LVS weight 0, keepalived
    /// `inhibit_on_failure`). Right for backends that fail their check while still
    /// serving, or that are taken out for maintenance.
    #[default]
    Drain,
    /// Removed from the service: its flows are re-chosen at once, so clients get a
    /// reset from another backend and reconnect instead of waiting on a dead one.
    Reset,
}

/// What new flows of a service get while none of its backends is usable
/// (keepalived's `sorry_server`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Fallback {
    /// Dropped (counted `no_backend`): clients retry or time out.
    #[default]
    Drop,
    /// Handed to the balancer's own stack (XDP_PASS, counted `fallback_pass`), e.g. to a
    /// local "we'll be right back" server bound to the VIP.
    Pass,
    /// Sent to this server, which is never health checked and serves only while no
    /// real backend can.
    SorryServer(Box<BackendSpec>),
}

impl ServiceSpec {
    /// A service with these backends and every optional setting at its default (no
    /// check, drain on failure, drop when empty, default table size).
    pub fn new(
        vip: IpAddr,
        port: Option<u16>,
        protocol: Protocol,
        mode: Mode,
        backends: Vec<BackendSpec>,
    ) -> ServiceSpec {
        ServiceSpec {
            vip,
            port,
            protocol,
            mode,
            source_affinity: false,
            table_size: default_table_size(),
            egress: None,
            vlan: None,
            check: None,
            on_failure: OnFailure::default(),
            fallback: Fallback::default(),
            notify: None,
            backends,
            standby: false,
        }
    }
}

fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub address: IpAddr,
    /// Next-hop MAC towards the backend, as an override: without it the MAC is learned
    /// from the kernel's route and neighbour tables (docs/next-hops.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Relative share of new flows; 0 = drained (keeps established flows only).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Administratively out of service: treated like a failed backend (the service's
    /// `on_failure` decides whether its flows drain or are cut).
    #[serde(default)]
    pub disabled: bool,
    /// This backend's own check, instead of the service's.
    #[serde(default)]
    pub check: Option<CheckSpec>,
}

impl BackendSpec {
    /// An enabled backend with no check of its own and a configured MAC.
    pub fn new(address: IpAddr, mac: MacAddr, weight: u32) -> BackendSpec {
        BackendSpec {
            mac: Some(mac),
            ..BackendSpec::learned(address, weight)
        }
    }

    /// An enabled backend with no check of its own, its MAC learned from the kernel.
    pub fn learned(address: IpAddr, weight: u32) -> BackendSpec {
        BackendSpec {
            address,
            mac: None,
            weight,
            disabled: false,
            check: None,
        }
    }
}

fn default_weight() -> u32 {
    1
}

/// A MAC address written `aa:bb:cc:dd:ee:ff` (the default, all zero, is "none yet").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)"
            ));
        }
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(parts) {
            *byte = u8::from_str_radix(part, 16)
                .map_err(|_| format!("{s:?} is not a MAC address (bad byte {part:?})"))?;
        }
        Ok(MacAddr(mac))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Encapsulation settings: outer source addresses (the balancer's own addresses) and
/// the GUE destination port. A source may be a prefix (`"10.99.0.0/16"`, IPv4 /8–/32,
/// IPv6 /96–/128, no host bits set): each flow's packets then leave from an address of
/// their own in it (the flow hash in the host bits), so backends spread tunnelled flows
/// over their receive queues; the backends' `xlb decap --allow-source` takes the same
/// prefix, and the prefix must be routed to the balancer for ICMP (PMTUD) to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncapSources {
    #[serde(default)]
    pub v4: Option<Prefix<std::net::Ipv4Addr>>,
    #[serde(default)]
    pub v6: Option<Prefix<std::net::Ipv6Addr>>,
    /// UDP port GUE packets are sent to (backends' `xlb decap --gue-port`).
    #[serde(default = "default_gue_port")]
    pub gue_port: u16,
}

impl Default for EncapSources {
    fn default() -> Self {
        Self {
            v4: None,
            v6: None,
            gue_port: default_gue_port(),
        }
    }
}

fn default_gue_port() -> u16 {
    lb_common::service::DEFAULT_GUE_PORT
}

/// The data-plane key of a service.
pub fn vip_key(spec: &ServiceSpec) -> VipKey {
    let (addr, family) = be_words(spec.vip);
    VipKey {
        addr,
        port_be: spec.port.unwrap_or(0).to_be(),
        proto: spec.protocol.number(),
        family,
    }
}
