//! The health of every checked backend, and what it means for the data plane: the
//! configured services rewritten with failed and disabled backends drained or removed,
//! and the sorry server standing in when nothing else is usable.
//!
//! Pure bookkeeping (no sockets, no maps), so the rules are unit-tested here and the
//! daemon only has to apply what [`HealthBook::effective`] returns.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Instant, SystemTime},
};

use lb_common::VipKey;

use super::{check::CheckSpec, CheckResult, Health, Thresholds, Tracker, Transition};
use crate::{
    config::{service::vip_key, BackendSpec, Fallback, OnFailure, ServiceSpec},
    dataplane::addr::describe_vip,
};

/// One checked backend of one service: (service key, backend address). Keyed by the
/// service's (VIP, port, proto), not its position, so a reload that reorders services
/// keeps every backend's health.
pub type Target = (VipKey, IpAddr);

/// One probe result, sent from a checker task to the daemon.
#[derive(Debug)]
pub struct Probe {
    pub target: Target,
    pub result: CheckResult,
    /// How long the probe took.
    pub took: std::time::Duration,
}

/// One backend's state as saved for the next daemon.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Saved {
    /// `vip:port/proto`.
    pub service: String,
    pub backend: IpAddr,
    pub health: Health,
}

/// What the book knows about one checked backend.
#[derive(Debug, Clone)]
pub struct BackendHealth {
    tracker: Tracker,
    /// The last probe's result (`None` before the first).
    pub last: Option<CheckResult>,
    /// When the current state began (daemon start or last transition).
    pub since: SystemTime,
    pub probes: u64,
    pub failures: u64,
    pub transitions: u64,
}

impl BackendHealth {
    pub fn health(&self) -> Health {
        self.tracker.health()
    }
}

/// The check that applies to backend `b` of `svc`: its own, else the service's.
pub fn check_of<'a>(svc: &'a ServiceSpec, b: &'a BackendSpec) -> Option<&'a CheckSpec> {
    b.check.as_ref().or(svc.check.as_ref())
}

fn thresholds(check: &CheckSpec) -> Thresholds {
    Thresholds {
        rise: check.rise,
        fall: check.fall,
    }
}

/// Health of every checked backend of the running configuration.
#[derive(Debug, Default, Clone)]
pub struct HealthBook {
    entries: HashMap<Target, BackendHealth>,
    started: Option<Instant>,
    /// Backends that cannot be reached whatever their health (their next hop is not
    /// resolved), set by the supervisor: out of service as a failed backend is.
    unreachable: HashSet<Target>,
}

impl HealthBook {
    /// Makes the book match `services` (at start and after every reload): new checked
    /// backends start in their check's `initial` state, kept ones keep their state
    /// (a reload must not flap a backend) and take the new thresholds, and backends no
    /// longer checked are forgotten.
    pub fn sync(&mut self, services: &[ServiceSpec]) {
        self.started.get_or_insert_with(Instant::now);
        let mut wanted = HashMap::new();
        for svc in services {
            let key = vip_key(svc);
            for b in &svc.backends {
                if let Some(check) = check_of(svc, b) {
                    wanted.insert((key, b.address), check);
                }
            }
        }
        self.entries.retain(|target, _| wanted.contains_key(target));
        for (target, check) in wanted {
            match self.entries.get_mut(&target) {
                Some(entry) => entry.tracker.set_thresholds(thresholds(check)),
                None => {
                    self.entries.insert(
                        target,
                        BackendHealth {
                            tracker: Tracker::new(check.initial, thresholds(check)),
                            last: None,
                            since: SystemTime::now(),
                            probes: 0,
                            failures: 0,
                            transitions: 0,
                        },
                    );
                }
            }
        }
    }

    /// Records a probe; returns the transition it completed, if any. Probes for
    /// targets no longer in the book (a reload raced the probe) are ignored.
    pub fn record(&mut self, probe: &Probe) -> Option<Transition> {
        let entry = self.entries.get_mut(&probe.target)?;
        entry.probes += 1;
        if !probe.result.is_ok() {
            entry.failures += 1;
        }
        entry.last = Some(probe.result.clone());
        let t = entry.tracker.record(&probe.result)?;
        entry.transitions += 1;
        entry.since = SystemTime::now();
        Some(t)
    }

    /// The state of every checked backend, to carry over a daemon restart.
    pub fn snapshot(&self) -> Vec<Saved> {
        let mut out: Vec<Saved> = self
            .entries
            .iter()
            .map(|((key, addr), e)| Saved {
                service: describe_vip(key),
                backend: *addr,
                health: e.health(),
            })
            .collect();
        out.sort_by(|a, b| (&a.service, a.backend).cmp(&(&b.service, b.backend)));
        out
    }

