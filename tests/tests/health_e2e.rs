//! The keepalived model end to end, driven through the real `xlb run` daemon in a DSR
//! lab (client, balancer, three backends on one bridge; see `testbed::lab`):
//!
//! - a backend whose server dies leaves the pool by itself within
//!   `fall × interval + timeout` and comes back after `rise` good checks once it
//!   recovers, while connections to the other backends are never disturbed;
//! - a backend failing its check drains (established flows continue) or is reset,
//!   per service;
//! - with every backend down the configured fallback serves (sorry server, local
//!   stack), and the first backend back takes over again;
//! - a reload with a bad config is rejected whole and the running one stays.
//!
//! Every packet stays inside the lab's namespaces.

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use testbed::{
    dataplane::{wait_until, TempFile},
    lab::{finish as still_works, hold, Attempt, Lab, VIP},
    HttpServer, TcpServer,
};

const INTERVAL_MS: u64 = 300;
const TIMEOUT_MS: u64 = 200;
const RISE: u64 = 2;
const FALL: u64 = 2;
/// Slack on top of the reaction bound: log writing, a table swap, a busy machine.
const SLACK: Duration = Duration::from_millis(1500);

fn check(extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "type": "tcp", "interval_ms": INTERVAL_MS, "timeout_ms": TIMEOUT_MS,
        "rise": RISE, "fall": FALL,
    });
    if let (Some(c), serde_json::Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c
}

fn addr(i: usize) -> String {
    testbed::lab::BACKENDS[i].1.to_string()
}

/// Who answered each successful attempt that started at or after `from` (and before
/// `to`, if given), and the failures in that window.
fn window(attempts: &[Attempt], from: Instant, to: Option<Instant>) -> (Vec<String>, Vec<String>) {
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for (at, r) in attempts {
        if *at < from || to.is_some_and(|t| *at >= t) {
            continue;
        }
        match r {
            Ok(id) => ok.push(id.clone()),
            Err(e) => failed.push(e.clone()),
        }
    }
    (ok, failed)
}

/// When the attempt in flight at `kill` started (`kill` if none was).
///
/// Attempts run one at a time, so at most one was under way when a server was
/// stopped; if it had reached that server, the closing listener reset it. It belongs
/// to the detection window, not to the window before the kill.
fn in_flight_at(attempts: &[Attempt], kill: Instant) -> Instant {
    attempts
        .iter()
        .rev()
        .map(|(at, _)| *at)
        .find(|at| *at < kill)
        .unwrap_or(kill)
}

fn count(ids: &[String], id: &str) -> usize {
    ids.iter().filter(|i| *i == id).count()
}

fn hold_connections(lab: &Lab, wanted: &[&str]) -> Vec<(String, TcpStream)> {
    let vip = lab.vip();
    let wanted: Vec<String> = wanted.iter().map(|s| (*s).to_owned()).collect();
    lab.client.run(move || hold(vip, &wanted))
}

