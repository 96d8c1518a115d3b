//! Chaos: storms the product must survive, each followed by the checks that nothing was
//! lost that the design promises to keep (docs/robustness.md):
//!
//! - reload storm: hundreds of reloads, valid and invalid, while clients connect;
//! - health flap storm: a backend flipping between 200 and 503 every few tens of ms;
//! - VRRP link storm: the link between two balancers cut and healed again and again;
//! - connection table filled past its capacity.
//!
//! After each: the daemons still run, the configuration is the last valid one, no
//! namespace or pin is left behind (the testbed cleans up and `sweep` checks), and no
//! connection failed where none may.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lb_common::{
    limits::MAX_CONNS, service::AF_INET, wire::IPPROTO_TCP, Backend, ForwardMode, Service, Stat,
    VipKey,
};
use lb_userspace::dataplane::aya::maps;
use testbed::{
    dataplane::{wait_until, xlb_bin, TestDataplane},
    lab::Lab,
    packet,
    vrrp_lab::VrrpLab,
};

fn backends_json(lab: &Lab) -> serde_json::Value {
    let o = std::process::Command::new(xlb_bin())
        .args(["backends", "--json", "--pin-dir"])
        .arg(lab.pins.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// 300 reloads in a few seconds (SIGHUP and `xlb reload`), a third of them invalid,
/// while a client connects continuously: no connection fails, the daemon survives, and
/// the configuration in force afterwards is exactly the last valid one.
#[test]
fn reload_storm_keeps_serving_and_ends_on_the_last_valid_config() {
    let mut lab = Lab::new("chreload");
    lab.write_config(&[1, 1, 1]);
    lab.start_peer();
    let daemon = lab.start_xlb(&[]);
    let traffic = lab.traffic();
    assert!(traffic.progressed(20, Duration::from_secs(20)));
    let started = Instant::now();
    let mut last_valid = [1, 1, 1];
    for i in 0..300u32 {
        if i % 3 == 2 {
            // Invalid: a weight above the maximum, or not JSON at all.
            if i % 2 == 0 {
                lab.write_config(&[1, 70_000, 1]);
            } else {
                std::fs::write(lab.config.path(), b"{\"services\": [").unwrap();
            }
        } else {
            last_valid = [1 + i % 3, 1 + (i / 3) % 2, if i % 5 == 0 { 0 } else { 2 }];
            lab.write_config(&last_valid);
        }
        if i % 2 == 0 {
            lab.reload(daemon);
        } else {
            // The control socket path: a rejected reload is an error reply, not a crash.
            let _ = std::process::Command::new(xlb_bin())
                .args(["reload", "--pin-dir"])
                .arg(lab.pins.path())
                .output()
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // The storm may end on an invalid file: settle on the last valid one explicitly.
    lab.write_config(&last_valid);
    let o = std::process::Command::new(xlb_bin())
        .args(["reload", "--pin-dir"])
        .arg(lab.pins.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let storm = started.elapsed();
    assert!(traffic.progressed(50, Duration::from_secs(20)));
    let attempts = traffic.stop();
    let failed: Vec<&String> = testbed::lab::failures(&attempts);
    assert!(
        lab.daemons[daemon].try_wait().is_none(),
        "xlb died in the storm:\n{}",
        lab.log.read()
    );
    let weights: Vec<u64> = backends_json(&lab)
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(
        weights,
        last_valid.map(u64::from),
        "not the last valid config"
    );
    let rejected = lab.log_lines(&["reload rejected"]).len();
    eprintln!(
        "chaos reload: 300 reloads in {storm:?} ({rejected} rejected lines logged), {} \
         connections, {} failed",
        attempts.len(),
        failed.len()
    );
    assert!(rejected > 0, "no invalid reload was rejected");
    assert!(failed.is_empty(), "{failed:?}");
}

/// One backend flips between healthy and failing every 20–150 ms for 10 s under fast
/// checks (rise 1, fall 1), so its state and the tables change constantly: the daemon
/// survives, and every failed request is that backend's own 503, never a connection
/// error or a request lost by the balancer.
#[test]
fn health_flap_storm_loses_nothing_but_the_flapping_backends_own_errors() {
    let mut lab = VrrpLab::new_http("chflap");
    lab.write_config_with(
        0,
        serde_json::json!({"priority": 150, "advert_int_ms": 100}),
        serde_json::json!({"check": {
            "type": "http", "interval_ms": 100, "timeout_ms": 80, "rise": 1, "fall": 1,
        }}),
    );
    lab.start_xlb(0);
    assert!(lab.nodes[0]
        .wait_log(&["VRRP master"], 1, Duration::from_secs(10))
        .is_some());
    let traffic = lab.traffic();
    assert!(traffic.progressed(20, Duration::from_secs(20)));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let until = Instant::now() + Duration::from_secs(10);
    let mut flips = 0;
    while Instant::now() < until {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let healthy = flips % 2 == 1;
        lab.http[1].set_response(if healthy { 200 } else { 503 }, "be2");
        flips += 1;
        std::thread::sleep(Duration::from_millis(20 + x % 130));
    }
    lab.http[1].set_response(200, "be2");
    assert!(traffic.progressed(50, Duration::from_secs(20)));
    let attempts = traffic.stop();
    let transitions = lab.nodes[0].log_lines(&["backend down"]).len();
    let errors: Vec<&String> = testbed::lab::failures(&attempts);
    let not_503: Vec<&&String> = errors.iter().filter(|e| !e.contains("503")).collect();
    eprintln!(
        "chaos flap: {flips} flips, {transitions} down transitions, {} requests, {} got be2's \
         503, {} other failures",
        attempts.len(),
        errors.len() - not_503.len(),
        not_503.len()
    );
    assert!(
        lab.nodes[0].daemons[0].try_wait().is_none(),
        "xlb died in the flap storm"
    );
    assert!(transitions >= 5, "the storm did not make be2 flap");
    assert!(
        not_503.is_empty(),
        "requests lost by the balancer: {not_503:?}"
    );
}

/// The link between two VRRP balancers is cut and healed 10 times: each time the
/// backup takes over while cut and steps back within about an interval once healed;
/// at the end exactly one master, both daemons alive.
#[test]
fn vrrp_link_storm_always_heals_to_one_master() {
    let mut lab = VrrpLab::new("chvrrp");
    for (i, priority) in [(0, 150), (1, 100)] {
        lab.write_config(
            i,
            serde_json::json!({"priority": priority, "advert_int_ms": 100}),
        );
    }
    lab.start_xlb(0);
    assert!(lab.nodes[0]
        .wait_log(&["VRRP master"], 1, Duration::from_secs(10))
        .is_some());
    lab.start_xlb(1);
    let mut heal_times = Vec::new();
    for round in 1..=10 {
        lab.switch
            .ip(&["link", "set", &lab.nodes[1].veth.a, "down"]);
        assert!(
            lab.nodes[1]
                .wait_log(&["VRRP master"], round, Duration::from_secs(5))
                .is_some(),
            "round {round}: the cut-off backup did not take over"
        );
        let healed = Instant::now();
        lab.switch.ip(&["link", "set", &lab.nodes[1].veth.a, "up"]);
        assert!(
            lab.nodes[1]
                .wait_log(&["VRRP backup"], round + 1, Duration::from_secs(5))
                .is_some(),
            "round {round}: split brain did not heal:\n{}",
            lab.nodes[1].log.read()
        );
        heal_times.push(healed.elapsed());
    }
    assert!(wait_until(Duration::from_secs(2), || {
        lab.nodes[0].vrrp()[0]["state"] == "master" && lab.nodes[1].vrrp()[0]["state"] == "backup"
    }));
    for node in &mut lab.nodes {
        assert!(node.daemons[0].try_wait().is_none(), "a daemon died");
    }
    assert_eq!(
        lab.nodes[0].log_lines(&["VRRP master"]).len(),
        1,
        "lb0 flapped"
    );
    heal_times.sort();
    eprintln!(
        "chaos vrrp: 10 cuts, healed in median {:?}, max {:?}",
        heal_times[5], heal_times[9]
    );
}

/// More distinct flows than the connection table holds (LRU): the oldest entries are
/// evicted, and an evicted flow's next packet goes where Maglev sends it, which with
/// an unchanged table is where it went before: no established flow moves.
#[test]
fn connection_table_past_capacity_evicts_without_moving_flows() {
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
    let mut dp = TestDataplane::load("chconns");
    let ebpf = dp.dp.ebpf_mut();
    for id in 1..=3u32 {
        let backend = Backend {
            addr: [u32::from_ne_bytes([10, 0, 1, id as u8]), 0, 0, 0],
            family: AF_INET,
            mac: [2, 0xbe, 0, 0, 0, id as u8],
            ..Default::default()
        };
        maps::set_backend(ebpf, id, &backend).unwrap();
    }
    let table: Vec<u32> = (0..251).map(|i| 1 + i % 3).collect();
    maps::swap_table(ebpf, 1, &table).unwrap();
    let key = VipKey {
        addr: [u32::from_ne_bytes(VIP.octets()), 0, 0, 0],
        port_be: 80u16.to_be(),
        proto: IPPROTO_TCP,
        family: AF_INET,
    };
    let svc = Service {
        id: 1,
        mode: ForwardMode::Dsr as u8,
        ..Default::default()
    };
    maps::set_service(ebpf, &key, &svc).unwrap();
    // Flows from distinct (client, port) pairs; 25% more than the table holds.
    let flows = MAX_CONNS as usize + MAX_CONNS as usize / 4;
    let flow = |i: usize| {
        let client = Ipv4Addr::from(0x0a80_0000u32 + (i / 50_000) as u32);
        (client, 10_000 + (i % 50_000) as u16)
    };
    let mut first_mac = None;
    let started = Instant::now();
    for i in 0..flows {
        let (client, port) = flow(i);
        let syn = packet::tcp4_frame(client, VIP, port, 80, packet::SYN);
        let out = dp.run(&syn);
        assert_eq!(out.action, 3, "flow {i}: not forwarded");
        if i == 0 {
            first_mac = Some(out.packet[..6].to_vec());
        }
    }
    let filled = started.elapsed();
    let before = dp.stats();
    // The very first flow is long evicted: its ACK misses the table, and still goes to
    // the same backend.
    let (client, port) = flow(0);
    let ack = packet::tcp4_frame(client, VIP, port, 80, packet::Flags::ACK);
    let out = dp.run(&ack);
    let after = dp.stats();
    assert_eq!(out.action, 3);
    assert_eq!(
        Some(out.packet[..6].to_vec()),
        first_mac,
        "an evicted flow moved"
    );
    assert_eq!(
        after.get(Stat::ConnMiss).packets - before.get(Stat::ConnMiss).packets,
        1,
        "the first flow should have been evicted"
    );
    // A recent flow is still in the table.
    let (client, port) = flow(flows - 1);
    let ack = packet::tcp4_frame(client, VIP, port, 80, packet::Flags::ACK);
    let before = dp.stats();
    assert_eq!(dp.run(&ack).action, 3);
    assert_eq!(
        dp.stats().get(Stat::ConnHit).packets - before.get(Stat::ConnHit).packets,
        1
    );
    eprintln!(
        "chaos conns: {flows} flows into a {MAX_CONNS}-entry table in {filled:?}; oldest \
         evicted, its next packet to the same backend; newest still tracked"
    );
}
