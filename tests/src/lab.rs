//! A DSR lab driven by the real `xlb` binary (the demo and daemon-level tests): a
//! client, a balancer and three backends on one bridge, each backend holding the VIP on
//! lo and running a [`TcpServer`] that answers with its name. Unlike `topology` (which
//! loads the data plane in-process), here `xlb run --config` owns the data plane.

use std::{
    io::{BufRead, Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream},
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    dataplane::{wait_until, xlb_bin, PinDir, TempFile},
    ChildGuard, Netns, TcpServer, VethPair,
};

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 60, 0, 100);
pub const BACKENDS: [(&str, Ipv4Addr); 3] = [
    ("be1", Ipv4Addr::new(10, 60, 0, 11)),
    ("be2", Ipv4Addr::new(10, 60, 0, 12)),
    ("be3", Ipv4Addr::new(10, 60, 0, 13)),
];

/// Field order is drop order: daemons, servers, pins, namespaces.
pub struct Lab {
    pub daemons: Vec<ChildGuard>,
    pub servers: Vec<TcpServer>,
    pub pins: PinDir,
    peer_pins: PinDir,
    pub config: TempFile,
    /// Everything the `xlb` daemons wrote to stderr, in order.
    pub log: TempFile,
    log_seen: usize,
    pub macs: Vec<[u8; 6]>,
    /// The balancer's interface (in `lb`) and its switch-side peer.
    pub lb_if: VethPair,
    pub client: Netns,
    pub lb: Netns,
    pub backend_ns: Vec<Netns>,
    pub switch: Netns,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        crate::require_root();
        let switch = Netns::new(&format!("{tag}-sw"));
        switch.add_bridge("br0");
        let client = Netns::new(&format!("{tag}-cli"));
        let lb = Netns::new(&format!("{tag}-lb"));
        plug(&switch, &client, Ipv4Addr::new(10, 60, 0, 1));
        let lb_if = plug(&switch, &lb, Ipv4Addr::new(10, 60, 0, 2));
        client.ip(&["route", "add", &format!("{VIP}/32"), "via", "10.60.0.2"]);
        // veth quirk: native XDP_TX loses a pending TX checksum (docs/kernel-notes.md).
        switch.set_tx_checksumming(&lb_if.a, false);
        let (mut backend_ns, mut servers, mut macs) = (Vec::new(), Vec::new(), Vec::new());
        for (name, addr) in BACKENDS {
            let ns = Netns::new(&format!("{tag}-{name}"));
            let veth = plug(&switch, &ns, addr);
            ns.add_addr("lo", format!("{VIP}/32"));
            ns.sysctl("net.ipv4.conf.all.arp_ignore", 1);
            ns.sysctl("net.ipv4.conf.all.arp_announce", 2);
            ns.sysctl("net.ipv4.conf.all.rp_filter", 0);
            ns.sysctl(&format!("net.ipv4.conf.{}.rp_filter", veth.b), 0);
            macs.push(ns.mac(&veth.b));
            // Listen on every address: clients reach the VIP (on lo), health checks the
            // backend's own address, as with real DSR servers.
            servers.push(TcpServer::start(
                &ns,
                SocketAddr::from(([0, 0, 0, 0], 80)),
                name,
            ));
            backend_ns.push(ns);
        }
        Lab {
            daemons: Vec::new(),
            servers,
            pins: PinDir::new(tag),
            peer_pins: PinDir::new(&format!("{tag}-peer")),
            config: TempFile::new(&format!("{tag}.json")),
            log: TempFile::new(&format!("{tag}.log")),
            log_seen: 0,
            macs,
            lb_if,
            client,
            lb,
            backend_ns,
            switch,
        }
    }

    /// Backend `i`'s MAC as the config writes it.
    pub fn mac(&self, i: usize) -> String {
        self.macs[i]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    pub fn vip(&self) -> SocketAddr {
        SocketAddr::from((VIP, 80))
    }

    /// Writes the config: one DSR service on VIP:80/tcp with these backend weights.
    pub fn write_config(&self, weights: &[u32]) {
        self.write_config_with(weights, serde_json::json!({}));
    }

    /// Like [`Lab::write_config`], with `extra` fields merged into the service (e.g. a
    /// `check`).
    pub fn write_config_with(&self, weights: &[u32], extra: serde_json::Value) {
        let backends: Vec<serde_json::Value> = BACKENDS
            .iter()
            .zip(weights)
            .enumerate()
            .map(|(i, ((_, addr), w))| {
                serde_json::json!({"address": addr.to_string(), "mac": self.mac(i), "weight": w})
            })
            .collect();
        let mut service = serde_json::json!({
            "vip": VIP.to_string(), "port": 80, "protocol": "tcp", "mode": "dsr",
            "backends": backends,
        });
        if let (Some(service), serde_json::Value::Object(extra)) = (service.as_object_mut(), extra)
        {
            service.extend(extra);
        }
        let config = serde_json::json!({ "services": [service] });
        std::fs::write(
            self.config.path(),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
    }

    /// Starts `xlb run --config` on the balancer (`extra` arguments appended), logging
    /// to [`Lab::log`], and waits until it reports running (attached, signals handled).
    pub fn start_xlb(&mut self, extra: &[&str]) -> usize {
        let guard = start_xlb(
            &self.lb,
            &self.lb_if.b,
            &self.config,
            &self.pins,
            &self.log,
            extra,
        );
        self.daemons.push(guard);
        self.daemons.len() - 1
    }

    /// Starts `xlb run` like [`Lab::start_xlb`] but expects it to give up: waits up to
    /// 20 s for it to exit and returns its exit status and what it wrote to stderr.
    /// A daemon still running then is killed and reported as a panic.
    pub fn start_xlb_expecting_failure(&mut self, extra: &[&str]) -> (ExitStatus, String) {
        let err = TempFile::new("xlb-fail.log");
        let file = std::fs::File::create(err.path()).expect("create the stderr file");
        let mut cmd = self.lb.command(xlb_bin());
        cmd.args([
            "run",
            "--xdp-mode",
            "native",
            "--iface",
            &self.lb_if.b,
            "--config",
        ])
        .arg(self.config.path())
        .arg("--pin-dir")
        .arg(self.pins.path())
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(file);
        let mut guard = self.lb.spawn(cmd);
        let Some(status) = guard.wait_timeout(Duration::from_secs(20)) else {
            guard.kill();
            panic!("xlb run {extra:?} kept running:\n{}", err.read());
        };
        (status, err.read())
    }

    /// Log lines written since the last call.
    pub fn new_log_lines(&mut self) -> Vec<String> {
        let text = self.log.read();
        let lines: Vec<String> = text
            .lines()
            .skip(self.log_seen)
            .map(str::to_owned)
            .collect();
        self.log_seen += lines.len();
        lines
    }

    /// The switch-side peer of the balancer's veth needs an XDP program before native
    /// XDP_TX frames are delivered; `xlb decap` (a pass-through for plain traffic) serves.
    pub fn start_peer(&mut self) {
        let (iface, pins) = (self.lb_if.a.clone(), self.peer_pins.path().to_owned());
        self.start_peer_on(&iface, &pins);
    }

    /// [`Lab::start_peer`] for switch interface `iface` (e.g. the peer of an egress
    /// interface, which native redirects reach only with an XDP program on it too).
    pub fn start_peer_on(&mut self, iface: &str, pins: &std::path::Path) {
        let mut peer = self.switch.command(xlb_bin());
        peer.args([
            "decap",
            "--xdp-mode",
            "native",
            "--iface",
            iface,
            // Required; this peer never sees a tunnel (it only has to run XDP).
            "--allow-source",
            "10.60.0.2",
            "--pin-dir",
        ])
        .arg(pins)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        self.daemons.push(self.switch.spawn(peer));
        let link = pins.join(format!("link_{iface}"));
        assert!(
            wait_until(Duration::from_secs(20), || link.exists()),
            "peer on {iface} did not attach"
        );
    }

    /// Sends SIGHUP (reload) to daemon `i` (an index [`Lab::start_xlb`] returned).
    pub fn reload(&self, i: usize) {
        let pid = nix::unistd::Pid::from_raw(self.daemons[i].pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP xlb");
    }

    /// Waits until the log holds `n` lines containing every one of `needles`.
    pub fn wait_log(&self, needles: &[&str], n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_lines(needles).len() >= n)
    }

    /// Log lines containing every one of `needles`.
    pub fn log_lines(&self, needles: &[&str]) -> Vec<String> {
        self.log
            .read()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_owned)
            .collect()
    }

    /// Starts continuous short connections from the client to the VIP.
    pub fn traffic(&self) -> Traffic {
        Traffic::start(&self.client, self.vip())
    }

    /// `xlb CMD --json` against this lab's daemon (status, services, backends, vrrp).
    pub fn view(&self, cmd: &str) -> serde_json::Value {
        view(&self.pins, cmd)
    }

    pub fn link_pin(&self) -> PathBuf {
        self.pins.path().join(format!("link_{}", self.lb_if.b))
    }
}

