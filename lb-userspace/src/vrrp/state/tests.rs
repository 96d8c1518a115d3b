//! State machine tests: one per row of the RFC 5798 §6.4 tables, the timer arithmetic,
//! and a small discrete-event simulation of routers on a shared link with a fake clock.

use std::net::Ipv4Addr;

use super::*;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(priority: u8, last: u8) -> RouterConfig {
    RouterConfig {
        vrid: 7,
        priority,
        adver_int_cs: 100,
        preempt: true,
        preempt_delay: Duration::ZERO,
        accept_mode: false,
        version: Version::V3,
        primary_address: ip(last),
    }
}

fn started(cfg: RouterConfig) -> VirtualRouter {
    let mut vr = VirtualRouter::new(cfg).unwrap();
    vr.handle(Duration::ZERO, Event::Startup);
    vr
}

/// A router with priority `priority` that has become master at t = 0.
fn master(priority: u8, last: u8) -> VirtualRouter {
    let mut vr = started(config(priority, last));
    if vr.state() == State::Backup {
        let at = vr.next_deadline().unwrap();
        vr.handle(at, Event::Timer);
    }
    assert_eq!(vr.state(), State::Master);
    vr
}

fn advert(from: IpAddr, priority: u8) -> Event {
    Event::AdvertReceived {
        from,
        priority,
        max_adver_int_cs: 100,
    }
}

fn send(priority: u8) -> Action {
    Action::SendAdvert {
        priority,
        max_adver_int_cs: 100,
    }
}

#[test]
fn timer_arithmetic() {
    // RFC 5798 §6.1 with the brief's example: priority 100, interval 1 s.
    assert_eq!(skew_time_cs(Version::V3, 100, 100), 60); // 156 * 100 / 256 = 60.9
    assert_eq!(master_down_interval_cs(Version::V3, 100, 100), 360);
    assert_eq!(skew_time_cs(Version::V3, 255, 100), 0);
    assert_eq!(skew_time_cs(Version::V3, 1, 100), 99);
    assert_eq!(skew_time_cs(Version::V3, 200, 100), 21);
    // The v3 skew scales with the interval ...
    assert_eq!(skew_time_cs(Version::V3, 100, 4095), 156 * 4095 / 256);
    assert_eq!(
        master_down_interval_cs(Version::V3, 1, 4095),
        3 * 4095 + 255 * 4095 / 256
    );
    // ... the v2 skew does not (RFC 3768 §6.1: (256 - Priority) / 256 seconds).
    assert_eq!(skew_time_cs(Version::V2, 100, 300), 60);
    assert_eq!(master_down_interval_cs(Version::V2, 100, 300), 960);
    let vr = started(config(100, 1));
    assert_eq!(vr.skew_time(), ms(600));
    assert_eq!(vr.master_down_interval(), ms(3600));
}

#[test]
fn config_is_validated() {
    let mut c = config(100, 1);
    c.priority = 0;
    assert_eq!(VirtualRouter::new(c).unwrap_err(), ConfigError::Priority);
    let mut c = config(100, 1);
    c.vrid = 0;
    assert_eq!(VirtualRouter::new(c).unwrap_err(), ConfigError::Vrid);
    for bad in [0, 4096] {
        let mut c = config(100, 1);
        c.adver_int_cs = bad;
        assert_eq!(
            VirtualRouter::new(c).unwrap_err(),
            ConfigError::Interval(bad)
        );
    }
    let mut c = config(100, 1);
    c.version = Version::V2;
    c.adver_int_cs = 150;
    assert_eq!(
        VirtualRouter::new(c).unwrap_err(),
        ConfigError::Interval(150)
    );
    let mut c = config(100, 1);
    c.version = Version::V2;
    c.primary_address = "fe80::1".parse().unwrap();
    assert_eq!(VirtualRouter::new(c).unwrap_err(), ConfigError::V2NotIpv4);
}

