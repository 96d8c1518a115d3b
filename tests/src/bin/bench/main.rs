//! `cargo xtask bench`: per-packet cost of the data plane through BPF_PROG_TEST_RUN,
//! next to two floors measured in the same run (a program returning XDP_PASS, and one
//! swapping MACs and returning XDP_TX). Prints a table, writes `target/bench/bench.json`.
//!
//! Honesty rules (../shared/BENCH-NOTES.md): `repeat` does not restore the packet, so
//! a scenario is timed with `repeat` only when its output re-enters the same path, and
//! the program's own counters must move by exactly `repeat` on that path (checked, the
//! run fails otherwise). Scenarios whose output does not re-enter (new flows, IPIP) are
//! timed as single-shot runs, and so are the floors again, so ratios compare like with
//! like. Scenarios are interleaved round-robin over several rounds; medians with min/max.

mod cps;
mod e2e;
mod failover;
mod health;
mod lru;
mod runtime;
mod scaling;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    programs::Xdp,
    TestRun as _, TestRunOptions, TestRunResult,
};
use lb_common::{
    limits::MAGLEV_INNER_FLAGS,
    programs,
    service::{flow_hash, AF_INET, AF_INET6},
    vrrp::VRRP_STATE_MASTER,
    wire::{IPPROTO_TCP, XDP_PASS, XDP_TX},
    Backend, Config, FlowKey, ForwardMode, Service, Stat, VipKey, VrrpKey, VrrpRouter, VrrpSeen,
};
use lb_userspace::{
    dataplane::aya::maps,
    vrrp::packet::{encode_frame, Advert},
};
use testbed::{
    bench::{self, BenchPrograms},
    dataplane::TestDataplane,
    packet::{self, be4, be6},
    test_run, verifier,
};

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 10;
/// The connection-tracking floor (`bench_conn`).
const FLOOR_CONN: &str = "floor: conn-table lookup + MAC swap + XDP_TX";
/// The per-packet next-hop floor (`bench_fib`, run inside `bench::fib_namespace`).
const FLOOR_FIB: &str = "floor: bpf_fib_lookup + MAC rewrite + XDP_TX";
const SS_FIB: &str = "single-shot floor: bpf_fib_lookup + MAC rewrite + XDP_TX";
/// The MAC `bench::fib_namespace` holds for the looked-up destination.
const FIB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
/// Single-shot runs per round (each a separate syscall; kernel-measured duration).
const SHOTS: u32 = 20_000;

const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const ENCAP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Ports of the services on each VIP: DSR, IPIP, GUE.
const PORT_DSR: u16 = 80;
const PORT_IPIP: u16 = 81;
const PORT_GUE: u16 = 82;
/// VRRP: our router on `lo` (where a context-less BPF_PROG_TEST_RUN frame arrives), as
/// in tests/tests/vrrp_xdp.rs.
const LO: u32 = 1;
const VRID: u8 = 7;
const OUR_PRIORITY: u8 = 150;
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x33];
const PEER4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

/// How a scenario is timed.
#[derive(Clone, Copy, PartialEq)]
enum Method {
    /// `repeat` iterations; the output re-enters the same path (proved by `proof`).
    Repeat,
    /// Separate single runs; `vary` makes each packet new where needed.
    SingleShot,
}

struct Scenario {
    name: &'static str,
    program: &'static str,
    method: Method,
    /// Counter that must move by exactly the number of iterations (path proof).
    proof: Option<Stat>,
    packet: Vec<u8>,
    /// What to do before each single shot (outside the timed part).
    prep: Prep,
    samples: Vec<f64>,
}

/// Per-shot preparation of a single-shot scenario.
#[derive(Clone, Copy, PartialEq)]
enum Prep {
    None,
    /// A new IPv4 client address per shot (a new flow every time).
    NewClient4,
    /// A new IPv6 client address per shot.
    NewClient6,
    /// Clear the router's last-answer time, so the 10 ms answer rate limit never
    /// applies (the entry itself stays, as in steady state).
    ResetVrrpAnswer,
}

