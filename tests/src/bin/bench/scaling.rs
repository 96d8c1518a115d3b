//! `cargo xtask bench scaling`: per-packet cost (BPF_PROG_TEST_RUN) as the number of
//! services, of backends per service and of live flows in the connection table grows.
//!
//! For every size point a data plane of its own is loaded and filled; the points of one
//! dimension (and the floors) are then measured round-robin, so they share the
//! machine's noise. Per point:
//! - `established, one hot flow`: `repeat` on one established DSR flow (re-entrant;
//!   proof: `conn_hit` moves by exactly `repeat`). Its buckets stay in cache: this is
//!   the best case.
//! - `established, spread`: single shots, each a different established flow drawn at
//!   random (spread over all services / backends / the filled table), so lookups touch
//!   cold buckets as real traffic does. Proof: `conn_hit` moves by the number of shots
//!   (reported as a hit fraction past the table's capacity).
//! - `new flow`: single-shot SYNs from a new client each (proof: `conn_miss`): Maglev
//!   lookup and a connection insert (an LRU eviction once the table is full).
//! - `conn floor, spread`: the spread flows through `bench_conn` (one `XLB_CONNS`
//!   lookup, then the TX floor's work; every shot must hit): how much of the spread
//!   cost is the table's memory, which no balancer that looks flows up avoids.

use std::{net::Ipv4Addr, path::Path, time::Instant};

use aya::{
    maps::{HashMap as BpfHashMap, MapData},
    TestRunResult,
};
use lb_common::{
    limits::MAX_CONNS,
    programs,
    service::AF_INET,
    wire::{IPPROTO_TCP, XDP_TX},
    Backend, Conn, FlowKey, ForwardMode, Service, Stat, VipKey,
};
use lb_userspace::{
    balancer::maglev::{self, MaglevBackend},
    dataplane::aya::{maps, stats, AyaPort, LoadOptions},
};
use testbed::{
    bench::{self, BenchPrograms},
    dataplane::PinDir,
    packet,
};

use crate::timed;

const ROUNDS: usize = 7;
const REPEAT: u32 = 300_000;
const SHOTS: usize = 5_000;
/// Established flows the `spread` measurement draws from.
const SPREAD_FLOWS: usize = 4_096;
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

fn be(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

/// A data plane with its own pin directory (removed on drop), and the floors next to it.
struct Plane {
    dp: AyaPort,
    floors: BenchPrograms,
    _pins: PinDir,
}

impl Plane {
    /// `conns`: replace the connection table with a pre-pinned LRU of that many entries
    /// (the loader reuses maps it finds pinned; only key and value sizes must match).
    fn load(tag: &str, conns: Option<u32>) -> Self {
        let pins = PinDir::new(tag);
        if let Some(n) = conns {
            std::fs::create_dir_all(pins.path()).unwrap();
            pin_lru(&pins.path().join(lb_common::maps::CONNS), n);
        }
        let dp = AyaPort::load(&LoadOptions {
            pin_dir: pins.path().to_path_buf(),
            ebpf_log_level: None,
            conn_entries: None,
            unconfirmed_entries: None,
            conn_lru: Default::default(),
        })
        .expect("load the data plane");
        let floors = BenchPrograms::load(&dp);
        Self {
            dp,
            floors,
            _pins: pins,
        }
    }

    fn run(&mut self, name: &'static str, frame: &[u8], repeat: u32) -> TestRunResult {
        if bench::ALL.contains(&name) {
            timed(self.floors.xdp(name), frame, repeat)
        } else {
            timed(self.dp.xdp(name).unwrap(), frame, repeat)
        }
    }

    fn stat(&self, s: Stat) -> u64 {
        stats::read_loaded(self.dp.ebpf()).unwrap().get(s).packets
    }

    fn conns(&mut self) -> BpfHashMap<&mut MapData, FlowKey, Conn> {
        BpfHashMap::try_from(self.dp.ebpf_mut().map_mut(lb_common::maps::CONNS).unwrap()).unwrap()
    }
}

/// BPF_MAP_CREATE an LRU hash (FlowKey → Conn, `entries`) and pin it at `path`.
fn pin_lru(path: &Path, entries: u32) {
    #[repr(C)]
    #[derive(Default)]
    struct PinAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        _rest: [u64; 2],
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
    // The map_create part of bpf_attr, by offset (no implicit padding may be non-zero).
    let mut attr = [0u8; 128];
    for (at, v) in [
        (0, BPF_MAP_TYPE_LRU_HASH),
        (4, size_of::<FlowKey>() as u32),
        (8, size_of::<Conn>() as u32),
        (12, entries),
    ] {
        attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }
    attr[28..37].copy_from_slice(b"XLB_CONNS");
    // SAFETY: attr is a zero-padded bpf_attr prefix of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut pin = PinAttr {
        pathname: cpath.as_ptr() as u64,
        bpf_fd: fd as u32,
        ..Default::default()
    };
    // SAFETY: as above; pathname outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &mut pin as *mut PinAttr,
            size_of::<PinAttr>() as u32,
        )
    };
    assert!(ret == 0, "BPF_OBJ_PIN: {}", std::io::Error::last_os_error());
    // SAFETY: fd is ours; the pin keeps the map.
    unsafe { libc::close(fd as i32) };
}

