//! The one-arm balancer topology of the end-to-end tests (`dsr_e2e`, `ipip_e2e`,
//! `swap_e2e`): real TCP from a client through the XDP balancer to three backends.
//!
//! ```text
//!   client  .1    ──┐
//!   lb      .2    ──┤   xlb (native) on the lb's veth, xlb_pass on its switch-side peer
//!   be1     .11   ──┤ br0 (in the `switch` namespace)
//!   be2     .12   ──┤   IPIP mode: xlb_decap (native) on each backend's veth, loaded
//!   be3     .13   ──┘   from the backend's own data plane
//! ```
//!
//! The client routes the VIP via the lb. The lb's XDP program picks a backend
//! (connection table, else Maglev) and sends the frame back out of the same veth
//! (XDP_TX): in DSR mode with only the destination MAC rewritten, in IPIP mode wrapped in
//! an outer IP header from the lb's address to the backend's. Each backend holds the VIP
//! on `lo`, stays silent about it in ARP/ND, and answers the client directly (direct
//! server return): the lb only ever sees client→VIP packets.
//!
//! [`V4`] uses 10.50.0.0/24 with IPv6 off everywhere (no ND/MLD chatter); [`V6`] uses
//! fd00:50::/64 with IPv6 on the hosts' veths (neighbour discovery through the bridge,
//! whose multicast snooping is off so solicitations are simply flooded).

use std::{
    collections::{BTreeMap, HashMap as StdHashMap},
    io::{self, Read},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use aya::maps::{Array, ArrayOfMaps, HashMap, MapData};
use lb_common::{
    maps::{CONNS, MAGLEV, SERVICES},
    programs,
    service::flow_hash,
    Conn, FlowKey, Service, Stat, VipKey,
};
use lb_userspace::{
    balancer::{ApplyReport, Balancer},
    config::{service::vip_key, BackendSpec, EncapSources, MacAddr, Mode, Protocol, ServiceSpec},
    dataplane::{
        aya::{stats, AyaPort, LoadOptions},
        prefix::{IpPrefix, Prefix},
        AttachMode, AttachedMode, GlobalStats,
    },
};

use crate::{
    dataplane::{wait_until, PinDir},
    process::ChildGuard,
    vlan_lab::{self, VlanLab},
    Netns, TcpServer, VethPair,
};

/// The IPv4 plan's VIP, client and lb addresses (10.50.0.0/24).
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 100);
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 1);
pub const LB4: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 2);
/// The IPv6 plan's VIP, client and lb addresses (fd00:50::/64).
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 0x100);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 1);
pub const LB6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 2);
pub const VIP_PORT: u16 = 80;
const BRIDGE: &str = "br0";
/// Connect and read timeout of the client, and how long counters may take to settle.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Who has which address in one topology (all in one on-link prefix).
#[derive(Clone, Copy, Debug)]
pub struct Addresses {
    pub vip: IpAddr,
    pub client: IpAddr,
    pub lb: IpAddr,
    pub backends: [(&'static str, IpAddr); 3],
    pub prefix_len: u8,
}

/// IPv4 only: 10.50.0.0/24.
pub const V4: Addresses = Addresses {
    vip: IpAddr::V4(VIP4),
    client: IpAddr::V4(CLIENT4),
    lb: IpAddr::V4(LB4),
    backends: [
        ("be1", IpAddr::V4(Ipv4Addr::new(10, 50, 0, 11))),
        ("be2", IpAddr::V4(Ipv4Addr::new(10, 50, 0, 12))),
        ("be3", IpAddr::V4(Ipv4Addr::new(10, 50, 0, 13))),
    ],
    prefix_len: 24,
};

/// IPv6 only (IPv4 unused): fd00:50::/64.
pub const V6: Addresses = Addresses {
    vip: IpAddr::V6(VIP6),
    client: IpAddr::V6(CLIENT6),
    lb: IpAddr::V6(LB6),
    backends: [
        (
            "be1",
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 0x11)),
        ),
        (
            "be2",
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 0x12)),
        ),
        (
            "be3",
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x50, 0, 0, 0, 0, 0, 0x13)),
        ),
    ],
    prefix_len: 64,
};

/// A backend as the test knows it.
pub struct Backend {
    pub name: &'static str,
    pub addr: IpAddr,
    pub mac: [u8; 6],
    /// Its end of the veth to the switch (inside its namespace).
    pub iface: String,
    /// The switch's end of that veth (a bridge port in the `switch` namespace), where
    /// a capture sees the tunnelled frames before the backend's decap unwraps them.
    pub port: String,
}

