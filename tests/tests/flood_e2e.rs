//! Flood admission with the real daemon and real connections (issue 16 item 4): 10,000
//! long-lived TCP connections through the DSR lab, a third of them on a backend that is
//! then drained, survive 10 million spoofed SYNs with no reset and no move, while new
//! connections keep succeeding.
//!
//! The SYNs come from `lab_syn_flood` (tests/ebpf) run by BPF_PROG_TEST_RUN: each
//! iteration rewrites the frame into a new spoofed flow and tail-calls the program the
//! daemon attached, so its real tables see 10 million distinct SYNs (nothing is
//! transmitted). The connection table has 16,384 entries: before flood admission, that
//! many SYNs turned it over hundreds of times (tests/tests/flood.rs measures the moves).
//!
//! The held connections run in `xlb-hold` processes (both ends): one process may hold
//! only 20,000 descriptors here.

use std::{
    io::{BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::Stdio,
    time::Duration,
};

use lb_common::wire::XDP_TX;
use testbed::{
    bench::SynFlood,
    dataplane::wait_until,
    lab::{failures, Lab, Traffic, BACKENDS, VIP},
    packet,
};

const HELD: usize = 10_000;
const SPOOFED: u32 = 10_000_000;
const ENTRIES: u32 = 16_384;
/// The held connections' service (the lab's own on port 80 serves the new ones).
const HELD_PORT: u16 = 8080;

/// The lab's config with these weights, the same service again on [`HELD_PORT`], and a
/// connection table of [`ENTRIES`].
fn write_config(lab: &Lab, weights: &[u32]) {
    lab.write_config(weights);
    let path = lab.config.path();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut held = config["services"][0].clone();
    held["port"] = HELD_PORT.into();
    config["services"].as_array_mut().unwrap().push(held);
    config["conn_table"] = serde_json::json!({ "entries": ENTRIES });
    std::fs::write(path, serde_json::to_vec(&config).unwrap()).unwrap();
}

fn global(lab: &Lab, counter: &str) -> u64 {
    let stats = lab.view("stats");
    stats["global"][counter]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no {counter} in {stats}"))
}

fn next_json(out: &mut impl BufRead) -> serde_json::Value {
    let mut line = String::new();
    out.read_line(&mut line).expect("xlb-hold output");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("xlb-hold printed {line:?}: {e}"))
}

#[test]
fn held_connections_survive_ten_million_spoofed_syns() {
    let hold_bin = env!("CARGO_BIN_EXE_xlb-hold");
    let mut lab = Lab::new("flood");
    write_config(&lab, &[1, 1, 1]);
    let mut servers = Vec::new();
    for (ns, (name, addr)) in lab.backend_ns.iter().zip(BACKENDS) {
        let mut cmd = ns.command(hold_bin);
        cmd.args(["serve", name, &format!("0.0.0.0:{HELD_PORT}")]);
        servers.push(ns.spawn(cmd));
        let listening = || {
            lab.lb
                .run(|| TcpStream::connect(SocketAddr::from((addr, HELD_PORT))).is_ok())
        };
        assert!(
            wait_until(Duration::from_secs(10), listening),
            "{name} is not serving"
        );
    }
    lab.start_peer();
    let daemon = lab.start_xlb(&[]);

    let mut cmd = lab.client.command(hold_bin);
    cmd.args(["hold", &format!("{VIP}:{HELD_PORT}"), &HELD.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut client = lab.client.spawn(cmd);
    let (mut to_client, mut from_client) = {
        let mut child = client.child_mut();
        (
            child.stdin.take().expect("stdin"),
            BufReader::new(child.stdout.take().expect("stdout")),
        )
    };
    let greeted = next_json(&mut from_client)["greeted"].clone();
    let on_be1 = greeted["be1"].as_u64().unwrap_or(0);
    assert!(
        on_be1 > HELD as u64 / 5,
        "held connections per backend: {greeted}"
    );

    // be1 drained: its connections must stay, new ones go to be2 and be3.
    write_config(&lab, &[0, 1, 1]);
    lab.reload(daemon);
    assert!(
        lab.wait_log(&["reloaded"], 1, Duration::from_secs(20)),
        "the drain was not applied:\n{}",
        lab.log.read()
    );

    let misses_before = global(&lab, "conn_miss");
    let traffic = Traffic::start(&lab.client, lab.vip());
    let syn = packet::tcp4_frame(Ipv4Addr::new(172, 16, 0, 1), VIP, 1024, 80, packet::SYN);
    let flood = SynFlood::aimed_at(&lab.link_pin());
    // In slices, so that new connections are made while the flood runs.
    for _ in 0..10 {
        assert_eq!(
            flood.run(&syn, SPOOFED / 10),
            XDP_TX,
            "a spoofed SYN is forwarded"
        );
    }
    assert!(traffic.progressed(20, Duration::from_secs(20)));
    let attempts = traffic.stop();
    let misses = global(&lab, "conn_miss") - misses_before;
    assert!(
        misses >= u64::from(SPOOFED),
        "the balancer saw {misses} new flows, not the {SPOOFED} spoofed SYNs"
    );
    assert!(
        failures(&attempts).is_empty(),
        "new connections during the flood failed: {:?} of {}",
        failures(&attempts),
        attempts.len()
    );
    assert!(
        attempts.iter().all(|(_, r)| r.as_deref() != Ok("be1")),
        "a new connection went to the drained backend"
    );

    // Each held connection's data reaches the backend that greeted it (any other
    // backend answers with a reset) and closes cleanly.
    to_client.write_all(b"finish\n").unwrap();
    let broken = next_json(&mut from_client)["broken"].clone();
    assert_eq!(
        broken.as_array().map(Vec::len),
        Some(0),
        "held connections broke ({on_be1} of {HELD} on the drained be1): {broken:.2000}"
    );
    assert!(client
        .wait_timeout(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}
