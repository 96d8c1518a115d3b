//! `xlb run` / `xlb decap`: load and attach the data plane, run the supervisor (config +
//! health), VRRP, the control socket and metrics in one loop, and clean up on the way out.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use lb_common::programs;
use lb_userspace::{
    balancer::Balancer,
    config::Config,
    dataplane::{
        aya::{ebpf_log, AyaPort, LoadOptions, PinLock},
        netdev, AttachMode, AttachedMode, DataPlane,
    },
    edges::{
        cli::EbpfLogLevel,
        control::{self, server::ControlSocket, views, Request, Response},
        metrics,
    },
    health::{
        notify::{Hook, OrderedHooks, HOOK_TIMEOUT},
        Health,
    },
    nexthop::{kernel::Resolver, NextHops},
    supervisor::Supervisor,
    vrrp::runtime::Vrrp,
};
use tokio::signal::unix::{signal, SignalKind};

/// Probe results taken from the queue per apply, at most.
const PROBE_BATCH: usize = 4096;

/// `xlb run` / `xlb decap`: load, attach, serve, and clean up on the way out.
pub(crate) struct Daemon {
    pub(crate) program: &'static str,
    /// `xlb decap`: what its program may unwrap.
    pub(crate) decap: Option<crate::decap::Allow>,
    pub(crate) ifaces: Vec<String>,
    pub(crate) pin_dir: PathBuf,
    pub(crate) xdp_mode: AttachMode,
    pub(crate) ebpf_log_level: EbpfLogLevel,
    pub(crate) config: Option<PathBuf>,
    /// Overrides the config's GUE port (`xlb decap --gue-port`).
    pub(crate) gue_port: Option<u16>,
    pub(crate) metrics_listen: Option<std::net::SocketAddr>,
    pub(crate) keep_attached: bool,
    /// Overrides the config's `conn_table.entries`.
    pub(crate) conn_table_entries: Option<u32>,
    /// Overrides the config's `conn_table.lru`.
    pub(crate) conn_table_lru: Option<lb_userspace::config::conn_table::LruKind>,
}

impl Daemon {
    pub(crate) async fn run(mut self) -> Result<()> {
        let missing = missing_capabilities();
        if !missing.is_empty() {
            anyhow::bail!(
                "xlb {} needs CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN and \
                 CAP_PERFMON (missing: {}); run it as root",
                if self.program == programs::BALANCER {
                    "run"
                } else {
                    "decap"
                },
                missing.join(", ")
            );
        }
        raise_fd_limit();
        // Validate before touching the kernel: a bad file must not cost a flap.
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if self.ifaces.is_empty() {
            self.ifaces.clone_from(&config.interfaces);
        }
        if self.ifaces.is_empty() {
            anyhow::bail!(
                "no interface to attach to: give --iface IF or list \"interfaces\" in the config"
            );
        }
        if let Some(port) = self.gue_port {
            config.encap_sources.gue_port = port;
        }
        // Ownership first: a second daemon on these pins stops here, before it has
        // touched the maps, the link or the first daemon's socket and health file.
        let lock = PinLock::acquire(&self.pin_dir).context("taking the pin directory")?;
        // Then what can be refused by others (a socket, a port in use), still before the
        // data plane is touched.
        let (requests_tx, requests) = tokio::sync::mpsc::channel(16);
        // The decap program has nothing to report: only the balancer gets a socket.
        let socket = if self.program == programs::BALANCER {
            Some(ControlSocket::bind(
                &control::socket_path(&self.pin_dir),
                requests_tx.clone(),
            )?)
        } else {
            None
        };
        if let Some(addr) = self.metrics_listen {
            metrics::serve(addr, requests_tx.clone()).await?;
        }
        drop(requests_tx);
        let entries = self.conn_table_entries.unwrap_or(config.conn_table.entries);
        let opts = LoadOptions {
            pin_dir: self.pin_dir.clone(),
            ebpf_log_level: self.ebpf_log_level.to_aya(),
            conn_entries: Some(entries),
            unconfirmed_entries: Some(config.conn_table.unconfirmed(entries)),
            conn_lru: self.conn_table_lru.unwrap_or(config.conn_table.lru),
        };
        let mut dp = AyaPort::load_locked(&opts, lock).context("loading the XDP data plane")?;
        if self.ebpf_log_level.to_aya().is_some() {
            ebpf_log::spawn(dp.ebpf_mut())?;
        }
        let result = self.serve(&mut dp, config, requests).await;
        drop(socket);
        if self.keep_attached && result.is_ok() {
            tracing::info!(pin_dir = %self.pin_dir.display(), "left attached and pinned for the next xlb run");
            return Ok(());
        }
        if let Err(e) = &result {
            if dp.adopted() {
                // The pins were a running data plane before this start: it may still be
                // forwarding (the previous daemon crashed), so a failed start leaves it.
                tracing::error!(
                    pin_dir = %self.pin_dir.display(),
                    "start failed; the data plane this daemon took over is left pinned and \
                     forwarding as it was: {e:#}"
                );
                return result;
            }
        }
        // Clean up whatever got attached, also when attaching a later interface failed;
        // with the data plane gone there is no health for a successor to take over.
        let _ = std::fs::remove_file(control::health_state_path(&self.pin_dir));
        dp.detach_all().context("detaching on shutdown")?;
        tracing::info!(pin_dir = %self.pin_dir.display(), "detached and unpinned");
        result
    }

