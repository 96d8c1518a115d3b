//! `cargo xtask bench e2e`: packets per second through the balancer between two network
//! namespaces on a veth pair with native XDP, next to a reflector on the same path.
//!
//! ```text
//!   ns gen                                   ns lb
//!   g0: XDP_DROP counter  <-- veth -->  l0: xlb (DSR to g0's MAC)  | bench_tx (reflector)
//!                                            | bench_conn (conn-table lookup + reflector)
//!   generator: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on g0 (bench_tx: the
//!   frame is transmitted out of g0 for every iteration)
//! ```
//!
//! The generator runs a MAC-swap program over a prepared frame in live-frames mode, so
//! every iteration really transmits one frame out of g0 to l0. l0 runs either the
//! balancer (one DSR service whose backend MAC is g0's: an established-flow packet goes
//! straight back out of l0) or the XDP_TX floor program (MAC swap + XDP_TX: the same
//! path, the least a forwarder does) or `bench_conn` (one lookup of the flow in the
//! connection table, then the same: the least a balancer that tracks connections does).
//! g0 runs a 2-instruction XDP_DROP program; its
//! packet counter (`rx_packets`, which counts XDP frames on a veth) is what arrived.
//! The balancer's own `tx` counter is checked against it.
//!
//! Everything runs in softirq on the generator's CPU (veth schedules the peer's NAPI
//! on the sending CPU): pps = 1 / (generator + l0 program + veth hops + g0 drop) per
//! packet, so the ratio understates the balancer's own difference; the implied extra
//! ns/packet (1/pps_lb - 1/pps_reflector) is reported too.

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use aya::{programs::Xdp, TestRun as _, TestRunAttrs, TestRunOptions};
use lb_common::{
    programs, service::AF_INET, wire::IPPROTO_TCP, Backend, Conn, FlowKey, ForwardMode, Service,
    Stat, VipKey,
};
use lb_userspace::dataplane::aya::{maps, stats, AyaPort, LoadOptions};
use testbed::{
    bench::{self, BenchPrograms},
    dataplane::PinDir,
    packet,
    test_run::XdpMd,
    Netns,
};

const ROUNDS: usize = 5;
const FRAMES: u32 = 2_000_000;
const VIP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 100);
const CLIENT: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 1);

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-initialised bpf_attr prefix of the size passed; pointers
    // in it outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, size_of::<T>() as u32) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A 2-instruction XDP program: `r0 = XDP_DROP; exit`.
fn load_drop() -> OwnedFd {
    #[repr(C)]
    #[derive(Default)]
    struct LoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        _rest: [u64; 12],
    }
    // mov64 r0, 1 (XDP_DROP); exit
    let insns: [u64; 2] = [0xb7 | (1u64 << 32), 0x95];
    let license = c"GPL";
    let mut attr = LoadAttr {
        prog_type: 6, // BPF_PROG_TYPE_XDP
        insn_cnt: 2,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..9].copy_from_slice(b"bench_rx_");
    let fd = sys_bpf(5, &mut attr).expect("BPF_PROG_LOAD of the drop program");
    // SAFETY: a new fd the kernel just gave us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Attaches `prog` to `ifindex` in native (driver) mode with BPF_LINK_CREATE; the
/// program stays attached while the returned link fd is open. Call in the interface's
/// namespace.
fn attach_native(prog: impl AsFd, ifindex: u32) -> OwnedFd {
    #[repr(C)]
    #[derive(Default)]
    struct LinkAttr {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        _rest: [u64; 6],
    }
    let mut attr = LinkAttr {
        prog_fd: prog.as_fd().as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: 37, // BPF_XDP
        flags: 1 << 2,   // XDP_FLAGS_DRV_MODE
        ..Default::default()
    };
    let fd = sys_bpf(28, &mut attr).expect("BPF_LINK_CREATE (native XDP)");
    // SAFETY: a new fd the kernel just gave us.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Live-frames test run: `frames` iterations of `prog`, each on a fresh copy of `frame`
/// arriving on `ifindex` (XDP_TX really sends it out there). Call in the interface's
/// namespace.
fn generate(prog: &Xdp, frame: &[u8], ifindex: u32, frames: u32) -> Duration {
    let ctx = XdpMd::arriving_on(frame, ifindex).to_bytes();
    let t = Instant::now();
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat: frames,
        // Batch size 0: the kernel's default (64 frames).
        attrs: TestRunAttrs::new().xdp_live_frames(0),
        ..TestRunOptions::new()
    })
    .expect("BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES");
    t.elapsed()
}

