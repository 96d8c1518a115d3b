//! RSS-friendly tunnels end to end (issue 15 item 5): real TCP through an IPIP service
//! whose `encap_sources` entry is a prefix, the backends running the `xlb decap` binary
//! with `--allow-source PREFIX`. Each connection's packets leave the lb from an outer
//! source of their own inside the prefix (so a backend NIC's RSS would spread them over
//! its receive queues); the backends accept the whole prefix and unwrap every packet.
//!
//! The topology is ipip_e2e.rs's (testbed `topology`), plus a capture on each backend's
//! bridge port, which sees the wrapped frames before the backend's decap unwraps them.

use std::{collections::HashSet, net::IpAddr, time::Duration};

use lb_common::Stat;
use lb_userspace::{config::Mode, dataplane::prefix::IpPrefix};
use testbed::{
    capture::Capture,
    dataplane::wait_until,
    topology::{greet_ephemeral, Addresses, Testbed, Tunnels, V4, V6},
};

/// Connections per test.
const N: usize = 300;

#[test]
fn ipip4_connections_leave_from_many_sources_of_the_prefix_and_are_all_unwrapped() {
    many_sources("rss4", V4, "10.51.0.0/16");
}

#[test]
fn ipip6_connections_leave_from_many_sources_of_the_prefix_and_are_all_unwrapped() {
    many_sources("rss6", V6, "fd51::/96");
}

/// `N` graceful connections through a 1:1:1 IPIP service: all succeed; the frames the
/// backends got show at least 90 % as many distinct outer sources as connections, all in
/// the prefix, and one source per connection; every packet the lb wrapped was unwrapped
/// by a backend's `xlb decap` and none refused.
fn many_sources(tag: &str, addrs: Addresses, prefix: &str) {
    let prefix: IpPrefix = prefix.parse().unwrap();
    let mut tb = Testbed::with_tunnels(
        tag,
        Mode::Ipip,
        addrs,
        Tunnels {
            source: Some(prefix),
            decap_daemon: true,
        },
    );
    tb.apply(&[(0, 1), (1, 1), (2, 1)]);
    let captures: Vec<Capture> = tb
        .backends
        .iter()
        .map(|b| Capture::start(&tb.switch, &b.port))
        .collect();
    let before_lb = tb.counters().lb;
    let before_decap = tb.decap_daemon_stats();
    let vip = tb.vip();
    let flows: Vec<(u16, String)> = tb
        .client
        .run(|| (0..N).map(|_| greet_ephemeral(vip)).collect());
    let ports: HashSet<u16> = flows.iter().map(|(p, _)| *p).collect();
    assert_eq!(ports.len(), N, "source ports were reused");

    // Every wrapped packet reaches a backend and is unwrapped there, none refused.
    let moved = |s: Stat, after: &[lb_userspace::dataplane::GlobalStats]| -> u64 {
        after
            .iter()
            .zip(&before_decap)
            .map(|(a, b)| a.get(s).packets - b.get(s).packets)
            .sum()
    };
    let mut last = (0, 0);
    let settled = wait_until(Duration::from_secs(5), || {
        let tx = tb.counters().lb.get(Stat::Tx).packets - before_lb.get(Stat::Tx).packets;
        let decap = moved(Stat::Decap, &tb.decap_daemon_stats());
        last = (tx, decap);
        tx == decap
    });
    assert!(
        settled,
        "lb wrapped {} packets, backends unwrapped {}",
        last.0, last.1
    );
    let after = tb.decap_daemon_stats();
    assert_eq!(moved(Stat::DecapForeignSource, &after), 0);
    assert_eq!(moved(Stat::DecapForeignDest, &after), 0);
    assert!(
        last.1 >= 3 * N as u64,
        "{} unwrapped for {N} connections",
        last.1
    );

    // What went over the wire to the backends: the outer sources per inner flow (the
    // capture threads may still be reading the last frames).
    let tunnelled_frames = || -> Vec<(IpAddr, u16)> {
        captures
            .iter()
            .flat_map(Capture::frames)
            .filter_map(|(_, frame)| tunnelled(&frame))
            .collect()
    };
    let mut seen = Vec::new();
    wait_until(Duration::from_secs(5), || {
        seen = tunnelled_frames();
        seen.len() as u64 >= last.0
    });
    let frames = seen.len() as u64;
    let mut sources = HashSet::new();
    let mut per_flow: std::collections::HashMap<u16, HashSet<IpAddr>> = Default::default();
    for (outer_src, client_port) in seen {
        assert!(inside(prefix, outer_src), "{outer_src} outside {prefix}");
        sources.insert(outer_src);
        per_flow.entry(client_port).or_default().insert(outer_src);
    }
    eprintln!(
        "{tag}: {N} connections, lb wrapped {} packets, {frames} captured, {} distinct outer \
         sources in {prefix}",
        last.0,
        sources.len()
    );
    assert_eq!(frames, last.0, "captured frames vs wrapped packets");
    assert!(
        sources.len() * 10 >= N * 9,
        "{} distinct outer sources for {N} connections",
        sources.len()
    );
    let split: Vec<_> = per_flow.iter().filter(|(_, s)| s.len() != 1).collect();
    assert!(split.is_empty(), "flows with several sources: {split:?}");
    assert_eq!(per_flow.len(), N);
    drop(captures);
    tb.teardown();
}

/// An IPIP / IPv6-in-IPv6 frame's outer source and its inner TCP source port.
fn tunnelled(frame: &[u8]) -> Option<(IpAddr, u16)> {
    let ether_type = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    match ether_type {
        0x0800 if *frame.get(23)? == 4 => {
            let src: [u8; 4] = frame.get(26..30)?.try_into().ok()?;
            // The inner IPv4 header (20 bytes, no options) follows the outer one.
            let port = frame.get(54..56)?;
            Some((src.into(), u16::from_be_bytes([port[0], port[1]])))
        }
        0x86dd if *frame.get(20)? == 41 => {
            let src: [u8; 16] = frame.get(22..38)?.try_into().ok()?;
            let port = frame.get(94..96)?;
            Some((src.into(), u16::from_be_bytes([port[0], port[1]])))
        }
        _ => None,
    }
}

fn inside(prefix: IpPrefix, addr: IpAddr) -> bool {
    let (a, family) = lb_userspace::dataplane::addr::be_words(addr);
    let (p, pf) = prefix.words();
    let mask = prefix.mask();
    family == pf && (0..4).all(|i| a[i] & mask[i] == p[i])
}
