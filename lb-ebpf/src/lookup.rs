//! Service lookup, connection tracking and Maglev backend choice.

use aya_ebpf::{bindings::BPF_ANY, helpers::generated::bpf_ktime_get_coarse_ns};
use lb_common::{
    service::{
        conn_flags, expired, flow_hash_seeded, service_flags, vip_filter_slot, CONN_TICK_SHIFT,
        MAGLEV_SIZE_SLOT, VIP_STANDBY,
    },
    Backend, Conn, ConnTimeoutTicks, FlowKey, Service, ServiceSlot, Stat, VipAddr, VipKey,
};

use crate::{
    maps::{
        XLB_BACKENDS, XLB_CONFIG, XLB_CONNS, XLB_CONNS_NEW, XLB_MAGLEV, XLB_SERVICES,
        XLB_SVC_SLOTS, XLB_VIPS, XLB_VIP_FILTER,
    },
    stats,
};

/// What an address is to the balancer, for decisions that have no port (ICMP echo).
pub enum Vip {
    /// No service uses the address.
    No,
    /// Every service on the address is STANDBY (a VRRP peer holds the VIP): this host
    /// does not answer for it.
    Standby,
    /// At least one active service uses the address.
    Active,
}

/// The backend [`backend`] chose, with what [`crate::stats::count_forward`] needs once
/// the packet is actually sent.
pub struct Choice {
    pub backend: Backend,
    pub backend_id: u32,
    /// Chosen by Maglev (connection-table miss) rather than remembered.
    pub new: bool,
    /// The flow's 5-tuple hash ([`Conn::flow_hash`]): remembered for known flows,
    /// computed once for new ones; the tunnel headers' entropy.
    pub flow_hash: u32,
}

/// Whether some service may use `addr`: a direct-indexed array read (inlined by the
/// verifier), so traffic to other addresses, most of what an edge host sees, pays no
/// hash lookup at all.
#[inline(always)]
pub fn maybe_vip(addr: &[u32; 4]) -> bool {
    XLB_VIP_FILTER
        .get(vip_filter_slot(addr))
        .is_some_and(|maybe| *maybe != 0)
}

/// When a packet is seen and what it says of its flow's life.
#[derive(Clone, Copy)]
pub struct Moment {
    /// Now, in [`CONN_TICK_SHIFT`] ticks of the coarse monotonic clock (a jiffy
    /// read: no clock source access).
    now: u32,
    /// A TCP FIN or RST: the entry is closing from now on.
    closing: bool,
}

impl Moment {
    #[inline(always)]
    pub fn now(closing: bool) -> Self {
        // SAFETY: a helper without arguments.
        let ns = unsafe { bpf_ktime_get_coarse_ns() };
        Self {
            now: (ns >> CONN_TICK_SHIFT) as u32,
            closing,
        }
    }

    /// Whether `conn` (an entry of a flow of `proto`) still pins its flow. An entry
    /// stamped this tick is fresh whatever the timeouts, so they are read (one array
    /// load) only for an entry that has been idle a tick or more.
    #[inline(always)]
    fn fresh(&self, conn: &Conn, proto: u8) -> bool {
        conn.seen == self.now || {
            let timeouts = XLB_CONFIG
                .get(0)
                .map_or(ConnTimeoutTicks::default(), |c| c.timeouts);
            !expired(conn.seen, self.now, timeouts.for_entry(proto, conn.flags))
        }
    }

    /// An entry's flags once this packet is counted in.
    #[inline(always)]
    fn flags(&self, flags: u32) -> u32 {
        if self.closing {
            flags | conn_flags::CLOSING
        } else {
            flags
        }
    }
}

/// The flow's connection-table entry, if it has one that has not expired. The entry
/// is refreshed in place (no map update): its `seen` tick is written when it moved,
/// about once a second per flow, and the closing flag when a FIN or RST first shows.
/// A packet of a busy flow (stamped this tick, not closing) pays one compare.
#[inline(always)]
pub fn conn(flow: &FlowKey, at: &Moment) -> Option<Conn> {
    let entry = XLB_CONNS.get_ptr_mut(flow)?;
    // SAFETY: `entry` points into the map's value, read by copy right away.
    let conn = unsafe { *entry };
    if conn.seen == at.now && !at.closing {
        return Some(conn);
    }
    if !at.fresh(&conn, flow.proto) {
        return None;
    }
    // SAFETY: as above; a racing CPU writes the same values (or a tick apart).
    unsafe {
        (*entry).seen = at.now;
        (*entry).flags = at.flags(conn.flags);
    }
    Some(conn)
}

/// `entry` with every byte defined: always `Some`, a miss as the zeroed entry, which
/// matches nothing (service ids are 1-based and slot 0 is never live, so neither
/// [`conn_service`] nor [`backend`] accepts it). A `None` leaves the entry's bytes
/// undefined, which the verifier refuses once LLVM compares them ahead of the test.
#[inline(always)]
#[expect(
    clippy::unnecessary_wraps,
    reason = "the callers take an Option; the point is that it is always Some, fully defined"
)]
pub fn defined(entry: Option<Conn>) -> Option<Conn> {
    Some(entry.unwrap_or_default())
}

