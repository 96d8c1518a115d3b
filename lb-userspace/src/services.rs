//! Virtual services as the control plane sees them, and how a whole set of them is
//! validated and applied to the data plane.
//!
//! `apply` is all-or-nothing on validation: every problem in the requested set is
//! reported with its path (`services[1].backends[3].weight: ...`) and no map is touched.
//! Backend ids are stable per backend address, so established flows (recorded by id in
//! the connection table) survive any change that keeps their backend.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
    net::IpAddr,
};

use aya::Ebpf;
use lb_common::{
    limits::{MAX_BACKENDS, MAX_MAGLEV_SIZE, MAX_SERVICES},
    service::{service_flags, AF_INET, AF_INET6},
    wire::{IPPROTO_TCP, IPPROTO_UDP},
    Backend, ForwardMode, Service, VipKey,
};
use serde::{Deserialize, Serialize};

use crate::{
    health::check::CheckSpec,
    maglev::{self, MaglevBackend},
    maps::{self, MapsError},
};

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
    maglev::DEFAULT_TABLE_SIZE
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSpec {
    pub address: IpAddr,
    /// Next-hop MAC towards the backend (configured; see docs/maps.md).
    pub mac: MacAddr,
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
    /// An enabled backend with no check of its own.
    pub fn new(address: IpAddr, mac: MacAddr, weight: u32) -> BackendSpec {
        BackendSpec {
            address,
            mac,
            weight,
            disabled: false,
            check: None,
        }
    }
}

fn default_weight() -> u32 {
    1
}

/// A MAC address written `aa:bb:cc:dd:ee:ff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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

/// One problem in a requested service set, located by its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("rejected, nothing applied:\n{}", .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Invalid>),
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// Encapsulation settings: outer source addresses (the balancer's own addresses) and
/// the GUE destination port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncapSources {
    #[serde(default)]
    pub v4: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub v6: Option<std::net::Ipv6Addr>,
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