    /// Takes over the states a previous daemon saved, for backends this book checks
    /// (call after [`HealthBook::sync`]); others are ignored.
    pub fn restore(&mut self, saved: &[Saved]) -> usize {
        let mut restored = 0;
        for ((key, addr), e) in &mut self.entries {
            let service = describe_vip(key);
            if let Some(s) = saved
                .iter()
                .find(|s| s.backend == *addr && s.service == service)
            {
                if s.health != e.health() {
                    e.tracker = Tracker::new(s.health, e.tracker.thresholds());
                }
                restored += 1;
            }
        }
        restored
    }

    /// What the book knows about `target`, if it is checked.
    pub fn get(&self, target: &Target) -> Option<&BackendHealth> {
        self.entries.get(target)
    }

    /// Every checked backend.
    pub fn iter(&self) -> impl Iterator<Item = (&Target, &BackendHealth)> {
        self.entries.iter()
    }

    fn is_down(&self, target: &Target) -> bool {
        self.entries
            .get(target)
            .is_some_and(|e| e.health() == Health::Down)
    }

    /// Down, or unreachable ([`HealthBook::set_unreachable`]).
    fn is_out(&self, target: &Target) -> bool {
        self.unreachable.contains(target) || self.is_down(target)
    }

    /// Which backends cannot be reached now (their next hop is unresolved); returns
    /// whether that changed.
    pub fn set_unreachable(&mut self, unreachable: HashSet<Target>) -> bool {
        std::mem::replace(&mut self.unreachable, unreachable) != self.unreachable
    }

    /// The service set to serve: each service with its failed and disabled backends
    /// drained (weight 0) or removed per its `on_failure`, and its sorry server added
    /// when no backend is left to take new flows.
    pub fn effective(&self, services: &[ServiceSpec]) -> Vec<ServiceSpec> {
        services.iter().map(|svc| self.effective_one(svc)).collect()
    }

    fn effective_one(&self, svc: &ServiceSpec) -> ServiceSpec {
        let key = vip_key(svc);
        let mut out = svc.clone();
        let out_of_service = |b: &BackendSpec| b.disabled || self.is_out(&(key, b.address));
        match svc.on_failure {
            OnFailure::Drain => {
                for b in out.backends.iter_mut().filter(|b| out_of_service(b)) {
                    b.weight = 0;
                }
            }
            OnFailure::Reset => out.backends.retain(|b| !out_of_service(b)),
        }
        if let Fallback::SorryServer(sorry) = &svc.fallback {
            if !self.available(svc) {
                // From here on the sorry server is simply the service's one backend
                // (and no longer a fallback the data plane needs to know about).
                let mut sorry = (**sorry).clone();
                sorry.weight = sorry.weight.max(1);
                out.backends.push(sorry);
                out.fallback = Fallback::Drop;
            }
        }
        out
    }