/// `xlb CMD --json --pin-dir PINS`: what a daemon (or its pins) shows, as JSON.
pub fn view(pins: &PinDir, cmd: &str) -> serde_json::Value {
    let out = std::process::Command::new(xlb_bin())
        .args([cmd, "--json", "--pin-dir"])
        .arg(pins.path())
        .output()
        .expect("run xlb");
    assert!(
        out.status.success(),
        "xlb {cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("xlb prints JSON")
}

/// The errors among `attempts`.
pub fn failures(attempts: &[Attempt]) -> Vec<&String> {
    attempts
        .iter()
        .filter_map(|(_, r)| r.as_ref().err())
        .collect()
}

/// At most one [`Traffic`] connection per this long (200 per second).
const PACE: Duration = Duration::from_millis(5);

/// Starts `xlb run --xdp-mode native --iface IFACE --config CONFIG --pin-dir PINS EXTRA`
/// inside `ns`, appending its stderr to `log`, and waits until it reports running
/// (attached, signals handled).
pub(crate) fn start_xlb(
    ns: &Netns,
    iface: &str,
    config: &TempFile,
    pins: &PinDir,
    log: &TempFile,
    extra: &[&str],
) -> ChildGuard {
    const READY: &str = "running; SIGHUP reloads";
    let before = log.read().matches(READY).count();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log.path())
        .expect("open the daemon log");
    let mut cmd = ns.command(xlb_bin());
    cmd.args(["run", "--xdp-mode", "native", "--iface", iface, "--config"])
        .arg(config.path())
        .arg("--pin-dir")
        .arg(pins.path())
        .args(extra)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(file);
    let guard = ns.spawn(cmd);
    assert!(
        wait_until(Duration::from_secs(20), || log
            .read()
            .matches(READY)
            .count()
            > before),
        "xlb in {} did not start:\n{}",
        ns.name(),
        log.read()
    );
    guard
}

