//! Rise/fall hysteresis: the pure state machine between probe results and a backend's
//! Up/Down state (keepalived's `rise`/`fall`, HAProxy's `rise`/`fall`).
//!
//! An Up backend goes Down only after `fall` consecutive failed probes; a Down backend
//! comes Up only after `rise` consecutive successful ones. Any probe that agrees with
//! the current state resets the streak, so a backend that alternates faster than the
//! thresholds (flapping) never changes state.

use std::fmt;

use super::CheckResult;

/// How many consecutive probes it takes to change state. A threshold of 0 is treated
/// as 1 (a single probe changes state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive successes that bring a Down backend Up.
    pub rise: u32,
    /// Consecutive failures that take an Up backend Down.
    pub fall: u32,
}

impl Default for Thresholds {
    /// HAProxy's defaults: 2 successes to rise, 3 failures to fall.
    fn default() -> Thresholds {
        Thresholds { rise: 2, fall: 3 }
    }
}

pub use crate::config::check::Health;

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Health::Up => "up",
            Health::Down => "down",
        })
    }
}

/// A state change, with an operator-readable reason (e.g.
/// `"3 consecutive failures, last: status 503"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    pub reason: String,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}: {}", self.from, self.to, self.reason)
    }
}

/// Tracks one backend's health from its probe results.
#[derive(Debug, Clone)]
pub struct Tracker {
    health: Health,
    thresholds: Thresholds,
    /// Consecutive probes that disagree with `health` (failures while Up, successes
    /// while Down). Reset by any agreeing probe and by a transition.
    streak: u32,
}

impl Tracker {
    /// A tracker starting in `initial` with no streak. Whether new backends start Up
    /// (serve at once, keepalived's default) or Down (wait for `rise` successes,
    /// keepalived's `inhibit_on_failure`-like caution) is the caller's choice.
    pub fn new(initial: Health, t: Thresholds) -> Tracker {
        Tracker {
            health: initial,
            thresholds: Thresholds {
                rise: t.rise.max(1),
                fall: t.fall.max(1),
            },
            streak: 0,
        }
    }

    /// The current state.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Takes new thresholds (a reload), keeping the state; a streak already past a
    /// lowered threshold completes with the next disagreeing probe.
    pub fn set_thresholds(&mut self, t: Thresholds) {
        self.thresholds = Thresholds {
            rise: t.rise.max(1),
            fall: t.fall.max(1),
        };
    }

    /// The thresholds in effect (0s raised to 1).
    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Consecutive probes so far that disagree with the current state.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// Feeds one probe result; returns the transition if this result completed a
    /// streak of `fall` failures (Up→Down) or `rise` successes (Down→Up).
    pub fn record(&mut self, result: &CheckResult) -> Option<Transition> {
        let (needed, to) = match (self.health, result) {
            (Health::Up, CheckResult::Ok) | (Health::Down, CheckResult::Fail(_)) => {
                self.streak = 0;
                return None;
            }
            (Health::Up, CheckResult::Fail(_)) => (self.thresholds.fall, Health::Down),
            (Health::Down, CheckResult::Ok) => (self.thresholds.rise, Health::Up),
        };
        self.streak = self.streak.saturating_add(1);
        if self.streak < needed {
            return None;
        }
        let reason = match result {
            CheckResult::Ok => plural(needed, "consecutive success", "consecutive successes"),
            CheckResult::Fail(why) => format!(
                "{}, last: {why}",
                plural(needed, "consecutive failure", "consecutive failures")
            ),
        };
        let transition = Transition {
            from: self.health,
            to,
            reason,
        };
        self.health = to;
        self.streak = 0;
        Some(transition)
    }
}