    async fn serve(
        &mut self,
        dp: &mut AyaPort,
        config: Config,
        mut requests: tokio::sync::mpsc::Receiver<control::server::Pending>,
    ) -> Result<()> {
        // Maps pinned by an earlier daemon (restart, crash) carry backend ids that live
        // connection-table entries refer to: continue from them, never from scratch.
        let mut balancer = Balancer::adopt(dp).context("reading pinned state")?;
        if balancer.service_count() > 0 {
            tracing::info!(services = balancer.service_count(), "adopted pinned state");
        }
        let state_file =
            (self.program == programs::BALANCER).then(|| control::health_state_path(&self.pin_dir));
        // Next hops of backends without a configured MAC, learned before the first
        // apply: a restarted daemon writes the same MACs its predecessor did.
        let (resolver, first_hops, mut hop_updates) =
            Resolver::start(NextHops::targets(&config.services))
                .await
                .context("opening rtnetlink for next-hop learning")?;
        let mut hops = NextHops::default();
        for (addr, hop) in first_hops {
            hops.update(addr, hop);
        }
        let (mut sup, mut probes) = Supervisor::start(&mut balancer, dp, config, state_file, hops)?;
        // Until an instance is master here, its VIPs belong to whichever peer is; an
        // instance that still holds its addresses (its daemon restarted) resumes as
        // master, so its pinned data plane keeps forwarding them without a gap.
        let vrrp_specs = sup.config().vrrp.clone();
        let vips = vrrp_specs
            .iter()
            .filter(|s| {
                !(s.preempt
                    && lb_userspace::vrrp::net::iface(&s.interface, &s.addresses)
                        .is_ok_and(|i| i.holds_all(&s.addresses)))
            })
            .flat_map(|s| s.addresses.iter().copied());
        sup.set_standby(&mut balancer, dp, vips.collect())?;
        // Before the program is attached: from its first packet it unwraps only what
        // it is allowed to.
        if let Some(allow) = &mut self.decap {
            allow.sync(dp, &self.ifaces)?;
        }
        let mut attached = Vec::new();
        for iface in &self.ifaces {
            let a = DataPlane::attach(dp, self.program, iface, self.xdp_mode)?;
            tracing::info!(
                iface = %a.iface, mode = ?a.mode, adopted = a.adopted,
                link = %a.pin_path.display(), "attached"
            );
            if a.mode == AttachedMode::Native && netdev::is_veth(iface).await == Some(true) {
                tracing::warn!(
                    %iface,
                    "native XDP on a veth: frames sent back out (XDP_TX) or redirected into a \
                     veth reach its peer only if the peer runs an XDP program. Attach one on \
                     the peer (`xlb decap --iface PEER --allow-source ADDR` passes plain \
                     traffic), or run with --xdp-mode generic (docs/dsr-backends.md)"
                );
            }
            attached.push(views::AttachedIface {
                iface: a.iface,
                mode: match a.mode {
                    AttachedMode::Native => "native",
                    AttachedMode::Generic => "generic",
                    AttachedMode::Adopted => "adopted",
                }
                .into(),
                fallback: a.mode == AttachedMode::Generic && self.xdp_mode == AttachMode::Auto,
            });
        }
        // Our program forwards from the new table now: the old one's entries move over.
        if let Err(e) = dp.carry_over_conns() {
            tracing::error!(
                "connection table resized, but its entries were not carried over: \
                 established flows pick their backend again by Maglev: {e:#}"
            );
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (vrrp_tx, mut vrrp_events) = tokio::sync::mpsc::channel(16);
        let mut vrrp = Vrrp::start(&vrrp_specs, &vrrp_tx).context("starting VRRP")?;
        track(&sup, &vrrp);
        // The XDP side of VRRP follows the instances: on every state change, and each
        // second for priority changes from tracking.
        let mut xdp_vrrp = Vec::new();
        sync_xdp_vrrp(&vrrp, dp, &mut xdp_vrrp);
        let mut vrrp_tick = tokio::time::interval(std::time::Duration::from_secs(1));
        // On this tick checker and VRRP instance tasks that panicked are restarted and
        // the data plane is converged to the desired state (failed applies retried,
        // egress re-resolved).
        let mut upkeep = tokio::time::interval(std::time::Duration::from_millis(500));
        // XDP answers as master only under a lease: renewed every advert interval.
        let mut lease_tick = tokio::time::interval(vrrp.lease_renewal());
        // `answered_ns` per XDP key as last read: a newer one is an advert XDP answered.
        let mut xdp_answered = std::collections::HashMap::new();
        answered_in_xdp(&vrrp, dp, &mut xdp_answered);
        // VRRP hooks run in order, one at a time, and are never dropped.
        let vrrp_hooks = OrderedHooks::start(HOOK_TIMEOUT);
        let started = std::time::Instant::now();
        let mut last_reload: Option<String> = None;
        let pins_warning = dp.persistence().warning();
        if let Some(warning) = &pins_warning {
            tracing::error!(pin_dir = %self.pin_dir.display(), "{warning}");
        }
        tracing::info!(
            pin_dir = %dp.pin_dir().display(), checks = sup.checks(),
            "running; SIGHUP reloads, SIGINT/SIGTERM stop"
        );
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM received");
                    resign(vrrp, &mut vrrp_events, dp, &xdp_vrrp).await;
                    return Ok(());
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT received");
                    resign(vrrp, &mut vrrp_events, dp, &xdp_vrrp).await;
                    return Ok(());
                }
                _ = vrrp_tick.tick(), if !vrrp.is_empty() => {
                    // Interfaces have no event here: their state is polled with the tick.
                    track(&sup, &vrrp);
                    sync_xdp_vrrp(&vrrp, dp, &mut xdp_vrrp);
                }
                _ = upkeep.tick() => {
                    sup.restart_panicked_checks();
                    sup.reconcile(&mut balancer, dp);
                    if let Some(allow) = &mut self.decap {
                        if let Err(e) = allow.sync(dp, &self.ifaces) {
                            tracing::warn!("decap allow-list not updated, the last one stays: {e:#}");
                        }
                    }
                    for (instance, why) in vrrp.restart_panicked() {
                        tracing::error!(%instance, "VRRP instance task panicked ({why}); restarted as backup");
                    }
                }
                _ = lease_tick.tick(), if !vrrp.is_empty() => {
                    sync_xdp_vrrp(&vrrp, dp, &mut xdp_vrrp);
                    answered_in_xdp(&vrrp, dp, &mut xdp_answered);
                }
                Some(probe) = probes.recv() => {
                    // With the results that queued meanwhile: their transitions apply
                    // together (one swap per service), whatever their number.
                    let mut batch = vec![probe];
                    while batch.len() < PROBE_BATCH {
                        let Ok(more) = probes.try_recv() else { break };
                        batch.push(more);
                    }
                    if sup.on_probes(&mut balancer, dp, &batch) {
                        track(&sup, &vrrp);
                    }
                }
                Some(batch) = hop_updates.recv() => {
                    if sup.on_next_hops(&mut balancer, dp, batch) {
                        track(&sup, &vrrp);
                    }
                }
                Some(ev) = vrrp_events.recv() => {
                    if let Err(e) = sup.set_standby(&mut balancer, dp, vrrp.standby_addresses()) {
                        tracing::error!("applying a VRRP state change failed: {e:#}");
                    }
                    sync_xdp_vrrp(&vrrp, dp, &mut xdp_vrrp);
                    let _ = ev.applied.send(());
                    let (from, to) = (ev.from.to_string(), ev.to.to_string());
                    tracing::warn!(instance = %ev.name, %from, %to, reason = %ev.reason, "VRRP {to}");
                    if let Some(argv) = &vrrp_specs[ev.instance].notify {
                        vrrp_hooks.push(Hook {
                            argv: argv.clone(),
                            kind: "vrrp",
                            args: vec![to.clone(), ev.name.clone(), ev.reason.clone()],
                            envs: vec![
                                ("XLB_VRRP_STATE".into(), to),
                                ("XLB_VRRP_INSTANCE".into(), ev.name),
                                ("XLB_REASON".into(), ev.reason),
                            ],
                            run_as: sup.config().scripts.clone(),
                        });
                    }
                }
                _ = hup.recv() => {
                    last_reload = Some(self.reload(&mut sup, &mut balancer, dp).err().unwrap_or_else(|| "ok".into()));
                    resolver.follow(sup.next_hop_targets());
                }
                Some((request, reply)) = requests.recv() => {
                    let response = match request {
                        Request::Status => Response::ok(json(&views::Status {
                            version: env!("CARGO_PKG_VERSION").into(),
                            pid: std::process::id(),
                            uptime_s: started.elapsed().as_secs(),
                            pin_dir: self.pin_dir.display().to_string(),
                            interfaces: self.ifaces.clone(),
                            config: self.config.as_ref().map(|p| p.display().to_string()),
                            services: sup.config().services.len(),
                            backends: sup.config().services.iter().map(|s| s.backends.len()).sum(),
                            checks: sup.checks(),
                            backends_down: sup.book().iter().filter(|(_, h)| h.health() == Health::Down).count(),
                            last_reload: last_reload.clone(),
                            pins_persist: pins_warning.is_none(),
                            pins_warning: pins_warning.clone(),
                            dataplane: sup.sync_status(),
                            attached: attached.clone(),
                            conn_table: dp.conn_table().ok().map(|t| views::ConnTableView::new(&t, self.conn_table_entries.unwrap_or(sup.config().conn_table.entries))),
                        })),
                        Request::Services => Response::ok(json(&views::services(&sup, dp))),
                        Request::Backends => {
                            Response::ok(json(&views::backends(&sup, &balancer, dp)))
                        }
                        Request::Metrics => {
                            // The numbers now; the text (large with many backends) off
                            // the loop, which answers from there.
                            let snapshot = metrics::snapshot(&sup, &balancer, dp, &vrrp.status());
                            tokio::task::spawn_blocking(move || {
                                let text = serde_json::Value::String(snapshot.render());
                                let _ = reply.send(Response::ok(text));
                            });
                            continue;
                        }
                        Request::Vrrp => Response::ok(json(&vrrp.status())),
                        Request::Reload => {
                            let r = self.reload(&mut sup, &mut balancer, dp);
                            resolver.follow(sup.next_hop_targets());
                            last_reload = Some(r.clone().err().unwrap_or_else(|| "ok".into()));
                            match r {
                                Ok(()) => Response::ok(serde_json::json!("reloaded")),
                                Err(e) => Response::error(e),
                            }
                        }
                    };
                    let _ = reply.send(response);
                }
            }
        }
    }

    /// Loads the config file again and applies it; a file that fails validation or
    /// application changes nothing and the running configuration stays. `Err` says why.
    fn reload(
        &self,
        sup: &mut Supervisor,
        balancer: &mut Balancer,
        dp: &mut dyn DataPlane,
    ) -> Result<(), String> {
        let Some(path) = &self.config else {
            tracing::warn!("reload without --config: nothing to reload");
            return Err("the daemon runs without --config: nothing to reload".into());
        };
        let result = Config::load(path)
            .map_err(anyhow::Error::from)
            .and_then(|mut config| {
                if let Some(port) = self.gue_port {
                    config.encap_sources.gue_port = port;
                }
                sup.reload(balancer, dp, config)
            });
        match result {
            Ok(()) => {
                tracing::info!(config = %path.display(), checks = sup.checks(), "reloaded");
                let wanted = sup.config().conn_table.entries;
                match dp.conn_table() {
                    Ok(t) if self.conn_table_entries.is_none() && t.capacity != wanted => {
                        tracing::warn!(
                            running = t.capacity,
                            configured = wanted,
                            "conn_table.entries changed: the running table keeps its size; \
                             the next start resizes it and carries its entries over"
                        );
                    }
                    _ => {}
                }
                let lru = sup.config().conn_table.lru;
                match dp.conn_table() {
                    Ok(t) if self.conn_table_lru.is_none() && t.lru != lru => {
                        tracing::warn!(
                            running = t.lru.as_str(),
                            configured = lru.as_str(),
                            "conn_table.lru changed: the running tables keep their LRU lists; \
                             the next start changes them and carries the entries over"
                        );
                    }
                    _ => {}
                }
                Ok(())
            }
            Err(e) => {
                tracing::error!("reload rejected, running configuration kept: {e:#}");
                Err(format!(
                    "reload rejected, running configuration kept: {e:#}"
                ))
            }
        }
    }
}

