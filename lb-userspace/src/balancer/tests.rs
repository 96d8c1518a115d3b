//! The balancing logic over the in-memory port: id allocation and reuse across
//! arbitrary reload sequences (property tests), and the transitions that need room.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
};

use lb_common::{Conn, FlowKey};
use proptest::prelude::*;

use super::*;
use crate::{
    config::{BackendSpec, Mode, Protocol},
    dataplane::memory::{MemoryPort, Op},
};

const TABLE: u32 = 251;

/// Backend `n` of address pool `pool` (pools are disjoint: switching pools renumbers).
fn addr(pool: u8, n: u16) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 100 + pool, (n >> 8) as u8, n as u8))
}

fn mac_of(a: IpAddr) -> MacAddr {
    match a {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            MacAddr([2, 0, o[0], o[1], o[2], o[3]])
        }
        IpAddr::V6(_) => MacAddr([2, 0, 0, 0, 0, 1]),
    }
}

fn service(vip: u8, port: u16, backends: &[(IpAddr, u32)], table_size: u32) -> ServiceSpec {
    let backends = backends
        .iter()
        .map(|&(a, w)| BackendSpec::new(a, mac_of(a), w))
        .collect();
    ServiceSpec {
        table_size,
        ..ServiceSpec::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, vip)),
            Some(port),
            Protocol::Tcp,
            Mode::Dsr,
            backends,
        )
    }
}

/// One reload: up to 6 services on 3 VIPs × 2 ports, each with up to 24 backends of
/// one pool (weights 0..=3: 0 is drained).
fn config() -> impl Strategy<Value = Vec<ServiceSpec>> {
    let svc = (
        0u8..3,
        prop::bool::ANY,
        0u8..2,
        prop::collection::btree_map(0u16..40, 0u32..4, 0..24),
    );
    prop::collection::vec(svc, 0..6).prop_map(|rows| {
        let mut seen = HashSet::new();
        rows.into_iter()
            .filter(|(vip, tls, _, _)| seen.insert((*vip, *tls)))
            .map(|(vip, tls, pool, backends)| {
                let backends: Vec<(IpAddr, u32)> = backends
                    .into_iter()
                    .map(|(n, w)| (addr(pool, n), w))
                    .collect();
                service(vip + 1, if tls { 443 } else { 80 }, &backends, TABLE)
            })
            .collect()
    })
}

/// A connection entry per backend id in use, so a test sees which ones are forgotten.
fn pin_a_flow_to_every_backend(port: &mut MemoryPort, ids: &BTreeMap<IpAddr, u32>) {
    for (i, id) in ids.values().enumerate() {
        let key = FlowKey {
            src: [i as u32, 0, 0, 0],
            sport_be: 1,
            ..FlowKey::default()
        };
        let conn = Conn {
            backend_id: *id,
            service_id: 1,
            service_gen: 1,
            flow_hash: 0,
            ..Conn::default()
        };
        port.conns.insert(key, conn);
    }
}

/// Everything `apply(specs)` must leave behind, given the ids and generations before.
fn check(
    port: &MemoryPort,
    balancer: &Balancer,
    specs: &[ServiceSpec],
    ids_before: &BTreeMap<IpAddr, u32>,
    generations_before: &HashMap<VipKey, (u32, u32)>,
) -> Result<(), TestCaseError> {
    let ids = &balancer.backend_ids;
    let wanted: HashSet<IpAddr> = specs
        .iter()
        .flat_map(|s| s.backends.iter().map(|b| b.address))
        .collect();
    // Exactly the wanted backends have ids, all distinct, each with its own record.
    prop_assert_eq!(ids.keys().copied().collect::<HashSet<_>>(), wanted.clone());
    let distinct: HashSet<u32> = ids.values().copied().collect();
    prop_assert_eq!(distinct.len(), ids.len());
    for (a, id) in ids {
        prop_assert!((1..MAX_BACKENDS).contains(id));
        let record = port.live_backend(*id).expect("a live record for every id");
        prop_assert_eq!(ip_from_words(record.addr, record.family), Some(*a));
        prop_assert_eq!(record.mac, mac_of(*a).0);
        // A backend that stays keeps its id (its established flows stay with it).
        if let Some(before) = ids_before.get(a) {
            prop_assert_eq!(before, id, "{} was renumbered", a);
        }
    }
    // No other id has a live record, and no flow still names a freed id.
    for (id, b) in &port.backends {
        if b.family != 0 {
            prop_assert!(distinct.contains(id), "stale record for id {}", id);
        }
    }
    for conn in port.conns.values() {
        prop_assert!(
            distinct.contains(&conn.backend_id),
            "a flow names freed id {}",
            conn.backend_id
        );
    }
    // Exactly the wanted services, each with a live table of its own backends.
    let keys: HashSet<VipKey> = specs.iter().map(vip_key).collect();
    prop_assert_eq!(port.services.keys().copied().collect::<HashSet<_>>(), keys);
    let service_ids: HashSet<u32> = port.services.values().map(|s| s.id).collect();
    prop_assert_eq!(service_ids.len(), specs.len());
    for spec in specs {
        let svc = port.services[&vip_key(spec)];
        let table = &port.maglev[&svc.table_slot()];
        prop_assert_eq!(table.len(), spec.table_size as usize);
        let weighted: HashSet<u32> = spec
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .map(|b| ids[&b.address])
            .collect();
        let named: HashSet<u32> = table.iter().copied().filter(|id| *id != 0).collect();
        prop_assert_eq!(named, weighted, "table of {}", describe(spec));
        // Same key and id: the same service, so its flows keep their generation.
        let generation = port.generation(svc.id).expect("live slot");
        if let Some((id, gen)) = generations_before.get(&vip_key(spec)) {
            prop_assert_eq!(*id, svc.id);
            prop_assert_eq!(*gen, generation);
        }
    }
    Ok(())
}

