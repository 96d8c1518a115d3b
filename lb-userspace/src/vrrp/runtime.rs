//! The VRRP driver: one tokio task per configured instance, feeding the pure
//! [`super::state::VirtualRouter`] with received adverts, timer expiries and priority
//! changes, and carrying out its actions (send adverts, take or release the virtual
//! addresses, gratuitous ARP / unsolicited neighbour advertisements).
//!
//! The daemon learns every state change as a [`VrrpEvent`] and must acknowledge it
//! before a new master adds its addresses: the data plane is switched to forward the
//! VIPs first, so the first client packet after the gratuitous ARP is already balanced
//! (a backup's data plane hands VIP traffic to the stack instead).
//!
//! IPv4 (VRRPv3 and v2) and IPv6 (VRRPv3) are driven alike: the state machine is
//! family-agnostic; what differs is the socket ([`AdvertSocket::open_v4`] /
//! [`AdvertSocket::open_v6`]), our identity (the interface's IPv4 address, or its
//! link-local IPv6 address: RFC 5798 §5.1.2.1), the group (224.0.0.18 / ff02::12), and
//! how a new master announces itself (gratuitous ARP / unsolicited neighbour
//! advertisements, RFC 5798 §6.4.1 / RFC 4861 §7.2.6).

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use crate::config::vrrp::VrrpSpec;

use super::{
    net::{self, AdvertSocket, Datagram, Netlink},
    packet::{self, Advert, Configured, Family, Version},
    state::{Action, Event, RouterConfig, State, VirtualRouter},
};

/// A state change, for the daemon; `applied` must be answered once the data plane
/// follows it.
#[derive(Debug)]
pub struct VrrpEvent {
    pub instance: usize,
    pub name: String,
    pub from: State,
    pub to: State,
    pub reason: String,
    pub applied: oneshot::Sender<()>,
}

/// What `xlb vrrp` shows for one instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub version: u8,
    pub state: String,
    pub base_priority: u8,
    pub priority: u8,
    pub master: Option<IpAddr>,
    pub addresses: Vec<IpAddr>,
    /// Seconds since the epoch of the last state change.
    pub since_unix_s: u64,
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Adverts dropped, by reason (ttl, checksum, unknown_vrid, ...).
    pub invalid: BTreeMap<String, u64>,
    /// The last transitions, oldest first: (seconds since start, from, to, reason).
    pub history: Vec<(f64, String, String, String)>,
    /// Times the instance's task panicked and was started again.
    #[serde(default)]
    pub task_restarts: u64,
}

enum Cmd {
    Priority(u8),
    Shutdown(oneshot::Sender<()>),
    /// Another router advertised while we are master (XDP answered it, so the advert
    /// never reached the socket): announce the addresses again.
    Reannounce,
    /// Panic in the task (tests of the restart).
    #[cfg(feature = "test-hooks")]
    Panic,
}

/// Why an instance's task stops: the daemon asked (answer `done` once resigned), or
/// the [`Vrrp`] handle is gone.
enum Stop {
    Shutdown(oneshot::Sender<()>),
    Dropped,
}

struct Instance {
    spec: VrrpSpec,
    ifc: net::Iface,
    cmd: mpsc::Sender<Cmd>,
    status: Arc<Mutex<InstanceStatus>>,
    task: JoinHandle<()>,
    /// Its task panicked (the message) and is still to be started again.
    restart: Option<String>,
}

/// Every running instance.
pub struct Vrrp {
    instances: Vec<Instance>,
    /// What a restarted instance needs again.
    netlink: Option<Netlink>,
    events: mpsc::Sender<VrrpEvent>,
}

/// How an instance task starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// At daemon start: resume as master if the addresses are still held (a restart of
    /// the daemon), else as backup.
    AsConfigured,
    /// After its task panicked: as backup, whatever it held (its state is not trusted).
    AsBackup,
}