/// The capabilities `xlb run` needs that this process lacks (from /proc/self/status):
/// loading and pinning BPF objects, attaching XDP, raw sockets for ICMP checks and
/// VRRP, netlink for the VIPs, bpffs mounts. Checked first, so a missing privilege is
/// named instead of surfacing as an EPERM from deep inside map creation.
fn missing_capabilities() -> Vec<&'static str> {
    const NEEDED: [(u32, &str); 5] = [
        (12, "CAP_NET_ADMIN"),
        (13, "CAP_NET_RAW"),
        (21, "CAP_SYS_ADMIN"),
        (38, "CAP_PERFMON"),
        (39, "CAP_BPF"),
    ];
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        });
    match effective {
        // Unknown (no procfs): let the kernel decide and report.
        None => Vec::new(),
        Some(caps) => NEEDED
            .iter()
            .filter(|(bit, _)| caps & (1u64 << bit) == 0)
            .map(|(_, name)| *name)
            .collect(),
    }
}

/// Raises the soft descriptor limit to the hard one: each probe in flight holds a
/// descriptor, and the checks' budget follows the soft limit (health::budget). 1,024,
/// a common default, would let a few hundred timing-out backends delay the rest.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the descriptor limit"),
            Err(e) => tracing::warn!(soft, hard, "cannot raise the descriptor limit: {e}"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot read the descriptor limit: {e}"),
    }
}