/// Checks a whole service set. Returns every problem found, not just the first.
pub fn validate(specs: &[ServiceSpec], encap: &EncapSources) -> Result<(), Vec<Invalid>> {
    let mut errors = Vec::new();
    let mut bad = |path: String, reason: String| errors.push(Invalid { path, reason });
    if specs.len() >= MAX_SERVICES as usize {
        bad(
            "services".into(),
            format!(
                "{} services; at most {} fit the data plane",
                specs.len(),
                MAX_SERVICES - 1
            ),
        );
    }
    let mut seen = HashMap::new();
    let mut addresses = HashSet::new();
    for (i, s) in specs.iter().enumerate() {
        let p = format!("services[{i}]");
        if s.port == Some(0) {
            bad(
                format!("{p}.port"),
                "0 is not a valid port (omit it for an all-ports service)".into(),
            );
        }
        if let Some(j) = seen.insert((s.vip, s.port, s.protocol), i) {
            bad(
                format!("{p}.vip"),
                format!(
                    "{} {:?} port {} is already services[{j}]",
                    s.vip,
                    s.protocol,
                    port_text(s.port)
                ),
            );
        }
        if s.mode == Mode::Gue && encap.gue_port == 0 {
            bad(
                format!("{p}.mode"),
                "gue needs a non-zero encap_sources.gue_port".into(),
            );
        }
        if s.mode == Mode::Ipip || s.mode == Mode::Gue {
            let missing = if s.vip.is_ipv4() {
                encap.v4.is_none()
            } else {
                encap.v6.is_none()
            };
            if missing {
                bad(
                    format!("{p}.mode"),
                    format!(
                        "{} needs an encapsulation source address for {} (encap_sources)",
                        if s.mode == Mode::Gue { "gue" } else { "ipip" },
                        if s.vip.is_ipv4() { "IPv4" } else { "IPv6" }
                    ),
                );
            }
        }
        if !maglev::is_prime(s.table_size) || s.table_size > MAX_MAGLEV_SIZE {
            bad(
                format!("{p}.table_size"),
                format!(
                    "{} must be a prime no larger than {MAX_MAGLEV_SIZE}",
                    s.table_size
                ),
            );
        }
        let weighted = s.backends.iter().filter(|b| b.weight > 0).count();
        if weighted as u64 >= u64::from(s.table_size) {
            bad(
                format!("{p}.backends"),
                format!(
                    "{weighted} weighted backends need a table larger than {}",
                    s.table_size
                ),
            );
        }
        if let Some(iface) = &s.egress {
            if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
                bad(
                    format!("{p}.egress"),
                    format!("no interface named {iface:?}"),
                );
            }
        }
        if let Some(check) = &s.check {
            for (field, reason) in check.problems(s.port) {
                bad(format!("{p}.check.{field}"), reason);
            }
        }
        if let Some(argv) = &s.notify {
            if argv.first().is_none_or(String::is_empty) {
                bad(
                    format!("{p}.notify"),
                    "needs a program (argv[0]) to run".into(),
                );
            }
        }
        if let Fallback::SorryServer(sorry) = &s.fallback {
            let fp = format!("{p}.fallback.sorry_server");
            if sorry.address.is_ipv4() != s.vip.is_ipv4() {
                bad(
                    format!("{fp}.address"),
                    format!("{} is not of the VIP's address family", sorry.address),
                );
            }
            if s.backends.iter().any(|b| b.address == sorry.address) {
                bad(
                    format!("{fp}.address"),
                    format!("{} is also a regular backend", sorry.address),
                );
            }
            if sorry.check.is_some() || sorry.disabled {
                bad(
                    fp.clone(),
                    "a sorry server has no check and cannot be disabled".into(),
                );
            }
            if !is_unicast_mac(sorry.mac) {
                bad(
                    format!("{fp}.mac"),
                    format!("{} is not a unicast MAC", sorry.mac),
                );
            }
            addresses.insert(sorry.address);
        }
        let mut in_service = HashSet::new();
        for (j, b) in s.backends.iter().enumerate() {
            let bp = format!("{p}.backends[{j}]");
            if b.address.is_ipv4() != s.vip.is_ipv4() {
                bad(
                    format!("{bp}.address"),
                    format!("{} is not of the VIP's address family", b.address),
                );
            }
            if b.address.is_unspecified() || b.address.is_multicast() {
                bad(
                    format!("{bp}.address"),
                    format!("{} cannot be a backend", b.address),
                );
            }
            if !in_service.insert(b.address) {
                bad(
                    format!("{bp}.address"),
                    format!("{} is listed twice", b.address),
                );
            }
            if b.weight > MAX_WEIGHT {
                bad(
                    format!("{bp}.weight"),
                    format!("{} exceeds the maximum {MAX_WEIGHT}", b.weight),
                );
            }
            if let Some(check) = &b.check {
                for (field, reason) in check.problems(s.port) {
                    bad(format!("{bp}.check.{field}"), reason);
                }
            }
            if !is_unicast_mac(b.mac) {
                bad(
                    format!("{bp}.mac"),
                    format!("{} is not a unicast MAC", b.mac),
                );
            }
            addresses.insert(b.address);
        }
    }
    if addresses.len() >= MAX_BACKENDS as usize {
        bad(
            "services".into(),
            format!(
                "{} distinct backends; at most {} fit the data plane",
                addresses.len(),
                MAX_BACKENDS - 1
            ),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn is_unicast_mac(mac: MacAddr) -> bool {
    mac.0 != [0; 6] && mac.0[0] & 1 == 0
}

fn port_text(port: Option<u16>) -> String {
    port.map_or_else(|| "all".into(), |p| p.to_string())
}

/// What the data plane currently holds, so each `apply` changes only what differs.
#[derive(Debug, Default)]
pub struct Balancer {
    /// Backend address → id (stable while any service uses the address).
    backend_ids: BTreeMap<IpAddr, u32>,
    /// Service key → (service id, spec as applied; `None` for a service adopted from
    /// an earlier daemon's maps, whose spec is unknown until the next `apply`).
    services: HashMap<VipKey, (u32, Option<ServiceSpec>)>,
    /// Encapsulation sources as applied.
    encap: EncapSources,
    /// Egress interface name → devmap slot (1-based).
    tx_ports: BTreeMap<String, u8>,
    /// Where the search for a free backend id starts: ids are handed out round-robin so
    /// a just-freed id is the last to be reused.
    next_backend_id: u32,
}

/// What one `apply` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub services_set: usize,
    pub services_removed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
}

impl Balancer {
    /// Rebuilds the control plane's view from maps an earlier daemon left pinned, so a
    /// restart keeps every backend id (and with it every connection-table entry) and
    /// every service id. The next `apply` re-installs each service's table: with the
    /// same config it is the same table, so no flow moves.
    pub fn adopt(ebpf: &Ebpf) -> Result<Self, MapsError> {
        let (services, backends) =
            crate::stats::read_loaded_flows(ebpf).map_err(|source| MapsError::Map {
                name: lb_common::maps::SERVICES,
                source,
            })?;
        let mut balancer = Balancer::default();
        for b in backends {
            if let Some(addr) = ip_from_words(b.backend.addr, b.backend.family) {
                balancer.backend_ids.insert(addr, b.id);
                balancer.next_backend_id = balancer.next_backend_id.max(b.id + 1);
            }
        }
        for s in services {
            balancer.services.insert(s.key, (s.id, None));
        }
        Ok(balancer)
    }

    /// Number of services known (adopted or applied).
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Validates `specs` as a whole, then makes the data plane serve exactly them. Each
    /// service's table is swapped in atomically; services not in `specs` are removed.
    pub fn apply(
        &mut self,
        ebpf: &mut Ebpf,
        specs: &[ServiceSpec],
    ) -> Result<ApplyReport, ApplyError> {
        validate(specs, &self.encap).map_err(ApplyError::Invalid)?;
        let mut report = ApplyReport::default();

        // 1. Backends first: a table must never name an id whose record is missing.
        let wanted: BTreeMap<IpAddr, MacAddr> = specs
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| (b.address, b.mac)))
            .collect();
        for (addr, mac) in &wanted {
            let id = match self.backend_ids.get(addr) {
                Some(id) => *id,
                None => {
                    let id = self.free_backend_id();
                    self.backend_ids.insert(*addr, id);
                    report.backends_added += 1;
                    id
                }
            };
            maps::set_backend(ebpf, id, &backend_record(*addr, *mac))?;
        }

        // 2. Services: every changed table (made live in batches, one RCU grace period
        //    per batch), then the entries, so no entry ever names a missing table.
        let mut keep = HashSet::new();
        let mut changed = Vec::new();
        let mut tables = Vec::new();
        // Ids given to new services of this apply, not yet in `self.services`.
        let mut new_ids = HashSet::new();
        for spec in specs {
            let key = vip_key(spec);
            keep.insert(key);
            let id = match self.services.get(&key) {
                Some((_, Some(old))) if old == spec => continue,
                Some((id, _)) => *id,
                None => {
                    let id = self.free_service_id(&new_ids);
                    new_ids.insert(id);
                    id
                }
            };
            tables.push((id, self.table_for(spec)?));
            let tx_port = match &spec.egress {
                Some(iface) => self.tx_port(ebpf, iface)?,
                None => 0,
            };
            let svc = Service {
                id,
                flags: service_flags_of(spec),
                mode: ForwardMode::from(spec.mode) as u8,
                tx_port,
                _pad: [0; 2],
            };
            changed.push((key, svc, spec));
        }
        maps::swap_tables(ebpf, &tables)?;
        for (key, svc, spec) in changed {
            maps::set_service(ebpf, &key, &svc)?;
            self.services.insert(key, (svc.id, Some(spec.clone())));
            report.services_set += 1;
        }

        // 3. Removed services, then backends no service uses any more.
        let gone: Vec<VipKey> = self
            .services
            .keys()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect();
        for key in gone {
            maps::remove_service(ebpf, &key)?;
            self.services.remove(&key);
            report.services_removed += 1;
        }
        let unused: Vec<IpAddr> = self
            .backend_ids
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        for addr in unused {
            if let Some(&id) = self.backend_ids.get(&addr) {
                // Clear first (the data plane then re-chooses its flows), forget its
                // connection entries, and only then free the id for reuse.
                maps::clear_backend(ebpf, id)?;
                maps::forget_backend_flows(ebpf, id)?;
                self.backend_ids.remove(&addr);
                report.backends_removed += 1;
            }
        }
        Ok(report)
    }

    /// The devmap slot of egress interface `iface`, set up on first use.
    fn tx_port(&mut self, ebpf: &mut Ebpf, iface: &str) -> Result<u8, ApplyError> {
        if let Some(slot) = self.tx_ports.get(iface) {
            return Ok(*slot);
        }
        let invalid = |reason: String| {
            ApplyError::Invalid(vec![Invalid {
                path: format!("egress {iface:?}"),
                reason,
            }])
        };
        let slot = u8::try_from(self.tx_ports.len() + 1)
            .ok()
            .filter(|s| u32::from(*s) < lb_common::limits::MAX_TX_PORTS)
            .ok_or_else(|| invalid("too many egress interfaces".into()))?;
        let ifindex = nix::net::if_::if_nametoindex(iface)
            .map_err(|e| invalid(format!("no such interface: {e}")))?;
        let mac =
            interface_mac(iface).ok_or_else(|| invalid("interface has no MAC address".into()))?;
        maps::set_tx_port(ebpf, u32::from(slot), ifindex, mac)?;
        self.tx_ports.insert(iface.to_owned(), slot);
        Ok(slot)
    }

    /// Sets the outer source addresses for encapsulating services. Call before `apply`
    /// with services that need them; `apply` refuses ipip services without one.
    pub fn set_encap_sources(
        &mut self,
        ebpf: &mut Ebpf,
        encap: EncapSources,
    ) -> Result<(), ApplyError> {
        let config = lb_common::Config {
            encap_src_v4: encap.v4.map_or(0, |a| u32::from_ne_bytes(a.octets())),
            encap_src_v6: encap.v6.map_or([0; 4], |a| be_words(IpAddr::V6(a)).0),
            gue_port_be: encap.gue_port.to_be(),
            _pad: [0; 2],
        };
        maps::set_config(ebpf, &config)?;
        self.encap = encap;
        Ok(())
    }

    /// The id currently given to a backend address.
    pub fn backend_id(&self, addr: IpAddr) -> Option<u32> {
        self.backend_ids.get(&addr).copied()
    }

    fn table_for(&self, spec: &ServiceSpec) -> Result<Vec<u32>, ApplyError> {
        let backends: Vec<MaglevBackend> = spec
            .backends
            .iter()
            .map(|b| MaglevBackend {
                id: self.backend_ids[&b.address],
                weight: b.weight,
                key: maglev::backend_key(b.address, 0),
            })
            .collect();
        if backends.iter().all(|b| b.weight == 0) {
            // No backend takes new flows: an all-zero table makes the data plane drop
            // them (counted as no_backend) while established flows keep their backend.
            return Ok(vec![0; spec.table_size as usize]);
        }
        maglev::build(&backends, spec.table_size).map_err(|e| {
            ApplyError::Invalid(vec![Invalid {
                path: "services".into(),
                reason: e.to_string(),
            }])
        })
    }

    fn free_backend_id(&mut self) -> u32 {
        let used: HashSet<u32> = self.backend_ids.values().copied().collect();
        let start = self.next_backend_id.max(1);
        let id = (start..MAX_BACKENDS)
            .chain(1..start)
            .find(|id| !used.contains(id))
            .expect("validated below MAX_BACKENDS");
        self.next_backend_id = id + 1;
        id
    }

    /// The lowest id neither a known service nor `taken` uses.
    fn free_service_id(&self, taken: &HashSet<u32>) -> u32 {
        let used: HashSet<u32> = self.services.values().map(|(id, _)| *id).collect();
        (1..)
            .find(|id| !used.contains(id) && !taken.contains(id))
            .expect("validated below MAX_SERVICES")
    }
}

