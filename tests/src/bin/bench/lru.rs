//! `cargo xtask bench lru`: the connection tables with one LRU list shared by all CPUs
//! against one list per CPU (`conn_table.lru`: `BPF_F_NO_COMMON_LRU`), with two CPUs
//! forwarding at once.
//!
//! Two threads pinned to CPU 0 and CPU 1 (sched_setaffinity) start BPF_PROG_TEST_RUN
//! on the same loaded program at the same moment (a barrier), `repeat` iterations each:
//! - **established**: each CPU its own established DSR flow, in a table also holding
//!   [`FLOWS_PER_CPU`] flows inserted from each CPU (so a per-CPU table's lists both
//!   hold flows); the DSR output (MACs rewritten) re-enters the same path, proved by
//!   `conn_hit` moving by exactly the iterations of both threads;
//! - **new flows**: `lab_syn_flood` turns each iteration into the SYN of a new spoofed
//!   flow and tail-calls the balancer: each iteration one insert into the unconfirmed
//!   table, which the flood keeps full (every insert evicts), proved by `conn_miss`.
//!
//! Floors, run the same way in the same rounds: the MAC swap + XDP_TX program, and the
//! flood generator tail-calling it. Every case also runs alone on CPU 1, so the table
//! shows what the second CPU costs each. Both data planes are loaded side by side and
//! the cases interleaved round-robin over [`ROUNDS`] rounds; medians with min/max.
//!
//! Plain `repeat`, not live frames: both paths re-enter themselves (proved), and a
//! live-frames run without an ingress interface fails here (EPERM, tried); with one (a
//! veth in a namespace, as `bench e2e` does) both CPUs would transmit into the one
//! queue of its peer, a contention of its own that has nothing to do with the table.

use std::{net::Ipv4Addr, sync::Barrier};

use aya::{programs::Xdp, TestRun as _, TestRunOptions};
use lb_common::{programs, wire::XDP_TX, Stat};
use lb_userspace::config::conn_table::LruKind;
use testbed::{
    bench::{self, BenchPrograms, SynFlood},
    dataplane::{PinDir, TestDataplane},
    packet, test_run,
};

use super::{configure, PORT_DSR, VIP4};

const ROUNDS: usize = 10;
const REPEAT_ESTABLISHED: u32 = 1_000_000;
const REPEAT_NEW: u32 = 200_000;
/// Established flows inserted from each CPU before timing (the default table of
/// 262,144 holds both CPUs' shares; a per-CPU table holds 131,072 per CPU here).
const FLOWS_PER_CPU: u32 = 100_000;
const BOTH: &[usize] = &[0, 1];
const ALONE: &[usize] = &[1];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Established,
    NewFlows,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::Established => "established DSR flow (v4)",
            Path::NewFlows => "new flow: spoofed SYN, unconfirmed-table insert",
        }
    }

    fn repeat(self) -> u32 {
        match self {
            Path::Established => REPEAT_ESTABLISHED,
            Path::NewFlows => REPEAT_NEW,
        }
    }

    fn proof(self) -> Stat {
        match self {
            Path::Established => Stat::ConnHit,
            Path::NewFlows => Stat::ConnMiss,
        }
    }
}

/// One data plane with its tables of one LRU kind, the floors beside it, and the
/// flood generator aimed at its balancer and at the TX floor.
struct Plane {
    lru: LruKind,
    dp: TestDataplane,
    floors: BenchPrograms,
    flood: SynFlood,
    flood_tx: SynFlood,
    flows: u64,
}

impl Plane {
    fn load(lru: LruKind) -> Self {
        let mut dp = TestDataplane::load_with(PinDir::new("bench-lru"), None, lru);
        let floors = BenchPrograms::load(&dp.dp);
        configure(&mut dp);
        let flood = SynFlood::aimed_at_program(balancer(&dp));
        let flood_tx = SynFlood::aimed_at_program(floors.xdp(bench::TX));
        let table = dp.dp.conn_table().expect("connection table");
        assert_eq!(table.lru, lru, "the loaded table is of the kind asked for");
        let mut plane = Self {
            lru,
            dp,
            floors,
            flood,
            flood_tx,
            flows: 0,
        };
        plane.fill();
        plane
    }

