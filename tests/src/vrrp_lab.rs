//! Two balancers sharing a VIP by VRRP, driven by the real `xlb` binary (or keepalived
//! on one side), with a client and three DSR backends on one bridge:
//!
//! ```text
//!   client 10.70.0.1 ─┐
//!   lb0    10.70.0.2 ─┤            VIP 10.70.0.100: on the master's interface,
//!   lb1    10.70.0.3 ─┤ br0         on every backend's lo (ARP-silent)
//!   be1..3 10.70.0.11-13 ─┘
//! ```
//!
//! The client reaches the VIP on-link: it ARPs for it, and only the master holds it,
//! so failover is exactly what clients of a real VRRP pair see.
//!
//! [`VrrpLab::new_v6`] builds the same topology dual-stack: every host also gets
//! fd70::<last IPv4 byte in hex>/64 (e.g. lb0 fd70::2, be1 fd70::11), nothing runs
//! duplicate address detection (link-local addresses included, so the daemons can bind
//! theirs at once), the backends hold the IPv6 VIP fd70::100 on lo, the client reaches
//! it on-link (neighbour discovery: only the master answers), and the configs written
//! are for the IPv6 VIP.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::Stdio,
    time::{Duration, Instant},
};

use crate::{
    dataplane::{wait_until, xlb_bin, PinDir, TempFile},
    lab::{plug, Traffic},
    ChildGuard, HttpServer, Netns, TcpServer, VethPair,
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 100);
/// The VIP of [`VrrpLab::new_v6`].
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd70, 0, 0, 0, 0, 0, 0, 0x100);
pub const VRID: u8 = 51;
const BACKENDS: [(&str, Ipv4Addr); 3] = [
    ("be1", Ipv4Addr::new(10, 70, 0, 11)),
    ("be2", Ipv4Addr::new(10, 70, 0, 12)),
    ("be3", Ipv4Addr::new(10, 70, 0, 13)),
];

/// One balancer host: its namespace, interface, pins and log.
pub struct Node {
    pub daemons: Vec<ChildGuard>,
    /// keepalived parent pids (their VRRP children are found through pid files).
    keepalived: Vec<i32>,
    pub pins: PinDir,
    peer_pins: PinDir,
    pub config: TempFile,
    pub log: TempFile,
    pub addr: Ipv4Addr,
    /// The VIP of this lab (IPv4, or IPv6 for [`VrrpLab::new_v6`]).
    pub vip: IpAddr,
    /// a = switch side, b = inside `ns`.
    pub veth: VethPair,
    pub ns: Netns,
}

