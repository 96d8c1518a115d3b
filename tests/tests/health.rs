//! Health checks against real servers on the real kernel.
//!
//! ```text
//!   checker 10.71.0.1/24 ── veth ── backend 10.71.0.2/24   (10.71.0.99: nobody)
//!           fd71::1/64                      fd71::2/64     (fd71::99: nobody)
//! ```
//!
//! The checks run on a thread inside the checker namespace; every packet stays between
//! the two namespaces created here (the ICMP error tests route 10.72.0.0/24 and
//! fd72::/64 to the backend, which rejects them itself).

use std::{
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpListener},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Once,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use lb_userspace::health::{
    self, http, icmp, tcp, udp, CheckResult, FailReason, Health, Thresholds, Tracker,
};
use testbed::{
    servers::{dns_answer, pong},
    HttpServer, Netns, TcpServer, UdpResponder, UdpServer, VethPair,
};

/// Generous for answers on a veth, short enough to keep the timeout test fast.
const TIMEOUT: Duration = Duration::from_millis(500);
/// An address on the subnet that no host has: ARP gets no answer, the SYN never leaves.
const NOBODY: &str = "10.71.0.99:80";

fn setup() {
    static SWEEP: Once = Once::new();
    testbed::require_root();
    SWEEP.call_once(testbed::sweep_stale);
}

/// The checker and backend namespaces (dropped after the servers that use them).
struct Lab {
    checker: Netns,
    backend: Netns,
    /// `a` in the checker, `b` in the backend.
    veth: VethPair,
}

