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

mod health;

use std::{net::Ipv4Addr, time::Instant};

use lb_common::{
    programs,
    service::{AF_INET, AF_INET6},
    Backend, Config, ForwardMode, Service, Stat, VipKey,
};
use lb_userspace::{maps, test_run};
use testbed::{dataplane::TestDataplane, packet};

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 10;
/// Single-shot runs per round (each a separate syscall; kernel-measured duration).
const SHOTS: u32 = 20_000;

const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const ENCAP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn be4(a: Ipv4Addr) -> [u32; 4] {
    [u32::from_ne_bytes(a.octets()), 0, 0, 0]
}

fn be6(a: std::net::Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    std::array::from_fn(|i| u32::from_ne_bytes(o[i * 4..i * 4 + 4].try_into().unwrap()))
}

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
    /// For single-shot new-flow scenarios: a new client address per shot.
    new_flow_each_shot: bool,
    samples: Vec<f64>,
}

fn main() {
    use Method::{Repeat, SingleShot};
    testbed::require_root();
    // `xlb-bench health`: only the health-check load (it takes a minute of its own).
    if std::env::args().nth(1).as_deref() == Some("health") {
        let health = health::run(&[1_000, 10_000]);
        write_json(
            &serde_json::json!({ "health_checks": health }),
            "health.json",
        );
        return;
    }
    let mut dp = TestDataplane::load("bench");
    for name in [programs::BENCH_PASS, programs::BENCH_TX] {
        dp.dp.xdp(name).unwrap().load().unwrap();
    }
    configure(&mut dp);

    let syn = packet::tcp4_frame(CLIENT4, VIP4, 40000, 80, packet::SYN);
    let ack = packet::tcp4_frame(CLIENT4, VIP4, 40000, 80, packet::Flags::ACK);
    let ack_ipip = packet::tcp4_frame(CLIENT4, VIP4, 40001, 81, packet::Flags::ACK);
    let c6: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
    let v6: std::net::Ipv6Addr = "fd00::100".parse().unwrap();
    let ack6 = packet::tcp6_frame(c6, v6, 40000, 80, packet::Flags::ACK);
    let non_vip = packet::udp4_frame(CLIENT4, Ipv4Addr::new(10, 0, 0, 5), 40000, 53, &[0u8; 32]);
    let mut malformed = ack.clone();
    packet::tweak_ipv4(&mut malformed, |ip| ip.set_header_length(4));
    // Establish the flows the "established" scenarios hit.
    for p in [&syn, &ack_ipip, &ack6] {
        dp.run(p);
    }

    let scenario = |name, program, method, proof, packet: &Vec<u8>, new_flow| Scenario {
        name,
        program,
        method,
        proof,
        packet: packet.clone(),
        new_flow_each_shot: new_flow,
        samples: Vec::new(),
    };
    let mut scenarios = vec![
        scenario(
            "floor: XDP_PASS",
            programs::BENCH_PASS,
            Repeat,
            None,
            &non_vip,
            false,
        ),
        scenario(
            "floor: MAC swap + XDP_TX",
            programs::BENCH_TX,
            Repeat,
            None,
            &ack,
            false,
        ),
        scenario(
            "non-VIP pass",
            programs::BALANCER,
            Repeat,
            Some(Stat::NotVip),
            &non_vip,
            false,
        ),
        scenario(
            "VIP TCP established, DSR (v4)",
            programs::BALANCER,
            Repeat,
            Some(Stat::ConnHit),
            &ack,
            false,
        ),
        scenario(
            "VIP TCP established, DSR (v6)",
            programs::BALANCER,
            Repeat,
            Some(Stat::ConnHit),
            &ack6,
            false,
        ),
        scenario(
            "malformed (IHL 4)",
            programs::BALANCER,
            Repeat,
            Some(Stat::Malformed),
            &malformed,
            false,
        ),
        scenario(
            "single-shot floor: XDP_PASS",
            programs::BENCH_PASS,
            SingleShot,
            None,
            &non_vip,
            false,
        ),
        scenario(
            "single-shot floor: MAC swap + XDP_TX",
            programs::BENCH_TX,
            SingleShot,
            None,
            &ack,
            false,
        ),
        scenario(
            "single-shot VIP established, DSR (v4)",
            programs::BALANCER,
            SingleShot,
            Some(Stat::ConnHit),
            &ack,
            false,
        ),
        scenario(
            "single-shot VIP new flow (SYN, Maglev, conn insert)",
            programs::BALANCER,
            SingleShot,
            Some(Stat::ConnMiss),
            &syn,
            true,
        ),
        scenario(
            "single-shot VIP established, IPIP encap (v4)",
            programs::BALANCER,
            SingleShot,
            Some(Stat::ConnHit),
            &ack_ipip,
            false,
        ),
    ];

    let started = Instant::now();
    // New flows get fresh client addresses from 11.0.0.0/8, disjoint from every flow
    // established above.
    let mut next_client: u32 = 0x0b00_0000;
    for round in 0..ROUNDS {
        for s in scenarios.iter_mut() {
            let before = dp.stats();
            let (ns, iterations) = match s.method {
                Repeat => {
                    let fd = dp.dp.xdp(s.program).unwrap().fd().unwrap();
                    let out = test_run::run_xdp(fd, &s.packet, REPEAT, 0).expect("test run");
                    (f64::from(out.duration_ns), u64::from(REPEAT))
                }
                SingleShot => {
                    let mut total = 0u64;
                    let mut packet = s.packet.clone();
                    for _ in 0..SHOTS {
                        if s.new_flow_each_shot {
                            next_client += 1;
                            // IPv4 source address (the program does not verify the
                            // IP checksum, so it is left stale).
                            packet[26..30].copy_from_slice(&next_client.to_be_bytes());
                        }
                        let fd = dp.dp.xdp(s.program).unwrap().fd().unwrap();
                        let out = test_run::run_xdp(fd, &packet, 1, 0).expect("test run");
                        total += u64::from(out.duration_ns);
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
    let (floor_pass, floor_tx) = (med(&scenarios[0]), med(&scenarios[1]));
    let (ss_pass, ss_tx) = (med(&scenarios[6]), med(&scenarios[7]));
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

    println!("\nverifier: instructions processed at load (bpf_prog_info.verified_insns)");
    let mut verifier = Vec::new();
    for name in [
        programs::BALANCER,
        programs::DECAP,
        programs::PASS,
        programs::BENCH_PASS,
        programs::BENCH_TX,
    ] {
        let info = dp.dp.xdp(name).unwrap().info().unwrap();
        let insns = info.verified_instruction_count();
        let size = info.size_translated();
        println!(
            "  {name:<12} verified insns {:>8}  xlated bytes {:>7}",
            fmt_opt(insns),
            fmt_opt(size)
        );
        verifier.push(
            serde_json::json!({"program": name, "verified_insns": insns, "xlated_bytes": size}),
        );
    }
    let control = control_plane(&mut dp);
    let health = health::run(&[1_000, 10_000]);
    println!("\n(total bench time {:?})", started.elapsed());

    let out = serde_json::json!({
        "per_packet": json, "verifier": verifier, "control_plane": control,
        "health_checks": health,
    });
    write_json(&out, "bench.json");
}

fn write_json(out: &serde_json::Value, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), serde_json::to_vec_pretty(out).unwrap()).unwrap();
    println!("wrote {}", dir.join(name).display());
}

/// Maglev build, table fill and the swap itself (one outer-map update), M = 65537.
fn control_plane(dp: &mut TestDataplane) -> serde_json::Value {
    use lb_userspace::maglev::{self, MaglevBackend};
    const RUNS: usize = 11;
    println!(
        "\ncontrol plane, M = {}, {RUNS} runs: median (min / max)",
        maglev::DEFAULT_TABLE_SIZE
    );
    let mut out = Vec::new();
    let mut stat = |name: String, samples: &mut Vec<f64>| {
        samples.sort_by(f64::total_cmp);
        let (med, min, max) = (
            samples[samples.len() / 2],
            samples[0],
            samples[samples.len() - 1],
        );
        println!("  {name:<44} {med:>9.3} ms ({min:.3} / {max:.3})");
        out.push(serde_json::json!({"what": name, "median_ms": med, "min_ms": min, "max_ms": max}));
    };
    let mut table = Vec::new();
    for n in [10u32, 100, 1_000, 10_000] {
        let backends: Vec<MaglevBackend> = (1..=n)
            .map(|id| MaglevBackend {
                id,
                weight: 1 + id % 4,
                key: maglev::backend_key(
                    std::net::IpAddr::from([10, (id >> 16) as u8, (id >> 8) as u8, id as u8]),
                    0,
                ),
            })
            .collect();
        let mut samples = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            table = maglev::build(&backends, maglev::DEFAULT_TABLE_SIZE).unwrap();
            samples.push(t.elapsed().as_secs_f64() * 1e3);
        }
        stat(format!("Maglev build, {n} weighted backends"), &mut samples);
    }
    // Ids up to 10,000 exceed nothing in the map (the table only stores ids).
    let (mut fill, mut swap) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        let inner = maps::build_table(&table).unwrap();
        fill.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        maps::install_table(dp.dp.ebpf_mut(), 9, &inner).unwrap();
        swap.push(t.elapsed().as_secs_f64() * 1e3);
    }
    stat(
        "fill a new inner table (one syscall per slot)".into(),
        &mut fill,
    );
    stat(
        "swap: make the new table live (one update)".into(),
        &mut swap,
    );
    serde_json::Value::Array(out)
}

/// DSR services on VIP4:80 and [fd00::100]:80, an IPIP service on VIP4:81.
fn configure(dp: &mut TestDataplane) {
    let ebpf = dp.dp.ebpf_mut();
    maps::set_config(
        ebpf,
        &Config {
            encap_src_v4: be4(ENCAP4)[0],
            ..Default::default()
        },
    )
    .unwrap();
    for id in 1..=3u32 {
        let b = Backend {
            addr: be4(Ipv4Addr::new(10, 0, 1, id as u8)),
            family: AF_INET,
            mac: [2, 0, 0, 0, 1, id as u8],
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
    let services = [
        (1, be4(VIP4), AF_INET, 80u16, ForwardMode::Dsr, &table),
        (
            2,
            be6("fd00::100".parse().unwrap()),
            AF_INET6,
            80,
            ForwardMode::Dsr,
            &table6,
        ),
        (3, be4(VIP4), AF_INET, 81, ForwardMode::Ipip, &table),
    ];
    for (id, addr, family, port, mode, table) in services {
        maps::swap_table(ebpf, id, table).unwrap();
        let key = VipKey {
            addr,
            port_be: port.to_be(),
            proto: 6,
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

fn median(samples: &[f64]) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn fmt_opt(v: Option<u32>) -> String {
    v.map_or_else(|| "n/a".into(), |v| v.to_string())
}
