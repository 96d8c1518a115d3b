//! `xlb_decap` through BPF_PROG_TEST_RUN: it unwraps IPIP, IPv6-in-IPv6 and GUE only
//! from an allowed balancer source to an address of this host (`XLB_DECAP_ALLOW`, as
//! `xlb decap --allow-source` writes it); every other tunnel packet passes to the stack
//! byte for byte unchanged, counted by reason (issue 14: a decap that unwraps tunnels
//! from anyone lets anyone inject packets to the VIPs past filters that see only the
//! outer header).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{
    service::{AF_INET, DECAP_PAIR, DECAP_SOURCE},
    wire::XDP_PASS,
    DecapKey, Stat,
};
use lb_userspace::dataplane::{
    addr::be_words, aya::maps, decap::allowlist, prefix::IpPrefix, DataPlane as _,
};
use testbed::{case::Case, dataplane::TestDataplane, packet};

const DECAP: &str = lb_common::programs::DECAP;
const GUE_PORT: u16 = 6080;
/// The allowed balancer's encapsulation sources.
const LB4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// This host's own address (the balancer encapsulates to it).
const HOST4: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
/// Another sender, and an address that is not this host's.
const OTHER4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 66);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const BACKEND_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn lb6() -> Ipv6Addr {
    v6("fd00::2")
}
fn host6() -> Ipv6Addr {
    v6("fd00:1::4")
}

const UNWRAPPED: &[Stat] = &[Stat::Rx, Stat::Pass, Stat::Decap];
const FOREIGN_SOURCE: &[Stat] = &[Stat::Rx, Stat::Pass, Stat::DecapForeignSource];
const FOREIGN_DEST: &[Stat] = &[Stat::Rx, Stat::Pass, Stat::DecapForeignDest];

/// The decap data plane as `xlb decap --allow-source 10.0.0.2 --allow-source fd00::2` on
/// a host holding 10.0.1.1 and fd00:1::4 writes it.
fn setup(tag: &str) -> TestDataplane {
    let mut dp = TestDataplane::load(tag);
    maps::set_config(
        dp.dp.ebpf_mut(),
        &lb_common::Config {
            gue_port_be: GUE_PORT.to_be(),
            ..Default::default()
        },
    )
    .unwrap();
    let allowed = allowlist(
        &[IpAddr::V4(LB4), IpAddr::V6(lb6())],
        &[IpAddr::V4(HOST4), IpAddr::V6(host6())],
    )
    .unwrap();
    dp.dp.set_decap_allowed(&allowed).unwrap();
    dp
}

/// What the stack gets from an unwrapped frame: the inner packet behind the outer
/// frame's MACs.
fn unwrapped(wrapped: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut expected = inner.to_vec();
    expected[..12].copy_from_slice(&wrapped[..12]);
    expected
}

fn inner4() -> Vec<u8> {
    packet::tcp4_frame(CLIENT4, VIP4, 40000, 80, packet::SYN)
}
fn inner6() -> Vec<u8> {
    packet::tcp6_frame(v6("2001:db8::1"), v6("fd00::100"), 40000, 80, packet::SYN)
}
fn ipip4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    packet::ipip4_output(&inner4(), BACKEND_MAC, src, dst)
}
fn ipip6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    packet::ipip6_output(&inner6(), BACKEND_MAC, src, dst)
}
fn gue4(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    packet::gue4_output(&inner4(), BACKEND_MAC, src, dst, 0xc123, GUE_PORT)
}
fn gue6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    packet::gue6_output(&inner6(), BACKEND_MAC, src, dst, 0xc123, GUE_PORT)
}

#[test]
fn tunnels_from_an_allowed_balancer_to_this_host_are_unwrapped() {
    let mut dp = setup("decap-ok");
    let rows = [
        ("IPIP", ipip4(LB4, HOST4), inner4()),
        ("IPv6-in-IPv6", ipip6(lb6(), host6()), inner6()),
        ("GUE v4", gue4(LB4, HOST4), inner4()),
        ("GUE v6", gue6(lb6(), host6()), inner6()),
    ];
    for (what, wrapped, inner) in rows {
        let output = unwrapped(&wrapped, &inner);
        dp.run_case_on(
            DECAP,
            &Case::new(what, wrapped, XDP_PASS, output, UNWRAPPED),
        );
    }
}

