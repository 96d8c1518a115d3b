//! The VRRP state machine of RFC 5798 §6.4 (and RFC 3768 §6.4 for VRRPv2) as a pure
//! value: events and the current time go in, actions and the next wake-up time come
//! out.
//!
//! Nothing here reads a clock or touches a socket. Time is a [`Duration`] since any
//! fixed origin the caller picks (a monotonic `Instant` taken at daemon start, or a
//! fake clock in tests), which is what makes the timer rules — Skew_Time,
//! Master_Down_Interval, preemption — testable to the centisecond. The caller's loop
//! is:
//!
//! 1. feed [`Event::Startup`] once, and [`Event::AdvertReceived`] for every advert that
//!    passed [`super::packet`]'s checks for this VRID;
//! 2. sleep until [`VirtualRouter::next_deadline`] (or the next packet), then feed
//!    [`Event::Timer`];
//! 3. carry out every returned [`Action`] in order.
//!
//! Two RFC timers exist (Adver_Timer in Master, Master_Down_Timer in Backup) but never
//! at once, so one deadline is enough.
//!
//! Beyond the RFC: `preempt_delay` (keepalived's extension) and priority tracking
//! ([`Event::PriorityChanged`]); both are documented where they act.

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::packet::{Received, Version, MAX_ADVER_INT_V3_CS};

/// How many transitions [`VirtualRouter::history`] keeps.
pub const HISTORY_LEN: usize = 32;

/// Priority of the router that owns the virtual addresses (RFC 5798 §5.2.4).
pub const OWNER_PRIORITY: u8 = 255;

/// The three states of RFC 5798 §6.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Initialize,
    Backup,
    Master,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Initialize => "initialize",
            State::Backup => "backup",
            State::Master => "master",
        })
    }
}

/// One virtual router's configuration (RFC 5798 §6.1 parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// 1..=255.
    pub vrid: u8,
    /// 1..=255; 255 means this router owns the virtual addresses and starts as Master.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds. VRRPv3: 1..=4095; VRRPv2: whole seconds
    /// (a multiple of 100, at most 25500).
    pub adver_int_cs: u16,
    /// Preempt_Mode: a higher-priority backup takes over from a lower-priority master.
    pub preempt: bool,
    /// keepalived's `preempt_delay`: for this long after [`Event::Startup`] a backup
    /// does not preempt (it treats lower-priority adverts as if `preempt` were false),
    /// so a node that just booted does not grab the addresses before its own services
    /// are ready. Zero disables it. It never delays taking over from a dead master.
    pub preempt_delay: Duration,
    /// Accept_Mode: the master accepts packets addressed to the virtual addresses even
    /// when it does not own them. Not used by the election; read through
    /// [`VirtualRouter::accepts_vip_traffic`].
    pub accept_mode: bool,
    pub version: Version,
    /// The local primary address on the interface: the source of our adverts and the
    /// tie-breaker between equal priorities (RFC 5798 §6.4.3).
    pub primary_address: IpAddr,
}

/// Why a [`RouterConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("VRID 0 is not valid (1..=255)")]
    Vrid,
    #[error("priority 0 is reserved for a master that resigns (1..=255)")]
    Priority,
    #[error("advert interval {0} cs is out of range for this VRRP version")]
    Interval(u16),
    #[error("VRRPv2 is IPv4 only")]
    V2NotIpv4,
}

/// What happens to a virtual router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The interface is up and the router should run (RFC 5798 §6.4.1).
    Startup,
    /// Stop: a Master resigns with a priority-0 advert so a backup takes over after
    /// only Skew_Time.
    Shutdown,
    /// A valid advert for this VRID (already checked by [`super::packet`]).
    AdvertReceived {
        from: IpAddr,
        priority: u8,
        max_adver_int_cs: u16,
    },
    /// [`VirtualRouter::next_deadline`] has passed. Spurious or early calls are harmless.
    Timer,
    /// Startup of a router that was Master before its process restarted and still
    /// holds the virtual addresses (not in the RFC): it resumes as Master at once and
    /// advertises, instead of dropping the addresses and waiting a Master_Down_Interval
    /// as Backup, which would make its peer take over and then be preempted back: two
    /// failovers for one restart. If the peer did take over meanwhile, the ordinary
    /// rules settle it with the first adverts (higher priority, then higher address).
    Resume,
    /// Priority tracking (not in the RFC): the effective priority changed, e.g. because a
    /// tracked health check failed. Clamped to 1..=254; an address owner keeps 255,
    /// since owning the addresses is configuration, not health.
    PriorityChanged(u8),
}

