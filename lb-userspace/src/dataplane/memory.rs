//! An in-process data plane: the same tables the kernel program reads, as plain maps,
//! with the kernel port's checks and write semantics (slot generations, the VIP set,
//! the VRRP interface marker). It lets the balancing logic run in `cargo test` without
//! root, and it is what a packet model (tests/src/model.rs) decides packets against.
//!
//! For tests it also
//! - logs every operation ([`MemoryPort::log`]), so an operation sequence can be
//!   replayed into another port ([`replay`]: the differential test against the kernel),
//! - calls an observer after every change a packet could see ([`MemoryPort::observe`]):
//!   a batch of tables goes live one table at a time, as in the kernel, so a test sees
//!   every intermediate state a packet could meet,
//! - fails operations on request ([`MemoryPort::inject`]).

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    fmt,
    rc::Rc,
};

use lb_common::{
    limits::{MAGLEV_SLOTS, MAX_BACKENDS, MAX_MAGLEV_SIZE, MAX_SERVICES, MAX_TX_PORTS},
    service::service_flags,
    Backend, Config, Conn, FlowCounter, FlowKey, Service, ServiceSlot, VipKey, VrrpKey, VrrpRouter,
    VrrpSeen,
};

use super::{
    decap::DecapAllow, vrrp_router_is_valid, AttachMode, AttachedMode, Attachment, BackendStats,
    DataPlane, GlobalStats, PortError, ServiceStats,
};

/// One operation as the memory port received it (a table batch is logged table by
/// table: each is one pointer swap in the kernel too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    SetConfig(Config),
    SetDecapAllowed(DecapAllow),
    SetBackend(u32, Backend),
    Table(u32, Vec<u32>),
    SetService(VipKey, Service),
    RemoveService(VipKey),
    SetTxPort {
        slot: u32,
        ifindex: u32,
        mac: [u8; 6],
    },
    ForgetBackendFlows(Vec<u32>),
    SetVrrpRouter(VrrpKey, Box<VrrpRouter>),
    RemoveVrrpRouter(VrrpKey),
    Attach {
        program: &'static str,
        iface: String,
    },
    DetachAll,
}

impl Op {
    /// The operation's name, as [`Fault::Op`] matches it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::SetConfig(_) => "set_config",
            Op::SetDecapAllowed(_) => "set_decap_allowed",
            Op::SetBackend(..) => "set_backend",
            Op::Table(..) => "swap_tables",
            Op::SetService(..) => "set_service",
            Op::RemoveService(_) => "remove_service",
            Op::SetTxPort { .. } => "set_tx_port",
            Op::ForgetBackendFlows(_) => "forget_backend_flows",
            Op::SetVrrpRouter(..) => "set_vrrp_router",
            Op::RemoveVrrpRouter(_) => "remove_vrrp_router",
            Op::Attach { .. } => "attach",
            Op::DetachAll => "detach_all",
        }
    }
}

/// A failure a test asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The operation after the next `n` succeeds fails (0: the very next one).
    After(usize),
    /// Every operation of this name fails until the fault is cleared.
    Op(&'static str),
}

type Observer = Rc<RefCell<dyn FnMut(&MemoryPort, &Op)>>;

/// The tables of one data plane, in memory.
#[derive(Clone, Default)]
pub struct MemoryPort {
    pub config: Config,
    /// `XLB_DECAP_ALLOW`: what the decap program may unwrap.
    pub decap_allowed: DecapAllow,
    /// Backend records by id (a cleared record has family 0, as in the array map).
    pub backends: HashMap<u32, Backend>,
    /// Live Maglev table per `XLB_MAGLEV` slot (a service reads `Service::table_slot`).
    pub maglev: HashMap<u32, Vec<u32>>,
    pub services: HashMap<VipKey, Service>,
    /// `XLB_SVC_SLOTS`: per service id, its generation and flags.
    pub slots: HashMap<u32, ServiceSlot>,
    /// Egress slot → (ifindex, source MAC).
    pub tx_ports: HashMap<u32, (u32, [u8; 6])>,
    /// The connection table (written by whoever models packets).
    pub conns: HashMap<FlowKey, Conn>,
    /// The unconfirmed-flow table (`XLB_CONNS_NEW`), likewise.
    pub unconfirmed: HashMap<FlowKey, Conn>,
    pub vrrp_routers: HashMap<VrrpKey, VrrpRouter>,
    pub vrrp_seen: HashMap<VrrpKey, VrrpSeen>,
    pub stats: GlobalStats,
    pub service_counters: HashMap<u32, FlowCounter>,
    pub backend_counters: HashMap<u32, FlowCounter>,
    /// Interface → attached program.
    pub attached: BTreeMap<String, &'static str>,
    /// Every operation that succeeded, in order.
    pub log: Vec<Op>,
    fault: Option<Fault>,
    observer: Option<Observer>,
}

