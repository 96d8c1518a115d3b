//! The checker tasks: one per checked backend, each probing on its own schedule and
//! sending every result to the daemon, which owns all state ([`super::book`]).
//!
//! Scheduling: every target gets a fixed phase in `[0, interval)` derived from its
//! identity, so thousands of checks with the same interval spread evenly over the
//! interval instead of firing together, and a reload (which restarts the tasks) keeps
//! each backend's rhythm. A semaphore bounds the probes in flight, so a burst of slow
//! (timing-out) probes cannot exhaust file descriptors.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    sync::{mpsc, Semaphore},
    task::JoinSet,
};

use super::book::{check_of, Probe, Target};
use crate::{
    config::{service::vip_key, ServiceSpec},
    dataplane::addr::describe_vip,
};

/// At most this many probes in flight, whatever the number of backends.
pub const MAX_CONCURRENT_PROBES: usize = 256;

/// The checker tasks of one configuration. Dropping it stops them all.
pub struct Checkers {
    tasks: JoinSet<()>,
}

impl Checkers {
    /// Starts one task per checked backend of `services`.
    pub fn start(services: &[ServiceSpec], tx: &mpsc::Sender<Probe>) -> Checkers {
        let limit = Arc::new(Semaphore::new(MAX_CONCURRENT_PROBES));
        let mut tasks = JoinSet::new();
        for svc in services {
            let key = vip_key(svc);
            // `vip:port/proto`, for exec checks' XLB_SERVICE.
            let service: Arc<str> = describe_vip(&key).into();
            for b in &svc.backends {
                let Some(check) = check_of(svc, b) else {
                    continue;
                };
                let target: Target = (key, b.address);
                let (check, tx, limit) = (check.clone(), tx.clone(), limit.clone());
                let service = service.clone();
                let (addr, service_port) = (b.address, svc.port);
                tasks.spawn(async move {
                    let interval = check.interval();
                    tokio::time::sleep(phase(&target, interval)).await;
                    let mut ticks = tokio::time::interval(interval);
                    // A probe that overran (waited for a permit) shifts the schedule
                    // rather than firing a burst of catch-up probes.
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticks.tick().await;
                        let Ok(permit) = limit.acquire().await else {
                            return;
                        };
                        let started = Instant::now();
                        // Boxed: a probe's state (socket, buffers) lives on the heap
                        // only while it runs, instead of inline in every one of
                        // thousands of idle tasks.
                        let result = Box::pin(check.probe(addr, service_port, &service)).await;
                        drop(permit);
                        let probe = Probe {
                            target,
                            result,
                            took: started.elapsed(),
                        };
                        if tx.send(probe).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
        Checkers { tasks }
    }

    /// Number of checker tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
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
}