#[test]
fn initialize_ignores_everything_but_startup() {
    let mut vr = VirtualRouter::new(config(100, 1)).unwrap();
    for ev in [
        Event::Timer,
        Event::Shutdown,
        advert(ip(2), 200),
        advert(ip(2), 0),
    ] {
        assert!(vr.handle(ms(5), ev).is_empty());
        assert_eq!(vr.state(), State::Initialize);
        assert_eq!(vr.next_deadline(), None);
    }
    assert_eq!(vr.master_address(), None);
    assert_eq!(vr.history().len(), 0);
}

#[test]
fn startup_owner_becomes_master_and_advertises() {
    let mut vr = VirtualRouter::new(config(255, 1)).unwrap();
    let actions = vr.handle(ms(1000), Event::Startup);
    assert_eq!(actions, [send(255), Action::BecomeMaster]);
    assert_eq!(vr.state(), State::Master);
    assert_eq!(vr.next_deadline(), Some(ms(2000))); // Adver_Timer = Advertisement_Interval
    assert_eq!(vr.master_address(), Some(ip(1)));
    assert!(vr.accepts_vip_traffic(), "the owner always accepts");
}

#[test]
fn startup_non_owner_becomes_backup_with_master_down_timer() {
    let mut vr = VirtualRouter::new(config(100, 1)).unwrap();
    let actions = vr.handle(ms(1000), Event::Startup);
    assert_eq!(actions, [Action::BecomeBackup]);
    assert_eq!(vr.state(), State::Backup);
    assert_eq!(vr.master_adver_interval_cs(), 100);
    assert_eq!(vr.next_deadline(), Some(ms(1000 + 3600)));
    assert!(!vr.accepts_vip_traffic());
    // A second Startup changes nothing.
    assert!(vr.handle(ms(1500), Event::Startup).is_empty());
    assert_eq!(vr.next_deadline(), Some(ms(4600)));
}

#[test]
fn backup_shutdown_goes_to_initialize() {
    let mut vr = started(config(100, 1));
    assert_eq!(
        vr.handle(ms(10), Event::Shutdown),
        [Action::BecomeInitialize]
    );
    assert_eq!(vr.state(), State::Initialize);
    assert_eq!(vr.next_deadline(), None);
    // It can start again.
    assert_eq!(vr.handle(ms(20), Event::Startup), [Action::BecomeBackup]);
}

#[test]
fn backup_master_down_timer_expiry_becomes_master() {
    let mut vr = started(config(100, 1));
    // Early and spurious wake-ups do nothing.
    assert!(vr.handle(ms(3599), Event::Timer).is_empty());
    assert_eq!(vr.state(), State::Backup);
    assert_eq!(
        vr.handle(ms(3600), Event::Timer),
        [send(100), Action::BecomeMaster]
    );
    assert_eq!(vr.state(), State::Master);
    assert_eq!(vr.next_deadline(), Some(ms(4600)));
    assert_eq!(vr.master_address(), Some(ip(1)));
    assert!(!vr.accepts_vip_traffic(), "not owner, accept_mode off");
    let mut c = config(100, 1);
    c.accept_mode = true;
    let mut vr = started(c);
    vr.handle(ms(3600), Event::Timer);
    assert!(vr.accepts_vip_traffic());
}

#[test]
fn backup_priority_zero_sets_skew_time() {
    let mut vr = started(config(100, 1));
    vr.handle(ms(500), advert(ip(2), 200));
    assert!(vr.handle(ms(1000), advert(ip(2), 0)).is_empty());
    assert_eq!(vr.state(), State::Backup);
    assert_eq!(vr.next_deadline(), Some(ms(1000 + 600)));
    assert_eq!(
        vr.handle(ms(1600), Event::Timer),
        [send(100), Action::BecomeMaster]
    );
}

#[test]
fn backup_accepts_higher_or_equal_priority_and_learns_interval() {
    for (priority, their_int) in [(200, 300), (100, 50)] {
        let mut vr = started(config(100, 1));
        let ev = Event::AdvertReceived {
            from: ip(2),
            priority,
            max_adver_int_cs: their_int,
        };
        assert!(vr.handle(ms(1000), ev).is_empty());
        assert_eq!(vr.state(), State::Backup);
        assert_eq!(vr.master_adver_interval_cs(), their_int);
        // Master_Down_Interval recomputed with the learned interval.
        let mdi = u64::from(master_down_interval_cs(Version::V3, 100, their_int)) * 10;
        assert_eq!(vr.next_deadline(), Some(ms(1000 + mdi)));
        assert_eq!(vr.master_address(), Some(ip(2)));
    }
}

