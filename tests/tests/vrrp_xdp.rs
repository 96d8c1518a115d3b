//! VRRP adverts in XDP through BPF_PROG_TEST_RUN: one test per row of the rule table in
//! docs/vrrp-xdp.md. Input frames and our expected answers are built with the userspace
//! VRRP codec (`lb_userspace::vrrp::packet`), not by hand.
//!
//! Without a context, BPF_PROG_TEST_RUN runs the program as if the frame arrived on the
//! loopback device of the caller's network namespace (ifindex 1), so routers here are
//! configured on ifindex 1; `adverts_are_judged_per_ingress_interface` passes
//! `xdp_md.ingress_ifindex` explicitly for interfaces in a fresh namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{
    programs,
    service::{AF_INET, AF_INET6},
    vrrp::{VRRP_FRAME_MAX, VRRP_STATE_MASTER, VRRP_STATE_NOT_MASTER},
    wire::{ETH_HLEN, IPV4_HLEN, IPV6_HLEN, XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX},
    Stat, VrrpKey, VrrpRouter, VrrpSeen,
};
use lb_userspace::{
    dataplane::aya::maps,
    vrrp::packet::{encode_frame, Advert},
};
use pnet_packet::ipv4::{self, MutableIpv4Packet};
use testbed::{case::Case, dataplane::TestDataplane, Netns};

/// Where BPF_PROG_TEST_RUN says a context-less frame arrived: `lo`.
const LO: u32 = 1;
/// VRID with a VRRPv3 router for IPv4 and one for IPv6.
const VRID: u8 = 7;
/// VRID with a VRRPv2 (IPv4) router only.
const VRID_V2: u8 = 9;
const OUR_PRIORITY: u8 = 150;
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x33];

const OUR4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PEER4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const VIP4B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 101);

fn our6() -> Ipv6Addr {
    "fe80::2".parse().unwrap()
}
fn peer6() -> Ipv6Addr {
    "fe80::3".parse().unwrap()
}
fn vip6() -> Ipv6Addr {
    "fd00::100".parse().unwrap()
}

fn be(addr: IpAddr) -> [u32; 4] {
    match addr {
        IpAddr::V4(a) => [u32::from_ne_bytes(a.octets()), 0, 0, 0],
        IpAddr::V6(a) => {
            let o = a.octets();
            core::array::from_fn(|i| u32::from_ne_bytes(o[i * 4..i * 4 + 4].try_into().unwrap()))
        }
    }
}

/// Our own advertisement for a router (VIP4 and VIP4B / vip6 as its addresses).
fn our_frame(family: u8, version: u8) -> Vec<u8> {
    let advert = match (family, version) {
        (AF_INET, 2) => Advert::v2(VRID_V2, OUR_PRIORITY, 1, vec![VIP4, VIP4B]),
        (AF_INET, _) => Advert::v3(VRID, OUR_PRIORITY, 100, vec![VIP4.into(), VIP4B.into()]),
        _ => Advert::v3(VRID, OUR_PRIORITY, 100, vec![vip6().into()]),
    };
    let src = if family == AF_INET {
        IpAddr::V4(OUR4)
    } else {
        IpAddr::V6(our6())
    };
    encode_frame(None, src, &advert).unwrap()
}

fn router(family: u8, version: u8, state: u8) -> VrrpRouter {
    let frame = our_frame(family, version);
    let mut r = VrrpRouter {
        state,
        priority: OUR_PRIORITY,
        version,
        adver_int_cs: 100,
        frame_len: frame.len() as u16,
        // A live daemon's lease (it renews it every advert interval).
        lease_until_ns: u64::MAX,
        addr: if family == AF_INET {
            be(OUR4.into())
        } else {
            be(our6().into())
        },
        ..Default::default()
    };
    r.frame[..frame.len()].copy_from_slice(&frame);
    r
}

