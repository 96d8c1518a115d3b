//! The daemon's state between the configuration, the health checks and the data plane:
//! it owns the running config, the [`HealthBook`] and the checker tasks, and turns every
//! health transition into exactly one apply (one atomic table swap of the service it
//! touches; `Balancer::apply` skips services whose effective spec did not change).
//!
//! Order matters for operators and tests alike: a transition is logged (and its hook
//! run) only after the data plane serves the new set, so "backend down" in the log
//! means no new flow goes there any more.
//!
//! The supervisor never forgets what it wants: an apply that fails leaves the data
//! plane marked out of sync ([`convergence`]), and [`Supervisor::reconcile`] applies
//! the desired state again with backoff until it goes through. A reload is all or
//! nothing: if its apply fails, the previous configuration is applied again.

pub mod convergence;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Result;
use lb_common::VipKey;
use tokio::sync::mpsc;

use self::convergence::{Convergence, SyncStatus};
use crate::{
    balancer::{ApplyError, ApplyReport, Balancer},
    config::{service::vip_key, Config, Fallback, MacAddr, OnFailure, ServiceSpec},
    dataplane::{addr::describe_vip, DataPlane},
    health::{
        book::{HealthBook, Probe, Saved},
        latency::{ProbeLabels, ProbeLatency},
        monitor::Checkers,
        notify::{Event, Hook, Notifier},
        state::Transition,
        CheckResult, Health,
    },
    nexthop::{self, Hop, NextHops},
};

/// Results queued from checker tasks before they wait for the daemon.
const PROBE_QUEUE: usize = 4096;

pub struct Supervisor {
    config: Config,
    /// Where backend health is saved for the next daemon (restart without a flap).
    state_file: Option<PathBuf>,
    book: HealthBook,
    checkers: Checkers,
    notifier: Notifier,
    /// Per service: whether a real backend took new flows at the last apply.
    available: HashMap<VipKey, bool>,
    probe_latency: ProbeLatency,
    /// VIPs a VRRP peer holds: their services are not balanced here.
    standby: Vec<IpAddr>,
    /// Whether checker tasks run (false: results only through `on_probe`).
    probing: bool,
    /// Whether the data plane serves `effective()`, and when to retry if not.
    sync: Convergence,
    /// Transitions recorded but not yet served (their apply failed): announced once an
    /// apply goes through, so the log never says "down" while new flows still go there.
    unannounced: Vec<(VipKey, IpAddr, Transition)>,
    /// Next hops learned from the kernel for backends without a configured MAC.
    hops: NextHops,
}

impl Supervisor {
    /// Applies `config` (every backend in its check's initial state) and starts the
    /// checks. Returns the supervisor and the channel its probe results arrive on;
    /// feed each to [`Supervisor::on_probe`].
    ///
    /// `state_file`: health saved by a previous daemon is taken over from it (so a
    /// backend that was down stays out instead of flapping in and out again), and the
    /// current health is saved there on every transition.
    ///
    /// `hops`: the next hops learned so far (`nexthop::kernel`), so the first apply
    /// already serves backends without a configured MAC.
    pub fn start(
        balancer: &mut Balancer,
        dp: &mut dyn DataPlane,
        config: Config,
        state_file: Option<PathBuf>,
        hops: NextHops,
    ) -> Result<(Supervisor, mpsc::Receiver<Probe>)> {
        Self::open(balancer, dp, config, state_file, true, hops)
    }

    /// [`Supervisor::start`] without checker tasks: probe results come only from the
    /// caller's [`Supervisor::on_probe`] (tests of the control plane, which must not
    /// send probes anywhere).
    pub fn without_checks(
        balancer: &mut Balancer,
        dp: &mut dyn DataPlane,
        config: Config,
    ) -> Result<(Supervisor, mpsc::Receiver<Probe>)> {
        Self::open(balancer, dp, config, None, false, NextHops::default())
    }

