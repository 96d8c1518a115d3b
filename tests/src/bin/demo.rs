//! `cargo xtask demo`: two xlb balancers sharing a VIP by VRRP, HTTP-checking three DSR
//! HTTP backends, with a client's real HTTP requests throughout, in network namespaces
//! on one bridge.
//!
//! ```text
//!   client 10.70.0.1 ─┐
//!   lb0    10.70.0.2 ─┤ br0       VIP 10.70.0.100:80/tcp, held by the VRRP master
//!   lb1    10.70.0.3 ─┤           (lb0: priority 150, lb1: 100, adverts every 100 ms)
//!   be1..3 10.70.0.11-13 ─┘       DSR: backends hold the VIP on lo; HTTP checks every 300 ms
//! ```
//!
//! Runs the real `xlb` binary on both balancers, then: the election, the spread of
//! requests, what an operator sees (`xlb vrrp/services/backends/stats`), a backend whose
//! health check starts failing (HTTP 503) and that comes back by itself, a bad reload that
//! is rejected, the master
//! balancer's host failing (takeover, measured) and coming back (preemption), and a
//! clean shutdown. Every step prints what happened; everything is removed at the end.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use testbed::{
    dataplane::xlb_bin,
    lab::{http_get, Attempt},
    vrrp_lab::{VrrpLab, VIP},
    Netns,
};

const INTERVAL_MS: u64 = 100;

fn main() {
    testbed::require_root();
    testbed::sweep_stale();
    let started = Instant::now();

    step("topology: a client, two balancers and three backends on one L2 segment");
    let mut lab = VrrpLab::new_http("demo");
    println!(
        "  client 10.70.0.1, lb0 10.70.0.2 ({}), lb1 10.70.0.3 ({}), be1..be3 10.70.0.11-13, \
         VIP {VIP}:80/tcp",
        lab.nodes[0].iface(),
        lab.nodes[1].iface()
    );
    let check = serde_json::json!({"check": {
        "type": "http", "path": "/healthz", "expect_status": [200],
        "interval_ms": 300, "timeout_ms": 200, "rise": 2, "fall": 2,
    }});
    for (i, priority) in [(0, 150), (1, 100)] {
        lab.write_config_with(
            i,
            serde_json::json!({"priority": priority, "advert_int_ms": INTERVAL_MS}),
            check.clone(),
        );
    }
    let mut seen = [0usize; 2];

    step("xlb run on both balancers (native XDP, DSR, health checks, VRRP)");
    lab.start_xlb(0);
    wait(&lab, 0, "VRRP master", 1);
    lab.start_xlb(1);
    wait(&lab, 1, "VRRP backup", 1);
    show_logs(&lab, &mut seen);
    xlb(&lab, 0, &["vrrp"]);
    xlb(&lab, 1, &["vrrp"]);

    step("600 HTTP requests from the client to the VIP (one connection each)");
    show_spread(&connect_many(&lab.client, 600));
    xlb(&lab, 0, &["services"]);
    xlb(&lab, 0, &["backends"]);

    step("be2 starts answering 503 (its health check fails); continuous traffic meanwhile");
    let traffic = lab.traffic();
    traffic.progressed(50, Duration::from_secs(10));
    let failing = Instant::now();
    lab.http[1].set_response(503, "be2 is unwell");
    wait(&lab, 0, "backend down", 1);
    println!(
        "  be2 out of the pool {:?} after it started failing (bound fall × interval + timeout \
         = 800 ms); it keeps its established connections (drain)",
        failing.elapsed()
    );
    traffic.progressed(200, Duration::from_secs(10));
    let back = Instant::now();
    lab.http[1].set_response(200, "be2");
    wait(&lab, 0, "backend up", 1);
    println!(
        "  be2 back in the pool {:?} after it recovered (rise 2 × 300 ms)",
        back.elapsed()
    );
    traffic.progressed(200, Duration::from_secs(10));
    summarize(
        &traffic.stop(),
        "while be2 failed and recovered (503s counted as failed)",
    );
    show_logs(&lab, &mut seen);
    xlb(&lab, 0, &["backends"]);

    step("a bad config is rejected whole by `xlb reload`; the running one stays");
    let good = std::fs::read(lab.nodes[0].config.path()).unwrap();
    std::fs::write(
        lab.nodes[0].config.path(),
        r#"{"services":[{"vip":"10.70.0.100","port":0,"protocol":"tcp","mode":"dsr","backends":[]}]}"#,
    )
    .unwrap();
    xlb(&lab, 0, &["reload"]);
    std::fs::write(lab.nodes[0].config.path(), good).unwrap();
    show_spread(&connect_many(&lab.client, 200));

    step("lb0's host fails (daemon killed, link down) under continuous traffic");
    let traffic = lab.traffic();
    traffic.progressed(50, Duration::from_secs(10));
    let failed_at = Instant::now();
    lab.nodes[0].set_link(false);
    lab.nodes[0].daemons[0].kill();
    wait(&lab, 1, "VRRP master", 1);
    println!(
        "  lb1 is master {:?} after lb0 failed (3 × {INTERVAL_MS} ms + skew = 360 ms)",
        failed_at.elapsed()
    );
    traffic.progressed(300, Duration::from_secs(10));

    step("lb0 comes back and takes over again (higher priority, preempt; it still holds the VIP, so it resumes at once)");
    lab.nodes[0].set_link(true);
    let restarted = Instant::now();
    lab.start_xlb(0);
    wait(&lab, 0, "VRRP master", 2);
    println!(
        "  lb0 master again {:?} after its restart",
        restarted.elapsed()
    );
    traffic.progressed(300, Duration::from_secs(10));
    summarize(&traffic.stop(), "across both failovers");
    show_logs(&lab, &mut seen);
    xlb(&lab, 1, &["vrrp"]);
    xlb(&lab, 0, &["stats"]);

    step("SIGTERM both: the master resigns (priority 0), both detach and remove their pins");
    for i in [0, 1] {
        let d = lab.nodes[i].daemons.len() - 1;
        let status = lab.nodes[i].daemons[d].terminate(Duration::from_secs(10));
        println!("  lb{i}: xlb exited: {status}");
    }
    show_logs(&lab, &mut seen);
    println!(
        "\n== done in {:?}; cleaning up the namespaces",
        started.elapsed()
    );
}

