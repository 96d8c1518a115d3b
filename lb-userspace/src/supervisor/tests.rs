//! The supervisor over the in-memory port: health transitions, reloads and VRRP standby
//! switching, decided without a kernel (probe results are fed by hand; no probe is sent).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use lb_common::{service::service_flags, Conn, FlowKey};

use super::*;
use crate::{
    config::{check::CheckKind, check::CheckSpec, BackendSpec, MacAddr, Mode, Protocol},
    dataplane::memory::{MemoryPort, Op},
    health::{book::Probe, CheckResult, FailReason},
};

fn be(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, n))
}

fn vip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
}

/// Two services on two VIPs, three TCP-checked backends each (fall 1, rise 1).
fn config(on_failure: OnFailure) -> Config {
    let mut check = CheckSpec::new(CheckKind::Tcp);
    check.rise = 1;
    check.fall = 1;
    let service = |v: u8, first: u8| ServiceSpec {
        table_size: 251,
        check: Some(check.clone()),
        on_failure,
        ..ServiceSpec::new(
            vip(v),
            Some(80),
            Protocol::Tcp,
            Mode::Dsr,
            (first..first + 3)
                .map(|n| BackendSpec::new(be(n), MacAddr([2, 0, 0, 0, 0, n]), 1))
                .collect(),
        )
    };
    Config {
        services: vec![service(100, 1), service(101, 11)],
        ..Config::default()
    }
}

fn probe(v: u8, backend: u8, ok: bool) -> Probe {
    let key = vip_key(&config(OnFailure::Drain).services[usize::from(v - 100)]);
    Probe {
        target: (key, be(backend)),
        result: if ok {
            CheckResult::Ok
        } else {
            CheckResult::Fail(FailReason::Refused)
        },
        took: Duration::from_millis(1),
    }
}

/// The backend ids service `v`'s live table names.
fn table_ids(port: &MemoryPort, balancer: &Balancer, v: u8) -> Vec<IpAddr> {
    let key = vip_key(&config(OnFailure::Drain).services[usize::from(v - 100)]);
    let slot = port.services[&key].table_slot();
    let mut addrs: Vec<IpAddr> = [1u8, 2, 3, 11, 12, 13]
        .into_iter()
        .map(be)
        .filter(|a| {
            balancer
                .backend_id(*a)
                .is_some_and(|bid| port.maglev[&slot].contains(&bid))
        })
        .collect();
    addrs.sort();
    addrs
}

fn start(on_failure: OnFailure) -> (Supervisor, Balancer, MemoryPort) {
    let mut port = MemoryPort::new();
    let mut balancer = Balancer::default();
    let (sup, _rx) =
        Supervisor::without_checks(&mut balancer, &mut port, config(on_failure)).unwrap();
    (sup, balancer, port)
}

#[test]
fn a_failed_backend_is_drained_and_returns_by_itself() {
    let (mut sup, mut balancer, mut port) = start(OnFailure::Drain);
    assert_eq!(table_ids(&port, &balancer, 100), [be(1), be(2), be(3)]);
    let other =
        port.maglev[&port.services[&vip_key(&sup.config().services[1])].table_slot()].clone();
    port.log.clear();

    assert!(sup.on_probe(&mut balancer, &mut port, &probe(100, 2, false)));
    assert_eq!(table_ids(&port, &balancer, 100), [be(1), be(3)]);
    // Drain: the record stays (established flows keep their backend), and only the
    // touched service's table was swapped.
    assert!(port
        .live_backend(balancer.backend_id(be(2)).unwrap())
        .is_some());
    // The new table in the service's other slot, then its old slot emptied.
    let id = port.services[&vip_key(&sup.config().services[0])].id;
    let tables: Vec<(u32, bool)> = port
        .log
        .iter()
        .filter_map(|op| match op {
            Op::Table(slot, t) => Some((*slot, *t == [0])),
            _ => None,
        })
        .collect();
    assert_eq!(
        tables,
        [(id + lb_common::limits::MAX_SERVICES, false), (id, true)],
        "{:?}",
        port.log
    );
    assert_eq!(
        port.maglev[&port.services[&vip_key(&sup.config().services[1])].table_slot()],
        other,
        "the other service's table moved"
    );
    // A repeated failure is no transition: nothing is applied again.
    port.log.clear();
    assert!(!sup.on_probe(&mut balancer, &mut port, &probe(100, 2, false)));
    assert!(port.log.is_empty(), "{:?}", port.log);

    assert!(sup.on_probe(&mut balancer, &mut port, &probe(100, 2, true)));
    assert_eq!(table_ids(&port, &balancer, 100), [be(1), be(2), be(3)]);
}

