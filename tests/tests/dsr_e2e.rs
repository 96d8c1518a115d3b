//! Real TCP through the XDP balancer in DSR mode (one-arm, XDP_TX), end to end.
//!
//! ```text
//!   client 10.50.0.1  ──┐
//!   lb     10.50.0.2  ──┤   xlb (native) on the lb's veth, xlb_pass on its switch-side peer
//!   be1    10.50.0.11 ──┤ br0 (in the `switch` namespace)
//!   be2    10.50.0.12 ──┤
//!   be3    10.50.0.13 ──┘
//! ```
//!
//! The client routes the VIP 10.50.0.100 via the lb. The lb's XDP program picks a
//! backend (connection table, else Maglev), rewrites the destination MAC and sends the
//! frame back out of the same veth (XDP_TX). Each backend holds the VIP on `lo`, stays
//! silent about it in ARP, and answers the client directly (direct server return): the
//! lb only ever sees client→VIP packets.
//!
//! Every packet count is checked three ways: segments the client's TCP sent, packets
//! the data plane forwarded (`tx`), and segments the backends' TCP received.

use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader, Read},
    net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use aya::{
    maps::{Array, ArrayOfMaps, HashMap, MapData},
    programs::XdpMode,
};
use lb_common::{
    maps::{CONNS, MAGLEV, SERVICES},
    programs,
    service::{flow_hash, AF_INET},
    Conn, FlowKey, Service, Stat, VipKey,
};
use lb_userspace::{
    loader::{AttachMode, Dataplane, LoadOptions},
    maglev,
    services::{self, BackendSpec, Balancer, MacAddr, Mode, Protocol, ServiceSpec},
    stats::{self, GlobalStats},
};
use socket2::{Domain, Socket, Type};
use testbed::{
    dataplane::{wait_until, PinDir},
    Netns, TcpServer, VethPair,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 100);
const VIP_PORT: u16 = 80;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 1);
const LB: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 2);
const BACKENDS: [(&str, Ipv4Addr); 3] = [
    ("be1", Ipv4Addr::new(10, 50, 0, 11)),
    ("be2", Ipv4Addr::new(10, 50, 0, 12)),
    ("be3", Ipv4Addr::new(10, 50, 0, 13)),
];
const BRIDGE: &str = "br0";
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections per phase.
const N: usize = 1000;
/// Source ports of the replayable flows (phases A, B and C of the removal test).
const FIXED_PORTS: std::ops::Range<u16> = 20_000..20_000 + N as u16;
/// Tolerance of a per-backend count, in binomial standard deviations. The chance that a
/// correct balancer lands outside 5 sd is below 6e-7 per backend and run.
const SIGMAS: f64 = 5.0;

/// A backend as the test knows it.
struct Backend {
    name: &'static str,
    addr: Ipv4Addr,
    mac: [u8; 6],
}

/// The whole topology. Field order is drop order, also when a test panics: the servers
/// (whose sockets live in the backend namespaces), the data plane (program and map
/// fds), the pin directory (its Drop unpins the XDP links, detaching them), and last the
/// namespaces (deleting them destroys the veths and the bridge).
struct Testbed {
    servers: Vec<TcpServer>,
    dp: Dataplane,
    balancer: Balancer,
    pins: PinDir,
    client: Netns,
    lb: Netns,
    backend_ns: Vec<Netns>,
    switch: Netns,
    backends: Vec<Backend>,
}

/// Counters that must agree packet for packet.
#[derive(Clone, Copy, Debug)]
struct Counters {
    /// The data plane's global counters.
    lb: GlobalStats,
    /// Segments the client's TCP sent (`OutSegs + RetransSegs`); its only peer is the VIP.
    client_sent: u64,
    /// Segments the backends' TCP received (`InSegs`, summed); their only peer is the client.
    backends_received: u64,
    /// Bad TCP checksums seen by the backends (`InCsumErrors`, summed).
    backend_csum_errors: u64,
}

/// What moved between two [`Counters`] snapshots.
#[derive(Debug, Default)]
struct Delta {
    client_sent: u64,
    backends_received: u64,
    backend_csum_errors: u64,
    rx: u64,
    pass: u64,
    tx: u64,
    drop: u64,
    aborted: u64,
    no_backend: u64,
    conn_hit: u64,
    conn_miss: u64,
}

