//! The kernel side of next-hop learning, over rtnetlink: one route lookup per backend
//! (`RTM_GETROUTE` for its address, as `ip route get` does), a managed neighbour entry
//! for each next hop, and a multicast subscription to neighbour and route changes.
//!
//! Why managed entries (`NTF_EXT_MANAGED`): the kernel resolves an ordinary entry only
//! when its own stack sends through it and lets it go stale and be collected when
//! nothing does; XDP-forwarded frames never touch it. A managed entry is resolved at
//! creation and re-probed by the kernel for as long as it exists, so a backend that
//! changes its MAC (and announces it, or answers the next probe) or comes back after a
//! failure is re-learned without xlb sending anything itself. An entry the operator
//! made permanent (or a NOARP device's) is used as it is.
//!
//! The answer is a stream of [`Hop`] updates for the daemon; every 10 s everything is
//! looked up again, in case a multicast message was lost (the socket's buffer can
//! overflow under a flood of neighbour changes).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use futures_util::{stream::BoxStream, StreamExt, TryStreamExt};
use rtnetlink::{
    packet_core::NetlinkPayload,
    packet_route::{
        neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourMessage,
            NeighbourState,
        },
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
        AddressFamily, RouteNetlinkMessage,
    },
    Handle, MulticastGroup,
};
use tokio::sync::{mpsc, watch};

use super::{Hop, Route, Unresolved};

/// How often everything is looked up again without an event.
const REFRESH: Duration = Duration::from_secs(10);
/// Route changes come in bursts (a link going down withdraws many): they are looked
/// at once the burst has been quiet this long.
const ROUTE_SETTLE: Duration = Duration::from_millis(50);
/// How long the first resolution waits for answers to the ARP/ND it caused, so a
/// starting daemon serves its backends from its first apply.
const FIRST_WAIT: Duration = Duration::from_secs(2);

/// A running resolver: tell it which addresses to follow; updates arrive on the
/// receiver [`Resolver::start`] returned.
pub struct Resolver {
    targets: watch::Sender<BTreeSet<IpAddr>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Updates for the daemon: (backend address, what the kernel says now).
pub type Updates = mpsc::Receiver<Vec<(IpAddr, Hop)>>;

impl Resolver {
    /// Resolves `targets` (waiting up to [`FIRST_WAIT`] for neighbour answers) and
    /// keeps following them. Returns the first answers too, for the daemon's first apply.
    pub async fn start(
        targets: BTreeSet<IpAddr>,
    ) -> std::io::Result<(Resolver, BTreeMap<IpAddr, Hop>, Updates)> {
        let (conn, handle, events) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Neigh,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
        ])?;
        tokio::spawn(conn);
        let mut state = State {
            handle,
            events: events.boxed(),
            targets: BTreeSet::new(),
            hops: BTreeMap::new(),
        };
        state.targets = targets.clone();
        state.resolve_all().await;
        let deadline = tokio::time::Instant::now() + FIRST_WAIT;
        while state
            .hops
            .values()
            .any(|h| h.mac == Err(Unresolved::Resolving))
        {
            match tokio::time::timeout_at(deadline, state.events.next()).await {
                Ok(Some((msg, _))) => {
                    state.on_message(msg.payload).await;
                }
                _ => break,
            }
        }
        let first = state.hops.clone();
        let (targets_tx, targets_rx) = watch::channel(targets);
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(state.run(targets_rx, tx));
        Ok((
            Resolver {
                targets: targets_tx,
                task,
            },
            first,
            rx,
        ))
    }

    /// Follows these addresses from now on (the others are forgotten).
    pub fn follow(&self, targets: BTreeSet<IpAddr>) {
        self.targets.send_if_modified(|t| {
            let changed = *t != targets;
            *t = targets;
            changed
        });
    }
}

struct State {
    handle: Handle,
    events: BoxStream<
        'static,
        (
            rtnetlink::packet_core::NetlinkMessage<RouteNetlinkMessage>,
            rtnetlink::sys::SocketAddr,
        ),
    >,
    targets: BTreeSet<IpAddr>,
    /// What was last reported per target.
    hops: BTreeMap<IpAddr, Hop>,
}