#[test]
fn reset_removes_the_backend_and_forgets_its_flows() {
    let (mut sup, mut balancer, mut port) = start(OnFailure::Reset);
    let id = balancer.backend_id(be(3)).unwrap();
    port.conns.insert(
        FlowKey::default(),
        Conn {
            backend_id: id,
            service_id: 1,
            service_gen: 1,
            flow_hash: 0,
            ..Conn::default()
        },
    );
    assert!(sup.on_probe(&mut balancer, &mut port, &probe(100, 3, false)));
    assert_eq!(table_ids(&port, &balancer, 100), [be(1), be(2)]);
    assert_eq!(balancer.backend_id(be(3)), None);
    assert!(port.live_backend(id).is_none());
    assert!(
        port.conns.is_empty(),
        "a flow still names the removed backend"
    );
    assert!(sup.on_probe(&mut balancer, &mut port, &probe(100, 3, true)));
    assert_eq!(table_ids(&port, &balancer, 100), [be(1), be(2), be(3)]);
}

#[test]
fn all_backends_down_drops_new_flows_and_the_first_back_takes_them() {
    let (mut sup, mut balancer, mut port) = start(OnFailure::Drain);
    for b in 1..=3 {
        sup.on_probe(&mut balancer, &mut port, &probe(100, b, false));
    }
    let key = vip_key(&sup.config().services[0]);
    assert!(port.maglev[&port.services[&key].table_slot()]
        .iter()
        .all(|id| *id == 0));
    assert!(!sup.availability()["10.0.0.100:80/tcp"]);
    sup.on_probe(&mut balancer, &mut port, &probe(100, 2, true));
    assert_eq!(table_ids(&port, &balancer, 100), [be(2)]);
    assert!(sup.availability()["10.0.0.100:80/tcp"]);
}

#[test]
fn a_failed_apply_keeps_the_transition_for_the_next_change() {
    use crate::dataplane::memory::Fault;
    let (mut sup, mut balancer, mut port) = start(OnFailure::Drain);
    port.inject(Some(Fault::Op("swap_tables")));
    // The transition is recorded even though the data plane refused it...
    assert!(sup.on_probe(&mut balancer, &mut port, &probe(100, 1, false)));
    assert_eq!(table_ids(&port, &balancer, 100), [be(1), be(2), be(3)]);
    port.inject(None);
    // ...and the next apply serves it.
    sup.on_probe(&mut balancer, &mut port, &probe(100, 2, false));
    assert_eq!(table_ids(&port, &balancer, 100), [be(3)]);
}

#[test]
fn reload_keeps_the_health_of_backends_it_still_checks() {
    let (mut sup, mut balancer, mut port) = start(OnFailure::Drain);
    sup.on_probe(&mut balancer, &mut port, &probe(100, 1, false));
    let mut next = config(OnFailure::Drain);
    next.services[0]
        .backends
        .push(BackendSpec::new(be(4), MacAddr([2, 0, 0, 0, 0, 4]), 1));
    let id2 = balancer.backend_id(be(2)).unwrap();
    sup.reload(&mut balancer, &mut port, next).unwrap();
    // be1 stays out, be4 comes in, be2 keeps its id.
    assert_eq!(
        table_ids(&port, &balancer, 100),
        [be(2), be(3)],
        "be1 stays out after the reload (table_ids lists be1-3 and be11-13)"
    );
    assert!(balancer.backend_id(be(4)).is_some());
    assert_eq!(balancer.backend_id(be(2)), Some(id2));
}

#[test]
fn a_rejected_reload_changes_nothing() {
    let (mut sup, mut balancer, mut port) = start(OnFailure::Drain);
    let ops = port.log.len();
    let mut bad = config(OnFailure::Drain);
    bad.services[1].backends[0].weight = 70_000;
    assert!(sup.reload(&mut balancer, &mut port, bad).is_err());
    assert_eq!(port.log.len(), ops);
    assert_eq!(sup.config(), &config(OnFailure::Drain));
}