impl Node {
    /// The interface inside the node's namespace.
    pub fn iface(&self) -> &str {
        &self.veth.b
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.log
            .read()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the log holds `n` lines with all `needles`; returns when it did.
    pub fn wait_log(&self, needles: &[&str], n: usize, timeout: Duration) -> Option<Instant> {
        wait_until(timeout, || self.log_lines(needles).len() >= n).then(Instant::now)
    }

    /// Whether the VIP is on the node's interface.
    pub fn holds_vip(&self) -> bool {
        let (family, len) = if self.vip.is_ipv4() {
            ("-4", 32)
        } else {
            ("-6", 128)
        };
        self.ns
            .ip(&[family, "addr", "show", "dev", self.iface()])
            .contains(&format!("{}/{len}", self.vip))
    }

    /// The interface's IPv6 link-local address: our identity in an IPv6 election.
    pub fn link_local(&self) -> Ipv6Addr {
        let out = self.ns.ip(&[
            "-6",
            "-j",
            "addr",
            "show",
            "dev",
            self.iface(),
            "scope",
            "link",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j addr JSON");
        // `ip -j` leaves an empty object for every address the filter skipped.
        v[0]["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|a| a["local"].as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("no link-local address on {}: {out}", self.iface()))
    }

    /// `xlb vrrp --json` of the node's daemon.
    pub fn vrrp(&self) -> serde_json::Value {
        crate::lab::view(&self.pins, "vrrp")
    }

    /// Takes the node off the network (its link down) or puts it back.
    pub fn set_link(&self, up: bool) {
        self.ns
            .ip(&["link", "set", self.iface(), if up { "up" } else { "down" }]);
    }
}

impl Node {
    /// Kills every keepalived process of the node: the parent and its VRRP child, found
    /// through their pid files (keepalived starts its own session, so neither our
    /// process group nor a dying parent takes the child along).
    pub fn kill_keepalived(&self) {
        for ext in ["vrrp.pid", "pid"] {
            let Ok(text) = std::fs::read_to_string(self.config.path().with_extension(ext)) else {
                continue;
            };
            if let Ok(pid) = text.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for &pid in &self.keepalived {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // The pid files must go too, or the next keepalived refuses to start.
        for ext in ["pid", "vrrp.pid", "checkers.pid"] {
            let _ = std::fs::remove_file(self.config.path().with_extension(ext));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_keepalived();
    }
}

/// Field order is drop order: daemons and servers before namespaces.
pub struct VrrpLab {
    peers: Vec<ChildGuard>,
    pub nodes: Vec<Node>,
    /// The backends' TCP greeters ([`VrrpLab::new`]) …
    pub servers: Vec<TcpServer>,
    /// … or their HTTP servers ([`VrrpLab::new_http`]), answering with their name.
    pub http: Vec<HttpServer>,
    macs: Vec<[u8; 6]>,
    /// Dual-stack, configs for the IPv6 VIP ([`VrrpLab::new_v6`]).
    v6: bool,
    /// The client's interface (inside `client`).
    pub client_if: String,
    pub client: Netns,
    pub backend_ns: Vec<Netns>,
    pub switch: Netns,
}

/// The IPv6 address of a host of [`VrrpLab::new_v6`]: fd70:: + its IPv4 address's last
/// byte written in hex digits (10.70.0.11 → fd70::11).
fn v6_of(addr: Ipv4Addr) -> Ipv6Addr {
    let last = addr.octets()[3];
    let word = u16::from_str_radix(&last.to_string(), 16).expect("decimal digits are hex");
    Ipv6Addr::new(0xfd70, 0, 0, 0, 0, 0, 0, word)
}

/// A namespace for the lab; in IPv6 mode without duplicate address detection (set
/// before any interface exists, so link-local addresses are usable at once too).
fn host(tag: &str, v6: bool) -> Netns {
    let ns = Netns::new(tag);
    if v6 {
        ns.sysctl("net.ipv6.conf.all.accept_dad", 0);
        ns.sysctl("net.ipv6.conf.default.accept_dad", 0);
    }
    ns
}

/// [`plug`], plus the host's IPv6 address in IPv6 mode.
fn plug_host(switch: &Netns, ns: &Netns, addr: Ipv4Addr, v6: bool) -> VethPair {
    let veth = plug(switch, ns, addr);
    if v6 {
        ns.add_addr(&veth.b, format!("{}/64", v6_of(addr)));
    }
    veth
}

impl VrrpLab {
    /// Backends run [`TcpServer`]s greeting with their name.
    pub fn new(tag: &str) -> VrrpLab {
        VrrpLab::build(tag, false, false)
    }

    /// Backends run [`HttpServer`]s answering every request with their name.
    pub fn new_http(tag: &str) -> VrrpLab {
        VrrpLab::build(tag, true, false)
    }

    /// The TCP lab dual-stack, with the IPv6 VIP [`VIP6`] (see the module docs).
    pub fn new_v6(tag: &str) -> VrrpLab {
        VrrpLab::build(tag, false, true)
    }

    fn build(tag: &str, http: bool, v6: bool) -> VrrpLab {
        crate::require_root();
        let switch = Netns::new(&format!("{tag}-sw"));
        switch.add_bridge("br0");
        if v6 {
            // Flood every multicast frame (ff02::12, solicitations): no MLD querier runs
            // here, and snooping only adds a way for IPv6 to fail.
            switch.ip(&[
                "link",
                "set",
                "dev",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ]);
        }
        let vip: IpAddr = if v6 { VIP6.into() } else { VIP.into() };
        let client = host(&format!("{tag}-cli"), v6);
        let client_if = plug_host(&switch, &client, Ipv4Addr::new(10, 70, 0, 1), v6);
        client.ip(&["route", "add", &format!("{VIP}/32"), "dev", &client_if.b]);
        if v6 {
            client.ip(&[
                "-6",
                "route",
                "add",
                &format!("{VIP6}/128"),
                "dev",
                &client_if.b,
            ]);
        }
        let mut nodes = Vec::new();
        for (i, addr) in [Ipv4Addr::new(10, 70, 0, 2), Ipv4Addr::new(10, 70, 0, 3)]
            .into_iter()
            .enumerate()
        {
            let ns = host(&format!("{tag}-lb{i}"), v6);
            let veth = plug_host(&switch, &ns, addr, v6);
            // veth quirk: native XDP_TX loses a pending TX checksum (docs/kernel-notes.md).
            switch.set_tx_checksumming(&veth.a, false);
            nodes.push(Node {
                daemons: Vec::new(),
                keepalived: Vec::new(),
                pins: PinDir::new(&format!("{tag}{i}")),
                peer_pins: PinDir::new(&format!("{tag}{i}-peer")),
                config: TempFile::new(&format!("{tag}{i}.json")),
                log: TempFile::new(&format!("{tag}{i}.log")),
                addr,
                vip,
                veth,
                ns,
            });
        }
        let (mut backend_ns, mut servers, mut macs) = (Vec::new(), Vec::new(), Vec::new());
        let mut https = Vec::new();
        for (name, addr) in BACKENDS {
            let ns = host(&format!("{tag}-{name}"), v6);
            let veth = plug_host(&switch, &ns, addr, v6);
            ns.add_addr("lo", format!("{VIP}/32"));
            if v6 {
                // DSR return path; Linux answers neighbour solicitations only for
                // addresses on the receiving interface, so one on lo stays silent.
                ns.add_addr("lo", format!("{VIP6}/128"));
            }
            ns.sysctl("net.ipv4.conf.all.arp_ignore", 1);
            ns.sysctl("net.ipv4.conf.all.arp_announce", 2);
            ns.sysctl("net.ipv4.conf.all.rp_filter", 0);
            ns.sysctl(&format!("net.ipv4.conf.{}.rp_filter", veth.b), 0);
            macs.push(ns.mac(&veth.b));
            // [::] takes IPv4 too (dual-stack socket).
            let any: IpAddr = if v6 {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            let any = SocketAddr::new(any, 80);
            if http {
                let server = HttpServer::start(&ns, any);
                server.set_response(200, name);
                https.push(server);
            } else {
                servers.push(TcpServer::start(&ns, any, name));
            }
            backend_ns.push(ns);
        }
        let mut lab = VrrpLab {
            peers: Vec::new(),
            nodes,
            servers,
            http: https,
            macs,
            v6,
            client_if: client_if.b.clone(),
            client,
            backend_ns,
            switch,
        };
        for i in 0..2 {
            let peer = lab.start_peer(i);
            lab.peers.push(peer);
        }
        lab
    }

    /// The lab's VIP address (IPv4, or [`VIP6`] for [`VrrpLab::new_v6`]).
    pub fn vip_addr(&self) -> IpAddr {
        if self.v6 {
            VIP6.into()
        } else {
            VIP.into()
        }
    }

    pub fn vip(&self) -> SocketAddr {
        SocketAddr::new(self.vip_addr(), 80)
    }

    /// The switch-side peer of a balancer's veth needs an XDP program before native
    /// XDP_TX frames are delivered; `xlb decap` (a pass-through for plain traffic) serves.
    fn start_peer(&self, i: usize) -> ChildGuard {
        let node = &self.nodes[i];
        let mut peer = self.switch.command(xlb_bin());
        peer.args([
            "decap",
            "--xdp-mode",
            "native",
            "--iface",
            &node.veth.a,
            // Required; this peer never sees a tunnel (it only has to run XDP).
            "--allow-source",
            &node.addr.to_string(),
            "--pin-dir",
        ])
        .arg(node.peer_pins.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let guard = self.switch.spawn(peer);
        let link = node.peer_pins.path().join(format!("link_{}", node.veth.a));
        assert!(
            wait_until(Duration::from_secs(20), || link.exists()),
            "peer did not attach"
        );
        guard
    }

    /// Writes node `i`'s config: the DSR service on VIP:80 and one VRRP instance.
    pub fn write_config(&self, i: usize, vrrp: serde_json::Value) {
        self.write_config_with(i, vrrp, serde_json::json!({}));
    }

    /// Like [`VrrpLab::write_config`], with `service` fields merged into the service
    /// (e.g. a `check`).
    pub fn write_config_with(&self, i: usize, vrrp: serde_json::Value, service: serde_json::Value) {
        let node = &self.nodes[i];
        let backends: Vec<serde_json::Value> = BACKENDS
            .iter()
            .zip(&self.macs)
            .map(|((_, addr), mac)| {
                let mac: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
                let addr: IpAddr = if self.v6 {
                    v6_of(*addr).into()
                } else {
                    (*addr).into()
                };
                serde_json::json!({"address": addr.to_string(), "mac": mac.join(":")})
            })
            .collect();
        let vip = self.vip_addr();
        let mut instance = serde_json::json!({
            "name": "VI_1", "interface": node.iface(), "vrid": VRID,
            "addresses": [vip.to_string()],
        });
        if let (Some(o), serde_json::Value::Object(extra)) = (instance.as_object_mut(), vrrp) {
            o.extend(extra);
        }
        let mut svc = serde_json::json!({
            "vip": vip.to_string(), "port": 80, "protocol": "tcp", "mode": "dsr",
            "backends": backends,
        });
        if let (Some(o), serde_json::Value::Object(extra)) = (svc.as_object_mut(), service) {
            o.extend(extra);
        }
        let config = serde_json::json!({ "services": [svc], "vrrp": [instance] });
        std::fs::write(
            node.config.path(),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
    }

    /// Starts `xlb run` on node `i` and waits until it runs.
    pub fn start_xlb(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let guard = crate::lab::start_xlb(
            &node.ns,
            &node.veth.b,
            &node.config,
            &node.pins,
            &node.log,
            &[],
        );
        node.daemons.push(guard);
    }

    /// Starts keepalived (VRRP only, in the foreground) on node `i` with one instance
    /// for the VIP; its console log goes to the node's log file.
    pub fn start_keepalived(&mut self, i: usize, version: u8, priority: u8) {
        let vip = match self.vip_addr() {
            IpAddr::V4(v4) => format!("{v4}/32"),
            IpAddr::V6(v6) => format!("{v6}/128"),
        };
        let node = &mut self.nodes[i];
        let conf = format!(
            "global_defs {{\n  router_id lb{i}\n  vrrp_version {version}\n  \
             enable_script_security\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface {iface}\n  \
             virtual_router_id {VRID}\n  priority {priority}\n  advert_int 1\n  \
             virtual_ipaddress {{\n    {vip}\n  }}\n}}\n",
            iface = node.iface()
        );
        std::fs::write(node.config.path(), conf).unwrap();
        let run = |what: &str| node.config.path().with_extension(what);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log.path())
            .unwrap();
        let mut cmd = node.ns.command("keepalived");
        cmd.args([
            "--dont-fork",
            "--log-console",
            "--log-detail",
            "--vrrp",
            "-f",
        ])
        .arg(node.config.path())
        .arg("-p")
        .arg(run("pid"))
        .arg("-r")
        .arg(run("vrrp.pid"))
        .arg("-c")
        .arg(run("checkers.pid"))
        .stdout(Stdio::null())
        .stderr(file);
        let guard = node.ns.spawn(cmd);
        node.daemons.push(guard);
    }

    /// Continuous connections from the client: TCP greetings or HTTP GETs, whichever
    /// the backends serve.
    pub fn traffic(&self) -> Traffic {
        if self.http.is_empty() {
            Traffic::start(&self.client, self.vip())
        } else {
            Traffic::start_http(&self.client, self.vip())
        }
    }
}