fn main() {
    use Method::{Repeat, SingleShot};
    testbed::require_root();
    // `xlb-bench health|scaling|e2e|cps|failover|lru|packets|control`: one part only (each writes its own JSON);
    // no argument: per-packet, verifier, control plane and health checks.
    match std::env::args().nth(1).as_deref() {
        Some("health") => {
            let health = health::run(&[1_000, 10_000]);
            let detection = health::blackhole(10_000);
            write_json(
                &serde_json::json!({ "health_checks": health, "failure_detection": detection }),
                "health.json",
            );
            return;
        }
        Some("scaling") => {
            write_json(&scaling::run(), "scaling.json");
            return;
        }
        Some("e2e") => {
            write_json(&e2e::run(), "e2e.json");
            return;
        }
        Some("cps") => {
            write_json(&cps::run(), "cps.json");
            return;
        }
        Some("failover") => {
            write_json(&failover::run(), "failover.json");
            return;
        }
        Some("lru") => {
            write_json(&lru::run(), "lru.json");
            return;
        }
        Some("packets" | "control") | None => {}
        Some(other) => panic!(
            "unknown bench part {other:?}: health, scaling, e2e, cps, failover, lru, packets, control"
        ),
    }
    let only_packets = std::env::args().nth(1).as_deref() == Some("packets");
    let mut dp = TestDataplane::load("bench");
    let floors = BenchPrograms::load(&dp.dp);
    configure(&mut dp);
    if std::env::args().nth(1).as_deref() == Some("control") {
        let control = control_plane(&mut dp);
        write_json(
            &serde_json::json!({ "control_plane": control }),
            "control.json",
        );
        return;
    }

    let ack = |port| packet::tcp4_frame(CLIENT4, VIP4, 40000, port, packet::Flags::ACK);
    let ack6 = |port| packet::tcp6_frame(client6(), vip6(), 40000, port, packet::Flags::ACK);
    let syn = packet::tcp4_frame(CLIENT4, VIP4, 40000, PORT_DSR, packet::SYN);
    let syn6 = packet::tcp6_frame(client6(), vip6(), 40000, PORT_DSR, packet::SYN);
    let (ack_dsr, ack_ipip, ack_gue) = (ack(PORT_DSR), ack(PORT_IPIP), ack(PORT_GUE));
    let (ack6_dsr, ack6_ipip, ack6_gue) = (ack6(PORT_DSR), ack6(PORT_IPIP), ack6(PORT_GUE));
    let non_vip = packet::udp4_frame(CLIENT4, Ipv4Addr::new(10, 0, 0, 5), 40000, 53, &[0u8; 32]);
    let mut malformed = ack_dsr.clone();
    packet::tweak_ipv4(&mut malformed, |ip| ip.set_header_length(4));
    // VRRP: a peer above us (passed and recorded) and one below us (answered with our
    // advert: the output is a different packet, so single shots only).
    let vrrp_higher = peer_advert4(200);
    let vrrp_lower = peer_advert4(100);
    // Establish the flows the "established" scenarios hit, and check each takes the
    // path its name says before anything is timed.
    // A flow's second packet confirms it into the connection table.
    for p in [
        &ack_dsr, &ack_ipip, &ack_gue, &ack6_dsr, &ack6_ipip, &ack6_gue,
    ] {
        for _ in 0..2 {
            assert_eq!(dp.run(p).action, XDP_TX, "warm-up verdict");
        }
    }
    for (p, action) in [(&vrrp_higher, XDP_PASS), (&vrrp_lower, XDP_TX)] {
        assert_eq!(dp.run(p).action, action, "warm-up verdict");
    }

    let scenario = |name, program, method, proof, packet: &Vec<u8>, prep| Scenario {
        name,
        program,
        method,
        proof,
        packet: packet.clone(),
        prep,
        samples: Vec::new(),
    };
    let (new4, new6, vrrp_reset) = (Prep::NewClient4, Prep::NewClient6, Prep::ResetVrrpAnswer);
    let no = Prep::None;
    let b = programs::BALANCER;
    let mut scenarios = vec![
        scenario("floor: XDP_PASS", bench::PASS, Repeat, None, &non_vip, no),
        scenario(
            "floor: MAC swap + XDP_TX",
            bench::TX,
            Repeat,
            None,
            &ack_dsr,
            no,
        ),
        // What any balancer with a per-flow BPF hash table pays at least: the same
        // `XLB_CONNS` lookup of the established DSR flow, then the MAC swap (its last
        // verdict is checked: XDP_TX only on a hit).
        scenario(FLOOR_CONN, bench::CONN, Repeat, None, &ack_dsr, no),
        // What resolving the next hop per packet costs (Cilium's `bpf_fib_lookup`), as
        // against the learned MAC xlb reads from the backend record it loads anyway:
        // the lookup of the frame's destination, its MACs written, XDP_TX.
        scenario(FLOOR_FIB, bench::FIB, Repeat, None, &ack_dsr, no),
        scenario("non-VIP pass", b, Repeat, Some(Stat::NotVip), &non_vip, no),
        scenario(
            "VIP TCP established, DSR (v4)",
            b,
            Repeat,
            Some(Stat::ConnHit),
            &ack_dsr,
            no,
        ),
        scenario(
            "VIP TCP established, DSR (v6)",
            b,
            Repeat,
            Some(Stat::ConnHit),
            &ack6_dsr,
            no,
        ),
        scenario(
            "malformed (IHL 4)",
            b,
            Repeat,
            Some(Stat::Malformed),
            &malformed,
            no,
        ),
        scenario(
            "VRRP advert, higher priority (passed, recorded)",
            b,
            Repeat,
            Some(Stat::VrrpAdvert),
            &vrrp_higher,
            no,
        ),
        scenario(SS_PASS, bench::PASS, SingleShot, None, &non_vip, no),
        scenario(SS_TX, bench::TX, SingleShot, None, &ack_dsr, no),
        scenario(SS_FIB, bench::FIB, SingleShot, None, &ack_dsr, no),
        scenario(
            "single-shot VIP established, DSR (v4)",
            b,
            SingleShot,
            Some(Stat::ConnHit),
            &ack_dsr,
            no,
        ),
        scenario(
            "single-shot VIP established, DSR (v6)",
            b,
            SingleShot,
            Some(Stat::ConnHit),
            &ack6_dsr,
            no,
        ),
        scenario(
            "single-shot VIP established, IPIP encap (v4)",
            b,
            SingleShot,
            Some(Stat::ConnHit),
            &ack_ipip,
            no,
        ),
        scenario(
            "single-shot VIP established, IPIP encap (v6)",
            b,
            SingleShot,
            Some(Stat::ConnHit),
            &ack6_ipip,
            no,
        ),
        scenario(
            "single-shot VIP established, GUE encap (v4)",
            b,
            SingleShot,
            Some(Stat::ConnHit),
            &ack_gue,
            no,
        ),
        scenario(
            "single-shot VIP established, GUE encap (v6)",
            b,
            SingleShot,
            Some(Stat::ConnHit),
            &ack6_gue,
            no,
        ),
        scenario(
            "single-shot VIP new flow v4 (SYN, Maglev, conn insert)",
            b,
            SingleShot,
            Some(Stat::ConnMiss),
            &syn,
            new4,
        ),
        scenario(
            "single-shot VIP new flow v6 (SYN, Maglev, conn insert)",
            b,
            SingleShot,
            Some(Stat::ConnMiss),
            &syn6,
            new6,
        ),
        scenario(
            "single-shot malformed (IHL 4)",
            b,
            SingleShot,
            Some(Stat::Malformed),
            &malformed,
            no,
        ),
        scenario(
            "single-shot VRRP advert, higher priority (passed)",
            b,
            SingleShot,
            Some(Stat::VrrpAdvert),
            &vrrp_higher,
            no,
        ),
        scenario(
            "single-shot VRRP advert, lower priority (answered, TX)",
            b,
            SingleShot,
            Some(Stat::VrrpAnswered),
            &vrrp_lower,
            vrrp_reset,
        ),
    ];

    // XLB_BENCH_ONLY=substring[,substring]: time only the matching scenarios (and the
    // floors), so `perf record` of a run profiles one path rather than the mix.
    if let Ok(only) = std::env::var("XLB_BENCH_ONLY") {
        scenarios.retain(|s| {
            s.name.contains("floor") || only.split(',').any(|part| s.name.contains(part))
        });
    }

    let fib_ns = bench::fib_namespace(VIP4, FIB_MAC);
    let started = Instant::now();
    // New flows get fresh client addresses from 11.0.0.0/8 (and fd0b::/96), disjoint
    // from every flow established above.
    let mut next_client: u32 = 0x0b00_0000;
    let vrrp_key = VrrpKey::new(LO, VRID, AF_INET);
    for round in 0..ROUNDS {
        for s in scenarios.iter_mut() {
            let before = dp.stats();
            let (ns, iterations) = match s.method {
                // Timed from inside its namespace, where the lookup finds a neighbour
                // (checked on every run: XDP_DROP otherwise).
                Repeat if s.program == bench::FIB => {
                    let (prog, packet) = (floors.xdp(bench::FIB), &s.packet);
                    let out = fib_ns.run(|| timed(prog, packet, REPEAT));
                    assert_eq!(out.return_value, XDP_TX, "{}: the lookup failed", s.name);
                    (out.duration.as_nanos() as f64, u64::from(REPEAT))
                }
                SingleShot if s.program == bench::FIB => {
                    let (prog, packet) = (floors.xdp(bench::FIB), &s.packet);
                    let total: u64 = fib_ns.run(|| {
                        (0..SHOTS)
                            .map(|_| {
                                let out = timed(prog, packet, 1);
                                assert_eq!(out.return_value, XDP_TX, "the lookup failed");
                                out.duration.as_nanos() as u64
                            })
                            .sum()
                    });
                    (total as f64 / f64::from(SHOTS), u64::from(SHOTS))
                }
                Repeat => {
                    let prog = program(&mut dp, &floors, s.program);
                    let out = timed(prog, &s.packet, REPEAT);
                    if s.name == FLOOR_CONN {
                        assert_eq!(out.return_value, XDP_TX, "{}: the lookup missed", s.name);
                    }
                    (out.duration.as_nanos() as f64, u64::from(REPEAT))
                }
                SingleShot => {
                    let mut total = 0u64;
                    let mut packet = s.packet.clone();
                    for _ in 0..SHOTS {
                        match s.prep {
                            Prep::None => {}
                            // IPv4 source address (the program does not verify the IP
                            // checksum, so it is left stale).
                            Prep::NewClient4 => {
                                next_client += 1;
                                packet[26..30].copy_from_slice(&next_client.to_be_bytes());
                            }
                            // Last word of the IPv6 source address.
                            Prep::NewClient6 => {
                                next_client += 1;
                                packet[34..38].copy_from_slice(&next_client.to_be_bytes());
                            }
                            Prep::ResetVrrpAnswer => reset_vrrp_answer(&mut dp, &vrrp_key),
                        }
                        let out = timed(program(&mut dp, &floors, s.program), &packet, 1);
                        total += out.duration.as_nanos() as u64;
                    }
                    (total as f64 / f64::from(SHOTS), u64::from(SHOTS))
                }
            };
            if let Some(stat) = s.proof {
                let moved = dp.stats().get(stat).packets - before.get(stat).packets;
                assert_eq!(
                    moved, iterations,
                    "{} (round {round}): path proof failed: counter {} moved {moved}, expected {iterations}",
                    s.name,
                    stat.name()
                );
            }
            s.samples.push(ns);
        }
    }

    let med = |s: &Scenario| median(&s.samples);
    let floor = |name: &str| med(scenarios.iter().find(|s| s.name == name).unwrap());
    let (floor_pass, floor_tx) = (floor("floor: XDP_PASS"), floor("floor: MAC swap + XDP_TX"));
    let (ss_pass, ss_tx) = (floor(SS_PASS), floor(SS_TX));
    println!(
        "\nper-packet cost, BPF_PROG_TEST_RUN, {ROUNDS} interleaved rounds (repeat {REPEAT} / {SHOTS} single shots)\n"
    );
    println!(
        "{:<54} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "scenario", "median", "min", "max", "xPASS", "xTX"
    );
    let mut json = Vec::new();
    for s in &scenarios {
        let (p, t) = if s.method == Repeat {
            (floor_pass, floor_tx)
        } else {
            (ss_pass, ss_tx)
        };
        let min = s.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s.samples.iter().copied().fold(0.0, f64::max);
        println!(
            "{:<54} {:>7.1}ns {:>7.1}ns {:>7.1}ns {:>8.2} {:>8.2}",
            s.name,
            med(s),
            min,
            max,
            med(s) / p,
            med(s) / t
        );
        json.push(serde_json::json!({
            "scenario": s.name, "program": s.program,
            "method": if s.method == Repeat { "repeat" } else { "single-shot" },
            "path_proof": s.proof.map(Stat::name),
            "median_ns": med(s), "min_ns": min, "max_ns": max,
            "ratio_to_pass_floor": med(s) / p, "ratio_to_tx_floor": med(s) / t,
        }));
    }

    let run_time = runtime::run(
        &mut dp,
        &floors,
        &runtime::Frames {
            non_vip: non_vip.clone(),
            ack_dsr: ack_dsr.clone(),
            ack_ipip: ack_ipip.clone(),
            syn_ipip: packet::tcp4_frame(CLIENT4, VIP4, 40000, PORT_IPIP, packet::SYN),
        },
    );

    println!(
        "\nverifier: instructions processed at load (bpf_prog_info.verified_insns), and the \
         states of a BPF_LOG_STATS re-load (same count, checked)"
    );
    let production = [
        programs::BALANCER,
        programs::BALANCER_VLAN,
        programs::BALANCER_QINQ,
        programs::DECAP,
        programs::PASS,
    ];
    // Fails (and so aborts the bench) unless each re-load processed exactly the
    // instructions of the program aya loaded.
    let reverify = |ebpf, object, names: &[&str]| {
        verifier::verifier_stats(ebpf, object, names)
            .unwrap_or_else(|e| panic!("verifier statistics: {e}"))
    };
    let mut stats = reverify(
        dp.dp.ebpf(),
        lb_userspace::dataplane::aya::EBPF_OBJECT,
        &production,
    );
    stats.extend(reverify(floors.ebpf(), bench::OBJECT, &bench::ALL));
    let names = production.into_iter().chain(bench::ALL);
    println!(
        "  {:<12} {:>8} {:>7} {:>12} {:>11} {:>10} {:>12}",
        "program", "insns", "xlated", "total states", "peak states", "max/insn", "stack depth"
    );
    let mut verifier = Vec::new();
    for (name, s) in names.zip(stats) {
        let size = program(&mut dp, &floors, name)
            .info()
            .unwrap()
            .size_translated();
        let stack = s
            .stack_depth
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join("+");
        println!(
            "  {name:<12} {:>8} {:>7} {:>12} {:>11} {:>10} {:>12}",
            s.processed_insns,
            fmt_opt(size),
            s.total_states,
            s.peak_states,
            s.max_states_per_insn,
            stack
        );
        verifier.push(serde_json::json!({
            "program": name, "verified_insns": s.processed_insns, "xlated_bytes": size,
            "total_states": s.total_states, "peak_states": s.peak_states,
            "max_states_per_insn": s.max_states_per_insn, "stack_depth": s.stack_depth,
        }));
    }
    if only_packets {
        write_json(
            &serde_json::json!({"per_packet": json, "run_time": run_time, "verifier": verifier}),
            "packets.json",
        );
        return;
    }
    let control = control_plane(&mut dp);
    let health = health::run(&[1_000, 10_000]);
    let detection = health::blackhole(10_000);
    println!("\n(total bench time {:?})", started.elapsed());

    let out = serde_json::json!({
        "per_packet": json, "run_time": run_time, "verifier": verifier, "control_plane": control,
        "health_checks": health, "failure_detection": detection,
    });
    write_json(&out, "bench.json");
}