/// The whole topology. Field order is drop order, also when a test panics: the servers
/// (whose sockets live in the backend namespaces), the data planes (program and map
/// fds), the pin directories (their Drop unpins the XDP links, detaching them), and last
/// the namespaces (deleting them destroys the veths and the bridge).
pub struct Testbed {
    pub servers: Vec<TcpServer>,
    /// [`Tunnels::decap_daemon`]: each backend's `xlb decap` process (same order as
    /// `backends`); killed before the pin directories go.
    decap_daemons: Vec<ChildGuard>,
    /// With VLANs ([`Testbed::tagged`]): the lab's tagger and untagger, held so they
    /// stay attached.
    _vlan_lab: Option<VlanLab>,
    /// The balancer's data plane (on the lb).
    pub dp: AyaPort,
    /// IPIP mode: each backend's own data plane, running `xlb_decap` on its veth (same
    /// order as `backends`); empty in DSR mode.
    pub decap: Vec<AyaPort>,
    pub balancer: Balancer,
    pins: PinDir,
    decap_pins: Vec<PinDir>,
    pub client: Netns,
    pub lb: Netns,
    pub backend_ns: Vec<Netns>,
    pub switch: Netns,
    pub backends: Vec<Backend>,
    pub mode: Mode,
    pub addrs: Addresses,
}

/// How an IPIP testbed's tunnels are set up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tunnels {
    /// The lb's `encap_sources` entry (an address or a flow-entropy prefix); default:
    /// the lb's own address.
    pub source: Option<IpPrefix>,
    /// The backends run the `xlb decap` binary (`--allow-source <source>`, native mode,
    /// its maps pinned in the backend's pin directory) instead of an in-process decap
    /// data plane; their counters are then read from the pins
    /// ([`Testbed::decap_daemon_stats`]).
    pub decap_daemon: bool,
}

/// Counters that must agree packet for packet.
#[derive(Clone, Debug)]
pub struct Counters {
    /// The data plane's global counters.
    pub lb: GlobalStats,
    /// Segments the client's TCP sent (`OutSegs + RetransSegs`); its only peer is the VIP.
    pub client_sent: u64,
    /// Segments each backend's TCP received (`InSegs`); their only peer is the client.
    pub backend_received: Vec<u64>,
    /// Bad TCP checksums seen by the backends (`InCsumErrors`, summed).
    pub backend_csum_errors: u64,
    /// IPIP mode: each backend's decap data plane's global counters.
    pub decap: Vec<GlobalStats>,
}

/// What moved between two [`Counters`] snapshots.
#[derive(Debug, Default)]
pub struct Delta {
    pub client_sent: u64,
    pub backends_received: u64,
    pub backend_csum_errors: u64,
    pub rx: u64,
    pub pass: u64,
    pub tx: u64,
    pub drop: u64,
    pub aborted: u64,
    pub no_backend: u64,
    pub conn_hit: u64,
    pub conn_miss: u64,
    pub encap_error: u64,
    pub encap_too_big: u64,
    /// Segments each backend's TCP received.
    pub backend_received: Vec<u64>,
    /// IPIP mode: packets each backend's decap program unwrapped (`Stat::Decap`).
    pub decap: Vec<u64>,
    /// IPIP mode: errors of the decap programs (`truncated` + `encap_error`, summed)
    /// and their verdicts other than pass (`drop` + `tx` + `redirect` + `aborted`).
    pub decap_errors: u64,
    pub decap_not_passed: u64,
}