/// Runs `xlb ARGS --pin-dir <node's>` and shows its output.
fn xlb(lab: &VrrpLab, node: usize, args: &[&str]) {
    println!("  $ xlb {} (on lb{node})", args.join(" "));
    let out = Command::new(xlb_bin())
        .args(args)
        .arg("--pin-dir")
        .arg(lab.nodes[node].pins.path())
        .output()
        .expect("run xlb");
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
    {
        println!("    {line}");
    }
}

fn wait(lab: &VrrpLab, node: usize, what: &str, n: usize) {
    assert!(
        lab.nodes[node]
            .wait_log(&[what], n, Duration::from_secs(20))
            .is_some(),
        "lb{node}: no {what:?} in the log:\n{}",
        lab.nodes[node].log.read()
    );
}

/// Connects `n` times to the VIP from the client; returns connections per backend.
fn connect_many(client: &Netns, n: usize) -> BTreeMap<String, usize> {
    let started = Instant::now();
    let vip = SocketAddr::from((VIP, 80));
    let spread = client.run(|| {
        let mut spread = BTreeMap::new();
        for _ in 0..n {
            let id = http_get(vip).unwrap_or_else(|e| format!("failed ({e})"));
            *spread.entry(id).or_insert(0) += 1;
        }
        spread
    });
    println!("  {n} connections in {:?}", started.elapsed());
    spread
}

fn summarize(attempts: &[Attempt], when: &str) {
    let mut spread = BTreeMap::new();
    for (_, r) in attempts {
        let key = match r {
            Ok(id) => id.clone(),
            Err(_) => "failed".into(),
        };
        *spread.entry(key).or_insert(0) += 1;
    }
    println!("  {} connections {when}:", attempts.len());
    show_spread(&spread);
}

/// What the daemons logged since the last look (timestamps trimmed).
fn show_logs(lab: &VrrpLab, seen: &mut [usize; 2]) {
    for (i, node) in lab.nodes.iter().enumerate() {
        let text = node.log.read();
        let lines: Vec<&str> = text.lines().collect();
        for line in &lines[seen[i].min(lines.len())..] {
            let line = line.split_once("Z ").map_or(*line, |(_, rest)| rest);
            println!("  lb{i}| {line}");
        }
        seen[i] = lines.len();
    }
}

fn show_spread(spread: &BTreeMap<String, usize>) {
    let total: usize = spread.values().sum();
    for (backend, count) in spread {
        let bar = "#".repeat(count * 40 / total.max(1));
        println!("  {backend:<8} {count:>5}  {bar}");
    }
}

fn step(text: &str) {
    println!("\n== {text}");
}