#[test]
fn failed_backend_leaves_and_returns_by_itself() {
    let mut lab = Lab::new("hdown");
    let hook_log = TempFile::new("hdown-hook.log");
    let hook = format!(
        "echo \"$XLB_EVENT $XLB_BACKEND\" >> {}",
        hook_log.path().display()
    );
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({
            "check": check(serde_json::json!({})),
            "notify": ["/bin/sh", "-c", hook, "xlb-hook"],
        }),
    );
    lab.start_peer();
    lab.start_xlb(&[]);
    let held = hold_connections(&lab, &["be1", "be3"]);
    let traffic = lab.traffic();
    assert!(
        traffic.progressed(100, Duration::from_secs(20)),
        "no traffic"
    );

    // be2's server dies: its port refuses, and so do its checks.
    let killed = Instant::now();
    drop(lab.servers.remove(1));
    let bound = Duration::from_millis(FALL * INTERVAL_MS + TIMEOUT_MS);
    assert!(
        lab.wait_log(&["backend down", &addr(1)], 1, bound + SLACK * 4),
        "be2 never reported down:\n{}",
        lab.log.read()
    );
    let down = Instant::now();
    let detected = down - killed;
    let line = lab.log_lines(&["backend down", &addr(1)]).remove(0);
    assert!(
        line.contains("connection refused") && line.contains("drained"),
        "{line}"
    );
    assert!(traffic.progressed(100, Duration::from_secs(20)));

    // It recovers: back after `rise` good checks.
    let restarted = Instant::now();
    lab.servers.insert(
        1,
        TcpServer::start(
            &lab.backend_ns[1],
            SocketAddr::from(([0, 0, 0, 0], 80)),
            "be2",
        ),
    );
    let rise_bound = Duration::from_millis(RISE * INTERVAL_MS + TIMEOUT_MS);
    assert!(
        lab.wait_log(&["backend up", &addr(1)], 1, rise_bound + SLACK * 4),
        "be2 never came back:\n{}",
        lab.log.read()
    );
    let up = Instant::now();
    let returned = up - restarted;
    assert!(traffic.progressed(150, Duration::from_secs(20)));
    let attempts = traffic.stop();

    let (before, failed_before) = window(
        &attempts,
        Instant::now() - Duration::from_secs(3600),
        Some(in_flight_at(&attempts, killed)),
    );
    assert!(
        failed_before.is_empty(),
        "failures before the kill: {failed_before:?}"
    );
    assert!(
        count(&before, "be2") > 0,
        "be2 served nothing before: {before:?}"
    );
    // Between the kill and the removal, be2's share of new flows is refused: that is
    // the detection window every active-check balancer has.
    let (_, failed_detecting) = window(&attempts, killed, Some(down));
    // Polling the log lags the real transitions: `down` is after the removal, and
    // be2 may legitimately serve again from its restart on.
    let (during, failed_during) = window(&attempts, down, Some(restarted));
    assert!(
        failed_during.is_empty(),
        "failures after removal: {failed_during:?}"
    );
    assert_eq!(count(&during, "be2"), 0, "be2 got new flows while down");
    assert!(during.len() >= 50, "{during:?}");
    let (after, failed_after) = window(&attempts, up, None);
    assert!(
        failed_after.is_empty(),
        "failures after return: {failed_after:?}"
    );
    assert!(
        count(&after, "be2") > 0,
        "be2 gets no new flows after recovery"
    );

    for (id, s) in held {
        lab.client
            .run(move || still_works(s))
            .unwrap_or_else(|e| panic!("established connection to {id} disturbed: {e}"));
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            let log = hook_log.read();
            log.contains(&format!("down {}", addr(1))) && log.contains(&format!("up {}", addr(1)))
        }),
        "notify hook did not run for down and up: {:?}",
        hook_log.read()
    );
    eprintln!(
        "health: down detected in {detected:?} (bound fall×interval+timeout = {bound:?}), \
         back in {returned:?} (rise bound {rise_bound:?}); {} connections refused while \
         detecting, {} served while down (0 by be2), {} after return ({} by be2)",
        failed_detecting.len(),
        during.len(),
        after.len(),
        count(&after, "be2")
    );
    assert!(
        detected <= bound + SLACK,
        "down detected after {detected:?}, bound {bound:?}"
    );
    assert!(
        returned <= rise_bound + SLACK,
        "up detected after {returned:?}, bound {rise_bound:?}"
    );
}

/// be2 fails its check (a separate health port dies) while its service port keeps
/// serving: with `drain` its established connection continues, with `reset` it is cut.
fn check_failure_with_policy(policy: &str) -> Result<(), String> {
    let mut lab = Lab::new(&format!("h{policy}"));
    let health_servers: Vec<TcpServer> = lab
        .backend_ns
        .iter()
        .map(|ns| TcpServer::start(ns, SocketAddr::from(([0, 0, 0, 0], 81)), "hc"))
        .collect();
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": check(serde_json::json!({"port": 81})), "on_failure": policy}),
    );
    lab.start_peer();
    lab.start_xlb(&[]);
    let mut held = hold_connections(&lab, &["be2"]);
    let mut health_servers = health_servers;
    drop(health_servers.remove(1));
    assert!(
        lab.wait_log(&["backend down", &addr(1)], 1, Duration::from_secs(10)),
        "be2 never reported down:\n{}",
        lab.log.read()
    );
    let vip = lab.vip();
    let ids: Vec<String> = lab
        .client
        .run(move || (0..50).map(|_| testbed::lab::greet(vip).unwrap()).collect());
    assert_eq!(count(&ids, "be2"), 0, "be2 still gets new flows: {ids:?}");
    let (_, s) = held.remove(0);
    lab.client.run(move || still_works(s))
}