fn describe(spec: &ServiceSpec) -> String {
    crate::dataplane::addr::describe_vip(&vip_key(spec))
}

fn generations(port: &MemoryPort) -> HashMap<VipKey, (u32, u32)> {
    port.services
        .iter()
        .map(|(k, s)| (*k, (s.id, port.generation(s.id).unwrap())))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn reload_sequences_keep_ids_stable_and_free_them_cleanly(
        reloads in prop::collection::vec(config(), 1..8)
    ) {
        let mut port = MemoryPort::new();
        let mut balancer = Balancer::default();
        for specs in &reloads {
            let ids_before = balancer.backend_ids.clone();
            let generations_before = generations(&port);
            pin_a_flow_to_every_backend(&mut port, &ids_before);
            balancer.apply(&mut port, specs).unwrap();
            check(&port, &balancer, specs, &ids_before, &generations_before)?;
        }
    }

    /// Whatever the sequence, a daemon that restarts (adopting what the last one left
    /// in the data plane) keeps every id and generation through the same config.
    #[test]
    fn a_restart_adopts_every_id(reloads in prop::collection::vec(config(), 1..5)) {
        let mut port = MemoryPort::new();
        let mut balancer = Balancer::default();
        for specs in &reloads {
            balancer.apply(&mut port, specs).unwrap();
        }
        let last = reloads.last().unwrap();
        let ids_before = balancer.backend_ids.clone();
        let generations_before = generations(&port);
        let mut adopted = Balancer::adopt(&port).unwrap();
        prop_assert_eq!(&adopted.backend_ids, &ids_before);
        adopted.apply(&mut port, last).unwrap();
        check(&port, &adopted, last, &ids_before, &generations_before)?;
    }
}

/// Issue 14, item 4: new ids were handed out before unused ones were freed, so a valid
/// reload that replaces most backends ran out of ids half-way and panicked the daemon
/// (`expect("validated below MAX_BACKENDS")`). 9,000 backends in 9 services replaced by
/// 9,000 new ones: the old and new sets do not fit side by side (18,000 > 16,383), but
/// each service's old backends are named only by its own table.
#[test]
fn replacing_9000_backends_in_one_reload_fits() {
    let sets = |pool: u8| -> Vec<ServiceSpec> {
        (0..9u16)
            .map(|s| {
                let backends: Vec<(IpAddr, u32)> =
                    (0..1000).map(|n| (addr(pool, s * 1000 + n), 1)).collect();
                service(1, 1000 + s, &backends, 2003)
            })
            .collect()
    };
    let mut port = MemoryPort::new();
    let mut balancer = Balancer::default();
    balancer.apply(&mut port, &sets(0)).unwrap();
    let generations_before = generations(&port);
    let ids_before = balancer.backend_ids.clone();
    // The new set on other ports: every old service leaves, every new one is new.
    let new: Vec<ServiceSpec> = sets(1)
        .into_iter()
        .map(|mut s| {
            s.port = s.port.map(|p| p + 100);
            s
        })
        .collect();
    let report = balancer.apply(&mut port, &new).unwrap();
    assert_eq!(report.backends_added, 9000);
    assert_eq!(report.backends_removed, 9000);
    assert_eq!(report.services_removed, 9);
    check(&port, &balancer, &new, &ids_before, &generations_before).unwrap();
}

