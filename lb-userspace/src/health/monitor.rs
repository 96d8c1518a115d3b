//! The checker tasks: one per checked backend, each probing on its own schedule and
//! sending every result to the daemon, which owns all state ([`super::book`]).
//!
//! Scheduling: every target gets a fixed phase in `[0, interval)` derived from its
//! identity, so thousands of checks with the same interval spread evenly over the
//! interval instead of firing together. A definitive failure after a success (refused,
//! unreachable: an answer, not a silence) is confirmed by `fall - 1` re-probes 10 ms
//! apart, so a dead server is out within one interval; timeouts still take `fall`
//! intervals. A reload keeps the tasks of unchanged checks running
//! ([`Checkers::update`]): restarting them would reset their schedules, and with
//! reloads more frequent than the interval some backends would never be probed. The
//! probes in flight are bounded per service ([`super::budget`]), so a burst of slow
//! (timing-out) probes cannot exhaust file descriptors, nor delay other services'.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    sync::{mpsc, Semaphore},
    task::{AbortHandle, JoinSet},
};

use super::{
    book::{check_of, Probe, Target},
    budget::{self, Budgets},
    CheckResult,
};
use crate::{
    config::{check::CheckSpec, service::vip_key, ServiceSpec},
    dataplane::addr::describe_vip,
};

/// Gap between the re-probes that confirm a definitive failure (refused, unreachable).
const CONFIRM_GAP: Duration = Duration::from_millis(10);

/// The checker tasks. Dropping it stops them all.
pub struct Checkers {
    tasks: JoinSet<()>,
    /// What each running task checks, so a reload keeps the ones it does not change.
    running: HashMap<Target, (Running, AbortHandle)>,
    /// Which target each live task checks, to restart one that panicked.
    targets: HashMap<tokio::task::Id, Target>,
    /// Checker tasks restarted after a panic, since start.
    restarts: u64,
    /// Per service, the probes it may have in flight.
    budgets: Budgets,
    tx: mpsc::Sender<Probe>,
}

/// Everything a checker task was started with.
#[derive(Clone, PartialEq, Eq)]
struct Running {
    check: CheckSpec,
    service_port: Option<u16>,
    service: Arc<str>,
}

impl Checkers {
    /// Starts one task per checked backend of `services`, with as many probes in
    /// flight as the descriptor limit allows ([`budget::from_fd_limit`]).
    pub fn start(services: &[ServiceSpec], tx: &mpsc::Sender<Probe>) -> Checkers {
        Self::with_budget(services, tx, budget::from_fd_limit())
    }

    /// [`Checkers::start`] with at most `budget` probes in flight (shared out per
    /// service).
    pub fn with_budget(
        services: &[ServiceSpec],
        tx: &mpsc::Sender<Probe>,
        budget: usize,
    ) -> Checkers {
        let mut checkers = Checkers {
            tasks: JoinSet::new(),
            running: HashMap::new(),
            targets: HashMap::new(),
            restarts: 0,
            budgets: Budgets::new(budget),
            tx: tx.clone(),
        };
        checkers.update(services);
        checkers
    }

    /// Makes the running checks those of `services`: a check that is unchanged (same
    /// backend, service, settings) keeps running as it is, on its schedule and with a
    /// probe in flight left to finish; changed ones restart, removed ones stop. A
    /// reload therefore costs the checks only what it changes.
    pub fn update(&mut self, services: &[ServiceSpec]) {
        let mut wanted: HashMap<Target, Running> = HashMap::new();
        for svc in services {
            let key = vip_key(svc);
            // `vip:port/proto`, for exec checks' XLB_SERVICE.
            let service: Arc<str> = describe_vip(&key).into();
            for b in &svc.backends {
                if let Some(check) = check_of(svc, b) {
                    let run = Running {
                        check: check.clone(),
                        service_port: svc.port,
                        service: service.clone(),
                    };
                    wanted.insert((key, b.address), run);
                }
            }
        }
        let mut checked: HashMap<lb_common::VipKey, usize> = HashMap::new();
        for (key, _) in wanted.keys() {
            *checked.entry(*key).or_default() += 1;
        }
        self.budgets.update(&checked);
        self.running.retain(|target, (run, task)| {
            let keep = wanted.get(target) == Some(run);
            if !keep {
                task.abort();
            }
            keep
        });
        for (target, run) in wanted {
            if !self.running.contains_key(&target) {
                self.spawn(target, run);
            }
        }
        self.reap();
    }

    fn spawn(&mut self, target: Target, run: Running) {
        let task = self.tasks.spawn(check_loop(
            target,
            run.clone(),
            self.tx.clone(),
            self.budgets.of(&target.0),
        ));
        self.targets.insert(task.id(), target);
        self.running.insert(target, (run, task));
    }