#[test]
fn drain_keeps_established_flows_of_a_failed_backend() {
    check_failure_with_policy("drain").expect("drain must keep the established connection");
}

#[test]
fn reset_cuts_established_flows_of_a_failed_backend() {
    let r = check_failure_with_policy("reset");
    assert!(r.is_err(), "reset must cut the established connection");
}

#[test]
fn all_down_goes_to_the_sorry_server_until_one_returns() {
    let mut lab = Lab::new("hsorry");
    // be1 and be2 are the real backends; be3 stands in as the sorry server.
    lab.write_config_with(
        &[1, 1],
        serde_json::json!({
            "check": check(serde_json::json!({})),
            "fallback": {"sorry_server": {"address": addr(2), "mac": lab.mac(2)}},
        }),
    );
    lab.start_peer();
    lab.start_xlb(&[]);
    let traffic = lab.traffic();
    assert!(traffic.progressed(50, Duration::from_secs(20)));
    let killed = Instant::now();
    drop(lab.servers.drain(0..2).collect::<Vec<_>>());
    assert!(
        lab.wait_log(
            &["no backend available", "sorry server"],
            1,
            Duration::from_secs(10)
        ),
        "fallback never engaged:\n{}",
        lab.log.read()
    );
    let fallback = Instant::now();
    assert!(traffic.progressed(50, Duration::from_secs(20)));
    let restarted = Instant::now();
    lab.servers.insert(
        0,
        TcpServer::start(
            &lab.backend_ns[0],
            SocketAddr::from(([0, 0, 0, 0], 80)),
            "be1",
        ),
    );
    assert!(
        lab.wait_log(
            &["a backend takes new flows again"],
            1,
            Duration::from_secs(10)
        ),
        "never restored:\n{}",
        lab.log.read()
    );
    let restored = Instant::now();
    assert!(traffic.progressed(50, Duration::from_secs(20)));
    let attempts = traffic.stop();
    let (start, _) = window(
        &attempts,
        Instant::now() - Duration::from_secs(3600),
        Some(killed),
    );
    assert_eq!(
        count(&start, "be3"),
        0,
        "sorry server used while backends were up"
    );
    let (sorry, failed) = window(&attempts, fallback, Some(restarted));
    assert!(
        failed.is_empty(),
        "failures on the sorry server: {failed:?}"
    );
    assert!(
        !sorry.is_empty() && sorry.iter().all(|id| id == "be3"),
        "{sorry:?}"
    );
    let (back, failed) = window(&attempts, restored, None);
    assert!(failed.is_empty(), "failures after restore: {failed:?}");
    assert!(
        !back.is_empty() && back.iter().all(|id| id == "be1"),
        "{back:?}"
    );
}

#[test]
fn all_down_passes_to_the_local_stack() {
    let mut lab = Lab::new("hpass");
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": check(serde_json::json!({})), "fallback": "pass"}),
    );
    // The balancer's own "be right back" server on the VIP.
    lab.lb.add_addr("lo", format!("{VIP}/32"));
    let _local = TcpServer::start(&lab.lb, SocketAddr::from((VIP, 80)), "local");
    lab.start_peer();
    lab.start_xlb(&[]);
    let vip = lab.vip();
    let greet_n = |n: usize| -> Vec<String> {
        lab.client
            .run(move || (0..n).map(|_| testbed::lab::greet(vip).unwrap()).collect())
    };
    assert_eq!(
        count(&greet_n(30), "local"),
        0,
        "local stack served while backends were up"
    );
    lab.servers.clear();
    assert!(
        lab.wait_log(
            &["no backend available", "local stack"],
            1,
            Duration::from_secs(10)
        ),
        "fallback never engaged:\n{}",
        lab.log.read()
    );
    let ids = greet_n(30);
    assert!(ids.iter().all(|id| id == "local"), "{ids:?}");
}

