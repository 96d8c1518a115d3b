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

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Stdio,
    time::{Duration, Instant},
};

use crate::{
    dataplane::{wait_until, xlb_bin, PinDir, TempFile},
    lab::{plug, Traffic},
    ChildGuard, HttpServer, Netns, TcpServer, VethPair,
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 70, 0, 100);
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
        self.ns
            .ip(&["-4", "addr", "show", "dev", self.iface()])
            .contains(&format!("{VIP}/32"))
    }

    /// `xlb vrrp --json` of the node's daemon.
    pub fn vrrp(&self) -> serde_json::Value {
        let o = std::process::Command::new(xlb_bin())
            .args(["vrrp", "--json", "--pin-dir"])
            .arg(self.pins.path())
            .output()
            .expect("run xlb vrrp");
        assert!(
            o.status.success(),
            "xlb vrrp: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("xlb vrrp JSON")
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
    /// The client's interface (inside `client`).
    pub client_if: String,
    pub client: Netns,
    pub backend_ns: Vec<Netns>,
    pub switch: Netns,
}

impl VrrpLab {
    /// Backends run [`TcpServer`]s greeting with their name.
    pub fn new(tag: &str) -> VrrpLab {
        VrrpLab::build(tag, false)
    }

    /// Backends run [`HttpServer`]s answering every request with their name.
    pub fn new_http(tag: &str) -> VrrpLab {
        VrrpLab::build(tag, true)
    }

    fn build(tag: &str, http: bool) -> VrrpLab {
        crate::require_root();
        let switch = Netns::new(&format!("{tag}-sw"));
        switch.add_bridge("br0");
        let client = Netns::new(&format!("{tag}-cli"));
        let client_if = plug(&switch, &client, Ipv4Addr::new(10, 70, 0, 1));
        client.ip(&["route", "add", &format!("{VIP}/32"), "dev", &client_if.b]);
        let mut nodes = Vec::new();
        for (i, addr) in [Ipv4Addr::new(10, 70, 0, 2), Ipv4Addr::new(10, 70, 0, 3)]
            .into_iter()
            .enumerate()
        {
            let ns = Netns::new(&format!("{tag}-lb{i}"));
            let veth = plug(&switch, &ns, addr);
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
                veth,
                ns,
            });
        }
        let (mut backend_ns, mut servers, mut macs) = (Vec::new(), Vec::new(), Vec::new());
        let mut https = Vec::new();
        for (name, addr) in BACKENDS {
            let ns = Netns::new(&format!("{tag}-{name}"));
            let veth = plug(&switch, &ns, addr);
            ns.add_addr("lo", format!("{VIP}/32"));
            ns.sysctl("net.ipv4.conf.all.arp_ignore", 1);
            ns.sysctl("net.ipv4.conf.all.arp_announce", 2);
            ns.sysctl("net.ipv4.conf.all.rp_filter", 0);
            ns.sysctl(&format!("net.ipv4.conf.{}.rp_filter", veth.b), 0);
            macs.push(ns.mac(&veth.b));
            let any = SocketAddr::from(([0, 0, 0, 0], 80));
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

    pub fn vip(&self) -> SocketAddr {
        SocketAddr::from((VIP, 80))
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
                serde_json::json!({"address": addr.to_string(), "mac": mac.join(":")})
            })
            .collect();
        let mut instance = serde_json::json!({
            "name": "VI_1", "interface": node.iface(), "vrid": VRID,
            "addresses": [VIP.to_string()],
        });
        if let (Some(o), serde_json::Value::Object(extra)) = (instance.as_object_mut(), vrrp) {
            o.extend(extra);
        }
        let mut svc = serde_json::json!({
            "vip": VIP.to_string(), "port": 80, "protocol": "tcp", "mode": "dsr",
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
        const READY: &str = "running; SIGHUP reloads";
        let node = &mut self.nodes[i];
        let before = node.log.read().matches(READY).count();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log.path())
            .unwrap();
        let mut cmd = node.ns.command(xlb_bin());
        cmd.args([
            "run",
            "--xdp-mode",
            "native",
            "--iface",
            &node.veth.b,
            "--config",
        ])
        .arg(node.config.path())
        .arg("--pin-dir")
        .arg(node.pins.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(file);
        let guard = node.ns.spawn(cmd);
        node.daemons.push(guard);
        assert!(
            wait_until(Duration::from_secs(20), || node
                .log
                .read()
                .matches(READY)
                .count()
                > before),
            "xlb on lb{i} did not start:\n{}",
            node.log.read()
        );
    }

    /// Starts keepalived (VRRP only, in the foreground) on node `i` with one instance
    /// for the VIP; its console log goes to the node's log file.
    pub fn start_keepalived(&mut self, i: usize, version: u8, priority: u8) {
        let node = &mut self.nodes[i];
        let conf = format!(
            "global_defs {{\n  router_id lb{i}\n  vrrp_version {version}\n  \
             enable_script_security\n}}\n\
             vrrp_instance VI_1 {{\n  state BACKUP\n  interface {iface}\n  \
             virtual_router_id {VRID}\n  priority {priority}\n  advert_int 1\n  \
             virtual_ipaddress {{\n    {VIP}/32\n  }}\n}}\n",
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