impl fmt::Debug for MemoryPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryPort")
            .field("services", &self.services.len())
            .field("backends", &self.backends.len())
            .field("tables", &self.maglev.len())
            .field("conns", &self.conns.len())
            .field("ops", &self.log.len())
            .field("fault", &self.fault)
            .finish_non_exhaustive()
    }
}

fn refused(op: &'static str, reason: impl Into<String>) -> PortError {
    PortError::Refused {
        op,
        reason: reason.into(),
    }
}

impl MemoryPort {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `f` after every change a packet could observe, with the port as it is then.
    pub fn observe(&mut self, f: impl FnMut(&MemoryPort, &Op) + 'static) {
        self.observer = Some(Rc::new(RefCell::new(f)));
    }

    /// Makes operations fail as `fault` says (`None` clears it).
    pub fn inject(&mut self, fault: Option<Fault>) {
        self.fault = fault;
    }

    /// Service `id` as an established flow finds it: from its live slot (flags, mode,
    /// egress, table slot), without the entry, as the data plane does.
    pub fn slot_service(&self, id: u32) -> Option<Service> {
        let slot = self.slots.get(&id).filter(|s| s.is_live())?;
        Some(Service {
            id,
            flags: slot.flags(),
            mode: slot.mode(),
            tx_port: slot.tx_port(),
            // Below MAGLEV_SLOTS, which fits a u16.
            table: slot.table_slot(id) as u16,
            // The slot has no VLAN: established flows keep theirs in the flow key.
            ..Default::default()
        })
    }

    /// The live slot generation of service `id` (what connection entries must match).
    pub fn generation(&self, id: u32) -> Option<u32> {
        self.slots
            .get(&id)
            .filter(|s| s.is_live())
            .map(|s| s.generation())
    }

    /// Backend `id`'s record, if live (family set).
    pub fn live_backend(&self, id: u32) -> Option<Backend> {
        self.backends.get(&id).copied().filter(|b| b.family != 0)
    }

    /// The service a packet to `key` matches: exact, then the VIP's all-ports service.
    pub fn lookup(&self, key: &VipKey) -> Option<Service> {
        self.services.get(key).copied().or_else(|| {
            let all = VipKey { port_be: 0, ..*key };
            self.services.get(&all).copied()
        })
    }

    /// Whether any service uses this address (the VIP set).
    pub fn is_vip(&self, addr: &[u32; 4], family: u8) -> bool {
        self.services
            .keys()
            .any(|k| k.addr == *addr && k.family == family)
    }

    /// Whether every service on this address is standby (the VIP set's standby bit).
    pub fn all_standby(&self, addr: &[u32; 4], family: u8) -> bool {
        self.services
            .iter()
            .filter(|(k, _)| k.addr == *addr && k.family == family)
            .all(|(_, s)| s.flags & service_flags::STANDBY != 0)
    }

    /// Fails the operation if a fault says so; consumes a one-shot fault.
    fn check_fault(&mut self, op: &'static str) -> Result<(), PortError> {
        match &mut self.fault {
            Some(Fault::After(0)) => {
                self.fault = None;
                Err(refused(op, "injected failure"))
            }
            Some(Fault::After(n)) => {
                *n -= 1;
                Ok(())
            }
            Some(Fault::Op(name)) if *name == op => Err(refused(op, "injected failure")),
            _ => Ok(()),
        }
    }

    /// Records a successful change and lets the observer see the new state.
    fn done(&mut self, op: Op) {
        if let Some(observer) = self.observer.clone() {
            (observer.borrow_mut())(self, &op);
        }
        self.log.push(op);
    }
}

fn check_service_id(op: &'static str, id: u32) -> Result<(), PortError> {
    if id == 0 || id >= MAX_SERVICES {
        return Err(refused(
            op,
            format!("service id {id} is out of range 1..{MAX_SERVICES}"),
        ));
    }
    Ok(())
}

impl DataPlane for MemoryPort {
    fn set_config(&mut self, config: &Config) -> Result<(), PortError> {
        self.check_fault("set_config")?;
        self.config = *config;
        self.done(Op::SetConfig(*config));
        Ok(())
    }

