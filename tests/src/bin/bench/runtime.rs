//! The method balancers are compared by (issue 16 item 5): the program's own run time
//! from `BPF_ENABLE_STATS` (`run_time_ns / run_cnt` of `bpf_prog_info`), over 100,000
//! single-shot `BPF_PROG_TEST_RUN` calls per scenario and round, each with a fresh copy
//! of the frame, next to the XDP_PASS and XDP_TX floors timed the same way in the same
//! rounds. Unlike the test-run duration, this counts the program alone (the kernel
//! times the program call, not the syscall's frame setup), which is what Katran's and
//! Cilium's numbers mean.
//!
//! Two phases: with the connection table holding only the bench's own flows, then with
//! it full (more distinct flows inserted than it holds, so every new flow's insert
//! evicts, as in steady state). The hot flows are touched again after the fill, and
//! every scenario proves its path by a counter that must move by exactly its shots.

use aya::maps::{HashMap, MapData};
use aya::{
    programs::Xdp,
    sys::{enable_stats, Stats},
};
use lb_common::Stat;
use lb_common::{maps, Conn, FlowKey};
use testbed::{
    bench::{self, BenchPrograms},
    dataplane::TestDataplane,
};

/// Single-shot calls per scenario and round.
const SHOTS: u32 = 100_000;
const ROUNDS: usize = 3;

/// The frames the scenarios send (built by the caller with the bench's services).
pub struct Frames {
    pub non_vip: Vec<u8>,
    pub ack_dsr: Vec<u8>,
    pub ack_ipip: Vec<u8>,
    /// A SYN to the IPIP service; its client address is replaced per shot.
    pub syn_ipip: Vec<u8>,
}

struct Case {
    name: &'static str,
    program: &'static str,
    frame: Vec<u8>,
    /// A new client address per shot (a new flow each time).
    new_flow: bool,
    proof: Option<Stat>,
    samples: Vec<f64>,
}

/// Runs both phases; prints the table and returns it as JSON.
pub fn run(dp: &mut TestDataplane, floors: &BenchPrograms, f: &Frames) -> serde_json::Value {
    // Statistics are on while this fd is open (they cost every program ~20 ns of
    // clock reads, so only here).
    let _stats = enable_stats(Stats::RunTime).expect("BPF_ENABLE_STATS");
    let case = |name, program, frame: &Vec<u8>, new_flow, proof| Case {
        name,
        program,
        frame: frame.clone(),
        new_flow,
        proof,
        samples: Vec::new(),
    };
    let b = lb_common::programs::BALANCER;
    let floors_and = |extra: Vec<Case>| {
        let mut cases = vec![
            case("floor: XDP_PASS", bench::PASS, &f.non_vip, false, None),
            case(
                "floor: MAC swap + XDP_TX",
                bench::TX,
                &f.ack_dsr,
                false,
                None,
            ),
            case("non-VIP pass", b, &f.non_vip, false, Some(Stat::NotVip)),
            case(
                "established, DSR (v4)",
                b,
                &f.ack_dsr,
                false,
                Some(Stat::ConnHit),
            ),
            case(
                "established, IPIP (v4)",
                b,
                &f.ack_ipip,
                false,
                Some(Stat::ConnHit),
            ),
        ];
        cases.extend(extra);
        cases
    };
    // New flows from 12.0.0.0/8, disjoint from every other flow of the bench.
    let mut next_client: u32 = 0x0c00_0000;
    let mut out = Vec::new();

    // Sparse: the table emptied (the per-packet scenarios before filled it), then the
    // hot flows only. No new-flow case here: its 100,000 inserts a round would fill it.
    clear_conns(dp);
    confirm(dp, &[&f.ack_dsr, &f.ack_ipip]);
    let flows = count_conns(dp);
    let mut sparse = floors_and(Vec::new());
    measure(dp, floors, &mut sparse, &mut next_client);
    out.push(report(
        "table holding only the hot flows",
        &sparse,
        Some(flows),
    ));

    // Fill: a quarter more distinct flows than the table holds.
    let capacity = dp.dp.conn_table().expect("connection table").capacity;
    let mut ack = f.ack_ipip.clone();
    for _ in 0..capacity + capacity / 4 {
        next_client += 1;
        ack[26..30].copy_from_slice(&next_client.to_be_bytes());
        confirm(dp, &[&ack]);
    }
    // The hot flows were evicted by the fill, most likely: touch them again.
    confirm(dp, &[&f.ack_dsr, &f.ack_ipip]);
    let mut full = floors_and(vec![case(
        "new flow, IPIP (v4), table full (insert evicts)",
        b,
        &f.syn_ipip,
        true,
        Some(Stat::ConnMiss),
    )]);
    measure(dp, floors, &mut full, &mut next_client);
    let flows = count_conns(dp);
    out.push(report("table full", &full, Some(flows)));
    serde_json::Value::Array(out)
}