fn service_flags_of(spec: &ServiceSpec) -> u32 {
    let mut flags = 0;
    if spec.source_affinity {
        flags |= service_flags::SOURCE_AFFINITY;
    }
    if spec.fallback == Fallback::Pass {
        flags |= service_flags::FALLBACK_PASS;
    }
    if spec.standby {
        flags |= service_flags::STANDBY;
    }
    flags
}

/// The MAC address of `iface` in this network namespace.
fn interface_mac(iface: &str) -> Option<[u8; 6]> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        if ifa.interface_name != iface {
            return None;
        }
        ifa.address?.as_link_addr()?.addr()
    })
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

/// An address as the data plane stores it: network-order words and a family tag.
pub fn be_words(addr: IpAddr) -> ([u32; 4], u8) {
    match addr {
        IpAddr::V4(a) => ([u32::from_ne_bytes(a.octets()), 0, 0, 0], AF_INET),
        IpAddr::V6(a) => {
            let o = a.octets();
            (
                std::array::from_fn(|i| {
                    u32::from_ne_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]])
                }),
                AF_INET6,
            )
        }
    }
}

/// The inverse of [`be_words`]; `None` for an unknown family tag.
pub fn ip_from_words(words: [u32; 4], family: u8) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::from(words[0].to_ne_bytes())),
        AF_INET6 => {
            let mut o = [0u8; 16];
            for (chunk, w) in o.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::from(o))
        }
        _ => None,
    }
}