#[test]
fn backup_preempt_discards_lower_priority_and_takes_over() {
    let mut vr = started(config(100, 1));
    let deadline = vr.next_deadline();
    for t in [1000, 2000, 3000] {
        let ev = Event::AdvertReceived {
            from: ip(2),
            priority: 50,
            max_adver_int_cs: 300,
        };
        assert!(vr.handle(ms(t), ev).is_empty());
    }
    assert_eq!(vr.next_deadline(), deadline, "timer not reset");
    assert_eq!(
        vr.master_adver_interval_cs(),
        100,
        "interval not learned from a discarded advert"
    );
    assert_eq!(vr.master_address(), None);
    assert_eq!(
        vr.handle(ms(3600), Event::Timer),
        [send(100), Action::BecomeMaster]
    );
}

#[test]
fn backup_nopreempt_accepts_lower_priority_and_stays_backup() {
    let mut c = config(100, 1);
    c.preempt = false;
    let mut vr = started(c);
    for t in (1000..20_000).step_by(1000) {
        assert!(vr.handle(ms(t), advert(ip(2), 50)).is_empty());
        assert!(vr.handle(ms(t), Event::Timer).is_empty());
        assert_eq!(vr.next_deadline(), Some(ms(t + 3600)));
    }
    assert_eq!(vr.state(), State::Backup);
    assert_eq!(vr.master_address(), Some(ip(2)));
}

#[test]
fn preempt_delay_defers_preemption_only() {
    let mut c = config(100, 1);
    c.preempt_delay = Duration::from_secs(10);
    let mut vr = VirtualRouter::new(c).unwrap();
    vr.handle(ms(5000), Event::Startup);
    // Within the delay a lower-priority master is accepted as with nopreempt.
    for t in (6000..15_000).step_by(1000) {
        vr.handle(ms(t), advert(ip(2), 50));
        vr.handle(ms(t), Event::Timer);
        assert_eq!(vr.state(), State::Backup, "t={t}");
    }
    assert_eq!(vr.next_deadline(), Some(ms(14_000 + 3600)));
    // From startup + 10 s on, lower-priority adverts are discarded: takeover one
    // Master_Down_Interval after the last accepted one.
    for t in (15_000..17_600).step_by(1000) {
        vr.handle(ms(t), advert(ip(2), 50));
    }
    assert_eq!(vr.next_deadline(), Some(ms(17_600)));
    assert_eq!(
        vr.handle(ms(17_600), Event::Timer),
        [send(100), Action::BecomeMaster]
    );

    // A dead master is taken over even inside the delay.
    let mut c = config(100, 1);
    c.preempt_delay = Duration::from_secs(60);
    let mut vr = started(c);
    vr.handle(ms(1000), advert(ip(2), 50));
    assert_eq!(
        vr.handle(ms(4600), Event::Timer),
        [send(100), Action::BecomeMaster]
    );
}

#[test]
fn master_adver_timer_sends_and_rearms() {
    let mut vr = master(255, 1);
    assert!(vr.handle(ms(999), Event::Timer).is_empty());
    assert_eq!(vr.handle(ms(1000), Event::Timer), [send(255)]);
    assert_eq!(vr.next_deadline(), Some(ms(2000)));
    // A late wake-up re-arms from now: one advert, not a burst.
    assert_eq!(vr.handle(ms(4500), Event::Timer), [send(255)]);
    assert_eq!(vr.next_deadline(), Some(ms(5500)));
    assert!(vr.handle(ms(4500), Event::Timer).is_empty());
}

#[test]
fn master_priority_zero_sends_at_once_and_resets_timer() {
    let mut vr = master(200, 1); // since 3.21 s
    assert_eq!(vr.handle(ms(5300), advert(ip(2), 0)), [send(200)]);
    assert_eq!(vr.state(), State::Master);
    assert_eq!(vr.next_deadline(), Some(ms(6300)));
}