    fn open(
        balancer: &mut Balancer,
        dp: &mut dyn DataPlane,
        config: Config,
        state_file: Option<PathBuf>,
        probing: bool,
        hops: NextHops,
    ) -> Result<(Supervisor, mpsc::Receiver<Probe>)> {
        let (tx, rx) = mpsc::channel(PROBE_QUEUE);
        let mut book = HealthBook::default();
        book.sync(&config.services);
        if let Some(path) = &state_file {
            match load_saved(path) {
                Ok(Some(saved)) => {
                    let n = book.restore(&saved);
                    tracing::info!(file = %path.display(), backends = n, "health taken over from the previous daemon");
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(file = %path.display(), "ignoring saved health: {e:#}"),
            }
        }
        let mut sup = Supervisor {
            checkers: Checkers::start(&[], &tx),
            state_file,
            config,
            book,
            notifier: Notifier::default(),
            available: HashMap::new(),
            probe_latency: ProbeLatency::default(),
            standby: Vec::new(),
            probing,
            sync: Convergence::default(),
            unannounced: Vec::new(),
            hops,
        };
        sup.book
            .set_unreachable(sup.unreachable(&sup.config.services));
        // A daemon that cannot serve its config at start says so and exits.
        let effective = sup.effective();
        apply_config(balancer, dp, &effective)?;
        sup.note_availability();
        if probing {
            sup.checkers.update(&sup.config.services);
        }
        Ok((sup, rx))
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn book(&self) -> &HealthBook {
        &self.book
    }

    /// Health-check latencies observed so far (for the metrics endpoint).
    pub fn probe_latency(&self) -> &ProbeLatency {
        &self.probe_latency
    }

    /// Number of running checks.
    pub fn checks(&self) -> usize {
        self.checkers.len()
    }

    /// Starts again every checker task that panicked (its backend's health would
    /// otherwise freeze where it was), logging each. Call periodically.
    pub fn restart_panicked_checks(&mut self) {
        for ((key, backend), why) in self.checkers.reap() {
            tracing::error!(
                service = %describe_vip(&key), %backend,
                "health checker panicked ({why}); restarted"
            );
        }
    }

    /// Checker tasks restarted after a panic, since start (for the metrics).
    pub fn check_restarts(&self) -> u64 {
        self.checkers.restarts()
    }

    /// What the data plane should serve now.
    pub fn effective(&self) -> Config {
        let mut services = self.book.effective(&self.config.services);
        self.finish(&mut services);
        Config {
            encap_sources: self.config.encap_sources,
            services,
            hash_seed: self.config.hash_seed.clone(),
            icmp_toobig_per_sec: self.config.icmp_toobig_per_sec,
            conn_table: self.config.conn_table.clone(),
            ..Config::default()
        }
    }

    /// The last steps from the health book's service set to what is served: VRRP
    /// standby, and the learned MAC of every backend without a configured one.
    fn finish(&self, services: &mut [ServiceSpec]) {
        for s in services {
            s.standby = self.standby.contains(&s.vip);
            for b in s.backends.iter_mut().filter(|b| b.mac.is_none()) {
                b.mac = self.hops.mac(b.address).map(MacAddr);
            }
        }
    }

    /// Backends of `services` whose learned next hop keeps them from new flows.
    fn unreachable(&self, services: &[ServiceSpec]) -> HashSet<(VipKey, IpAddr)> {
        let mut out = HashSet::new();
        for s in services {
            let key = vip_key(s);
            let sorry = match &s.fallback {
                Fallback::SorryServer(b) => Some(&**b),
                _ => None,
            };
            for b in s.backends.iter().chain(sorry).filter(|b| b.mac.is_none()) {
                if nexthop::blocked(s.mode, self.hops.get(b.address)).is_some() {
                    out.insert((key, b.address));
                }
            }
        }
        out
    }

    /// The next hops learned for backends without a configured MAC.
    pub fn next_hops(&self) -> &NextHops {
        &self.hops
    }

    /// Why `backend` of `svc` takes no new flows because of its next hop, if it does not.
    pub fn next_hop_problem(&self, svc: &ServiceSpec, backend: IpAddr) -> Option<String> {
        let spec = svc.backends.iter().find(|b| b.address == backend)?;
        if spec.mac.is_some() {
            return None;
        }
        nexthop::blocked(svc.mode, self.hops.get(backend))
    }

    /// The addresses whose next hop must be learned (those without a configured MAC).
    pub fn next_hop_targets(&self) -> BTreeSet<IpAddr> {
        NextHops::targets(&self.config.services)
    }

    /// Takes what the kernel now says about some backends' next hops and applies it:
    /// a new MAC is written into the backend's record (one atomic store, so no packet
    /// sees half of it), a backend whose next hop became unresolved is drained, one
    /// whose next hop resolved again takes new flows again. Returns whether a backend's
    /// availability changed (VRRP tracking may follow).
    pub fn on_next_hops(
        &mut self,
        balancer: &mut Balancer,
        dp: &mut dyn DataPlane,
        updates: Vec<(IpAddr, Hop)>,
    ) -> bool {
        let mut changed = false;
        for (addr, hop) in updates {
            let before = self.hops.get(addr).clone();
            if !self.hops.update(addr, hop.clone()) {
                continue;
            }
            changed = true;
            match (&before.mac, &hop.mac) {
                (_, Ok(mac)) if before.mac.as_ref() != Ok(mac) => tracing::info!(
                    backend = %addr, mac = %MacAddr(*mac),
                    via = %hop.route.and_then(|r| r.gateway).map_or("on-link".into(), |g| g.to_string()),
                    "backend next hop resolved"
                ),
                (Ok(_), Err(why)) => {
                    tracing::warn!(backend = %addr, reason = %why, "backend next hop lost: no new flows until it resolves");
                }
                _ => {}
            }
        }
        if !changed {
            return false;
        }
        let unreachable = self.unreachable(&self.config.services);
        let availability = self.book.set_unreachable(unreachable);
        if self.apply(balancer, dp).is_err() {
            tracing::error!("next-hop changes not applied yet; retrying");
        }
        availability
    }

    /// Records one probe result; on a transition, applies the new effective set, then
    /// logs it and runs the service's notify hook.
    /// Returns whether the probe changed a backend's state.
    pub fn on_probe(
        &mut self,
        balancer: &mut Balancer,
        dp: &mut dyn DataPlane,
        probe: &Probe,
    ) -> bool {
        self.on_probes(balancer, dp, std::slice::from_ref(probe))
    }

    /// Records a batch of probe results (all that arrived together) and applies their
    /// transitions at once: one table swap per changed service for the whole batch, so
    /// 2,000 backends failing together cost one apply, not 2,000.
    /// Returns whether any probe changed a backend's state.
    pub fn on_probes(
        &mut self,
        balancer: &mut Balancer,
        dp: &mut dyn DataPlane,
        probes: &[Probe],
    ) -> bool {
        let before = self.unannounced.len();
        for probe in probes {
            self.probe_latency
                .0
                .get_or_create(&ProbeLabels {
                    service: describe_vip(&probe.target.0),
                    result: if probe.result.is_ok() { "ok" } else { "fail" }.into(),
                })
                .observe(probe.took.as_secs_f64());
            if let CheckResult::Fail(why) = &probe.result {
                tracing::debug!(service = %describe_vip(&probe.target.0), backend = %probe.target.1, %why, "probe failed");
            }
            if let Some(t) = self.book.record(probe) {
                let (key, addr) = probe.target;
                self.unannounced.push((key, addr, t));
            }
        }
        let changed = self.unannounced.len() - before;
        if changed == 0 {
            return false;
        }
        self.save();
        if self.apply(balancer, dp).is_err() {
            tracing::error!(
                transitions = changed,
                "health changes not applied yet; retrying"
            );
        }
        true
    }

    /// Logs every transition the data plane now serves and runs its hook.
    fn announce(&mut self) {
        for (key, addr, t) in std::mem::take(&mut self.unannounced) {
            let service = describe_vip(&key);
            let (event, policy) = match t.to {
                Health::Down => (
                    "down",
                    self.spec(&key).map_or("", |s| match s.on_failure {
                        OnFailure::Drain => "drained: no new flows",
                        OnFailure::Reset => "removed: flows reset",
                    }),
                ),
                Health::Up => ("up", "back in service"),
            };
            if t.to == Health::Down {
                tracing::warn!(%service, backend = %addr, reason = %t.reason, "backend down ({policy})");
            } else {
                tracing::info!(%service, backend = %addr, reason = %t.reason, "backend up ({policy})");
            }
            self.notify(
                &key,
                &Event {
                    kind: event,
                    service,
                    backend: addr.to_string(),
                    reason: t.reason,
                },
            );
        }
    }

    /// Converges the data plane to the desired state: re-resolves egress interfaces
    /// (one that was re-created gets its slot written again) and, when an earlier
    /// apply failed and its backoff has passed, applies everything again. Call
    /// periodically.
    pub fn reconcile(&mut self, balancer: &mut Balancer, dp: &mut dyn DataPlane) {
        self.reconcile_at(balancer, dp, Instant::now());
    }

    fn reconcile_at(&mut self, balancer: &mut Balancer, dp: &mut dyn DataPlane, now: Instant) {
        match balancer.refresh_egress(dp) {
            Ok(missing) => self.sync.set_missing_egress(missing),
            Err(e) => self
                .sync
                .failed(format!("rewriting an egress slot: {e}"), now),
        }
        if self.sync.retry_due(now) {
            let _ = self.apply_at(balancer, dp, now);
        }
    }

    /// Whether the data plane serves the desired state (for `xlb status`).
    pub fn sync_status(&self) -> SyncStatus {
        self.sync.status()
    }

    /// Takes a new configuration (already validated by the caller's load): keeps the
    /// health of backends it still checks, applies, and updates the checks. On error
    /// the running configuration stays, in the data plane too: an apply that failed
    /// part way is undone by applying the running configuration again (and, should
    /// that fail too, by [`Supervisor::reconcile`]).
    pub fn reload(
        &mut self,
        balancer: &mut Balancer,
        dp: &mut dyn DataPlane,
        config: Config,
    ) -> Result<()> {
        if config.interfaces != self.config.interfaces {
            anyhow::bail!(
                "interfaces: attaching to other interfaces takes effect on restart, not on reload"
            );
        }
        if config.vrrp != self.config.vrrp {
            anyhow::bail!(
                "vrrp: changes to VRRP instances take effect on restart, not on reload \
                 (restart xlb, or put the old vrrp section back)"
            );
        }
        if config.hash_seed() != self.config.hash_seed() {
            anyhow::bail!(
                "hash_seed: a new seed moves flows that have no connection entry and                  places them differently from the other balancers until they restart                  too; it takes effect on restart, not on reload (restart xlb, or put the                  old hash_seed back)"
            );
        }
        let mut next = self.book.clone();
        next.sync(&config.services);
        next.set_unreachable(self.unreachable(&config.services));
        let mut services = next.effective(&config.services);
        self.finish(&mut services);
        let effective = Config {
            encap_sources: config.encap_sources,
            services,
            hash_seed: config.hash_seed.clone(),
            icmp_toobig_per_sec: config.icmp_toobig_per_sec,
            conn_table: config.conn_table.clone(),
            ..Config::default()
        };
        if let Err(e) = apply_config(balancer, dp, &effective) {
            // Undo whatever part went through (nothing, when validation refused it).
            let e = anyhow::Error::from(e);
            let running = self.effective();
            return Err(match apply_config(balancer, dp, &running) {
                Ok(undone) if undone == ApplyReport::default() => e,
                Ok(_) => e.context("what it had changed was rolled back"),
                Err(undo) => {
                    self.sync.failed(format!("{undo:#}"), Instant::now());
                    e.context(format!(
                        "rolling back failed too ({undo}); retrying in the background"
                    ))
                }
            });
        }
        self.book = next;
        self.config = config;
        self.hops.retain(&self.next_hop_targets());
        self.note_availability();
        if self.probing {
            self.checkers.update(&self.config.services);
        }
        Ok(())
    }

    /// Writes the health of every checked backend to the state file (atomically: a
    /// crash mid-write leaves the previous file).
    fn save(&self) {
        let Some(path) = &self.state_file else {
            return;
        };
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec(&self.book.snapshot())
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(file = %path.display(), "saving health failed: {e}");
        }
    }

    /// Marks the services of these VIPs as held by a VRRP peer (or, with the VIPs
    /// removed from the list, as ours again) and applies.
    pub fn set_standby(
        &mut self,
        balancer: &mut Balancer,
        dp: &mut dyn DataPlane,
        standby: Vec<IpAddr>,
    ) -> Result<()> {
        self.standby = standby;
        self.apply(balancer, dp)
    }

    /// Per configured service name (`vip:port/proto`): whether a backend takes new
    /// flows (VRRP priority tracking).
    pub fn availability(&self) -> HashMap<String, bool> {
        self.config
            .services
            .iter()
            .map(|s| (describe_vip(&vip_key(s)), self.book.available(s)))
            .collect()
    }

    fn spec(&self, key: &VipKey) -> Option<&ServiceSpec> {
        self.config.services.iter().find(|s| vip_key(s) == *key)
    }

    /// Applies the desired state; on failure the data plane is marked out of sync for
    /// [`Supervisor::reconcile`] to retry.
    fn apply(&mut self, balancer: &mut Balancer, dp: &mut dyn DataPlane) -> Result<()> {
        self.apply_at(balancer, dp, Instant::now())
    }

    fn apply_at(
        &mut self,
        balancer: &mut Balancer,
        dp: &mut dyn DataPlane,
        now: Instant,
    ) -> Result<()> {
        let effective = self.effective();
        if let Err(e) = apply_config(balancer, dp, &effective) {
            self.sync.failed(format!("{e:#}"), now);
            return Err(e.into());
        }
        self.sync.succeeded();
        self.announce();
        self.note_availability();
        Ok(())
    }

    /// Logs (and notifies) services that just lost or regained all their backends.
    fn note_availability(&mut self) {
        let mut now = HashMap::new();
        for svc in &self.config.services {
            let key = vip_key(svc);
            let ok = self.book.available(svc);
            now.insert(key, ok);
            let before = self.available.get(&key).copied();
            if before == Some(ok) || (before.is_none() && ok) {
                continue;
            }
            let service = describe_vip(&key);
            let (kind, reason) = if ok {
                ("restored", "a backend takes new flows again".to_owned())
            } else {
                let fallback = match &svc.fallback {
                    Fallback::Drop => "new flows dropped".to_owned(),
                    Fallback::Pass => "new flows passed to the local stack".to_owned(),
                    Fallback::SorryServer(s) => format!("new flows to sorry server {}", s.address),
                };
                ("fallback", format!("no backend available: {fallback}"))
            };
            if ok {
                tracing::info!(%service, "{reason}");
            } else {
                tracing::warn!(%service, "{reason}");
            }
            if let Some(argv) = &svc.notify {
                let event = Event {
                    kind,
                    service,
                    backend: "-".into(),
                    reason,
                };
                let hook = Hook::for_event(argv, &event, &self.config.scripts);
                self.notifier.run(hook);
            }
        }
        self.available = now;
    }

    fn notify(&self, key: &VipKey, event: &Event) {
        if let Some(argv) = self.spec(key).and_then(|s| s.notify.as_ref()) {
            let hook = Hook::for_event(argv, event, &self.config.scripts);
            self.notifier.run(hook);
        }
    }
}

/// Health saved by a previous daemon; `None` if there is none.
fn load_saved(path: &Path) -> Result<Option<Vec<Saved>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets the hash seed, the encapsulation sources and the services of `config`.
pub fn apply_config(
    balancer: &mut Balancer,
    dp: &mut dyn DataPlane,
    config: &Config,
) -> Result<ApplyReport, ApplyError> {
    balancer.set_toobig_rate(dp, config.icmp_toobig_per_sec.unwrap_or(0))?;
    balancer.set_conn_timeouts(dp, config.conn_table.timeouts.ticks())?;
    balancer.set_hash_seed(dp, config.hash_seed())?;
    let report = balancer.apply_with_encap(dp, config.encap_sources, &config.services)?;
    if report != ApplyReport::default() {
        tracing::info!(
            ?report,
            services = config.services.len(),
            "configuration applied"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