impl Delta {
    pub fn between(before: &Counters, after: &Counters) -> Delta {
        let lb = |s: Stat| after.lb.get(s).packets - before.lb.get(s).packets;
        let decap =
            |i: usize, s: Stat| after.decap[i].get(s).packets - before.decap[i].get(s).packets;
        let n_decap = after.decap.len();
        let decap_sum = |stats: &[Stat]| -> u64 {
            (0..n_decap)
                .map(|i| stats.iter().map(|&s| decap(i, s)).sum::<u64>())
                .sum()
        };
        let backend_received: Vec<u64> = after
            .backend_received
            .iter()
            .zip(&before.backend_received)
            .map(|(a, b)| a - b)
            .collect();
        Delta {
            client_sent: after.client_sent - before.client_sent,
            backends_received: backend_received.iter().sum(),
            backend_csum_errors: after.backend_csum_errors - before.backend_csum_errors,
            rx: lb(Stat::Rx),
            pass: lb(Stat::Pass),
            tx: lb(Stat::Tx),
            drop: lb(Stat::Drop),
            aborted: lb(Stat::Aborted),
            no_backend: lb(Stat::NoBackend),
            conn_hit: lb(Stat::ConnHit),
            conn_miss: lb(Stat::ConnMiss),
            encap_error: lb(Stat::EncapError),
            encap_too_big: lb(Stat::EncapTooBig),
            backend_received,
            decap: (0..n_decap).map(|i| decap(i, Stat::Decap)).collect(),
            decap_errors: decap_sum(&[Stat::Truncated, Stat::EncapError]),
            decap_not_passed: decap_sum(&[Stat::Drop, Stat::Tx, Stat::Redirect, Stat::Aborted]),
        }
    }

    /// Every packet the client sent was forwarded by XDP_TX and arrived at a backend.
    pub fn settled(&self) -> bool {
        self.client_sent == self.tx && self.tx == self.backends_received
    }

    /// The checks every phase shares: all client packets forwarded and received, nothing
    /// dropped, one connection-table outcome per forwarded packet, `new_flows` misses.
    pub fn check(&self, what: &str, connections: usize, new_flows: usize) {
        assert!(
            self.settled(),
            "{what}: client sent {}, lb forwarded {}, backends received {}: {self:?}",
            self.client_sent,
            self.tx,
            self.backends_received
        );
        assert!(
            self.tx >= 3 * connections as u64,
            "{what}: {} packets forwarded for {connections} connections (a handshake alone \
             is 2 client packets, a close at least 1 more): {self:?}",
            self.tx
        );
        assert_eq!(self.drop, 0, "{what}: drops: {self:?}");
        assert_eq!(self.aborted, 0, "{what}: aborted: {self:?}");
        assert_eq!(self.no_backend, 0, "{what}: no_backend: {self:?}");
        assert_eq!(
            self.backend_csum_errors, 0,
            "{what}: bad checksums: {self:?}"
        );
        assert_eq!(self.rx, self.pass + self.tx, "{what}: rx: {self:?}");
        assert_eq!(
            self.conn_miss, new_flows as u64,
            "{what}: conn_miss: {self:?}"
        );
        assert_eq!(
            self.conn_hit + self.conn_miss,
            self.tx,
            "{what}: every forwarded packet is a conn-table hit or miss: {self:?}"
        );
    }

    /// IPIP mode: no encapsulation failed on the lb, and on every backend the decap
    /// program unwrapped exactly the segments its TCP received (the backends' only TCP
    /// peer is the client, and the lb reaches them only encapsulated), without errors.
    pub fn check_decap(&self, what: &str, backends: &[Backend]) {
        assert_eq!(self.encap_error, 0, "{what}: encap_error: {self:?}");
        assert_eq!(self.encap_too_big, 0, "{what}: encap_too_big: {self:?}");
        assert_eq!(self.decap.len(), backends.len(), "{what}: not in IPIP mode");
        for ((b, decap), received) in backends.iter().zip(&self.decap).zip(&self.backend_received) {
            assert_eq!(
                decap, received,
                "{what}: {} unwrapped {decap} packets, its TCP received {received}: {self:?}",
                b.name
            );
        }
        assert_eq!(self.decap_errors, 0, "{what}: decap errors: {self:?}");
        assert_eq!(
            self.decap_not_passed, 0,
            "{what}: decap verdicts other than pass: {self:?}"
        );
    }
}

impl Testbed {
    /// Builds the topology with `addrs`, the balancer on the lb and, in IPIP mode, the
    /// decap program on every backend; starts a [`TcpServer`] on VIP:80 in every backend.
    /// No service is installed yet (see [`Testbed::apply`]).
    pub fn new(tag: &str, mode: Mode, addrs: Addresses) -> Testbed {
        Self::build(tag, mode, addrs, Tunnels::default(), None)
    }

    /// [`Testbed::new`] with the IPIP tunnels set up as `tunnels` says.
    pub fn with_tunnels(tag: &str, mode: Mode, addrs: Addresses, tunnels: Tunnels) -> Testbed {
        Self::build(tag, mode, addrs, tunnels, None)
    }