/// Opens instance `index`'s socket and starts its task: (its interface, the command
/// channel, the task).
fn spawn_driver(
    index: usize,
    spec: &VrrpSpec,
    netlink: &Netlink,
    events: &mpsc::Sender<VrrpEvent>,
    status: &Arc<Mutex<InstanceStatus>>,
    start: Start,
) -> Result<(net::Iface, mpsc::Sender<Cmd>, JoinHandle<()>)> {
    let i = index;
    let ifc = net::iface(&spec.interface, &spec.addresses)?;
    let family = family_of(spec);
    let primary = primary(&ifc, family).with_context(|| {
        format!(
            "vrrp[{i}] ({}): {} has no {}",
            spec.name,
            spec.interface,
            match family {
                Family::V4 => "IPv4 address",
                Family::V6 => "IPv6 link-local address",
            }
        )
    })?;
    let router = VirtualRouter::new(RouterConfig {
        vrid: spec.vrid,
        priority: spec.priority,
        adver_int_cs: spec.adver_int_cs(),
        preempt: spec.preempt,
        preempt_delay: Duration::from_millis(spec.preempt_delay_ms),
        accept_mode: true,
        version: spec.version(),
        primary_address: primary,
    })
    .with_context(|| format!("vrrp[{i}] ({})", spec.name))?;
    let socket = match family {
        Family::V4 => AdvertSocket::open_v4(&ifc),
        Family::V6 => AdvertSocket::open_v6(&ifc),
    }
    .with_context(|| format!("vrrp[{i}] ({})", spec.name))?;
    let arp = match family {
        Family::V4 => net::ArpWatch::open(ifc.index)
            .inspect_err(|e| {
                tracing::warn!(instance = %spec.name, "watching ARP on {} failed ({e}): a healed dual master is noticed only from adverts", spec.interface);
            })
            .ok(),
        Family::V6 => None,
    };
    let (cmd, cmd_rx) = mpsc::channel(16);
    let driver = Driver {
        index: i,
        spec: spec.clone(),
        ifc: ifc.clone(),
        socket,
        router,
        netlink: netlink.clone(),
        events: events.clone(),
        status: status.clone(),
        started: Instant::now(),
        cmds: cmd_rx,
        stop: None,
        pending_priority: None,
        exiting: false,
        garp_next: None,
        garp_left: 0,
        reannounced: None,
        arp,
    };
    let task = tokio::spawn(driver.run(start));
    Ok((ifc, cmd, task))
}