/// xorshift64*: deterministic, good enough to scatter flows.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn flow_key(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowKey {
    FlowKey {
        src: [be(src), 0, 0, 0],
        dst: [be(dst), 0, 0, 0],
        sport_be: sport.to_be(),
        dport_be: dport.to_be(),
        proto: IPPROTO_TCP,
        family: AF_INET,
        vlan: 0,
    }
}

fn frame(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, flags: u8) -> Vec<u8> {
    let mut f = packet::tcp4_frame(src, dst, sport, 80, flags);
    f[6..12].copy_from_slice(&CLIENT_MAC);
    f
}

fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)
}

/// One size point of a dimension, ready to measure.
struct Point {
    size: u64,
    plane: Plane,
    hot: Vec<u8>,
    spread: Vec<Vec<u8>>,
    /// VIPs new flows go to (round-robin).
    vips: Vec<Ipv4Addr>,
    /// Entries in the connection table after filling (counted).
    live: Option<u64>,
    samples: [Vec<f64>; 4],
    spread_hits: u64,
    spread_total: u64,
}

/// Backends 1..=n (IPv4, DSR) and one Maglev table over them, installed for services
/// 1..=services (all share the table: one inner map in every slot).
fn configure(plane: &mut Plane, backends: u32, services: u32) {
    let ebpf = plane.dp.ebpf_mut();
    let list: Vec<MaglevBackend> = (1..=backends)
        .map(|id| {
            let addr = Ipv4Addr::new(10, 3, (id >> 8) as u8, id as u8);
            maps::set_backend(
                ebpf,
                id,
                &Backend {
                    addr: [be(addr), 0, 0, 0],
                    family: AF_INET,
                    mac: [2, 0, 0, 3, (id >> 8) as u8, id as u8],
                    ..Default::default()
                },
            )
            .unwrap();
            MaglevBackend {
                id,
                weight: 1,
                key: maglev::backend_key(addr.into(), 0),
            }
        })
        .collect();
    let table = maglev::build(&list, maglev::DEFAULT_TABLE_SIZE).unwrap();
    let inner = maps::build_table(&table).unwrap();
    for id in 1..=services {
        maps::install_table(ebpf, id, &inner).unwrap();
        let key = VipKey {
            addr: [be(vip(id)), 0, 0, 0],
            port_be: 80u16.to_be(),
            proto: IPPROTO_TCP,
            family: AF_INET,
        };
        let svc = Service {
            id,
            mode: ForwardMode::Dsr as u8,
            ..Default::default()
        };
        maps::set_service(ebpf, &key, &svc).unwrap();
    }
}