#[test]
fn master_higher_priority_becomes_backup() {
    let mut vr = master(100, 1);
    let t0 = vr.next_deadline().unwrap() - ms(1000); // when it became master
    let ev = Event::AdvertReceived {
        from: ip(2),
        priority: 101,
        max_adver_int_cs: 200,
    };
    assert_eq!(vr.handle(t0 + ms(500), ev), [Action::BecomeBackup]);
    assert_eq!(vr.state(), State::Backup);
    assert_eq!(vr.master_adver_interval_cs(), 200);
    // Master_Down_Interval = 3 * 200 + 156 * 200 / 256 = 600 + 121 cs.
    assert_eq!(vr.next_deadline(), Some(t0 + ms(500 + 7210)));
    assert_eq!(vr.master_address(), Some(ip(2)));
    let last = vr.history().last().unwrap();
    assert_eq!((last.from, last.to), (State::Master, State::Backup));
    assert!(
        last.reason.contains("higher priority 101 from 10.0.0.2"),
        "{}",
        last.reason
    );
}

#[test]
fn master_equal_priority_tie_break_on_address() {
    // The sender's address is greater: it wins, we step down.
    let mut vr = master(100, 5);
    assert_eq!(
        vr.handle(ms(4000), advert(ip(6), 100)),
        [Action::BecomeBackup]
    );
    assert!(vr
        .history()
        .last()
        .unwrap()
        .reason
        .contains("higher address 10.0.0.6"));
    // The sender's address is smaller (or our own, looped back): we stay.
    let mut vr = master(100, 5);
    assert!(vr.handle(ms(4000), advert(ip(4), 100)).is_empty());
    assert!(vr.handle(ms(4000), advert(ip(5), 100)).is_empty());
    assert_eq!(vr.state(), State::Master);
    // IPv6 compares as 128-bit numbers too.
    let mut c = config(100, 0);
    c.primary_address = "fe80::a".parse().unwrap();
    let mut vr = started(c);
    vr.handle(ms(3600), Event::Timer);
    let from: IpAddr = "fe80::b".parse().unwrap();
    assert_eq!(
        vr.handle(ms(4000), advert(from, 100)),
        [Action::BecomeBackup]
    );
}

#[test]
fn master_ignores_lower_priority() {
    let mut vr = master(200, 1);
    let deadline = vr.next_deadline();
    assert!(vr.handle(ms(4000), advert(ip(9), 199)).is_empty());
    assert_eq!(vr.state(), State::Master);
    assert_eq!(vr.next_deadline(), deadline);
}

#[test]
fn master_shutdown_sends_priority_zero() {
    let mut vr = master(200, 1);
    assert_eq!(
        vr.handle(ms(4000), Event::Shutdown),
        [send(0), Action::BecomeInitialize]
    );
    assert_eq!(vr.state(), State::Initialize);
    assert_eq!(vr.next_deadline(), None);
    assert_eq!(vr.master_address(), None);
    assert!(vr.handle(ms(9000), Event::Timer).is_empty());
}

#[test]
fn priority_tracking() {
    // Master announces a change at once and re-arms its Adver_Timer.
    let mut vr = master(200, 1); // since 3.21 s
    assert_eq!(vr.handle(ms(4100), Event::PriorityChanged(90)), [send(90)]);
    assert_eq!(vr.priority(), 90);
    assert_eq!(vr.next_deadline(), Some(ms(5100)));
    assert!(
        vr.handle(ms(4150), Event::PriorityChanged(90)).is_empty(),
        "no change, no advert"
    );
    // ... and now loses to a backup it used to outrank.
    assert_eq!(
        vr.handle(ms(4200), advert(ip(2), 150)),
        [Action::BecomeBackup]
    );
    // Clamped to 1..=254.
    assert!(vr.handle(ms(4300), Event::PriorityChanged(0)).is_empty());
    assert_eq!(vr.priority(), 1);
    vr.handle(ms(4300), Event::PriorityChanged(255));
    assert_eq!(vr.priority(), 254);
    // A backup's new priority decides preemption.
    let mut vr = started(config(100, 1));
    vr.handle(ms(500), advert(ip(2), 120));
    vr.handle(ms(600), Event::PriorityChanged(130));
    let deadline = vr.next_deadline();
    vr.handle(ms(1500), advert(ip(2), 120));
    assert_eq!(
        vr.next_deadline(),
        deadline,
        "now outranks the master: discards its adverts"
    );
    // The owner keeps 255.
    let mut vr = master(255, 1);
    assert!(vr.handle(ms(100), Event::PriorityChanged(10)).is_empty());
    assert_eq!(vr.next_deadline(), Some(ms(1000)));
    assert_eq!(vr.priority(), 255);
}