/// Writes the instances' XDP records where they changed since `last`, and every master's
/// record each time (renewing its lease).
fn sync_xdp_vrrp(
    vrrp: &Vrrp,
    dp: &mut dyn DataPlane,
    last: &mut Vec<(lb_common::VrrpKey, lb_common::VrrpRouter)>,
) {
    let now = vrrp.xdp_routers();
    for (key, router) in &now {
        // A master's record is rewritten every time (its lease renewed); others only
        // when they change.
        let same = last.iter().any(|(k, r)| {
            k == key
                && lb_common::VrrpRouter {
                    lease_until_ns: router.lease_until_ns,
                    ..*r
                } == *router
        });
        if same && router.state != lb_common::vrrp::VRRP_STATE_MASTER {
            continue;
        }
        if let Err(e) = dp.set_vrrp_router(key, router) {
            tracing::warn!("updating the XDP VRRP record failed: {e}");
        }
    }
    *last = now;
}

/// The VRRP part of a graceful stop, before anything is torn down: XDP stops answering
/// for us (nobody will renew its lease), then every instance resigns (a master's
/// priority-0 advert is on the wire when `shutdown` returns); only after that may the
/// caller detach. State changes reported meanwhile are acknowledged without touching
/// the data plane (it is detached next, or, with `--keep-attached`, the next daemon
/// derives the standby VIPs from the addresses held at its start), so no instance waits
/// for an answer that would never come.
async fn resign(
    vrrp: Vrrp,
    events: &mut tokio::sync::mpsc::Receiver<lb_userspace::vrrp::runtime::VrrpEvent>,
    dp: &mut dyn DataPlane,
    xdp: &[(lb_common::VrrpKey, lb_common::VrrpRouter)],
) {
    let acknowledge = |ev: lb_userspace::vrrp::runtime::VrrpEvent| {
        let (from, to) = (ev.from.to_string(), ev.to.to_string());
        tracing::info!(instance = %ev.name, %from, %to, reason = %ev.reason, "VRRP state change while stopping");
        let _ = ev.applied.send(());
    };
    clear_xdp_vrrp(dp, xdp);
    let stop = vrrp.shutdown();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            Some(ev) = events.recv() => acknowledge(ev),
        }
    }
    // The resignations' own reports, for the log.
    while let Ok(ev) = events.try_recv() {
        acknowledge(ev);
    }
}