impl State {
    async fn run(
        mut self,
        mut targets: watch::Receiver<BTreeSet<IpAddr>>,
        tx: mpsc::Sender<Vec<(IpAddr, Hop)>>,
    ) {
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.reset();
        let mut routes_changed: Option<tokio::time::Instant> = None;
        loop {
            let settle = routes_changed.map(|t| t + ROUTE_SETTLE);
            let changed = tokio::select! {
                r = targets.changed() => {
                    if r.is_err() {
                        return;
                    }
                    self.targets = targets.borrow_and_update().clone();
                    self.hops.retain(|a, _| self.targets.contains(a));
                    self.resolve_all().await
                }
                _ = refresh.tick() => self.resolve_all().await,
                _ = async { tokio::time::sleep_until(settle.unwrap()).await }, if settle.is_some() => {
                    routes_changed = None;
                    self.resolve_all().await
                }
                msg = self.events.next() => {
                    let Some((msg, _)) = msg else { return };
                    match self.on_message(msg.payload).await {
                        Event::Routes => {
                            routes_changed.get_or_insert_with(tokio::time::Instant::now);
                            Vec::new()
                        }
                        Event::Hops(changed) => changed,
                    }
                }
            };
            if !changed.is_empty() && tx.send(changed).await.is_err() {
                return;
            }
        }
    }

    /// Records `hop` for `addr`; returns it if it differs from what was reported.
    fn note(&mut self, addr: IpAddr, hop: Hop) -> Option<(IpAddr, Hop)> {
        (self.hops.insert(addr, hop.clone()).as_ref() != Some(&hop)).then_some((addr, hop))
    }

    /// Looks every target up again; returns what changed.
    async fn resolve_all(&mut self) -> Vec<(IpAddr, Hop)> {
        let neighbours = self.neighbours().await;
        let mut changed = Vec::new();
        for addr in self.targets.clone() {
            let hop = match self.route(addr).await {
                Err(why) => Hop {
                    route: None,
                    mac: Err(why),
                },
                Ok(route) => {
                    let entry = neighbours.get(&(route.ifindex, route.hop(addr)));
                    let mac = self.ensure_managed(route, addr, entry).await;
                    Hop {
                        route: Some(route),
                        mac,
                    }
                }
            };
            changed.extend(self.note(addr, hop));
        }
        changed
    }