#[test]
fn bad_reload_is_rejected_and_the_running_config_stays() {
    let mut lab = Lab::new("hreload");
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": check(serde_json::json!({}))}),
    );
    lab.start_peer();
    let xlb = lab.start_xlb(&[]);
    let traffic = lab.traffic();
    assert!(traffic.progressed(50, Duration::from_secs(20)));
    // Two problems at once: both are reported, nothing is applied.
    lab.write_config_with(
        &[1, 1, 70_000],
        serde_json::json!({"check": check(serde_json::json!({"interval_ms": 5}))}),
    );
    lab.reload(xlb);
    assert!(
        lab.wait_log(&["reload rejected"], 1, Duration::from_secs(10)),
        "no rejection:\n{}",
        lab.log.read()
    );
    let line = lab.log_lines(&["reload rejected"]).remove(0);
    let text = lab.log.read();
    assert!(
        text.contains("services[0].check.interval_ms: 5 is outside")
            && text.contains("services[0].backends[2].weight: 70000 exceeds the maximum"),
        "{line}\n{text}"
    );
    let rejected = Instant::now();
    assert!(traffic.progressed(100, Duration::from_secs(20)));
    // Checks still run under the kept config: a dying backend is still noticed.
    let killed = Instant::now();
    drop(lab.servers.remove(2));
    assert!(
        lab.wait_log(&["backend down", &addr(2)], 1, Duration::from_secs(10)),
        "checks stopped after the rejected reload:\n{}",
        lab.log.read()
    );
    let down = Instant::now();
    assert!(traffic.progressed(50, Duration::from_secs(20)));
    let attempts = traffic.stop();
    let (served, failed) = window(&attempts, rejected, Some(in_flight_at(&attempts, killed)));
    assert!(
        failed.is_empty(),
        "failures after the rejected reload: {failed:?}"
    );
    assert!(
        ["be1", "be2", "be3"].iter().all(|b| count(&served, b) > 0),
        "all three backends keep serving after the rejected reload: {served:?}"
    );
    let (after, failed) = window(&attempts, down, None);
    assert!(
        failed.is_empty(),
        "failures after be3's removal: {failed:?}"
    );
    assert_eq!(count(&after, "be3"), 0);
}

#[test]
fn flapping_backend_does_not_churn_the_table() {
    let mut lab = Lab::new("hflap");
    // Health endpoints on :8080; be2's alternates 200/500 on every request, faster
    // than rise = fall = 2 can follow.
    let health: Vec<HttpServer> = lab
        .backend_ns
        .iter()
        .map(|ns| HttpServer::start(ns, SocketAddr::from(([0, 0, 0, 0], 8080))))
        .collect();
    health[1].set_cycle(&[200, 500]);
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": {
            "type": "http", "port": 8080, "interval_ms": 100, "timeout_ms": 100,
            "rise": 2, "fall": 2,
        }}),
    );
    lab.start_peer();
    lab.start_xlb(&[]);
    let applied = lab.log_lines(&["configuration applied"]).len();
    assert!(
        health[1].wait_for(40, Duration::from_secs(20)),
        "be2 was probed only {} times",
        health[1].requests()
    );
    let text = lab.log.read();
    assert!(
        !text.contains("backend down") && !text.contains("backend up"),
        "a flapping backend changed state:\n{text}"
    );
    assert_eq!(
        lab.log_lines(&["configuration applied"]).len(),
        applied,
        "the table was re-applied:\n{text}"
    );
    let vip = lab.vip();
    let ids: Vec<String> = lab
        .client
        .run(move || (0..60).map(|_| testbed::lab::greet(vip).unwrap()).collect());
    assert!(count(&ids, "be2") > 0, "be2 lost its share: {ids:?}");
    // A steady failure still takes it out.
    health[1].set_cycle(&[500]);
    assert!(
        lab.wait_log(
            &["backend down", &addr(1), "status 500"],
            1,
            Duration::from_secs(10)
        ),
        "a steadily failing backend was not taken out:\n{}",
        lab.log.read()
    );
}

