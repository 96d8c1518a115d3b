//! Hot reload under traffic: services added, changed and removed by `xlb reload`
//! (and SIGHUP) while clients keep connecting to a service that stays. The untouched
//! service never fails a connection and its established connections survive; the added
//! service answers as soon as the reload returns; the removed one stops.

use std::{net::SocketAddr, time::Duration};

use testbed::{
    dataplane::xlb_bin,
    lab::{finish, hold, Lab, BACKENDS, VIP},
    TcpServer,
};

/// Service A (VIP:80, all three backends) always; service B (VIP:8080, `b_weights`)
/// when given.
fn write(lab: &Lab, b_weights: Option<[u32; 3]>) {
    let backends = |weights: [u32; 3]| -> Vec<serde_json::Value> {
        (0..3)
            .map(|i| {
                serde_json::json!({"address": BACKENDS[i].1.to_string(), "mac": lab.mac(i), "weight": weights[i]})
            })
            .collect()
    };
    let mut services = vec![serde_json::json!({
        "vip": VIP.to_string(), "port": 80, "protocol": "tcp", "mode": "dsr",
        "backends": backends([1, 1, 1]),
    })];
    if let Some(w) = b_weights {
        services.push(serde_json::json!({
            "vip": VIP.to_string(), "port": 8080, "protocol": "tcp", "mode": "dsr",
            "backends": backends(w),
        }));
    }
    std::fs::write(
        lab.config.path(),
        serde_json::to_vec_pretty(&serde_json::json!({ "services": services })).unwrap(),
    )
    .unwrap();
}

fn reload(lab: &Lab) {
    let o = std::process::Command::new(xlb_bin())
        .args(["reload", "--pin-dir"])
        .arg(lab.pins.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "reload failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn reloads_under_traffic_leave_untouched_services_alone() {
    let mut lab = Lab::new("reload");
    let b_servers: Vec<TcpServer> = lab
        .backend_ns
        .iter()
        .zip(BACKENDS)
        .map(|(ns, (name, _))| {
            TcpServer::start(
                ns,
                SocketAddr::from(([0, 0, 0, 0], 8080)),
                &format!("{name}-b"),
            )
        })
        .collect();
    write(&lab, None);
    lab.start_peer();
    let daemon = lab.start_xlb(&[]);
    let vip = lab.vip();
    let vip_b = SocketAddr::from((VIP, 8080));
    let names: Vec<String> = BACKENDS.iter().map(|(n, _)| (*n).to_owned()).collect();
    let held = lab.client.run(|| hold(vip, &names));
    let traffic = lab.traffic();
    assert!(traffic.progressed(50, Duration::from_secs(20)));

    let b_works = |lab: &Lab| {
        lab.client.run(move || {
            (0..10)
                .map(|_| testbed::lab::greet(vip_b))
                .collect::<Vec<_>>()
        })
    };
    for round in 0..10 {
        // Add B (weights vary per round: a change), check it answers, then remove it.
        let w = [1 + round % 3, 1, if round % 2 == 0 { 0 } else { 2 }];
        write(&lab, Some(w));
        if round % 2 == 0 {
            reload(&lab);
        } else {
            lab.reload(daemon);
            assert!(lab.wait_log(
                &["reloaded"],
                2 * round as usize + 1,
                Duration::from_secs(10)
            ));
        }
        let answers = b_works(&lab);
        for a in &answers {
            let id = a
                .as_ref()
                .unwrap_or_else(|e| panic!("round {round}: B failed: {e}"));
            assert!(id.ends_with("-b"), "round {round}: B answered by {id}");
            if w[2] == 0 {
                assert_ne!(id, "be3-b", "round {round}: weight 0 got new flows");
            }
        }
        write(&lab, None);
        reload(&lab);
        if round % 2 == 1 {
            assert!(lab.wait_log(
                &["reloaded"],
                2 * round as usize + 2,
                Duration::from_secs(10)
            ));
        }
        // Removed: the SYN is no longer forwarded (the balancer's own stack does not
        // serve the VIP), so the connection attempt times out.
        let gone = lab.client.run(move || testbed::lab::greet(vip_b));
        assert!(
            gone.is_err(),
            "round {round}: removed service B still answers: {gone:?}"
        );
        assert!(traffic.progressed(20, Duration::from_secs(20)));
    }
    let attempts = traffic.stop();
    let failed: Vec<&String> = testbed::lab::failures(&attempts);
    assert!(
        failed.is_empty(),
        "{} of {} connections to the untouched service failed across 20 reloads: {failed:?}",
        failed.len(),
        attempts.len()
    );
    for (id, s) in held {
        lab.client
            .run(move || finish(s))
            .unwrap_or_else(|e| panic!("established connection to {id} broken by a reload: {e}"));
    }
    eprintln!(
        "reload: 20 reloads (10 adding B, 10 removing it), {} connections to A, 0 failed",
        attempts.len()
    );
    drop(b_servers);
}

/// Service A (VIP:80, the three real backends) and nine services of 1,000 backends each
/// on ports `first_port..first_port + 9`, backends from address pool `pool` (addresses
/// nobody has: no traffic goes to those services).
fn write_big(lab: &Lab, first_port: u16, pool: u8) {
    let real: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!({"address": BACKENDS[i].1.to_string(), "mac": lab.mac(i)}))
        .collect();
    let mut services = vec![serde_json::json!({
        "vip": VIP.to_string(), "port": 80, "protocol": "tcp", "mode": "dsr", "backends": real,
    })];
    for s in 0..9u16 {
        let backends: Vec<serde_json::Value> = (0..1000u16)
            .map(|n| {
                let i = s * 1000 + n;
                let addr = std::net::Ipv4Addr::new(10, pool, (i >> 8) as u8, i as u8);
                serde_json::json!({"address": addr.to_string(), "mac": "02:00:00:00:00:99"})
            })
            .collect();
        services.push(serde_json::json!({
            "vip": VIP.to_string(), "port": first_port + s, "protocol": "tcp", "mode": "dsr",
            "table_size": 2003, "backends": backends,
        }));
    }
    std::fs::write(
        lab.config.path(),
        serde_json::to_vec(&serde_json::json!({ "services": services })).unwrap(),
    )
    .unwrap();
}