/// The program a scenario times: a floor of the benchmark object, or the data plane's.
fn program<'a>(
    dp: &'a mut TestDataplane,
    floors: &'a BenchPrograms,
    name: &'static str,
) -> &'a Xdp {
    if bench::ALL.contains(&name) {
        floors.xdp(name)
    } else {
        dp.dp.xdp(name).unwrap()
    }
}

/// `repeat` runs of `prog` on `frame` (BPF_PROG_TEST_RUN, aya's wrapper): the last
/// verdict and the kernel's mean time per run.
fn timed(prog: &Xdp, frame: &[u8], repeat: u32) -> TestRunResult {
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..TestRunOptions::new()
    })
    .expect("test run")
}

const SS_PASS: &str = "single-shot floor: XDP_PASS";
const SS_TX: &str = "single-shot floor: MAC swap + XDP_TX";

fn client6() -> Ipv6Addr {
    "fd00::1".parse().unwrap()
}

fn vip6() -> Ipv6Addr {
    "fd00::100".parse().unwrap()
}

/// A peer's VRRPv3 advert for our VRID (one virtual address).
fn peer_advert4(priority: u8) -> Vec<u8> {
    let advert = Advert::v3(VRID, priority, 100, vec![VIP4.into()]);
    encode_frame(Some(PEER_MAC), PEER4.into(), &advert).unwrap()
}