/// A fast check of `kind` with `extra` fields: every probe decides (rise = fall = 1).
fn fast_check(kind: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut c = serde_json::json!({
        "type": kind, "interval_ms": 200, "timeout_ms": 150, "rise": 1, "fall": 1,
    });
    if let (Some(c), serde_json::Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c
}

/// The one "backend down" or "backend up" line for `backend`, waited for.
fn wait_transition(lab: &Lab, what: &str, backend: &str, n: usize) -> String {
    assert!(
        lab.wait_log(&[what, backend], n, Duration::from_secs(10)),
        "no {what:?} #{n} for {backend}:\n{}",
        lab.log.read()
    );
    lab.log_lines(&[what, backend]).remove(n - 1)
}

/// No other backend than be2 changed state.
fn only_be2_changed(lab: &Lab) {
    for i in [0, 2] {
        assert!(
            lab.log_lines(&["backend down", &addr(i)]).is_empty(),
            "be{} went down:\n{}",
            i + 1,
            lab.log.read()
        );
    }
}

#[test]
fn exec_check_follows_the_script_exit_code() {
    let mut lab = Lab::new("hexec");
    // Flag files `<base>-<backend address>`: present means down.
    let base = TempFile::new("hexec-flag");
    let script = format!("test ! -e {}-$XLB_BACKEND", base.path().display());
    let flag = std::path::PathBuf::from(format!("{}-{}", base.path().display(), addr(1)));
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({
            "check": fast_check("exec", serde_json::json!({"command": ["/bin/sh", "-c", script]})),
        }),
    );
    lab.start_peer();
    lab.start_xlb(&[]);
    /// Removes the flag file on drop, even if the test fails.
    struct Flag(std::path::PathBuf);
    impl Drop for Flag {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let flag = Flag(flag);
    std::fs::write(&flag.0, b"down\n").unwrap();
    let line = wait_transition(&lab, "backend down", &addr(1), 1);
    assert!(line.contains("exit status 1"), "{line}");
    std::fs::remove_file(&flag.0).unwrap();
    wait_transition(&lab, "backend up", &addr(1), 1);
    only_be2_changed(&lab);
    let vip = lab.vip();
    let ids: Vec<String> = lab
        .client
        .run(move || (0..60).map(|_| testbed::lab::greet(vip).unwrap()).collect());
    assert!(count(&ids, "be2") > 0, "be2 gets no flows once up: {ids:?}");
}

#[test]
fn icmp_check_notices_a_downed_interface() {
    let mut lab = Lab::new("hicmp");
    // be2's side of its veth: the interface holding its address.
    let ns = &lab.backend_ns[1];
    let shown = ns.ip(&["-o", "-4", "addr", "show", "to", &format!("{}/32", addr(1))]);
    let iface = shown
        .split_whitespace()
        .nth(1)
        .and_then(|name| name.split('@').next())
        .unwrap_or_else(|| panic!("no interface with {} in be2: {shown:?}", addr(1)))
        .to_owned();
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": fast_check("icmp", serde_json::json!({}))}),
    );
    lab.start_peer();
    lab.start_xlb(&[]);
    // Let a few rounds of pings succeed first.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        lab.log_lines(&["backend down"]).is_empty(),
        "{}",
        lab.log.read()
    );
    lab.backend_ns[1].ip(&["link", "set", &iface, "down"]);
    let line = wait_transition(&lab, "backend down", &addr(1), 1);
    assert!(
        line.contains("timeout") || line.contains("unreachable"),
        "{line}"
    );
    lab.backend_ns[1].ip(&["link", "set", &iface, "up"]);
    wait_transition(&lab, "backend up", &addr(1), 1);
    only_be2_changed(&lab);
}