fn plural(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::health::FailReason;

    const OK: CheckResult = CheckResult::Ok;

    fn fail() -> CheckResult {
        CheckResult::Fail(FailReason::Status(503))
    }

    fn t(rise: u32, fall: u32) -> Thresholds {
        Thresholds { rise, fall }
    }

    /// Feeds `results` and returns the index and transition of every state change.
    fn feed(tracker: &mut Tracker, results: &[CheckResult]) -> Vec<(usize, Transition)> {
        results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| tracker.record(r).map(|tr| (i, tr)))
            .collect()
    }

    #[test]
    fn initial_state_is_kept_without_results() {
        assert_eq!(Tracker::new(Health::Up, t(2, 3)).health(), Health::Up);
        assert_eq!(Tracker::new(Health::Down, t(2, 3)).health(), Health::Down);
    }

    #[test]
    fn agreeing_results_never_transition() {
        let mut up = Tracker::new(Health::Up, t(2, 3));
        assert!(feed(&mut up, &[OK; 100]).is_empty());
        assert_eq!(up.health(), Health::Up);
        let mut down = Tracker::new(Health::Down, t(2, 3));
        let fails: Vec<_> = (0..100).map(|_| fail()).collect();
        assert!(feed(&mut down, &fails).is_empty());
        assert_eq!(down.health(), Health::Down);
    }

    #[test]
    fn goes_down_after_exactly_fall_failures() {
        for fall in 1..=6 {
            let mut tr = Tracker::new(Health::Up, t(2, fall));
            for i in 1..fall {
                assert_eq!(tr.record(&fail()), None, "fall={fall}, failure {i}");
                assert_eq!(tr.health(), Health::Up);
                assert_eq!(tr.streak(), i);
            }
            let change = tr
                .record(&fail())
                .expect("transition on the fall-th failure");
            assert_eq!((change.from, change.to), (Health::Up, Health::Down));
            assert_eq!(tr.health(), Health::Down);
            assert_eq!(tr.streak(), 0);
        }
    }

    #[test]
    fn comes_up_after_exactly_rise_successes() {
        for rise in 1..=6 {
            let mut tr = Tracker::new(Health::Down, t(rise, 3));
            for i in 1..rise {
                assert_eq!(tr.record(&OK), None, "rise={rise}, success {i}");
                assert_eq!(tr.health(), Health::Down);
            }
            let change = tr.record(&OK).expect("transition on the rise-th success");
            assert_eq!((change.from, change.to), (Health::Down, Health::Up));
            assert_eq!(tr.health(), Health::Up);
        }
    }

    #[test]
    fn a_success_resets_the_failure_streak() {
        let mut tr = Tracker::new(Health::Up, t(2, 3));
        let results = [
            fail(),
            fail(),
            OK,
            fail(),
            fail(),
            OK,
            fail(),
            fail(),
            fail(),
        ];
        let changes = feed(&mut tr, &results);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, 8, "only the third failure in a row counts");
    }

    #[test]
    fn a_failure_resets_the_success_streak() {
        let mut tr = Tracker::new(Health::Down, t(3, 2));
        let results = [OK, OK, fail(), OK, OK, fail(), OK, OK, OK];
        let changes = feed(&mut tr, &results);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0, 8);
        assert_eq!(changes[0].1.to, Health::Up);
    }

    #[test]
    fn flapping_never_transitions() {
        // Alternating, and bursts one short of the thresholds, from both states.
        for initial in [Health::Up, Health::Down] {
            let mut tr = Tracker::new(initial, t(2, 2));
            let alternating: Vec<_> = (0..1000)
                .map(|i| if i % 2 == 0 { OK } else { fail() })
                .collect();
            assert!(feed(&mut tr, &alternating).is_empty(), "{initial}");
            assert_eq!(tr.health(), initial);

            let mut tr = Tracker::new(initial, t(4, 4));
            let bursts: Vec<_> = (0..1000)
                .map(|i| if (i / 3) % 2 == 0 { OK } else { fail() })
                .collect();
            assert!(feed(&mut tr, &bursts).is_empty(), "{initial}");
            assert_eq!(tr.health(), initial);
        }
    }

    #[test]
    fn full_cycle_down_and_up_again() {
        let mut tr = Tracker::new(Health::Up, t(2, 3));
        let mut results = vec![OK, fail(), fail(), fail()];
        results.extend([fail(), OK, OK]);
        let changes = feed(&mut tr, &results);
        let summary: Vec<_> = changes.iter().map(|(i, c)| (*i, c.from, c.to)).collect();
        assert_eq!(
            summary,
            [(3, Health::Up, Health::Down), (6, Health::Down, Health::Up)]
        );
    }

    #[test]
    fn reason_is_carried() {
        let mut tr = Tracker::new(Health::Up, t(2, 2));
        tr.record(&CheckResult::Fail(FailReason::Refused));
        let down = tr
            .record(&CheckResult::Fail(FailReason::Timeout(
                Duration::from_secs(1),
            )))
            .unwrap();
        assert_eq!(
            down.reason,
            "2 consecutive failures, last: timeout after 1s"
        );
        assert_eq!(
            down.to_string(),
            "up -> down: 2 consecutive failures, last: timeout after 1s"
        );
        tr.record(&OK);
        let up = tr.record(&OK).unwrap();
        assert_eq!(up.reason, "2 consecutive successes");

        let mut single = Tracker::new(Health::Up, t(1, 1));
        let down = single
            .record(&CheckResult::Fail(FailReason::Status(500)))
            .unwrap();
        assert_eq!(down.reason, "1 consecutive failure, last: status 500");
        assert_eq!(single.record(&OK).unwrap().reason, "1 consecutive success");
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut tr = Tracker::new(Health::Up, t(0, 0));
        assert_eq!(tr.thresholds(), t(1, 1));
        assert_eq!(tr.record(&fail()).map(|c| c.to), Some(Health::Down));
        assert_eq!(tr.record(&OK).map(|c| c.to), Some(Health::Up));
    }
}