    /// Confirms the hot flows and [`FLOWS_PER_CPU`] others from each CPU (a flow's
    /// second packet moves it into `XLB_CONNS`; with per-CPU lists it takes an element
    /// of the list of the CPU that inserts it).
    fn fill(&mut self) {
        let prog = balancer(&self.dp);
        let handles: Vec<Xdp> = BOTH.iter().map(|_| handle(prog)).collect();
        std::thread::scope(|s| {
            for (&cpu, prog) in BOTH.iter().zip(handles) {
                s.spawn(move || {
                    pin_to(cpu);
                    let mut frames = vec![hot_flow(cpu)];
                    frames.extend((0..FLOWS_PER_CPU).map(|i| {
                        let [_, b, c, d] = i.to_be_bytes();
                        let client = Ipv4Addr::new(20 + cpu as u8, b, c, d);
                        packet::tcp4_frame(client, VIP4, 40000, PORT_DSR, packet::Flags::ACK)
                    }));
                    for frame in &frames {
                        for _ in 0..2 {
                            let out = test_run::run(&prog, frame).expect("test run");
                            assert_eq!(out.action, XDP_TX, "filling the table");
                        }
                    }
                });
            }
        });
        self.flows = count_conns(&self.dp).unwrap_or(0);
        let want = u64::from(FLOWS_PER_CPU + 1) * BOTH.len() as u64;
        assert!(
            self.flows >= want,
            "{:?}: the table holds {} flows after the fill, want {want}",
            self.lru,
            self.flows
        );
    }

    /// Runs `path` on `cpus` at once (the balancer, or its floor); returns each CPU's
    /// ns per packet.
    fn run(&self, path: Path, floor: bool, cpus: &[usize]) -> Vec<f64> {
        let prog = match (path, floor) {
            (Path::Established, false) => balancer(&self.dp),
            (Path::Established, true) => self.floors.xdp(bench::TX),
            (Path::NewFlows, false) => self.flood.program(),
            (Path::NewFlows, true) => self.flood_tx.program(),
        };
        let before = self.dp.stats().get(path.proof()).packets;
        let ns = at_once(prog, path, cpus);
        if !floor {
            let moved = self.dp.stats().get(path.proof()).packets - before;
            let want = u64::from(path.repeat()) * cpus.len() as u64;
            assert_eq!(
                moved,
                want,
                "{:?} {path:?} on {cpus:?}: path proof failed: {} moved {moved}, expected {want}",
                self.lru,
                path.proof().name()
            );
        }
        ns
    }
}

/// What one row of the table measured: per round, each CPU's ns per packet.
struct Case {
    path: Path,
    /// `None`: the floor.
    lru: Option<LruKind>,
    cpus: &'static [usize],
    rounds: Vec<Vec<f64>>,
}

/// Runs every case; prints the tables and returns them as JSON.
pub fn run() -> serde_json::Value {
    let planes = [Plane::load(LruKind::Shared), Plane::load(LruKind::PerCpu)];
    let mut cases = Vec::new();
    for path in [Path::Established, Path::NewFlows] {
        for lru in [None, Some(LruKind::Shared), Some(LruKind::PerCpu)] {
            for cpus in [ALONE, BOTH] {
                cases.push(Case {
                    path,
                    lru,
                    cpus,
                    rounds: Vec::new(),
                });
            }
        }
    }
    for round in 0..ROUNDS {
        // Alternate which kind goes first, so neither always follows the other.
        let order: Vec<usize> = if round % 2 == 0 {
            (0..cases.len()).collect()
        } else {
            (0..cases.len()).rev().collect()
        };
        for i in order {
            let c = &mut cases[i];
            let plane = match c.lru {
                None | Some(LruKind::Shared) => &planes[0],
                Some(LruKind::PerCpu) => &planes[1],
            };
            c.rounds.push(plane.run(c.path, c.lru.is_none(), c.cpus));
        }
    }
    let flows: Vec<serde_json::Value> = planes
        .iter()
        .map(|p| serde_json::json!({"lru": p.lru.as_str(), "flows": p.flows}))
        .collect();
    let rows = report(&cases, &planes);
    let paired = paired(&cases);
    serde_json::json!({"tables": flows, "rows": rows, "per_cpu_over_shared": paired})
}

