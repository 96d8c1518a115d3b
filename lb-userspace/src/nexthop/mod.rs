//! Next hops learned from the kernel instead of typed into the config: for every
//! backend without a configured `mac`, the MAC its frames are sent to (the backend's
//! own for DSR and on-link tunnel backends, the route's gateway's for tunnel backends
//! behind a router).
//!
//! The kernel's route and neighbour tables are the source of truth, as for the host's
//! own traffic: [`kernel`] asks for the route (`ip route get`), makes the neighbour
//! entry of its next hop a *managed* one (`NTF_EXT_MANAGED`, Linux 5.16: the kernel
//! resolves it at once and keeps it resolved, which it would not do on its own since
//! XDP-forwarded frames never confirm an entry) and follows neighbour and route
//! changes over rtnetlink multicast. This module is the kernel-free part: what one
//! answer means for a backend, so the supervisor's logic is testable without a kernel.
//!
//! A backend whose next hop is unresolved takes no new flows (it is drained as a
//! failed backend would be) and says why in `xlb backends`; flows it already has keep
//! the last MAC it had, which is right when the neighbour only lapsed and harmless
//! when the backend is gone.

pub mod kernel;

use std::{collections::BTreeMap, fmt, net::IpAddr};

use serde::Serialize;

use crate::config::{Fallback, Mode, ServiceSpec};

/// Where the kernel routes a backend's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Outgoing interface.
    pub ifindex: u32,
    /// The route's gateway; `None` when the backend is on a directly connected network.
    pub gateway: Option<IpAddr>,
}

impl Route {
    /// The address whose MAC frames towards `backend` carry.
    pub fn hop(&self, backend: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(backend)
    }
}

/// Why a backend's next hop has no MAC (yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unresolved {
    /// Not asked yet.
    Pending,
    /// The kernel has no usable route (its error).
    NoRoute(String),
    /// The address is one of this host's own.
    Local,
    /// ARP/ND sent, no answer yet.
    Resolving,
    /// ARP/ND got no answer (the kernel keeps trying; a managed entry is re-probed).
    Failed,
    /// The neighbour entry has no link-layer address (a NOARP device).
    NoLinkLayer,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unresolved::Pending => f.write_str("not resolved yet"),
            Unresolved::NoRoute(why) => write!(f, "no route: {why}"),
            Unresolved::Local => f.write_str("the address is local to this host"),
            Unresolved::Resolving => f.write_str("resolving (ARP/ND sent, no answer yet)"),
            Unresolved::Failed => f.write_str("neighbour unreachable (no ARP/ND answer)"),
            Unresolved::NoLinkLayer => f.write_str("the route's device has no link-layer address"),
        }
    }
}

/// What the kernel says about one backend address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub route: Option<Route>,
    /// The next hop's MAC, or why there is none.
    pub mac: Result<[u8; 6], Unresolved>,
}

impl Hop {
    pub const PENDING: Hop = Hop {
        route: None,
        mac: Err(Unresolved::Pending),
    };
}

/// The learned next hop of every backend that needs one, with the last MAC each had
/// (kept for its established flows while it is unresolved).
#[derive(Clone, Debug, Default)]
pub struct NextHops {
    hops: BTreeMap<IpAddr, Hop>,
    last_mac: BTreeMap<IpAddr, [u8; 6]>,
}

/// Why a backend takes no new flows because of its next hop (`None`: it may).
pub fn blocked(mode: Mode, hop: &Hop) -> Option<String> {
    match (&hop.mac, hop.route) {
        (Err(why), _) => Some(why.to_string()),
        // DSR rewrites only the MACs: the backend must share a segment with us. Via a
        // router the frame (to the VIP) would be routed straight back here.
        (
            Ok(_),
            Some(Route {
                gateway: Some(gw), ..
            }),
        ) if mode == Mode::Dsr => Some(format!(
            "dsr needs the backend on a directly connected network; the kernel routes it via {gw}"
        )),
        (Ok(_), _) => None,
    }
}