/// Runs each flow's packet twice: the second confirms the flow into the connection
/// table (a first packet only reaches the unconfirmed table).
fn confirm(dp: &mut TestDataplane, frames: &[&Vec<u8>]) {
    for frame in frames {
        dp.run(frame);
        dp.run(frame);
    }
}

/// [`ROUNDS`] interleaved rounds of [`SHOTS`] single shots per case.
fn measure(
    dp: &mut TestDataplane,
    floors: &BenchPrograms,
    cases: &mut [Case],
    next_client: &mut u32,
) {
    for round in 0..ROUNDS {
        for c in cases.iter_mut() {
            // A hot flow the new-flow inserts evicted gets its entry back (untimed:
            // before the first reading).
            if c.proof == Some(Stat::ConnHit) {
                confirm(dp, &[&c.frame]);
            }
            let before_stats = dp.stats();
            let before = info(dp, floors, c.program);
            let mut frame = c.frame.clone();
            for _ in 0..SHOTS {
                if c.new_flow {
                    *next_client += 1;
                    frame[26..30].copy_from_slice(&next_client.to_be_bytes());
                }
                prog(dp, floors, c.program)
                    .test_run(aya::TestRunOptions {
                        data_in: Some(&frame),
                        repeat: 1,
                        ..aya::TestRunOptions::new()
                    })
                    .expect("test run");
            }
            let after = info(dp, floors, c.program);
            let runs = after.1 - before.1;
            assert_eq!(runs, u64::from(SHOTS), "{}: run_cnt moved {runs}", c.name);
            if let Some(stat) = c.proof {
                let moved = dp.stats().get(stat).packets - before_stats.get(stat).packets;
                assert_eq!(
                    moved,
                    u64::from(SHOTS),
                    "{} (round {round}): path proof failed: {} moved {moved}",
                    c.name,
                    stat.name()
                );
            }
            c.samples.push((after.0 - before.0) as f64 / runs as f64);
        }
    }
}

use aya::TestRun as _;

fn conns(dp: &mut TestDataplane) -> HashMap<&mut MapData, FlowKey, Conn> {
    HashMap::try_from(dp.dp.ebpf_mut().map_mut(maps::CONNS).expect("XLB_CONNS")).unwrap()
}

/// Removes every connection-table entry.
fn clear_conns(dp: &mut TestDataplane) {
    let mut table = conns(dp);
    let keys: Vec<FlowKey> = table.keys().filter_map(Result::ok).collect();
    for key in keys {
        let _ = table.remove(&key);
    }
}

fn count_conns(dp: &mut TestDataplane) -> u64 {
    conns(dp).keys().filter(Result::is_ok).count() as u64
}

fn prog<'a>(dp: &'a mut TestDataplane, floors: &'a BenchPrograms, name: &str) -> &'a Xdp {
    if bench::ALL.contains(&name) {
        floors.xdp(name)
    } else {
        dp.dp.xdp(lb_common::programs::BALANCER).unwrap()
    }
}

/// (run_time_ns, run_cnt) of the program.
fn info(dp: &mut TestDataplane, floors: &BenchPrograms, name: &str) -> (u64, u64) {
    let info = prog(dp, floors, name).info().expect("program info");
    (info.run_time().as_nanos() as u64, info.run_count())
}

fn report(phase: &str, cases: &[Case], flows: Option<u64>) -> serde_json::Value {
    let med = |c: &Case| {
        let mut s = c.samples.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    let floor = |name: &str| med(cases.iter().find(|c| c.name == name).unwrap());
    let (pass, tx) = (floor("floor: XDP_PASS"), floor("floor: MAC swap + XDP_TX"));
    println!(
        "\nprogram run time (BPF_ENABLE_STATS run_time_ns / run_cnt), {ROUNDS} rounds of \
         {SHOTS} single shots, {phase} ({} flows)\n",
        flows.map_or("?".into(), |n| n.to_string())
    );
    println!(
        "{:<54} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "scenario", "median", "min", "max", "xPASS", "xTX"
    );
    let rows: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| {
            let (m, min, max) = (
                med(c),
                c.samples.iter().copied().fold(f64::INFINITY, f64::min),
                c.samples.iter().copied().fold(0.0, f64::max),
            );
            println!(
                "{:<54} {m:>7.1}ns {min:>7.1}ns {max:>7.1}ns {:>8.2} {:>8.2}",
                c.name,
                m / pass,
                m / tx
            );
            serde_json::json!({
                "scenario": c.name, "median_ns": m, "min_ns": min, "max_ns": max,
                "ratio_to_pass_floor": m / pass, "ratio_to_tx_floor": m / tx,
            })
        })
        .collect();
    serde_json::json!({"phase": phase, "flows": flows, "rows": rows})
}