#[test]
fn http_check_notices_500_and_wrong_body() {
    let mut lab = Lab::new("hhttp");
    let health: Vec<HttpServer> = lab
        .backend_ns
        .iter()
        .map(|ns| HttpServer::start(ns, SocketAddr::from(([0, 0, 0, 0], 8080))))
        .collect();
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({
            "check": fast_check("http", serde_json::json!({"port": 8080, "body_contains": "ok"})),
        }),
    );
    lab.start_peer();
    lab.start_xlb(&[]);
    assert!(
        health[1].wait_for(3, Duration::from_secs(10)),
        "be2 not probed"
    );
    health[1].set_response(500, "ok");
    let line = wait_transition(&lab, "backend down", &addr(1), 1);
    assert!(line.contains("status 500"), "{line}");

    // 200 with the wrong body: still down, now for the body.
    health[1].set_response(200, "nope");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let be2 = &lab.view("backends")[1];
            be2["state"] == "down"
                && be2["last_check"]
                    .as_str()
                    .is_some_and(|r| r.contains("body does not contain \"ok\""))
        }),
        "be2 not down for its body: {}",
        lab.view("backends")
    );
    assert!(lab.log_lines(&["backend up", &addr(1)]).is_empty());

    health[1].set_response(200, "all ok");
    wait_transition(&lab, "backend up", &addr(1), 1);
    assert_eq!(lab.log_lines(&["backend down", &addr(1)]).len(), 1);
    only_be2_changed(&lab);
}

/// A UDP service on :53 with a DNS check (and one backend with its own UDP send/expect
/// check): a backend whose resolver stops answering leaves, and returns when it answers
/// again.
#[test]
fn dns_and_udp_checks_follow_their_servers() {
    use testbed::{
        servers::{dns_answer, pong},
        UdpResponder,
    };
    let mut lab = Lab::new("hdns");
    let dns = |ns: &testbed::Netns| {
        UdpResponder::start(ns, SocketAddr::from(([0, 0, 0, 0], 53)), dns_answer)
    };
    let mut resolvers: Vec<Option<UdpResponder>> =
        lab.backend_ns.iter().map(|ns| Some(dns(ns))).collect();
    let echo = UdpResponder::start(
        &lab.backend_ns[2],
        SocketAddr::from(([0, 0, 0, 0], 7)),
        pong,
    );
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({
            "protocol": "udp", "port": 53,
            "check": {"type": "dns", "name": "example.com", "interval_ms": 200,
                      "timeout_ms": 150, "rise": 1, "fall": 1},
        }),
    );
    // be3 is checked by its UDP echo service instead (a per-backend check).
    let path = lab.config.path().to_owned();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["services"][0]["backends"][2]["check"] = serde_json::json!({
        "type": "udp", "port": 7, "send": "ping", "expect": "pong ping",
        "interval_ms": 200, "timeout_ms": 150, "rise": 1, "fall": 1,
    });
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    lab.start_peer();
    lab.start_xlb(&[]);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        lab.log_lines(&["backend down"]).is_empty(),
        "a healthy resolver was taken out:\n{}",
        lab.log.read()
    );
    // be2's resolver dies: its port is closed (ICMP port unreachable → refused).
    resolvers[1] = None;
    assert!(
        lab.wait_log(&["backend down", &addr(1)], 1, Duration::from_secs(10)),
        "be2 never reported down:\n{}",
        lab.log.read()
    );
    resolvers[1] = Some(dns(&lab.backend_ns[1]));
    assert!(
        lab.wait_log(&["backend up", &addr(1)], 1, Duration::from_secs(10)),
        "be2 never came back:\n{}",
        lab.log.read()
    );
    // be3's UDP echo dies: its per-backend check notices.
    drop(echo);
    assert!(
        lab.wait_log(&["backend down", &addr(2)], 1, Duration::from_secs(10)),
        "be3's UDP check never failed:\n{}",
        lab.log.read()
    );
}