impl Delta {
    fn between(before: &Counters, after: &Counters) -> Delta {
        let lb = |s: Stat| after.lb.get(s).packets - before.lb.get(s).packets;
        Delta {
            client_sent: after.client_sent - before.client_sent,
            backends_received: after.backends_received - before.backends_received,
            backend_csum_errors: after.backend_csum_errors - before.backend_csum_errors,
            rx: lb(Stat::Rx),
            pass: lb(Stat::Pass),
            tx: lb(Stat::Tx),
            drop: lb(Stat::Drop),
            aborted: lb(Stat::Aborted),
            no_backend: lb(Stat::NoBackend),
            conn_hit: lb(Stat::ConnHit),
            conn_miss: lb(Stat::ConnMiss),
        }
    }

    /// Every packet the client sent was forwarded by XDP_TX and arrived at a backend.
    fn settled(&self) -> bool {
        self.client_sent == self.tx && self.tx == self.backends_received
    }

    /// The checks every phase shares: all client packets forwarded and received, nothing
    /// dropped, one connection-table outcome per forwarded packet, `new_flows` misses.
    fn check(&self, what: &str, connections: usize, new_flows: usize) {
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
}

impl Testbed {
    fn new(tag: &str) -> Testbed {
        testbed::require_root();
        // Locals are dropped in reverse order if a step panics: namespaces last.
        let switch = Netns::new(&format!("{tag}-sw"));
        switch.add_bridge(BRIDGE);
        switch.disable_ipv6(BRIDGE);
        let client = Netns::new(&format!("{tag}-cli"));
        let lb = Netns::new(&format!("{tag}-lb"));
        let mut backend_ns = Vec::new();
        let mut backends = Vec::new();
        for (name, addr) in BACKENDS {
            let ns = Netns::new(&format!("{tag}-{name}"));
            let veth = plug(&switch, &ns, addr);
            // DSR backend: the VIP on lo, never announced or answered in ARP.
            ns.add_addr("lo", format!("{VIP}/32"));
            ns.sysctl("net.ipv4.conf.all.arp_ignore", 1);
            ns.sysctl("net.ipv4.conf.all.arp_announce", 2);
            ns.sysctl("net.ipv4.conf.all.rp_filter", 0);
            ns.sysctl(&format!("net.ipv4.conf.{}.rp_filter", veth.a), 0);
            let mac = ns.mac(&veth.a);
            backend_ns.push(ns);
            backends.push(Backend { name, addr, mac });
        }
        let client_veth = plug(&switch, &client, CLIENT);
        client.sysctl("net.ipv4.conf.all.rp_filter", 0);
        client.sysctl(&format!("net.ipv4.conf.{}.rp_filter", client_veth.a), 0);
        client.add_route(format!("{VIP}/32"), LB);
        let lb_veth = plug(&switch, &lb, LB);
        // Into the lb the way a NIC would receive them: with complete checksums. Without
        // this, locally generated TCP leaves the client with a partial checksum that
        // XDP_TX cannot carry along, and the backends drop every segment as corrupt.
        switch.set_tx_checksumming(&lb_veth.b, false);
        // The lb does not route: a reply could not pass through it even by mistake.
        assert_eq!(lb.sysctl_get("net.ipv4.ip_forward"), "0");

        let pins = PinDir::new(tag);
        let mut dp = Dataplane::load(&LoadOptions {
            pin_dir: pins.path().to_path_buf(),
            ebpf_log_level: None,
        })
        .unwrap_or_else(|e| panic!("loading the data plane: {e:?}"));
        // aya resolves the interface and attaches over netlink from the calling thread,
        // so attach from a thread inside the interface's namespace.
        let attached = lb
            .run(|| dp.attach(programs::BALANCER, &lb_veth.a, AttachMode::Native))
            .unwrap_or_else(|e| panic!("attaching {} to {}: {e:?}", programs::BALANCER, lb_veth.a));
        assert_eq!(attached.mode, XdpMode::Driver, "{attached:?}");
        // Native XDP_TX frames reach the veth peer only if the peer runs XDP too.
        let attached = switch
            .run(|| dp.attach(programs::PASS, &lb_veth.b, AttachMode::Native))
            .unwrap_or_else(|e| panic!("attaching {} to {}: {e:?}", programs::PASS, lb_veth.b));
        assert_eq!(attached.mode, XdpMode::Driver, "{attached:?}");

        let servers = backend_ns
            .iter()
            .zip(&backends)
            .map(|(ns, b)| TcpServer::start(ns, SocketAddr::from((VIP, VIP_PORT)), b.name))
            .collect();
        Testbed {
            servers,
            dp,
            balancer: Balancer::default(),
            pins,
            client,
            lb,
            backend_ns,
            switch,
            backends,
        }
    }