fn rx_packets(ns: &Netns, iface: &str) -> u64 {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", iface]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .expect("rx packets")
}

fn stats3(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

pub fn run() -> serde_json::Value {
    let gen = Netns::new("e2egen");
    let lb = Netns::new("e2elb");
    gen.ip(&[
        "link",
        "add",
        "g0",
        "type",
        "veth",
        "peer",
        "name",
        "l0",
        "netns",
        lb.name(),
    ]);
    for (ns, iface) in [(&gen, "g0"), (&lb, "l0")] {
        ns.disable_ipv6(iface);
        ns.link_up(iface);
    }
    let (g0, l0) = (gen.ifindex("g0"), lb.ifindex("l0"));
    let (g0_mac, l0_mac) = (gen.mac("g0"), lb.mac("l0"));

    let pins = PinDir::new("e2e");
    let mut dp = AyaPort::load(&LoadOptions {
        pin_dir: pins.path().to_path_buf(),
        ebpf_log_level: None,
        conn_entries: None,
        unconfirmed_entries: None,
        conn_lru: Default::default(),
    })
    .expect("load the data plane");
    let floors = BenchPrograms::load(&dp);
    // One DSR service on VIP:80 whose only backend is g0 (by MAC).
    {
        let ebpf = dp.ebpf_mut();
        maps::set_backend(
            ebpf,
            1,
            &Backend {
                addr: [u32::from_ne_bytes([10, 0, 1, 1]), 0, 0, 0],
                family: AF_INET,
                mac: g0_mac,
                ..Default::default()
            },
        )
        .unwrap();
        maps::swap_table(ebpf, 1, &[1; 65537]).unwrap();
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
    }
    // The generator swaps MACs before sending: prepare the frame swapped, so it leaves
    // g0 as g0 -> l0. One established flow (the first packet inserts it).
    let mut frame = packet::tcp4_frame(CLIENT, VIP, 40000, 80, packet::Flags::ACK);
    frame[0..6].copy_from_slice(&g0_mac);
    frame[6..12].copy_from_slice(&l0_mac);
    let flow_key = FlowKey {
        src: [u32::from_ne_bytes(CLIENT.octets()), 0, 0, 0],
        dst: [u32::from_ne_bytes(VIP.octets()), 0, 0, 0],
        sport_be: 40000u16.to_be(),
        dport_be: 80u16.to_be(),
        proto: IPPROTO_TCP,
        family: AF_INET,
        vlan: 0,
    };

    let drop_prog = load_drop();
    let _rx_link = gen.run(|| attach_native(&drop_prog, g0));
    let floor_fd = |name| floors.xdp(name).fd().unwrap().try_clone().unwrap();
    let generator = floors.xdp(bench::TX);
    let lb_fd = dp
        .xdp(programs::BALANCER)
        .unwrap()
        .fd()
        .unwrap()
        .try_clone()
        .unwrap();
    let tx_fd = floor_fd(bench::TX);
    // The connection-tracking floor runs after xlb in each round, so the flow it looks
    // up is in the table (it drops on a miss: the delivered fraction would show it).
    let conn_fd = floor_fd(bench::CONN);

    println!(
        "\nend to end: veth, native XDP on both ends, live-frames generator \
         ({FRAMES} frames per run, {ROUNDS} rounds, one CPU)"
    );
    let names = [
        "reflector (MAC swap + XDP_TX)",
        "xlb, DSR established flow",
        "conn-table lookup + reflector",
    ];
    let mut pps: [Vec<f64>; 3] = Default::default();
    let mut delivered: [Vec<f64>; 3] = Default::default();
    for round in 0..ROUNDS {
        for (k, prog) in [&tx_fd, &lb_fd, &conn_fd].into_iter().enumerate() {
            let link = lb.run(|| attach_native(prog, l0));
            // Warm-up (and, for xlb, the flow's insert).
            gen.run(|| generate(generator, &frame, g0, 10_000));
            std::thread::sleep(Duration::from_millis(20));
            let before = rx_packets(&gen, "g0");
            let tx_before = stats::read_loaded(dp.ebpf()).unwrap().get(Stat::Tx).packets;
            let elapsed = gen.run(|| generate(generator, &frame, g0, FRAMES));
            std::thread::sleep(Duration::from_millis(50));
            let got = rx_packets(&gen, "g0") - before;
            let tx = stats::read_loaded(dp.ebpf()).unwrap().get(Stat::Tx).packets - tx_before;
            if k == 1 {
                assert_eq!(
                    tx, got,
                    "round {round}: xlb's tx counter and g0's rx count disagree"
                );
            }
            if k == 2 {
                assert!(
                    got * 100 >= u64::from(FRAMES) * 99,
                    "round {round}: the conn-table floor delivered {got} of {FRAMES} (lookup missed?)"
                );
            }
            pps[k].push(got as f64 / elapsed.as_secs_f64());
            delivered[k].push(got as f64 / f64::from(FRAMES));
            drop(link);
        }
    }
    // The flow the balancer used must be the established one (inserted once).
    {
        let conns: aya::maps::HashMap<&aya::maps::MapData, FlowKey, Conn> =
            aya::maps::HashMap::try_from(dp.ebpf().map(lb_common::maps::CONNS).unwrap()).unwrap();
        assert!(conns.get(&flow_key, 0).is_ok(), "the flow is in the table");
    }
    let hits = stats::read_loaded(dp.ebpf()).unwrap();
    let (hit, miss) = (
        hits.get(Stat::ConnHit).packets,
        hits.get(Stat::ConnMiss).packets,
    );
    let (ref_med, ..) = stats3(&pps[0]);
    let mut rows = Vec::new();
    println!(
        "  {:<34} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "on l0", "median pps", "min", "max", "delivered", "x reflector"
    );
    for k in 0..names.len() {
        let (med, min, max) = stats3(&pps[k]);
        let (del, ..) = stats3(&delivered[k]);
        println!(
            "  {:<34} {:>12.0} {:>12.0} {:>12.0} {:>9.1}% {:>10.3}",
            names[k],
            med,
            min,
            max,
            del * 100.0,
            med / ref_med
        );
        rows.push(
            serde_json::json!({"program_on_l0": names[k], "median_pps": med,
            "min_pps": min, "max_pps": max, "delivered_fraction": del,
            "ratio_to_reflector": med / ref_med}),
        );
    }
    let (lb_med, ..) = stats3(&pps[1]);
    let extra_ns = (1.0 / lb_med - 1.0 / ref_med) * 1e9;
    println!(
        "  implied extra cost of xlb over the reflector: {extra_ns:.1} ns/packet \
         (conn_hit {hit}, conn_miss {miss})"
    );
    serde_json::json!({"e2e": rows, "frames_per_run": FRAMES, "rounds": ROUNDS,
        "implied_extra_ns_per_packet": extra_ns, "conn_hit": hit, "conn_miss": miss,
        "topology": "veth g0 (ns gen, XDP_DROP counter) <-> l0 (ns lb, program under test), \
                     native XDP; generator BPF_PROG_TEST_RUN live frames on g0"})
}
