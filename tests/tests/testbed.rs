//! Tests of the namespace testbed itself, on the real kernel: namespaces, veths,
//! bridges, the servers, child processes and cleanup. Every packet stays inside
//! namespaces created here.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    os::unix::process::ExitStatusExt,
    panic::{self, AssertUnwindSafe},
    process::{Command, Stdio},
    sync::{Mutex, Once},
    thread,
    time::{Duration, Instant},
};

use testbed::{HttpServer, Netns, TcpServer, UdpServer, VethPair};

const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn setup() {
    static SWEEP: Once = Once::new();
    testbed::require_root();
    SWEEP.call_once(testbed::sweep_stale);
}

/// Two namespaces joined by a veth, `<prefix>.1/24` in the first, `<prefix>.2/24` in
/// the second.
fn pair(tag: &str, prefix: &str) -> (Netns, Netns, VethPair) {
    let a = Netns::new(&format!("{tag}-a"));
    let b = Netns::new(&format!("{tag}-b"));
    let veth = VethPair::new(&a, &b);
    a.add_addr(&veth.a, format!("{prefix}.1/24"));
    b.add_addr(&veth.b, format!("{prefix}.2/24"));
    (a, b, veth)
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Names in `ip netns list` (first word of each line).
fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Connects, half-closes, and reads everything up to the server's EOF (which must come
/// within the timeout: the server closes once the client is done).
fn greeting(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = String::new();
    stream
        .read_to_string(&mut all)
        .unwrap_or_else(|e| panic!("read greeting and EOF from {addr}: {e}"));
    all
}

/// Sends a GET with a raw TcpStream; returns (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    (status, body.to_owned())
}

#[test]
fn tcp_server_greets_client_in_other_namespace() {
    setup();
    let (client, backend, _veth) = pair("tcp", "10.31.0");
    let server = TcpServer::start(&backend, sock("10.31.0.2:7000"), "backend-1");
    assert_eq!(server.addr(), sock("10.31.0.2:7000"));

    let line = client.run(|| greeting(sock("10.31.0.2:7000")));
    assert_eq!(line, "backend-1\n");
    assert!(server.wait_for(1, IO_TIMEOUT));
    assert_eq!(server.connections(), 1);
    assert_eq!(server.peers()[0].ip(), Ipv4Addr::new(10, 31, 0, 1));
}

#[test]
fn tcp_server_handles_many_concurrent_connections() {
    setup();
    let (client, backend, _veth) = pair("tcpmany", "10.32.0");
    let server = TcpServer::start(&backend, sock("10.32.0.2:0"), "many");
    let addr = server.addr();
    assert_ne!(addr.port(), 0, "port 0 must be resolved to the bound port");

    const THREADS: usize = 8;
    const PER_THREAD: usize = 25;
    client.run(|| {
        thread::scope(|s| {
            for _ in 0..THREADS {
                // Threads spawned inside `run` inherit the namespace.
                s.spawn(|| {
                    // Hold each thread's connections open together so they overlap.
                    let streams: Vec<TcpStream> = (0..PER_THREAD)
                        .map(|_| TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap())
                        .collect();
                    for stream in streams {
                        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                        let mut line = String::new();
                        BufReader::new(stream).read_line(&mut line).unwrap();
                        assert_eq!(line, "many\n");
                    }
                });
            }
        });
    });
    let total = (THREADS * PER_THREAD) as u64;
    assert!(server.wait_for(total, IO_TIMEOUT));
    assert_eq!(server.connections(), total);
}

#[test]
fn udp_server_receives_exactly_what_was_sent() {
    setup();
    let (client, backend, veth) = pair("udp", "10.33.0");
    for (ns, iface) in [(&client, &veth.a), (&backend, &veth.b)] {
        ns.disable_ipv6(iface);
    }
    // A static neighbour entry: no ARP round trip, so no datagram waits in (or drops
    // from) the unresolved-neighbour queue.
    client.add_neigh(&veth.a, "10.33.0.2", backend.mac(&veth.b));
    let neigh = client.ip(&["neigh", "show", "dev", &veth.a]);
    assert!(neigh.contains("PERMANENT"), "{neigh}");

    let server = UdpServer::start(&backend, sock("10.33.0.2:9000"));
    let payload = [0x5au8; 64];
    client.run(|| {
        let socket = UdpSocket::bind("10.33.0.1:0").unwrap();
        for _ in 0..100 {
            socket.send_to(&payload, "10.33.0.2:9000").unwrap();
        }
    });
    assert!(
        server.wait_for(100, IO_TIMEOUT),
        "got {} datagrams",
        server.datagrams()
    );
    // Nothing more may trickle in.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(server.datagrams(), 100);
    assert_eq!(server.bytes(), 100 * payload.len() as u64);
}

