//! Backend MACs learned from the kernel (issue 15 item 1): a config without `mac`
//! serves its DSR backends from the first connection, and a backend whose NIC changes
//! its MAC under load is followed with nothing failing once the change is announced.
//!
//! The lab of `testbed::lab` (client, balancer and three DSR backends on one bridge);
//! the config is written without any `mac`.

use std::{net::Ipv4Addr, time::Duration};

use testbed::lab::{failures, http_get_in, sample, Lab, Traffic, BACKENDS, VIP};

/// One DSR service on VIP:80/tcp, equal weights, no MACs.
fn write_learned_config(lab: &Lab) {
    let backends: Vec<serde_json::Value> = BACKENDS
        .iter()
        .map(|(_, addr)| serde_json::json!({"address": addr.to_string()}))
        .collect();
    let config = serde_json::json!({"services": [{
        "vip": VIP.to_string(), "port": 80, "protocol": "tcp", "mode": "dsr",
        "backends": backends,
    }]});
    std::fs::write(lab.config.path(), serde_json::to_vec(&config).unwrap()).unwrap();
}

/// The backend's interface towards the switch (its only one besides `lo`).
fn backend_iface(lab: &Lab, i: usize) -> String {
    let links = lab.backend_ns[i].ip(&["-o", "link", "show"]);
    links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .find(|name| name != "lo")
        .expect("backend has an interface")
}

/// `xlb backends` row of `addr`.
fn row(lab: &Lab, addr: Ipv4Addr) -> serde_json::Value {
    let rows = lab.view("backends");
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["address"] == addr.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("no row for {addr} in {rows}"))
}

#[test]
fn dsr_backends_without_mac_are_learned_and_follow_a_mac_change_under_load() {
    let mut lab = Lab::new("nh-mac");
    // A backend that changes its MAC announces it (gratuitous ARP), as bonding
    // fail-over and most NIC replacements do.
    for ns in &lab.backend_ns {
        ns.sysctl("net.ipv4.conf.all.arp_notify", 1);
    }
    write_learned_config(&lab);
    lab.start_peer();
    lab.start_xlb(&[]);

    // Learned before the first apply: every backend serves from the start.
    for (i, (_, addr)) in BACKENDS.iter().enumerate() {
        let r = row(&lab, *addr);
        assert_eq!(r["mac"], lab.mac(i), "{r}");
        assert_eq!(r["next_hop"], "on-link", "{r}");
        assert_eq!(r["effective_weight"], 1, "{r}");
    }
    let traffic = Traffic::start(&lab.client, lab.vip());
    assert!(traffic.progressed(60, Duration::from_secs(20)));

    // be1's NIC gets a new MAC under load.
    let new_mac = "02:00:00:00:ab:01";
    let iface = backend_iface(&lab, 0);
    lab.backend_ns[0].ip(&["link", "set", "dev", &iface, "address", new_mac]);
    let changed = std::time::Instant::now();
    assert!(
        lab.wait_log(
            &["backend next hop resolved", new_mac],
            1,
            Duration::from_secs(10)
        ),
        "the new MAC was not learned: {:?}",
        lab.log_lines(&["next hop"])
    );
    let learned = changed.elapsed();
    assert_eq!(row(&lab, BACKENDS[0].1)["mac"], new_mac);
    // Once learned, nothing fails and be1 keeps its share.
    let after = std::time::Instant::now();
    assert!(traffic.progressed(90, Duration::from_secs(30)));
    let attempts = traffic.stop();
    let late: Vec<_> = attempts.iter().filter(|(at, _)| *at >= after).collect();
    let failed: Vec<&String> = late.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "failed after the MAC was learned: {failed:?}"
    );
    let be1 = late
        .iter()
        .filter(|(_, r)| r.as_deref() == Ok(BACKENDS[0].0))
        .count();
    assert!(be1 > 0, "be1 got nothing after its MAC changed");
    eprintln!(
        "MAC learned {learned:?} after the change; {} connections after, {be1} to be1; \
         failures overall: {}",
        late.len(),
        failures(&attempts).len()
    );
}

#[test]
fn a_backend_with_an_unresolvable_next_hop_is_drained_with_the_reason() {
    let mut lab = Lab::new("nh-gone");
    write_learned_config(&lab);
    // be3 is gone before the daemon starts: nobody answers its ARP.
    let iface = backend_iface(&lab, 2);
    lab.backend_ns[2].ip(&["link", "set", "dev", &iface, "down"]);
    lab.start_peer();
    lab.start_xlb(&["--metrics-listen", "127.0.0.1:9642"]);
    let unresolved = |lab: &Lab| {
        let (_, body) = http_get_in(&lab.lb, "127.0.0.1:9642", "/metrics");
        sample(&body, "xlb_next_hops_unresolved")
    };
    let be3 = BACKENDS[2].1;
    assert!(
        testbed::dataplane::wait_until(Duration::from_secs(15), || {
            row(&lab, be3)["next_hop_problem"]
                .as_str()
                .is_some_and(|p| p.contains("unreachable"))
        }),
        "{}",
        row(&lab, be3)
    );
    assert_eq!(row(&lab, be3)["effective_weight"], 0);
    assert_eq!(unresolved(&lab), Some(1.0));
    // The others serve every connection.
    let traffic = Traffic::start(&lab.client, lab.vip());
    assert!(traffic.progressed(30, Duration::from_secs(20)));
    let attempts = traffic.stop();
    assert!(failures(&attempts).is_empty(), "{:?}", failures(&attempts));
    assert!(attempts
        .iter()
        .all(|(_, r)| r.as_deref() != Ok(BACKENDS[2].0)));

    // It comes back: learned again (the kernel re-probes a managed entry), served again.
    lab.backend_ns[2].ip(&["link", "set", "dev", &iface, "up"]);
    assert!(
        testbed::dataplane::wait_until(Duration::from_secs(20), || row(&lab, be3)
            ["effective_weight"]
            == 1),
        "{}",
        row(&lab, be3)
    );
    assert_eq!(row(&lab, be3)["mac"], lab.mac(2));
    assert_eq!(unresolved(&lab), Some(0.0));
}