fn key(family: u8, vrid: u8) -> VrrpKey {
    VrrpKey::new(LO, vrid, family)
}

/// Routers on `lo`: VRID 7 v3 IPv4 and IPv6, VRID 9 v2 IPv4, all in `state`.
fn setup(tag: &str, state: u8) -> TestDataplane {
    let mut dp = TestDataplane::load(tag);
    let ebpf = dp.dp.ebpf_mut();
    maps::set_vrrp_router(ebpf, &key(AF_INET, VRID), &router(AF_INET, 3, state)).unwrap();
    maps::set_vrrp_router(ebpf, &key(AF_INET6, VRID), &router(AF_INET6, 3, state)).unwrap();
    maps::set_vrrp_router(ebpf, &key(AF_INET, VRID_V2), &router(AF_INET, 2, state)).unwrap();
    dp
}

/// A peer's v3 advert frame (one virtual address).
fn peer_advert4(vrid: u8, priority: u8) -> Vec<u8> {
    let advert = Advert::v3(vrid, priority, 100, vec![VIP4.into()]);
    encode_frame(Some(PEER_MAC), PEER4.into(), &advert).unwrap()
}

fn peer_advert6(vrid: u8, priority: u8) -> Vec<u8> {
    let advert = Advert::v3(vrid, priority, 100, vec![vip6().into()]);
    encode_frame(Some(PEER_MAC), peer6().into(), &advert).unwrap()
}

fn peer_advert_v2(vrid: u8, priority: u8) -> Vec<u8> {
    let advert = Advert::v2(vrid, priority, 1, vec![VIP4]);
    encode_frame(Some(PEER_MAC), PEER4.into(), &advert).unwrap()
}

/// Rewrites the IPv4 header of `frame` with `f` and fixes its header checksum.
fn edit_ipv4(frame: &[u8], f: impl FnOnce(&mut MutableIpv4Packet)) -> Vec<u8> {
    let mut out = frame.to_vec();
    let mut ip = MutableIpv4Packet::new(&mut out[ETH_HLEN..]).unwrap();
    f(&mut ip);
    let sum = ipv4::checksum(&ip.to_immutable());
    ip.set_checksum(sum);
    out
}

/// A row (run on `lo`): an advert passed untouched, counting `reason`.
fn passed(what: impl Into<String>, input: &[u8], reason: Stat) -> Case {
    Case::unchanged(
        what,
        input.to_vec(),
        XDP_PASS,
        &[Stat::Rx, Stat::Pass, reason],
    )
}

/// A row: an advert dropped untouched, counting `reason`.
fn dropped(what: impl Into<String>, input: &[u8], reason: Stat) -> Case {
    Case::unchanged(
        what,
        input.to_vec(),
        XDP_DROP,
        &[Stat::Rx, Stat::Drop, reason],
    )
}

/// A row: an advert answered with our own frame `ours`.
fn answered(what: impl Into<String>, input: &[u8], ours: &[u8]) -> Case {
    Case::new(
        what,
        input.to_vec(),
        XDP_TX,
        ours.to_vec(),
        &[Stat::Rx, Stat::Tx, Stat::VrrpAnswered],
    )
}