    /// The DSR service on VIP:80/tcp with these `(backend index, weight)`s, default
    /// (production) Maglev table size.
    fn spec(&self, weights: &[(usize, u32)]) -> ServiceSpec {
        ServiceSpec {
            vip: IpAddr::V4(VIP),
            port: Some(VIP_PORT),
            protocol: Protocol::Tcp,
            mode: Mode::Dsr,
            source_affinity: false,
            table_size: maglev::DEFAULT_TABLE_SIZE,
            backends: weights
                .iter()
                .map(|&(i, weight)| BackendSpec {
                    address: IpAddr::V4(self.backends[i].addr),
                    mac: MacAddr(self.backends[i].mac),
                    weight,
                })
                .collect(),
        }
    }

    fn apply(&mut self, weights: &[(usize, u32)]) -> services::ApplyReport {
        let spec = self.spec(weights);
        self.balancer
            .apply(self.dp.ebpf_mut(), &[spec])
            .unwrap_or_else(|e| panic!("apply: {e}"))
    }

    /// The Maglev table the data plane uses right now (backend ids, length M), read
    /// back from `XLB_MAGLEV`.
    fn live_table(&self) -> Vec<u32> {
        let services: HashMap<&MapData, VipKey, Service> =
            HashMap::try_from(self.dp.ebpf().map(SERVICES).expect("services map")).unwrap();
        let key = services::vip_key(&self.spec(&[]));
        let svc = services.get(&key, 0).expect("the service is installed");
        let outer: ArrayOfMaps<&MapData, Array<MapData, u32>> =
            ArrayOfMaps::try_from(self.dp.ebpf().map(MAGLEV).expect("maglev map")).unwrap();
        let inner = outer.get(&svc.id, 0).expect("the service has a table");
        let m = inner.get(&0, 0).unwrap();
        (1..=m).map(|slot| inner.get(&slot, 0).unwrap()).collect()
    }

    /// The backend name the balancer gave `id` (None for an id it does not use).
    fn name_of(&self, id: u32) -> Option<&'static str> {
        self.backends
            .iter()
            .find(|b| self.balancer.backend_id(IpAddr::V4(b.addr)) == Some(id))
            .map(|b| b.name)
    }

    /// The backend `table` gives a new flow from the client's `sport`, by the data
    /// plane's own hash.
    fn predict(&self, table: &[u32], sport: u16) -> &'static str {
        let id = table[(flow_hash(&flow(sport), false) % table.len() as u32) as usize];
        self.name_of(id)
            .unwrap_or_else(|| panic!("table entry {id} names no backend"))
    }

    fn conns(&mut self) -> HashMap<&mut MapData, FlowKey, Conn> {
        HashMap::try_from(self.dp.ebpf_mut().map_mut(CONNS).expect("conn map")).unwrap()
    }

    fn conn(&mut self, sport: u16) -> Option<Conn> {
        self.conns().get(&flow(sport), 0).ok()
    }

    fn counters(&self) -> Counters {
        let mut backends_received = 0;
        let mut backend_csum_errors = 0;
        for ns in &self.backend_ns {
            let tcp = tcp_mib(ns);
            backends_received += tcp["InSegs"];
            backend_csum_errors += tcp["InCsumErrors"];
        }
        let client = tcp_mib(&self.client);
        Counters {
            lb: stats::read_loaded(self.dp.ebpf()).expect("reading XLB_STATS"),
            client_sent: client["OutSegs"] + client["RetransSegs"],
            backends_received,
            backend_csum_errors,
        }
    }

    /// Waits until every packet the client sent since `before` was forwarded and
    /// received (the last ones may still be in flight), then returns what moved.
    fn settle(&self, before: &Counters) -> Delta {
        let mut delta = Delta::default();
        wait_until(IO_TIMEOUT, || {
            delta = Delta::between(before, &self.counters());
            delta.settled()
        });
        delta
    }

    /// Connections accepted per backend so far, by name.
    fn accepted(&self) -> BTreeMap<&'static str, u64> {
        self.backends
            .iter()
            .zip(&self.servers)
            .map(|(b, s)| (b.name, s.connections()))
            .collect()
    }

    /// Drops everything and checks that no namespace or pin is left behind.
    fn teardown(self) {
        let names: Vec<String> = [&self.client, &self.lb, &self.switch]
            .into_iter()
            .chain(&self.backend_ns)
            .map(|ns| ns.name().to_owned())
            .collect();
        let pin_dir: PathBuf = self.pins.path().to_path_buf();
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
        assert!(!pin_dir.exists(), "{} left behind", pin_dir.display());
    }
}