    fn set_decap_allowed(&mut self, allow: &DecapAllow) -> Result<(), PortError> {
        self.check_fault("set_decap_allowed")?;
        self.decap_allowed.clone_from(allow);
        self.done(Op::SetDecapAllowed(allow.clone()));
        Ok(())
    }

    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), PortError> {
        self.check_fault("set_backend")?;
        if id == 0 || id >= MAX_BACKENDS {
            return Err(refused(
                "set_backend",
                format!("backend id {id} is out of range 1..{MAX_BACKENDS}"),
            ));
        }
        self.backends.insert(id, *backend);
        self.done(Op::SetBackend(id, *backend));
        Ok(())
    }

    fn swap_tables(&mut self, tables: &[(u32, Vec<u32>)]) -> Result<(), PortError> {
        self.check_fault("swap_tables")?;
        // Like the kernel port, every table is checked (and built) before any goes live.
        for (slot, table) in tables {
            if *slot == 0 || *slot >= MAGLEV_SLOTS {
                return Err(refused(
                    "swap_tables",
                    format!("table slot {slot} is out of range 1..{MAGLEV_SLOTS}"),
                ));
            }
            if table.is_empty() || table.len() > MAX_MAGLEV_SIZE as usize {
                return Err(refused(
                    "swap_tables",
                    format!(
                        "table of {} entries: must be 1..={MAX_MAGLEV_SIZE}",
                        table.len()
                    ),
                ));
            }
        }
        for (id, table) in tables {
            // A batch can fail part way in the kernel too (each table is its own map
            // update): the tables before the failure stay live.
            self.check_fault("swap_tables")?;
            self.maglev.insert(*id, table.clone());
            self.done(Op::Table(*id, table.clone()));
        }
        Ok(())
    }

    fn set_service(&mut self, key: &VipKey, service: &Service) -> Result<(), PortError> {
        self.check_fault("set_service")?;
        check_service_id("set_service", service.id)?;
        let same = self
            .services
            .get(key)
            .is_some_and(|old| old.id == service.id);
        let slot = self.slots.get(&service.id).copied().unwrap_or_default();
        // The kernel port's rule: same key and id keep the generation; anything else
        // starts a new one, orphaning the id's previous connection entries.
        let generation = if same && slot.is_live() {
            slot.generation()
        } else {
            slot.generation().wrapping_add(1).max(1)
        };
        self.slots
            .insert(service.id, ServiceSlot::new(generation, service));
        self.services.insert(*key, *service);
        self.done(Op::SetService(*key, *service));
        Ok(())
    }

    fn remove_service(&mut self, key: &VipKey) -> Result<(), PortError> {
        self.check_fault("remove_service")?;
        let old = self
            .services
            .remove(key)
            .ok_or_else(|| refused("remove_service", "no such service"))?;
        if let Some(slot) = self.slots.get_mut(&old.id) {
            *slot = slot.retired();
        }
        self.done(Op::RemoveService(*key));
        Ok(())
    }

    fn set_tx_port(&mut self, slot: u32, ifindex: u32, mac: [u8; 6]) -> Result<(), PortError> {
        self.check_fault("set_tx_port")?;
        if slot >= MAX_TX_PORTS {
            return Err(refused("set_tx_port", format!("slot {slot} out of range")));
        }
        self.tx_ports.insert(slot, (ifindex, mac));
        self.done(Op::SetTxPort { slot, ifindex, mac });
        Ok(())
    }

    fn forget_backend_flows(&mut self, ids: &[u32]) -> Result<usize, PortError> {
        self.check_fault("forget_backend_flows")?;
        let before = self.conns.len() + self.unconfirmed.len();
        self.conns.retain(|_, c| !ids.contains(&c.backend_id));
        self.unconfirmed.retain(|_, c| !ids.contains(&c.backend_id));
        let gone = before - self.conns.len() - self.unconfirmed.len();
        self.done(Op::ForgetBackendFlows(ids.to_vec()));
        Ok(gone)
    }

    fn set_vrrp_router(&mut self, key: &VrrpKey, router: &VrrpRouter) -> Result<(), PortError> {
        self.check_fault("set_vrrp_router")?;
        if !vrrp_router_is_valid(key, router) {
            return Err(refused(
                "set_vrrp_router",
                format!("invalid router {key:?}"),
            ));
        }
        self.vrrp_routers.insert(*key, *router);
        self.vrrp_routers
            .insert(VrrpKey::marker(key.ifindex), VrrpRouter::default());
        self.done(Op::SetVrrpRouter(*key, Box::new(*router)));
        Ok(())
    }

    fn remove_vrrp_router(&mut self, key: &VrrpKey) -> Result<(), PortError> {
        self.check_fault("remove_vrrp_router")?;
        self.vrrp_routers.remove(key);
        let last = !self
            .vrrp_routers
            .keys()
            .any(|k| k.ifindex == key.ifindex && !k.is_marker());
        if last {
            self.vrrp_routers.remove(&VrrpKey::marker(key.ifindex));
        }
        self.vrrp_seen.remove(key);
        self.done(Op::RemoveVrrpRouter(*key));
        Ok(())
    }

    fn vrrp_seen(&self) -> Result<Vec<(VrrpKey, VrrpSeen)>, PortError> {
        Ok(self.vrrp_seen.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn global_stats(&self) -> Result<GlobalStats, PortError> {
        Ok(self.stats)
    }

    fn flows(&self) -> Result<(Vec<ServiceStats>, Vec<BackendStats>), PortError> {
        let mut services: Vec<ServiceStats> = self
            .services
            .iter()
            .map(|(key, svc)| ServiceStats {
                key: *key,
                id: svc.id,
                table: svc.table_slot(),
                counter: self
                    .service_counters
                    .get(&svc.id)
                    .copied()
                    .unwrap_or_default(),
            })
            .collect();
        services.sort_by_key(|s| s.id);
        let mut backends: Vec<BackendStats> = self
            .backends
            .iter()
            .filter(|(id, b)| **id != 0 && b.family != 0)
            .map(|(id, backend)| BackendStats {
                id: *id,
                backend: *backend,
                counter: self.backend_counters.get(id).copied().unwrap_or_default(),
            })
            .collect();
        backends.sort_by_key(|b| b.id);
        Ok((services, backends))
    }

    fn attach(
        &mut self,
        program: &'static str,
        iface: &str,
        _mode: AttachMode,
    ) -> Result<Attachment, PortError> {
        self.check_fault("attach")?;
        let adopted = self.attached.insert(iface.to_owned(), program).is_some();
        self.done(Op::Attach {
            program,
            iface: iface.to_owned(),
        });
        Ok(Attachment {
            iface: iface.to_owned(),
            program,
            mode: if adopted {
                AttachedMode::Adopted
            } else {
                AttachedMode::Native
            },
            pin_path: std::path::PathBuf::new(),
            adopted,
        })
    }

    fn conn_table(&self) -> Result<super::ConnTableUse, PortError> {
        // Unbounded here; the compiled default is what a kernel table would have.
        Ok(super::ConnTableUse {
            capacity: lb_common::limits::MAX_CONNS,
            lru: super::LruKind::default(),
            memory_bytes: None,
            flows: Some(self.conns.len() as u64),
            counted_age: Some(std::time::Duration::ZERO),
            expired: None,
            unconfirmed_capacity: lb_common::limits::MAX_NEW_CONNS,
            unconfirmed_memory_bytes: None,
        })
    }

    fn detach_all(&mut self) -> Result<(), PortError> {
        self.check_fault("detach_all")?;
        *self = MemoryPort {
            log: std::mem::take(&mut self.log),
            observer: self.observer.take(),
            ..MemoryPort::default()
        };
        self.done(Op::DetachAll);
        Ok(())
    }
}

/// Performs `ops` (a memory port's [`MemoryPort::log`]) on `dp`, in order; consecutive
/// tables go live as one batch, as the control plane sent them.
pub fn replay(ops: &[Op], dp: &mut dyn DataPlane) -> Result<(), PortError> {
    let mut i = 0;
    while i < ops.len() {
        match &ops[i] {
            Op::Table(..) => {
                let mut batch = Vec::new();
                while let Some(Op::Table(id, table)) = ops.get(i) {
                    batch.push((*id, table.clone()));
                    i += 1;
                }
                dp.swap_tables(&batch)?;
                continue;
            }
            Op::SetConfig(c) => dp.set_config(c)?,
            Op::SetDecapAllowed(e) => dp.set_decap_allowed(e)?,
            Op::SetBackend(id, b) => dp.set_backend(*id, b)?,
            Op::SetService(k, s) => dp.set_service(k, s)?,
            Op::RemoveService(k) => dp.remove_service(k)?,
            Op::SetTxPort { slot, ifindex, mac } => dp.set_tx_port(*slot, *ifindex, *mac)?,
            Op::ForgetBackendFlows(ids) => {
                dp.forget_backend_flows(ids)?;
            }
            Op::SetVrrpRouter(k, r) => dp.set_vrrp_router(k, r)?,
            Op::RemoveVrrpRouter(k) => dp.remove_vrrp_router(k)?,
            Op::Attach { program, iface } => {
                dp.attach(program, iface, AttachMode::Auto)?;
            }
            Op::DetachAll => dp.detach_all()?,
        }
        i += 1;
    }
    Ok(())
}