/// per_cpu ÷ shared for each path and CPU set, paired by round (the two ran next to
/// each other in it), so the drift of a shared machine between rounds cancels out.
fn paired(cases: &[Case]) -> Vec<serde_json::Value> {
    println!(
        "\nper_cpu / shared, paired by round (mean ns over the CPUs used): median (min-max)\n"
    );
    let find = |path, lru, cpus| {
        cases
            .iter()
            .find(|c| c.path == path && c.lru == Some(lru) && c.cpus == cpus)
            .expect("a case per path, kind and CPU set")
    };
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let mut out = Vec::new();
    for path in [Path::Established, Path::NewFlows] {
        for cpus in [ALONE, BOTH] {
            let (shared, per_cpu) = (
                find(path, LruKind::Shared, cpus),
                find(path, LruKind::PerCpu, cpus),
            );
            let ratios: Vec<f64> = shared
                .rounds
                .iter()
                .zip(&per_cpu.rounds)
                .map(|(s, p)| mean(p) / mean(s))
                .collect();
            let (m, lo, hi) = spread(ratios);
            println!(
                "{:<48} {} CPU(s) {m:>6.3} ({lo:.3}-{hi:.3})",
                path.name(),
                cpus.len()
            );
            out.push(serde_json::json!({
                "path": path.name(), "cpus": cpus, "median": m, "min": lo, "max": hi,
            }));
        }
    }
    out
}

/// Median, min and max of one CPU's per-round figures.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn report(cases: &[Case], planes: &[Plane]) -> Vec<serde_json::Value> {
    println!(
        "\nconnection-table LRU kinds, two CPUs forwarding at once (BPF_PROG_TEST_RUN \
         repeat, {ROUNDS} rounds, medians; established: {} flows in the shared table, {} \
         in the per-CPU one)\n",
        planes[0].flows, planes[1].flows
    );
    println!(
        "{:<48} {:<8} {:<6} {:>14} {:>14} {:>9} {:>7}",
        "path", "lru", "CPUs", "CPU 0 ns", "CPU 1 ns", "Mpps", "xfloor"
    );
    let per_cpu = |c: &Case| -> Vec<(f64, f64, f64)> {
        (0..c.cpus.len())
            .map(|i| spread(c.rounds.iter().map(|r| r[i]).collect()))
            .collect()
    };
    let mean_ns = |c: &Case| {
        let v = per_cpu(c);
        v.iter().map(|s| s.0).sum::<f64>() / v.len() as f64
    };
    cases
        .iter()
        .map(|c| {
            let floor = cases
                .iter()
                .find(|f| f.path == c.path && f.lru.is_none() && f.cpus == c.cpus)
                .expect("a floor per path and CPU set");
            let ratio = mean_ns(c) / mean_ns(floor);
            let spreads = per_cpu(c);
            let mpps: f64 = spreads.iter().map(|s| 1e3 / s.0).sum();
            let cell = |cpu: usize| {
                c.cpus
                    .iter()
                    .position(|&x| x == cpu)
                    .map_or("-".to_owned(), |i| {
                        let (m, lo, hi) = spreads[i];
                        format!("{m:.0} ({lo:.0}-{hi:.0})")
                    })
            };
            let kind = c.lru.map_or("floor", LruKind::as_str);
            let name = if c.lru.is_none() {
                match c.path {
                    Path::Established => "floor: MAC swap + XDP_TX",
                    Path::NewFlows => "floor: SYN generator + MAC swap + XDP_TX",
                }
            } else {
                c.path.name()
            };
            println!(
                "{name:<48} {kind:<8} {:<6} {:>14} {:>14} {mpps:>9.2} {ratio:>7.2}",
                c.cpus.len(),
                cell(0),
                cell(1)
            );
            serde_json::json!({
                "path": c.path.name(), "lru": kind, "cpus": c.cpus,
                "median_ns_per_cpu": spreads.iter().map(|s| s.0).collect::<Vec<_>>(),
                "min_ns_per_cpu": spreads.iter().map(|s| s.1).collect::<Vec<_>>(),
                "max_ns_per_cpu": spreads.iter().map(|s| s.2).collect::<Vec<_>>(),
                "mpps_total": mpps, "ratio_to_floor": ratio,
            })
        })
        .collect()
}

