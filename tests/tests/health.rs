//! Health checks against real servers on the real kernel.
//!
//! ```text
//!   checker 10.71.0.1/24 ── veth ── backend 10.71.0.2/24   (10.71.0.99: nobody)
//! ```
//!
//! The checks run on a thread inside the checker namespace; every packet stays between
//! the two namespaces created here.

use std::{
    net::SocketAddr,
    sync::Once,
    time::{Duration, Instant},
};

use lb_userspace::health::{self, http, tcp, CheckResult, FailReason, Health, Thresholds, Tracker};
use testbed::{HttpServer, Netns, TcpServer, VethPair};

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
}

fn lab(tag: &str) -> Lab {
    let checker = Netns::new(&format!("{tag}-chk"));
    let backend = Netns::new(&format!("{tag}-be"));
    let veth = VethPair::new(&checker, &backend);
    checker.add_addr(&veth.a, "10.71.0.1/24");
    backend.add_addr(&veth.b, "10.71.0.2/24");
    Lab { checker, backend }
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A TCP check from inside the checker namespace.
fn tcp_check(ns: &Netns, addr: SocketAddr, timeout: Duration) -> CheckResult {
    ns.run(|| health::block_on(tcp::check(addr, timeout)))
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

    // The server vanishing altogether is a failure too (refused).
    drop(server);
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
