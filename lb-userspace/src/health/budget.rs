//! How many probes may be in flight at once, and whose they are.
//!
//! Each backend's checker runs one probe at a time, so in-flight probes never exceed
//! the checked backends; what bounds them is the descriptor limit (a probe holds a
//! socket or a process). The bound is split into per-service shares, in proportion to
//! each service's checked backends: one service's blackholed backends (each holding its
//! permit for a whole timeout) then use up only their own service's share, and every
//! other service keeps probing on schedule. With the descriptor limit raised (the
//! daemon raises its soft limit to the hard one), a service's share usually covers all
//! its backends, so even 20 % of 10,000 backends timing out at once keep their cadence.

use std::{collections::HashMap, sync::Arc};

use lb_common::VipKey;
use tokio::sync::Semaphore;

/// Descriptors kept for everything but probes (maps, sockets, the control socket,
/// metrics connections, logs).
const RESERVED_FDS: u64 = 1024;
/// The whole budget stays within these bounds, whatever the limit says.
const MIN_BUDGET: usize = 256;
const MAX_BUDGET: usize = 65_536;
/// Every service may run at least this many probes at once (or one per backend).
const MIN_SHARE: usize = 8;

/// The probes in flight the descriptor limit allows: the soft `RLIMIT_NOFILE` less
/// what the daemon needs otherwise.
pub fn from_fd_limit() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(MIN_BUDGET as u64 + RESERVED_FDS, |(soft, _)| soft);
    usize::try_from(soft.saturating_sub(RESERVED_FDS))
        .unwrap_or(MAX_BUDGET)
        .clamp(MIN_BUDGET, MAX_BUDGET)
}

/// The per-service shares of a budget.
#[derive(Debug)]
pub struct Budgets {
    total: usize,
    shares: HashMap<VipKey, Share>,
}

#[derive(Debug)]
struct Share {
    permits: Arc<Semaphore>,
    /// What the share should hold now.
    size: usize,
    /// Permits still to take away (they were in use when the share shrank).
    debt: usize,
}

impl Budgets {
    pub fn new(total: usize) -> Budgets {
        Budgets {
            total,
            shares: HashMap::new(),
        }
    }

    /// Sizes the shares for `checked` (checked backends per service); services not in
    /// it lose theirs. Running probes keep their permits: a shrinking share takes
    /// permits back as they are returned.
    pub fn update(&mut self, checked: &HashMap<VipKey, usize>) {
        let all: usize = checked.values().sum();
        self.shares.retain(|key, _| checked.contains_key(key));
        for (key, &count) in checked {
            let size = share(self.total, count, all);
            let s = self.shares.entry(*key).or_insert_with(|| Share {
                permits: Arc::new(Semaphore::new(0)),
                size: 0,
                debt: 0,
            });
            if size > s.size {
                let grow = size - s.size;
                let repaid = grow.min(s.debt);
                s.debt -= repaid;
                s.permits.add_permits(grow - repaid);
            } else {
                s.debt += s.size - size;
            }
            s.size = size;
            let taken = s.permits.forget_permits(s.debt);
            s.debt -= taken;
        }
    }

    /// The permits of `service`'s probes (a share of [`MIN_SHARE`] if it has none yet).
    pub fn of(&mut self, service: &VipKey) -> Arc<Semaphore> {
        self.shares
            .entry(*service)
            .or_insert_with(|| Share {
                permits: Arc::new(Semaphore::new(MIN_SHARE)),
                size: MIN_SHARE,
                debt: 0,
            })
            .permits
            .clone()
    }

    /// What `service`'s share holds now (tests, the status).
    pub fn size(&self, service: &VipKey) -> usize {
        self.shares.get(service).map_or(0, |s| s.size)
    }
}

/// A service's share of `total` for `count` of `all` checked backends: proportional,
/// at least [`MIN_SHARE`], never more than one per backend.
fn share(total: usize, count: usize, all: usize) -> usize {
    let proportional = if all == 0 {
        0
    } else {
        // u128: total × count cannot overflow.
        (total as u128 * count as u128 / all as u128) as usize
    };
    proportional.max(MIN_SHARE).min(count.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> VipKey {
        VipKey {
            addr: [u32::from(n), 0, 0, 0],
            ..VipKey::default()
        }
    }

    #[test]
    fn shares_are_proportional_bounded_and_cover_small_services() {
        assert_eq!(share(1000, 10_000, 10_000), 1000);
        assert_eq!(
            share(20_000, 10_000, 10_000),
            10_000,
            "one per backend at most"
        );
        assert_eq!(
            share(1000, 100, 10_100),
            9,
            "proportional, but at least MIN_SHARE"
        );
        assert_eq!(share(1000, 3, 10_003), 3, "never more than the backends");
        assert_eq!(share(1000, 5_000, 10_000), 500);
    }

    #[test]
    fn resizing_keeps_running_probes_and_takes_permits_back_as_they_return() {
        let mut b = Budgets::new(100);
        b.update(&HashMap::from([(key(1), 1000)]));
        let sem = b.of(&key(1));
        assert_eq!(sem.available_permits(), 100);
        let held = sem.clone().try_acquire_many_owned(90).unwrap();
        // Another service arrives: the first one's share halves, but 90 are in use.
        b.update(&HashMap::from([(key(1), 1000), (key(2), 1000)]));
        assert_eq!((b.size(&key(1)), b.size(&key(2))), (50, 50));
        assert_eq!(sem.available_permits(), 0);
        assert_eq!(b.of(&key(2)).available_permits(), 50);
        drop(held);
        // The next update takes back what was returned beyond the new share.
        b.update(&HashMap::from([(key(1), 1000), (key(2), 1000)]));
        assert_eq!(sem.available_permits(), 50);
        b.update(&HashMap::from([(key(2), 1000)]));
        assert_eq!(b.size(&key(1)), 0, "a removed service loses its share");
        assert_eq!(b.of(&key(2)).available_permits(), 100);
    }
}