/// The service a connection entry names, if the id still means the service the flow
/// was pinned under (same generation, still live): the established-flow path, which
/// skips the `XLB_SERVICES` hash.
///
/// Returns the service with its slot generation (what [`backend`] checks entries
/// against and records in new ones).
#[inline(always)]
pub fn conn_service(conn: &Conn) -> Option<(Service, u32)> {
    let slot = service_slot(conn.service_id)?;
    let svc = Service {
        id: conn.service_id,
        flags: slot.flags(),
        mode: slot.mode(),
        tx_port: slot.tx_port(),
        // Below MAGLEV_SLOTS, which fits a u16.
        table: slot.table_slot(conn.service_id) as u16,
        // Not checked for established flows: their key holds the VLAN.
        vlan: 0,
    };
    (slot.generation() == conn.service_gen).then_some((svc, slot.generation()))
}

/// Service `id`'s current slot generation, for a service found by the hash lookup: 0
/// for a slot not live yet, which no established-flow lookup ever accepts.
#[inline(always)]
pub fn generation(id: u32) -> u32 {
    service_slot(id).map_or(0, ServiceSlot::generation)
}

/// The live slot of service `id`, read with one 8-byte load: userspace replaces a slot
/// with one atomic store, so the load sees either the old or the new value whole.
#[inline(always)]
fn service_slot(id: u32) -> Option<ServiceSlot> {
    let slot = XLB_SVC_SLOTS.get_ptr(id)?;
    // SAFETY: `get_ptr` returned an in-bounds, aligned pointer into the array.
    let slot = ServiceSlot(unsafe { core::ptr::read_volatile(slot.cast::<u64>()) });
    slot.is_live().then_some(slot)
}

/// The service for (VIP, port, proto): the exact port first, then the VIP's all-ports
/// service (port 0). The caller has checked [`maybe_vip`].
#[inline(always)]
pub fn service(flow: &FlowKey) -> Option<Service> {
    let mut key = VipKey {
        addr: flow.dst,
        port_be: flow.dport_be,
        proto: flow.proto,
        family: flow.family,
    };
    // SAFETY: hash-map values are read by copy right away.
    if let Some(s) = unsafe { XLB_SERVICES.get(key) } {
        return Some(*s);
    }
    key.port_be = 0;
    unsafe { XLB_SERVICES.get(key) }.copied()
}

/// Whether `addr` is the VIP of any service (exact; for port-less decisions), and
/// whether it is standby here (the control plane sets [`VIP_STANDBY`] in the `XLB_VIPS`
/// value when every service on the address is STANDBY).
#[inline(always)]
pub fn vip(addr: &[u32; 4], family: u8) -> Vip {
    if !maybe_vip(addr) {
        return Vip::No;
    }
    let key = VipAddr {
        addr: *addr,
        family,
        _pad: [0; 3],
    };
    // SAFETY: hash-map values are read by copy right away.
    match unsafe { XLB_VIPS.get(key) }.copied() {
        None => Vip::No,
        Some(v) if v & VIP_STANDBY != 0 => Vip::Standby,
        Some(_) => Vip::Active,
    }
}

/// What a packet shows of its flow, which decides what the connection table learns
/// from it (its admission, docs/robustness.md).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A TCP SYN: a flow that may never exist (a spoofed source never completes the
    /// handshake). It takes the current Maglev choice, remembered as unconfirmed only.
    Opening,
    /// An ICMP error about a flow: it proves nothing about the flow and is forwarded
    /// where the flow goes, learning nothing.
    Error,
    /// Any other packet: if the flow's first packet left an unconfirmed entry, this one
    /// confirms it; otherwise it is the flow's first packet here.
    Continuing,
}