#[test]
fn tunnels_from_other_sources_or_to_other_hosts_pass_unchanged_and_are_counted() {
    let mut dp = setup("decap-refuse");
    let rows = [
        (
            "IPIP from another source",
            ipip4(OTHER4, HOST4),
            FOREIGN_SOURCE,
        ),
        ("IPIP to another address", ipip4(LB4, OTHER4), FOREIGN_DEST),
        // The allowed source's marker entry (destination all zero) admits nothing.
        (
            "IPIP to 0.0.0.0",
            ipip4(LB4, Ipv4Addr::UNSPECIFIED),
            FOREIGN_DEST,
        ),
        (
            "IPv6-in-IPv6 from another source",
            ipip6(v6("fd00::66"), host6()),
            FOREIGN_SOURCE,
        ),
        (
            "IPv6-in-IPv6 to another address",
            ipip6(lb6(), v6("fd00:1::99")),
            FOREIGN_DEST,
        ),
        (
            "GUE v4 from another source",
            gue4(OTHER4, HOST4),
            FOREIGN_SOURCE,
        ),
        ("GUE v4 to another address", gue4(LB4, OTHER4), FOREIGN_DEST),
        (
            "GUE v6 from another source",
            gue6(v6("fd00::66"), host6()),
            FOREIGN_SOURCE,
        ),
        (
            "GUE v6 to another address",
            gue6(lb6(), v6("fd00:1::99")),
            FOREIGN_DEST,
        ),
        // The IPv4 balancer's address as an IPv4-mapped IPv6 source is another family.
        (
            "IPv6-in-IPv6 from the IPv4 balancer, mapped",
            ipip6(LB4.to_ipv6_mapped(), host6()),
            FOREIGN_SOURCE,
        ),
    ];
    for (what, wrapped, counted) in rows {
        dp.run_case_on(DECAP, &Case::unchanged(what, wrapped, XDP_PASS, counted));
    }
    // Not tunnels: untouched, and no refusal counted.
    dp.run_case_on(
        DECAP,
        &Case::unchanged("plain TCP", inner4(), XDP_PASS, &[Stat::Rx, Stat::Pass]),
    );
    let mut other_port = gue4(LB4, HOST4);
    other_port[14 + 20 + 2..][..2].copy_from_slice(&6081u16.to_be_bytes());
    dp.run_case_on(
        DECAP,
        &Case::unchanged(
            "UDP to another port",
            other_port,
            XDP_PASS,
            &[Stat::Rx, Stat::Pass],
        ),
    );
}

#[test]
fn an_empty_allow_list_unwraps_nothing_and_a_rewrite_takes_effect() {
    let mut dp = TestDataplane::load("decap-empty");
    dp.run_case_on(
        DECAP,
        &Case::unchanged(
            "IPIP, nothing allowed",
            ipip4(LB4, HOST4),
            XDP_PASS,
            FOREIGN_SOURCE,
        ),
    );
    // A new list replaces the old one whole: the old source's pairs and marker go.
    let first = allowlist(&[IpAddr::V4(LB4)], &[IpAddr::V4(HOST4)]).unwrap();
    dp.dp.set_decap_allowed(&first).unwrap();
    let wrapped = ipip4(LB4, HOST4);
    let output = unwrapped(&wrapped, &inner4());
    dp.run_case_on(
        DECAP,
        &Case::new(
            "IPIP, allowed",
            wrapped.clone(),
            XDP_PASS,
            output,
            UNWRAPPED,
        ),
    );
    let second = allowlist(&[IpAddr::V4(OTHER4)], &[IpAddr::V4(HOST4)]).unwrap();
    dp.dp.set_decap_allowed(&second).unwrap();
    dp.run_case_on(
        DECAP,
        &Case::unchanged(
            "IPIP, source no longer allowed",
            wrapped,
            XDP_PASS,
            FOREIGN_SOURCE,
        ),
    );
}