    /// What a neighbour or route message changes.
    async fn on_message(&mut self, payload: NetlinkPayload<RouteNetlinkMessage>) -> Event {
        let (msg, deleted) = match payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => (m, false),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => (m, true),
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_),
            ) => return Event::Routes,
            _ => return Event::Hops(Vec::new()),
        };
        let Some(entry) = Entry::of(&msg) else {
            return Event::Hops(Vec::new());
        };
        let ifindex = msg.header.ifindex;
        let affected: Vec<(IpAddr, Route)> = self
            .hops
            .iter()
            .filter_map(|(addr, h)| {
                let route = h.route?;
                (route.ifindex == ifindex && route.hop(*addr) == entry.addr)
                    .then_some((*addr, route))
            })
            .collect();
        let mut changed = Vec::new();
        for (addr, route) in affected {
            let mac = if deleted {
                // Flushed by someone (`ip neigh flush`): made again, and resolved again.
                self.ensure_managed(route, addr, None).await
            } else {
                entry.mac()
            };
            changed.extend(self.note(
                addr,
                Hop {
                    route: Some(route),
                    mac,
                },
            ));
        }
        Event::Hops(changed)
    }

    /// The kernel's route to `addr` (its answer to `ip route get ADDR`).
    async fn route(&mut self, addr: IpAddr) -> Result<Route, Unresolved> {
        let mut msg = RouteMessage::default();
        let (family, len, dst) = match addr {
            IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
        };
        msg.header.address_family = family;
        msg.header.destination_prefix_length = len;
        msg.attributes.push(RouteAttribute::Destination(dst));
        let answer = self.handle.route().get(msg).execute().try_next().await;
        let route = match answer {
            Ok(Some(route)) => route,
            Ok(None) => return Err(Unresolved::NoRoute("no answer".into())),
            Err(rtnetlink::Error::NetlinkError(e)) => {
                let errno = -e.raw_code();
                return Err(Unresolved::NoRoute(
                    std::io::Error::from_raw_os_error(errno).to_string(),
                ));
            }
            Err(e) => return Err(Unresolved::NoRoute(e.to_string())),
        };
        match route.header.kind {
            RouteType::Unicast => {}
            RouteType::Local => return Err(Unresolved::Local),
            other => return Err(Unresolved::NoRoute(format!("route type {other:?}"))),
        }
        let mut ifindex = None;
        let mut gateway = None;
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(i) => ifindex = Some(*i),
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
                RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
                // An IPv4 route via an IPv6 next hop (RFC 5549).
                RouteAttribute::Via(RouteVia::Inet6(a)) => gateway = Some(IpAddr::V6(*a)),
                RouteAttribute::Via(RouteVia::Inet(a)) => gateway = Some(IpAddr::V4(*a)),
                _ => {}
            }
        }
        let ifindex = ifindex.ok_or_else(|| Unresolved::NoRoute("no output interface".into()))?;
        Ok(Route { ifindex, gateway })
    }

    /// Every neighbour entry, by (interface, address). (`&mut self` here and below
    /// only so the task is `Send`: the event stream is not `Sync`.)
    async fn neighbours(&mut self) -> HashMap<(u32, IpAddr), Entry> {
        let mut out = HashMap::new();
        let mut dump = self.handle.neighbours().get().execute();
        while let Ok(Some(msg)) = dump.try_next().await {
            if let Some(entry) = Entry::of(&msg) {
                out.insert((msg.header.ifindex, entry.addr), entry);
            }
        }
        out
    }

    /// Makes the neighbour entry of `route`'s next hop a managed one unless it is
    /// already managed or permanent; returns its MAC as the kernel has it now.
    async fn ensure_managed(
        &mut self,
        route: Route,
        backend: IpAddr,
        entry: Option<&Entry>,
    ) -> Result<[u8; 6], Unresolved> {
        if let Some(e) = entry.filter(|e| e.managed || e.kept()) {
            return e.mac();
        }
        let hop = route.hop(backend);
        let mut req = self.handle.neighbours().add(route.ifindex, hop).replace();
        // Kept (with its MAC, as stale) when it has one: the kernel confirms it with a
        // unicast probe, and nothing is drained meanwhile.
        let known = entry.and_then(|e| e.mac().ok());
        req = match known {
            Some(mac) => req.link_layer_address(&mac).state(NeighbourState::Stale),
            None => req.state(NeighbourState::None),
        };
        req.message_mut()
            .attributes
            .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
        if let Err(e) = req.execute().await {
            tracing::warn!(%hop, ifindex = route.ifindex, "creating a managed neighbour entry failed: {e}");
        }
        known.ok_or(Unresolved::Resolving)
    }
}

enum Event {
    /// The routing table changed: everything is looked up again once it settles.
    Routes,
    /// Backends whose next hop changed.
    Hops(Vec<(IpAddr, Hop)>),
}

/// One neighbour entry as the kernel reports it.
struct Entry {
    addr: IpAddr,
    state: NeighbourState,
    lladdr: Option<[u8; 6]>,
    managed: bool,
}

impl Entry {
    fn of(msg: &NeighbourMessage) -> Option<Entry> {
        if !matches!(
            msg.header.family,
            AddressFamily::Inet | AddressFamily::Inet6
        ) {
            return None;
        }
        let mut addr = None;
        let mut lladdr = None;
        let mut managed = false;
        for attr in &msg.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    addr = Some(IpAddr::V4(*a));
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    addr = Some(IpAddr::V6(*a));
                }
                NeighbourAttribute::LinkLayerAddress(l) => {
                    lladdr = <[u8; 6]>::try_from(&l[..]).ok();
                }
                NeighbourAttribute::ExtFlags(f) => managed = f.contains(NeighbourExtFlags::Managed),
                _ => {}
            }
        }
        Some(Entry {
            addr: addr?,
            state: msg.header.state,
            lladdr,
            managed,
        })
    }

    /// Set by the operator (or a NOARP device): used as it is, never replaced.
    fn kept(&self) -> bool {
        matches!(
            self.state,
            NeighbourState::Permanent | NeighbourState::Noarp
        )
    }

    fn mac(&self) -> Result<[u8; 6], Unresolved> {
        match self.state {
            NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp => self.lladdr.ok_or(Unresolved::NoLinkLayer),
            NeighbourState::Failed => Err(Unresolved::Failed),
            _ => Err(Unresolved::Resolving),
        }
    }
}
