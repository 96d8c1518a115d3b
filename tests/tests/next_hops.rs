//! Backend MACs learned from the kernel (issue 15 item 1): a config without `mac`
//! serves its DSR backends from the first connection, and a backend whose NIC changes
//! its MAC under load is followed with nothing failing once the change is announced.
//!
//! The lab of `testbed::lab` (client, balancer and three DSR backends on one bridge);
//! the config is written without any `mac`. The IPIP test adds a router namespace on the
//! bridge with two backends behind it, each on its own routed link.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use testbed::{
    dataplane::{wait_until, PinDir},
    lab::{failures, http_get_in, plug, sample, Lab, Traffic, BACKENDS, VIP},
    Netns, TcpServer, VethPair,
};

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
        wait_until(Duration::from_secs(15), || {
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
        wait_until(Duration::from_secs(20), || row(&lab, be3)
            ["effective_weight"]
            == 1),
        "{}",
        row(&lab, be3)
    );
    assert_eq!(row(&lab, be3)["mac"], lab.mac(2));
    assert_eq!(unresolved(&lab), Some(0.0));
}

/// The router between the balancer's segment and the routed backends.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 60, 0, 254);
/// Backends behind the router, each alone on its own /24 (`10.61.N.0/24`, the router
/// at `.1`): no segment shared with the balancer, so no MAC of theirs is ever seen.
const ROUTED: [(&str, Ipv4Addr); 2] = [
    ("rb1", Ipv4Addr::new(10, 61, 1, 2)),
    ("rb2", Ipv4Addr::new(10, 61, 2, 2)),
];

#[test]
fn ipip_backends_behind_a_router_are_served_through_the_gateways_learned_mac() {
    // Declared before the lab: the decap daemons (in `lab.daemons`) stop first.
    let pins: Vec<PinDir> = ROUTED
        .iter()
        .map(|(name, _)| PinDir::new(&format!("nh-l3-{name}")))
        .collect();
    let mut lab = Lab::new("nh-l3");
    let router = Netns::new("nh-l3-rtr");
    let router_if = plug(&lab.switch, &router, ROUTER);
    router.sysctl("net.ipv4.ip_forward", 1);
    // Replies come from the VIP (on the backends' lo) through the router, and the
    // router's own route to the VIP points back at the bridge.
    router.sysctl("net.ipv4.conf.all.rp_filter", 0);
    router.sysctl(&format!("net.ipv4.conf.{}.rp_filter", router_if.b), 0);
    lab.client.sysctl("net.ipv4.conf.all.rp_filter", 0);
    lab.lb
        .ip(&["route", "add", "10.61.0.0/16", "via", &ROUTER.to_string()]);
    for (i, ((name, addr), pins)) in ROUTED.iter().zip(&pins).enumerate() {
        let ns = Netns::new(&format!("nh-l3-{name}"));
        let link = VethPair::new(&router, &ns);
        let gateway = Ipv4Addr::new(10, 61, i as u8 + 1, 1);
        router.add_addr(&link.a, format!("{gateway}/24"));
        router.sysctl(&format!("net.ipv4.conf.{}.rp_filter", link.a), 0);
        ns.add_addr(&link.b, format!("{addr}/24"));
        ns.ip(&["route", "add", "default", "via", &gateway.to_string()]);
        ns.add_addr("lo", format!("{VIP}/32"));
        ns.sysctl("net.ipv4.conf.all.rp_filter", 0);
        ns.sysctl(&format!("net.ipv4.conf.{}.rp_filter", link.b), 0);
        let mut decap = ns.command(testbed::dataplane::xlb_bin());
        decap
            .args(["decap", "--xdp-mode", "native", "--iface", &link.b])
            .args(["--allow-source", "10.60.0.2", "--pin-dir"])
            .arg(pins.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        lab.daemons.push(ns.spawn(decap));
        let attached = pins.path().join(format!("link_{}", link.b));
        assert!(
            wait_until(Duration::from_secs(20), || attached.exists()),
            "decap on {name} did not attach"
        );
        lab.servers.push(TcpServer::start(
            &ns,
            SocketAddr::from(([0, 0, 0, 0], 80)),
            name,
        ));
        lab.backend_ns.push(ns);
    }
    let router_mac = router.mac(&router_if.b);
    lab.backend_ns.push(router);

    let backends: Vec<serde_json::Value> = ROUTED
        .iter()
        .map(|(_, addr)| serde_json::json!({"address": addr.to_string()}))
        .collect();
    let config = serde_json::json!({
        "encap_sources": {"v4": "10.60.0.2"},
        "services": [{
            "vip": VIP.to_string(), "port": 80, "protocol": "tcp", "mode": "ipip",
            "backends": backends,
        }],
    });
    std::fs::write(lab.config.path(), serde_json::to_vec(&config).unwrap()).unwrap();
    lab.start_peer();
    lab.start_xlb(&[]);

    // Both tunnel next hops are the router's bridge interface, learned from the route.
    let router_mac = router_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    for (_, addr) in ROUTED {
        let r = row(&lab, addr);
        assert_eq!(r["mac"], router_mac, "{r}");
        assert_eq!(r["next_hop"], format!("via {ROUTER}"), "{r}");
        assert_eq!(r["effective_weight"], 1, "{r}");
    }

    // Real TCP through the tunnel: every connection succeeds, both backends serve.
    let traffic = Traffic::start(&lab.client, lab.vip());
    assert!(traffic.progressed(200, Duration::from_secs(30)));
    let attempts = traffic.stop();
    assert!(failures(&attempts).is_empty(), "{:?}", failures(&attempts));
    for (name, _) in ROUTED {
        let served = attempts
            .iter()
            .filter(|(_, r)| r.as_deref() == Ok(name))
            .count();
        assert!(served > 0, "{name} served nothing of {}", attempts.len());
    }
    // They arrived tunnelled: every packet the balancer encapsulated and sent back out
    // was unwrapped by one of the backends' decap programs, at least three per
    // connection (SYN, ACK, FIN).
    let packets = |stats: &serde_json::Value, counter: &str| {
        stats["global"][counter]["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("no {counter} in {stats}"))
    };
    let mut unwrapped = 0;
    for (pins, (name, _)) in pins.iter().zip(ROUTED) {
        let decapped = packets(&testbed::lab::view(pins, "stats"), "decap");
        assert!(decapped > 0, "{name} unwrapped nothing");
        unwrapped += decapped;
    }
    let sent = packets(&lab.view("stats"), "tx");
    assert_eq!(sent, unwrapped, "encapsulated by the balancer vs unwrapped");
    assert!(
        unwrapped >= 3 * attempts.len() as u64,
        "{unwrapped} packets for {} connections",
        attempts.len()
    );
}