    /// Collects the tasks that ended: aborted ones (a reload) are forgotten, and one that
    /// panicked is started again, so its backend's health never freezes silently.
    /// Returns the targets restarted, with the panic's message.
    pub fn reap(&mut self) -> Vec<(Target, String)> {
        let mut restarted = Vec::new();
        while let Some(ended) = self.tasks.try_join_next_with_id() {
            let (id, panic) = match ended {
                Ok((id, ())) => (id, None),
                Err(e) => (e.id(), e.is_panic().then(|| crate::panic_message(e))),
            };
            let Some(target) = self.targets.remove(&id) else {
                continue;
            };
            let Some(why) = panic else {
                continue;
            };
            // Restart it only if it is still the task checking this target.
            let current = self
                .running
                .get(&target)
                .map(|(run, task)| (run.clone(), task.id()));
            if let Some((run, task_id)) = current {
                if task_id == id {
                    self.spawn(target, run);
                    self.restarts += 1;
                    restarted.push((target, why));
                }
            }
        }
        restarted
    }

    /// Checker tasks restarted after a panic, since start.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// Replaces `target`'s task with one that panics at once (tests of [`Checkers::reap`]).
    #[cfg(test)]
    fn inject_panic(&mut self, target: Target) {
        let Some((run, old)) = self.running.get(&target).cloned() else {
            return;
        };
        old.abort();
        let task = self.tasks.spawn(async { panic!("injected") });
        self.targets.insert(task.id(), target);
        self.running.insert(target, (run, task));
    }

    /// Number of checker tasks.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

/// One backend's checks, forever: first at its phase, then every interval.
async fn check_loop(target: Target, run: Running, tx: mpsc::Sender<Probe>, limit: Arc<Semaphore>) {
    let interval = run.check.interval();
    tokio::time::sleep(phase(&target, interval)).await;
    let mut ticks = tokio::time::interval(interval);
    // A probe that overran (waited for a permit) shifts the schedule rather than firing
    // a burst of catch-up probes.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Re-probes still owed to confirm a definitive failure.
    let mut confirming = 0u32;
    // Whether the last probe passed: only a first failure after a success is
    // confirmed fast (a backend already down is probed at its interval).
    let mut last_ok = true;
    loop {
        if confirming == 0 {
            ticks.tick().await;
        } else {
            tokio::time::sleep(CONFIRM_GAP).await;
            confirming -= 1;
        }
        let Ok(permit) = limit.acquire().await else {
            return;
        };
        let started = Instant::now();
        // Boxed: a probe's state (socket, buffers) lives on the heap only while it
        // runs, instead of inline in every one of thousands of idle tasks.
        let result = Box::pin(run.check.probe(target.1, run.service_port, &run.service)).await;
        drop(permit);
        let definitive = matches!(&result, CheckResult::Fail(r) if r.is_definitive());
        if definitive && last_ok {
            confirming = run.check.fall.saturating_sub(1);
        } else if !definitive {
            confirming = 0;
        }
        last_ok = result.is_ok();
        let probe = Probe {
            target,
            result,
            took: started.elapsed(),
        };
        if tx.send(probe).await.is_err() {
            return;
        }
    }
}

/// A stable offset in `[0, interval)` per target.
fn phase(target: &Target, interval: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    target.hash(&mut h);
    let ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(h.finish() % ms)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::config::{
        check::{CheckKind, CheckSpec},
        BackendSpec, MacAddr, Mode, Protocol,
    };

    /// A TCP service on `vip`:80 with `check` and backends `{prefix}1..={prefix}n`.
    fn checked(vip: &str, prefix: &str, n: u8, check: CheckSpec) -> ServiceSpec {
        ServiceSpec {
            check: Some(check),
            ..ServiceSpec::new(
                vip.parse().unwrap(),
                Some(80),
                Protocol::Tcp,
                Mode::Dsr,
                (1..=n)
                    .map(|i| {
                        let a: IpAddr = format!("{prefix}{i}").parse().unwrap();
                        BackendSpec::new(a, MacAddr([2, 0, 0, 0, 0, i]), 1)
                    })
                    .collect(),
            )
        }
    }

    /// A reload keeps the tasks of unchanged checks and restarts only changed ones. (The
    /// tasks are never polled here: nothing is probed.)
    #[test]
    fn update_keeps_unchanged_checks_running() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let service = |interval_ms: u64| {
            let check = CheckSpec {
                interval_ms,
                ..CheckSpec::new(CheckKind::Tcp)
            };
            checked("10.0.0.100", "10.0.1.", 3, check)
        };
        let ids = |c: &Checkers| -> Vec<tokio::task::Id> {
            let mut ids: Vec<_> = c.running.values().map(|(_, t)| t.id()).collect();
            ids.sort();
            ids
        };
        let (tx, _rx) = mpsc::channel(8);
        let mut checkers = Checkers::start(&[service(1000)], &tx);
        let first = ids(&checkers);
        assert_eq!(first.len(), 3);
        checkers.update(&[service(1000)]);
        assert_eq!(
            ids(&checkers),
            first,
            "an unchanged reload restarted checks"
        );
        let mut fewer = service(1000);
        fewer.backends.pop();
        checkers.update(&[fewer]);
        assert_eq!(checkers.len(), 2);
        assert!(ids(&checkers).iter().all(|id| first.contains(id)));
        checkers.update(&[service(2000)]);
        assert!(
            ids(&checkers).iter().all(|id| !first.contains(id)),
            "changed checks must restart"
        );
    }