/// Our VRRPv3 IPv4 router on `lo`, master at priority 150 (as in tests/tests/vrrp_xdp.rs).
fn configure_vrrp(dp: &mut TestDataplane) {
    let advert = Advert::v3(VRID, OUR_PRIORITY, 100, vec![VIP4.into()]);
    let frame = encode_frame(None, IpAddr::V4(ENCAP4), &advert).unwrap();
    let mut router = VrrpRouter {
        state: VRRP_STATE_MASTER,
        priority: OUR_PRIORITY,
        version: 3,
        adver_int_cs: 100,
        frame_len: frame.len() as u16,
        lease_until_ns: u64::MAX,
        addr: be4(ENCAP4),
        ..Default::default()
    };
    router.frame[..frame.len()].copy_from_slice(&frame);
    maps::set_vrrp_router(dp.dp.ebpf_mut(), &VrrpKey::new(LO, VRID, AF_INET), &router).unwrap();
}

/// Sets the router's last-answer time to 0 (untimed, before a single shot).
fn reset_vrrp_answer(dp: &mut TestDataplane, key: &VrrpKey) {
    let mut seen: BpfHashMap<&mut MapData, VrrpKey, VrrpSeen> =
        BpfHashMap::try_from(dp.dp.ebpf_mut().map_mut("XLB_VRRP_SEEN").unwrap()).unwrap();
    let mut s = seen.get(key, 0).expect("the router has seen an advert");
    s.answered_ns = 0;
    seen.insert(key, s, 0).unwrap();
}

