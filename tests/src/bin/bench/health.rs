//! Health-check load: the real `xlb run` daemon HTTP-checking N backends every second,
//! measured from outside (its CPU time and RSS from /proc), with every probe answered.
//!
//! All N backends are addresses of one namespace (`ip route add local 10.99.0.0/16 dev
//! lo` makes the whole /16 local), answered by a small multi-threaded HTTP responder in
//! this process, so the probes are real TCP connections and HTTP exchanges over the
//! namespace's loopback and never leave it.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use testbed::{
    dataplane::{wait_until, xlb_bin, PinDir, TempFile},
    Netns,
};

/// Probes start within one interval of the daemon's start; the rest is margin.
const WARMUP: Duration = Duration::from_secs(4);
const SAMPLE: Duration = Duration::from_secs(15);
const RESPONDER_THREADS: usize = 4;

pub fn run(counts: &[u32]) -> serde_json::Value {
    println!(
        "\nhealth checks: `xlb run` HTTP-checking N backends every 1 s (timeout 500 ms), \
         {}s sample after {}s warm-up",
        SAMPLE.as_secs(),
        WARMUP.as_secs()
    );
    println!(
        "  {:>7} {:>10} {:>12} {:>10} {:>10} {:>8}",
        "N", "CPU %", "probes/s", "RSS MiB", "peak MiB", "downs"
    );
    let mut out = Vec::new();
    for &n in counts {
        let r = measure(n);
        println!(
            "  {:>7} {:>10.1} {:>12.0} {:>10.1} {:>10.1} {:>8}",
            n, r.cpu_percent, r.probes_per_s, r.rss_mib, r.peak_mib, r.downs
        );
        out.push(serde_json::json!({
            "backends": n, "interval_ms": 1000, "cpu_percent_of_one_core": r.cpu_percent,
            "probes_per_s": r.probes_per_s, "rss_mib": r.rss_mib, "peak_rss_mib": r.peak_mib,
            "backends_marked_down": r.downs,
        }));
    }
    serde_json::Value::Array(out)
}

struct Measured {
    cpu_percent: f64,
    probes_per_s: f64,
    rss_mib: f64,
    peak_mib: f64,
    downs: usize,
}

fn backend(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, (i >> 8) as u8, i as u8)
}

fn measure(n: u32) -> Measured {
    let ns = Netns::new("hcbench");
    ns.ip(&["link", "set", "lo", "up"]);
    ns.ip(&["route", "add", "local", "10.99.0.0/16", "dev", "lo"]);
    // Something to attach to (no traffic crosses it; this kernel has no dummy module).
    ns.ip(&[
        "link", "add", "xlbhc0", "type", "veth", "peer", "name", "xlbhc1",
    ]);
    ns.ip(&["link", "set", "xlbhc0", "up"]);
    let served = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let listener = ns
        .run(|| TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], 80))))
        .expect("bind the responder");
    let responders: Vec<_> = (0..RESPONDER_THREADS)
        .map(|_| {
            let (listener, served, stop) =
                (listener.try_clone().unwrap(), served.clone(), stop.clone());
            std::thread::spawn(move || respond(&listener, &served, &stop))
        })
        .collect();

    // Backends 1..=n, skipping the .0 and .255 of each /24 for tidiness.
    let backends: Vec<serde_json::Value> = (1..)
        .filter(|i| (i & 0xff) != 0 && (i & 0xff) != 0xff)
        .take(n as usize)
        .map(|i| serde_json::json!({"address": backend(i).to_string(), "mac": "02:00:00:00:00:01"}))
        .collect();
    let config = TempFile::new("hcbench.json");
    let json = serde_json::json!({"services": [{
        "vip": "10.98.0.1", "port": 80, "protocol": "tcp", "mode": "dsr",
        "check": {"type": "http", "path": "/healthz", "interval_ms": 1000, "timeout_ms": 500,
                  "rise": 2, "fall": 3},
        "backends": backends,
    }]});
    std::fs::write(config.path(), serde_json::to_vec(&json).unwrap()).unwrap();
    let log = TempFile::new("hcbench.log");
    let pins = PinDir::new("hcbench");
    let mut cmd = ns.command(xlb_bin());
    cmd.args([
        "run",
        "--iface",
        "xlbhc0",
        "--xdp-mode",
        "generic",
        "--config",
    ])
    .arg(config.path())
    .arg("--pin-dir")
    .arg(pins.path())
    .env("NO_COLOR", "1")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log.path()).unwrap());
    let mut daemon = ns.spawn(cmd);
    assert!(
        wait_until(Duration::from_secs(60), || log.read().contains("running;")),
        "xlb did not start:\n{}",
        log.read()
    );
    std::thread::sleep(WARMUP);
    let pid = daemon.pid();
    let (cpu0, served0, t0) = (
        cpu_ticks(pid),
        served.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(SAMPLE);
    let (cpu1, served1, elapsed) = (cpu_ticks(pid), served.load(Ordering::Relaxed), t0.elapsed());
    let (rss, peak) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    daemon.terminate(Duration::from_secs(10));
    let downs = log.read().matches("backend down").count();
    stop.store(true, Ordering::Relaxed);
    // Wake the blocked accept()s.
    for _ in 0..RESPONDER_THREADS {
        let _ = ns.run(|| std::net::TcpStream::connect((Ipv4Addr::new(10, 99, 0, 1), 80)));
    }
    for r in responders {
        let _ = r.join();
    }
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Measured {
        cpu_percent: (cpu1 - cpu0) as f64 / hz / elapsed.as_secs_f64() * 100.0,
        probes_per_s: (served1 - served0) as f64 / elapsed.as_secs_f64(),
        rss_mib: rss as f64 / 1024.0,
        peak_mib: peak as f64 / 1024.0,
        downs,
    }
}

/// Answers every connection with a minimal HTTP 200 after reading the request head.
fn respond(listener: &TcpListener, served: &AtomicU64, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut s, _)) = listener.accept() else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => head.extend_from_slice(&buf[..k]),
            }
        }
        if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            .is_ok()
        {
            served.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall: 12 and 13 after "pid (comm) ".
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc status")
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