impl NextHops {
    /// Backend addresses that need a learned next hop: those without a configured `mac`
    /// (sorry servers included).
    pub fn targets(services: &[ServiceSpec]) -> std::collections::BTreeSet<IpAddr> {
        services
            .iter()
            .flat_map(|s| {
                let sorry = match &s.fallback {
                    Fallback::SorryServer(b) => Some(&**b),
                    _ => None,
                };
                s.backends.iter().chain(sorry)
            })
            .filter(|b| b.mac.is_none())
            .map(|b| b.address)
            .collect()
    }

    /// Records what the kernel says about `addr`; returns whether it changed anything
    /// the data plane or a view shows.
    pub fn update(&mut self, addr: IpAddr, hop: Hop) -> bool {
        if let Ok(mac) = hop.mac {
            self.last_mac.insert(addr, mac);
        }
        self.hops.insert(addr, hop.clone()) != Some(hop)
    }

    /// Forgets addresses no longer in `targets`.
    pub fn retain(&mut self, targets: &std::collections::BTreeSet<IpAddr>) {
        self.hops.retain(|a, _| targets.contains(a));
        self.last_mac.retain(|a, _| targets.contains(a));
    }

    pub fn get(&self, addr: IpAddr) -> &Hop {
        self.hops.get(&addr).unwrap_or(&Hop::PENDING)
    }

    /// The MAC to write for `addr`: the resolved one, else the last one it had.
    pub fn mac(&self, addr: IpAddr) -> Option<[u8; 6]> {
        self.last_mac.get(&addr).copied()
    }

    /// Number of backends whose next hop is unresolved.
    pub fn unresolved(&self) -> usize {
        self.hops.values().filter(|h| h.mac.is_err()).count()
    }

    /// Every backend's next hop, for views and metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&IpAddr, &Hop)> {
        self.hops.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(gateway: Option<IpAddr>, mac: Result<[u8; 6], Unresolved>) -> Hop {
        Hop {
            route: Some(Route {
                ifindex: 2,
                gateway,
            }),
            mac,
        }
    }

    #[test]
    fn dsr_refuses_a_backend_behind_a_router_and_tunnels_take_it() {
        let gw = IpAddr::from([10, 0, 0, 1]);
        let routed = hop(Some(gw), Ok([2, 0, 0, 0, 0, 1]));
        assert!(blocked(Mode::Dsr, &routed)
            .unwrap()
            .contains("via 10.0.0.1"));
        assert_eq!(blocked(Mode::Ipip, &routed), None);
        assert_eq!(blocked(Mode::Gue, &routed), None);
        assert_eq!(blocked(Mode::Dsr, &hop(None, Ok([2; 6]))), None);
        let failed = hop(None, Err(Unresolved::Failed));
        assert!(blocked(Mode::Ipip, &failed)
            .unwrap()
            .contains("unreachable"));
    }

    #[test]
    fn the_last_mac_outlives_a_lapse_and_follows_a_change() {
        let addr = IpAddr::from([10, 0, 1, 1]);
        let mut hops = NextHops::default();
        assert_eq!(hops.mac(addr), None);
        assert!(hops.update(addr, hop(None, Ok([2, 0, 0, 0, 0, 1]))));
        assert!(!hops.update(addr, hop(None, Ok([2, 0, 0, 0, 0, 1]))));
        assert!(hops.update(addr, hop(None, Err(Unresolved::Failed))));
        assert_eq!(hops.mac(addr), Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(hops.unresolved(), 1);
        assert!(hops.update(addr, hop(None, Ok([2, 0, 0, 0, 0, 9]))));
        assert_eq!(hops.mac(addr), Some([2, 0, 0, 0, 0, 9]));
        hops.retain(&Default::default());
        assert_eq!(hops.mac(addr), None);
        assert_eq!(hops.get(addr), &Hop::PENDING);
    }
}
