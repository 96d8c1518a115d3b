//! Service lookup, connection tracking and Maglev backend choice.

use aya_ebpf::bindings::BPF_ANY;
use lb_common::{
    service::{flow_hash, service_flags, vip_filter_slot, MAGLEV_SIZE_SLOT},
    Backend, Conn, FlowKey, Service, Stat, VipAddr, VipKey,
};

use crate::{
    maps::{XLB_BACKENDS, XLB_CONNS, XLB_MAGLEV, XLB_SERVICES, XLB_VIPS, XLB_VIP_FILTER},
    stats,
};

/// The service for (VIP, port, proto): the exact port first, then the VIP's all-ports
/// service (port 0).
#[inline(always)]
pub fn service(flow: &FlowKey) -> Option<Service> {
    if XLB_VIP_FILTER
        .get(vip_filter_slot(&flow.dst))
        .is_none_or(|maybe| *maybe == 0)
    {
        return None;
    }
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

/// Whether `addr` is the VIP of any service (exact; for port-less decisions).
#[inline(always)]
pub fn is_vip(addr: &[u32; 4], family: u8) -> bool {
    if XLB_VIP_FILTER
        .get(vip_filter_slot(addr))
        .is_none_or(|maybe| *maybe == 0)
    {
        return false;
    }
    let key = VipAddr {
        addr: *addr,
        family,
        _pad: [0; 3],
    };
    // SAFETY: only presence is checked.
    unsafe { XLB_VIPS.get(key) }.is_some()
}

/// The backend for this flow: the one recorded in the connection table if it still
/// exists, otherwise the Maglev choice, which is then recorded. A `new_flow` (TCP SYN)
/// skips the table: a new connection always goes where Maglev says now.
#[inline(always)]
pub fn backend(flow: &FlowKey, svc: &Service, len: u64, new_flow: bool) -> Result<Backend, Stat> {
    // SAFETY: LRU values are read by copy right away.
    let known = if new_flow {
        None
    } else {
        unsafe { XLB_CONNS.get(flow) }.copied()
    };
    if let Some(conn) = known {
        if conn.service_id == svc.id {
            if let Some(b) = live_backend(conn.backend_id) {
                stats::count(Stat::ConnHit, len);
                stats::count_forward(svc.id, conn.backend_id, len, false);
                return Ok(b);
            }
        }
    }
    stats::count(Stat::ConnMiss, len);
    let id = maglev(flow, svc).ok_or(Stat::NoBackend)?;
    let backend = live_backend(id).ok_or(Stat::NoBackend)?;
    let conn = Conn {
        backend_id: id,
        service_id: svc.id,
    };
    // A failed insert only costs a second Maglev lookup for the next packet.
    let _ = XLB_CONNS.insert(flow, conn, u64::from(BPF_ANY));
    stats::count_forward(svc.id, id, len, true);
    Ok(backend)
}

#[inline(always)]
fn maglev(flow: &FlowKey, svc: &Service) -> Option<u32> {
    let table = XLB_MAGLEV.get(svc.id)?;
    let m = *table.get(MAGLEV_SIZE_SLOT)?;
    if m == 0 {
        return None;
    }
    let hash = flow_hash(flow, svc.flags & service_flags::SOURCE_AFFINITY != 0);
    let id = *table.get(1 + hash % m)?;
    (id != 0).then_some(id)
}

#[inline(always)]
fn live_backend(id: u32) -> Option<Backend> {
    let b = XLB_BACKENDS.get(id)?;
    (b.family != 0).then_some(*b)
}