/// Issue 14, item 4: a reload that replaces all of 9,000 backends (and their nine
/// services) by 9,000 new ones once panicked the daemon (new ids were handed out before
/// old ones were freed), and again after a restart that adopted the ids. Under traffic
/// to a service that stays: the reload applies, a kill -9 and restart adopt it, the
/// reverse reload applies too, and no connection fails.
#[test]
fn replacing_9000_backends_in_one_reload_under_traffic() {
    let mut lab = Lab::new("rl9k");
    write_big(&lab, 9001, 200);
    lab.start_peer();
    let daemon = lab.start_xlb(&[]);
    let traffic = lab.traffic();
    assert!(traffic.progressed(50, Duration::from_secs(20)));
    let services = |lab: &Lab| lab.view("status")["services"].clone();

    write_big(&lab, 9101, 201);
    reload(&lab);
    assert_eq!(services(&lab), 10);
    assert_eq!(lab.view("status")["last_reload"], "ok");
    assert!(traffic.progressed(50, Duration::from_secs(20)));

    // A crash and a restart: the new daemon adopts the 9,003 ids and can replace them.
    lab.daemons[daemon].kill();
    lab.start_xlb(&[]);
    write_big(&lab, 9001, 200);
    reload(&lab);
    assert_eq!(services(&lab), 10);
    assert!(traffic.progressed(50, Duration::from_secs(20)));

    let attempts = traffic.stop();
    let failed = testbed::lab::failures(&attempts);
    assert!(
        failed.is_empty(),
        "{} of {} connections to the service that stayed failed: {failed:?}",
        failed.len(),
        attempts.len()
    );
    assert!(
        lab.log_lines(&["panicked"]).is_empty(),
        "{}",
        lab.log.read()
    );
}
