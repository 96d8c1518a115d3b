//! `cargo xtask demo`: a small topology in network namespaces — a client and a balancer
//! host — with `xlb` attached to the balancer's interface. Sends real traffic, shows the
//! data plane's counters as an operator sees them (`xlb stats`, bpftool), then stops
//! `xlb` and checks it cleaned up. Grows with the product (backends, VRRP, failover).

use std::{
    io::Read,
    net::{SocketAddr, TcpStream, UdpSocket},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use testbed::{
    dataplane::{unique_pin_dir, wait_until, xlb_bin},
    Netns, TcpServer, UdpServer, VethPair,
};

fn main() {
    testbed::require_root();
    testbed::sweep_stale();
    let xlb = xlb_bin();
    step("topology: namespaces `client` and `balancer` joined by a veth pair");
    let client = Netns::new("client");
    let lb = Netns::new("balancer");
    let veth = VethPair::new(&client, &lb);
    client.add_addr(&veth.a, "10.20.0.1/24");
    lb.add_addr(&veth.b, "10.20.0.2/24");
    println!(
        "  client {} 10.20.0.1  <->  balancer {} 10.20.0.2",
        veth.a, veth.b
    );
    let udp_addr: SocketAddr = "10.20.0.2:5353".parse().unwrap();
    let tcp_addr: SocketAddr = "10.20.0.2:8080".parse().unwrap();
    let udp = UdpServer::start(&lb, udp_addr);
    let tcp = TcpServer::start(&lb, tcp_addr, "balancer-host");

    let pin_dir = unique_pin_dir("demo");
    step(&format!(
        "xlb run --iface {} (native XDP), pins in {}",
        veth.b,
        pin_dir.display()
    ));
    let mut cmd = lb.command(&xlb);
    cmd.args(["run", "--iface", &veth.b, "--pin-dir"])
        .arg(&pin_dir)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    let mut daemon = lb.spawn(cmd);
    let link = pin_dir.join(format!("link_{}", veth.b));
    assert!(
        wait_until(Duration::from_secs(20), || link.exists()),
        "xlb did not attach"
    );

    step("traffic: 10000 UDP datagrams and 200 TCP connections from the client");
    let started = Instant::now();
    client.run(|| {
        let sock = UdpSocket::bind("10.20.0.1:0").unwrap();
        // Paced so the receiving socket buffer never overflows.
        for burst in 1..=100 {
            for _ in 0..100 {
                sock.send_to(&[0u8; 64], udp_addr).unwrap();
            }
            udp.wait_for(burst * 100, Duration::from_secs(2));
        }
        for _ in 0..200 {
            let mut s = TcpStream::connect_timeout(&tcp_addr, Duration::from_secs(2)).unwrap();
            // The server answers with its id and closes once we are done sending.
            s.shutdown(std::net::Shutdown::Write).unwrap();
            let mut id = String::new();
            s.read_to_string(&mut id).ok();
        }
    });
    udp.wait_for(10_000, Duration::from_secs(10));
    println!(
        "  delivered: {} datagrams, {} TCP connections in {:?}",
        udp.datagrams(),
        tcp.connections(),
        started.elapsed()
    );

    step("what an operator sees: xlb stats");
    let _ = Command::new(&xlb)
        .args(["stats", "--pin-dir"])
        .arg(&pin_dir)
        .status();
    step("bpftool map dump pinned .../XLB_STATS (BTF field names), first entry");
    if let Ok(out) = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(pin_dir.join("XLB_STATS"))
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        for line in text.lines().take(16) {
            println!("  {line}");
        }
    }

    step("SIGTERM xlb: it detaches and removes its pins");
    let status = daemon.terminate(Duration::from_secs(10));
    println!(
        "  xlb exited: {status}; pins present afterwards: {}",
        pin_dir.exists()
    );
    step("cleanup: namespaces removed on exit");
}

fn step(text: &str) {
    println!("\n== {text}");
}
