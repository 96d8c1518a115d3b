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
    process::Command,
    time::{Duration, Instant},
};

use testbed::{
    dataplane::xlb_bin,
    lab::{greet, Lab, VIP},
    ChildGuard, Netns,
};

fn main() {
    testbed::require_root();
    testbed::sweep_stale();
    let xlb = xlb_bin();

    step("topology: client, balancer and three backends on one L2 segment (namespaces)");
    let mut lab = Lab::new("demo");
    println!("  client 10.60.0.1, balancer {} 10.60.0.2, backends be1..be3 10.60.0.11-13, VIP {VIP}:80/tcp", lab.lb_if.b);

    lab.write_config(&[1, 1, 2]);
    step(&format!(
        "xlb run --iface {} --config <demo.json>  (weights 1:1:2, DSR, native XDP)",
        lab.lb_if.b
    ));
    lab.start_peer();
    let daemon = lab.start_xlb(&[]);
    show_log(&mut lab);

    step("600 short TCP connections from the client to the VIP");
    show_spread(&connect_many(&lab.client, 600));

    step("what an operator sees: xlb stats");
    let _ = Command::new(&xlb)
        .args(["stats", "--pin-dir"])
        .arg(lab.pins.path())
        .status();

    step("hot reload: drain be3 (weight 0) and SIGHUP; new connections avoid it");
    lab.write_config(&[1, 1, 0]);
    reload(&lab.daemons[daemon]);
    show_log(&mut lab);
    show_spread(&connect_many(&lab.client, 600));

    step("a bad config is rejected whole; the running one stays and traffic continues");
    std::fs::write(
        lab.config.path(),
        r#"{"services":[{"vip":"10.60.0.100","port":0,"protocol":"tcp","mode":"dsr","backends":[]}]}"#,
    )
    .unwrap();
    reload(&lab.daemons[daemon]);
    show_log(&mut lab);
    show_spread(&connect_many(&lab.client, 300));

    step("kill -9 xlb: the pinned program keeps forwarding with no daemon running");
    lab.daemons[daemon].kill();
    show_spread(&connect_many(&lab.client, 300));
    step("restart xlb: it adopts the pinned maps and link (no flap, same backend ids)");
    lab.write_config(&[1, 1, 0]);
    let daemon = lab.start_xlb(&[]);
    show_log(&mut lab);
    show_spread(&connect_many(&lab.client, 300));

    step("SIGTERM: xlb detaches and removes its pins");
    let status = lab.daemons[daemon].terminate(Duration::from_secs(10));
    println!(
        "  xlb exited: {status}; link pinned afterwards: {}",
        lab.link_pin().exists()
    );
    step("cleanup: namespaces removed");
}

/// Connects `n` times to the VIP from the client; returns connections per backend.
fn connect_many(client: &Netns, n: usize) -> BTreeMap<String, usize> {
    let started = Instant::now();
    let vip = std::net::SocketAddr::from((VIP, 80));
    let spread = client.run(|| {
        let mut spread = BTreeMap::new();
        for _ in 0..n {
            let id = greet(vip).expect("a connection to the VIP failed");
            *spread.entry(id).or_insert(0) += 1;
        }
        spread
    });
    println!(
        "  {n} connections, all answered, in {:?}",
        started.elapsed()
    );
    spread
}

/// What xlb logged since the last look (timestamps trimmed).
fn show_log(lab: &mut Lab) {
    for line in lab.new_log_lines() {
        let line = line
            .split_once("Z ")
            .map_or(line.as_str(), |(_, rest)| rest);
        println!("  xlb| {line}");
    }
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

fn step(text: &str) {
    println!("\n== {text}");
}