/// Runs `prog` `path.repeat()` times on each of `cpus` at once; each CPU's mean ns per
/// iteration (the kernel's own timing of the run).
fn at_once(prog: &Xdp, path: Path, cpus: &[usize]) -> Vec<f64> {
    let barrier = Barrier::new(cpus.len());
    let handles: Vec<Xdp> = cpus.iter().map(|_| handle(prog)).collect();
    std::thread::scope(|s| {
        let barrier = &barrier;
        let threads: Vec<_> = cpus
            .iter()
            .zip(handles)
            .map(|(&cpu, prog)| {
                s.spawn(move || {
                    pin_to(cpu);
                    let frame = match path {
                        Path::Established => hot_flow(cpu),
                        Path::NewFlows => {
                            packet::tcp4_frame(super::CLIENT4, VIP4, 40000, PORT_DSR, packet::SYN)
                        }
                    };
                    barrier.wait();
                    let out = prog
                        .test_run(TestRunOptions {
                            data_in: Some(&frame),
                            repeat: path.repeat(),
                            ..TestRunOptions::new()
                        })
                        .expect("test run");
                    assert_eq!(out.return_value, XDP_TX, "{path:?} on CPU {cpu}");
                    out.duration.as_nanos() as f64
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    })
}

/// CPU `cpu`'s established flow (its own client port).
fn hot_flow(cpu: usize) -> Vec<u8> {
    packet::tcp4_frame(
        super::CLIENT4,
        VIP4,
        41000 + cpu as u16,
        PORT_DSR,
        packet::Flags::ACK,
    )
}

fn balancer(dp: &TestDataplane) -> &Xdp {
    dp.dp
        .ebpf()
        .program(programs::BALANCER)
        .expect("the balancer program")
        .try_into()
        .expect("an XDP program")
}

/// A handle on `prog` a thread can own.
fn handle(prog: &Xdp) -> Xdp {
    test_run::handle(prog, "bench").expect("a second handle on the program")
}

fn count_conns(dp: &TestDataplane) -> Option<u64> {
    use aya::maps::{HashMap, MapData};
    use lb_common::{maps, Conn, FlowKey};
    let data = MapData::from_pin(dp.pin_dir().join(maps::CONNS)).ok()?;
    let table: HashMap<MapData, FlowKey, Conn> =
        HashMap::try_from(aya::maps::Map::LruHashMap(data)).ok()?;
    Some(table.keys().filter(Result::is_ok).count() as u64)
}

/// Moves the calling thread onto `cpu` (and only there).
fn pin_to(cpu: usize) {
    use nix::{
        sched::{sched_setaffinity, CpuSet},
        unistd::Pid,
    };
    let mut set = CpuSet::new();
    set.set(cpu).expect("a CPU number");
    sched_setaffinity(Pid::from_raw(0), &set)
        .unwrap_or_else(|e| panic!("pinning a thread to CPU {cpu}: {e}"));
}