impl From<&Received> for Event {
    /// The event for an advert that passed [`super::packet`]'s checks.
    fn from(rx: &Received) -> Event {
        Event::AdvertReceived {
            from: rx.src,
            priority: rx.advert.priority,
            max_adver_int_cs: rx.advert.max_adver_int_cs,
        }
    }
}

/// What the caller must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send an advert now with this priority and interval.
    SendAdvert { priority: u8, max_adver_int_cs: u16 },
    /// Entered Master: add the virtual addresses, send gratuitous ARP (IPv4) or
    /// unsolicited Neighbor Advertisements (IPv6), start answering for the virtual MAC.
    BecomeMaster,
    /// Entered Backup: make sure the virtual addresses are not held (also emitted on the
    /// first startup, so a leftover from a crash is cleared).
    BecomeBackup,
    /// Entered Initialize (shutdown): release the virtual addresses if held.
    BecomeInitialize,
}

/// One state change, for the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub at: Duration,
    pub from: State,
    pub to: State,
    pub reason: String,
}

/// RFC 5798 §6.1 Skew_Time in centiseconds: ((256 - Priority) * Master_Adver_Interval)
/// / 256, integer arithmetic as written. RFC 3768 §6.1 has (256 - Priority) / 256
/// seconds instead, independent of the interval.
pub fn skew_time_cs(version: Version, priority: u8, master_adver_int_cs: u16) -> u32 {
    let weight = 256 - u32::from(priority);
    match version {
        Version::V3 => weight * u32::from(master_adver_int_cs) / 256,
        Version::V2 => weight * 100 / 256,
    }
}

/// RFC 5798 §6.1 Master_Down_Interval in centiseconds: 3 * Master_Adver_Interval +
/// Skew_Time.
pub fn master_down_interval_cs(version: Version, priority: u8, master_adver_int_cs: u16) -> u32 {
    3 * u32::from(master_adver_int_cs) + skew_time_cs(version, priority, master_adver_int_cs)
}

fn cs(centis: u32) -> Duration {
    Duration::from_millis(u64::from(centis) * 10)
}

/// One virtual router: RFC 5798 §6.4 with its timers as deadlines.
#[derive(Debug, Clone)]
pub struct VirtualRouter {
    config: RouterConfig,
    state: State,
    /// Effective priority: the configured one unless tracking changed it.
    priority: u8,
    /// Master_Adver_Interval: learned from the master's adverts in VRRPv3 (§6.4.2).
    master_adver_int_cs: u16,
    /// Adver_Timer (Master) or Master_Down_Timer (Backup); never both.
    deadline: Option<Duration>,
    started_at: Duration,
    master: Option<IpAddr>,
    history: VecDeque<Transition>,
}

