//! A DSR lab driven by the real `xlb` binary (the demo and daemon-level tests): a
//! client, a balancer and three backends on one bridge, each backend holding the VIP on
//! lo and running a [`TcpServer`] that answers with its name. Unlike `topology` (which
//! loads the data plane in-process), here `xlb run --config` owns the data plane.

use std::{
    io::Read,
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use crate::{
    dataplane::{wait_until, xlb_bin, PinDir, TempFile},
    ChildGuard, Netns, TcpServer, VethPair,
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 60, 0, 100);
pub const BACKENDS: [(&str, Ipv4Addr); 3] = [
    ("be1", Ipv4Addr::new(10, 60, 0, 11)),
    ("be2", Ipv4Addr::new(10, 60, 0, 12)),
    ("be3", Ipv4Addr::new(10, 60, 0, 13)),
];

/// Field order is drop order: daemons, servers, pins, namespaces.
pub struct Lab {
    pub daemons: Vec<ChildGuard>,
    pub servers: Vec<TcpServer>,
    pub pins: PinDir,
    peer_pins: PinDir,
    pub config: TempFile,
    /// Everything the `xlb` daemons wrote to stderr, in order.
    pub log: TempFile,
    log_seen: usize,
    pub macs: Vec<[u8; 6]>,
    /// The balancer's interface (in `lb`) and its switch-side peer.
    pub lb_if: VethPair,
    pub client: Netns,
    pub lb: Netns,
    pub backend_ns: Vec<Netns>,
    pub switch: Netns,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        crate::require_root();
        let switch = Netns::new(&format!("{tag}-sw"));
        switch.add_bridge("br0");
        let client = Netns::new(&format!("{tag}-cli"));
        let lb = Netns::new(&format!("{tag}-lb"));
        plug(&switch, &client, Ipv4Addr::new(10, 60, 0, 1));
        let lb_if = plug(&switch, &lb, Ipv4Addr::new(10, 60, 0, 2));
        client.ip(&["route", "add", &format!("{VIP}/32"), "via", "10.60.0.2"]);
        // veth quirk: native XDP_TX loses a pending TX checksum (docs/kernel-notes.md).
        switch.set_tx_checksumming(&lb_if.a, false);
        let (mut backend_ns, mut servers, mut macs) = (Vec::new(), Vec::new(), Vec::new());
        for (name, addr) in BACKENDS {
            let ns = Netns::new(&format!("{tag}-{name}"));
            let veth = plug(&switch, &ns, addr);
            ns.add_addr("lo", format!("{VIP}/32"));
            ns.sysctl("net.ipv4.conf.all.arp_ignore", 1);
            ns.sysctl("net.ipv4.conf.all.arp_announce", 2);
            ns.sysctl("net.ipv4.conf.all.rp_filter", 0);
            ns.sysctl(&format!("net.ipv4.conf.{}.rp_filter", veth.b), 0);
            macs.push(ns.mac(&veth.b));
            servers.push(TcpServer::start(&ns, SocketAddr::from((VIP, 80)), name));
            backend_ns.push(ns);
        }
        Lab {
            daemons: Vec::new(),
            servers,
            pins: PinDir::new(tag),
            peer_pins: PinDir::new(&format!("{tag}-peer")),
            config: TempFile::new(&format!("{tag}.json")),
            log: TempFile::new(&format!("{tag}.log")),
            log_seen: 0,
            macs,
            lb_if,
            client,
            lb,
            backend_ns,
            switch,
        }
    }

    pub fn vip(&self) -> SocketAddr {
        SocketAddr::from((VIP, 80))
    }

    /// Writes the config: one DSR service on VIP:80/tcp with these backend weights.
    pub fn write_config(&self, weights: &[u32]) {
        let backends: Vec<serde_json::Value> = BACKENDS
            .iter()
            .zip(&self.macs)
            .zip(weights)
            .map(|(((_, addr), mac), w)| {
                let mac = mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
                serde_json::json!({"address": addr.to_string(), "mac": mac, "weight": w})
            })
            .collect();
        let config = serde_json::json!({"services": [{
            "vip": VIP.to_string(), "port": 80, "protocol": "tcp", "mode": "dsr",
            "backends": backends,
        }]});
        std::fs::write(
            self.config.path(),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
    }

    /// Starts `xlb run --config` on the balancer (`extra` arguments appended), logging
    /// to [`Lab::log`], and waits until it reports running (attached, signals handled).
    pub fn start_xlb(&mut self, extra: &[&str]) -> usize {
        const READY: &str = "running; SIGHUP reloads";
        let before = self.log.read().matches(READY).count();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log.path())
            .unwrap();
        let mut cmd = self.lb.command(xlb_bin());
        cmd.args([
            "run",
            "--xdp-mode",
            "native",
            "--iface",
            &self.lb_if.b,
            "--config",
        ])
        .arg(self.config.path())
        .arg("--pin-dir")
        .arg(self.pins.path())
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(file);
        self.daemons.push(self.lb.spawn(cmd));
        assert!(
            wait_until(Duration::from_secs(20), || self
                .log
                .read()
                .matches(READY)
                .count()
                > before),
            "xlb did not start:\n{}",
            self.log.read()
        );
        self.daemons.len() - 1
    }

    /// Log lines written since the last call.
    pub fn new_log_lines(&mut self) -> Vec<String> {
        let text = self.log.read();
        let lines: Vec<String> = text
            .lines()
            .skip(self.log_seen)
            .map(str::to_owned)
            .collect();
        self.log_seen += lines.len();
        lines
    }

    /// The switch-side peer of the balancer's veth needs an XDP program before native
    /// XDP_TX frames are delivered; `xlb decap` (a pass-through for plain traffic) serves.
    pub fn start_peer(&mut self) {
        let mut peer = self.switch.command(xlb_bin());
        peer.args([
            "decap",
            "--xdp-mode",
            "native",
            "--iface",
            &self.lb_if.a,
            "--pin-dir",
        ])
        .arg(self.peer_pins.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.daemons.push(self.switch.spawn(peer));
        let link = self.peer_pins.path().join(format!("link_{}", self.lb_if.a));
        assert!(
            wait_until(Duration::from_secs(20), || link.exists()),
            "peer did not attach"
        );
    }

    pub fn link_pin(&self) -> PathBuf {
        self.pins.path().join(format!("link_{}", self.lb_if.b))
    }
}

/// One short connection to `vip` (run inside the client namespace): connect, half-close,
/// read the backend's name to EOF.
pub fn greet(vip: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.shutdown(Shutdown::Write)?;
    let mut id = String::new();
    s.read_to_string(&mut id)?;
    Ok(id.trim().to_owned())
}

/// Connects `ns` to the switch's bridge with `addr`/24; returns the veth (a = switch side).
fn plug(switch: &Netns, ns: &Netns, addr: Ipv4Addr) -> VethPair {
    let veth = VethPair::new(switch, ns);
    switch.enslave(&veth.a, "br0");
    ns.add_addr(&veth.b, format!("{addr}/24"));
    veth
}