    /// Whether any backend of the configured `svc` takes new flows: weighted, enabled,
    /// not Down and reachable.
    pub fn available(&self, svc: &ServiceSpec) -> bool {
        let key = vip_key(svc);
        svc.backends
            .iter()
            .any(|b| b.weight > 0 && !b.disabled && !self.is_out(&(key, b.address)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        config::{MacAddr, Mode, Protocol},
        health::{check::CheckKind, FailReason},
    };

    fn backend(last: u8) -> BackendSpec {
        BackendSpec::new(
            IpAddr::from([10, 0, 1, last]),
            MacAddr([2, 0, 0, 0, 0, last]),
            1,
        )
    }

    fn service(backends: Vec<BackendSpec>) -> ServiceSpec {
        let mut check = CheckSpec::new(CheckKind::Tcp);
        check.rise = 2;
        check.fall = 2;
        ServiceSpec {
            check: Some(check),
            ..ServiceSpec::new(
                IpAddr::from([10, 0, 0, 1]),
                Some(80),
                Protocol::Tcp,
                Mode::Dsr,
                backends,
            )
        }
    }

    fn probe(svc: &ServiceSpec, last: u8, ok: bool) -> Probe {
        Probe {
            target: (vip_key(svc), IpAddr::from([10, 0, 1, last])),
            result: if ok {
                CheckResult::Ok
            } else {
                CheckResult::Fail(FailReason::Refused)
            },
            took: Duration::ZERO,
        }
    }

    fn weights(svc: &ServiceSpec) -> Vec<(u8, u32)> {
        svc.backends
            .iter()
            .map(|b| match b.address {
                IpAddr::V4(a) => (a.octets()[3], b.weight),
                IpAddr::V6(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn down_backend_is_drained_then_returns() {
        let svc = service(vec![backend(1), backend(2)]);
        let mut book = HealthBook::default();
        book.sync(std::slice::from_ref(&svc));
        assert_eq!(book.record(&probe(&svc, 2, false)), None);
        let t = book.record(&probe(&svc, 2, false)).unwrap();
        assert_eq!((t.from, t.to), (Health::Up, Health::Down));
        assert_eq!(weights(&book.effective_one(&svc)), [(1, 1), (2, 0)]);
        book.record(&probe(&svc, 2, true));
        assert_eq!(weights(&book.effective_one(&svc)), [(1, 1), (2, 0)]);
        book.record(&probe(&svc, 2, true)).unwrap();
        assert_eq!(weights(&book.effective_one(&svc)), [(1, 1), (2, 1)]);
        let e = book.get(&probe(&svc, 2, true).target).unwrap();
        assert_eq!((e.probes, e.failures, e.transitions), (4, 2, 2));
    }

    #[test]
    fn reset_removes_and_disabled_counts_as_failed() {
        let mut svc = service(vec![backend(1), backend(2), backend(3)]);
        svc.on_failure = OnFailure::Reset;
        svc.backends[2].disabled = true;
        let mut book = HealthBook::default();
        book.sync(std::slice::from_ref(&svc));
        book.record(&probe(&svc, 1, false));
        book.record(&probe(&svc, 1, false));
        assert_eq!(weights(&book.effective_one(&svc)), [(2, 1)]);
    }

    #[test]
    fn sorry_server_only_while_nothing_else_serves() {
        let mut svc = service(vec![backend(1)]);
        let mut sorry = backend(9);
        sorry.weight = 0;
        svc.fallback = Fallback::SorryServer(Box::new(sorry));
        let mut book = HealthBook::default();
        book.sync(std::slice::from_ref(&svc));
        let eff = book.effective_one(&svc);
        assert_eq!(weights(&eff), [(1, 1)]);
        assert!(book.available(&svc));
        book.record(&probe(&svc, 1, false));
        book.record(&probe(&svc, 1, false));
        let eff = book.effective_one(&svc);
        // Drained backend kept (its established flows continue), sorry server added.
        assert_eq!(weights(&eff), [(1, 0), (9, 1)]);
        assert!(!book.available(&svc));
        crate::config::validate::services(&[eff], &Default::default())
            .expect("effective set is valid");
        book.record(&probe(&svc, 1, true));
        book.record(&probe(&svc, 1, true));
        assert_eq!(weights(&book.effective_one(&svc)), [(1, 1)]);
    }

    #[test]
    fn initial_down_and_reload_keeps_state() {
        let mut svc = service(vec![backend(1)]);
        svc.check.as_mut().unwrap().initial = Health::Down;
        let mut book = HealthBook::default();
        book.sync(std::slice::from_ref(&svc));
        assert_eq!(weights(&book.effective_one(&svc)), [(1, 0)]);
        book.record(&probe(&svc, 1, true));
        book.record(&probe(&svc, 1, true)).unwrap();
        // A reload with other thresholds and a new backend: 1 stays up, 2 starts down.
        svc.check.as_mut().unwrap().fall = 5;
        svc.backends.push(backend(2));
        book.sync(std::slice::from_ref(&svc));
        assert_eq!(weights(&book.effective_one(&svc)), [(1, 1), (2, 0)]);
        for _ in 0..4 {
            assert_eq!(book.record(&probe(&svc, 1, false)), None);
        }
        assert!(book.record(&probe(&svc, 1, false)).is_some());
        // A backend dropped from the config is forgotten; its late probes are ignored.
        svc.backends.remove(0);
        book.sync(std::slice::from_ref(&svc));
        assert_eq!(book.record(&probe(&svc, 1, false)), None);
        assert!(book.get(&probe(&svc, 1, false).target).is_none());
    }

    #[test]
    fn snapshot_restores_into_a_new_book() {
        let svc = service(vec![backend(1), backend(2)]);
        let mut book = HealthBook::default();
        book.sync(std::slice::from_ref(&svc));
        book.record(&probe(&svc, 2, false));
        book.record(&probe(&svc, 2, false)).unwrap();
        let saved = book.snapshot();
        assert_eq!(saved.len(), 2);
        let json = serde_json::to_string(&saved).unwrap();
        let mut next = HealthBook::default();
        next.sync(std::slice::from_ref(&svc));
        assert_eq!(
            next.restore(&serde_json::from_str::<Vec<Saved>>(&json).unwrap()),
            2
        );
        assert_eq!(weights(&next.effective_one(&svc)), [(1, 1), (2, 0)]);
        // It recovers with `rise` successes like any Down backend.
        next.record(&probe(&svc, 2, true));
        assert!(next.record(&probe(&svc, 2, true)).is_some());
    }

    #[test]
    fn backend_check_overrides_and_unchecked_backends_stay_up() {
        let mut svc = service(vec![backend(1), backend(2)]);
        svc.check = None;
        let mut own = CheckSpec::new(CheckKind::Tcp);
        own.fall = 1;
        svc.backends[1].check = Some(own);
        let mut book = HealthBook::default();
        book.sync(std::slice::from_ref(&svc));
        assert!(book.get(&probe(&svc, 1, true).target).is_none());
        assert!(book.record(&probe(&svc, 2, false)).is_some());
        assert_eq!(weights(&book.effective_one(&svc)), [(1, 1), (2, 0)]);
    }
}