/// A new `hash_seed` would move every flow without a connection entry and place flows
/// unlike the group's other balancers: refused on reload, named by its field; the seed
/// a daemon starts with is in `XLB_CONFIG` and builds its tables.
#[test]
fn a_reload_that_changes_the_hash_seed_is_refused() {
    use crate::{
        balancer::maglev::{self, MaglevBackend},
        config::HashSeed,
    };
    let mut seeded = config(OnFailure::Drain);
    seeded.hash_seed = Some(HashSeed::Text("0x1a2b3c4d".into()));
    let mut port = MemoryPort::new();
    let mut balancer = Balancer::default();
    let (mut sup, _probes) =
        Supervisor::without_checks(&mut balancer, &mut port, seeded.clone()).unwrap();
    assert_eq!(port.config.hash_seed, 0x1a2b_3c4d);
    let slot = port.services[&vip_key(&seeded.services[0])].table_slot();
    let ids: Vec<MaglevBackend> = seeded.services[0]
        .backends
        .iter()
        .map(|b| MaglevBackend {
            id: balancer.backend_id(b.address).unwrap(),
            weight: 1,
            key: maglev::backend_key(b.address, 0),
        })
        .collect();
    assert_eq!(
        port.maglev[&slot],
        maglev::build_seeded(&ids, 251, 0x1a2b_3c4d).unwrap()
    );
    let ops = port.log.len();
    let mut other = seeded.clone();
    other.hash_seed = Some(HashSeed::Text("0x1a2b3c4e".into()));
    let e = sup.reload(&mut balancer, &mut port, other).unwrap_err();
    assert!(e.to_string().starts_with("hash_seed: "), "{e}");
    assert!(e.to_string().contains("takes effect on restart"), "{e}");
    assert_eq!(port.log.len(), ops);
    assert_eq!(sup.config(), &seeded);
    // The same seed written another way is the same seed: the reload goes through.
    let mut same = seeded.clone();
    same.hash_seed = Some(HashSeed::Text("439041101".into()));
    sup.reload(&mut balancer, &mut port, same).unwrap();
    assert_eq!(port.config.hash_seed, 0x1a2b_3c4d);
}

#[test]
fn vrrp_standby_switches_only_the_entries_of_the_peers_vips() {
    let (mut sup, mut balancer, mut port) = start(OnFailure::Drain);
    let keys: Vec<VipKey> = sup.config().services.iter().map(vip_key).collect();
    let before: Vec<(u32, u32)> = keys
        .iter()
        .map(|k| {
            let id = port.services[k].id;
            (id, port.generation(id).unwrap())
        })
        .collect();
    port.log.clear();
    sup.set_standby(&mut balancer, &mut port, vec![vip(101)])
        .unwrap();
    assert_eq!(port.services[&keys[0]].flags & service_flags::STANDBY, 0);
    assert_ne!(port.services[&keys[1]].flags & service_flags::STANDBY, 0);
    assert!(port.all_standby(&keys[1].addr, keys[1].family));
    // One entry write: no table, no backend touched.
    assert_eq!(port.log, [Op::SetService(keys[1], port.services[&keys[1]])]);
    // Back to master: the same service (id, generation), so established flows stay.
    sup.set_standby(&mut balancer, &mut port, vec![]).unwrap();
    assert_eq!(port.services[&keys[1]].flags & service_flags::STANDBY, 0);
    let after: Vec<(u32, u32)> = keys
        .iter()
        .map(|k| {
            let id = port.services[k].id;
            (id, port.generation(id).unwrap())
        })
        .collect();
    assert_eq!(before, after);
}

/// One service as packets meet it: flags, mode, egress slot, and its live table as
/// backend addresses (`None`: no backend / a cleared record).
type Served = (u32, u8, u8, Vec<Option<IpAddr>>);