fn write_json(out: &serde_json::Value, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(out).unwrap()).unwrap();
    println!("wrote {}", dir.join(name).display());
}

/// Median, min and max of `samples` (sorted in place), in the unit they are in.
fn spread(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
    )
}

/// Service the swap prober's flow belongs to (VIP4, port [`PORT_SWAP`], DSR).
const SWAP_SERVICE: u32 = 10;
const PORT_SWAP: u16 = 90;

/// Maglev build, table fill, and the swap as packets see it (M = 65537).
fn control_plane(dp: &mut TestDataplane) -> serde_json::Value {
    use lb_userspace::balancer::maglev::{self, MaglevBackend};
    const RUNS: usize = 11;
    println!(
        "\ncontrol plane, M = {}, {RUNS} runs: median (min / max)",
        maglev::DEFAULT_TABLE_SIZE
    );
    let mut out = Vec::new();
    let mut stat = |name: &str, samples: &mut Vec<f64>| {
        let (med, min, max) = spread(samples);
        println!("  {name:<66} {med:>9.3} ms ({min:.3} / {max:.3})");
        out.push(serde_json::json!({"what": name, "median_ms": med, "min_ms": min, "max_ms": max}));
    };
    let weighted = |ids: std::ops::RangeInclusive<u32>| -> Vec<MaglevBackend> {
        ids.map(|id| MaglevBackend {
            id,
            weight: 1 + id % 4,
            key: maglev::backend_key(
                IpAddr::from([10, (id >> 16) as u8, (id >> 8) as u8, id as u8]),
                0,
            ),
        })
        .collect()
    };
    let mut table = Vec::new();
    for n in [10u32, 100, 1_000, 10_000] {
        let backends = weighted(1..=n);
        let mut samples = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            table = maglev::build(&backends, maglev::DEFAULT_TABLE_SIZE).unwrap();
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        stat(
            &format!("Maglev build, {n} weighted backends"),
            &mut samples,
        );
    }

    // Filling a new inner table, three ways, on the 10,000-backend table (ids are only
    // stored). Only the mmap fill is what xlb does now; the others are the method
    // before it and the fallback for a pinned template without BPF_F_MMAPABLE.
    let (mut mmap, mut per_slot, mut batch) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        drop(maps::build_table(&table).unwrap());
        mmap.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        drop(fill_per_slot(&table));
        per_slot.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        drop(maps::build_legacy_table(&table).unwrap());
        batch.push(t.elapsed().as_secs_f64() * 1e3);
    }
    stat("fill a new inner table: mmap + copy (xlb now)", &mut mmap);
    stat(
        "fill a new inner table: one update syscall per slot (before)",
        &mut per_slot,
    );
    stat(
        "fill a new inner table: BPF_MAP_UPDATE_BATCH (legacy pins)",
        &mut batch,
    );

    // The swap as a packet sees it: a health transition of a 3-backend service (backend
    // 3 fails, later returns), while a prober on the other CPU keeps running a SYN of
    // one flow through the real program. A SYN always takes the current Maglev choice,
    // and the flow is one whose backend differs between the two tables.
    let sets = [weighted(1..=3), weighted(1..=2)];
    let tables = sets
        .each_ref()
        .map(|b| maglev::build(b, maglev::DEFAULT_TABLE_SIZE).unwrap());
    let m = maglev::DEFAULT_TABLE_SIZE;
    let flow_of = |sport: u16| FlowKey {
        src: be4(CLIENT4),
        dst: be4(VIP4),
        sport_be: sport.to_be(),
        dport_be: PORT_SWAP.to_be(),
        proto: IPPROTO_TCP,
        family: AF_INET,
        vlan: 0,
    };
    let pick = |t: &[u32], sport: u16| t[(flow_hash(&flow_of(sport), false) % m) as usize];
    let sport = (40000u16..)
        .find(|&p| pick(&tables[0], p) != pick(&tables[1], p))
        .unwrap();
    let syn = packet::tcp4_frame(CLIENT4, VIP4, sport, PORT_SWAP, packet::SYN);
    let macs = tables.each_ref().map(|t| backend_mac(pick(t, sport)));
    {
        let ebpf = dp.dp.ebpf_mut();
        maps::swap_table(ebpf, SWAP_SERVICE, &tables[0]).unwrap();
        let key = VipKey {
            addr: be4(VIP4),
            port_be: PORT_SWAP.to_be(),
            proto: IPPROTO_TCP,
            family: AF_INET,
        };
        let svc = Service {
            id: SWAP_SERVICE,
            mode: ForwardMode::Dsr as u8,
            ..Default::default()
        };
        maps::set_service(ebpf, &key, &svc).unwrap();
    }
    // The prober's own handle: `swap` borrows the data plane mutably meanwhile.
    let prog = test_run::handle(dp.dp.xdp(programs::BALANCER).unwrap(), programs::BALANCER)
        .expect("a handle on the balancer");
    let prober_cpu = other_cpu();
    let mut r = SwapRounds::default();
    for round in 0..RUNS {
        let (from, to) = (round % 2, 1 - round % 2);
        let o = probe_swap(dp, &prog, prober_cpu, &syn, macs[from], macs[to], |ebpf| {
            let t0 = Instant::now();
            let table = maglev::build(&sets[to], m).unwrap();
            let t1 = Instant::now();
            let inner = maps::build_table(&table).unwrap();
            let t2 = Instant::now();
            maps::install_table(ebpf, SWAP_SERVICE, &inner).unwrap();
            [t0, t1, t2, Instant::now()]
        });
        r.push(&o);
    }
    println!(
        "  swap as packets see it: health transition 3 -> 2 -> 3 backends, prober SYNs on CPU {}; {} probes per round, a probe every {:.2} us",
        prober_cpu.map_or_else(|| "any".into(), |c| c.to_string()),
        median(&r.probes),
        median(&r.probe_us),
    );
    stat(
        "Maglev build, 3 backends (the transition's table)",
        &mut r.build,
    );
    stat("fill: the new inner table via mmap", &mut r.fill);
    stat(
        "outer-map update: call -> return (its RCU grace-period wait)",
        &mut r.syscall,
    );
    stat(
        "outer-map update call -> prober sees the new backend",
        &mut r.update_to_live,
    );
    stat(
        "SWAP LATENCY: fill start -> prober sees the new backend",
        &mut r.fill_to_live,
    );
    stat(
        "  (its lower bound: fill start -> last probe seeing the old one)",
        &mut r.fill_to_last_old,
    );
    stat(
        "fill + outer-map update, until the update returns",
        &mut r.fill_to_return,
    );
    stat(
        "health transition: Maglev build + fill -> prober sees it",
        &mut r.build_to_live,
    );
    println!(
        "  new table live before the update returned: {} of {RUNS} rounds; probes seeing the old table after the new one: {}",
        r.live_before_return, r.flapped
    );
    assert_eq!(r.flapped, 0, "a probe saw the old table after the new one");

    // A reload changing every one of 100 services (3 backends, M = 65537 each): the
    // daemon's `Balancer::apply` makes the tables live in batches (one RCU grace
    // period per batch), against one swap per service (one grace period each).
    use lb_userspace::{
        balancer::Balancer,
        config::{BackendSpec, MacAddr, Mode, Protocol, ServiceSpec},
    };
    const SERVICES: u8 = 100;
    let specs = |weight: u32| -> Vec<ServiceSpec> {
        (0..SERVICES)
            .map(|i| {
                let backends = (1..=3u8)
                    .map(|b| {
                        let addr = IpAddr::from([10, 8, 0, b]);
                        BackendSpec::new(addr, MacAddr([2, 0, 0, 0, 0, b]), weight + u32::from(b))
                    })
                    .collect();
                ServiceSpec::new(
                    IpAddr::from([10, 9, 0, i]),
                    Some(80),
                    Protocol::Tcp,
                    Mode::Dsr,
                    backends,
                )
            })
            .collect()
    };
    let mut fresh = TestDataplane::load("bench-reload");
    let mut balancer = Balancer::default();
    let (mut batched, mut one_by_one) = (Vec::new(), Vec::new());
    for run in 0..3u32 {
        let t = Instant::now();
        balancer.apply(&mut fresh.dp, &specs(run + 1)).unwrap();
        batched.push(t.elapsed().as_secs_f64() * 1e3);
        let tables: Vec<(u32, Vec<u32>)> = (1..=u32::from(SERVICES))
            .map(|id| (id, vec![1 + id % 3; maglev::DEFAULT_TABLE_SIZE as usize]))
            .collect();
        let t = Instant::now();
        for (id, table) in &tables {
            maps::swap_table(fresh.dp.ebpf_mut(), *id, table).unwrap();
        }
        one_by_one.push(t.elapsed().as_secs_f64() * 1e3);
    }
    stat(
        "reload of 100 changed services: Balancer::apply (batched tables)",
        &mut batched,
    );
    stat(
        "  the same 100 tables swapped one by one (one RCU wait each)",
        &mut one_by_one,
    );
    serde_json::Value::Array(out)
}