/// One connection's outcome: when it started, and who answered (or the error).
pub type Attempt = (Instant, Result<String, String>);

/// Short connections to a VIP, one after another on a client-namespace thread, each
/// recorded with its start time, until [`Traffic::stop`].
pub struct Traffic {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    thread: Option<JoinHandle<Vec<Attempt>>>,
}

impl Traffic {
    /// TCP greetings ([`greet`]) to `vip`.
    pub fn start(client: &Netns, vip: SocketAddr) -> Traffic {
        Traffic::start_with(client, vip, greet)
    }

    /// HTTP GETs ([`http_get`]) to `vip`.
    pub fn start_http(client: &Netns, vip: SocketAddr) -> Traffic {
        Traffic::start_with(client, vip, http_get)
    }

    fn start_with(
        client: &Netns,
        vip: SocketAddr,
        one: fn(SocketAddr) -> std::io::Result<String>,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let (thread_stop, thread_done) = (stop.clone(), done.clone());
        let thread = client.spawn_thread("traffic", move || {
            let mut out = Vec::new();
            while !thread_stop.load(Ordering::Relaxed) {
                let at = Instant::now();
                out.push((at, one(vip).map_err(|e| e.to_string())));
                thread_done.fetch_add(1, Ordering::Relaxed);
                // Paced: every closed connection holds a client port in TIME_WAIT for
                // 60 s, and an unpaced loop would run out of ports in long tests.
                std::thread::sleep(PACE.saturating_sub(at.elapsed()));
            }
            out
        });
        Traffic {
            stop,
            done,
            thread: Some(thread),
        }
    }