/// What packets meet, whatever ids were chosen.
fn served(port: &MemoryPort) -> HashMap<VipKey, Served> {
    use crate::dataplane::addr::ip_from_words;
    port.services
        .iter()
        .map(|(key, svc)| {
            let table = port.maglev[&svc.table_slot()]
                .iter()
                .map(|id| {
                    port.live_backend(*id)
                        .and_then(|b| ip_from_words(b.addr, b.family))
                })
                .collect();
            (*key, (svc.flags, svc.mode, svc.tx_port, table))
        })
        .collect()
}

/// A reload that replaces one service's backends, removes the other service and adds
/// a third: every kind of step an apply takes.
fn reshaped() -> Config {
    let mut next = config(OnFailure::Drain);
    next.services[0].backends = (4..7)
        .map(|n| BackendSpec::new(be(n), MacAddr([2, 0, 0, 0, 0, n]), 1))
        .collect();
    let mut third = next.services[1].clone();
    third.vip = vip(102);
    next.services[1] = third;
    next
}

/// Issue 14, item 6: a reload whose apply fails at any step leaves exactly the running
/// configuration served (what it had changed is undone), and the data plane in sync.
#[test]
fn a_reload_that_fails_at_any_step_leaves_the_running_config_served() {
    use crate::dataplane::memory::Fault;
    let want_old = served(&start(OnFailure::Drain).2);
    let want_new = {
        let mut port = MemoryPort::new();
        let mut balancer = Balancer::default();
        Supervisor::without_checks(&mut balancer, &mut port, reshaped()).unwrap();
        served(&port)
    };
    assert_ne!(want_old, want_new);
    let mut failed_at = 0;
    for n in 0.. {
        let (mut sup, mut balancer, mut port) = start(OnFailure::Drain);
        port.inject(Some(Fault::After(n)));
        match sup.reload(&mut balancer, &mut port, reshaped()) {
            Err(e) => {
                assert_eq!(served(&port), want_old, "failure at step {n}: {e:#}");
                assert_eq!(sup.config(), &config(OnFailure::Drain));
                assert!(sup.sync_status().in_sync, "step {n}");
                failed_at += 1;
            }
            Ok(()) => {
                // The fault lay beyond the last step: the reload went through.
                assert_eq!(served(&port), want_new);
                break;
            }
        }
    }
    assert!(failed_at >= 10, "only {failed_at} failure points tried");
}

/// A reload whose rollback fails too leaves the data plane out of sync, says so, and
/// the reconcile step converges it to the running configuration once the data plane
/// accepts updates again.
#[test]
fn a_failed_rollback_is_retried_until_the_running_config_is_served() {
    use crate::dataplane::memory::Fault;
    let (mut sup, mut balancer, mut port) = start(OnFailure::Drain);
    let want = served(&port);
    // Removing the old second service fails, and so does removing the added third.
    port.inject(Some(Fault::Op("remove_service")));
    let e = sup
        .reload(&mut balancer, &mut port, reshaped())
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("rolling back failed too"),
        "{e:#}"
    );
    assert_ne!(served(&port), want);
    let status = sup.sync_status();
    assert!(!status.in_sync && status.error.is_some() && status.attempts == 1);
    // Still refused: the retry fails and backs off.
    let later = Instant::now() + Duration::from_secs(1);
    sup.reconcile_at(&mut balancer, &mut port, later);
    assert_eq!(sup.sync_status().attempts, 2);
    port.inject(None);
    sup.reconcile_at(&mut balancer, &mut port, later + Duration::from_secs(5));
    assert_eq!(served(&port), want);
    let status = sup.sync_status();
    assert!(status.in_sync && status.error.is_none(), "{status:?}");
    assert_eq!(status.failures_total, 2);
}

/// A health transition whose apply fails is served by the reconcile step without
/// waiting for another probe, and announced (logged, hook run) only then.
#[test]
fn a_health_change_that_failed_to_apply_is_retried_and_announced_when_served() {
    use crate::dataplane::memory::Fault;
    let (mut sup, mut balancer, mut port) = start(OnFailure::Drain);
    port.inject(Some(Fault::Op("swap_tables")));
    assert!(sup.on_probe(&mut balancer, &mut port, &probe(100, 1, false)));
    assert_eq!(table_ids(&port, &balancer, 100), [be(1), be(2), be(3)]);
    assert!(!sup.sync_status().in_sync);
    assert_eq!(sup.unannounced.len(), 1, "not announced while not served");
    port.inject(None);
    // Not before the backoff has passed...
    sup.reconcile_at(&mut balancer, &mut port, Instant::now());
    assert_eq!(table_ids(&port, &balancer, 100), [be(1), be(2), be(3)]);
    // ...then served and announced.
    sup.reconcile_at(
        &mut balancer,
        &mut port,
        Instant::now() + Duration::from_secs(1),
    );
    assert_eq!(table_ids(&port, &balancer, 100), [be(2), be(3)]);
    assert!(sup.sync_status().in_sync);
    assert!(sup.unannounced.is_empty());
}