fn seen(dp: &TestDataplane, key: VrrpKey) -> Option<VrrpSeen> {
    maps::read_vrrp_seen(dp.dp.ebpf())
        .unwrap()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Lets the 10 ms answer rate limit of every router expire.
fn after_rate_limit() {
    std::thread::sleep(std::time::Duration::from_millis(11));
}

#[test]
fn no_router_on_the_interface_passes_untouched() {
    let mut dp = TestDataplane::load("vrrp-none");
    let lower4 = peer_advert4(VRID, 100);
    let lower6 = peer_advert6(VRID, 100);
    let ttl254 = edit_ipv4(&lower4, |ip| ip.set_ttl(254));
    dp.run_cases([
        passed("no VRRP at all, v4", &lower4, Stat::NotVip),
        passed("no VRRP at all, v6", &lower6, Stat::NotVip),
        passed("no VRRP at all, TTL 254", &ttl254, Stat::NotVip),
    ]);

    // Routers (and so the marker) on another interface only.
    let ebpf = dp.dp.ebpf_mut();
    let other = VrrpKey::new(4242, VRID, AF_INET);
    maps::set_vrrp_router(ebpf, &other, &router(AF_INET, 3, VRRP_STATE_MASTER)).unwrap();
    dp.run_cases([
        passed("VRRP elsewhere, v4", &lower4, Stat::NotVip),
        passed("VRRP elsewhere, TTL 254", &ttl254, Stat::NotVip),
        passed("VRRP elsewhere, v6", &lower6, Stat::NotVip),
    ]);
    assert_eq!(maps::read_vrrp_seen(dp.dp.ebpf()).unwrap(), vec![]);

    // Configured here, then removed again: the interface goes back to untouched.
    let ebpf = dp.dp.ebpf_mut();
    let here = key(AF_INET, VRID);
    maps::set_vrrp_router(ebpf, &here, &router(AF_INET, 3, VRRP_STATE_MASTER)).unwrap();
    dp.run_case(&dropped("VRRP here, TTL 254", &ttl254, Stat::VrrpInvalid));
    maps::remove_vrrp_router(dp.dp.ebpf_mut(), &here).unwrap();
    dp.run_cases([
        passed("VRRP removed, TTL 254", &ttl254, Stat::NotVip),
        passed("VRRP removed, v4", &lower4, Stat::NotVip),
    ]);
}

#[test]
fn higher_priority_peer_while_master_passes_and_is_recorded() {
    let mut dp = setup("vrrp-higher", VRRP_STATE_MASTER);
    let higher4 = peer_advert4(VRID, 200);
    dp.run_case(&passed("v4 priority 200", &higher4, Stat::VrrpAdvert));
    let s = seen(&dp, key(AF_INET, VRID)).expect("v4 seen");
    assert_eq!(s.src, be(PEER4.into()));
    assert_eq!(
        (
            s.adverts,
            s.priority,
            s.version,
            s.adver_int_cs,
            s.answered_ns
        ),
        (1, 200, 3, 100, 0),
        "{s:?}"
    );
    assert!(s.last_seen_ns > 0);
    dp.run_case(&passed("v4 priority 200 again", &higher4, Stat::VrrpAdvert));
    let again = seen(&dp, key(AF_INET, VRID)).unwrap();
    assert_eq!(again.adverts, 2);
    assert!(again.last_seen_ns >= s.last_seen_ns);

    // Equal priority is not lower: the election (address tie-break) decides.
    dp.run_cases([
        passed(
            "v4 equal priority",
            &peer_advert4(VRID, OUR_PRIORITY),
            Stat::VrrpAdvert,
        ),
        // The owner's priority 255.
        passed("v4 owner", &peer_advert4(VRID, 255), Stat::VrrpAdvert),
    ]);

    dp.run_case(&passed(
        "v6 priority 200",
        &peer_advert6(VRID, 200),
        Stat::VrrpAdvert,
    ));
    let s6 = seen(&dp, key(AF_INET6, VRID)).expect("v6 seen");
    assert_eq!(s6.src, be(peer6().into()));
    assert_eq!(
        (s6.adverts, s6.priority, s6.version, s6.adver_int_cs),
        (1, 200, 3, 100)
    );
    // Only the two routers that got adverts have entries.
    assert_eq!(maps::read_vrrp_seen(dp.dp.ebpf()).unwrap().len(), 2);
}

#[test]
fn lower_priority_while_master_is_answered_with_our_frame() {
    let mut dp = setup("vrrp-lower", VRRP_STATE_MASTER);
    // Our frame has two addresses: the packet grows.
    let ours4 = our_frame(AF_INET, 3);
    let lower4 = peer_advert4(VRID, 100);
    assert!(ours4.len() > lower4.len());
    dp.run_case(&answered("v4 priority 100", &lower4, &ours4));
    let s = seen(&dp, key(AF_INET, VRID)).unwrap();
    assert_eq!((s.adverts, s.priority), (1, 100));
    assert!(
        s.answered_ns > 0 && s.answered_ns == s.last_seen_ns,
        "{s:?}"
    );

    // A peer with more addresses than ours: the packet shrinks.
    after_rate_limit();
    let many = Advert::v3(
        VRID,
        1,
        100,
        (1..=5)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 9, 9, i)))
            .collect(),
    );
    let many = encode_frame(Some(PEER_MAC), PEER4.into(), &many).unwrap();
    assert!(many.len() > ours4.len());
    dp.run_case(&answered("v4 priority 1, 5 addresses", &many, &ours4));

    // Ethernet minimum-size padding after the IP packet is not part of the advert.
    after_rate_limit();
    let mut padded = lower4.clone();
    padded.resize(60, 0);
    dp.run_case(&answered("v4 padded to 60 bytes", &padded, &ours4));

    let ours6 = our_frame(AF_INET6, 3);
    dp.run_case(&answered(
        "v6 priority 100",
        &peer_advert6(VRID, 100),
        &ours6,
    ));
    assert!(seen(&dp, key(AF_INET6, VRID)).unwrap().answered_ns > 0);

    // Through an explicit xdp_md context too (ingress ifindex 1 = lo).
    after_rate_limit();
    let out = dp.run_on(LO, &lower4);
    assert_eq!((out.action, out.packet), (XDP_TX, ours4));
}