impl VirtualRouter {
    /// A router in Initialize; nothing happens until [`Event::Startup`].
    pub fn new(config: RouterConfig) -> Result<VirtualRouter, ConfigError> {
        if config.vrid == 0 {
            return Err(ConfigError::Vrid);
        }
        if config.priority == 0 {
            return Err(ConfigError::Priority);
        }
        let int = config.adver_int_cs;
        let int_ok = match config.version {
            Version::V3 => (1..=MAX_ADVER_INT_V3_CS).contains(&int),
            Version::V2 => int.is_multiple_of(100) && (100..=25_500).contains(&int),
        };
        if !int_ok {
            return Err(ConfigError::Interval(int));
        }
        if config.version == Version::V2 && config.primary_address.is_ipv6() {
            return Err(ConfigError::V2NotIpv4);
        }
        Ok(VirtualRouter {
            priority: config.priority,
            master_adver_int_cs: config.adver_int_cs,
            config,
            state: State::Initialize,
            deadline: None,
            started_at: Duration::ZERO,
            master: None,
            history: VecDeque::with_capacity(HISTORY_LEN),
        })
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The effective priority (configured, or as changed by tracking).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// When to feed [`Event::Timer`] next; `None` in Initialize.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The current master as last known: ourselves in Master, the sender of the last
    /// accepted advert in Backup (kept after it resigns, until another is heard),
    /// `None` before any is heard or in Initialize.
    pub fn master_address(&self) -> Option<IpAddr> {
        self.master
    }

    /// Master_Adver_Interval in centiseconds.
    pub fn master_adver_interval_cs(&self) -> u16 {
        self.master_adver_int_cs
    }

    /// Skew_Time for the current priority and Master_Adver_Interval.
    pub fn skew_time(&self) -> Duration {
        cs(skew_time_cs(
            self.config.version,
            self.priority,
            self.master_adver_int_cs,
        ))
    }

    /// Master_Down_Interval for the current priority and Master_Adver_Interval.
    pub fn master_down_interval(&self) -> Duration {
        cs(master_down_interval_cs(
            self.config.version,
            self.priority,
            self.master_adver_int_cs,
        ))
    }

    /// Whether packets addressed to the virtual addresses should be accepted locally:
    /// only in Master, and only when we own them or Accept_Mode is on (RFC 5798 §6.4.3).
    pub fn accepts_vip_traffic(&self) -> bool {
        self.state == State::Master && (self.config.accept_mode || self.is_owner())
    }

    /// The last [`HISTORY_LEN`] transitions, oldest first.
    pub fn history(&self) -> impl ExactSizeIterator<Item = &Transition> {
        self.history.iter()
    }

    fn is_owner(&self) -> bool {
        self.config.priority == OWNER_PRIORITY
    }

    fn adver_interval(&self) -> Duration {
        cs(u32::from(self.config.adver_int_cs))
    }

    fn send_advert(&self, priority: u8) -> Action {
        Action::SendAdvert {
            priority,
            max_adver_int_cs: self.config.adver_int_cs,
        }
    }

    fn transition(&mut self, now: Duration, to: State, reason: String) {
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(Transition {
            at: now,
            from: self.state,
            to,
            reason,
        });
        self.state = to;
    }

    /// Feed one event at time `now` (monotonic, same origin for every call) and get
    /// back what to do.
    ///
    /// Adverts, per RFC 5798 §6.4.2 / §6.4.3:
    /// - Backup, priority 0: Master_Down_Timer := Skew_Time.
    /// - Backup, priority ≥ ours, or `preempt` off (or still inside `preempt_delay`):
    ///   learn Master_Adver_Interval (v3), Master_Down_Timer := Master_Down_Interval.
    /// - Backup, lower priority with `preempt` on: discarded, the timer keeps running.
    /// - Master, priority 0: advertise at once, Adver_Timer := Advertisement_Interval.
    /// - Master, higher priority, or equal priority from a greater address than our
    ///   primary address: become Backup.
    /// - Master, lower priority: discarded. The other master then hears our next
    ///   scheduled advert, at most one interval later; a caller wanting that sooner may
    ///   send an advert of its own at once (keepalived does). This type does not, to
    ///   keep the advert rate fixed.
    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Action> {
        match (self.state, event) {
            (State::Initialize, Event::Startup) => self.startup(now),
            (State::Initialize, Event::Resume) => {
                self.started_at = now;
                self.master_adver_int_cs = self.config.adver_int_cs;
                self.become_master(now, "resumed: addresses still held after a restart".into())
            }
            (_, Event::PriorityChanged(p)) => self.priority_changed(now, p),
            (State::Initialize, _) => Vec::new(),
            (_, Event::Startup | Event::Resume) => Vec::new(),
            (State::Backup, Event::Shutdown) => {
                // §6.4.2: cancel the Master_Down_Timer, go to Initialize.
                self.deadline = None;
                self.transition(now, State::Initialize, "shutdown".into());
                vec![Action::BecomeInitialize]
            }
            (State::Master, Event::Shutdown) => {
                // §6.4.3: cancel the Adver_Timer, resign with priority 0.
                self.deadline = None;
                self.master = None;
                self.transition(now, State::Initialize, "shutdown (sent priority 0)".into());
                vec![self.send_advert(0), Action::BecomeInitialize]
            }
            (State::Backup, Event::Timer) => self.backup_timer(now),
            (State::Master, Event::Timer) => self.master_timer(now),
            (
                State::Backup,
                Event::AdvertReceived {
                    from,
                    priority,
                    max_adver_int_cs,
                },
            ) => self.backup_advert(now, from, priority, max_adver_int_cs),
            (
                State::Master,
                Event::AdvertReceived {
                    from,
                    priority,
                    max_adver_int_cs,
                },
            ) => self.master_advert(now, from, priority, max_adver_int_cs),
        }
    }

    /// §6.4.1.
    fn startup(&mut self, now: Duration) -> Vec<Action> {
        self.started_at = now;
        self.master_adver_int_cs = self.config.adver_int_cs;
        if self.priority == OWNER_PRIORITY {
            self.become_master(now, "startup as address owner (priority 255)".into())
        } else {
            self.deadline = Some(now + self.master_down_interval());
            self.master = None;
            self.transition(now, State::Backup, "startup".into());
            vec![Action::BecomeBackup]
        }
    }

    /// Send an advert, take the addresses, arm the Adver_Timer (§6.4.1, §6.4.2).
    fn become_master(&mut self, now: Duration, reason: String) -> Vec<Action> {
        self.deadline = Some(now + self.adver_interval());
        self.master = Some(self.config.primary_address);
        self.transition(now, State::Master, reason);
        vec![self.send_advert(self.priority), Action::BecomeMaster]
    }

    fn backup_timer(&mut self, now: Duration) -> Vec<Action> {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                self.become_master(now, "master down timer expired".into())
            }
            _ => Vec::new(),
        }
    }

    fn master_timer(&mut self, now: Duration) -> Vec<Action> {
        match self.deadline {
            Some(deadline) if now >= deadline => {
                // Re-armed from `now`, not from the missed deadline: a late wake-up
                // must not turn into a burst of adverts.
                self.deadline = Some(now + self.adver_interval());
                vec![self.send_advert(self.priority)]
            }
            _ => Vec::new(),
        }
    }

    /// VRRPv3 learns the master's interval; VRRPv2 requires it to equal ours (checked
    /// on receipt, RFC 3768 §7.1) and so keeps its own. A 0 from the wire would make
    /// the timers fire continuously, so it counts as 1 cs.
    fn learn_interval(&mut self, max_adver_int_cs: u16) {
        if self.config.version == Version::V3 {
            self.master_adver_int_cs = max_adver_int_cs.clamp(1, MAX_ADVER_INT_V3_CS);
        }
    }

    /// §6.4.2 "If an ADVERTISEMENT is received".
    fn backup_advert(
        &mut self,
        now: Duration,
        from: IpAddr,
        priority: u8,
        max_adver_int_cs: u16,
    ) -> Vec<Action> {
        if priority == 0 {
            // The master resigned: take over after only Skew_Time, so the
            // highest-priority backup (smallest skew) wins the race.
            self.deadline = Some(now + self.skew_time());
            return Vec::new();
        }
        let in_preempt_delay = now < self.started_at + self.config.preempt_delay;
        if !self.config.preempt || priority >= self.priority || in_preempt_delay {
            self.learn_interval(max_adver_int_cs);
            self.deadline = Some(now + self.master_down_interval());
            self.master = Some(from);
        }
        // else: preempting. The advert is discarded and the Master_Down_Timer keeps
        // running, so this backup takes over when it expires.
        Vec::new()
    }

    /// §6.4.3 "If an ADVERTISEMENT is received" (lower priority: see [`Self::handle`]).
    fn master_advert(
        &mut self,
        now: Duration,
        from: IpAddr,
        priority: u8,
        max_adver_int_cs: u16,
    ) -> Vec<Action> {
        if priority == 0 {
            // The resigning router may have been master moments ago; assert ourselves
            // at once rather than waiting for the Adver_Timer.
            self.deadline = Some(now + self.adver_interval());
            return vec![self.send_advert(self.priority)];
        }
        let higher = priority > self.priority;
        let tie_won = priority == self.priority && from > self.config.primary_address;
        if !(higher || tie_won) {
            return Vec::new();
        }
        self.learn_interval(max_adver_int_cs);
        self.deadline = Some(now + self.master_down_interval());
        self.master = Some(from);
        let reason = if higher {
            format!("higher priority {priority} from {from}")
        } else {
            format!("equal priority {priority} from higher address {from}")
        };
        self.transition(now, State::Backup, reason);
        vec![Action::BecomeBackup]
    }

    /// Priority tracking. A master announces the new priority at once, so backups that
    /// now outrank it can preempt without waiting an interval; a backup's new priority
    /// shapes its next Master_Down_Timer and its preemption decisions.
    fn priority_changed(&mut self, now: Duration, priority: u8) -> Vec<Action> {
        if self.is_owner() {
            return Vec::new();
        }
        let priority = priority.clamp(1, OWNER_PRIORITY - 1);
        if priority == self.priority {
            return Vec::new();
        }
        self.priority = priority;
        if self.state == State::Master {
            self.deadline = Some(now + self.adver_interval());
            return vec![self.send_advert(priority)];
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