/// The slot-by-slot fill xlb used before mmapable tables (for comparison only).
fn fill_per_slot(table: &[u32]) -> aya::maps::Array<MapData, u32> {
    let m = table.len() as u32;
    let mut inner = aya::maps::Array::create(m + 1, MAGLEV_INNER_FLAGS).unwrap();
    inner.set(0, m, 0).unwrap();
    for (slot, id) in (1u32..).zip(table) {
        inner.set(slot, id, 0).unwrap();
    }
    inner
}

/// The configured DSR backends' MACs (see [`configure`]).
fn backend_mac(id: u32) -> [u8; 6] {
    [2, 0, 0, 0, 1, id as u8]
}

/// A CPU other than the one this thread runs on (the bench is pinned to one).
fn other_cpu() -> Option<usize> {
    use nix::{sched::sched_getcpu, unistd::sysconf, unistd::SysconfVar};
    let cpus = sysconf(SysconfVar::_NPROCESSORS_ONLN).ok()??;
    let here = sched_getcpu().ok()?;
    (0..cpus as usize).find(|&c| c != here)
}

/// One round of [`probe_swap`]: timestamps and what the prober saw.
struct SwapObservation {
    /// [build start, fill start, outer update call, outer update returned].
    marks: [Instant; 4],
    /// (start, end) of every probe, and whether it reached the new backend.
    probes: Vec<(Instant, Instant, bool)>,
}