/// A point with `services` services and `backends` backends; SPREAD_FLOWS flows
/// established by real packets, spread over the services.
fn point_with(tag: &str, size: u64, services: u32, backends: u32) -> Point {
    let mut plane = Plane::load(tag, None);
    configure(&mut plane, backends, services);
    let vips: Vec<Ipv4Addr> = (1..=services).map(vip).collect();
    let spread: Vec<Vec<u8>> = (0..SPREAD_FLOWS as u32)
        .map(|i| {
            let src = Ipv4Addr::new(10, 2, (i >> 8) as u8, i as u8);
            frame(
                src,
                40000,
                vips[i as usize % vips.len()],
                packet::Flags::ACK,
            )
        })
        .collect();
    // Each flow's second packet confirms it into the connection table.
    for f in spread.iter().chain(&spread) {
        assert_eq!(plane.run(programs::BALANCER, f, 1).return_value, 3);
    }
    let hot = spread[0].clone();
    Point {
        size,
        plane,
        hot,
        spread,
        vips,
        live: None,
        samples: Default::default(),
        spread_hits: 0,
        spread_total: 0,
    }
}

/// A point with one service over 3 backends and `flows` random flows written into the
/// connection table from userspace (`table`: a pre-pinned table of that many entries
/// instead of the program's own MAX_CONNS).
fn point_flows(flows: u64, table: Option<u32>) -> Point {
    let mut plane = Plane::load("scale-flows", table);
    configure(&mut plane, 3, 1);
    let dst = vip(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ flows);
    // Random sources in 172.16.0.0/12, random ports: collisions are negligible.
    let mut keys: Vec<(Ipv4Addr, u16)> = Vec::with_capacity(flows as usize);
    let t = Instant::now();
    {
        let mut conns = plane.conns();
        for _ in 0..flows {
            let r = rng.next();
            let src = Ipv4Addr::from(0xac10_0000 | (r as u32 & 0x000f_ffff));
            let sport = (r >> 32) as u16 | 1024;
            let conn = Conn {
                backend_id: 1 + (r >> 48) as u32 % 3,
                service_id: 1,
                // Service 1's first generation in a fresh data plane; a wrong value
                // would turn every "spread" hit into a miss, which the path proof
                // (`conn_hit`) catches.
                service_gen: 1,
                flow_hash: r as u32,
                ..Conn::default()
            };
            conns
                .insert(flow_key(src, sport, dst, 80), conn, 0)
                .unwrap();
            keys.push((src, sport));
        }
    }
    let fill = t.elapsed();
    let live = plane.conns().keys().count() as u64;
    // Draw the spread set from the most recent quarter of the capacity: past capacity
    // the LRU has evicted older entries (the hit fraction is reported, not assumed).
    let capacity = u64::from(table.unwrap_or(MAX_CONNS));
    let recent = (flows.min(capacity / 4)) as usize;
    let pool = &keys[keys.len() - recent..];
    let spread: Vec<Vec<u8>> = (0..SPREAD_FLOWS)
        .map(|_| {
            let (src, sport) = pool[rng.next() as usize % pool.len()];
            frame(src, sport, dst, packet::Flags::ACK)
        })
        .collect();
    let hot = frame(Ipv4Addr::new(10, 2, 0, 1), 40000, dst, packet::Flags::ACK);
    // Its second packet confirms it into the connection table.
    plane.run(programs::BALANCER, &hot, 1);
    plane.run(programs::BALANCER, &hot, 1);
    // The program's own key layout must be ours, or the fill would be dead weight.
    let key = flow_key(Ipv4Addr::new(10, 2, 0, 1), 40000, dst, 80);
    assert!(
        plane.conns().get(&key, 0).is_ok(),
        "the data plane's flow key differs from the bench's"
    );
    println!(
        "  filled {flows} flows in {:.1}s ({} table): {live} live",
        fill.as_secs_f64(),
        table.map_or_else(
            || format!("MAX_CONNS = {MAX_CONNS}"),
            |n| format!("pre-pinned {n}-entry")
        )
    );
    Point {
        size: flows,
        plane,
        hot,
        spread,
        vips: vec![dst],
        live: Some(live),
        samples: Default::default(),
        spread_hits: 0,
        spread_total: 0,
    }
}

/// Floors measured in the same rounds: bench_tx with `repeat` and as single shots.
struct Floors {
    plane: Plane,
    frame: Vec<u8>,
    repeat: Vec<f64>,
    single: Vec<f64>,
}

