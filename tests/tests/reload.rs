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