/// Runs `swap` while a prober thread (pinned to `cpu`) keeps running `syn` through
/// `prog` and records which backend each run chose; returns once the prober has seen
/// the new backend for a while.
fn probe_swap(
    dp: &mut TestDataplane,
    prog: &Xdp,
    cpu: Option<usize>,
    syn: &[u8],
    old_mac: [u8; 6],
    new_mac: [u8; 6],
    swap: impl FnOnce(&mut aya::Ebpf) -> [Instant; 4],
) -> SwapObservation {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    let (stop, runs, seen_new) = (
        AtomicBool::new(false),
        AtomicUsize::new(0),
        AtomicBool::new(false),
    );
    std::thread::scope(|s| {
        let prober = s.spawn(|| {
            if let Some(cpu) = cpu {
                let mut set = nix::sched::CpuSet::new();
                set.set(cpu).unwrap();
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
            }
            let mut probes = Vec::with_capacity(1 << 16);
            while !stop.load(Relaxed) {
                let start = Instant::now();
                let out = test_run::run(prog, syn).expect("test run");
                let end = Instant::now();
                let mac: [u8; 6] = out.packet[..6].try_into().unwrap();
                assert!(
                    out.action == XDP_TX && (mac == old_mac || mac == new_mac),
                    "probe: verdict {} to {mac:02x?}",
                    out.action
                );
                probes.push((start, end, mac == new_mac));
                if mac == new_mac {
                    seen_new.store(true, Relaxed);
                }
                runs.fetch_add(1, Relaxed);
            }
            probes
        });
        // Steady state first: the prober has run a while on the old table.
        while runs.load(Relaxed) < 200 {
            std::hint::spin_loop();
        }
        let marks = swap(dp.dp.ebpf_mut());
        let deadline = Instant::now() + std::time::Duration::from_secs(1);
        while !seen_new.load(Relaxed) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        // A few more probes after the first new one, to catch any flap back.
        let after = runs.load(Relaxed) + 200;
        while runs.load(Relaxed) < after && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        stop.store(true, Relaxed);
        SwapObservation {
            marks,
            probes: prober.join().unwrap(),
        }
    })
}