/// Issue 15.5: a balancer whose outer sources carry flow entropy sends from anywhere in
/// its prefix; `--allow-source 10.99.0.0/16` (and an IPv6 /96) accepts every source in
/// it, next to a bare address (lengths 32 and 16 in one family), and nothing outside.
#[test]
fn a_source_prefix_admits_every_address_inside_it_and_nothing_outside() {
    let mut dp = setup("decap-prefix");
    let prefixes: Vec<IpPrefix> = ["10.99.0.0/16", "10.0.0.2", "fd99::/96"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    let allowed = allowlist(&prefixes, &[IpAddr::V4(HOST4), IpAddr::V6(host6())]).unwrap();
    dp.dp.set_decap_allowed(&allowed).unwrap();
    let inside4 = [
        Ipv4Addr::new(10, 99, 0, 0),
        Ipv4Addr::new(10, 99, 77, 3),
        Ipv4Addr::new(10, 99, 255, 255),
    ];
    for src in inside4 {
        let wrapped = ipip4(src, HOST4);
        let output = unwrapped(&wrapped, &inner4());
        dp.run_case_on(
            DECAP,
            &Case::new(
                format!("IPIP from {src}"),
                wrapped,
                XDP_PASS,
                output,
                UNWRAPPED,
            ),
        );
        let wrapped = gue4(src, HOST4);
        let output = unwrapped(&wrapped, &inner4());
        dp.run_case_on(
            DECAP,
            &Case::new(
                format!("GUE from {src}"),
                wrapped,
                XDP_PASS,
                output,
                UNWRAPPED,
            ),
        );
    }
    for src in [v6("fd99::1:2"), v6("fd99::ffff:ffff")] {
        let wrapped = ipip6(src, host6());
        let output = unwrapped(&wrapped, &inner6());
        dp.run_case_on(
            DECAP,
            &Case::new(
                format!("IPv6-in-IPv6 from {src}"),
                wrapped,
                XDP_PASS,
                output,
                UNWRAPPED,
            ),
        );
    }
    // The bare address next to the prefix still counts alone.
    let wrapped = ipip4(LB4, HOST4);
    let output = unwrapped(&wrapped, &inner4());
    dp.run_case_on(
        DECAP,
        &Case::new(
            "IPIP from the bare source",
            wrapped,
            XDP_PASS,
            output,
            UNWRAPPED,
        ),
    );
    let refused = [
        (
            "IPIP from 10.98.255.255",
            ipip4(Ipv4Addr::new(10, 98, 255, 255), HOST4),
            FOREIGN_SOURCE,
        ),
        (
            "IPIP from 10.100.0.0",
            ipip4(Ipv4Addr::new(10, 100, 0, 0), HOST4),
            FOREIGN_SOURCE,
        ),
        (
            "IPIP from 10.0.0.3",
            ipip4(Ipv4Addr::new(10, 0, 0, 3), HOST4),
            FOREIGN_SOURCE,
        ),
        (
            "GUE from 10.98.0.1",
            gue4(Ipv4Addr::new(10, 98, 0, 1), HOST4),
            FOREIGN_SOURCE,
        ),
        (
            "IPv6-in-IPv6 from fd99:0:0:1::1",
            ipip6(v6("fd99:0:0:1::1"), host6()),
            FOREIGN_SOURCE,
        ),
        // Inside the prefix, but not to this host: the prefix's marker names it.
        (
            "IPIP from the prefix to another address",
            ipip4(Ipv4Addr::new(10, 99, 1, 1), OTHER4),
            FOREIGN_DEST,
        ),
        (
            "IPv6-in-IPv6 from the prefix to another address",
            ipip6(v6("fd99::7"), v6("fd00:1::99")),
            FOREIGN_DEST,
        ),
    ];
    for (what, wrapped, counted) in refused {
        dp.run_case_on(DECAP, &Case::unchanged(what, wrapped, XDP_PASS, counted));
    }
}

/// The pinned `XLB_DECAP_ALLOW` of a running `xlb decap`.
fn pinned_allow_list(pins: &std::path::Path) -> std::collections::BTreeMap<DecapKey, u32> {
    use aya::maps::{HashMap, Map, MapData};
    let Ok(data) = MapData::from_pin(pins.join(lb_common::maps::DECAP_ALLOW)) else {
        return Default::default();
    };
    let map: HashMap<MapData, DecapKey, u32> =
        HashMap::try_from(Map::HashMap(data)).expect("a hash map");
    map.iter().map(|r| r.expect("entry")).collect()
}

/// `xlb decap` without `--allow-source` refuses to start, saying what to add, before it
/// loads or attaches anything; with one, the allow-list it writes is the balancer's
/// source to the interface's own addresses, and follows an address added later.
#[test]
fn xlb_decap_needs_an_allowed_source_and_follows_the_interface_addresses() {
    use std::time::Duration;
    use testbed::{
        dataplane::{wait_until, xlb_bin, PinDir},
        Netns, VethPair,
    };
    let ns = Netns::new("decap-cli");
    let peer = Netns::new("decap-clp");
    let veth = VethPair::new(&ns, &peer);
    ns.add_addr(&veth.a, "10.61.0.11/24");
    let pins = PinDir::new("decap-cli");

    let out = ns
        .command(xlb_bin())
        .args([
            "decap",
            "--xdp-mode",
            "generic",
            "--iface",
            &veth.a,
            "--pin-dir",
        ])
        .arg(pins.path())
        .output()
        .expect("run xlb decap");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "started without --allow-source: {err}"
    );
    assert!(err.contains("--allow-source"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        !pins.path().join(format!("link_{}", veth.a)).exists(),
        "attached anyway"
    );

    let mut cmd = ns.command(xlb_bin());
    cmd.args(["decap", "--xdp-mode", "generic", "--iface", &veth.a])
        .args(["--allow-source", "10.61.0.2", "--allow-source", "fd61::2"])
        .args(["--allow-destination", "10.61.9.9", "--pin-dir"])
        .arg(pins.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut daemon = ns.spawn(cmd);
    let link = pins.path().join(format!("link_{}", veth.a));
    assert!(
        wait_until(Duration::from_secs(20), || link.exists()),
        "decap did not attach"
    );
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    // The allow-list for the interface's addresses as the kernel lists them now (its
    // IPv6 link-local one included, whenever it appears), plus the --allow-destination.
    let expected = || {
        let iface = ns.run(|| lb_userspace::vrrp::net::iface(&veth.a, &[]));
        let mut local = iface.unwrap_or_else(|e| panic!("{e:#}")).addresses;
        local.push(ip("10.61.9.9"));
        allowlist(&[ip("10.61.0.2"), ip("fd61::2")], &local)
            .unwrap()
            .entries
    };
    let follows = || {
        let want = expected();
        let followed = wait_until(Duration::from_secs(10), || {
            pinned_allow_list(pins.path()) == expected()
        });
        assert!(
            followed,
            "pinned allow-list {:?}, expected {want:?}",
            pinned_allow_list(pins.path())
        );
    };
    follows();
    let (s4, _) = be_words(ip("10.61.0.2"));
    let pair = |dst: &str| {
        let (d, family) = be_words(ip(dst));
        let (s, _) = be_words(ip(if family == AF_INET {
            "10.61.0.2"
        } else {
            "fd61::2"
        }));
        DecapKey {
            dst: d,
            ..DecapKey::source(s, family)
        }
    };
    let pinned = pinned_allow_list(pins.path());
    assert_eq!(
        pinned.get(&pair("10.61.0.11")),
        Some(&DECAP_PAIR),
        "{pinned:?}"
    );
    assert_eq!(
        pinned.get(&pair("10.61.9.9")),
        Some(&DECAP_PAIR),
        "{pinned:?}"
    );
    assert_eq!(
        pinned.get(&DecapKey::source(s4, AF_INET)),
        Some(&DECAP_SOURCE),
        "{pinned:?}"
    );
    assert_eq!(pinned.get(&pair("fd61::11")), None, "{pinned:?}");
    // An address added while it runs is followed (resynced every second).
    ns.add_addr(&veth.a, "fd61::11/64");
    follows();
    let pinned = pinned_allow_list(pins.path());
    assert_eq!(
        pinned.get(&pair("fd61::11")),
        Some(&DECAP_PAIR),
        "{pinned:?}"
    );
    daemon.terminate(Duration::from_secs(10));
}