    /// Waits until `n` more connections completed (successful or not); false on
    /// timeout.
    pub fn progressed(&self, n: u64, timeout: Duration) -> bool {
        let start = self.done.load(Ordering::Relaxed);
        wait_until(timeout, || self.done.load(Ordering::Relaxed) >= start + n)
    }

    /// Stops and returns every attempt in order.
    pub fn stop(mut self) -> Vec<Attempt> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("stopped once")
            .join()
            .expect("traffic thread panicked")
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One short connection to `vip` (run inside the client namespace): connect, half-close,
/// read the backend's name to EOF.
pub fn greet(vip: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.shutdown(Shutdown::Write)?;
    let mut id = String::new();
    s.read_to_string(&mut id)?;
    Ok(id.trim().to_owned())
}

/// One HTTP/1.1 `GET /` to `vip` (run inside the client namespace): the body, trimmed,
/// for a 200; an error naming the status otherwise.
pub fn http_get(vip: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {vip}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split(' ').nth(1) == Some("200") {
        Ok(body.trim().to_owned())
    } else {
        Err(std::io::Error::other(format!("HTTP {status:?}")))
    }
}

/// Opens connections to `vip` (run inside the client namespace) until one is served
/// by each backend named in `wanted`; returns them, greeting read, by backend name.
pub fn hold(vip: SocketAddr, wanted: &[String]) -> Vec<(String, TcpStream)> {
    let mut held: Vec<(String, TcpStream)> = Vec::new();
    for _ in 0..500 {
        if wanted.iter().all(|w| held.iter().any(|(id, _)| id == w)) {
            break;
        }
        let s = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        let id = line.trim().to_owned();
        if wanted.contains(&id) && !held.iter().any(|(h, _)| *h == id) {
            held.push((id, s));
        }
    }
    assert_eq!(
        held.len(),
        wanted.len(),
        "could not reach every backend of {wanted:?}"
    );
    held
}

/// Finishes a held connection (run inside the client namespace): our data must reach
/// the same backend (which reads to EOF and closes) and the close complete without a
/// reset. `Err` says what broke.
pub fn finish(mut s: TcpStream) -> Result<(), String> {
    s.write_all(b"still there?\n").map_err(|e| e.to_string())?;
    s.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).map_err(|e| e.to_string())?;
    Ok(())
}

/// Connects `ns` to the switch's bridge with `addr`/24; returns the veth (a = switch side).
pub fn plug(switch: &Netns, ns: &Netns, addr: Ipv4Addr) -> VethPair {
    let veth = VethPair::new(switch, ns);
    switch.enslave(&veth.a, "br0");
    ns.add_addr(&veth.b, format!("{addr}/24"));
    veth
}

/// One HTTP GET from inside `ns` (the daemon's namespace): (status line, body).
pub fn http_get_in(ns: &Netns, addr: &str, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let (addr, path) = (addr.to_owned(), path.to_owned());
    ns.run(move || {
        let mut s = TcpStream::connect(&addr).expect("connect to the metrics endpoint");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
        )
    })
}

/// The value of the sample named exactly `series` (name and labels) in an exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}