/// Joins `host` to the switch's bridge with `addr`/24 on its end; IPv6 off on both ends
/// (no ND/MLD chatter).
fn plug(switch: &Netns, host: &Netns, addr: Ipv4Addr) -> VethPair {
    let veth = VethPair::new(host, switch);
    host.disable_ipv6(&veth.a);
    switch.disable_ipv6(&veth.b);
    switch.enslave(&veth.b, BRIDGE);
    host.add_addr(&veth.a, format!("{addr}/24"));
    veth
}

/// The namespace's `Tcp:` MIB counters (/proc/net/snmp), by name.
fn tcp_mib(ns: &Netns) -> std::collections::HashMap<String, u64> {
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

/// The data plane's flow key of a client connection from `sport` to VIP:80.
fn flow(sport: u16) -> FlowKey {
    FlowKey {
        src: [u32::from_ne_bytes(CLIENT.octets()), 0, 0, 0],
        dst: [u32::from_ne_bytes(VIP.octets()), 0, 0, 0],
        sport_be: sport.to_be(),
        dport_be: VIP_PORT.to_be(),
        proto: 6,
        family: AF_INET,
        _pad: [0; 2],
    }
}

/// One complete, graceful connection from a kernel-chosen port (run inside the client
/// namespace): connect, half-close, read the greeting up to the server's EOF. Returns
/// the source port and the backend that answered.
fn greet_ephemeral() -> (u16, String) {
    let vip = SocketAddr::from((VIP, VIP_PORT));
    let mut stream =
        TcpStream::connect_timeout(&vip, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect: {e}"));
    let port = stream.local_addr().unwrap().port();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut all = String::new();
    stream
        .read_to_string(&mut all)
        .unwrap_or_else(|e| panic!("from :{port}: read greeting and EOF: {e} (got {all:?})"));
    let id = all
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("from :{port}: greeting {all:?} has no newline"));
    (port, id.to_owned())
}

/// One connection from the fixed source port `port` (run inside the client namespace):
/// read the greeting, then abort.
///
/// The abort (SO_LINGER 0: close sends RST) is what makes the 5-tuple reusable at once.
/// A graceful close would leave it in TIME_WAIT for 60 s on the client: the client
/// sends the first FIN, and once the server's FIN arrives the kernel turns the socket
/// into a TIME_WAIT entry that SO_LINGER can no longer touch, and a later connect()
/// from the same port to the same VIP fails with EADDRNOTAVAIL (tcp_tw_reuse would only
/// help after a delay). The server sees the RST as the end of its read loop and closes
/// without TIME_WAIT either.
fn greet_from(port: u16) -> String {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(socket2::Protocol::TCP)).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket
        .bind(&SocketAddrV4::new(CLIENT, port).into())
        .unwrap_or_else(|e| panic!("bind :{port}: {e}"));
    socket
        .connect_timeout(&SocketAddrV4::new(VIP, VIP_PORT).into(), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect from :{port}: {e}"));
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.set_linger(Some(Duration::ZERO)).unwrap();
    let mut reader = BufReader::new(TcpStream::from(socket));
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("from :{port}: read greeting: {e}"));
    let id = line
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("from :{port}: greeting {line:?} has no newline"));
    id.to_owned()
}