impl Vrrp {
    /// Starts every instance; state changes arrive on `events`.
    pub fn start(specs: &[VrrpSpec], events: &mpsc::Sender<VrrpEvent>) -> Result<Vrrp> {
        let netlink = if specs.is_empty() {
            None
        } else {
            Some(Netlink::new()?)
        };
        let mut instances = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let status = Arc::new(Mutex::new(InstanceStatus {
                name: spec.name.clone(),
                interface: spec.interface.clone(),
                vrid: spec.vrid,
                version: spec.version,
                state: State::Initialize.to_string(),
                base_priority: spec.priority,
                priority: spec.priority,
                master: None,
                addresses: spec.addresses.clone(),
                since_unix_s: unix_now(),
                adverts_sent: 0,
                adverts_received: 0,
                invalid: BTreeMap::new(),
                history: Vec::new(),
                task_restarts: 0,
            }));
            let netlink = netlink
                .clone()
                .context("netlink is opened when instances exist")?;
            let (ifc, cmd, task) =
                spawn_driver(i, spec, &netlink, events, &status, Start::AsConfigured)?;
            instances.push(Instance {
                spec: spec.clone(),
                ifc,
                cmd,
                status,
                task,
                restart: None,
            });
        }
        Ok(Vrrp {
            instances,
            netlink,
            events: events.clone(),
        })
    }

    /// Finds instance tasks that panicked and starts each again as a backup (the state
    /// that holds nothing: its addresses are removed, and the election decides from
    /// there), so an instance never freezes silently. Returns (instance name, panic
    /// message) for each restart; call periodically (the daemon does every second).
    pub fn restart_panicked(&mut self) -> Vec<(String, String)> {
        use futures_util::FutureExt as _;
        let mut restarted = Vec::new();
        for (index, i) in self.instances.iter_mut().enumerate() {
            if i.restart.is_none() && i.task.is_finished() {
                // Finished, so this poll is ready. A task that returned (the handle
                // gone, a shutdown) stays ended; only a panic restarts it.
                if let Some(Err(e)) = (&mut i.task).now_or_never() {
                    if e.is_panic() {
                        i.restart = Some(crate::panic_message(e));
                        // Not master any more for whoever reads the status (the XDP
                        // record follows it): the new task starts from Initialize.
                        let mut st = i.status.lock().unwrap_or_else(PoisonError::into_inner);
                        st.state = State::Initialize.to_string();
                        st.master = None;
                    }
                }
            }
            let (Some(why), Some(netlink)) = (i.restart.clone(), &self.netlink) else {
                continue;
            };
            match spawn_driver(
                index,
                &i.spec,
                netlink,
                &self.events,
                &i.status,
                Start::AsBackup,
            ) {
                Ok((ifc, cmd, task)) => {
                    (i.ifc, i.cmd, i.task, i.restart) = (ifc, cmd, task, None);
                    i.status
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .task_restarts += 1;
                    restarted.push((i.spec.name.clone(), why));
                }
                // Tried again on the next call (e.g. the interface is being recreated).
                Err(e) => tracing::error!(
                    instance = %i.spec.name,
                    "restarting the VRRP instance after a panic ({why}) failed: {e:#}"
                ),
            }
        }
        restarted
    }

    /// Makes instance `index`'s task panic (tests of [`Vrrp::restart_panicked`]).
    #[cfg(feature = "test-hooks")]
    pub fn inject_panic(&self, index: usize) {
        if let Some(i) = self.instances.get(index) {
            let _ = i.cmd.try_send(Cmd::Panic);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Every instance's status.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.instances
            .iter()
            .map(|i| {
                i.status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .collect()
    }

    /// Virtual addresses of instances that are not master now: the data plane must not
    /// balance them.
    pub fn standby_addresses(&self) -> Vec<IpAddr> {
        self.instances
            .iter()
            .filter(|i| {
                i.status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .state
                    != State::Master.to_string()
            })
            .flat_map(|i| i.spec.addresses.iter().copied())
            .collect()
    }

    /// The configured instances.
    pub fn specs(&self) -> impl Iterator<Item = &VrrpSpec> {
        self.instances.iter().map(|i| &i.spec)
    }

    /// What the XDP program needs per instance to answer lower-priority adverts at line
    /// rate (docs/vrrp-xdp.md): state, priority and our own advert frame.
    /// The shortest advert interval of the instances: how often the XDP leases must be
    /// renewed (1 s without instances).
    pub fn lease_renewal(&self) -> Duration {
        let cs = self
            .instances
            .iter()
            .map(|i| i.spec.adver_int_cs())
            .min()
            .unwrap_or(100);
        Duration::from_millis(u64::from(cs.max(1)) * 10)
    }

    pub fn xdp_routers(&self) -> Vec<(lb_common::VrrpKey, lb_common::VrrpRouter)> {
        let mut out = Vec::new();
        for i in &self.instances {
            let family = family_of(&i.spec);
            let Some(primary) = primary(&i.ifc, family) else {
                continue;
            };
            let st = i
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let cs = i.spec.adver_int_cs();
            let advert = advert_of(&i.spec, st.priority, cs);
            let Ok(frame) = packet::encode_frame(Some(i.ifc.mac), primary, &advert) else {
                continue;
            };
            let master = st.state == State::Master.to_string();
            let mut router = lb_common::VrrpRouter {
                state: if master {
                    lb_common::vrrp::VRRP_STATE_MASTER
                } else {
                    lb_common::vrrp::VRRP_STATE_NOT_MASTER
                },
                // Two advert intervals: renewed every interval by the daemon, lapsed
                // well before a peer's Master_Down_Interval (3 intervals + skew) if the
                // daemon dies.
                lease_until_ns: if master {
                    monotonic_ns() + 2 * u64::from(cs) * 10_000_000
                } else {
                    0
                },
                priority: st.priority,
                version: i.spec.version,
                adver_int_cs: cs,
                addr: xdp_words(primary),
                ..Default::default()
            };
            // A frame that does not fit is left out (frame_len 0): XDP then never answers.
            // So is the multicast frame of a unicast-peers instance: its peers may not
            // listen to the group, and the answer must come from the election instead.
            if frame.len() <= router.frame.len() && i.spec.unicast_peers.is_empty() {
                router.frame[..frame.len()].copy_from_slice(&frame);
                router.frame_len = u16::try_from(frame.len()).unwrap_or(0);
            }
            out.push((xdp_key(i), router));
        }
        out
    }

    /// XDP answered an advert for `key` (another router that thinks it is master, or
    /// one resigning): its instance, if master, announces its addresses again, so
    /// clients that followed the other router come back (issue 14, item 9).
    pub fn reannounce(&self, key: &lb_common::VrrpKey) {
        if let Some(i) = self.instances.iter().find(|i| xdp_key(i) == *key) {
            let _ = i.cmd.try_send(Cmd::Reannounce);
        }
    }

    /// Sets the effective priority of instance `index` (tracking).
    pub fn set_priority(&self, index: usize, priority: u8) {
        if let Some(i) = self.instances.get(index) {
            let _ = i.cmd.try_send(Cmd::Priority(priority));
        }
    }

    /// Graceful stop: every master resigns with a priority-0 advert (its backup takes
    /// over after only its skew time) and releases the addresses. Returns once every
    /// instance has sent its advert (or after 5 s): only then may the caller tear the
    /// data plane down. All instances resign at once, not one after the other.
    ///
    /// An instance in the middle of a state change stops waiting for the daemon's
    /// acknowledgement when this arrives (the daemon, stopping, may not answer); the
    /// caller should still acknowledge events that arrive meanwhile.
    pub async fn shutdown(self) {
        let asked = async {
            let mut waits = Vec::new();
            for i in &self.instances {
                let (done, wait) = oneshot::channel();
                if i.cmd.send(Cmd::Shutdown(done)).await.is_ok() {
                    waits.push(wait);
                }
            }
            futures_util::future::join_all(waits).await;
        };
        if tokio::time::timeout(Duration::from_secs(5), asked)
            .await
            .is_err()
        {
            tracing::warn!("VRRP: not every instance resigned within 5 s");
        }
        for i in self.instances {
            i.task.abort();
        }
    }
}

/// The XDP map key of an instance.
fn xdp_key(i: &Instance) -> lb_common::VrrpKey {
    let af = match family_of(&i.spec) {
        Family::V4 => lb_common::service::AF_INET,
        Family::V6 => lb_common::service::AF_INET6,
    };
    lb_common::VrrpKey::new(i.ifc.index, i.spec.vrid, af)
}

/// The advert `spec` sends with this priority and interval, in its VRRP version.
fn advert_of(spec: &VrrpSpec, priority: u8, max_adver_int_cs: u16) -> Advert {
    match spec.version() {
        Version::V3 => Advert::v3(
            spec.vrid,
            priority,
            max_adver_int_cs,
            spec.addresses.clone(),
        ),
        Version::V2 => Advert::v2(
            spec.vrid,
            priority,
            u8::try_from(max_adver_int_cs / 100).unwrap_or(u8::MAX),
            spec.addresses
                .iter()
                .filter_map(|a| match a {
                    IpAddr::V4(v4) => Some(*v4),
                    IpAddr::V6(_) => None,
                })
                .collect(),
        ),
    }
}

/// The family of an instance (validation keeps its addresses of one family).
fn family_of(spec: &VrrpSpec) -> Family {
    match spec.addresses.first() {
        Some(IpAddr::V6(_)) => Family::V6,
        _ => Family::V4,
    }
}

/// Our address in an election of `family`: the interface's IPv4 address, or its IPv6
/// link-local address (RFC 5798 §5.1.2.1).
fn primary(ifc: &net::Iface, family: Family) -> Option<IpAddr> {
    match family {
        Family::V4 => ifc.primary_v4.map(IpAddr::V4),
        Family::V6 => ifc.primary_v6.map(IpAddr::V6),
    }
}

/// An address as the XDP maps hold it: big-endian words in memory order, IPv4 in word 0.
fn xdp_words(addr: IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(v4) => [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
        IpAddr::V6(v6) => {
            let o = v6.octets();
            std::array::from_fn(|w| {
                u32::from_ne_bytes([o[4 * w], o[4 * w + 1], o[4 * w + 2], o[4 * w + 3]])
            })
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Driver {
    index: usize,
    spec: VrrpSpec,
    ifc: net::Iface,
    socket: AdvertSocket,
    router: VirtualRouter,
    netlink: Netlink,
    events: mpsc::Sender<VrrpEvent>,
    status: Arc<Mutex<InstanceStatus>>,
    started: Instant,
    cmds: mpsc::Receiver<Cmd>,
    /// A stop that arrived while a state change was being acknowledged: carried out
    /// before anything else (no addresses added, no announcement).
    stop: Option<Stop>,
    /// The last priority change that arrived meanwhile, likewise.
    pending_priority: Option<u8>,
    /// Resigning: the daemon is exiting and will not acknowledge state changes.
    exiting: bool,
    /// The next round of gratuitous ARPs / neighbour advertisements (`None`: none
    /// due), and how many rounds of the current burst are left after it. Sent from
    /// this task, between its state changes, so a burst ends when the instance leaves
    /// master and none is ever sent while it is not master.
    garp_next: Option<tokio::time::Instant>,
    garp_left: u32,
    /// When the addresses were last re-announced because another router advertised.
    reannounced: Option<Instant>,
    /// ARP on the interface (IPv4 instances), to notice another host announcing our
    /// addresses while we are master; `None` if it could not be opened (logged).
    arp: Option<net::ArpWatch>,
}

impl Driver {
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn family(&self) -> Family {
        family_of(&self.spec)
    }

    fn status(&self) -> std::sync::MutexGuard<'_, InstanceStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(mut self, start: Start) {
        let configured = [Configured {
            vrid: self.spec.vrid,
            family: self.family(),
            version: self.spec.version(),
            owner: self.spec.priority == 255,
            adver_int_cs: self.spec.adver_int_cs(),
            auth_type: 0,
            auth_data: [0; 8],
            addresses: None,
        }];
        // A master whose daemon restarted (crash, upgrade) still holds the addresses and
        // its pinned data plane still forwards: it resumes instead of flapping.
        // Not with nopreempt: resuming would take the addresses back from a peer that
        // took over meanwhile, which is exactly what nopreempt forbids.
        let start = if start == Start::AsConfigured
            && self.spec.preempt
            && self.ifc.holds_all(&self.spec.addresses)
        {
            Event::Resume
        } else {
            Event::Startup
        };
        let mut actions = self.router.handle(self.now(), start);
        let mut buf = vec![0u8; 2048];
        let mut arp_buf = vec![0u8; 128];
        let mut link = tokio::time::interval(Duration::from_secs(1));
        let mut running = self.ifc.running;
        loop {
            self.perform(&actions).await;
            match self.stop.take() {
                Some(Stop::Shutdown(done)) => {
                    self.resign().await;
                    let _ = done.send(());
                    return;
                }
                Some(Stop::Dropped) => return,
                None => {}
            }
            if let Some(p) = self.pending_priority.take() {
                actions = self.set_priority(p);
                continue;
            }
            let wake = self
                .router
                .next_deadline()
                .map_or(Duration::from_secs(3600), |d| d.saturating_sub(self.now()));
            let garp_due = self.garp_next;
            actions = tokio::select! {
                r = recv_arp(self.arp.as_ref(), &mut arp_buf) => {
                    if let Ok(n) = r {
                        self.heard_arp(&arp_buf[..n]);
                    }
                    Vec::new()
                }
                () = sleep_until(garp_due) => {
                    self.garp_round();
                    Vec::new()
                }
                r = self.socket.recv(&mut buf) => match r {
                    Ok(Datagram::Ipv4Packet { len }) => {
                        self.received(packet::decode_ip(&buf[..len], &configured))
                    }
                    Ok(Datagram::Ipv6Message { src, dst, hop_limit, len }) => self.received(
                        packet::decode_vrrp(src.into(), dst.into(), hop_limit, &buf[..len], &configured),
                    ),
                    Err(e) => {
                        tracing::warn!(instance = %self.spec.name, "VRRP receive failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Vec::new()
                    }
                },
                () = tokio::time::sleep(wake) => self.router.handle(self.now(), Event::Timer),
                cmd = self.cmds.recv() => match cmd {
                    Some(Cmd::Priority(p)) => self.set_priority(p),
                    Some(Cmd::Reannounce) => {
                        self.reannounce("another router advertised (answered in XDP)");
                        Vec::new()
                    }
                    #[cfg(feature = "test-hooks")]
                    Some(Cmd::Panic) => panic!("injected"),
                    Some(Cmd::Shutdown(done)) => {
                        self.stop = Some(Stop::Shutdown(done));
                        Vec::new()
                    }
                    None => {
                        self.stop = Some(Stop::Dropped);
                        Vec::new()
                    }
                },
                _ = link.tick() => {
                    // Neighbours may have flushed their caches while the link was down:
                    // a master announces itself again when it comes back.
                    let now = net::iface(&self.spec.interface, &self.spec.addresses)
                        .map(|i| i.running)
                        .unwrap_or(false);
                    if now && !running && self.router.state() == State::Master {
                        tracing::info!(instance = %self.spec.name, "link back up: announcing the addresses again");
                        self.announce();
                    }
                    running = now;
                    Vec::new()
                }
            };
        }
    }

    fn set_priority(&mut self, priority: u8) -> Vec<Action> {
        let a = self
            .router
            .handle(self.now(), Event::PriorityChanged(priority));
        self.status().priority = self.router.priority();
        a
    }

    /// Graceful stop: a master sends its priority-0 advert (awaited: it is on the wire
    /// when this returns) and every instance releases the addresses.
    async fn resign(&mut self) {
        self.exiting = true;
        let a = self.router.handle(self.now(), Event::Shutdown);
        self.perform(&a).await;
    }

    fn received(&mut self, decoded: Result<packet::Received, packet::Invalid>) -> Vec<Action> {
        match decoded {
            Ok(rx) if Some(rx.src) == primary(&self.ifc, self.family()) => Vec::new(),
            Ok(rx)
                if !self.spec.unicast_peers.is_empty()
                    && !self.spec.unicast_peers.contains(&rx.src) =>
            {
                // With unicast peers configured, only they take part in the election.
                *self
                    .status()
                    .invalid
                    .entry("unknown_peer".to_owned())
                    .or_insert(0) += 1;
                Vec::new()
            }
            Ok(rx) => {
                self.status().adverts_received += 1;
                let actions = self.router.handle(self.now(), Event::from(&rx));
                // Only a master advertises: a router we stay master over thinks it is
                // master too (a healed split, a peer that just took over) or resigned,
                // and clients may have followed its announcements. Announce ours again
                // now rather than leave them on the other router (keepalived's
                // re-announcement on a lower-priority advert; issue 14, item 9).
                if self.router.state() == State::Master {
                    self.reannounce("another router advertised");
                }
                actions
            }
            Err(invalid) => {
                *self
                    .status()
                    .invalid
                    .entry(invalid.reason().to_owned())
                    .or_insert(0) += 1;
                tracing::debug!(instance = %self.spec.name, "VRRP advert dropped: {invalid}");
                Vec::new()
            }
        }
    }

    async fn perform(&mut self, actions: &[Action]) {
        for action in actions {
            match *action {
                Action::SendAdvert {
                    priority,
                    max_adver_int_cs,
                } => self.send_advert(priority, max_adver_int_cs).await,
                Action::BecomeMaster => {
                    self.changed().await;
                    if self.stop.is_some() {
                        // Told to stop while the daemon applied the change: never take
                        // or announce the addresses on the way out; resigning follows.
                        break;
                    }
                    for addr in &self.spec.addresses {
                        if let Err(e) = self.netlink.add(self.ifc.index, *addr).await {
                            tracing::error!(instance = %self.spec.name, "{e:#}");
                        }
                    }
                    self.announce();
                }
                Action::BecomeBackup | Action::BecomeInitialize => {
                    // A burst still running ends here, before the addresses go.
                    self.garp_next = None;
                    self.garp_left = 0;
                    for addr in &self.spec.addresses {
                        if let Err(e) = self.netlink.remove(self.ifc.index, *addr).await {
                            tracing::error!(instance = %self.spec.name, "{e:#}");
                        }
                    }
                    self.changed().await;
                }
            }
        }
        let mut st = self.status();
        st.master = self.router.master_address();
        st.priority = self.router.priority();
    }

    async fn send_advert(&mut self, priority: u8, max_adver_int_cs: u16) {
        let family = self.family();
        let Some(src) = primary(&self.ifc, family) else {
            return;
        };
        let advert = advert_of(&self.spec, priority, max_adver_int_cs);
        let destinations: Vec<IpAddr> = if self.spec.unicast_peers.is_empty() {
            vec![family.multicast_group()]
        } else {
            self.spec.unicast_peers.clone()
        };
        for dst in destinations {
            // The v3 checksum covers the destination (pseudo-header): one per peer.
            match packet::encode(src, dst, &advert) {
                Ok(msg) => match self.socket.send(&msg, dst).await {
                    Ok(()) => self.status().adverts_sent += 1,
                    Err(e) => {
                        tracing::warn!(instance = %self.spec.name, %dst, "sending an advert failed: {e}");
                    }
                },
                Err(e) => {
                    tracing::error!(instance = %self.spec.name, "encoding an advert failed: {e}");
                }
            }
        }
    }

    /// Reports the state change to the daemon and waits until its data plane follows.
    async fn changed(&mut self) {
        let Some(t) = self.router.history().last().cloned() else {
            return;
        };
        {
            let mut st = self.status();
            st.state = t.to.to_string();
            st.since_unix_s = unix_now();
            st.history.push((
                t.at.as_secs_f64(),
                t.from.to_string(),
                t.to.to_string(),
                t.reason.clone(),
            ));
            let excess = st.history.len().saturating_sub(super::state::HISTORY_LEN);
            st.history.drain(..excess);
        }
        let (applied, done) = oneshot::channel();
        let event = VrrpEvent {
            instance: self.index,
            name: self.spec.name.clone(),
            from: t.from,
            to: t.to,
            reason: t.reason,
            applied,
        };
        if self.exiting {
            let _ = self.events.try_send(event);
            return;
        }
        // Waiting for the daemon must not keep a stop from being read: a daemon that
        // got SIGTERM acknowledges nothing more, and a master blocked here for the
        // timeout sent its priority-0 advert 2 s late (issue 14, item 13), long after
        // its backup's Master_Down_Interval at 100 ms adverts.
        let events = &self.events;
        let applied = async move {
            if events.send(event).await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
            }
        };
        tokio::pin!(applied);
        loop {
            tokio::select! {
                () = &mut applied => return,
                cmd = self.cmds.recv() => match cmd {
                    Some(Cmd::Priority(p)) => self.pending_priority = Some(p),
                    // Not master yet: becoming master announces anyway.
                    Some(Cmd::Reannounce) => {}
                    #[cfg(feature = "test-hooks")]
                    Some(Cmd::Panic) => panic!("injected"),
                    Some(Cmd::Shutdown(done)) => {
                        self.stop = Some(Stop::Shutdown(done));
                        return;
                    }
                    None => {
                        self.stop = Some(Stop::Dropped);
                        return;
                    }
                },
            }
        }
    }

    /// Starts a burst: one round of gratuitous ARP (IPv4) or unsolicited neighbour
    /// advertisement (IPv6) for every address now, `garp.repeat` rounds in all,
    /// `garp.delay_ms` apart; then, with `garp.refresh_s`, one round every that many
    /// seconds while master. A burst already running is replaced. Only while master.
    fn announce(&mut self) {
        if self.router.state() != State::Master {
            return;
        }
        self.garp_left = self.spec.garp.repeat;
        self.garp_round();
    }

    /// One round of the current burst (or refresh), and the next one scheduled.
    fn garp_round(&mut self) {
        self.garp_next = None;
        if self.router.state() != State::Master {
            self.garp_left = 0;
            return;
        }
        if self.garp_left > 0 || self.spec.garp.refresh_s > 0 {
            if let Err(e) = net::send_frames(self.ifc.index, &self.garp_frames()) {
                tracing::warn!(instance = %self.spec.name, "gratuitous ARP / neighbour advertisement failed: {e}");
            }
        }
        self.garp_left = self.garp_left.saturating_sub(1);
        let now = tokio::time::Instant::now();
        self.garp_next = if self.garp_left > 0 {
            Some(now + Duration::from_millis(self.spec.garp.delay_ms))
        } else if self.spec.garp.refresh_s > 0 {
            Some(now + Duration::from_secs(u64::from(self.spec.garp.refresh_s)))
        } else {
            None
        };
    }

    /// Announces the addresses again (a new burst), at most once per advert interval:
    /// a peer flooding adverts must not turn into a flood of ours.
    fn reannounce(&mut self, why: &str) {
        let interval = Duration::from_millis(u64::from(self.spec.adver_int_cs()) * 10);
        if self.reannounced.is_some_and(|at| at.elapsed() < interval) {
            return;
        }
        if self.router.state() != State::Master {
            return;
        }
        self.reannounced = Some(Instant::now());
        tracing::info!(instance = %self.spec.name, "{why}: announcing the addresses again");
        self.announce();
    }

    /// Another host announcing one of our addresses while we are master: it took the
    /// clients (a router that was master during a split and whose adverts never reached
    /// us, so nothing else tells us); announce ours again.
    fn heard_arp(&mut self, frame: &[u8]) {
        let Some((ip, mac)) = net::arp_sender(frame) else {
            return;
        };
        if mac != self.ifc.mac
            && self.router.state() == State::Master
            && self.spec.addresses.contains(&IpAddr::V4(ip))
        {
            let why = format!(
                "{ip} announced by {}",
                mac.map(|b| format!("{b:02x}")).join(":")
            );
            self.reannounce(&why);
        }
    }

    /// The frames of one round: one per address.
    fn garp_frames(&self) -> Vec<Vec<u8>> {
        self.spec
            .addresses
            .iter()
            .map(|a| match a {
                IpAddr::V4(v4) => net::garp_frame(self.ifc.mac, *v4),
                // From our link-local address (always there for an IPv6 instance: it is
                // the one we send adverts from), or the address itself if it vanished.
                IpAddr::V6(v6) => {
                    net::unsolicited_na_frame(self.ifc.mac, self.ifc.primary_v6.unwrap_or(*v6), *v6)
                }
            })
            .collect()
    }
}

/// The next ARP frame, or never without a watch.
async fn recv_arp(watch: Option<&net::ArpWatch>, buf: &mut [u8]) -> std::io::Result<usize> {
    match watch {
        Some(w) => w.recv(buf).await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads in XDP.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer; CLOCK_MONOTONIC cannot fail on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdp_words_are_the_packet_bytes_in_memory_order() {
        // XDP compares `VrrpRouter::addr` with the address words as they sit in the
        // packet (lb-ebpf/src/vrrp.rs: `src: ip.src`), so the words' bytes, in memory,
        // are the address bytes in order.
        let v6: IpAddr = "fe80::1:2".parse().unwrap();
        let bytes: Vec<u8> = xdp_words(v6).iter().flat_map(|w| w.to_ne_bytes()).collect();
        assert_eq!(
            bytes,
            v6.to_string()
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        let v4: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(xdp_words(v4)[0].to_ne_bytes(), [10, 0, 0, 2]);
        assert_eq!(xdp_words(v4)[1..], [0, 0, 0]);
    }
}