fn measure(points: &mut [Point], floors: &mut Floors, next_client: &mut u32) {
    for _ in 0..ROUNDS {
        let out = floors.plane.run(bench::TX, &floors.frame, REPEAT);
        floors.repeat.push(out.duration.as_nanos() as f64);
        let mut total = 0u64;
        for _ in 0..SHOTS {
            total += floors
                .plane
                .run(bench::TX, &floors.frame, 1)
                .duration
                .as_nanos() as u64;
        }
        floors.single.push(total as f64 / SHOTS as f64);
        for p in points.iter_mut() {
            // Hot established flow, repeat.
            let hit0 = p.plane.stat(Stat::ConnHit);
            let out = p.plane.run(programs::BALANCER, &p.hot, REPEAT);
            let moved = p.plane.stat(Stat::ConnHit) - hit0;
            assert_eq!(moved, u64::from(REPEAT), "size {}: hot path proof", p.size);
            p.samples[0].push(out.duration.as_nanos() as f64);
            // Spread established flows, single shots.
            let hit0 = p.plane.stat(Stat::ConnHit);
            let prog = p.plane.dp.xdp(programs::BALANCER).unwrap();
            let mut total = 0u64;
            for i in 0..SHOTS {
                let f = &p.spread[(i * 7919) % p.spread.len()];
                total += timed(prog, f, 1).duration.as_nanos() as u64;
            }
            p.spread_hits += p.plane.stat(Stat::ConnHit) - hit0;
            p.spread_total += SHOTS as u64;
            p.samples[1].push(total as f64 / SHOTS as f64);
            // New flows (SYN from a new client each), single shots.
            let miss0 = p.plane.stat(Stat::ConnMiss);
            let mut total = 0u64;
            for i in 0..SHOTS {
                *next_client += 1;
                let mut f = frame(
                    Ipv4Addr::from(*next_client),
                    40000,
                    p.vips[i % p.vips.len()],
                    packet::SYN,
                );
                f[6..12].copy_from_slice(&CLIENT_MAC);
                let prog = p.plane.dp.xdp(programs::BALANCER).unwrap();
                total += timed(prog, &f, 1).duration.as_nanos() as u64;
            }
            let moved = p.plane.stat(Stat::ConnMiss) - miss0;
            assert_eq!(moved, SHOTS as u64, "size {}: new-flow path proof", p.size);
            p.samples[2].push(total as f64 / SHOTS as f64);
            // The same spread flows through the connection-tracking floor.
            let prog = p.plane.floors.xdp(bench::CONN);
            let mut total = 0u64;
            for i in 0..SHOTS {
                let f = &p.spread[(i * 7919) % p.spread.len()];
                let out = timed(prog, f, 1);
                assert_eq!(
                    out.return_value, XDP_TX,
                    "size {}: bench_conn missed",
                    p.size
                );
                total += out.duration.as_nanos() as u64;
            }
            p.samples[3].push(total as f64 / SHOTS as f64);
        }
    }
}