#[test]
fn priority_zero_while_master_is_answered() {
    let mut dp = setup("vrrp-zero", VRRP_STATE_MASTER);
    dp.run_cases([
        answered(
            "v4 resigning",
            &peer_advert4(VRID, 0),
            &our_frame(AF_INET, 3),
        ),
        answered(
            "v6 resigning",
            &peer_advert6(VRID, 0),
            &our_frame(AF_INET6, 3),
        ),
    ]);
    let s = seen(&dp, key(AF_INET, VRID)).unwrap();
    assert_eq!(s.priority, 0);
}

/// A master whose daemon stopped renewing its lease (killed, hung) is not defended by
/// XDP: weaker and resigning adverts pass to the election, recorded, never answered.
#[test]
fn lower_priority_under_a_lapsed_lease_passes() {
    let mut dp = TestDataplane::load("vrrp-lease");
    for (family, vrid, version) in [(AF_INET, VRID, 3), (AF_INET6, VRID, 3)] {
        let lapsed = VrrpRouter {
            lease_until_ns: 1,
            ..router(family, version, VRRP_STATE_MASTER)
        };
        maps::set_vrrp_router(dp.dp.ebpf_mut(), &key(family, vrid), &lapsed).unwrap();
    }
    dp.run_cases([
        passed(
            "v4 priority 100, lease lapsed",
            &peer_advert4(VRID, 100),
            Stat::VrrpAdvert,
        ),
        passed(
            "v4 resigning, lease lapsed",
            &peer_advert4(VRID, 0),
            Stat::VrrpAdvert,
        ),
        passed(
            "v6 priority 100, lease lapsed",
            &peer_advert6(VRID, 100),
            Stat::VrrpAdvert,
        ),
    ]);
    let s = seen(&dp, key(AF_INET, VRID)).unwrap();
    assert_eq!((s.adverts, s.priority, s.answered_ns), (2, 0, 0));
}