#[test]
fn v2_keeps_its_interval_and_uses_v2_skew() {
    let mut c = config(100, 1);
    c.version = Version::V2;
    c.adver_int_cs = 300;
    let mut vr = started(c);
    assert_eq!(vr.next_deadline(), Some(ms(9600)));
    let ev = Event::AdvertReceived {
        from: ip(2),
        priority: 200,
        max_adver_int_cs: 100,
    };
    vr.handle(ms(1000), ev);
    assert_eq!(vr.master_adver_interval_cs(), 300);
    assert_eq!(vr.next_deadline(), Some(ms(10_600)));
}

#[test]
fn decoded_advert_becomes_event() {
    use crate::vrrp::packet::{self, Advert, Configured, Family};
    let ad = Advert::v3(7, 150, 250, vec![ip(100)]);
    let bytes = packet::encode_ip_packet(ip(2), None, &ad).unwrap();
    let cfg = Configured {
        addresses: Some(vec![ip(100)]),
        ..Configured::new(7, Family::V4, Version::V3)
    };
    let rx = packet::decode_ip(&bytes, &[cfg]).unwrap();
    let ev = Event::from(&rx);
    assert_eq!(
        ev,
        Event::AdvertReceived {
            from: ip(2),
            priority: 150,
            max_adver_int_cs: 250
        }
    );
    let mut vr = started(config(100, 1));
    vr.handle(ms(10), ev);
    assert_eq!(vr.master_adver_interval_cs(), 250);
    assert_eq!(vr.master_address(), Some(ip(2)));
}

#[test]
fn history_is_bounded() {
    let mut vr = VirtualRouter::new(config(100, 1)).unwrap();
    for i in 0..40u64 {
        vr.handle(ms(i * 10), Event::Startup);
        vr.handle(ms(i * 10 + 5), Event::Shutdown);
    }
    assert_eq!(vr.history().len(), HISTORY_LEN);
    let first = vr.history().next().unwrap();
    assert_eq!(first.at, ms(240), "the oldest 48 of 80 dropped");
    assert_eq!(vr.history().last().unwrap().to, State::Initialize);
}

// ---- Simulation ----------------------------------------------------------------

/// Routers on one link with a fake clock. Adverts arrive `LATENCY` after they are sent,
/// to every other running router, while the link is up.
struct Sim {
    now: Duration,
    nodes: Vec<Node>,
    link_up: bool,
    in_flight: Vec<(Duration, usize, Event)>,
}

struct Node {
    vr: VirtualRouter,
    running: bool,
    /// When this node last received an advert (for the takeover bound).
    last_rx: Option<Duration>,
    /// When this node last entered Master.
    became_master: Option<Duration>,
}

const LATENCY: Duration = Duration::from_millis(1);

impl Sim {
    fn new(configs: Vec<RouterConfig>) -> Sim {
        let nodes = configs
            .into_iter()
            .map(|c| Node {
                vr: VirtualRouter::new(c).unwrap(),
                running: false,
                last_rx: None,
                became_master: None,
            })
            .collect();
        Sim {
            now: Duration::ZERO,
            nodes,
            link_up: true,
            in_flight: Vec::new(),
        }
    }

    fn start(&mut self, i: usize) {
        self.nodes[i].running = true;
        self.dispatch(i, Event::Startup);
    }

    /// Power loss: no priority-0 advert; adverts already on the wire still arrive.
    fn crash(&mut self, i: usize) {
        let cfg = self.nodes[i].vr.config().clone();
        self.nodes[i] = Node {
            vr: VirtualRouter::new(cfg).unwrap(),
            running: false,
            last_rx: None,
            became_master: None,
        };
    }