fn lab(tag: &str) -> Lab {
    let checker = Netns::new(&format!("{tag}-chk"));
    let backend = Netns::new(&format!("{tag}-be"));
    let veth = VethPair::new(&checker, &backend);
    checker.add_addr(&veth.a, "10.71.0.1/24");
    backend.add_addr(&veth.b, "10.71.0.2/24");
    // IPv6 without duplicate address detection (add_addr passes `nodad`): usable at once.
    checker.add_addr(&veth.a, "fd71::1/64");
    backend.add_addr(&veth.b, "fd71::2/64");
    Lab {
        checker,
        backend,
        veth,
    }
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A TCP check from inside the checker namespace.
fn tcp_check(ns: &Netns, addr: SocketAddr, timeout: Duration) -> CheckResult {
    ns.run(|| health::block_on(tcp::check(addr, None, timeout)))
}

/// An HTTP check from inside the checker namespace.
fn http_check(ns: &Netns, check: &http::Check, addr: SocketAddr) -> CheckResult {
    ns.run(|| health::block_on(check.check(addr)))
}

fn http(path: &str, body_contains: Option<&str>) -> http::Check {
    http::Check {
        path: path.into(),
        host: None,
        expect_status: vec![200],
        body_contains: body_contains.map(str::to_owned),
        timeout: TIMEOUT,
    }
}

/// `ss` lines for TCP sockets in `state` inside `ns` (no header).
fn sockets_in_state(ns: &Netns, state: &str) -> Vec<String> {
    let mut cmd = ns.command("ss");
    cmd.args(["-Htan", "state", state]);
    let out = cmd.output().expect("run ss");
    assert!(out.status.success(), "ss: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn tcp_check_ok_refused_and_timeout() {
    setup();
    let lab = lab("hc-tcp");
    let server = TcpServer::start(&lab.backend, sock("10.71.0.2:7000"), "be");

    assert_eq!(
        tcp_check(&lab.checker, server.addr(), TIMEOUT),
        CheckResult::Ok
    );
    assert!(
        server.wait_for(1, Duration::from_secs(2)),
        "the check's connection reached the server"
    );

    assert_eq!(
        tcp_check(&lab.checker, sock("10.71.0.2:7001"), TIMEOUT),
        CheckResult::Fail(FailReason::Refused)
    );

    let started = Instant::now();
    let result = tcp_check(&lab.checker, sock(NOBODY), TIMEOUT);
    let took = started.elapsed();
    assert_eq!(result, CheckResult::Fail(FailReason::Timeout(TIMEOUT)));
    assert_eq!(result.to_string(), "timeout after 500ms");
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_millis(500),
        "timed out after {took:?}, expected about {TIMEOUT:?}"
    );
    drop(server);
}

/// SO_LINGER 0: the checker closes with a RST, so repeated TCP and HTTP probes leave no TIME_WAIT
/// (or other lingering) sockets behind on either side.
///
/// The target is the HTTP server, which stays silent until it gets a request: against
/// the greeting TcpServer, unread data in the receive buffer would make the kernel send
/// a RST on close anyway and the test would prove nothing.
#[test]
fn checks_leave_no_time_wait() {
    setup();
    let lab = lab("hc-linger");
    let server = HttpServer::start(&lab.backend, sock("10.71.0.2:8080"));
    for i in 0..20 {
        assert_eq!(
            tcp_check(&lab.checker, server.addr(), TIMEOUT),
            CheckResult::Ok,
            "probe {i}"
        );
    }
    // HTTP probes too: there the server closes first (`Connection: close`), so a
    // graceful close would leave TIME_WAIT on the backend instead.
    let check = http("/", Some("ok"));
    for i in 0..10 {
        assert_eq!(
            http_check(&lab.checker, &check, server.addr()),
            CheckResult::Ok,
            "HTTP probe {i}"
        );
    }
    // Give the server time to notice the closes (a graceful close would complete its
    // FIN exchange within this time and leave TIME_WAIT on the checker).
    std::thread::sleep(Duration::from_millis(300));
    for ns in [&lab.checker, &lab.backend] {
        for state in ["time-wait", "connected"] {
            assert_eq!(
                sockets_in_state(ns, state),
                Vec::<String>::new(),
                "{state} sockets in {}",
                ns.name()
            );
        }
    }
    drop(server);
}

#[test]
fn http_check_status_and_body() {
    setup();
    let lab = lab("hc-http");
    let server = HttpServer::start(&lab.backend, sock("10.71.0.2:8080"));
    let addr = server.addr();

    let check = http("/healthz?deep=1", Some("ok"));
    assert_eq!(http_check(&lab.checker, &check, addr), CheckResult::Ok);
    assert_eq!(server.last_path().as_deref(), Some("/healthz?deep=1"));

    server.set_response(500, "ok");
    assert_eq!(
        http_check(&lab.checker, &check, addr),
        CheckResult::Fail(FailReason::Status(500))
    );
    let any_body = http("/", None);
    assert_eq!(
        http_check(&lab.checker, &any_body, addr),
        CheckResult::Fail(FailReason::Status(500))
    );
    let accept_500 = http::Check {
        expect_status: vec![200, 500],
        ..check.clone()
    };
    assert_eq!(http_check(&lab.checker, &accept_500, addr), CheckResult::Ok);

    server.set_response(200, "degraded: database unreachable");
    let result = http_check(&lab.checker, &check, addr);
    assert_eq!(
        result,
        CheckResult::Fail(FailReason::BodyMismatch("ok".into()))
    );
    assert_eq!(result.to_string(), "body does not contain \"ok\"");
    assert_eq!(http_check(&lab.checker, &any_body, addr), CheckResult::Ok);

    // A body larger than the read limit: text inside the first 64 KiB is found, text
    // after it is not (the rest is never read).
    let mut big = "x".repeat(1000);
    big.push_str("early");
    big.push_str(&"y".repeat(http::MAX_BODY));
    big.push_str("late");
    server.set_response(200, &big);
    assert_eq!(
        http_check(&lab.checker, &http("/", Some("early")), addr),
        CheckResult::Ok
    );
    assert_eq!(
        http_check(&lab.checker, &http("/", Some("late")), addr),
        CheckResult::Fail(FailReason::BodyMismatch("late".into()))
    );

    // Nothing listening, and nobody there.
    assert_eq!(
        http_check(&lab.checker, &check, sock("10.71.0.2:8081")),
        CheckResult::Fail(FailReason::Refused)
    );
    assert_eq!(
        http_check(&lab.checker, &check, sock(NOBODY)),
        CheckResult::Fail(FailReason::Timeout(TIMEOUT))
    );
    drop(server);
}

/// A TCP server is not an HTTP server: its greeting is not a status line.
#[test]
fn http_check_against_non_http_fails() {
    setup();
    let lab = lab("hc-proto");
    let server = TcpServer::start(&lab.backend, sock("10.71.0.2:7000"), "be");
    let result = http_check(&lab.checker, &http("/", None), server.addr());
    assert!(
        matches!(result, CheckResult::Fail(FailReason::Protocol(_))),
        "{result:?}"
    );
    drop(server);
}

#[test]
fn tracker_follows_a_real_backend_down_and_up() {
    setup();
    let lab = lab("hc-track");
    let server = HttpServer::start(&lab.backend, sock("10.71.0.2:8080"));
    let addr = server.addr();
    let check = http("/health", Some("ok"));
    let (rise, fall) = (2, 3);
    let mut tracker = Tracker::new(Health::Up, Thresholds { rise, fall });

    for _ in 0..5 {
        let result = http_check(&lab.checker, &check, addr);
        assert_eq!(tracker.record(&result), None, "{result:?}");
    }
    assert_eq!(tracker.health(), Health::Up);

    server.set_response(503, "maintenance");
    for i in 1..fall {
        let result = http_check(&lab.checker, &check, addr);
        assert_eq!(result, CheckResult::Fail(FailReason::Status(503)));
        assert_eq!(tracker.record(&result), None, "failure {i} of {fall}");
    }
    let result = http_check(&lab.checker, &check, addr);
    let down = tracker.record(&result).expect("down after `fall` failures");
    assert_eq!((down.from, down.to), (Health::Up, Health::Down));
    assert_eq!(down.reason, "3 consecutive failures, last: status 503");

    // Still failing: stays down, quietly.
    let result = http_check(&lab.checker, &check, addr);
    assert_eq!(tracker.record(&result), None);

    server.set_response(200, "ok");
    for i in 1..rise {
        let result = http_check(&lab.checker, &check, addr);
        assert_eq!(result, CheckResult::Ok);
        assert_eq!(tracker.record(&result), None, "success {i} of {rise}");
    }
    let result = http_check(&lab.checker, &check, addr);
    let up = tracker.record(&result).expect("up after `rise` successes");
    assert_eq!((up.from, up.to), (Health::Down, Health::Up));
    assert_eq!(up.reason, "2 consecutive successes");

    // The server vanishing altogether is a failure too (refused). tiny_http's accept
    // thread may hold the listening socket a moment after the server is dropped:
    // wait for it to close before counting.
    drop(server);
    assert!(
        testbed::dataplane::wait_until(Duration::from_secs(2), || {
            tcp_check(&lab.checker, addr, TIMEOUT) == CheckResult::Fail(FailReason::Refused)
        }),
        "the server's port still accepts connections"
    );
    let mut last = None;
    for _ in 0..fall {
        let result = tcp_check(&lab.checker, addr, TIMEOUT);
        assert_eq!(result, CheckResult::Fail(FailReason::Refused));
        last = tracker.record(&result);
    }
    let down = last.expect("down again");
    assert_eq!(
        down.reason,
        "3 consecutive failures, last: connection refused"
    );
    assert_eq!(tracker.health(), Health::Down);
}

// ---------------------------------------------------------------------------------
// ICMP

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An ICMP check from inside the checker namespace.
fn icmp_check(ns: &Netns, addr: IpAddr, timeout: Duration) -> CheckResult {
    ns.run(|| health::block_on(icmp::check(addr, None, timeout)))
}

/// Repeats `probe` until it succeeds or `within` has passed; the last result.
fn until_ok(within: Duration, mut probe: impl FnMut() -> CheckResult) -> CheckResult {
    let deadline = Instant::now() + within;
    loop {
        let result = probe();
        if result.is_ok() || Instant::now() >= deadline {
            return result;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn icmp_check_ok_link_down_and_nobody() {
    setup();
    let lab = lab("hc-icmp");
    let backend = ip("10.71.0.2");
    assert_eq!(icmp_check(&lab.checker, backend, TIMEOUT), CheckResult::Ok);

    // Concurrent probes of the same host from one namespace: every raw socket sees
    // every reply, and each probe must pick its own.
    let results = lab.checker.run(|| {
        std::thread::scope(|scope| {
            let probes: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| health::block_on(icmp::check(backend, None, TIMEOUT))))
                .collect();
            probes
                .into_iter()
                .map(|p| p.join().unwrap())
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(results, vec![CheckResult::Ok; 8]);

    // The backend's interface goes down: no more replies.
    lab.backend.ip(&["link", "set", "dev", &lab.veth.b, "down"]);
    let result = icmp_check(&lab.checker, backend, TIMEOUT);
    assert!(
        matches!(
            result,
            CheckResult::Fail(FailReason::Timeout(_) | FailReason::Unreachable(_))
        ),
        "{result:?}"
    );
    lab.backend.link_up(&lab.veth.b);
    let result = until_ok(Duration::from_secs(5), || {
        icmp_check(&lab.checker, backend, TIMEOUT)
    });
    assert_eq!(result, CheckResult::Ok, "back after the link came up");

    let nobody = ip("10.71.0.99");
    let started = Instant::now();
    let result = icmp_check(&lab.checker, nobody, TIMEOUT);
    let took = started.elapsed();
    assert_eq!(result, CheckResult::Fail(FailReason::Timeout(TIMEOUT)));
    assert!(
        took >= TIMEOUT && took < TIMEOUT + Duration::from_millis(500),
        "timed out after {took:?}"
    );
}

#[test]
fn icmpv6_check_ok_and_nobody() {
    setup();
    let lab = lab("hc-icmp6");
    // The request goes out with checksum 0 (the kernel fills it in): a reply proves
    // the peer accepted it.
    assert_eq!(
        icmp_check(&lab.checker, ip("fd71::2"), TIMEOUT),
        CheckResult::Ok
    );
    assert_eq!(
        icmp_check(&lab.checker, ip("fd71::99"), TIMEOUT),
        CheckResult::Fail(FailReason::Timeout(TIMEOUT))
    );
}

/// The backend routes 10.72.0.0/24 and fd72::/64 to "unreachable": as a router it
/// answers our echo requests there with ICMP destination unreachable, which must end
/// the probe at once, well before its timeout.
#[test]
fn icmp_error_fails_fast() {
    setup();
    let lab = lab("hc-unreach");
    lab.backend.sysctl("net.ipv4.ip_forward", 1);
    lab.backend.sysctl("net.ipv6.conf.all.forwarding", 1);
    lab.backend
        .ip(&["route", "add", "unreachable", "10.72.0.0/24"]);
    lab.backend
        .ip(&["-6", "route", "add", "unreachable", "fd72::/64"]);
    lab.checker.add_route("10.72.0.0/24", "10.71.0.2");
    lab.checker
        .ip(&["-6", "route", "add", "fd72::/64", "via", "fd71::2"]);

    let long = Duration::from_secs(5);
    let cases = [
        (
            "10.72.0.5",
            "unreachable: host unreachable, reported by 10.71.0.2",
        ),
        (
            "fd72::5",
            "unreachable: no route to destination, reported by fd71::2",
        ),
    ];
    for (target, reason) in cases {
        let started = Instant::now();
        let result = icmp_check(&lab.checker, ip(target), long);
        let took = started.elapsed();
        assert!(
            matches!(result, CheckResult::Fail(FailReason::Unreachable(_))),
            "{target}: {result:?}"
        );
        assert_eq!(result.to_string(), reason);
        assert!(took < Duration::from_secs(1), "{target}: took {took:?}");
    }
}

// ---------------------------------------------------------------------------------
// TCP send/expect

fn tcp_exchange(
    ns: &Netns,
    addr: SocketAddr,
    send: Option<&[u8]>,
    expect: Option<&[u8]>,
) -> CheckResult {
    ns.run(|| health::block_on(tcp::check_exchange(addr, None, TIMEOUT, send, expect)))
}

#[test]
fn tcp_exchange_send_and_expect() {
    setup();
    let lab = lab("hc-tcpx");
    let server = TcpServer::start(&lab.backend, sock("10.71.0.2:7000"), "be-7000");
    let addr = server.addr();

    // The greeting is the server's id and a newline.
    assert_eq!(
        tcp_exchange(&lab.checker, addr, None, Some(b"be-7000\n")),
        CheckResult::Ok
    );
    assert_eq!(
        tcp_exchange(&lab.checker, addr, Some(b"PING\r\n"), Some(b"7000")),
        CheckResult::Ok
    );
    assert_eq!(
        tcp_exchange(&lab.checker, addr, Some(b"PING\r\n"), None),
        CheckResult::Ok
    );

    // The server greets, then waits: the mismatch shows when the time is up.
    let started = Instant::now();
    let result = tcp_exchange(&lab.checker, addr, None, Some(b"+PONG"));
    assert!(started.elapsed() >= TIMEOUT);
    assert_eq!(
        result,
        CheckResult::Fail(FailReason::ReplyMismatch {
            expected: "+PONG".into(),
            got: "be-7000\\n".into(),
        })
    );
    assert_eq!(
        result.to_string(),
        "reply does not contain \"+PONG\" (got \"be-7000\\n\")"
    );

    assert_eq!(
        tcp_exchange(&lab.checker, sock("10.71.0.2:7001"), None, Some(b"x")),
        CheckResult::Fail(FailReason::Refused)
    );
    assert_eq!(
        tcp_exchange(&lab.checker, sock(NOBODY), None, Some(b"x")),
        CheckResult::Fail(FailReason::Timeout(TIMEOUT))
    );
    drop(server);
}

/// A peer that answers and closes: the mismatch is reported at once, not at the
/// timeout.
#[test]
fn tcp_exchange_mismatch_on_close_is_immediate() {
    setup();
    let lab = lab("hc-tcpc");
    let server = HttpServer::start(&lab.backend, sock("10.71.0.2:8080"));
    let request: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    assert_eq!(
        tcp_exchange(&lab.checker, server.addr(), Some(request), Some(b" 200 ")),
        CheckResult::Ok
    );
    let started = Instant::now();
    let result = tcp_exchange(&lab.checker, server.addr(), Some(request), Some(b" 503 "));
    assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
    assert!(
        matches!(&result, CheckResult::Fail(FailReason::ReplyMismatch { got, .. }) if got.starts_with("HTTP/1.1 200")),
        "{result:?}"
    );
    drop(server);
}

// ---------------------------------------------------------------------------------
// UDP and DNS

fn udp_check(ns: &Netns, addr: SocketAddr, send: &[u8], expect: Option<&[u8]>) -> CheckResult {
    ns.run(|| health::block_on(udp::check(addr, None, TIMEOUT, send, expect)))
}

#[test]
fn udp_check_reply_refused_and_silence() {
    setup();
    let lab = lab("hc-udp");
    let responder = UdpResponder::start(&lab.backend, sock("10.71.0.2:5353"), pong);
    let addr = responder.addr;
    assert_eq!(
        udp_check(&lab.checker, addr, b"ping", None),
        CheckResult::Ok
    );
    assert_eq!(
        udp_check(&lab.checker, addr, b"ping", Some(b"pong ping")),
        CheckResult::Ok
    );
    assert_eq!(
        udp_check(&lab.checker, addr, b"ping", Some(b"+OK")),
        CheckResult::Fail(FailReason::ReplyMismatch {
            expected: "+OK".into(),
            got: "pong ping".into(),
        })
    );
    let v6 = UdpResponder::start(&lab.backend, sock("[fd71::2]:5353"), pong);
    assert_eq!(
        udp_check(&lab.checker, v6.addr, b"ping", Some(b"pong")),
        CheckResult::Ok
    );

    // Nothing on the port: ICMP port unreachable, seen as "connection refused".
    for closed in ["10.71.0.2:5354", "[fd71::2]:5354"] {
        assert_eq!(
            udp_check(&lab.checker, sock(closed), b"ping", None),
            CheckResult::Fail(FailReason::Refused),
            "{closed}"
        );
    }

    // testbed's UdpServer only counts: the datagram arrives, no reply comes back,
    // and the check cannot tell that from a dead host.
    let silent = UdpServer::start(&lab.backend, sock("10.71.0.2:9000"));
    assert_eq!(
        udp_check(&lab.checker, silent.addr(), b"ping", None),
        CheckResult::Fail(FailReason::Timeout(TIMEOUT))
    );
    assert!(silent.wait_for(1, Duration::from_secs(1)));
    assert_eq!(silent.bytes(), 4);
    drop((responder, v6, silent));
}

#[test]
fn dns_check_noerror_nxdomain_and_refused() {
    setup();
    let lab = lab("hc-dns");
    let server = UdpResponder::start(&lab.backend, sock("10.71.0.2:53"), dns_answer);
    let dns = |addr: SocketAddr, name: &str| {
        lab.checker
            .run(|| health::block_on(udp::check_dns(addr, None, TIMEOUT, name)))
    };
    assert_eq!(dns(server.addr, "backend.test"), CheckResult::Ok);
    assert_eq!(dns(server.addr, "backend.test."), CheckResult::Ok);
    let result = dns(server.addr, "nx.test");
    assert_eq!(
        result,
        CheckResult::Fail(FailReason::BadReply("DNS rcode 3 (NXDOMAIN)".into()))
    );
    assert_eq!(result.to_string(), "bad reply: DNS rcode 3 (NXDOMAIN)");
    // The pong server is not DNS: its reply does not carry our id.
    let not_dns = UdpResponder::start(&lab.backend, sock("10.71.0.2:5353"), pong);
    assert_eq!(
        dns(not_dns.addr, "backend.test"),
        CheckResult::Fail(FailReason::Timeout(TIMEOUT))
    );
    assert_eq!(
        dns(sock("10.71.0.2:54"), "backend.test"),
        CheckResult::Fail(FailReason::Refused)
    );
    assert!(matches!(
        dns(server.addr, "bad..name"),
        CheckResult::Fail(FailReason::Io(m)) if m.contains("invalid DNS check")
    ));
    drop((server, not_dns));
}

// ---------------------------------------------------------------------------------
// HTTP digest and HTTPS

fn http_check_with(
    ns: &Netns,
    check: &http::Check,
    options: &http::Options,
    addr: SocketAddr,
) -> CheckResult {
    ns.run(|| health::block_on(check.check_with(addr, options)))
}

fn digest(hex: &str) -> http::Options {
    http::Options {
        digest: Some(hex.into()),
        ..http::Options::default()
    }
}

/// md5("ok"), the HttpServer's default body.
const MD5_OK: &str = "444bcb3a3fcf8389296c49467f27e1d6";

#[test]
fn http_digest_matches_the_whole_body() {
    setup();
    let lab = lab("hc-digest");
    let server = HttpServer::start(&lab.backend, sock("10.71.0.2:8080"));
    let addr = server.addr();
    let check = http("/", None);

    assert_eq!(
        http_check_with(&lab.checker, &check, &digest(MD5_OK), addr),
        CheckResult::Ok
    );
    // Upper-case hex is the same digest.
    assert_eq!(
        http_check_with(&lab.checker, &check, &digest(&MD5_OK.to_uppercase()), addr),
        CheckResult::Ok
    );
    // Digest and substring together.
    assert_eq!(
        http_check_with(&lab.checker, &http("/", Some("ok")), &digest(MD5_OK), addr),
        CheckResult::Ok
    );

    server.set_response(200, "ok\n");
    let result = http_check_with(&lab.checker, &check, &digest(MD5_OK), addr);
    assert_eq!(
        result,
        CheckResult::Fail(FailReason::DigestMismatch {
            expected: MD5_OK.into(),
            // md5("ok\n")
            got: "eff5bc1ef8ec9d03e640fc4370f5eacd".into(),
        }),
        "{result}"
    );

    // Over the digest limit: refused without reading it all.
    server.set_response(200, &"x".repeat(http::MAX_DIGEST_BODY + 1));
    let result = http_check_with(&lab.checker, &check, &digest(MD5_OK), addr);
    assert!(
        matches!(&result, CheckResult::Fail(FailReason::Protocol(m)) if m.contains("too large to digest")),
        "{result:?}"
    );
    // Exactly at the limit is fine (and the wrong digest is reported).
    server.set_response(200, &"x".repeat(http::MAX_DIGEST_BODY));
    let result = http_check_with(&lab.checker, &check, &digest(MD5_OK), addr);
    assert!(
        matches!(
            &result,
            CheckResult::Fail(FailReason::DigestMismatch { .. })
        ),
        "{result:?}"
    );

    // A malformed digest never reaches the network.
    let result = http_check_with(&lab.checker, &check, &digest("abc"), addr);
    assert!(
        matches!(&result, CheckResult::Fail(FailReason::Io(m)) if m.contains("32 hex digits")),
        "{result:?}"
    );
    drop(server);
}

/// A one-connection-at-a-time HTTPS server with a self-signed certificate for
/// `backend.test` and 10.71.0.2: answers any request with 200 "ok". Stops on drop.
struct TlsServer {
    addr: SocketAddr,
    /// Requests received (after a completed handshake).
    served: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TlsServer {
    fn start(ns: &Netns, addr: SocketAddr) -> TlsServer {
        let certified =
            rcgen::generate_simple_self_signed(vec!["backend.test".into(), "10.71.0.2".into()])
                .expect("self-signed certificate");
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server config");
        let config = Arc::new(config);

        let listener = ns.run(|| TcpListener::bind(addr)).expect("bind TLS server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), served.clone());
        let thread = ns.spawn_thread("tls-server", move || {
            while !flag.load(Ordering::Relaxed) {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    Err(e) => panic!("TLS server accept: {e}"),
                };
                // A failed handshake (the verifying client rejects the certificate)
                // is part of the test, not a server error; so is a client that
                // resets the connection as soon as it has the response.
                let _ = serve_tls(&config, stream, &count);
            }
        });
        TlsServer {
            addr,
            served,
            stop,
            thread: Some(thread),
        }
    }
}

/// One HTTPS exchange: read the request head (bounded), count it in `served`,
/// answer 200 "ok", close.
fn serve_tls(
    config: &Arc<rustls::ServerConfig>,
    tcp: std::net::TcpStream,
    served: &AtomicU64,
) -> io::Result<()> {
    tcp.set_nonblocking(false)?;
    tcp.set_read_timeout(Some(Duration::from_secs(2)))?;
    let conn = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    served.fetch_add(1, Ordering::SeqCst);
    tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")?;
    tls.conn.send_close_notify();
    tls.flush()
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn https(tls: http::Tls) -> http::Options {
    http::Options {
        tls,
        ..http::Options::default()
    }
}

#[test]
fn https_check_insecure_ok_verified_fails() {
    setup();
    let lab = lab("hc-https");
    let server = TlsServer::start(&lab.backend, sock("10.71.0.2:8443"));
    let addr = server.addr;
    let check = http::Check {
        host: Some("backend.test".into()),
        ..http("/health", Some("ok"))
    };

    let insecure = http::Options {
        tls: http::Tls::Insecure,
        digest: Some(MD5_OK.into()),
        source: None,
    };
    assert_eq!(
        http_check_with(&lab.checker, &check, &insecure, addr),
        CheckResult::Ok
    );
    // By IP too (no Host: no SNI).
    assert_eq!(
        http_check_with(&lab.checker, &http("/", None), &insecure, addr),
        CheckResult::Ok
    );
    // Counted by the server thread, which the client may beat to it.
    let served = || server.served.load(Ordering::SeqCst);
    assert!(
        testbed::dataplane::wait_until(Duration::from_secs(2), || served() == 2),
        "served {}",
        served()
    );

    // Verified (the default for HTTPS): a self-signed certificate is not trusted.
    for check in [&check, &http("/", None)] {
        let result = http_check_with(&lab.checker, check, &https(http::Tls::Verify), addr);
        assert_eq!(
            result,
            CheckResult::Fail(FailReason::Tls(
                "invalid peer certificate: UnknownIssuer".into()
            ))
        );
        assert_eq!(
            result.to_string(),
            "TLS: invalid peer certificate: UnknownIssuer"
        );
    }
    // The rejected handshakes never got to a request.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(served(), 2);

    // Plain HTTP to the TLS server, and TLS to a server that is not TLS.
    let result = http_check_with(&lab.checker, &check, &https(http::Tls::Off), addr);
    assert!(
        matches!(result, CheckResult::Fail(FailReason::Protocol(_))),
        "{result:?}"
    );
    // The greeting TCP server's "be\n" is no TLS record.
    let plain = TcpServer::start(&lab.backend, sock("10.71.0.2:7000"), "be");
    let result = http_check_with(
        &lab.checker,
        &check,
        &https(http::Tls::Insecure),
        plain.addr(),
    );
    assert!(
        matches!(&result, CheckResult::Fail(FailReason::Tls(m)) if m.contains("corrupt message")),
        "{result:?}"
    );
    drop((server, plain));
}

/// Issue 14 ("Also"): an exec check runs as its configured user and group (with no
/// supplementary groups, so none of root's), not as the daemon's root.
#[test]
fn exec_checks_run_as_their_user() {
    use lb_userspace::health::check::{CheckKind, CheckSpec};
    setup();
    let is_nobody =
        "test \"$(id -u)\" = \"$(id -u nobody)\" && test \"$(id -G)\" = \"$(id -g nobody)\"";
    let mut check = CheckSpec::new(CheckKind::Exec);
    check.command = Some(vec!["/bin/sh".into(), "-c".into(), is_nobody.into()]);
    let backend: IpAddr = "127.0.0.1".parse().unwrap();
    let probe = |check: &CheckSpec| health::block_on(check.probe(backend, Some(80), "-"));
    assert!(
        !probe(&check).is_ok(),
        "without a user the check runs as root"
    );
    check.user = Some("nobody".into());
    assert_eq!(probe(&check), CheckResult::Ok);
    check.user = Some("no-such-user-xlb".into());
    assert_eq!(
        probe(&check).to_string(),
        "cannot run the exec check: no such user \"no-such-user-xlb\""
    );
}