    /// [`Testbed::new`] with the client's VIP traffic tagged with `tags` (one tag or
    /// QinQ) on its way to the lb, and the lb's output untagged on its way to the
    /// backends ([`crate::vlan_lab`]).
    pub fn tagged(tag: &str, mode: Mode, addrs: Addresses, tags: &[(u16, u16)]) -> Testbed {
        Self::build(tag, mode, addrs, Tunnels::default(), Some(tags))
    }

    fn build(
        tag: &str,
        mode: Mode,
        addrs: Addresses,
        tunnels: Tunnels,
        tags: Option<&[(u16, u16)]>,
    ) -> Testbed {
        crate::require_root();
        assert!(
            matches!(mode, Mode::Dsr | Mode::Ipip),
            "{mode:?} is not supported by the testbed"
        );
        let v6 = addrs.vip.is_ipv6();
        // Locals are dropped in reverse order if a step panics: namespaces last.
        let switch = Netns::new(&format!("{tag}-sw"));
        switch.add_bridge(BRIDGE);
        switch.disable_ipv6(BRIDGE);
        if v6 {
            // Flood every multicast frame (neighbour solicitations included): no querier
            // runs here, and snooping only adds a way for ND to fail.
            switch.ip(&[
                "link",
                "set",
                "dev",
                BRIDGE,
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]);
        }
        let client = Netns::new(&format!("{tag}-cli"));
        let lb = Netns::new(&format!("{tag}-lb"));
        let mut backend_ns = Vec::new();
        let mut backends = Vec::new();
        for (name, addr) in addrs.backends {
            let ns = Netns::new(&format!("{tag}-{name}"));
            let veth = plug(&switch, &ns, addr, addrs.prefix_len);
            // DSR-style return path: the VIP on lo, never announced or answered in ARP
            // (for IPv6, Linux answers neighbour solicitations only for addresses on the
            // receiving interface, and never uses one on lo as a solicitation's source).
            ns.add_addr("lo", host_cidr(addrs.vip));
            ns.sysctl("net.ipv4.conf.all.arp_ignore", 1);
            ns.sysctl("net.ipv4.conf.all.arp_announce", 2);
            ns.sysctl("net.ipv4.conf.all.rp_filter", 0);
            ns.sysctl(&format!("net.ipv4.conf.{}.rp_filter", veth.a), 0);
            let mac = ns.mac(&veth.a);
            if mode == Mode::Ipip {
                // Frames for a backend go to its port only, from the first one on. Until
                // the bridge has learned a MAC it floods frames for it to every port, and
                // xlb_decap unwraps (and counts) whatever IPIP packet it sees, also one
                // for another host's MAC, which the stack then drops as PACKET_OTHERHOST:
                // the other backends' decap counters would run ahead of their TCP.
                static_fdb(&switch, mac, &veth.b);
            }
            backend_ns.push(ns);
            backends.push(Backend {
                name,
                addr,
                mac,
                iface: veth.a,
                port: veth.b,
            });
        }
        let client_veth = plug(&switch, &client, addrs.client, addrs.prefix_len);
        client.sysctl("net.ipv4.conf.all.rp_filter", 0);
        client.sysctl(&format!("net.ipv4.conf.{}.rp_filter", client_veth.a), 0);
        client.add_route(host_cidr(addrs.vip), addrs.lb);
        let lb_veth = plug(&switch, &lb, addrs.lb, addrs.prefix_len);
        // Into the lb the way a NIC would receive them: with complete checksums. Without
        // this, locally generated TCP leaves the client with a partial checksum that
        // XDP_TX cannot carry along, and the backends drop every segment as corrupt.
        switch.set_tx_checksumming(&lb_veth.b, false);
        // The lb does not route: a reply could not pass through it even by mistake.
        assert_eq!(lb.sysctl_get("net.ipv4.ip_forward"), "0");
        if v6 {
            assert_eq!(lb.sysctl_get("net.ipv6.conf.all.forwarding"), "0");
        }

        let pins = PinDir::new(tag);
        let mut dp = load(&pins);
        // aya resolves the interface and attaches over netlink from the calling thread,
        // so attach from a thread inside the interface's namespace.
        attach(&lb, &mut dp, programs::BALANCER, &lb_veth.a);
        // Native XDP_TX frames reach the veth peer only if the peer runs XDP too (with
        // VLANs, the untagger is that program).
        let vlan_lab = match tags {
            None => {
                attach(&switch, &mut dp, programs::PASS, &lb_veth.b);
                None
            }
            Some(tags) => {
                let mut lab = VlanLab::load(addrs.vip, tags, switch.ifindex(&lb_veth.b));
                lab.attach(vlan_lab::POP, &switch, &lb_veth.b);
                lab.attach(vlan_lab::PUSH, &switch, &client_veth.b);
                // The tagger turns the client's frames into XDP buffers, which lose the
                // checksum-offload promise: the client must send complete checksums.
                client.set_tx_checksumming(&client_veth.a, false);
                Some(lab)
            }
        };

        let mut balancer = Balancer::default();
        let mut decap = Vec::new();
        let mut decap_pins = Vec::new();
        let mut decap_daemons = Vec::new();
        if mode == Mode::Ipip {
            let source = tunnels.source.unwrap_or_else(|| addrs.lb.into());
            let encap = match source.addr {
                IpAddr::V4(addr) => EncapSources {
                    v4: Some(Prefix {
                        addr,
                        len: source.len,
                    }),
                    ..EncapSources::default()
                },
                IpAddr::V6(addr) => EncapSources {
                    v6: Some(Prefix {
                        addr,
                        len: source.len,
                    }),
                    ..EncapSources::default()
                },
            };
            balancer
                .set_encap_sources(&mut dp, encap)
                .unwrap_or_else(|e| panic!("set_encap_sources: {e}"));
            // Each backend runs its own data plane (own maps, own counters), as a real
            // backend host would: only xlb_decap is attached there.
            for (ns, b) in backend_ns.iter().zip(&backends) {
                let pins = PinDir::new(&format!("{tag}-{}", b.name));
                if tunnels.decap_daemon {
                    decap_daemons.push(decap_daemon(ns, &b.iface, source, &pins));
                    decap_pins.push(pins);
                    continue;
                }
                let mut be_dp = load(&pins);
                decap_pins.push(pins);
                // As `xlb decap --allow-source <lb>` on that host: the lb's tunnels to
                // the backend's own address.
                let allowed = lb_userspace::dataplane::decap::allowlist(&[addrs.lb], &[b.addr])
                    .unwrap_or_else(|e| panic!("decap allow-list: {e}"));
                lb_userspace::dataplane::DataPlane::set_decap_allowed(&mut be_dp, &allowed)
                    .unwrap_or_else(|e| panic!("set_decap_allowed: {e}"));
                attach(ns, &mut be_dp, programs::DECAP, &b.iface);
                decap.push(be_dp);
            }
        }

        let vip = SocketAddr::new(addrs.vip, VIP_PORT);
        let servers = backend_ns
            .iter()
            .zip(&backends)
            .map(|(ns, b)| TcpServer::start(ns, vip, b.name))
            .collect();
        Testbed {
            servers,
            decap_daemons,
            _vlan_lab: vlan_lab,
            dp,
            decap,
            balancer,
            pins,
            decap_pins,
            client,
            lb,
            backend_ns,
            switch,
            backends,
            mode,
            addrs,
        }
    }

