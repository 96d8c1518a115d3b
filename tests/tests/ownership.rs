//! Who owns a pin directory (issue 14, item 1). A second `xlb run` on the pin directory
//! of a running daemon, or a restart that fails after it adopted a crashed daemon's
//! pins, must leave the live data plane forwarding: the first takes an exclusive lock
//! on the pin directory before it touches anything, the second never unpins what it
//! adopted.

use std::time::Duration;

use testbed::lab::{Lab, Traffic};

/// The traffic kept flowing after `what`, and not one connection failed.
fn assert_forwarding_survived(lab: &Lab, traffic: Traffic, what: &str) {
    assert!(lab.link_pin().exists(), "the link pin is gone after {what}");
    assert!(
        traffic.progressed(100, Duration::from_secs(10)),
        "traffic stopped after {what}"
    );
    let attempts = traffic.stop();
    let failed: Vec<String> = attempts
        .iter()
        .filter_map(|(_, r)| r.as_ref().err().cloned())
        .collect();
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "{} connections across {what}",
        attempts.len()
    );
}

/// A lab whose daemon (the index returned) serves traffic that is already flowing.
fn serving(tag: &str) -> (Lab, usize, Traffic) {
    let mut lab = Lab::new(tag);
    lab.write_config(&[1, 1, 1]);
    lab.start_peer();
    let first = lab.start_xlb(&[]);
    let traffic = Traffic::start(&lab.client, lab.vip());
    assert!(
        traffic.progressed(50, Duration::from_secs(10)),
        "no traffic"
    );
    (lab, first, traffic)
}

#[test]
fn a_second_daemon_on_the_same_pins_exits_and_leaves_the_first_forwarding() {
    let (mut lab, first, traffic) = serving("own2nd");

    let (status, stderr) = lab.start_xlb_expecting_failure(&[]);
    assert!(!status.success(), "the second daemon succeeded:\n{stderr}");
    assert!(
        stderr.contains("in use by another xlb"),
        "no clear reason in:\n{stderr}"
    );
    assert_forwarding_survived(&lab, traffic, "the second daemon");
    // The first daemon is still the one in charge, and still answers.
    assert!(
        lab.daemons[first].try_wait().is_none(),
        "the first daemon died"
    );
    let status = lab.daemons[first].terminate(Duration::from_secs(10));
    assert!(status.success(), "xlb exited with {status}");
}

#[test]
fn a_restart_that_fails_after_adopting_leaves_forwarding_untouched() {
    let (mut lab, first, traffic) = serving("ownfail");
    lab.daemons[first].kill();

    // The successor adopts the pins, applies and takes the link over, then fails on a
    // second interface that does not exist (an operator's typo).
    let (status, stderr) = lab.start_xlb_expecting_failure(&["--iface", "xlbt-nosuch0"]);
    assert!(!status.success(), "the restart succeeded:\n{stderr}");
    assert!(
        stderr.contains("adopted=true"),
        "it did not adopt:\n{stderr}"
    );
    assert!(
        stderr.contains("no interface named xlbt-nosuch0"),
        "not the expected failure:\n{stderr}"
    );

    assert_forwarding_survived(&lab, traffic, "the failed start");
}

fn status(lab: &Lab) -> serde_json::Value {
    lab.view("status")
}

/// Issue 14, item 12: started through `ip netns exec` (a private mount namespace whose
/// /sys has no bpffs), the daemon mounts a bpffs that dies with it. It must say so at
/// start and in `xlb status`; started in the host's mount namespace it must not.
#[test]
fn pins_that_die_with_the_daemon_are_announced() {
    use std::process::Stdio;

    let mut lab = Lab::new("ownns");
    lab.write_config(&[1, 1, 1]);
    lab.start_peer();
    let first = lab.start_xlb(&[]);
    assert_eq!(status(&lab)["pins_persist"], true);
    assert!(
        !lab.log.read().contains("pins die with"),
        "{}",
        lab.log.read()
    );
    lab.daemons[first].terminate(Duration::from_secs(10));

    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(lab.log.path())
        .unwrap();
    let mut cmd = lab.lb.command("ip");
    cmd.args(["netns", "exec", lab.lb.name()])
        .arg(testbed::dataplane::xlb_bin())
        .args([
            "run",
            "--xdp-mode",
            "native",
            "--iface",
            &lab.lb_if.b,
            "--config",
        ])
        .arg(lab.config.path())
        .arg("--pin-dir")
        .arg(lab.pins.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log);
    let mut daemon = lab.lb.spawn(cmd);
    assert!(
        testbed::dataplane::wait_until(Duration::from_secs(20), || lab
            .log
            .read()
            .matches("running; SIGHUP reloads")
            .count()
            == 2),
        "xlb via ip netns exec did not start:\n{}",
        lab.log.read()
    );
    assert!(
        lab.log.read().contains("ERROR") && lab.log.read().contains("pins die with this process"),
        "no warning at start:\n{}",
        lab.log.read()
    );
    let s = status(&lab);
    assert_eq!(s["pins_persist"], false, "{s}");
    assert!(
        s["pins_warning"]
            .as_str()
            .unwrap_or_default()
            .contains("nsenter --net"),
        "{s}"
    );
    daemon.terminate(Duration::from_secs(10));
}
