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
    ChildGuard, Netns,
};

/// Probes start within one interval of the daemon's start; the rest is margin.
const WARMUP: Duration = Duration::from_secs(4);
const SAMPLE: Duration = Duration::from_secs(15);
const RESPONDER_THREADS: usize = 4;
/// The daemon's metrics endpoint, inside the namespace.
const METRICS: &str = "127.0.0.1:9641";

pub fn run(counts: &[u32]) -> serde_json::Value {
    println!(
        "\nhealth checks: `xlb run` HTTP-checking N backends every 1 s (timeout 500 ms), \
         {}s sample after {}s warm-up",
        SAMPLE.as_secs(),
        WARMUP.as_secs()
    );
    println!(
        "  {:>7} {:>10} {:>12} {:>10} {:>10} {:>8} {:>10}",
        "N", "CPU %", "probes/s", "RSS MiB", "peak MiB", "downs", "scrape ms"
    );
    let mut out = Vec::new();
    for &n in counts {
        let r = measure(n);
        println!(
            "  {:>7} {:>10.1} {:>12.0} {:>10.1} {:>10.1} {:>8} {:>10.1}",
            n, r.cpu_percent, r.probes_per_s, r.rss_mib, r.peak_mib, r.downs, r.scrape_ms
        );
        out.push(serde_json::json!({
            "backends": n, "interval_ms": 1000, "cpu_percent_of_one_core": r.cpu_percent,
            "probes_per_s": r.probes_per_s, "rss_mib": r.rss_mib, "peak_rss_mib": r.peak_mib,
            "backends_marked_down": r.downs, "metrics_scrape_ms": r.scrape_ms,
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
    scrape_ms: f64,
}

fn backend(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 99, (i >> 8) as u8, i as u8)
}

/// The daemon checking N backends of one service in a namespace of their own, each
/// answered by the responder threads.
struct HealthLab {
    ns: Netns,
    daemon: ChildGuard,
    log: TempFile,
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    responders: Vec<std::thread::JoinHandle<()>>,
    _config: TempFile,
    _pins: PinDir,
}

impl HealthLab {
    fn start(n: u32, check: &serde_json::Value) -> HealthLab {
        let ns = Netns::new("hcbench");
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["route", "add", "local", "10.99.0.0/16", "dev", "lo"]);
        // Something to attach to (no traffic crosses it; this kernel has no dummy module).
        ns.ip(&[
            "link", "add", "xlbhc0", "type", "veth", "peer", "name", "xlbhc1",
        ]);
        ns.ip(&["link", "set", "xlbhc0", "up"]);
        ns.ip(&["link", "set", "xlbhc1", "up"]);
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
        let backends: Vec<serde_json::Value> = backends(n)
            .map(|a| serde_json::json!({"address": a.to_string(), "mac": "02:00:00:00:00:01"}))
            .collect();
        let config = TempFile::new("hcbench.json");
        let json = serde_json::json!({"services": [{
            "vip": "10.98.0.1", "port": 80, "protocol": "tcp", "mode": "dsr",
            "check": check, "backends": backends,
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
        .args(["--metrics-listen", METRICS])
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log.path()).unwrap());
        let daemon = ns.spawn(cmd);
        assert!(
            wait_until(Duration::from_secs(60), || log.read().contains("running;")),
            "xlb did not start:\n{}",
            log.read()
        );
        HealthLab {
            ns,
            daemon,
            log,
            served,
            stop,
            responders,
            _config: config,
            _pins: pins,
        }
    }

    fn stop(mut self) {
        self.daemon.terminate(Duration::from_secs(10));
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocked accept()s.
        for _ in 0..RESPONDER_THREADS {
            let _ = self
                .ns
                .run(|| std::net::TcpStream::connect((Ipv4Addr::new(10, 99, 8, 1), 80)));
        }
        for r in self.responders.drain(..) {
            let _ = r.join();
        }
    }
}

/// Backends 1..=n, skipping the .0 and .255 of each /24 for tidiness.
fn backends(n: u32) -> impl Iterator<Item = Ipv4Addr> {
    (1..)
        .filter(|i| (i & 0xff) != 0 && (i & 0xff) != 0xff)
        .take(n as usize)
        .map(backend)
}

fn measure(n: u32) -> Measured {
    let lab = HealthLab::start(
        n,
        &serde_json::json!({"type": "http", "path": "/healthz", "interval_ms": 1000,
                           "timeout_ms": 500, "rise": 2, "fall": 3}),
    );
    std::thread::sleep(WARMUP);
    let pid = lab.daemon.pid();
    let (cpu0, served0, t0) = (
        cpu_ticks(pid),
        lab.served.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(SAMPLE);
    let (cpu1, served1, elapsed) = (
        cpu_ticks(pid),
        lab.served.load(Ordering::Relaxed),
        t0.elapsed(),
    );
    let (rss, peak) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    let downs = lab.log.read().matches("backend down").count();
    let scrape_ms = lab.ns.run(scrape_median_ms);
    lab.stop();
    Measured {
        cpu_percent: (cpu1 - cpu0) as f64 / clock_hz() / elapsed.as_secs_f64() * 100.0,
        probes_per_s: (served1 - served0) as f64 / elapsed.as_secs_f64(),
        rss_mib: rss as f64 / 1024.0,
        peak_mib: peak as f64 / 1024.0,
        downs,
        scrape_ms,
    }
}

/// The median of 5 `GET /metrics` (the daemon renders on its main loop), in ms.
fn scrape_median_ms() -> f64 {
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            let mut s = std::net::TcpStream::connect(METRICS).expect("connect to /metrics");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut body = Vec::new();
            s.read_to_end(&mut body).unwrap();
            assert!(body.starts_with(b"HTTP/1.1 200"), "metrics scrape failed");
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[2]
}

fn clock_hz() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Failure detection at scale (issue 14, item 8): N backends TCP-checked every 1 s
/// with a 1 s timeout and fall 3, then the backends of 10.99.0.0/21 (about 20 %)
/// blackholed at once: their probes time out from then on. Each must be out within
/// fall × interval + timeout (4 s) + 10 %; no other backend may go down.
pub fn blackhole(n: u32) -> serde_json::Value {
    const FALL: u32 = 3;
    let (interval, timeout) = (Duration::from_secs(1), Duration::from_secs(1));
    let bound = (interval * FALL + timeout).mul_f64(1.1);
    let lab = HealthLab::start(
        n,
        &serde_json::json!({"type": "tcp", "interval_ms": interval.as_millis() as u64,
                           "timeout_ms": timeout.as_millis() as u64, "rise": 2, "fall": FALL}),
    );
    std::thread::sleep(WARMUP);
    let hole: Vec<Ipv4Addr> = backends(n).filter(|a| a.octets()[2] < 8).collect();
    // Packets to the hole leave through the veth to a neighbour that does not
    // forward them: silence, as from a dead host (one static neighbour entry, not
    // thousands of unanswered ARP requests).
    let ns = &lab.ns;
    ns.ip(&["addr", "add", "10.97.0.1/30", "dev", "xlbhc0"]);
    let peer_mac = ns.mac("xlbhc1");
    ns.add_neigh("xlbhc0", "10.97.0.2", peer_mac);
    for local in [
        "10.99.8.0/21",
        "10.99.16.0/20",
        "10.99.32.0/19",
        "10.99.64.0/18",
    ] {
        ns.ip(&["route", "add", "local", local, "dev", "lo"]);
    }
    ns.ip(&[
        "route",
        "add",
        "10.99.0.0/21",
        "via",
        "10.97.0.2",
        "dev",
        "xlbhc0",
    ]);
    let cpu0 = cpu_ticks(lab.daemon.pid());
    let holed_at = std::time::SystemTime::now();
    ns.ip(&[
        "route",
        "del",
        "local",
        "10.99.0.0/16",
        "dev",
        "lo",
        "table",
        "local",
    ]);
    let started = Instant::now();
    let all_down = |log: &str| log.matches("backend down").count() >= hole.len();
    wait_until(bound * 3, || all_down(&lab.log.read()));
    std::thread::sleep(Duration::from_secs(2));
    let cpu = (cpu_ticks(lab.daemon.pid()) - cpu0) as f64 / clock_hz();
    let took = started.elapsed();
    let log = lab.log.read();
    lab.stop();

    let holed_s = holed_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut detected: Vec<f64> = Vec::new();
    let mut wrong = 0;
    for line in log.lines().filter(|l| l.contains("backend down")) {
        let Some(addr) = field(line, "backend=").and_then(|a| a.parse::<Ipv4Addr>().ok()) else {
            continue;
        };
        if !hole.contains(&addr) {
            wrong += 1;
            continue;
        }
        if let Some(at) = line.split_whitespace().next().and_then(rfc3339_seconds) {
            detected.push(at - holed_s);
        }
    }
    detected.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        detected
            .get(((detected.len() as f64 * q) as usize).min(detected.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let within = detected
        .iter()
        .filter(|d| **d <= bound.as_secs_f64())
        .count();
    println!(
        "\nfailure detection: {n} backends TCP-checked every 1 s (timeout 1 s, fall 3), {} \
         blackholed at once; bound fall × interval + timeout + 10 % = {:.1} s",
        hole.len(),
        bound.as_secs_f64()
    );
    println!(
        "  detected {}/{} (within the bound: {within}), p50 {:.2} s, p99 {:.2} s, max {:.2} s; \
         healthy backends marked down: {wrong}; daemon CPU {:.1} s over {:.1} s",
        detected.len(),
        hole.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        cpu,
        took.as_secs_f64()
    );
    serde_json::json!({
        "backends": n, "blackholed": hole.len(), "interval_ms": 1000, "timeout_ms": 1000,
        "fall": FALL, "bound_s": bound.as_secs_f64(), "detected": detected.len(),
        "within_bound": within, "p50_s": pct(0.5), "p99_s": pct(0.99), "max_s": pct(1.0),
        "healthy_marked_down": wrong, "daemon_cpu_s": cpu,
    })
}

/// The value of `key` (e.g. `backend=`) in a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp
/// (`2026-12-07T05:30:15.852633Z`, as the daemon logs).
fn rfc3339_seconds(ts: &str) -> Option<f64> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let sec = t.next()?.parse::<f64>().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
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