#[test]
fn lower_priority_while_backup_passes() {
    let mut dp = setup("vrrp-backup", VRRP_STATE_NOT_MASTER);
    dp.run_cases([
        passed(
            "v4 priority 100",
            &peer_advert4(VRID, 100),
            Stat::VrrpAdvert,
        ),
        passed("v4 resigning", &peer_advert4(VRID, 0), Stat::VrrpAdvert),
        passed(
            "v6 priority 100",
            &peer_advert6(VRID, 100),
            Stat::VrrpAdvert,
        ),
    ]);
    let s = seen(&dp, key(AF_INET, VRID)).unwrap();
    assert_eq!((s.adverts, s.priority, s.answered_ns), (2, 0, 0));
}

#[test]
fn our_own_advert_is_not_answered() {
    let mut dp = setup("vrrp-own", VRRP_STATE_MASTER);
    // Our address with a lower priority than ours, and resigning: still never answered.
    dp.run_cases([100, 0].into_iter().flat_map(|priority| {
        let own4 = Advert::v3(VRID, priority, 100, vec![VIP4.into()]);
        let own6 = Advert::v3(VRID, priority, 100, vec![vip6().into()]);
        [
            passed(
                format!("own v4 {priority}"),
                &encode_frame(None, OUR4.into(), &own4).unwrap(),
                Stat::VrrpAdvert,
            ),
            passed(
                format!("own v6 {priority}"),
                &encode_frame(None, our6().into(), &own6).unwrap(),
                Stat::VrrpAdvert,
            ),
        ]
    }));
    let s = seen(&dp, key(AF_INET, VRID)).unwrap();
    assert_eq!((s.src, s.answered_ns), (be(OUR4.into()), 0));
}

#[test]
fn second_answer_within_10ms_is_rate_limited() {
    let mut dp = setup("vrrp-rate", VRRP_STATE_MASTER);
    let lower4 = peer_advert4(VRID, 100);
    let ours4 = our_frame(AF_INET, 3);
    dp.run_cases([
        answered("first", &lower4, &ours4),
        passed("second at once", &lower4, Stat::VrrpRateLimited),
        passed(
            "resigning at once",
            &peer_advert4(VRID, 0),
            Stat::VrrpRateLimited,
        ),
        // Per router: the IPv6 router of the same VRID has its own limit.
        answered(
            "v6 at once",
            &peer_advert6(VRID, 100),
            &our_frame(AF_INET6, 3),
        ),
    ]);
    let s = seen(&dp, key(AF_INET, VRID)).unwrap();
    assert_eq!(s.adverts, 3, "rate-limited adverts are still recorded");
    after_rate_limit();
    dp.run_case(&answered("after 10 ms", &lower4, &ours4));
}