    fn dispatch(&mut self, i: usize, event: Event) {
        for action in self.nodes[i].vr.handle(self.now, event) {
            match action {
                Action::SendAdvert {
                    priority,
                    max_adver_int_cs,
                } if self.link_up => {
                    let from = self.nodes[i].vr.config().primary_address;
                    for j in (0..self.nodes.len()).filter(|&j| j != i) {
                        let ev = Event::AdvertReceived {
                            from,
                            priority,
                            max_adver_int_cs,
                        };
                        self.in_flight.push((self.now + LATENCY, j, ev));
                    }
                }
                Action::BecomeMaster => self.nodes[i].became_master = Some(self.now),
                _ => {}
            }
        }
    }

    /// Process every timer and delivery up to and including `until`, in time order
    /// (deliveries before timers at the same instant).
    fn run_until(&mut self, until: Duration) {
        loop {
            let delivery = self
                .in_flight
                .iter()
                .enumerate()
                .min_by_key(|(_, (t, _, _))| *t)
                .map(|(k, (t, _, _))| (*t, k));
            let timer = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].running)
                .filter_map(|i| self.nodes[i].vr.next_deadline().map(|t| (t, i)))
                .min();
            match (delivery, timer) {
                (Some((t, k)), timer) if t <= until && timer.is_none_or(|(tt, _)| t <= tt) => {
                    let (_, j, ev) = self.in_flight.remove(k);
                    self.now = t;
                    if self.nodes[j].running {
                        self.nodes[j].last_rx = Some(t);
                        self.dispatch(j, ev);
                    }
                }
                (_, Some((t, i))) if t <= until => {
                    self.now = t;
                    self.dispatch(i, Event::Timer);
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn state(&self, i: usize) -> State {
        self.nodes[i].vr.state()
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].running && self.state(i) == State::Master)
            .collect()
    }