    /// VIP:80.
    pub fn vip(&self) -> SocketAddr {
        SocketAddr::new(self.addrs.vip, VIP_PORT)
    }

    /// The service on VIP:80/tcp in the testbed's mode with these `(backend index,
    /// weight)`s, default (production) Maglev table size.
    pub fn spec(&self, weights: &[(usize, u32)]) -> ServiceSpec {
        let backends = weights
            .iter()
            .map(|&(i, weight)| {
                BackendSpec::new(self.backends[i].addr, MacAddr(self.backends[i].mac), weight)
            })
            .collect();
        ServiceSpec::new(
            self.addrs.vip,
            Some(VIP_PORT),
            Protocol::Tcp,
            self.mode,
            backends,
        )
    }

    pub fn apply(&mut self, weights: &[(usize, u32)]) -> ApplyReport {
        let spec = self.spec(weights);
        self.balancer
            .apply(&mut self.dp, &[spec])
            .unwrap_or_else(|e| panic!("apply: {e}"))
    }

    /// The Maglev table the data plane uses right now (backend ids, length M), read
    /// back from `XLB_MAGLEV`.
    pub fn live_table(&self) -> Vec<u32> {
        let services: HashMap<&MapData, VipKey, Service> =
            HashMap::try_from(self.dp.ebpf().map(SERVICES).expect("services map")).unwrap();
        let key = vip_key(&self.spec(&[]));
        let svc = services.get(&key, 0).expect("the service is installed");
        let outer: ArrayOfMaps<&MapData, Array<MapData, u32>> =
            ArrayOfMaps::try_from(self.dp.ebpf().map(MAGLEV).expect("maglev map")).unwrap();
        let inner = outer
            .get(&svc.table_slot(), 0)
            .expect("the service has a table");
        let m = inner.get(&0, 0).unwrap();
        (1..=m).map(|slot| inner.get(&slot, 0).unwrap()).collect()
    }