/// `vip:port/proto` as operators write it (`[v6]:port/proto`, port `*` for all ports).
pub fn describe_vip(key: &VipKey) -> String {
    let addr = ip_from_words(key.addr, key.family).map_or_else(|| "?".into(), |a| a.to_string());
    let port = match u16::from_be(key.port_be) {
        0 => "*".to_owned(),
        p => p.to_string(),
    };
    let proto = match key.proto {
        IPPROTO_TCP => "tcp".to_owned(),
        IPPROTO_UDP => "udp".to_owned(),
        p => p.to_string(),
    };
    if key.family == AF_INET6 {
        format!("[{addr}]:{port}/{proto}")
    } else {
        format!("{addr}:{port}/{proto}")
    }
}

fn backend_record(addr: IpAddr, mac: MacAddr) -> Backend {
    let (words, family) = be_words(addr);
    Backend {
        addr: words,
        family,
        _pad: 0,
        mac: mac.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(vip: &str, port: Option<u16>, backends: &[(&str, u32)]) -> ServiceSpec {
        let backends = backends
            .iter()
            .map(|(a, w)| BackendSpec::new(a.parse().unwrap(), MacAddr([2, 0, 0, 0, 0, 1]), *w))
            .collect();
        ServiceSpec {
            table_size: 7,
            ..ServiceSpec::new(
                vip.parse().unwrap(),
                port,
                Protocol::Tcp,
                Mode::Dsr,
                backends,
            )
        }
    }

    fn paths(specs: &[ServiceSpec]) -> Vec<String> {
        validate(specs, &EncapSources::default())
            .unwrap_err()
            .into_iter()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn address_words_round_trip() {
        for a in ["10.1.2.3", "fd00::1:2", "::ffff:1.2.3.4"] {
            let ip: IpAddr = a.parse().unwrap();
            let (w, f) = be_words(ip);
            assert_eq!(ip_from_words(w, f), Some(ip));
        }
        let s = spec("fd00::100", None, &[]);
        assert_eq!(describe_vip(&vip_key(&s)), "[fd00::100]:*/tcp");
    }

    #[test]
    fn valid_set_passes() {
        validate(
            &[spec(
                "10.0.0.100",
                Some(80),
                &[("10.0.1.1", 1), ("10.0.1.2", 3)],
            )],
            &EncapSources::default(),
        )
        .unwrap();
    }

    #[test]
    fn each_problem_is_named_by_path() {
        let mut bad = spec(
            "10.0.0.100",
            Some(0),
            &[("10.0.1.1", 70_000), ("fd00::1", 1), ("10.0.1.1", 1)],
        );
        bad.table_size = 8;
        bad.backends[0].mac = MacAddr([1, 0, 0, 0, 0, 1]);
        let mut dup = spec("10.0.0.100", Some(0), &[("10.0.1.3", 1)]);
        dup.mode = Mode::Ipip;
        let got = paths(&[bad, dup]);
        let want = [
            "services[0].port: 0 is not a valid port (omit it for an all-ports service)",
            "services[0].table_size: 8 must be a prime no larger than 65537",
            "services[0].backends[0].weight: 70000 exceeds the maximum 65535",
            "services[0].backends[0].mac: 01:00:00:00:00:01 is not a unicast MAC",
            "services[0].backends[1].address: fd00::1 is not of the VIP's address family",
            "services[0].backends[2].address: 10.0.1.1 is listed twice",
            "services[1].port: 0 is not a valid port (omit it for an all-ports service)",
            "services[1].vip: 10.0.0.100 Tcp port 0 is already services[0]",
            "services[1].mode: ipip needs an encapsulation source address for IPv4 (encap_sources)",
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:#?}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    #[test]
    fn more_backends_than_the_table_allows_is_rejected() {
        let many: Vec<(String, u32)> = (1..=7).map(|i| (format!("10.0.1.{i}"), 1)).collect();
        let refs: Vec<(&str, u32)> = many.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        let got = paths(&[spec("10.0.0.100", Some(80), &refs)]);
        assert_eq!(
            got,
            ["services[0].backends: 7 weighted backends need a table larger than 7"]
        );
    }

    #[test]
    fn config_json_round_trip_and_unknown_fields() {
        let json = r#"{"vip":"10.0.0.100","port":80,"protocol":"tcp","mode":"dsr",
            "backends":[{"address":"10.0.1.1","mac":"02:00:00:00:00:01","weight":2}]}"#;
        let s: ServiceSpec = serde_json::from_str(json).unwrap();
        assert_eq!(s.table_size, maglev::DEFAULT_TABLE_SIZE);
        assert_eq!(s.backends[0].mac, MacAddr([2, 0, 0, 0, 0, 1]));
        let err =
            serde_json::from_str::<ServiceSpec>(&json.replace("\"mode\"", "\"mdoe\"")).unwrap_err();
        assert!(err.to_string().contains("mdoe"), "{err}");
        let err = serde_json::from_str::<ServiceSpec>(&json.replace("02:00:00:00:00:01", "02:00"))
            .unwrap_err();
        assert!(err.to_string().contains("not a MAC address"), "{err}");
    }
}