/// The backend for this flow: the one recorded in its connection entry (`known`,
/// looked up by the caller) if that entry belongs to this service at `service_gen` and
/// the backend still exists; else, for a [`Evidence::Continuing`] packet, the one its
/// unconfirmed entry records, which this packet confirms (moves into `XLB_CONNS`);
/// otherwise the Maglev choice, remembered as unconfirmed. An [`Evidence::Opening`]
/// packet (TCP SYN) arrives with no `known` entry: a new connection always goes where
/// Maglev says now.
///
/// Counts `conn_hit` / `conn_miss` (and `conn_confirmed`) only: the per-service and
/// per-backend counters (forwarded packets, new flows) are the caller's, once the packet
/// is actually sent ([`crate::stats::count_forward`]), so a packet dropped after the
/// choice (`no_tx_port`, `encap_error`, `encap_too_big`) is not counted as forwarded.
/// Entries, however, are written here, before those steps: a dropped packet still
/// records its flow's choice, which is harmless (the next packet of the flow would get
/// the same Maglev choice) and saves a second lookup then.
#[inline(always)]
pub fn backend(
    flow: &FlowKey,
    svc: &Service,
    service_gen: u32,
    known: Option<Conn>,
    evidence: Evidence,
    at: &Moment,
    len: u64,
) -> Result<Choice, Stat> {
    if let Some(choice) = known.and_then(|conn| remembered(&conn, svc, service_gen)) {
        stats::count(Stat::ConnHit, len);
        return Ok(choice);
    }
    if evidence == Evidence::Continuing {
        // Read inside the `Some` branch rather than copied into an `Option`: a `None`
        // would leave the entry's bytes undefined, and LLVM compares them before the
        // test, which the verifier refuses in the tagged copies (docs/vlans.md).
        // SAFETY: LRU values are read by copy right away.
        let unconfirmed = unsafe { XLB_CONNS_NEW.get(flow) };
        if let Some(&entry) = unconfirmed {
            let mut conn = entry;
            let choice = if at.fresh(&conn, flow.proto) {
                remembered(&conn, svc, service_gen)
            } else {
                None
            };
            if let Some(choice) = choice {
                conn.seen = at.now;
                conn.flags = at.flags(conn.flags);
                // A failed insert leaves the flow unconfirmed: its next packet retries.
                if XLB_CONNS.insert(flow, conn, u64::from(BPF_ANY)).is_ok() {
                    // One entry per flow: a copy left behind would outlive the
                    // confirmed entry's expiry and pin the flow again.
                    let _ = XLB_CONNS_NEW.remove(flow);
                }
                stats::count(Stat::ConnHit, len);
                stats::count(Stat::ConnConfirmed, len);
                return Ok(choice);
            }
        }
    }
    if evidence == Evidence::Opening {
        // A SYN on the 4-tuple of an earlier connection (a client reusing its port)
        // opens a new one: the old entry must not catch its handshake's ACK. Looked up
        // first: a delete takes the bucket's lock (with interrupts off) even for a key
        // that is not there, which is every SYN of a flood, and profiled as costly as
        // the rest of the SYN's path; the lookup takes no lock.
        if XLB_CONNS.get_ptr(flow).is_some() {
            let _ = XLB_CONNS.remove(flow);
        }
    }
    stats::count(Stat::ConnMiss, len);
    // New flows only (known ones never get here): one array load, inlined by the
    // verifier.
    let seed = XLB_CONFIG.get(0).map_or(0, |c| c.hash_seed);
    let flow_hash = flow_hash_seeded(flow, false, seed);
    let id = maglev(flow, svc, seed, flow_hash).ok_or(Stat::NoBackend)?;
    let backend = live_backend(id).ok_or(Stat::NoBackend)?;
    if evidence != Evidence::Error {
        let conn = Conn {
            backend_id: id,
            service_id: svc.id,
            service_gen,
            flow_hash,
            seen: at.now,
            flags: at.flags(0),
        };
        // A failed insert only costs a second Maglev lookup for the next packet.
        let _ = XLB_CONNS_NEW.insert(flow, conn, u64::from(BPF_ANY));
    }
    Ok(Choice {
        backend,
        backend_id: id,
        new: true,
        flow_hash,
    })
}

/// The choice an entry records, if it belongs to this service at `service_gen` and its
/// backend still exists.
#[inline(always)]
fn remembered(conn: &Conn, svc: &Service, service_gen: u32) -> Option<Choice> {
    if conn.service_id != svc.id || conn.service_gen != service_gen {
        return None;
    }
    let backend = live_backend(conn.backend_id)?;
    Some(Choice {
        backend,
        backend_id: conn.backend_id,
        new: false,
        flow_hash: conn.flow_hash,
    })
}

/// `flow_hash` is the flow's 5-tuple hash; a source-affinity service hashes the source
/// alone (a second hash, for those services only).
#[inline(always)]
fn maglev(flow: &FlowKey, svc: &Service, seed: u32, flow_hash: u32) -> Option<u32> {
    let table = XLB_MAGLEV.get(svc.table_slot())?;
    let m = *table.get(MAGLEV_SIZE_SLOT)?;
    if m == 0 {
        return None;
    }
    let hash = if svc.flags & service_flags::SOURCE_AFFINITY != 0 {
        flow_hash_seeded(flow, true, seed)
    } else {
        flow_hash
    };
    let id = *table.get(1 + hash % m)?;
    (id != 0).then_some(id)
}

#[inline(always)]
fn live_backend(id: u32) -> Option<Backend> {
    let b: *const Backend = XLB_BACKENDS.get_ptr(id)?;
    // Family and next-hop MAC in one 8-byte load: the control plane replaces that word
    // with one atomic store when a learned MAC changes (map values are 8-byte aligned).
    // SAFETY: `b` points into the map value, which is at least 24 bytes long.
    let word = unsafe {
        core::ptr::read_volatile(b.cast::<u8>().add(Backend::HOP_WORD_OFFSET).cast::<u64>())
    };
    // SAFETY: as above.
    let backend = Backend::with_hop_word(unsafe { (*b).addr }, word);
    (backend.family != 0).then_some(backend)
}