    /// The backend name the balancer gave `id` (None for an id it does not use).
    pub fn name_of(&self, id: u32) -> Option<&'static str> {
        self.backends
            .iter()
            .find(|b| self.balancer.backend_id(b.addr) == Some(id))
            .map(|b| b.name)
    }

    /// The index (into `backends`) of the backend named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.backends.iter().position(|b| b.name == name)
    }

    /// The backend `table` gives a new flow from the client's `sport`, by the data
    /// plane's own hash.
    pub fn predict(&self, table: &[u32], sport: u16) -> &'static str {
        let id = table[(flow_hash(&self.flow(sport), false) % table.len() as u32) as usize];
        self.name_of(id)
            .unwrap_or_else(|| panic!("table entry {id} names no backend"))
    }

    /// The data plane's flow key of a client connection from `sport` to VIP:80.
    pub fn flow(&self, sport: u16) -> FlowKey {
        crate::packet::tcp_flow(self.addrs.client, self.addrs.vip, sport, VIP_PORT)
    }

    pub fn conns(&mut self) -> HashMap<&mut MapData, FlowKey, Conn> {
        HashMap::try_from(self.dp.ebpf_mut().map_mut(CONNS).expect("conn map")).unwrap()
    }

    pub fn conn(&mut self, sport: u16) -> Option<Conn> {
        let key = self.flow(sport);
        self.conns().get(&key, 0).ok()
    }

    /// [`Tunnels::decap_daemon`]: each backend's `xlb decap` counters, read from its
    /// pinned `XLB_STATS`.
    pub fn decap_daemon_stats(&mut self) -> Vec<GlobalStats> {
        for daemon in &mut self.decap_daemons {
            assert!(daemon.try_wait().is_none(), "{} exited", daemon.what());
        }
        self.decap_pins
            .iter()
            .map(|pins| {
                let data = MapData::from_pin(pins.path().join(lb_common::maps::STATS))
                    .expect("the decap daemon's pinned XLB_STATS");
                let map = aya::maps::PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))
                    .expect("a per-CPU array");
                stats::read_global(&map).expect("reading XLB_STATS")
            })
            .collect()
    }

    pub fn counters(&self) -> Counters {
        let mut backend_received = Vec::new();
        let mut backend_csum_errors = 0;
        for ns in &self.backend_ns {
            let tcp = tcp_mib(ns);
            backend_received.push(tcp["InSegs"]);
            backend_csum_errors += tcp["InCsumErrors"];
        }
        let client = tcp_mib(&self.client);
        Counters {
            lb: stats::read_loaded(self.dp.ebpf()).expect("reading XLB_STATS"),
            client_sent: client["OutSegs"] + client["RetransSegs"],
            backend_received,
            backend_csum_errors,
            decap: self
                .decap
                .iter()
                .map(|dp| stats::read_loaded(dp.ebpf()).expect("reading a backend's XLB_STATS"))
                .collect(),
        }
    }

    /// Waits until every packet the client sent since `before` was forwarded and
    /// received (the last ones may still be in flight), then returns what moved.
    pub fn settle(&self, before: &Counters) -> Delta {
        let mut delta = Delta::default();
        wait_until(IO_TIMEOUT, || {
            delta = Delta::between(before, &self.counters());
            delta.settled()
        });
        delta
    }

    /// The weighted-spread checks of a 1:1:2 run (be3 weighted 2) of `n` connections with
    /// per-backend `counts`: the live `table` gives each backend its weight's share, the
    /// counts follow those shares (binomially), the servers accepted exactly those
    /// connections, and every one came from `client` (the balancer keeps the client
    /// address, DSR or encapsulated).
    pub fn assert_spread_1_1_2(
        &self,
        table: &[u32],
        counts: &BTreeMap<&str, usize>,
        n: usize,
        client: IpAddr,
    ) {
        for b in &self.backends {
            let id = self.balancer.backend_id(b.addr).unwrap();
            let p = share(table, id);
            let want = if b.name == "be3" { 0.5 } else { 0.25 };
            assert!((p - want).abs() < 0.01, "{}: table share {p}", b.name);
            let count = counts.get(b.name).copied().unwrap_or(0);
            assert_binomial(b.name, count, n, p);
        }
        let accepted = self.accepted();
        for (name, count) in counts {
            assert_eq!(accepted[name], *count as u64, "accepted: {accepted:?}");
        }
        for (server, b) in self.servers.iter().zip(&self.backends) {
            let peers = server.peers();
            assert!(
                peers.iter().all(|p| p.ip() == client),
                "{} saw other clients: {peers:?}",
                b.name
            );
        }
    }

    /// Connections accepted per backend so far, by name.
    pub fn accepted(&self) -> BTreeMap<&'static str, u64> {
        self.backends
            .iter()
            .zip(&self.servers)
            .map(|(b, s)| (b.name, s.connections()))
            .collect()
    }

    /// Drops everything and checks that no namespace or pin is left behind.
    pub fn teardown(self) {
        let names: Vec<String> = [&self.client, &self.lb, &self.switch]
            .into_iter()
            .chain(&self.backend_ns)
            .map(|ns| ns.name().to_owned())
            .collect();
        let pin_dirs: Vec<PathBuf> = std::iter::once(&self.pins)
            .chain(&self.decap_pins)
            .map(|p| p.path().to_path_buf())
            .collect();
        drop(self);
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let listed = String::from_utf8_lossy(&out.stdout);
        for name in &names {
            assert!(
                !listed
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(name)),
                "namespace {name} left behind: {listed}"
            );
        }
        for dir in &pin_dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
    }
}