#[test]
fn invalid_adverts_are_dropped() {
    let mut dp = setup("vrrp-invalid", VRRP_STATE_MASTER);
    let lower4 = peer_advert4(VRID, 100);
    let lower6 = peer_advert6(VRID, 100);
    let inv = Stat::VrrpInvalid;
    let vrrp4 = ETH_HLEN + IPV4_HLEN;
    let vrrp6 = ETH_HLEN + IPV6_HLEN;
    // `frame` with `edit` applied to a copy.
    let edited = |frame: &[u8], edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = frame.to_vec();
        edit(&mut f);
        f
    };
    // Header fields the codec would never produce: patch and fix the v2 checksum (the
    // message only) by re-encoding through a raw edit of version/type.
    let patched = |version_type: u8| {
        let mut f = peer_advert_v2(VRID_V2, 200);
        f[vrrp4] = version_type;
        fix_v2_checksum(&mut f, vrrp4);
        f
    };
    // Count says 2 addresses, message holds 1 (and the reverse).
    let count = |n: u8| {
        let mut f = peer_advert_v2(VRID_V2, 200);
        f[vrrp4 + 3] = n;
        fix_v2_checksum(&mut f, vrrp4);
        f
    };
    let many = Advert::v3(
        VRID,
        100,
        100,
        (1..=17)
            .map(|i| IpAddr::V4(Ipv4Addr::new(10, 9, 9, i)))
            .collect(),
    );
    let many = encode_frame(Some(PEER_MAC), PEER4.into(), &many).unwrap();
    let sixteen = Advert::v3(
        VRID,
        200,
        100,
        (1..=16)
            .map(|i| IpAddr::V6(format!("fd00::{i}").parse().unwrap()))
            .collect(),
    );
    let sixteen = encode_frame(Some(PEER_MAC), peer6().into(), &sixteen).unwrap();
    // IPv4 options (a 4-byte NOP option).
    let mut opt = lower4[..ETH_HLEN + IPV4_HLEN].to_vec();
    opt.extend_from_slice(&[1, 1, 1, 0]);
    opt.extend_from_slice(&lower4[vrrp4..]);
    let opt = edit_ipv4(&opt, |ip| {
        ip.set_header_length(6);
        ip.set_total_length((lower4.len() - ETH_HLEN + 4) as u16);
    });

    dp.run_cases([
        dropped("TTL 254", &edit_ipv4(&lower4, |ip| ip.set_ttl(254)), inv),
        dropped(
            "hop limit 254",
            &edited(&lower6, &|f| f[ETH_HLEN + 7] = 254),
            inv,
        ),
        dropped(
            "bad v4 checksum",
            &edited(&lower4, &|f| f[vrrp4 + 7] ^= 0x01),
            inv,
        ),
        dropped(
            "bad v6 checksum",
            &edited(&lower6, &|f| f[vrrp6 + 6] ^= 0x80),
            inv,
        ),
        // A v3 checksum is over the pseudo-header: another destination breaks it.
        dropped(
            "v3 pseudo-header",
            &edit_ipv4(&lower4, |ip| {
                ip.set_destination(Ipv4Addr::new(224, 0, 0, 19));
            }),
            inv,
        ),
        dropped(
            "bad IPv4 header checksum",
            &edited(&lower4, &|f| f[ETH_HLEN + 10] ^= 0x01),
            inv,
        ),
        dropped("v2 advert to a v3 router", &peer_advert_v2(VRID, 100), inv),
        dropped("v3 advert to a v2 router", &peer_advert4(VRID_V2, 100), inv),
        passed("v2 re-checksummed", &patched(0x21), Stat::VrrpAdvert),
        dropped("type 2", &patched(0x22), inv),
        dropped("version 4", &patched(0x41), inv),
        dropped("version 1", &patched(0x11), inv),
        dropped("count 2 for 1 address", &count(2), inv),
        dropped("count 0 for 1 address", &count(0), inv),
        // More than 16 addresses: valid for the RFC, not validated by XDP.
        dropped("17 addresses", &many, inv),
        passed("16 IPv6 addresses", &sixteen, Stat::VrrpAdvert),
        // VRRPv2 over IPv6 (the codec refuses to build it: flip the version nibble).
        dropped("v2 over IPv6", &edited(&lower6, &|f| f[vrrp6] = 0x21), inv),
        dropped("IPv4 options", &opt, inv),
        dropped(
            "first fragment",
            &edit_ipv4(&lower4, |ip| ip.set_flags(ipv4::Ipv4Flags::MoreFragments)),
            inv,
        ),
        dropped(
            "later fragment",
            &edit_ipv4(&lower4, |ip| ip.set_fragment_offset(8)),
            inv,
        ),
    ]);

    // None of them was recorded or answered.
    let s = seen(&dp, key(AF_INET, VRID));
    assert_eq!(s, None, "{s:?}");
}

/// Recomputes a VRRPv2 checksum (RFC 1071 over the message only) in place.
fn fix_v2_checksum(frame: &mut [u8], at: usize) {
    let end = ETH_HLEN
        + usize::from(u16::from_be_bytes([
            frame[ETH_HLEN + 2],
            frame[ETH_HLEN + 3],
        ]));
    frame[at + 6] = 0;
    frame[at + 7] = 0;
    let sum = pnet_packet::util::checksum(&frame[at..end], 3);
    frame[at + 6..at + 8].copy_from_slice(&sum.to_be_bytes());
}