/// Adverts that XDP answered since the last call (another router advertising while we
/// are master: they never reach the instance's socket) make their instance announce its
/// addresses again. Read every advert interval, so within one interval.
fn answered_in_xdp(
    vrrp: &Vrrp,
    dp: &dyn DataPlane,
    last: &mut std::collections::HashMap<lb_common::VrrpKey, u64>,
) {
    let Ok(seen) = dp.vrrp_seen() else {
        return;
    };
    for (key, s) in seen {
        let before = last.insert(key, s.answered_ns);
        // A key first seen now had its first answer since the last read (the baseline
        // is read before the loop).
        if s.answered_ns > before.unwrap_or(0) {
            vrrp.reannounce(&key);
        }
    }
}

/// On the way out nobody answers for us any more: XDP must stop answering too.
fn clear_xdp_vrrp(dp: &mut dyn DataPlane, last: &[(lb_common::VrrpKey, lb_common::VrrpRouter)]) {
    for (key, _) in last {
        let _ = dp.remove_vrrp_router(key);
    }
}

/// VRRP priority tracking: each instance loses the weight of every tracked service
/// that has no backend taking new flows and of every tracked interface that is down, so
/// a master with nothing to serve (or no way to reach it) yields.
fn track(sup: &Supervisor, vrrp: &Vrrp) {
    let available = sup.availability();
    for (i, spec) in vrrp.specs().enumerate() {
        let services: u32 = spec
            .track_services
            .iter()
            .filter(|t| available.get(&t.service) == Some(&false))
            .map(|t| u32::from(t.weight))
            .sum();
        let interfaces: u32 = spec
            .track_interfaces
            .iter()
            .filter(|t| !lb_userspace::vrrp::net::iface(&t.interface, &[]).is_ok_and(|i| i.running))
            .map(|t| u32::from(t.weight))
            .sum();
        let lost = services + interfaces;
        let priority = u32::from(spec.priority).saturating_sub(lost).max(1);
        vrrp.set_priority(i, u8::try_from(priority).unwrap_or(spec.priority));
    }
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