/// Issue 14, item 7: every reload restarted every checker with its phase counted from
/// the reload, so with reloads more frequent than the interval a backend whose phase
/// came later was never probed again. Unchanged checks must keep running through a
/// reload. Reloads every 500 ms, checks every 2 s: every backend's server dies, and
/// each must be reported down within fall × interval + timeout (+ slack).
#[test]
fn frequent_reloads_do_not_stop_the_checks() {
    let mut lab = Lab::new("hreload");
    let (interval, timeout, fall) = (2000u64, 300u64, 2u64);
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": {
            "type": "tcp", "interval_ms": interval, "timeout_ms": timeout,
            "rise": 1, "fall": fall,
        }}),
    );
    lab.start_peer();
    let xlb = lab.start_xlb(&[]);
    let killed = Instant::now();
    lab.servers.clear();
    let bound = Duration::from_millis(fall * interval + timeout) + SLACK;
    let mut reloads = 0;
    while killed.elapsed() < bound {
        lab.reload(xlb);
        reloads += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in 0..3 {
        assert!(
            lab.wait_log(&["backend down", &addr(i)], 1, Duration::ZERO),
            "{} not reported down within {bound:?} under {reloads} reloads:\n{}",
            addr(i),
            lab.log.read()
        );
    }
    assert!(
        lab.log.read().matches("reloaded").count() >= reloads - 1,
        "the reloads did not all apply:\n{}",
        lab.log.read()
    );
}

/// Issue 14, item 14: a definitive failure (the dead server's kernel refuses at once) is
/// confirmed by immediate re-probes instead of whole intervals: with checks every 1 s
/// and fall 3, a killed server is out within one interval (+ a few ms), not three.
#[test]
fn a_refused_backend_is_out_within_one_interval() {
    let mut lab = Lab::new("hfast");
    let interval = 1000u64;
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": {
            "type": "tcp", "interval_ms": interval, "timeout_ms": 500, "rise": 2, "fall": 3,
        }}),
    );
    lab.start_peer();
    lab.start_xlb(&[]);
    // Past the first round of checks, so every backend is settled up.
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Instant::now();
    drop(lab.servers.remove(1));
    assert!(
        lab.wait_log(&["backend down", &addr(1)], 1, Duration::from_secs(10)),
        "be2 never reported down:\n{}",
        lab.log.read()
    );
    let detected = killed.elapsed();
    eprintln!("health: refused backend out after {detected:?} (interval {interval} ms, fall 3)");
    assert!(
        detected < Duration::from_millis(interval + 500),
        "out after {detected:?}: the failure was not confirmed at once"
    );
}

/// Issue 14, item 11 (`source`, keepalived's `bindto`): probes leave from the check's
/// source address. The backends here cannot answer the balancer's primary address
/// (their route back to it is a blackhole), only its second one, so checks from the
/// kernel's choice of source time out and checks from `source` pass.
#[test]
fn checks_leave_from_their_source_address() {
    let mut lab = Lab::new("hsrc");
    let lb_if = lab.lb_if.b.clone();
    lab.lb.add_addr(&lb_if, "10.60.0.3/24");
    for ns in &lab.backend_ns {
        ns.ip(&["route", "add", "blackhole", "10.60.0.2/32"]);
    }
    let source = serde_json::json!({"source": "10.60.0.3"});
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": fast_check("tcp", source.clone())}),
    );
    lab.start_xlb(&[]);
    let mut reloads = 0;
    let mut reload = |lab: &Lab, check: serde_json::Value| {
        lab.write_config_with(&[1, 1, 1], serde_json::json!({ "check": check }));
        lab.reload(0);
        reloads += 1;
        assert!(
            lab.wait_log(&["reloaded"], reloads, Duration::from_secs(10)),
            "{}",
            lab.log.read()
        );
    };
    // Several rounds of probes, from the source: none fails.
    std::thread::sleep(Duration::from_secs(1));
    reload(&lab, fast_check("icmp", source));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        lab.log_lines(&["backend down"]).is_empty(),
        "a check from its source failed:\n{}",
        lab.log.read()
    );
    // From the kernel's choice, the same checks fail.
    reload(&lab, fast_check("icmp", serde_json::json!({})));
    for i in 0..3 {
        let line = wait_transition(&lab, "backend down", &addr(i), 1);
        assert!(line.contains("timeout"), "{line}");
    }
}