#[test]
fn unknown_vrid_is_dropped() {
    let mut dp = setup("vrrp-unknown", VRRP_STATE_MASTER);
    dp.run_cases([
        dropped("v4 VRID 8", &peer_advert4(8, 100), Stat::VrrpUnknownVrid),
        // VRID 9 exists for IPv4 only.
        dropped(
            "v6 VRID 9",
            &peer_advert6(VRID_V2, 100),
            Stat::VrrpUnknownVrid,
        ),
        // VRID 0 is the marker's, never a router.
        dropped("v4 VRID 0", &peer_advert4(0, 100), Stat::VrrpUnknownVrid),
    ]);
    assert_eq!(maps::read_vrrp_seen(dp.dp.ebpf()).unwrap(), vec![]);
}

#[test]
fn truncated_adverts_never_transmit_or_abort() {
    let mut dp = setup("vrrp-trunc", VRRP_STATE_MASTER);
    let v2 = peer_advert_v2(VRID_V2, 100);
    for (name, whole) in [
        ("v4", peer_advert4(VRID, 100)),
        ("v6", peer_advert6(VRID, 100)),
        ("v2", v2),
    ] {
        let v6 = name == "v6";
        for len in ETH_HLEN..whole.len() {
            // Cut as is: the IP header claims more than the frame holds.
            let cut = &whole[..len];
            let out = dp.run(cut);
            assert!(
                out.action == XDP_DROP || out.action == XDP_PASS,
                "{name} cut at {len}: verdict {} (never TX {XDP_TX} or aborted {XDP_ABORTED})",
                out.action
            );
            assert_eq!(out.packet, cut, "{name} cut at {len}: output");
            // Cut with the IP length fixed to match: a short VRRP message.
            let ip_hlen = if v6 { IPV6_HLEN } else { IPV4_HLEN };
            if len < ETH_HLEN + ip_hlen {
                continue;
            }
            let mut short = cut.to_vec();
            if v6 {
                let payload = (len - ETH_HLEN - IPV6_HLEN) as u16;
                short[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&payload.to_be_bytes());
            } else {
                short = edit_ipv4(&short, |ip| ip.set_total_length((len - ETH_HLEN) as u16));
            }
            dp.run_case(&dropped(
                format!("{name} message cut at {len}"),
                &short,
                Stat::VrrpInvalid,
            ));
        }
    }
    let stats = dp.stats();
    assert_eq!(stats.get(Stat::Tx).packets, 0);
    assert_eq!(stats.get(Stat::Aborted).packets, 0);
}

#[test]
fn v2_ipv4_adverts_are_recorded_and_answered() {
    let mut dp = setup("vrrp-v2", VRRP_STATE_MASTER);
    dp.run_case(&passed(
        "v2 priority 200",
        &peer_advert_v2(VRID_V2, 200),
        Stat::VrrpAdvert,
    ));
    let s = seen(&dp, key(AF_INET, VRID_V2)).expect("v2 seen");
    assert_eq!(s.src, be(PEER4.into()));
    assert_eq!(
        (s.adverts, s.priority, s.version, s.adver_int_cs),
        (1, 200, 2, 100)
    );
    dp.run_case(&answered(
        "v2 priority 100",
        &peer_advert_v2(VRID_V2, 100),
        &our_frame(AF_INET, 2),
    ));
}

