//! Connections per second for short TCP connections, xlb (DSR, the real daemon) next to
//! HAProxy (TCP mode, the Debian package) doing the same job on the same topology: the
//! DSR lab of `testbed::lab` (client, balancer, three backends greeting with their
//! name), the client connecting to the VIP (xlb) or to HAProxy on the balancer's
//! address, in alternating rounds of one run.
//!
//! Everything shares this machine's cores: client, balancer and backends all compete,
//! so the ratio says how much of a connection's cost the balancer adds, not what either
//! would do on dedicated hardware.

use std::{
    net::SocketAddr,
    os::fd::{FromRawFd, OwnedFd},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use std::io::{BufRead, BufReader};

use aya::programs::{
    links::{FdLink, PinnedLink},
    loaded_programs,
};
use testbed::{
    dataplane::{wait_until, TempFile},
    lab::Lab,
};

/// One short connection: connect, read the backend's greeting line, close. (The
/// client speaks last-to-close so that HAProxy, which aborts a connection whose client
/// half-closes before the server is connected, sees the same exchange as xlb.)
fn greet(addr: SocketAddr) -> std::io::Result<String> {
    let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line)?;
    if line.is_empty() {
        return Err(std::io::Error::other("closed without a greeting"));
    }
    Ok(line.trim().to_owned())
}

const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;
const CLIENT_THREADS: usize = 4;
const HAPROXY_PORT: u16 = 8080;

pub fn run() -> serde_json::Value {
    println!(
        "\nconnections/s, short TCP connections (connect, greeting, close), {CLIENT_THREADS} \
         client threads, {ROUNDS} alternating rounds of {}s",
        ROUND.as_secs()
    );
    let mut lab = Lab::new("cps");
    lab.write_config(&[1, 1, 1]);
    lab.start_peer();
    lab.start_xlb(&[]);
    // Many short connections: widen the client's ports and let it reuse TIME_WAIT ones.
    lab.client
        .sysctl("net.ipv4.ip_local_port_range", "1024 65535");
    lab.client.sysctl("net.ipv4.tcp_tw_reuse", 1);
    let haproxy_cfg = TempFile::new("cps-haproxy.cfg");
    std::fs::write(
        haproxy_cfg.path(),
        format!(
            "global\n  maxconn 8000\n  nbthread 1\ndefaults\n  mode tcp\n  \
             timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
             frontend f\n  bind 10.60.0.2:{HAPROXY_PORT}\n  default_backend b\n\
             backend b\n  balance roundrobin\n  server be1 10.60.0.11:80\n  \
             server be2 10.60.0.12:80\n  server be3 10.60.0.13:80\n"
        ),
    )
    .unwrap();
    let mut cmd = lab.lb.command("haproxy");
    cmd.arg("-db")
        .arg("-f")
        .arg(haproxy_cfg.path())
        .stdout(Stdio::null());
    let log = TempFile::new("cps-haproxy.log");
    cmd.stderr(std::fs::File::create(log.path()).unwrap());
    let _haproxy = lab.lb.spawn(cmd);
    let haproxy_addr = SocketAddr::from(([10, 60, 0, 2], HAPROXY_PORT));
    assert!(
        wait_until(Duration::from_secs(10), || lab
            .client
            .run(move || greet(haproxy_addr))
            .is_ok()),
        "haproxy does not answer: {}",
        log.read()
    );
    // The balancer's own CPU per connection, next to the connection rate: xlb's XDP
    // program run time (kernel BPF stats, on while `_stats` is open) and HAProxy's
    // process CPU time (utime + stime; its sockets' softirq work is not in it, so it
    // is HAProxy's lower bound).
    let _stats = enable_bpf_stats();
    let haproxy_pid = _haproxy.pid();
    let (mut xlb, mut haproxy) = (Vec::new(), Vec::new());
    let (mut xlb_ns, mut haproxy_ns, mut xlb_runs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (t0, n0) = xlb_run_time(&lab);
        let (rate, failed, done) = measure(&lab, lab.vip());
        let (t1, n1) = xlb_run_time(&lab);
        xlb.push((rate, failed));
        xlb_ns.push((t1 - t0).as_nanos() as f64 / done.max(1) as f64);
        xlb_runs.push((n1 - n0) as f64 / done.max(1) as f64);
        let c0 = crate::health::cpu_ticks(haproxy_pid);
        let (rate, failed, done) = measure(&lab, haproxy_addr);
        let c1 = crate::health::cpu_ticks(haproxy_pid);
        haproxy.push((rate, failed));
        haproxy_ns.push((c1 - c0) as f64 * 1e9 / clock_ticks_per_s() / done.max(1) as f64);
    }
    let med = |v: &mut Vec<(f64, u64)>| {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        (
            v[v.len() / 2].0,
            v[0].0,
            v[v.len() - 1].0,
            v.iter().map(|x| x.1).sum::<u64>(),
        )
    };
    let (x, xmin, xmax, xfail) = med(&mut xlb);
    let (h, hmin, hmax, hfail) = med(&mut haproxy);
    println!(
        "  {:<26} {:>10} {:>10} {:>10} {:>8}",
        "", "median/s", "min", "max", "failed"
    );
    println!(
        "  {:<26} {x:>10.0} {xmin:>10.0} {xmax:>10.0} {xfail:>8}",
        "xlb (DSR, XDP)"
    );
    println!(
        "  {:<26} {h:>10.0} {hmin:>10.0} {hmax:>10.0} {hfail:>8}",
        "haproxy 2.6 (TCP mode)"
    );
    println!("  ratio xlb / haproxy: {:.2}×", x / h);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (xc, hc, runs) = (
        median(&mut xlb_ns),
        median(&mut haproxy_ns),
        median(&mut xlb_runs),
    );
    println!(
        "  balancer CPU per connection (median): xlb {:.2} µs (XDP run time, {runs:.1} \
         program runs), haproxy {:.1} µs (process CPU): {:.0}× less",
        xc / 1e3,
        hc / 1e3,
        hc / xc
    );
    serde_json::json!({
        "client_threads": CLIENT_THREADS, "round_s": ROUND.as_secs(), "rounds": ROUNDS,
        "xlb": {"median": x, "min": xmin, "max": xmax, "failed": xfail,
                "cpu_ns_per_connection": xc, "program_runs_per_connection": runs},
        "haproxy": {"median": h, "min": hmin, "max": hmax, "failed": hfail,
                    "cpu_ns_per_connection": hc},
        "ratio": x / h,
        "cpu_per_connection_ratio": hc / xc,
    })
}