/// Starts `xlb decap --allow-source <source>` on `iface` in `ns` with its pins in `pins`,
/// and waits until its program is on the link.
fn decap_daemon(ns: &Netns, iface: &str, source: IpPrefix, pins: &PinDir) -> ChildGuard {
    let mut cmd = ns.command(crate::dataplane::xlb_bin());
    cmd.args(["decap", "--xdp-mode", "native", "--iface", iface])
        .args(["--allow-source", &source.to_string(), "--pin-dir"])
        .arg(pins.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut daemon = ns.spawn(cmd);
    let link = pins.path().join(format!("link_{iface}"));
    let attached = wait_until(Duration::from_secs(20), || {
        link.exists() || daemon.try_wait().is_some()
    });
    assert!(
        attached && daemon.try_wait().is_none(),
        "xlb decap on {iface} in {} did not attach",
        ns.name()
    );
    daemon
}

/// Loads the whole data plane with its maps pinned in `pins`.
fn load(pins: &PinDir) -> AyaPort {
    AyaPort::load(&LoadOptions {
        pin_dir: pins.path().to_path_buf(),
        ebpf_log_level: None,
        conn_entries: None,
        unconfirmed_entries: None,
        conn_lru: Default::default(),
    })
    .unwrap_or_else(|e| panic!("loading the data plane: {e:?}"))
}

/// Attaches `program` of `dp` natively to `iface` in `ns` (from a thread inside `ns`).
fn attach(ns: &Netns, dp: &mut AyaPort, program: &'static str, iface: &str) {
    let attached = ns
        .run(|| dp.attach(program, iface, AttachMode::Native))
        .unwrap_or_else(|e| panic!("attaching {program} to {iface}: {e:?}"));
    assert_eq!(attached.mode, AttachedMode::Native, "{attached:?}");
}

/// A static forwarding entry on the switch's bridge: frames for `mac` leave by `port`.
fn static_fdb(switch: &Netns, mac: [u8; 6], port: &str) {
    let mac = MacAddr(mac).to_string();
    let args = ["fdb", "replace", &mac, "dev", port, "master", "static"];
    let out = switch
        .command("bridge")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("bridge {}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "bridge {} in {}: {}",
        args.join(" "),
        switch.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `addr/32` or `addr/128`.
fn host_cidr(addr: IpAddr) -> String {
    let len = if addr.is_ipv4() { 32 } else { 128 };
    format!("{addr}/{len}")
}

/// Joins `host` to the switch's bridge with `addr`/`prefix_len` on its end. IPv6 is off
/// on the switch's end (a bridge port needs no addresses of its own), and on the host's
/// end too for an IPv4 address (no ND/MLD chatter).
fn plug(switch: &Netns, host: &Netns, addr: IpAddr, prefix_len: u8) -> VethPair {
    if addr.is_ipv6() {
        // No duplicate address detection for the link-local address either (`nodad`
        // only covers the configured one): while it is tentative, the first exchanges
        // get lost and the first connection takes 2 s of SYN retransmissions.
        host.sysctl("net.ipv6.conf.all.accept_dad", 0);
        host.sysctl("net.ipv6.conf.default.accept_dad", 0);
    }
    let veth = VethPair::new(host, switch);
    if addr.is_ipv4() {
        host.disable_ipv6(&veth.a);
    }
    switch.disable_ipv6(&veth.b);
    switch.enslave(&veth.b, BRIDGE);
    host.add_addr(&veth.a, format!("{addr}/{prefix_len}"));
    veth
}

/// The namespace's `Tcp:` MIB counters (/proc/net/snmp), by name. They count IPv4 and
/// IPv6 TCP alike.
pub fn tcp_mib(ns: &Netns) -> StdHashMap<String, u64> {
    // thread-self: /proc/self/net would show the *process's* namespace, not the thread's.
    let snmp = ns
        .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))
        .unwrap_or_else(|e| panic!("reading snmp in {}: {e}", ns.name()));
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .map(|(n, v)| (n.to_owned(), v.parse().unwrap_or(0)))
        .collect()
}

/// Why one [`try_greet`] failed.
#[derive(Debug)]
pub struct GreetError {
    /// The connection's source port, if it got as far as connecting.
    pub port: Option<u16>,
    pub kind: io::ErrorKind,
    pub message: String,
}

/// One complete, graceful connection from a kernel-chosen port (run inside the client
/// namespace): connect, keep it open for `hold`, half-close, read the greeting up to the
/// server's EOF. Returns the source port and the backend that answered.
pub fn try_greet(vip: SocketAddr, hold: Duration) -> Result<(u16, String), GreetError> {
    let fail = |port: Option<u16>, e: io::Error, message: String| GreetError {
        port,
        kind: e.kind(),
        message,
    };
    let mut stream = TcpStream::connect_timeout(&vip, IO_TIMEOUT).map_err(|e| {
        let message = format!("connect: {e}");
        fail(None, e, message)
    })?;
    let port = stream.local_addr().unwrap().port();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    if !hold.is_zero() {
        std::thread::sleep(hold);
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| fail(Some(port), e, format!("from :{port}: shutdown")))?;
    let mut all = String::new();
    if let Err(e) = stream.read_to_string(&mut all) {
        let message = format!("from :{port}: read greeting and EOF: {e} (got {all:?})");
        return Err(fail(Some(port), e, message));
    }
    let Some(id) = all.strip_suffix('\n') else {
        return Err(GreetError {
            port: Some(port),
            kind: io::ErrorKind::InvalidData,
            message: format!("from :{port}: greeting {all:?} has no newline"),
        });
    };
    Ok((port, id.to_owned()))
}

/// [`try_greet`], panicking on failure.
pub fn greet_ephemeral(vip: SocketAddr) -> (u16, String) {
    try_greet(vip, Duration::ZERO).unwrap_or_else(|e| panic!("{}", e.message))
}

/// How many flows each backend got.
pub fn tally<'a>(ids: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// `id`'s share of `table`.
pub fn share(table: &[u32], id: u32) -> f64 {
    table.iter().filter(|&&e| e == id).count() as f64 / table.len() as f64
}

/// Tolerance of a per-backend count, in binomial standard deviations. The chance that a
/// correct balancer lands outside 5 sd is below 6e-7 per backend and run.
pub const SIGMAS: f64 = 5.0;

/// Asserts that `count` of `n` flows is within [`SIGMAS`] binomial standard deviations
/// of the share `p`.
pub fn assert_binomial(what: &str, count: usize, n: usize, p: f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let err = (count as f64 - mean).abs();
    assert!(
        err <= SIGMAS * sd,
        "{what}: {count} of {n} flows, expected {mean:.1} ± {:.1} ({SIGMAS} sd of {sd:.1})",
        SIGMAS * sd
    );
}