/// A router that never answers (`frame_len` 0: unicast peers, or an advert too big
/// for the record) is still a router: next to another VRID's router on the interface
/// (which installs the interface marker) its peer's adverts are recorded for the
/// election and passed, not dropped as an unknown VRID (issue 14, item 3).
#[test]
fn a_router_that_never_answers_still_has_its_adverts_recorded() {
    let mut dp = setup("vrrp-noanswer", VRRP_STATE_MASTER);
    let silent = VrrpRouter {
        frame_len: 0,
        ..router(AF_INET, 3, VRRP_STATE_MASTER)
    };
    maps::set_vrrp_router(dp.dp.ebpf_mut(), &key(AF_INET, 8), &silent)
        .expect("a router with no frame to answer with");
    dp.run_cases([
        passed(
            "VRID 8, priority 100 (weaker, but no frame to answer with)",
            &peer_advert4(8, 100),
            Stat::VrrpAdvert,
        ),
        passed(
            "VRID 8, priority 200",
            &peer_advert4(8, 200),
            Stat::VrrpAdvert,
        ),
    ]);
    let s = seen(&dp, key(AF_INET, 8)).expect("recorded for the election");
    assert_eq!((s.adverts, s.priority, s.answered_ns), (2, 200, 0));
}

#[test]
fn router_validation_and_pinned_read() {
    let mut dp = setup("vrrp-api", VRRP_STATE_MASTER);
    let ebpf = dp.dp.ebpf_mut();
    let good = router(AF_INET, 3, VRRP_STATE_MASTER);
    for (k, r) in [
        (VrrpKey::new(LO, 0, AF_INET), good),
        (VrrpKey::marker(LO), good),
        (VrrpKey::new(LO, 1, 0), good),
        (VrrpKey::new(LO, 1, AF_INET6), router(AF_INET, 2, 1)),
        (
            VrrpKey::new(LO, 1, AF_INET),
            VrrpRouter {
                frame_len: 13,
                ..good
            },
        ),
        (
            VrrpKey::new(LO, 1, AF_INET),
            VrrpRouter {
                frame_len: VRRP_FRAME_MAX as u16 + 1,
                ..good
            },
        ),
    ] {
        assert!(
            maps::set_vrrp_router(ebpf, &k, &r).is_err(),
            "{k:?} accepted"
        );
    }
    dp.run_case(&passed(
        "v4 200",
        &peer_advert4(VRID, 200),
        Stat::VrrpAdvert,
    ));
    let pinned = maps::read_pinned_vrrp_seen(dp.pin_dir()).unwrap();
    assert_eq!(pinned, maps::read_vrrp_seen(dp.dp.ebpf()).unwrap());
    assert_eq!(pinned.len(), 1);
}

/// Interfaces of a fresh namespace: a router on `a`; `b` runs no VRRP.
#[test]
fn adverts_are_judged_per_ingress_interface() {
    let mut dp = TestDataplane::load("vrrp-ifindex");
    let ns = Netns::new("vrrp-if");
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    let (a, b) = (ns.ifindex("va"), ns.ifindex("vb"));
    let on_a = VrrpKey::new(a, VRID, AF_INET);
    maps::set_vrrp_router(
        dp.dp.ebpf_mut(),
        &on_a,
        &router(AF_INET, 3, VRRP_STATE_MASTER),
    )
    .unwrap();
    let lower4 = peer_advert4(VRID, 100);
    let (out_a, out_b, out_lo) = ns.run(|| {
        (
            dp.run_on(a, &lower4),
            dp.run_on(b, &lower4),
            dp.run_on(LO, &lower4),
        )
    });
    assert_eq!(
        (out_a.action, &out_a.packet),
        (XDP_TX, &our_frame(AF_INET, 3))
    );
    assert_eq!((out_b.action, &out_b.packet), (XDP_PASS, &lower4));
    assert_eq!((out_lo.action, &out_lo.packet), (XDP_PASS, &lower4));
    let recorded = maps::read_vrrp_seen(dp.dp.ebpf()).unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].0, on_a);
}

#[test]
fn verifier_instruction_count() {
    let mut dp = TestDataplane::load("vrrp-insns");
    let info = dp.dp.xdp(programs::BALANCER).unwrap().info().unwrap();
    println!(
        "xlb verified_insns {:?} xlated bytes {:?}",
        info.verified_instruction_count(),
        info.size_translated()
    );
}
