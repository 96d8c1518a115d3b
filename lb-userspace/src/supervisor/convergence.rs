//! Whether the data plane serves what the supervisor wants, and when to try again.
//!
//! An apply can fail for reasons no config check sees (a map update refused under
//! memory pressure, an egress interface that went away). The supervisor never forgets
//! what it wants: a failed apply marks the data plane out of sync, and the reconcile
//! step applies the whole desired state again, with exponential backoff, until it
//! succeeds. `xlb status` and the metrics show the state.

use std::time::{Duration, Instant, SystemTime};

/// The first retry after a failure; each further failure doubles it up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What `xlb status` shows under `dataplane`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncStatus {
    /// The data plane serves the desired state (every apply since the last failure
    /// went through and every egress interface is present).
    pub in_sync: bool,
    /// Why the last apply failed (`None` when the last one succeeded).
    pub error: Option<String>,
    /// Seconds since the Unix epoch at the first failure of this run of failures.
    pub failing_since: Option<u64>,
    /// Failed applies in this run of failures (retries included).
    pub attempts: u32,
    /// Egress interfaces in use that do not exist now.
    pub missing_egress: Vec<String>,
    /// Applies that failed since the daemon started.
    pub failures_total: u64,
}

#[derive(Debug, Default)]
pub(super) struct Convergence {
    failing: Option<Failing>,
    missing_egress: Vec<String>,
    failures_total: u64,
}

#[derive(Debug)]
struct Failing {
    since: SystemTime,
    attempts: u32,
    error: String,
    retry_at: Instant,
}

impl Convergence {
    pub(super) fn succeeded(&mut self) {
        if let Some(f) = self.failing.take() {
            tracing::info!(
                attempts = f.attempts,
                "data plane back in sync with the desired state"
            );
        }
    }

    pub(super) fn failed(&mut self, error: String, now: Instant) {
        self.failures_total += 1;
        let f = self.failing.get_or_insert_with(|| Failing {
            since: SystemTime::now(),
            attempts: 0,
            error: String::new(),
            retry_at: now,
        });
        f.attempts += 1;
        let backoff = FIRST_BACKOFF
            .saturating_mul(1 << (f.attempts - 1).min(16))
            .min(MAX_BACKOFF);
        f.retry_at = now + backoff;
        tracing::error!(
            attempts = f.attempts,
            retry_in_ms = backoff.as_millis() as u64,
            "the data plane does not serve the desired state: {error}"
        );
        f.error = error;
    }

    /// Whether a retry is due at `now`.
    pub(super) fn retry_due(&self, now: Instant) -> bool {
        self.failing.as_ref().is_some_and(|f| now >= f.retry_at)
    }

    pub(super) fn set_missing_egress(&mut self, missing: Vec<String>) {
        self.missing_egress = missing;
    }

    pub(super) fn status(&self) -> SyncStatus {
        SyncStatus {
            in_sync: self.failing.is_none() && self.missing_egress.is_empty(),
            error: self.failing.as_ref().map(|f| f.error.clone()),
            failing_since: self.failing.as_ref().map(|f| {
                f.since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            }),
            attempts: self.failing.as_ref().map_or(0, |f| f.attempts),
            missing_egress: self.missing_egress.clone(),
            failures_total: self.failures_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap_and_reset_on_success() {
        let mut c = Convergence::default();
        let t0 = Instant::now();
        c.failed("refused".into(), t0);
        assert!(!c.retry_due(t0));
        assert!(c.retry_due(t0 + FIRST_BACKOFF));
        for _ in 0..20 {
            c.failed("refused".into(), t0);
        }
        assert!(!c.retry_due(t0 + MAX_BACKOFF - Duration::from_millis(1)));
        assert!(c.retry_due(t0 + MAX_BACKOFF));
        let s = c.status();
        assert!(!s.in_sync);
        assert_eq!((s.attempts, s.failures_total), (21, 21));
        c.succeeded();
        let s = c.status();
        assert!(s.in_sync && s.error.is_none() && s.attempts == 0);
        assert_eq!(s.failures_total, 21);
        assert!(!c.retry_due(t0 + MAX_BACKOFF));
    }
}