#[test]
fn http_server_response_changes_at_run_time() {
    setup();
    let (client, backend, _veth) = pair("http", "10.34.0");
    let server = HttpServer::start(&backend, sock("10.34.0.2:8080"));
    let addr = server.addr();

    let (status, body) = client.run(|| http_get(addr, "/health"));
    assert_eq!((status, body.as_str()), (200, "ok"));

    server.set_response(503, "down");
    let (status, body) = client.run(|| http_get(addr, "/health?probe=2"));
    assert_eq!((status, body.as_str()), (503, "down"));
    assert_eq!(server.requests(), 2);
    assert_eq!(server.last_path().as_deref(), Some("/health?probe=2"));
}

#[test]
fn bridge_joins_three_hosts() {
    setup();
    let switch = Netns::new("br-switch");
    switch.add_bridge("br0");
    let hosts: Vec<(Netns, VethPair)> = (1..=3)
        .map(|i| {
            let host = Netns::new(&format!("br-h{i}"));
            let veth = VethPair::new(&host, &switch);
            switch.enslave(&veth.b, "br0");
            host.add_addr(&veth.a, format!("10.35.0.{i}/24"));
            (host, veth)
        })
        .collect();
    let master = switch.ip(&["-o", "link", "show", "master", "br0"]);
    for (_, veth) in &hosts {
        assert!(master.contains(&veth.b), "{} not in br0: {master}", veth.b);
    }
    let servers: Vec<TcpServer> = hosts[1..]
        .iter()
        .enumerate()
        .map(|(i, (host, _))| {
            let addr = sock(&format!("10.35.0.{}:7000", i + 2));
            TcpServer::start(host, addr, &format!("h{}", i + 2))
        })
        .collect();
    for (i, server) in servers.iter().enumerate() {
        let addr = server.addr();
        let line = hosts[0].0.run(|| greeting(addr));
        assert_eq!(line, format!("h{}\n", i + 2));
        assert_eq!(server.connections(), 1);
    }
}

#[test]
fn link_facts_and_sysctl() {
    setup();
    let (a, b, veth) = pair("facts", "10.36.0");
    let mac = a.mac(&veth.a);
    assert_ne!(mac, [0; 6]);
    assert_eq!(mac[0] & 1, 0, "a unicast MAC");
    let link = a.ip(&["-o", "link", "show", "dev", &veth.a]);
    let ifindex = a.ifindex(&veth.a);
    assert!(
        link.starts_with(&format!("{ifindex}: {}@", veth.a)),
        "{link}"
    );
    assert_eq!(b.ifindex("lo"), 1);

    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    a.sysctl("net.ipv4.ip_forward", 1);
    assert_eq!(a.sysctl_get("net.ipv4.ip_forward"), "1");
    assert_eq!(b.sysctl_get("net.ipv4.ip_forward"), "0");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward,
        "the host's sysctl must not change"
    );
    a.disable_ipv6(&veth.a);
    assert_eq!(
        a.sysctl_get(&format!("net.ipv6.conf.{}.disable_ipv6", veth.a)),
        "1"
    );

    // A route via a neighbour, and a failing ip command reported as such.
    a.add_route("10.99.0.0/16", "10.36.0.2");
    let routes = a.ip(&["route", "show", "10.99.0.0/16"]);
    assert!(routes.contains("via 10.36.0.2"), "{routes}");
    let err = a
        .try_ip(&["link", "set", "dev", "nonexistent0", "up"])
        .unwrap_err();
    assert!(
        err.contains(a.name()) && err.contains("nonexistent0"),
        "{err}"
    );
}

#[test]
fn run_reraises_panics() {
    setup();
    let ns = Netns::new("runpanic");
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        ns.run(|| panic!("inside the namespace"));
    }));
    let payload = caught.expect_err("the panic must reach the caller");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"inside the namespace")
    );
    // The namespace is still usable.
    assert_eq!(ns.run(|| 40 + 2), 42);
}

#[test]
fn namespace_is_removed_on_drop_and_on_panic() {
    setup();
    let name = {
        let ns = Netns::new("dropped");
        assert!(netns_list().contains(&ns.name().to_owned()));
        ns.name().to_owned()
    };
    assert!(
        !netns_list().contains(&name),
        "{name} left behind after drop"
    );

    let panicked_name = Mutex::new(String::new());
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        let ns = Netns::new("panicked");
        let _veth = VethPair::new(&ns, &ns);
        *panicked_name.lock().unwrap() = ns.name().to_owned();
        panic!("test body fails");
    }));
    assert!(caught.is_err());
    let panicked_name = panicked_name.into_inner().unwrap();
    assert!(panicked_name.contains("-panicked"), "{panicked_name}");
    assert!(
        !netns_list().contains(&panicked_name),
        "{panicked_name} left behind after a panic"
    );
}

