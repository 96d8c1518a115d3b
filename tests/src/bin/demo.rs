//! `cargo xtask demo`: xlb balancing real TCP connections in network namespaces.
//!
//! ```text
//!   client 10.60.0.1 ─┐
//!   lb     10.60.0.2 ─┤ br0 (namespace `switch`)     VIP 10.60.0.100:80/tcp
//!   be1..3 10.60.0.11-13 ─┘                           DSR: backends hold the VIP on lo
//! ```
//!
//! Runs the real `xlb` binary: `xlb run --config` on the balancer, then shows the spread
//! of connections over weighted backends, what an operator sees in `xlb stats`, a hot
//! reload that drains a backend, a bad reload that is rejected while traffic continues,
//! and a clean shutdown. Grows with the product (health checks, VRRP failover).

use std::{
    collections::BTreeMap,
    io::Read,
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use testbed::{
    dataplane::{unique_pin_dir, wait_until, xlb_bin, TempFile},
    ChildGuard, Netns, TcpServer, VethPair,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 60, 0, 100);
const BACKENDS: [(&str, Ipv4Addr, u32); 3] = [
    ("be1", Ipv4Addr::new(10, 60, 0, 11), 1),
    ("be2", Ipv4Addr::new(10, 60, 0, 12), 1),
    ("be3", Ipv4Addr::new(10, 60, 0, 13), 2),
];

fn main() {
    testbed::require_root();
    testbed::sweep_stale();
    let xlb = xlb_bin();

    step("topology: client, balancer and three backends on one L2 segment (namespaces)");
    let switch = Netns::new("switch");
    switch.add_bridge("br0");
    let client = Netns::new("client");
    let lb = Netns::new("lb");
    let client_if = plug(&switch, &client, Ipv4Addr::new(10, 60, 0, 1));
    let lb_if = plug(&switch, &lb, Ipv4Addr::new(10, 60, 0, 2));
    client.ip(&["route", "add", &format!("{VIP}/32"), "via", "10.60.0.2"]);
    // veth quirk: native XDP_TX loses a pending TX checksum (docs/kernel-notes.md).
    switch.set_tx_checksumming(&lb_if.a, false);
    let mut backend_ns = Vec::new();
    let mut servers = Vec::new();
    let mut macs = Vec::new();
    for (name, addr, _) in BACKENDS {
        let ns = Netns::new(name);
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
    println!(
        "  client {} 10.60.0.1, balancer {} 10.60.0.2, VIP {VIP}:80/tcp",
        client_if.b, lb_if.b
    );

    let config = TempFile::new("demo.json");
    let weights: Vec<u32> = BACKENDS.iter().map(|b| b.2).collect();
    write_config(&config, &macs, &weights);
    let pins = unique_pin_dir("demo");
    let peer_pins = unique_pin_dir("demo-peer");
    step(&format!(
        "xlb run --iface {} --config <demo.json>  (weights 1:1:2, DSR, native XDP)",
        lb_if.b
    ));
    let mut cmd = lb.command(&xlb);
    cmd.args([
        "run",
        "--xdp-mode",
        "native",
        "--iface",
        &lb_if.b,
        "--config",
    ])
    .arg(config.path())
    .arg("--pin-dir")
    .arg(&pins)
    .stdout(Stdio::inherit())
    .stderr(Stdio::inherit());
    let mut daemon = lb.spawn(cmd);
    // The switch-side peer of the balancer's veth needs an XDP program of its own before
    // native XDP_TX frames are delivered; `xlb decap` (a pass-through for plain traffic)
    // serves.
    let mut peer = switch.command(&xlb);
    peer.args([
        "decap",
        "--xdp-mode",
        "native",
        "--iface",
        &lb_if.a,
        "--pin-dir",
    ])
    .arg(&peer_pins)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut peer = switch.spawn(peer);
    let attached = |dir: &std::path::Path, iface: &str| dir.join(format!("link_{iface}")).exists();
    assert!(
        wait_until(Duration::from_secs(20), || attached(&pins, &lb_if.b)
            && attached(&peer_pins, &lb_if.a)),
        "xlb did not attach"
    );

    step("600 short TCP connections from the client to the VIP");
    show_spread(&connect_many(&client, 600));

    step("what an operator sees: xlb stats");
    let _ = Command::new(&xlb)
        .args(["stats", "--pin-dir"])
        .arg(&pins)
        .status();

    step("hot reload: drain be3 (weight 0) and SIGHUP; new connections avoid it");
    write_config(&config, &macs, &[1, 1, 0]);
    reload(&daemon);
    show_spread(&connect_many(&client, 600));

    step("a bad config is rejected whole; the running one stays and traffic continues");
    std::fs::write(config.path(), r#"{"services":[{"vip":"10.60.0.100","port":0,"protocol":"tcp","mode":"dsr","backends":[]}]}"#)
        .unwrap();
    reload(&daemon);
    show_spread(&connect_many(&client, 300));

    step("SIGTERM: xlb detaches and removes its pins");
    let status = daemon.terminate(Duration::from_secs(10));
    peer.terminate(Duration::from_secs(10));
    println!(
        "  xlb exited: {status}; pins left: {}",
        pins.exists() || peer_pins.exists()
    );
    drop(servers);
    step("cleanup: namespaces removed");
}

/// Connects `n` times to the VIP from the client; returns connections per backend id.
fn connect_many(client: &Netns, n: usize) -> BTreeMap<String, usize> {
    let started = Instant::now();
    let spread = client.run(|| {
        let mut spread = BTreeMap::new();
        for _ in 0..n {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::from((VIP, 80)), Duration::from_secs(2))
                    .expect("connect to the VIP");
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut id = String::new();
            s.read_to_string(&mut id).expect("read the backend id");
            *spread.entry(id.trim().to_owned()).or_insert(0) += 1;
        }
        spread
    });
    println!(
        "  {n} connections, all answered, in {:?}",
        started.elapsed()
    );
    spread
}

fn show_spread(spread: &BTreeMap<String, usize>) {
    let total: usize = spread.values().sum();
    for (backend, count) in spread {
        let bar = "#".repeat(count * 40 / total.max(1));
        println!("  {backend:<4} {count:>4}  {bar}");
    }
}

fn reload(daemon: &ChildGuard) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP xlb");
    std::thread::sleep(Duration::from_millis(300));
}

fn write_config(file: &TempFile, macs: &[[u8; 6]], weights: &[u32]) {
    let backends: Vec<serde_json::Value> = BACKENDS
        .iter()
        .zip(macs)
        .zip(weights)
        .map(|(((_, addr, _), mac), w)| {
            let mac = mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":");
            serde_json::json!({"address": addr.to_string(), "mac": mac, "weight": w})
        })
        .collect();
    let config = serde_json::json!({"services": [{
        "vip": VIP.to_string(), "port": 80, "protocol": "tcp", "mode": "dsr", "backends": backends,
    }]});
    std::fs::write(file.path(), serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// Connects `ns` to the switch's bridge with `addr`/24; returns the veth (a = switch side).
fn plug(switch: &Netns, ns: &Netns, addr: Ipv4Addr) -> VethPair {
    let veth = VethPair::new(switch, ns);
    switch.enslave(&veth.a, "br0");
    ns.add_addr(&veth.b, format!("{addr}/24"));
    veth
}

fn step(text: &str) {
    println!("\n== {text}");
}