    /// A checker task that panics is started again (and counted), and its backend is
    /// probed again. Backends on loopback with a closed port: probes are refused there.
    #[test]
    fn a_panicked_checker_is_restarted() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let check = CheckSpec {
                interval_ms: 200,
                timeout_ms: 100,
                port: Some(9),
                ..CheckSpec::new(CheckKind::Tcp)
            };
            let svc = checked("127.0.0.100", "127.0.0.", 3, check);
            let (tx, mut rx) = mpsc::channel(64);
            let mut checkers = Checkers::start(std::slice::from_ref(&svc), &tx);
            let target = (vip_key(&svc), "127.0.0.2".parse().unwrap());
            checkers.inject_panic(target);
            tokio::time::sleep(Duration::from_millis(20)).await;
            let restarted = checkers.reap();
            assert_eq!(restarted, [(target, "injected".to_owned())]);
            assert_eq!((checkers.restarts(), checkers.len()), (1, 3));
            // The new task probes the backend again.
            let probe = tokio::time::timeout(Duration::from_secs(3), async {
                loop {
                    let p = rx.recv().await.expect("probes");
                    if p.target == target {
                        return p;
                    }
                }
            })
            .await
            .expect("a probe from the restarted checker");
            assert!(
                !probe.result.is_ok(),
                "port 9 is closed: {:?}",
                probe.result
            );
            // An aborted task (a reload dropping the backend) is not restarted.
            let mut fewer = svc.clone();
            fewer.backends.remove(1);
            checkers.update(&[fewer]);
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(checkers.reap().is_empty());
            assert_eq!(checkers.len(), 2);
        });
    }

    #[test]
    fn phases_spread_over_the_interval() {
        let interval = Duration::from_millis(1000);
        let mut buckets = [0u32; 10];
        for i in 0..10_000u32 {
            let target = (lb_common::VipKey::default(), IpAddr::from(i.to_be_bytes()));
            let p = phase(&target, interval);
            assert!(p < interval);
            assert_eq!(p, phase(&target, interval), "stable per target");
            buckets[(p.as_millis() / 100) as usize] += 1;
        }
        // 1,000 per 100 ms bucket expected; a burst would put thousands in one.
        assert!(
            buckets.iter().all(|&n| (850..1150).contains(&n)),
            "{buckets:?}"
        );
    }

    /// Issue 14, item 8: one service's slow backends (probes that run to their timeout)
    /// use up only that service's share of the budget; another service's backends
    /// keep their cadence. Before, a single semaphore made them queue behind the slow
    /// probes. Exec checks stand in for backends: nothing goes on the network.
    #[test]
    fn slow_backends_of_one_service_do_not_delay_another() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let service = |vip: &str, n: u8, command: &[&str], interval_ms, timeout_ms| {
            let check = CheckSpec {
                interval_ms,
                timeout_ms,
                command: Some(command.iter().map(|&s| s.to_owned()).collect()),
                ..CheckSpec::new(CheckKind::Exec)
            };
            checked(vip, "127.0.0.", n, check)
        };
        // 40 backends whose probes all hang until their 400 ms timeout, every 500 ms...
        // (A shell running sleep, not sleep itself: exec.rs tests count this process's
        // `sleep` children.)
        let slow = service(
            "10.0.0.1",
            40,
            &["/bin/sh", "-c", "sleep 5; true"],
            500,
            400,
        );
        // ...and 3 quick ones probed every 200 ms, with a budget of 16 for both.
        let quick = service("10.0.0.2", 3, &["/bin/true"], 200, 150);
        let quick_key = vip_key(&quick);
        let probes = runtime.block_on(async {
            let (tx, mut rx) = mpsc::channel(1024);
            let _checkers = Checkers::with_budget(&[slow, quick], &tx, 16);
            let mut quick_probes = 0;
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            while let Ok(Some(p)) = tokio::time::timeout_at(until, rx.recv()).await {
                if p.target.0 == quick_key {
                    quick_probes += 1;
                }
            }
            quick_probes
        });
        // 3 backends × 2 s / 200 ms = 30 on schedule; queued behind the slow service's
        // 400 ms probes (16 permits for 40) they got a handful.
        assert!(probes >= 20, "the quick service got {probes} probes in 2 s");
    }
}