/// How many flows each backend got.
fn tally<'a>(ids: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    let mut counts = BTreeMap::new();
    for id in ids {
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// `id`'s share of `table`.
fn share(table: &[u32], id: u32) -> f64 {
    table.iter().filter(|&&e| e == id).count() as f64 / table.len() as f64
}

/// Asserts that `count` of `n` flows is within [`SIGMAS`] binomial standard deviations
/// of the share `p`.
fn assert_binomial(what: &str, count: usize, n: usize, p: f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    let err = (count as f64 - mean).abs();
    assert!(
        err <= SIGMAS * sd,
        "{what}: {count} of {n} flows, expected {mean:.1} ± {:.1} ({SIGMAS} sd of {sd:.1})",
        SIGMAS * sd
    );
}

#[test]
fn dsr_spreads_real_tcp_connections_by_weight() {
    let start = Instant::now();
    let mut tb = Testbed::new("dsr-w");
    // be3 gets twice the weight of be1 and be2: shares 1/4, 1/4, 1/2.
    let report = tb.apply(&[(0, 1), (1, 1), (2, 2)]);
    assert_eq!(report.backends_added, 3, "{report:?}");
    let table = tb.live_table();
    assert_eq!(table.len(), maglev::DEFAULT_TABLE_SIZE as usize);

    let before = tb.counters();
    let t = Instant::now();
    let flows: Vec<(u16, String)> = tb
        .client
        .run(|| (0..N).map(|_| greet_ephemeral()).collect());
    let elapsed = t.elapsed();
    let delta = tb.settle(&before);

    // Every connection reached a backend and got its greeting and EOF (else a panic
    // above). The kernel chose N distinct ports: N new flows for the data plane.
    let ports: HashSet<u16> = flows.iter().map(|(p, _)| *p).collect();
    assert_eq!(ports.len(), N, "source ports were reused");
    delta.check("weighted", N, N);

    // Each flow went exactly where the live table sends it.
    let wrong: Vec<String> = flows
        .iter()
        .filter(|(port, id)| tb.predict(&table, *port) != id)
        .map(|(port, id)| format!(":{port} → {id}, table says {}", tb.predict(&table, *port)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} flows off the table: {wrong:?}",
        wrong.len()
    );

    // The spread follows the weights.
    let counts = tally(flows.iter().map(|(_, id)| id.as_str()));
    eprintln!(
        "weighted 1:1:2, {N} connections in {elapsed:?}: {counts:?}; \
         packets: client sent {}, lb forwarded {}, backends received {}",
        delta.client_sent, delta.tx, delta.backends_received
    );
    for b in &tb.backends {
        let id = tb.balancer.backend_id(IpAddr::V4(b.addr)).unwrap();
        let p = share(&table, id);
        let want = if b.name == "be3" { 0.5 } else { 0.25 };
        assert!((p - want).abs() < 0.01, "{}: table share {p}", b.name);
        let count = counts.get(b.name).copied().unwrap_or(0);
        assert_binomial(b.name, count, N, p);
    }
    // The servers agree, and saw the real client address (DSR keeps it).
    let accepted = tb.accepted();
    for (name, count) in &counts {
        assert_eq!(accepted[name], *count as u64, "accepted: {accepted:?}");
    }
    for (server, b) in tb.servers.iter().zip(&tb.backends) {
        let peers = server.peers();
        assert!(
            peers.iter().all(|p| p.ip() == IpAddr::V4(CLIENT)),
            "{} saw other clients: {peers:?}",
            b.name
        );
    }
    tb.teardown();
    eprintln!(
        "dsr_spreads_real_tcp_connections_by_weight: {:?}",
        start.elapsed()
    );
}

#[test]
fn dsr_backend_removal_keeps_established_flows_and_maglev_moves_few() {
    let start = Instant::now();
    let mut tb = Testbed::new("dsr-rm");
    tb.apply(&[(0, 1), (1, 1), (2, 1)]);
    let table_a = tb.live_table();
    let ports: Vec<u16> = FIXED_PORTS.collect();
    let connect_all = |tb: &Testbed| -> Vec<String> {
        tb.client
            .run(|| ports.iter().map(|&p| greet_from(p)).collect())
    };

    // Phase A: all three backends; every flow is new and follows table A.
    let before = tb.counters();
    let t = Instant::now();
    let phase_a = connect_all(&tb);
    let elapsed = t.elapsed();
    tb.settle(&before).check("phase A", N, N);
    for (&port, id) in ports.iter().zip(&phase_a) {
        assert_eq!(id, tb.predict(&table_a, port), "phase A: flow from :{port}");
        let conn = tb
            .conn(port)
            .unwrap_or_else(|| panic!("no conn entry for :{port}"));
        assert_eq!(
            tb.name_of(conn.backend_id),
            Some(id.as_str()),
            ":{port}: {conn:?}"
        );
    }
    let counts_a = tally(phase_a.iter().map(String::as_str));
    eprintln!("phase A (be1..be3, equal weights): {counts_a:?} in {elapsed:?}");
    for b in &tb.backends {
        let id = tb.balancer.backend_id(IpAddr::V4(b.addr)).unwrap();
        let count = counts_a.get(b.name).copied().unwrap_or(0);
        assert_binomial(b.name, count, N, share(&table_a, id));
    }

    // Remove be2: its record is cleared, table B holds be1 and be3 only.
    let be2_id = tb.balancer.backend_id(IpAddr::V4(BACKENDS[1].1)).unwrap();
    let report = tb.apply(&[(0, 1), (2, 1)]);
    assert_eq!(report.backends_removed, 1, "{report:?}");
    let table_b = tb.live_table();
    let be2_flows = phase_a.iter().filter(|id| *id == "be2").count();

    // Phase B: the same 5-tuples again. The conn table still holds every phase-A flow:
    // be1/be3 flows hit it and stay; be2 flows find their backend gone and are placed
    // anew by table B (one miss each).
    let before = tb.counters();
    let phase_b = connect_all(&tb);
    tb.settle(&before).check("phase B", N, be2_flows);
    for ((&port, a), b) in ports.iter().zip(&phase_a).zip(&phase_b) {
        if a == "be2" {
            assert_eq!(
                b,
                tb.predict(&table_b, port),
                "phase B: be2 flow from :{port}"
            );
        } else {
            assert_eq!(b, a, "phase B: established flow from :{port} moved");
        }
    }
    let counts_b = tally(phase_b.iter().map(String::as_str));
    eprintln!("phase B (be2 removed, conn table kept): {counts_b:?}; {be2_flows} flows left be2");
    assert!(!counts_b.contains_key("be2"), "{counts_b:?}");

    // Phase C: forget the flows (as an LRU eviction or a fresh lb would) and replay
    // them: now Maglev alone decides. Table B must keep almost every be1/be3 flow where
    // table A had it: that is the point of consistent hashing.
    for &port in &ports {
        tb.conns()
            .remove(&flow(port))
            .unwrap_or_else(|e| panic!("conn entry for :{port}: {e}"));
    }
    let before = tb.counters();
    let phase_c = connect_all(&tb);
    tb.settle(&before).check("phase C", N, N);
    for (&port, c) in ports.iter().zip(&phase_c) {
        assert_eq!(c, tb.predict(&table_b, port), "phase C: flow from :{port}");
    }
    let kept: Vec<(&String, &String)> = phase_a
        .iter()
        .zip(&phase_c)
        .filter(|(a, _)| *a != "be2")
        .collect();
    let moved = kept.iter().filter(|(a, c)| a != c).count();
    let entries_kept = table_a
        .iter()
        .zip(&table_b)
        .filter(|(a, _)| **a != be2_id)
        .collect::<Vec<_>>();
    let entries_moved = entries_kept.iter().filter(|(a, b)| a != b).count();
    let counts_c = tally(phase_c.iter().map(String::as_str));
    eprintln!(
        "phase C (conn table cleared): {counts_c:?}; {moved} of {} be1/be3 flows moved; \
         table: {entries_moved} of {} be1/be3 entries moved",
        kept.len(),
        entries_kept.len()
    );
    // The Maglev paper's bound for a removal is "a small fraction"; the lb-userspace
    // unit tests measure ≤ 0.7% of the other entries. 2% keeps a wide margin, while
    // any non-consistent scheme (e.g. hash mod N: 3 → 2 moves half) fails it.
    let frac = moved as f64 / kept.len() as f64;
    assert!(frac <= 0.02, "{moved} of {} flows moved", kept.len());
    let entries_frac = entries_moved as f64 / entries_kept.len() as f64;
    assert!(entries_frac <= 0.02, "{entries_moved} table entries moved");
    // The two survivors share evenly.
    let be1 = counts_c.get("be1").copied().unwrap_or(0);
    assert_eq!(
        be1 + counts_c.get("be3").copied().unwrap_or(0),
        N,
        "{counts_c:?}"
    );
    let be1_id = tb.balancer.backend_id(IpAddr::V4(BACKENDS[0].1)).unwrap();
    assert_binomial("be1 after removal", be1, N, share(&table_b, be1_id));

    tb.teardown();
    eprintln!(
        "dsr_backend_removal_keeps_established_flows_and_maglev_moves_few: {:?}",
        start.elapsed()
    );
}