#[test]
fn command_child_enters_only_the_network_namespace() {
    setup();
    let (ns, _other, veth) = pair("cmd", "10.37.0");
    let output = |mut cmd: Command| -> String {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let host = |program: &str, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.args(args);
        output(cmd)
    };
    let inside = |program: &str, args: &[&str]| {
        let mut cmd = ns.command(program);
        cmd.args(args);
        output(cmd)
    };

    let links = inside("ip", &["-o", "link"]);
    assert!(links.contains(&veth.a), "{links}");
    assert_eq!(links.lines().count(), 2, "only lo and the veth: {links}");

    let net_ns = ["/proc/self/ns/net"];
    assert_ne!(inside("readlink", &net_ns), host("readlink", &net_ns));
    let mnt_ns = ["/proc/self/ns/mnt"];
    assert_eq!(inside("readlink", &mnt_ns), host("readlink", &mnt_ns));

    // The host's bpffs stays visible (`ip netns exec` would show a fresh sysfs there).
    let fs_type = ["-f", "-c", "%t", "/sys/fs/bpf"];
    assert_eq!(inside("stat", &fs_type), host("stat", &fs_type));
    let dev_ino = ["-c", "%d:%i", "/sys/fs/bpf"];
    assert_eq!(inside("stat", &dev_ino), host("stat", &dev_ino));
}

#[test]
fn spawned_children_are_killed() {
    setup();
    let ns = Netns::new("children");

    // SIGTERM is enough for a well-behaved daemon.
    let mut sleeper = ns.spawn({
        let mut cmd = ns.command("sleep");
        cmd.arg("600");
        cmd
    });
    assert!(sleeper.try_wait().is_none());
    let status = sleeper.terminate(IO_TIMEOUT);
    assert_eq!(status.signal(), Some(libc::SIGTERM));

    // One that ignores SIGTERM gets SIGKILL after the timeout.
    let mut stubborn = ns.spawn({
        let mut cmd = ns.command("sh");
        cmd.args(["-c", "trap '' TERM; exec sleep 600"]);
        cmd
    });
    // Give sh the time to install the trap before it is tested.
    thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let status = stubborn.terminate(Duration::from_millis(300));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(start.elapsed() >= Duration::from_millis(300));

    // Dropping the namespace kills children whose guards are still alive.
    let mut orphan = ns.spawn({
        let mut cmd = ns.command("sleep");
        cmd.arg("600").stdout(Stdio::null());
        cmd
    });
    drop(ns);
    let status = orphan
        .try_wait()
        .expect("child must be dead once its namespace is dropped");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn sweep_stale_removes_namespaces_of_dead_processes() {
    setup();
    let dead_pid = 999_999;
    assert_eq!(
        unsafe { libc::kill(dead_pid, 0) },
        -1,
        "pid {dead_pid} unexpectedly alive"
    );
    // The first Netns of a process runs the automatic sweep; let it finish before we plant
    // the fake leftover, so only the explicit call below can remove it.
    let live = Netns::new("live");
    // Unique per test process, so parallel runs of this test do not collide.
    let stale = format!("xlbt-{dead_pid}-{}-x", std::process::id());
    let status = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(status.success(), "ip netns add {stale}");
    // A daemon left running inside it by the "dead" run must be killed too.
    let mut daemon = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "600"])
        .spawn()
        .unwrap();
    // Wait until `ip netns exec` has become `sleep` inside the namespace.
    let deadline = Instant::now() + IO_TIMEOUT;
    while std::fs::read_to_string(format!("/proc/{}/comm", daemon.id())).unwrap() != "sleep\n" {
        assert!(
            Instant::now() < deadline,
            "ip netns exec did not start sleep"
        );
        thread::sleep(Duration::from_millis(10));
    }

    testbed::sweep_stale();

    let names = netns_list();
    // SIGKILL is delivered asynchronously; give it a moment.
    let deadline = Instant::now() + IO_TIMEOUT;
    let daemon_status = loop {
        match daemon.try_wait().unwrap() {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => break None,
            None => thread::sleep(Duration::from_millis(10)),
        }
    };
    if daemon_status.is_none() {
        // Do not leak it even when the assertion below fails.
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
    assert!(!names.contains(&stale), "{stale} survived sweep_stale");
    assert!(
        names.contains(&live.name().to_owned()),
        "sweep_stale removed {} of a live process",
        live.name()
    );
    assert_eq!(
        daemon_status.and_then(|s| s.signal()),
        Some(libc::SIGKILL),
        "the daemon in the stale namespace must be killed"
    );
}
