//! The real pipeline: `xlb run` attaches to a veth in a namespace, counts every packet
//! another namespace sends through it, logs from XDP into its own log, and detaches and
//! unpins on SIGTERM.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    process::Stdio,
    time::Duration,
};

use lb_common::Stat;
use lb_userspace::dataplane::aya::stats;
use testbed::{
    dataplane::{wait_until, xlb_bin, PinDir, TempFile},
    Netns, UdpServer, VethPair,
};

const N: u64 = 1000;
const PAYLOAD: usize = 100;

#[test]
fn xlb_run_counts_every_packet_logs_and_detaches() {
    testbed::require_root();
    let client = Netns::new("cli");
    let lb = Netns::new("lb");
    let veth = VethPair::new(&client, &lb);
    // Only our datagrams may cross the link: no IPv6 ND/MLD, no ARP (static neighbours).
    client.disable_ipv6(&veth.a);
    lb.disable_ipv6(&veth.b);
    client.add_addr(&veth.a, "10.10.0.1/24");
    lb.add_addr(&veth.b, "10.10.0.2/24");
    client.add_neigh(&veth.a, "10.10.0.2", lb.mac(&veth.b));
    lb.add_neigh(&veth.b, "10.10.0.1", client.mac(&veth.a));
    let server_addr: SocketAddr = "10.10.0.2:9000".parse().unwrap();
    let server = UdpServer::start(&lb, server_addr);

    let pins = PinDir::new("attach");
    let pin_dir = pins.path();
    let log = TempFile::new("attach.log");
    let log_file = fs::File::create(log.path()).unwrap();
    let mut cmd = lb.command(xlb_bin());
    cmd.args([
        "run",
        "--xdp-mode",
        "native",
        "--ebpf-log-level",
        "trace",
        "--iface",
    ])
    .arg(&veth.b)
    .arg("--pin-dir")
    .arg(pin_dir)
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1")
    .stdout(Stdio::null())
    .stderr(log_file);
    let mut daemon = lb.spawn(cmd);
    let link_pin = pin_dir.join(format!("link_{}", veth.b));
    assert!(
        wait_until(Duration::from_secs(20), || link_pin.exists()),
        "xlb did not pin its link; log:\n{}",
        log.read()
    );

    // Paced in bursts the receiver can absorb: a socket buffer overflow would lose
    // datagrams after XDP counted them and make the arrival check meaningless.
    client.run(|| {
        let sock = UdpSocket::bind("10.10.0.1:0").unwrap();
        for burst in 1..=N / 50 {
            for _ in 0..50 {
                sock.send_to(&[0xab; PAYLOAD], server_addr).unwrap();
            }
            server.wait_for(burst * 50, Duration::from_secs(5));
        }
    });
    assert!(
        server.wait_for(N, Duration::from_secs(10)),
        "only {} of {N} datagrams arrived",
        server.datagrams()
    );

    let map = stats::open_pinned(pin_dir).expect("pinned stats map");
    let global = stats::read_global(&map).unwrap();
    let frame_len = (14 + 20 + 8 + PAYLOAD) as u64;
    assert_eq!(global.get(Stat::Rx).packets, N, "rx: {global:?}");
    assert_eq!(global.get(Stat::Rx).bytes, N * frame_len);
    assert_eq!(global.get(Stat::Pass).packets, N);
    assert_eq!(global.get(Stat::Drop).packets, 0);

    // The per-packet trace! from XDP must reach xlb's tracing output.
    assert!(
        wait_until(Duration::from_secs(5), || log
            .read()
            .contains("pass: not_vip (142 bytes)")),
        "no eBPF log line in xlb's log:\n{}",
        log.read()
    );

    let status = daemon.terminate(Duration::from_secs(10));
    assert!(status.success(), "xlb exited with {status}");
    assert!(
        !pin_dir.exists(),
        "pins left behind in {}",
        pin_dir.display()
    );
    let link = lb
        .command("ip")
        .args(["-j", "link", "show", "dev", &veth.b])
        .output()
        .unwrap();
    let link: serde_json::Value = serde_json::from_slice(&link.stdout).unwrap();
    assert!(
        link[0].get("xdp").is_none(),
        "XDP still attached after SIGTERM: {link}"
    );
}

/// Issue 15, item 6: `xlb status` shows how each interface is attached, a generic-mode
/// fallback included, and a native attach on a veth warns that the peer needs an XDP
/// program for frames sent back out to arrive.
#[test]
fn status_shows_each_attachment_and_a_native_veth_warns() {
    testbed::require_root();
    let other = Netns::new("att-o");
    let lb = Netns::new("att-lb");
    let veth = VethPair::new(&other, &lb);
    // A bridge has no native XDP: `auto` falls back to generic there.
    lb.add_bridge("xlbatbr0");
    let pins = PinDir::new("att-status");
    let log = TempFile::new("att-status.log");
    let mut cmd = lb.command(xlb_bin());
    cmd.args([
        "run",
        "--xdp-mode",
        "auto",
        "--iface",
        &veth.b,
        "--iface",
        "xlbatbr0",
    ])
    .arg("--pin-dir")
    .arg(pins.path())
    .env("NO_COLOR", "1")
    .stdout(Stdio::null())
    .stderr(fs::File::create(log.path()).unwrap());
    let mut daemon = lb.spawn(cmd);
    assert!(
        wait_until(Duration::from_secs(20), || log.read().contains("running;")),
        "xlb did not start:\n{}",
        log.read()
    );
    let out = std::process::Command::new(xlb_bin())
        .args(["status", "--json", "--pin-dir"])
        .arg(pins.path())
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(
        status["attached"],
        serde_json::json!([
            {"iface": veth.b, "mode": "native", "fallback": false},
            {"iface": "xlbatbr0", "mode": "generic", "fallback": true},
        ]),
        "{status}"
    );
    let text = log.read();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("native XDP on a veth"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains(&veth.b), "{}", warnings[0]);
    daemon.terminate(Duration::from_secs(10));
}
