//! The balancing logic: what the data plane must hold for a validated service set, and
//! how to get it there without a packet ever seeing a half-applied set.
//!
//! `apply` is all-or-nothing on validation: every problem in the requested set is
//! reported with its path (`services[1].backends[3].weight: ...`) and the data plane is
//! not touched. Backend ids are stable per backend address, so established flows
//! (recorded by id in the connection table) survive any change that keeps their
//! backend. Everything goes through the [`DataPlane`] port.
//!
//! - [`maglev`]: weighted Maglev tables.

pub mod maglev;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use lb_common::{
    limits::{MAX_BACKENDS, MAX_SERVICES, MAX_TX_PORTS},
    service::service_flags,
    Backend, ForwardMode, Service, VipKey,
};

use self::maglev::MaglevBackend;
use crate::{
    config::{service::vip_key, validate, EncapSources, Fallback, Invalid, MacAddr, ServiceSpec},
    dataplane::{
        addr::{be_words, ip_from_words},
        DataPlane, PortError,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("rejected, nothing applied:\n{}", .0.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Invalid>),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// What the data plane currently holds, so each `apply` changes only what differs.
#[derive(Debug, Default)]
pub struct Balancer {
    /// Backend address → id (stable while any service uses the address).
    backend_ids: BTreeMap<IpAddr, u32>,
    /// The record written for each backend id, so an apply rewrites only what changed.
    records: HashMap<u32, Backend>,
    /// The global settings as written (`None`: not yet by this daemon).
    written_config: Option<lb_common::Config>,
    /// What each service key has in the data plane.
    services: HashMap<VipKey, Installed>,
    /// Encapsulation sources as applied.
    encap: EncapSources,
    /// Seed of the flow hash and of the tables built (`hash_seed`).
    hash_seed: u32,
    /// Connection-entry idle timeouts (`conn_table.timeouts`; zero = never).
    conn_timeouts: lb_common::ConnTimeoutTicks,
    /// ICMP too-big answers per CPU and second (`icmp_toobig_per_sec`; 0 = default).
    toobig_per_sec: u32,
    /// Egress interface name → its devmap slot and what the slot holds.
    tx_ports: BTreeMap<String, TxPort>,
    /// Where the search for a free backend id starts: ids are handed out round-robin so
    /// a just-freed id is the last to be reused.
    next_backend_id: u32,
}

/// One service as the data plane holds it.
#[derive(Debug, Clone)]
struct Installed {
    id: u32,
    /// The `XLB_MAGLEV` slot its entry names: `id` or `id + MAX_SERVICES`.
    slot: u32,
    /// The spec as applied; `None` for a service adopted from an earlier daemon's maps,
    /// whose spec is unknown until the next `apply`.
    spec: Option<ServiceSpec>,
}

impl Installed {
    /// The slot a new table of this service goes to: the one its entry does not name,
    /// so packets keep reading the live table until the entry switches them over.
    fn other_slot(&self) -> u32 {
        if self.slot == self.id {
            self.id + MAX_SERVICES
        } else {
            self.id
        }
    }
}

/// One egress interface's devmap slot.
#[derive(Debug, Clone, Copy)]
struct TxPort {
    /// 1-based (0 means "no egress" in a service entry).
    slot: u8,
    /// The (ifindex, MAC) written, `None` while the interface is missing: the kernel
    /// empties a devmap slot when its device goes away, and a device created again
    /// under the same name has a new ifindex, so the slot must be written again.
    written: Option<(u32, [u8; 6])>,
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
    pub fn adopt(dp: &dyn DataPlane) -> Result<Self, PortError> {
        let (services, backends) = dp.flows()?;
        let mut balancer = Balancer::default();
        for b in backends {
            if let Some(addr) = ip_from_words(b.backend.addr, b.backend.family) {
                balancer.backend_ids.insert(addr, b.id);
                balancer.records.insert(b.id, b.backend);
                balancer.next_backend_id = balancer.next_backend_id.max(b.id + 1);
            }
        }
        for s in services {
            balancer.services.insert(
                s.key,
                Installed {
                    id: s.id,
                    slot: s.table,
                    spec: None,
                },
            );
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
        dp: &mut dyn DataPlane,
        specs: &[ServiceSpec],
    ) -> Result<ApplyReport, ApplyError> {
        validate::services(specs, &self.encap).map_err(ApplyError::Invalid)?;
        self.apply_validated(dp, specs)
    }

    /// [`Balancer::apply`] with new encapsulation settings: the set is validated against
    /// them first (once), and they are written only if it passes, so a rejected set
    /// leaves the data plane as it was.
    pub fn apply_with_encap(
        &mut self,
        dp: &mut dyn DataPlane,
        encap: EncapSources,
        specs: &[ServiceSpec],
    ) -> Result<ApplyReport, ApplyError> {
        validate::services(specs, &encap).map_err(ApplyError::Invalid)?;
        self.set_encap_sources(dp, encap)?;
        self.apply_validated(dp, specs)
    }

    fn apply_validated(
        &mut self,
        dp: &mut dyn DataPlane,
        specs: &[ServiceSpec],
    ) -> Result<ApplyReport, ApplyError> {
        let mut report = ApplyReport::default();
        // A backend without a MAC here has none learned yet: it takes no new flows (the
        // supervisor drains it) and its record says zero until it has one.
        let wanted: BTreeMap<IpAddr, MacAddr> = specs
            .iter()
            .flat_map(|s| {
                s.backends
                    .iter()
                    .map(|b| (b.address, b.mac.unwrap_or_default()))
            })
            .collect();
        let keep: HashSet<VipKey> = specs.iter().map(vip_key).collect();

        // 0. Normally a leaving service keeps its entry, and a leaving backend its id,
        //    until the new tables are live, so no packet meets a gap. When the ids of
        //    both sets together do not fit, the leaving services go first and the ids
        //    no staying table names are freed first; a transition that fits neither way
        //    is refused before anything changes.
        if let Some(early) = self.make_room(specs, &wanted, &keep)? {
            self.remove_services(dp, &keep, &mut report)?;
            self.remove_backends(dp, &early, &mut report)?;
        }

        // 1. Backends first: a table must never name an id whose record is missing.
        let mut used: HashSet<u32> = self.backend_ids.values().copied().collect();
        for (addr, mac) in &wanted {
            let id = match self.backend_ids.get(addr) {
                Some(id) => *id,
                None => {
                    let id = self
                        .free_backend_id(&mut used)
                        .ok_or_else(|| ids_exhausted("backend"))?;
                    self.backend_ids.insert(*addr, id);
                    report.backends_added += 1;
                    id
                }
            };
            let record = backend_record(*addr, *mac);
            if self.records.get(&id) != Some(&record) {
                dp.set_backend(id, &record)?;
                self.records.insert(id, record);
            }
        }

        // 2. Services: every changed table (made live in batches, one RCU grace period
        //    per batch), then the entries, so no entry ever names a missing table.
        let mut changed = Vec::new();
        let mut tables = Vec::new();
        // Ids given to new services of this apply, not yet in `self.services`.
        let mut new_ids = HashSet::new();
        for spec in specs {
            let key = vip_key(spec);
            // A changed table is built in the slot the entry does not name; the entry
            // write then switches new flows to it together with the entry's new settings.
            let (id, slot) = match self.services.get(&key) {
                Some(Installed {
                    spec: Some(old), ..
                }) if old == spec => continue,
                // Backend ids are stable per address: the same inputs build the same
                // table, so only the entry changes (e.g. a VRRP standby switch).
                Some(
                    i @ Installed {
                        spec: Some(old), ..
                    },
                ) if same_table_inputs(old, spec) => (i.id, None),
                Some(i) => (i.id, Some(i.other_slot())),
                None => {
                    let id = self
                        .free_service_id(&new_ids)
                        .ok_or_else(|| ids_exhausted("service"))?;
                    new_ids.insert(id);
                    (id, Some(id))
                }
            };
            if let Some(slot) = slot {
                tables.push((slot, self.table_for(spec)?));
            }
            let slot = slot.unwrap_or_else(|| self.services[&key].slot);
            let tx_port = match &spec.egress {
                Some(iface) => self.tx_port(dp, iface)?,
                None => 0,
            };
            let svc = Service {
                id,
                flags: service_flags_of(spec),
                mode: ForwardMode::from(spec.mode) as u8,
                tx_port,
                // Below MAGLEV_SLOTS, which fits (asserted at the end of the file).
                table: slot as u16,
                vlan: spec.vlan.map_or(0, u32::from),
            };
            changed.push((key, svc, spec));
        }
        dp.swap_tables(&tables)?;
        // The slots the entries named before this apply, once they name the other one.
        let mut retired = Vec::new();
        for (key, svc, spec) in changed {
            dp.set_service(&key, &svc)?;
            if let Some(old) = self.services.get(&key) {
                if old.slot != svc.table_slot() {
                    retired.push(old.slot);
                }
            }
            self.services.insert(
                key,
                Installed {
                    id: svc.id,
                    slot: svc.table_slot(),
                    spec: Some(spec.clone()),
                },
            );
            report.services_set += 1;
        }

        // Freeing the old tables also waits out the packets that read them: a SYN that
        // chose a leaving backend just before the switch completes its handshake with
        // it before step 3 clears it (the margin an in-place swap's RCU wait gave).
        dp.retire_tables(&retired)?;

        // 3. Removed services, then backends no service uses any more.
        self.remove_services(dp, &keep, &mut report)?;
        let unused: Vec<IpAddr> = self
            .backend_ids
            .keys()
            .filter(|a| !wanted.contains_key(a))
            .copied()
            .collect();
        self.remove_backends(dp, &unused, &mut report)?;
        Ok(report)
    }

    /// Whether this apply must make room first (see step 0 of [`Balancer::apply`]):
    /// `None` when both sets fit side by side, else the backends whose ids can be freed
    /// before anything else (no table of a staying service names them). Refuses a
    /// transition that does not fit even so.
    fn make_room(
        &self,
        specs: &[ServiceSpec],
        wanted: &BTreeMap<IpAddr, MacAddr>,
        keep: &HashSet<VipKey>,
    ) -> Result<Option<Vec<IpAddr>>, ApplyError> {
        let id_space = MAX_BACKENDS as usize - 1;
        let new_backends = wanted
            .keys()
            .filter(|a| !self.backend_ids.contains_key(a))
            .count();
        let new_services = keep
            .iter()
            .filter(|k| !self.services.contains_key(k))
            .count();
        let backends_fit = self.backend_ids.len() + new_backends <= id_space;
        let services_fit = self.services.len() + new_services < MAX_SERVICES as usize;
        if backends_fit && services_fit {
            return Ok(None);
        }
        // Until its new table is live, a staying service's old table names its old
        // backends; an adopted service's are unknown, so nothing can be freed early.
        let mut named = HashSet::new();
        let mut unknown = false;
        for spec in specs {
            match self.services.get(&vip_key(spec)) {
                Some(Installed {
                    spec: Some(old), ..
                }) => {
                    named.extend(old.backends.iter().map(|b| b.address));
                }
                Some(Installed { spec: None, .. }) => unknown = true,
                None => {}
            }
        }
        let early: Vec<IpAddr> = if unknown {
            Vec::new()
        } else {
            self.backend_ids
                .keys()
                .filter(|a| !wanted.contains_key(a) && !named.contains(a))
                .copied()
                .collect()
        };
        let in_use = self.backend_ids.len() - early.len();
        if in_use + new_backends > id_space {
            return Err(ApplyError::Invalid(vec![Invalid {
                path: "services".into(),
                reason: format!(
                    "this change needs {new_backends} new backend ids while {in_use} stay \
                     named by live tables until it is done, and at most {id_space} exist: \
                     apply it in two steps (e.g. add or replace half of the backends first)"
                ),
            }]));
        }
        Ok(Some(early))
    }

    /// Removes every service not in `keep`: its traffic is passed from then on.
    fn remove_services(
        &mut self,
        dp: &mut dyn DataPlane,
        keep: &HashSet<VipKey>,
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let gone: Vec<VipKey> = self
            .services
            .keys()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect();
        let mut retired = Vec::new();
        for key in gone {
            dp.remove_service(&key)?;
            // Its other slot holds no table, or the empty one an earlier retire left.
            if let Some(old) = self.services.remove(&key) {
                retired.push(old.slot);
            }
            report.services_removed += 1;
        }
        // Nothing reads a removed service's tables: free them.
        dp.retire_tables(&retired)?;
        Ok(())
    }

    /// Frees the ids of backends `addrs`. Clear each first (the data plane then
    /// re-chooses its flows), forget their connection entries (one walk of the table
    /// for all), and only then free the ids for reuse.
    fn remove_backends(
        &mut self,
        dp: &mut dyn DataPlane,
        addrs: &[IpAddr],
        report: &mut ApplyReport,
    ) -> Result<(), ApplyError> {
        let mut cleared = Vec::new();
        for addr in addrs {
            if let Some(&id) = self.backend_ids.get(addr) {
                dp.clear_backend(id)?;
                self.records.remove(&id);
                cleared.push((*addr, id));
            }
        }
        if cleared.is_empty() {
            return Ok(());
        }
        let ids: Vec<u32> = cleared.iter().map(|(_, id)| *id).collect();
        dp.forget_backend_flows(&ids)?;
        for (addr, _) in cleared {
            self.backend_ids.remove(&addr);
            report.backends_removed += 1;
        }
        Ok(())
    }

    /// The devmap slot of egress interface `iface`, set up on first use.
    fn tx_port(&mut self, dp: &mut dyn DataPlane, iface: &str) -> Result<u8, ApplyError> {
        if let Some(port) = self.tx_ports.get(iface) {
            return Ok(port.slot);
        }
        let invalid = |reason: String| {
            ApplyError::Invalid(vec![Invalid {
                path: format!("egress {iface:?}"),
                reason,
            }])
        };
        let slot = u8::try_from(self.tx_ports.len() + 1)
            .ok()
            .filter(|s| u32::from(*s) < MAX_TX_PORTS)
            .ok_or_else(|| invalid("too many egress interfaces".into()))?;
        let (ifindex, mac) = resolve_egress(iface).map_err(invalid)?;
        dp.set_tx_port(u32::from(slot), ifindex, mac)?;
        self.tx_ports.insert(
            iface.to_owned(),
            TxPort {
                slot,
                written: Some((ifindex, mac)),
            },
        );
        Ok(slot)
    }

    /// Resolves every egress interface in use again and rewrites the slots whose
    /// interface came back or changed (re-created, new MAC). Returns the interfaces
    /// missing now: their services' new flows cannot leave until they return.
    pub fn refresh_egress(&mut self, dp: &mut dyn DataPlane) -> Result<Vec<String>, PortError> {
        let in_use: HashSet<&str> = self
            .services
            .values()
            .filter_map(|i| i.spec.as_ref()?.egress.as_deref())
            .collect();
        let mut missing = Vec::new();
        for (iface, port) in &mut self.tx_ports {
            if !in_use.contains(iface.as_str()) {
                continue;
            }
            match resolve_egress(iface) {
                Ok(now) if port.written == Some(now) => {}
                Ok((ifindex, mac)) => {
                    dp.set_tx_port(u32::from(port.slot), ifindex, mac)?;
                    tracing::info!(%iface, ifindex, "egress interface (re)resolved");
                    port.written = Some((ifindex, mac));
                }
                Err(why) => {
                    if port.written.take().is_some() {
                        tracing::error!(%iface, "egress interface lost: {why}");
                    }
                    missing.push(iface.clone());
                }
            }
        }
        Ok(missing)
    }

    /// Sets the outer source addresses for encapsulating services. Call before `apply`
    /// with services that need them; `apply` refuses ipip services without one.
    pub fn set_encap_sources(
        &mut self,
        dp: &mut dyn DataPlane,
        encap: EncapSources,
    ) -> Result<(), ApplyError> {
        self.write_config(dp, encap, self.hash_seed)?;
        self.encap = encap;
        Ok(())
    }

    /// Sets the seed of the data plane's flow hash and of the Maglev tables. Call before
    /// `apply`; a changed seed rebuilds every table at the next `apply` (with the old
    /// tables, flows would follow neither seed's placement), and the data plane hashes
    /// with the new seed from this call on.
    pub fn set_hash_seed(&mut self, dp: &mut dyn DataPlane, seed: u32) -> Result<(), ApplyError> {
        if self.written_config.is_some_and(|c| c.hash_seed == seed) {
            return Ok(());
        }
        self.write_config(dp, self.encap, seed)?;
        if seed != self.hash_seed {
            for installed in self.services.values_mut() {
                installed.spec = None;
            }
        }
        self.hash_seed = seed;
        Ok(())
    }

    /// Sets the connection entries' idle timeouts (`conn_table.timeouts`, in the data
    /// plane's ticks). Takes effect at once: the data plane reads them per packet.
    pub fn set_conn_timeouts(
        &mut self,
        dp: &mut dyn DataPlane,
        timeouts: lb_common::ConnTimeoutTicks,
    ) -> Result<(), ApplyError> {
        self.conn_timeouts = timeouts;
        if self.written_config.is_some() {
            self.write_config(dp, self.encap, self.hash_seed)?;
        }
        Ok(())
    }

    /// Sets the per-CPU rate of ICMP "fragmentation needed" / "packet too big" answers
    /// (docs/mtu.md); 0 = the data plane's default. Takes effect at once.
    pub fn set_toobig_rate(&mut self, dp: &mut dyn DataPlane, rate: u32) -> Result<(), ApplyError> {
        self.toobig_per_sec = rate;
        if self.written_config.is_some() {
            self.write_config(dp, self.encap, self.hash_seed)?;
        }
        Ok(())
    }

    /// Writes `XLB_CONFIG` (one record for encapsulation and the seed) if it changed.
    fn write_config(
        &mut self,
        dp: &mut dyn DataPlane,
        encap: EncapSources,
        hash_seed: u32,
    ) -> Result<(), ApplyError> {
        let config = lb_common::Config {
            encap_src_v4: encap.v4.map_or(0, |p| u32::from_ne_bytes(p.addr.octets())),
            encap_src_v6: encap.v6.map_or([0; 4], |p| be_words(IpAddr::V6(p.addr)).0),
            encap_host_v4: encap.v4.map_or(0, |p| p.ip().host_bits()),
            encap_host_v6: encap.v6.map_or(0, |p| p.ip().host_bits()),
            gue_port_be: encap.gue_port.to_be(),
            _pad: [0; 2],
            hash_seed,
            toobig_per_sec: self.toobig_per_sec,
            timeouts: self.conn_timeouts,
        };
        if self.written_config != Some(config) {
            dp.set_config(&config)?;
            self.written_config = Some(config);
        }
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
        maglev::build_seeded(&backends, spec.table_size, self.hash_seed).map_err(|e| {
            ApplyError::Invalid(vec![Invalid {
                path: "services".into(),
                reason: e.to_string(),
            }])
        })
    }

    /// The next id not in `used` (round-robin from the last one given), now in `used`.
    fn free_backend_id(&mut self, used: &mut HashSet<u32>) -> Option<u32> {
        let start = self.next_backend_id.max(1);
        let id = (start..MAX_BACKENDS)
            .chain(1..start)
            .find(|id| !used.contains(id))?;
        self.next_backend_id = id + 1;
        used.insert(id);
        Some(id)
    }

    /// The lowest id neither a known service nor `taken` uses.
    fn free_service_id(&self, taken: &HashSet<u32>) -> Option<u32> {
        let used: HashSet<u32> = self.services.values().map(|i| i.id).collect();
        (1..MAX_SERVICES).find(|id| !used.contains(id) && !taken.contains(id))
    }
}

/// An id space ran out although [`Balancer::make_room`] said the change fits: a bug,
/// reported rather than panicking the daemon.
fn ids_exhausted(what: &str) -> ApplyError {
    ApplyError::Invalid(vec![Invalid {
        path: "services".into(),
        reason: format!(
            "no free {what} id left (please report: the transition check let it through)"
        ),
    }])
}

/// Whether two specs of one service build the same Maglev table.
fn same_table_inputs(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    let inputs = |s: &ServiceSpec| -> Vec<(IpAddr, u32)> {
        s.backends.iter().map(|b| (b.address, b.weight)).collect()
    };
    a.table_size == b.table_size && inputs(a) == inputs(b)
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

/// The ifindex and MAC address of `iface` in this network namespace.
fn resolve_egress(iface: &str) -> Result<(u32, [u8; 6]), String> {
    let ifindex =
        nix::net::if_::if_nametoindex(iface).map_err(|e| format!("no such interface: {e}"))?;
    let mac = interface_mac(iface).ok_or_else(|| "interface has no MAC address".to_owned())?;
    Ok((ifindex, mac))
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

fn backend_record(addr: IpAddr, mac: MacAddr) -> Backend {
    let (words, family) = be_words(addr);
    Backend {
        addr: words,
        family,
        _pad: 0,
        mac: mac.0,
    }
}

const _: () = assert!(lb_common::limits::MAGLEV_SLOTS <= u16::MAX as u32);

#[cfg(test)]
mod tests;
