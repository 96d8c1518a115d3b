//! Restart without traffic loss: `xlb run` is killed with SIGKILL under continuous
//! traffic and started again. The XDP program keeps forwarding while no daemon runs
//! (program, maps and link are pinned), the new daemon adopts the pinned state (same
//! backend ids, same connection table, program replaced on the live link), and an
//! established connection opened before the crash still closes cleanly afterwards.

use std::{
    io::{BufRead, BufReader, Read},
    net::{Shutdown, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use testbed::{
    dataplane::wait_until,
    lab::{greet, Lab},
};

#[test]
fn sigkill_and_restart_lose_no_connection() {
    let mut lab = Lab::new("restart");
    lab.write_config(&[1, 1, 1]);
    lab.start_peer();
    let first = lab.start_xlb(&[]);
    let vip = lab.vip();

    // A connection that stays open across the crash and restart.
    let (mut long, backend) = lab.client.run(move || {
        let s = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        (s, line.trim().to_owned())
    });

    // Continuous short connections until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        lab.client.spawn_thread("restart-traffic", move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match greet(vip) {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(e.to_string());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        })
    };
    let progressed = |n: u64| {
        let start = ok.load(Ordering::Relaxed);
        wait_until(Duration::from_secs(10), || {
            ok.load(Ordering::Relaxed) >= start + n
        })
    };
    assert!(progressed(50), "no traffic before the crash");

    lab.daemons[first].kill();
    assert!(
        lab.link_pin().exists(),
        "SIGKILL must leave the link pinned"
    );
    assert!(progressed(100), "traffic stopped while no daemon ran");

    lab.start_xlb(&[]);
    assert!(
        lab.log.read().contains("adopted=true"),
        "the new daemon did not adopt the link:\n{}",
        lab.log.read()
    );
    assert!(progressed(100), "traffic stopped after the restart");
    stop.store(true, Ordering::Relaxed);
    let errors = traffic.join().expect("traffic thread");

    let text = lab.log.read();
    assert!(text.contains("adopted pinned state services=1"), "{text}");
    assert!(
        text.contains("backends_added: 0"),
        "backend ids must be kept:\n{text}"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed connections across kill -9 and restart ({} ok): {errors:?}",
        ok.load(Ordering::Relaxed)
    );

    // The old connection's FIN must reach its backend (same conn-table entry, same id):
    // a wrong backend would answer with a reset instead of a clean close.
    long.shutdown(Shutdown::Write).unwrap();
    let mut rest = String::new();
    long.read_to_string(&mut rest)
        .unwrap_or_else(|e| panic!("connection to {backend} opened before the crash broke: {e}"));
    eprintln!(
        "restart: {} connections, 0 failed; long-lived connection to {backend} closed cleanly",
        ok.load(Ordering::Relaxed)
    );

    let last = lab.daemons.len() - 1;
    let status = lab.daemons[last].terminate(Duration::from_secs(10));
    assert!(status.success(), "xlb exited with {status}");
    assert!(
        !lab.link_pin().exists(),
        "SIGTERM without --keep-attached detaches"
    );
}

/// A backend that was down when the daemon died stays out after the restart: the new
/// daemon takes the health over instead of starting it up again (which would send it
/// new flows until its checks failed once more).
#[test]
fn restart_keeps_a_down_backend_out() {
    let mut lab = Lab::new("rshealth");
    lab.write_config_with(
        &[1, 1, 1],
        serde_json::json!({"check": {
            "type": "tcp", "interval_ms": 1000, "timeout_ms": 200, "rise": 2, "fall": 1,
        }}),
    );
    lab.start_peer();
    let first = lab.start_xlb(&[]);
    drop(lab.servers.remove(1));
    assert!(
        lab.wait_log(&["backend down", "10.60.0.12"], 1, Duration::from_secs(10)),
        "be2 never down:\n{}",
        lab.log.read()
    );
    lab.daemons[first].kill();
    lab.start_xlb(&[]);
    assert_eq!(
        lab.log_lines(&["health taken over from the previous daemon", "backends=3"])
            .len(),
        1,
        "{}",
        lab.log.read()
    );
    // Right after the restart, before any check could run: no connection may reach be2.
    let traffic = lab.traffic();
    assert!(traffic.progressed(200, Duration::from_secs(20)));
    let attempts = traffic.stop();
    let failed: Vec<&String> = testbed::lab::failures(&attempts);
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        attempts.len()
    );
    assert_eq!(
        lab.log_lines(&["backend down"]).len(),
        1,
        "be2 went down a second time (it was up again after the restart):\n{}",
        lab.log.read()
    );
}