fn stats3(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn report(dimension: &str, what: &str, points: &[Point], floors: &Floors) -> serde_json::Value {
    let (tx_r, ..) = stats3(&floors.repeat);
    let (tx_s, ..) = stats3(&floors.single);
    println!(
        "\n{dimension}: ns/packet median (min-max) over {ROUNDS} rounds; floors this run: \
         XDP_TX {tx_r:.1} ns (repeat), {tx_s:.1} ns (single shot)"
    );
    println!(
        "  {:>9} {:>10} {:>24} {:>24} {:>24} {:>22}",
        what,
        "live",
        "established, hot (xTX)",
        "established, spread",
        "new flow (SYN)",
        "conn floor, spread"
    );
    let names = [
        "established_hot",
        "established_spread",
        "new_flow",
        "conn_floor_spread",
    ];
    let mut rows = Vec::new();
    for p in points {
        let cells: Vec<(f64, f64, f64)> = p.samples.iter().map(|s| stats3(s)).collect();
        let hit = p.spread_hits as f64 / p.spread_total as f64;
        println!(
            "  {:>9} {:>10} {:>8.1} ({:.0}-{:.0}) {:>5.2}x {:>9.1} ({:.0}-{:.0}) {:>4.0}% hit {:>9.1} ({:.0}-{:.0}) {:>5.2}x {:>9.1} ({:.0}-{:.0})",
            p.size,
            p.live.map_or_else(|| "-".into(), |l| l.to_string()),
            cells[0].0,
            cells[0].1,
            cells[0].2,
            cells[0].0 / tx_r,
            cells[1].0,
            cells[1].1,
            cells[1].2,
            hit * 100.0,
            cells[2].0,
            cells[2].1,
            cells[2].2,
            cells[2].0 / tx_s,
            cells[3].0,
            cells[3].1,
            cells[3].2,
        );
        let mut row = serde_json::json!({what: p.size, "live_conns": p.live,
            "spread_hit_fraction": hit});
        for (name, (med, min, max)) in names.iter().zip(&cells) {
            row[name] = serde_json::json!({"median_ns": med, "min_ns": min, "max_ns": max});
        }
        rows.push(row);
    }
    // Flatness: largest median over the smallest point's median, per measurement.
    let mut flat = serde_json::Map::new();
    for (k, name) in names.iter().enumerate() {
        let first = stats3(&points[0].samples[k]).0;
        let worst = points
            .iter()
            .map(|p| stats3(&p.samples[k]).0 / first)
            .fold(0.0, f64::max);
        println!("  {name}: largest / first = {worst:.3}");
        flat.insert((*name).into(), worst.into());
    }
    serde_json::json!({"dimension": dimension, "points": rows,
        "floor_tx_repeat_ns": tx_r, "floor_tx_single_ns": tx_s,
        "largest_over_first": flat})
}

pub fn run() -> serde_json::Value {
    let started = Instant::now();
    let mut next_client: u32 = 0x0b00_0000;
    let floors = || {
        let plane = Plane::load("scale-floor", None);
        Floors {
            plane,
            frame: frame(
                Ipv4Addr::new(10, 2, 0, 1),
                40000,
                vip(1),
                packet::Flags::ACK,
            ),
            repeat: Vec::new(),
            single: Vec::new(),
        }
    };
    let mut out = Vec::new();

    println!("scaling: building services 10 / 100 / 1,000 (one table install each, ~9 ms)");
    let mut points: Vec<Point> = [10u32, 100, 1_000]
        .iter()
        .map(|&n| point_with("scale-svc", u64::from(n), n, 3))
        .collect();
    let mut f = floors();
    measure(&mut points, &mut f, &mut next_client);
    out.push(report("services", "services", &points, &f));
    drop(points);

    println!("\nscaling: backends per service 10 / 100 / 1,000 / 10,000 (Maglev M = 65537)");
    let mut points: Vec<Point> = [10u32, 100, 1_000, 10_000]
        .iter()
        .map(|&n| point_with("scale-be", u64::from(n), 1, n))
        .collect();
    let mut f = floors();
    measure(&mut points, &mut f, &mut next_client);
    out.push(report("backends per service", "backends", &points, &f));
    drop(points);

    println!(
        "\nscaling: live flows (LRU MAX_CONNS = {MAX_CONNS}; 1,000,000 also with a \
         pre-pinned 1,048,576-entry table)"
    );
    let mut points: Vec<Point> = [10u64, 1_000, 100_000, u64::from(MAX_CONNS), 1_000_000]
        .iter()
        .map(|&n| point_flows(n, None))
        .collect();
    points.push(point_flows(1_000_000, Some(1 << 20)));
    let mut f = floors();
    measure(&mut points, &mut f, &mut next_client);
    println!("  (last row: 1,000,000 flows in a pre-pinned 1,048,576-entry table)");
    let mut flows = report("live flows", "flows", &points, &f);
    flows["note"] = "the last point is 1,000,000 flows in a pre-pinned 1,048,576-entry LRU \
                     (same key/value; the loader reuses pinned maps); the others use the \
                     program's own MAX_CONNS table"
        .into();
    out.push(flows);
    println!("\n(scaling bench time {:?})", started.elapsed());
    serde_json::json!({"scaling": out, "rounds": ROUNDS, "repeat": REPEAT, "shots": SHOTS})
}