/// `BPF_ENABLE_STATS` (kernel >= 5.8): run time and count of every BPF program are
/// kept while the returned fd is open, so they switch off again however the bench ends.
fn enable_bpf_stats() -> OwnedFd {
    const BPF_ENABLE_STATS: libc::c_long = 32;
    // `union bpf_attr`'s `enable_stats`: the type, 0 = BPF_STATS_RUN_TIME.
    let mut attr = [0u32; 4];
    // SAFETY: the attr is the size passed and outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_ENABLE_STATS,
            attr.as_mut_ptr(),
            size_of_val(&attr),
        )
    };
    assert!(
        fd >= 0,
        "BPF_ENABLE_STATS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd the kernel just returned, owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Total run time and run count of the program on the lab balancer's XDP link.
fn xlb_run_time(lab: &Lab) -> (Duration, u64) {
    let link = FdLink::from(PinnedLink::from_pin(lab.link_pin()).expect("balancer link pin"));
    let id = link.info().expect("link info").program_id();
    let prog = loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == id)
        .expect("the linked program is loaded");
    (prog.run_time(), prog.run_count())
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Connections per second to `addr` over one round, how many failed and how many were
/// made.
fn measure(lab: &Lab, addr: SocketAddr) -> (f64, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|_| {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            lab.client.spawn_thread("cps", move || {
                while !stop.load(Ordering::Relaxed) {
                    match greet(addr) {
                        Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(ROUND);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    (done as f64 / secs, failed.load(Ordering::Relaxed), done)
}