    /// Step in `step` increments, asserting `check` after each.
    fn run_checking(&mut self, until: Duration, step: Duration, check: impl Fn(&Sim)) {
        while self.now < until {
            let next = (self.now + step).min(until);
            self.run_until(next);
            check(self);
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn sim_higher_priority_wins_election() {
    let mut sim = Sim::new(vec![config(200, 1), config(100, 2)]);
    sim.start(0);
    sim.start(1);
    sim.run_until(secs(10));
    assert_eq!(sim.masters(), [0]);
    assert_eq!(sim.state(1), State::Backup);
    // A's Master_Down_Interval (3 s + 21 cs) is the shorter one.
    assert_eq!(sim.nodes[0].became_master, Some(ms(3210)));
    assert_eq!(sim.nodes[1].vr.master_address(), Some(ip(1)));
    // Steady state: one master all along.
    sim.run_checking(secs(60), ms(50), |s| assert_eq!(s.masters(), [0]));
}

#[test]
fn sim_equal_priority_higher_address_wins() {
    let mut sim = Sim::new(vec![config(100, 1), config(100, 2)]);
    sim.start(0);
    sim.start(1);
    // Same timers: both become master at 3.6 s, then the tie-break settles it.
    sim.run_until(ms(3600));
    assert_eq!(sim.masters(), [0, 1]);
    sim.run_until(ms(3601));
    assert_eq!(sim.masters(), [1]);
    sim.run_checking(secs(30), ms(50), |s| assert_eq!(s.masters(), [1]));
}

#[test]
fn sim_master_crash_backup_takes_over_within_master_down_interval() {
    let mut sim = Sim::new(vec![config(200, 1), config(100, 2)]);
    sim.start(0);
    sim.start(1);
    sim.run_until(ms(10_500));
    sim.crash(0);
    let last_rx = sim.nodes[1].last_rx.unwrap();
    sim.run_until(secs(20));
    assert_eq!(sim.masters(), [1]);
    // 3 * Master_Adver_Interval + Skew_Time = 360 cs after the last advert heard.
    let took_over = sim.nodes[1].became_master.unwrap();
    assert_eq!(took_over, last_rx + ms(3600));
    assert!(took_over - ms(10_500) <= ms(3600));
}

#[test]
fn sim_restart_preempts_or_not_per_config() {
    for preempt in [true, false] {
        let mut a = config(200, 1);
        a.preempt = preempt;
        let mut sim = Sim::new(vec![a, config(100, 2)]);
        sim.start(0);
        sim.start(1);
        sim.run_until(secs(10));
        sim.crash(0);
        sim.run_until(secs(20));
        assert_eq!(sim.masters(), [1]);
        sim.start(0);
        sim.run_until(secs(40));
        if preempt {
            // A discards B's lower-priority adverts, its own Master_Down_Timer runs out
            // (3.21 s), it advertises 200 and B steps down on hearing it.
            assert_eq!(sim.masters(), [0], "preempt");
            assert_eq!(sim.nodes[0].became_master, Some(secs(20) + ms(3210)));
            assert_eq!(sim.state(1), State::Backup);
        } else {
            assert_eq!(sim.masters(), [1], "nopreempt");
            assert_eq!(sim.state(0), State::Backup);
        }
    }
}

#[test]
fn sim_preempt_delay_postpones_takeover_after_restart() {
    let mut a = config(200, 1);
    a.preempt_delay = secs(15);
    let mut sim = Sim::new(vec![a, config(100, 2)]);
    sim.start(1);
    sim.run_until(secs(10));
    assert_eq!(sim.masters(), [1]);
    sim.start(0); // at 10 s: no preemption before 25 s
    sim.run_checking(secs(25), ms(50), |s| assert_eq!(s.masters(), [1]));
    sim.run_until(secs(30));
    assert_eq!(sim.masters(), [0]);
    let at = sim.nodes[0].became_master.unwrap();
    assert!(
        at > secs(25) && at <= secs(25) + ms(3210),
        "took over at {at:?}"
    );
}

#[test]
fn sim_graceful_shutdown_fast_takeover() {
    let mut sim = Sim::new(vec![config(200, 1), config(100, 2), config(50, 3)]);
    for i in 0..3 {
        sim.start(i);
    }
    sim.run_until(ms(10_500));
    assert_eq!(sim.masters(), [0]);
    sim.dispatch(0, Event::Shutdown);
    sim.nodes[0].running = false;
    sim.run_until(secs(20));
    // The priority-0 advert arrives after LATENCY; the priority-100 backup's
    // Skew_Time (60 cs) is shorter than the priority-50 one's (80 cs).
    assert_eq!(sim.masters(), [1]);
    assert_eq!(
        sim.nodes[1].became_master,
        Some(ms(10_500) + LATENCY + ms(600))
    );
    assert_eq!(sim.state(2), State::Backup);
}

#[test]
fn sim_split_brain_heals_within_one_interval() {
    let mut sim = Sim::new(vec![config(200, 1), config(100, 2)]);
    sim.start(0);
    sim.start(1);
    sim.run_until(secs(10));
    sim.link_up = false;
    sim.in_flight.clear();
    sim.run_until(secs(15));
    assert_eq!(sim.masters(), [0, 1], "both master while the link is cut");
    sim.link_up = true;
    // Within one Advertisement_Interval (plus delivery) A's next advert reaches B.
    sim.run_until(secs(16) + LATENCY);
    assert_eq!(sim.masters(), [0]);
    sim.run_checking(secs(60), ms(50), |s| assert_eq!(s.masters(), [0]));
}

#[test]
fn resume_after_restart_is_master_at_once_and_yields_to_a_higher_peer() {
    let mut r = VirtualRouter::new(config(100, 1)).unwrap();
    let actions = r.handle(ms(0), Event::Resume);
    assert_eq!(actions, [send(100), Action::BecomeMaster]);
    assert_eq!(r.state(), State::Master);
    assert_eq!(r.next_deadline(), Some(ms(1000)));
    // Resume is a startup: ignored once running.
    assert!(r.handle(ms(5), Event::Resume).is_empty());
    // The peer took over meanwhile with a higher priority: ordinary rules apply.
    let actions = r.handle(ms(10), advert(ip(2), 150));
    assert_eq!(actions, [Action::BecomeBackup]);
    assert_eq!(r.state(), State::Backup);
}