/// Per-round figures of the probed swap, in ms (probe counts and spacing aside).
#[derive(Default)]
struct SwapRounds {
    build: Vec<f64>,
    fill: Vec<f64>,
    syscall: Vec<f64>,
    update_to_live: Vec<f64>,
    fill_to_live: Vec<f64>,
    fill_to_last_old: Vec<f64>,
    fill_to_return: Vec<f64>,
    build_to_live: Vec<f64>,
    probes: Vec<f64>,
    probe_us: Vec<f64>,
    live_before_return: usize,
    flapped: usize,
}

impl SwapRounds {
    fn push(&mut self, o: &SwapObservation) {
        let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
        let [build, fill, call, ret] = o.marks;
        let first_new = o
            .probes
            .iter()
            .position(|p| p.2)
            .expect("the prober never saw the new table (1 s)");
        let last_old = o.probes[..first_new]
            .last()
            .expect("probes before the swap");
        // The table went live between the start of the last old probe and the end of
        // the first new one: report the end (an upper bound), and the start as the
        // lower bound.
        let live = o.probes[first_new].1;
        self.flapped += o.probes[first_new..].iter().filter(|p| !p.2).count();
        self.build.push(ms(build, fill));
        self.fill.push(ms(fill, call));
        self.syscall.push(ms(call, ret));
        self.update_to_live.push(ms(call, live));
        self.fill_to_live.push(ms(fill, live));
        self.fill_to_last_old.push(ms(fill, last_old.0));
        self.fill_to_return.push(ms(fill, ret));
        self.build_to_live.push(ms(build, live));
        self.live_before_return += usize::from(live < ret);
        let n = o.probes.len();
        self.probes.push(n as f64);
        self.probe_us
            .push(ms(o.probes[0].0, o.probes[n - 1].1) * 1e3 / n as f64);
    }
}

/// On VIP4 and [fd00::100], TCP: DSR on port 80, IPIP on 81, GUE on 82 (IPv4 backends
/// 1-3, IPv6 backends 4-6); a VRRP router on `lo`.
fn configure(dp: &mut TestDataplane) {
    configure_vrrp(dp);
    let ebpf = dp.dp.ebpf_mut();
    maps::set_config(
        ebpf,
        &Config {
            encap_src_v4: be4(ENCAP4)[0],
            encap_src_v6: be6("fd00::2".parse().unwrap()),
            gue_port_be: lb_common::service::DEFAULT_GUE_PORT.to_be(),
            ..Default::default()
        },
    )
    .unwrap();
    for id in 1..=3u32 {
        let b = Backend {
            addr: be4(Ipv4Addr::new(10, 0, 1, id as u8)),
            family: AF_INET,
            mac: backend_mac(id),
            ..Default::default()
        };
        maps::set_backend(ebpf, id, &b).unwrap();
        let b6 = Backend {
            addr: be6(format!("fd00:1::{id}").parse().unwrap()),
            family: AF_INET6,
            mac: [2, 0, 0, 0, 6, id as u8],
            ..Default::default()
        };
        maps::set_backend(ebpf, id + 3, &b6).unwrap();
    }
    let table: Vec<u32> = (0..65537u32).map(|i| 1 + i % 3).collect();
    let table6: Vec<u32> = (0..65537u32).map(|i| 4 + i % 3).collect();
    let mut id = 0;
    for (port, mode) in [
        (PORT_DSR, ForwardMode::Dsr),
        (PORT_IPIP, ForwardMode::Ipip),
        (PORT_GUE, ForwardMode::Gue),
    ] {
        for (addr, family, table) in [
            (be4(VIP4), AF_INET, &table),
            (be6(vip6()), AF_INET6, &table6),
        ] {
            id += 1;
            maps::swap_table(ebpf, id, table).unwrap();
            let key = VipKey {
                addr,
                port_be: port.to_be(),
                proto: IPPROTO_TCP,
                family,
            };
            maps::set_service(
                ebpf,
                &key,
                &Service {
                    id,
                    mode: mode as u8,
                    ..Default::default()
                },
            )
            .unwrap();
        }
    }
}

fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fmt_opt(v: Option<u32>) -> String {
    v.map_or_else(|| "n/a".into(), |v| v.to_string())
}