/// The same 9,000 backends replaced inside the services that stay: each old table
/// names its backends until the new one is live, so the change cannot be made
/// atomically. It is refused whole, with the reason, and nothing changes.
#[test]
fn a_transition_that_cannot_fit_is_refused_whole() {
    let one = |pool: u8| -> Vec<ServiceSpec> {
        let backends: Vec<(IpAddr, u32)> = (0..9000).map(|n| (addr(pool, n), 1)).collect();
        vec![service(1, 80, &backends, 65537)]
    };
    let mut port = MemoryPort::new();
    let mut balancer = Balancer::default();
    balancer.apply(&mut port, &one(0)).unwrap();
    let ops = port.log.len();
    let err = balancer.apply(&mut port, &one(1)).unwrap_err().to_string();
    assert!(
        err.contains("services: this change needs 9000 new backend ids while 9000 stay"),
        "{err}"
    );
    assert_eq!(
        port.log.len(),
        ops,
        "a refused apply touched the data plane"
    );
    // In two steps it works: first half of the new backends in, half of the old out.
    let mut half: Vec<(IpAddr, u32)> = (4500..9000).map(|n| (addr(0, n), 1)).collect();
    half.extend((0..4500).map(|n| (addr(1, n), 1)));
    balancer
        .apply(&mut port, &[service(1, 80, &half, 65537)])
        .unwrap();
    balancer.apply(&mut port, &one(1)).unwrap();
    assert_eq!(balancer.backend_ids.len(), 9000);
}

/// Service ids above 1023 ran out the same way: 1,000 services replaced by 1,000 others.
#[test]
fn replacing_1000_services_in_one_reload_fits() {
    let set = |vip: u8| -> Vec<ServiceSpec> {
        (0..1000u16)
            .map(|p| service(vip, 1 + p, &[(addr(0, p % 40), 1)], 7))
            .collect()
    };
    let mut port = MemoryPort::new();
    let mut balancer = Balancer::default();
    balancer.apply(&mut port, &set(1)).unwrap();
    balancer.apply(&mut port, &set(2)).unwrap();
    assert_eq!(port.services.len(), 1000);
    assert!(port.services.values().all(|s| s.id < MAX_SERVICES));
}

/// The normal order, when both sets fit: a table goes live only after every backend it
/// names has its record, an entry only after its table, the table it replaced is freed
/// (waiting out its readers), and leaving backends are freed only after no table names
/// them.
#[test]
fn apply_writes_backends_then_tables_then_entries_then_frees() {
    let a = [(addr(0, 1), 1), (addr(0, 2), 1)];
    let b = [(addr(0, 2), 1), (addr(0, 3), 1)];
    let mut port = MemoryPort::new();
    let mut balancer = Balancer::default();
    balancer
        .apply(&mut port, &[service(1, 80, &a, TABLE)])
        .unwrap();
    port.log.clear();
    balancer
        .apply(&mut port, &[service(1, 80, &b, TABLE)])
        .unwrap();
    let names: Vec<&str> = port.log.iter().map(Op::name).collect();
    assert_eq!(
        names,
        // be2 is unchanged: its record is not written again.
        [
            "set_backend",
            "swap_tables",
            "set_service",
            "swap_tables",
            "set_backend",
            "forget_backend_flows"
        ]
    );
    assert_eq!(balancer.backend_ids.len(), 2);
    // The new table went to the service's other slot; the old one is emptied after the
    // entry names the new one.
    let svc = port.services.values().next().copied().unwrap();
    assert_eq!(svc.table_slot(), svc.id + MAX_SERVICES);
    assert_eq!(port.log[3], Op::Table(svc.id, vec![0]));
    assert_eq!(port.log[4], Op::SetBackend(1, Backend::default()));
}

/// `services[i].vlan` reaches the entry, and a change of it alone rewrites the entry.
#[test]
fn a_vlan_scope_is_written_into_the_entry_and_follows_reloads() {
    let backends = [(addr(0, 1), 1)];
    let mut port = MemoryPort::new();
    let mut balancer = Balancer::default();
    let scoped = ServiceSpec {
        vlan: Some(7),
        ..service(1, 80, &backends, TABLE)
    };
    balancer.apply(&mut port, &[scoped]).unwrap();
    assert_eq!(port.services.values().next().unwrap().vlan, 7);
    balancer
        .apply(&mut port, &[service(1, 80, &backends, TABLE)])
        .unwrap();
    assert_eq!(port.services.values().next().unwrap().vlan, 0);
}

/// A failing data plane leaves the error to the caller and panics nothing.
#[test]
fn a_failed_write_is_an_error_not_a_panic() {
    use crate::dataplane::memory::Fault;
    let mut port = MemoryPort::new();
    let mut balancer = Balancer::default();
    port.inject(Some(Fault::Op("swap_tables")));
    let err = balancer
        .apply(&mut port, &[service(1, 80, &[(addr(0, 1), 1)], TABLE)])
        .unwrap_err();
    assert!(
        err.to_string().contains("swap_tables: injected failure"),
        "{err}"
    );
    assert!(port.services.is_empty(), "an entry without its table");
}