/// Issue 14, item 8: transitions that arrive together are applied together: one table
/// swap for the batch, not one per backend.
#[test]
fn a_batch_of_transitions_costs_one_swap_per_service() {
    let (mut sup, mut balancer, mut port) = start(OnFailure::Drain);
    port.log.clear();
    let batch = [
        probe(100, 1, false),
        probe(100, 2, false),
        probe(101, 11, false),
    ];
    assert!(sup.on_probes(&mut balancer, &mut port, &batch));
    // New tables (retiring an old one writes an empty placeholder) and entry switches.
    let tables = port
        .log
        .iter()
        .filter(|op| matches!(op, Op::Table(_, t) if t.len() > 1))
        .count();
    let entries = port
        .log
        .iter()
        .filter(|op| op.name() == "set_service")
        .count();
    assert_eq!((tables, entries), (2, 2), "one per changed service");
    assert_eq!(table_ids(&port, &balancer, 100), [be(3)]);
    assert_eq!(sup.unannounced.len(), 0, "all three announced once served");
}

/// `icmp_toobig_per_sec` reaches `XLB_CONFIG` at start and follows a reload; absent
/// writes 0, which the data plane reads as its default (docs/mtu.md).
#[test]
fn the_icmp_toobig_rate_is_written_at_start_and_on_reload() {
    let mut port = MemoryPort::new();
    let mut balancer = Balancer::default();
    let mut first = config(OnFailure::Drain);
    first.icmp_toobig_per_sec = Some(5);
    let (mut sup, _probes) = Supervisor::without_checks(&mut balancer, &mut port, first).unwrap();
    assert_eq!(port.config.toobig_per_sec, 5);
    // A probe transition applies the effective config again: the rate stays.
    assert!(sup.on_probe(&mut balancer, &mut port, &probe(100, 1, false)));
    assert_eq!(port.config.toobig_per_sec, 5);
    let mut next = config(OnFailure::Drain);
    next.icmp_toobig_per_sec = Some(7);
    sup.reload(&mut balancer, &mut port, next).unwrap();
    assert_eq!(port.config.toobig_per_sec, 7);
    let parsed = Config::parse(r#"{"icmp_toobig_per_sec": 250}"#).unwrap();
    assert_eq!(parsed.icmp_toobig_per_sec, Some(250));
}

/// `conn_table.timeouts` reach `XLB_CONFIG` (in the data plane's ticks) at start, stay
/// through a health transition and follow a reload at once.
#[test]
fn connection_timeouts_are_written_at_start_and_follow_a_reload() {
    let mut port = MemoryPort::new();
    let mut balancer = Balancer::default();
    let first = config(OnFailure::Drain);
    let defaults = first.conn_table.timeouts.ticks();
    let (mut sup, _probes) = Supervisor::without_checks(&mut balancer, &mut port, first).unwrap();
    assert_eq!(port.config.timeouts, defaults);
    assert!(defaults.tcp_idle > defaults.udp_idle && defaults.udp_idle > defaults.tcp_closing);
    assert!(sup.on_probe(&mut balancer, &mut port, &probe(100, 1, false)));
    assert_eq!(port.config.timeouts, defaults);
    let mut next = config(OnFailure::Drain);
    next.conn_table.timeouts.udp_idle_s = 60;
    sup.reload(&mut balancer, &mut port, next).unwrap();
    assert_eq!(
        port.config.timeouts.udp_idle, 56,
        "60 s in 2^30 ns ticks, rounded up"
    );
    assert_eq!(port.config.timeouts.tcp_idle, defaults.tcp_idle);
}
