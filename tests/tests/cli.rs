//! The operator's view: `xlb status`, `xlb services`, `xlb backends` (tables and
//! `--json`) and `xlb reload` against a running daemon in the DSR lab, and the read
//! commands' fallback to the pinned maps once the daemon is gone.

use std::{process::Output, time::Duration};

use testbed::{
    dataplane::{wait_until, xlb_bin},
    lab::{http_get_in as http_get, sample, Lab, BACKENDS},
};

fn xlb(lab: &Lab, args: &[&str]) -> Output {
    std::process::Command::new(xlb_bin())
        .args(args)
        .arg("--pin-dir")
        .arg(lab.pins.path())
        .output()
        .expect("run xlb")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "xlb failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(lab: &Lab, cmd: &str) -> serde_json::Value {
    serde_json::from_str(&stdout(&xlb(lab, &[cmd, "--json"]))).expect("valid JSON")
}

#[test]
fn read_commands_reload_and_pinned_fallback() {
    let mut lab = Lab::new("cli");
    let check = serde_json::json!({"check": {
        "type": "tcp", "interval_ms": 200, "timeout_ms": 100, "rise": 1, "fall": 1,
    }});
    lab.write_config_with(&[1, 2, 1], check.clone());
    lab.start_peer();
    let daemon = lab.start_xlb(&[]);
    let vip = lab.vip();
    lab.client
        .run(move || (0..30).for_each(|_| drop(testbed::lab::greet(vip).unwrap())));

    // status
    let status = json(&lab, "status");
    assert_eq!(status["services"], 1);
    assert_eq!(status["backends"], 3);
    assert_eq!(status["checks"], 3);
    assert_eq!(status["pin_dir"], lab.pins.path().display().to_string());
    let text = stdout(&xlb(&lab, &["status"]));
    assert!(
        text.contains("running (pid") && text.contains("1 (3 backends, 3 checked, 0 down)"),
        "{text}"
    );

    // services: counters of the 30 connections (SYN, ACK, FIN, ACK at least each).
    let services = json(&lab, "services");
    let svc = &services[0];
    assert_eq!(svc["service"], "10.60.0.100:80/tcp");
    assert_eq!(
        (svc["mode"].as_str(), svc["available"].as_u64()),
        (Some("dsr"), Some(3))
    );
    assert_eq!(svc["new_flows"], 30);
    assert!(svc["packets"].as_u64().unwrap() >= 120, "{svc}");
    let table = stdout(&xlb(&lab, &["services"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("SERVICE") && lines[0].contains("NEW FLOWS"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("10.60.0.100:80/tcp  dsr   3/3  drop"),
        "{table}"
    );
    assert!(lines[1].ends_with("30"), "{table}");

    // stats: counters and their rates over an interval, with traffic flowing.
    let traffic = lab.traffic();
    assert!(traffic.progressed(20, Duration::from_secs(10)));
    let o = xlb(&lab, &["stats", "--json", "--interval", "0.5"]);
    let stats: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let flows = &stats["services"][0]["counters"];
    assert!(flows["packets_per_s"].as_f64().unwrap() > 10.0, "{stats}");
    assert!(flows["new_flows_per_s"].as_f64().unwrap() > 1.0, "{stats}");
    assert!(stats["global"]["rx"]["packets_per_s"].as_f64().unwrap() > 10.0);
    let table = stdout(&xlb(&lab, &["stats", "--interval", "0.2"]));
    assert!(
        table.contains("PKT/S")
            && table.contains("FLOWS/S")
            && table.contains("(rates over 0.2 s)"),
        "{table}"
    );
    drop(traffic);

    // backends, then one dies and shows down with its reason.
    drop(lab.servers.remove(1));
    assert!(
        wait_until(Duration::from_secs(10), || json(&lab, "backends")[1]
            ["state"]
            == "down"),
        "be2 never shown down: {}",
        json(&lab, "backends")
    );
    let backends = json(&lab, "backends");
    assert_eq!(backends.as_array().unwrap().len(), 3);
    let be2 = &backends[1];
    assert_eq!(be2["address"], BACKENDS[1].1.to_string());
    assert_eq!(
        (be2["weight"].as_u64(), be2["effective_weight"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(be2["last_check"], "connection refused");
    assert_eq!(be2["transitions"], 1);
    assert_eq!(backends[0]["state"], "up");
    let table = stdout(&xlb(&lab, &["backends"]));
    let row = table.lines().find(|l| l.contains("10.60.0.12")).unwrap();
    assert!(
        row.contains(" down ") && row.contains("2->0") && row.contains("connection refused"),
        "{table}"
    );
    assert!(stdout(&xlb(&lab, &["status"])).contains("1 down"));

    // reload: a bad config is refused with the field path; a good one applies.
    lab.write_config_with(
        &[1, 2, 1],
        serde_json::json!({"check": {"type": "tcp", "timeout_ms": 0}}),
    );
    let o = xlb(&lab, &["reload"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("reload rejected, running configuration kept")
            && err.contains("services[0].check.timeout_ms: 0 must be 1..=interval_ms"),
        "{err}"
    );
    assert_eq!(
        json(&lab, "backends")[1]["weight"],
        2,
        "the rejected config was applied"
    );
    assert!(json(&lab, "status")["last_reload"]
        .as_str()
        .unwrap()
        .contains("rejected"));
    lab.write_config_with(&[1, 0, 1], check);
    assert_eq!(stdout(&xlb(&lab, &["reload"])).trim(), "reloaded");
    assert_eq!(json(&lab, "backends")[1]["weight"], 0);
    assert_eq!(json(&lab, "status")["last_reload"], "ok");

    // SIGKILL: the data plane stays pinned; reads fall back to the maps.
    lab.daemons[daemon].kill();
    let status = stdout(&xlb(&lab, &["status"]));
    assert!(
        status.contains("daemon not running") && status.contains("keeps forwarding"),
        "{status}"
    );
    let o = xlb(&lab, &["services", "--json"]);
    let services: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(services[0]["service"], "10.60.0.100:80/tcp");
    // The 30 greetings plus the traffic of the stats step, read from the pins.
    assert!(
        services[0]["new_flows"].as_u64().unwrap() > 30,
        "{services}"
    );
    assert!(
        services[0]["mode"].is_null(),
        "pins carry no config: {services}"
    );
    let table = stdout(&xlb(&lab, &["backends"]));
    assert!(
        table.contains("10.60.0.11") && table.contains("10.60.0.13"),
        "{table}"
    );
}

#[test]
fn metrics_endpoint_exposes_counters_and_health() {
    let mut lab = Lab::new("metrics");
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": {
            "type": "tcp", "interval_ms": 200, "timeout_ms": 100, "rise": 1, "fall": 1,
        }}),
    );
    lab.start_peer();
    lab.start_xlb(&["--metrics-listen", "127.0.0.1:9641"]);
    let vip = lab.vip();
    lab.client
        .run(move || (0..20).for_each(|_| drop(testbed::lab::greet(vip).unwrap())));
    drop(lab.servers.remove(1));
    assert!(lab.wait_log(&["backend down"], 1, Duration::from_secs(10)));

    let (status, body) = http_get(&lab.lb, "127.0.0.1:9641", "/metrics");
    assert!(status.contains("200"), "{status}");
    let svc = r#"service="10.60.0.100:80/tcp""#;
    let get = |series: &str| {
        sample(&body, series).unwrap_or_else(|| panic!("no sample {series} in:\n{body}"))
    };
    assert!(get(r#"xlb_datapath_packets_total{counter="rx"}"#) >= 80.0);
    assert_eq!(get("xlb_check_task_restarts_total"), 0.0);
    assert_eq!(get(r#"xlb_datapath_packets_total{counter="aborted"}"#), 0.0);
    assert_eq!(get(&format!("xlb_service_new_flows_total{{{svc}}}")), 20.0);
    assert_eq!(
        get(&format!(r#"xlb_backend_up{{{svc},backend="10.60.0.12"}}"#)),
        0.0
    );
    assert_eq!(
        get(&format!(r#"xlb_backend_up{{{svc},backend="10.60.0.11"}}"#)),
        1.0
    );
    assert_eq!(
        get(&format!(
            r#"xlb_backend_weight{{{svc},backend="10.60.0.12"}}"#
        )),
        0.0
    );
    assert_eq!(
        get(&format!(
            r#"xlb_backend_transitions_total{{{svc},backend="10.60.0.12"}}"#
        )),
        1.0
    );
    assert!(
        get(&format!(
            r#"xlb_health_check_duration_seconds_count{{{svc},result="fail"}}"#
        )) >= 1.0
    );
    assert!(
        get(&format!(
            r#"xlb_health_check_duration_seconds_count{{{svc},result="ok"}}"#
        )) >= 2.0
    );
    let (status, _) = http_get(&lab.lb, "127.0.0.1:9641", "/other");
    assert!(status.contains("404"), "{status}");
}

/// Without privileges, `xlb run` refuses at once naming what is missing (no EPERM from
/// deep inside map creation, no panic), and the read commands say the control socket is
/// root-only instead of claiming no daemon runs.
#[test]
fn unprivileged_commands_are_refused_with_the_reason() {
    let mut lab = Lab::new("unpriv");
    lab.write_config(&[1, 1, 1]);
    lab.start_peer();
    lab.start_xlb(&[]);
    let nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(xlb_bin())
            .args(args)
            .arg("--pin-dir")
            .arg(lab.pins.path())
            .output()
            .expect("run setpriv (util-linux)")
    };
    let o = nobody(&["run", "--iface", "lo"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("xlb run needs CAP_BPF") && err.contains("missing: CAP_NET_ADMIN"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let o = nobody(&["status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("the control socket is root-only"), "{err}");
    // The daemon itself is untouched.
    assert_eq!(json(&lab, "status")["services"], 1);
}

/// Issue 14, item 5: idle connections to the metrics endpoint must not cost the daemon
/// its file descriptors (accept errors looped without backoff, nothing closed idle
/// connections, nothing capped them): 2,000 of them under a 1,024-descriptor limit leave
/// every backend's health as it was, reloads keep applying, and a scrape still answers.
#[test]
fn idle_metrics_connections_change_nothing() {
    let mut lab = Lab::new("mflood");
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": {
            "type": "tcp", "interval_ms": 200, "timeout_ms": 100, "rise": 1, "fall": 1,
        }}),
    );
    lab.start_peer();
    let daemon = lab.start_xlb(&["--metrics-listen", "127.0.0.1:9642"]);
    let pid = lab.daemons[daemon].pid().to_string();
    let limited = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=1024:1024"])
        .status()
        .expect("prlimit");
    assert!(limited.success());

    let flood = lab.lb.run(|| {
        (0..2000)
            .filter_map(|_| {
                let addr = "127.0.0.1:9642".parse().unwrap();
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(20)).ok()
            })
            .collect::<Vec<_>>()
    });
    // Past the cap (64) the kernel backlog holds them; past that, connects time out.
    assert!(flood.len() >= 300, "only {} connections", flood.len());
    std::thread::sleep(Duration::from_secs(2));
    let reload = xlb(&lab, &["reload"]);
    assert!(
        reload.status.success(),
        "reload during the flood: {}",
        String::from_utf8_lossy(&reload.stderr)
    );
    std::thread::sleep(Duration::from_secs(1));
    drop(flood);
    let (status, body) = http_get(&lab.lb, "127.0.0.1:9642", "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("xlb_backend_up"), "{body}");
    let text = lab.log.read();
    assert!(
        !text.contains("backend down"),
        "the flood took a backend down:\n{text}"
    );
    assert!(
        lab.daemons[daemon].try_wait().is_none(),
        "the daemon died:\n{text}"
    );
}
