//! Packet tests. Checksums are recomputed with an independent RFC 1071 sum below rather
//! than the pnet helpers the code uses, and the known vectors carry hand-derived
//! constants, so a shared mistake cannot pass unnoticed.

use super::*;

const SRC4: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const VIP4: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
const SRC6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

/// RFC 1071: one's complement of the one's complement sum of 16-bit words.
fn rfc1071(bytes: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for pair in bytes.chunks(2) {
        let hi = u64::from(pair[0]) << 8;
        let lo = pair.get(1).copied().map_or(0, u64::from);
        sum += hi | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum a VRRP message should carry, computed from scratch: the checksum field
/// zeroed, with the RFC 5798 §5.2.8 pseudo-header for v3.
fn independent_checksum(version: Version, src: IpAddr, dst: IpAddr, msg: &[u8]) -> u16 {
    let mut body = msg.to_vec();
    body[6] = 0;
    body[7] = 0;
    let mut data = Vec::new();
    if version == Version::V3 {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                data.extend_from_slice(&s.octets());
                data.extend_from_slice(&d.octets());
                data.extend_from_slice(&[0, IPPROTO_VRRP]);
                data.extend_from_slice(&(body.len() as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                data.extend_from_slice(&s.octets());
                data.extend_from_slice(&d.octets());
                data.extend_from_slice(&(body.len() as u32).to_be_bytes());
                data.extend_from_slice(&[0, 0, 0, IPPROTO_VRRP]);
            }
            _ => panic!("mixed families"),
        }
    }
    data.extend_from_slice(&body);
    rfc1071(&data)
}

/// Rewrite the checksum of a (modified) message so only the intended defect remains.
fn fix_checksum(version: Version, src: IpAddr, dst: IpAddr, msg: &mut [u8]) {
    let sum = independent_checksum(version, src, dst, msg);
    msg[6..8].copy_from_slice(&sum.to_be_bytes());
}

fn cfg_v2() -> Vec<Configured> {
    vec![Configured::new(51, Family::V4, Version::V2)]
}
fn cfg_v3_4() -> Vec<Configured> {
    vec![Configured::new(51, Family::V4, Version::V3)]
}
fn cfg_v3_6() -> Vec<Configured> {
    vec![Configured::new(51, Family::V6, Version::V3)]
}

fn advert_v2() -> Advert {
    Advert::v2(51, 100, 1, vec![VIP4])
}
fn advert_v3_4() -> Advert {
    Advert::v3(51, 100, 100, vec![IpAddr::V4(VIP4)])
}
fn advert_v3_6() -> Advert {
    Advert::v3(51, 200, 35, vec![IpAddr::V6(VIP6), IpAddr::V6(SRC6)])
}

/// One advert of each kind the decoder handles (VRRPv2, VRRPv3 over IPv4 and over
/// IPv6): version, source, destination, the advert and the routers configured for it.
fn every_kind() -> [(Version, IpAddr, IpAddr, Advert, Vec<Configured>); 3] {
    [
        (
            Version::V2,
            IpAddr::V4(SRC4),
            mcast4(),
            advert_v2(),
            cfg_v2(),
        ),
        (
            Version::V3,
            IpAddr::V4(SRC4),
            mcast4(),
            advert_v3_4(),
            cfg_v3_4(),
        ),
        (
            Version::V3,
            IpAddr::V6(SRC6),
            mcast6(),
            advert_v3_6(),
            cfg_v3_6(),
        ),
    ]
}

fn mcast4() -> IpAddr {
    IpAddr::V4(MULTICAST_V4)
}
fn mcast6() -> IpAddr {
    IpAddr::V6(MULTICAST_V6)
}

#[test]
fn vrrp_v2_known_vector() {
    let msg = encode(IpAddr::V4(SRC4), mcast4(), &advert_v2()).unwrap();
    // Hand-derived: words 2133 6401 0001 c0a8 0164 (auth data zero) sum to 0x14741,
    // folded 0x4742, complement 0xb8bd.
    #[rustfmt::skip]
    let want = [
        0x21, 51, 100, 1, 0x00, 0x01, 0xb8, 0xbd,
        192, 168, 1, 100,
        0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(msg, want);
    assert_eq!(
        independent_checksum(Version::V2, IpAddr::V4(SRC4), mcast4(), &msg),
        0xb8bd
    );
}

#[test]
fn vrrp_v3_ipv4_known_vector_frame() {
    let frame = encode_frame(None, IpAddr::V4(SRC4), &advert_v3_4()).unwrap();
    // VRRP checksum by hand: pseudo-header c0a8 010a e000 0012 0070 000c = 0x1a240,
    // message 3133 6401 0064 c0a8 0164 = 0x157a4; total 0x2f9e4, folded 0xf9e6,
    // complement 0x0619. IPv4 header checksum: 45c0 0020 ff70 c0a8 010a e000 0012
    // = 0x2e714, folded 0xe716, complement 0x18e9.
    #[rustfmt::skip]
    let want = [
        0x01, 0x00, 0x5e, 0x00, 0x00, 0x12, // multicast MAC for 224.0.0.18
        0x00, 0x00, 0x5e, 0x00, 0x01, 51,   // virtual router MAC, IPv4, VRID 51
        0x08, 0x00,
        0x45, 0xc0, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,
        0xff, 0x70, 0x18, 0xe9,
        192, 168, 1, 10,
        224, 0, 0, 18,
        0x31, 51, 100, 1, 0x00, 0x64, 0x06, 0x19,
        192, 168, 1, 100,
    ];
    assert_eq!(frame, want);
    assert_eq!(
        independent_checksum(Version::V3, IpAddr::V4(SRC4), mcast4(), &frame[34..]),
        0x0619
    );
    assert_eq!(
        rfc1071(&frame[14..34]),
        0,
        "a valid IPv4 header sums to zero"
    );
}

#[test]
fn vrrp_v3_ipv6_known_layout_and_checksum() {
    let frame = encode_frame(None, IpAddr::V6(SRC6), &advert_v3_6()).unwrap();
    assert_eq!(frame[..6], [0x33, 0x33, 0, 0, 0, 0x12]);
    assert_eq!(frame[6..12], [0x00, 0x00, 0x5e, 0x00, 0x02, 51]);
    assert_eq!(frame[12..14], [0x86, 0xdd]);
    let ip = &frame[14..];
    let msg_len = 8 + 2 * 16;
    assert_eq!(
        ip[..8],
        [0x6c, 0x00, 0x00, 0x00, 0x00, msg_len as u8, 112, 255]
    );
    assert_eq!(ip[8..24], SRC6.octets());
    assert_eq!(ip[24..40], MULTICAST_V6.octets());
    let msg = &ip[40..];
    assert_eq!(msg.len(), msg_len);
    assert_eq!(msg[..6], [0x31, 51, 200, 2, 0x00, 35]);
    let sum = u16::from_be_bytes([msg[6], msg[7]]);
    assert_eq!(
        sum,
        independent_checksum(Version::V3, IpAddr::V6(SRC6), mcast6(), msg)
    );
    assert_eq!(msg[8..24], VIP6.octets());
    assert_eq!(msg[24..40], SRC6.octets());
}

#[test]
fn roundtrip_v2() {
    let ad = advert_v2();
    let rx = decode_frame(
        &encode_frame(None, IpAddr::V4(SRC4), &ad).unwrap(),
        &cfg_v2(),
    )
    .unwrap();
    assert_eq!(rx.advert, ad);
    assert_eq!(rx.src, IpAddr::V4(SRC4));
    assert_eq!(rx.dst, mcast4());
    assert_eq!(rx.hop_limit, 255);
    assert_eq!(rx.src_mac, Some(virtual_mac(Family::V4, 51)));
    assert!(!rx.address_mismatch);
    let rx = decode_ip(
        &encode_ip_packet(IpAddr::V4(SRC4), None, &ad).unwrap(),
        &cfg_v2(),
    )
    .unwrap();
    assert_eq!(rx.advert, ad);
    assert_eq!(rx.src_mac, None);
}

#[test]
fn roundtrip_v3_ipv4() {
    let ad = advert_v3_4();
    let mac = [2, 0, 0, 0, 0, 1];
    let rx = decode_frame(
        &encode_frame(Some(mac), IpAddr::V4(SRC4), &ad).unwrap(),
        &cfg_v3_4(),
    )
    .unwrap();
    assert_eq!(rx.advert, ad);
    assert_eq!(rx.src_mac, Some(mac));
    // Unicast destination (keepalived's unicast_peer): checksum covers that address.
    let peer = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 11));
    let rx = decode_ip(
        &encode_ip_packet(IpAddr::V4(SRC4), Some(peer), &ad).unwrap(),
        &cfg_v3_4(),
    )
    .unwrap();
    assert_eq!((rx.dst, &rx.advert), (peer, &ad));
}

#[test]
fn roundtrip_v3_ipv6() {
    let ad = advert_v3_6();
    let rx = decode_frame(
        &encode_frame(None, IpAddr::V6(SRC6), &ad).unwrap(),
        &cfg_v3_6(),
    )
    .unwrap();
    assert_eq!(rx.advert, ad);
    assert_eq!(rx.src, IpAddr::V6(SRC6));
    // What an IPv6 raw socket hands over: payload only, hop limit from a cmsg.
    let msg = encode(IpAddr::V6(SRC6), mcast6(), &ad).unwrap();
    let rx = decode_vrrp(IpAddr::V6(SRC6), mcast6(), 255, &msg, &cfg_v3_6()).unwrap();
    assert_eq!(rx.advert, ad);
}

#[test]
fn roundtrip_extremes() {
    // 255 addresses, the 12-bit interval maximum, priority 0 (resignation).
    let addrs: Vec<IpAddr> = (0..255u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    let ad = Advert::v3(255, 0, MAX_ADVER_INT_V3_CS, addrs);
    let mut cfg = cfg_v3_4();
    cfg[0].vrid = 255;
    let rx = decode_ip(
        &encode_ip_packet(IpAddr::V4(SRC4), None, &ad).unwrap(),
        &cfg,
    )
    .unwrap();
    assert_eq!(rx.advert, ad);
    // VRRPv2 interval of 255 s.
    let ad = Advert::v2(51, 1, 255, vec![]);
    let mut cfg = cfg_v2();
    cfg[0].adver_int_cs = 25_500;
    let rx = decode_ip(
        &encode_ip_packet(IpAddr::V4(SRC4), None, &ad).unwrap(),
        &cfg,
    )
    .unwrap();
    assert_eq!(rx.advert, ad);
}

#[test]
fn ethernet_padding_and_vlan_tag_are_handled() {
    let mut frame = encode_frame(None, IpAddr::V4(SRC4), &advert_v3_4()).unwrap();
    frame.resize(60, 0); // minimum Ethernet frame: padded past the IP total length
    assert_eq!(
        decode_frame(&frame, &cfg_v3_4()).unwrap().advert,
        advert_v3_4()
    );
    let mut tagged = frame[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    tagged.extend_from_slice(&frame[12..]);
    assert_eq!(
        decode_frame(&tagged, &cfg_v3_4()).unwrap().advert,
        advert_v3_4()
    );
}

#[test]
fn ttl_other_than_255_is_rejected() {
    // IPv4: TTL 254 with a correct header checksum, so only the TTL is wrong.
    let mut ip = encode_ip_packet(IpAddr::V4(SRC4), None, &advert_v3_4()).unwrap();
    ip[8] = 254;
    ip[10..12].copy_from_slice(&[0, 0]);
    let sum = rfc1071(&ip[..20]);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(decode_ip(&ip, &cfg_v3_4()), Err(Invalid::Ttl(254)));
    // IPv6 hop limit (no header checksum).
    let mut ip = encode_ip_packet(IpAddr::V6(SRC6), None, &advert_v3_6()).unwrap();
    ip[7] = 254;
    assert_eq!(decode_ip(&ip, &cfg_v3_6()), Err(Invalid::Ttl(254)));
    let msg = encode(IpAddr::V6(SRC6), mcast6(), &advert_v3_6()).unwrap();
    assert_eq!(
        decode_vrrp(IpAddr::V6(SRC6), mcast6(), 1, &msg, &cfg_v3_6()),
        Err(Invalid::Ttl(1))
    );
}

#[test]
fn bad_checksum_is_rejected() {
    for (version, src, dst, ad, cfg) in every_kind() {
        let msg = encode(src, dst, &ad).unwrap();
        let want = independent_checksum(version, src, dst, &msg);
        let mut bad = msg.clone();
        bad[7] ^= 0x01;
        let got = u16::from_be_bytes([bad[6], bad[7]]);
        assert_eq!(
            decode_vrrp(src, dst, 255, &bad, &cfg),
            Err(Invalid::Checksum { got, want })
        );
        // A flipped bit in the body, too.
        let mut bad = msg.clone();
        bad[2] ^= 0x10;
        assert!(matches!(
            decode_vrrp(src, dst, 255, &bad, &cfg),
            Err(Invalid::Checksum { .. })
        ));
        // v3: the pseudo-header binds the addresses; a different source fails.
        if version == Version::V3 {
            let other = match src {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(192, 168, 1, 99)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            assert!(matches!(
                decode_vrrp(other, dst, 255, &msg, &cfg),
                Err(Invalid::Checksum { .. })
            ));
        }
    }
    // A broken IPv4 header checksum is caught before VRRP is looked at.
    let mut ip = encode_ip_packet(IpAddr::V4(SRC4), None, &advert_v3_4()).unwrap();
    ip[11] ^= 0xff;
    assert_eq!(decode_ip(&ip, &cfg_v3_4()), Err(Invalid::IpChecksum));
}

#[test]
fn wrong_version_and_type_are_rejected() {
    let src = IpAddr::V4(SRC4);
    let msg = encode(src, mcast4(), &advert_v3_4()).unwrap();
    for v in [0u8, 1, 4, 15] {
        let mut bad = msg.clone();
        bad[0] = (v << 4) | 1;
        fix_checksum(Version::V3, src, mcast4(), &mut bad);
        assert_eq!(
            decode_vrrp(src, mcast4(), 255, &bad, &cfg_v3_4()),
            Err(Invalid::Version(v))
        );
    }
    for t in [0u8, 2, 15] {
        let mut bad = msg.clone();
        bad[0] = 0x30 | t;
        fix_checksum(Version::V3, src, mcast4(), &mut bad);
        assert_eq!(
            decode_vrrp(src, mcast4(), 255, &bad, &cfg_v3_4()),
            Err(Invalid::Type(t))
        );
    }
    // Valid v2 advert for a v3 router and vice versa.
    let v2 = encode(src, mcast4(), &advert_v2()).unwrap();
    assert_eq!(
        decode_vrrp(src, mcast4(), 255, &v2, &cfg_v3_4()),
        Err(Invalid::VersionMismatch {
            got: Version::V2,
            configured: Version::V3
        })
    );
    assert_eq!(
        decode_vrrp(src, mcast4(), 255, &msg, &cfg_v2()),
        Err(Invalid::VersionMismatch {
            got: Version::V3,
            configured: Version::V2
        })
    );
}

#[test]
fn v2_over_ipv6_is_rejected() {
    let mut msg = encode(IpAddr::V6(SRC6), mcast6(), &advert_v3_6()).unwrap();
    msg[0] = 0x21;
    fix_checksum(Version::V2, IpAddr::V6(SRC6), mcast6(), &mut msg);
    assert_eq!(
        decode_vrrp(IpAddr::V6(SRC6), mcast6(), 255, &msg, &cfg_v3_6()),
        Err(Invalid::Family)
    );
}

#[test]
fn every_truncation_is_rejected() {
    let packets = [
        (
            encode_frame(None, IpAddr::V4(SRC4), &advert_v2()).unwrap(),
            cfg_v2(),
        ),
        (
            encode_frame(None, IpAddr::V4(SRC4), &advert_v3_4()).unwrap(),
            cfg_v3_4(),
        ),
        (
            encode_frame(None, IpAddr::V6(SRC6), &advert_v3_6()).unwrap(),
            cfg_v3_6(),
        ),
    ];
    for (frame, cfg) in &packets {
        assert!(decode_frame(frame, cfg).is_ok());
        for len in 0..frame.len() {
            let got = decode_frame(&frame[..len], cfg);
            assert!(
                matches!(got, Err(Invalid::Truncated { .. })),
                "frame prefix {len}: {got:?}"
            );
            if len >= 14 {
                let got = decode_ip(&frame[14..len], cfg);
                assert!(
                    matches!(got, Err(Invalid::Truncated { .. })),
                    "ip prefix {}: {got:?}",
                    len - 14
                );
            }
        }
    }
    // The bare message: short of the fixed header it is truncated; past it, the
    // address count no longer matches the length.
    for (version, src, dst, ad, cfg) in every_kind() {
        let msg = encode(src, dst, &ad).unwrap();
        for len in 0..msg.len() {
            let mut cut = msg[..len].to_vec();
            if len >= 8 {
                fix_checksum(version, src, dst, &mut cut);
            }
            let got = decode_vrrp(src, dst, 255, &cut, &cfg);
            match got {
                Err(Invalid::Truncated { .. }) if len < 8 => {}
                Err(Invalid::Length { need, have, .. })
                    if len >= 8 && need == msg.len() && have == len => {}
                other => panic!("message prefix {len}: {other:?}"),
            }
        }
    }
}

#[test]
fn address_count_mismatch_is_rejected() {
    for (version, src, dst, ad, cfg) in every_kind() {
        let msg = encode(src, dst, &ad).unwrap();
        let count = msg[3];
        for wrong in [count - 1, count + 1, 255] {
            let mut bad = msg.clone();
            bad[3] = wrong;
            fix_checksum(version, src, dst, &mut bad);
            let got = decode_vrrp(src, dst, 255, &bad, &cfg);
            assert!(
                matches!(got, Err(Invalid::Length { count: c, have, .. }) if c == wrong && have == msg.len()),
                "count {wrong}: {got:?}"
            );
        }
        // Extra bytes after a complete message are a mismatch too.
        let mut long = msg.clone();
        long.extend_from_slice(&[0, 0, 0, 0]);
        fix_checksum(version, src, dst, &mut long);
        assert!(matches!(
            decode_vrrp(src, dst, 255, &long, &cfg),
            Err(Invalid::Length { .. })
        ));
    }
}

#[test]
fn ip_layer_defects_are_rejected() {
    let ip = encode_ip_packet(IpAddr::V4(SRC4), None, &advert_v3_4()).unwrap();
    let refix = |mut p: Vec<u8>| {
        p[10..12].copy_from_slice(&[0, 0]);
        let sum = rfc1071(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    };
    let mut p = ip.clone();
    p[9] = 17;
    assert_eq!(
        decode_ip(&refix(p), &cfg_v3_4()),
        Err(Invalid::Protocol(17))
    );
    let mut p = ip.clone();
    p[6] = 0x20; // more fragments
    assert_eq!(decode_ip(&refix(p), &cfg_v3_4()), Err(Invalid::Fragment));
    let mut p = ip.clone();
    p[7] = 0x01; // fragment offset 8
    assert_eq!(decode_ip(&refix(p), &cfg_v3_4()), Err(Invalid::Fragment));
    let mut p = ip.clone();
    p[0] = 0x44; // IHL 4
    assert_eq!(decode_ip(&refix(p), &cfg_v3_4()), Err(Invalid::IpHeader));
    let mut p = ip.clone();
    p[2..4].copy_from_slice(&10u16.to_be_bytes()); // total length < header
    assert_eq!(decode_ip(&refix(p), &cfg_v3_4()), Err(Invalid::IpHeader));
    let mut p = ip.clone();
    p[0] = 0x55;
    assert_eq!(decode_ip(&p, &cfg_v3_4()), Err(Invalid::IpHeader));
    let mut p6 = encode_ip_packet(IpAddr::V6(SRC6), None, &advert_v3_6()).unwrap();
    p6[6] = 0; // hop-by-hop options: extension headers are not followed
    assert_eq!(decode_ip(&p6, &cfg_v3_6()), Err(Invalid::Protocol(0)));
    let mut frame = encode_frame(None, IpAddr::V4(SRC4), &advert_v3_4()).unwrap();
    frame[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(
        decode_frame(&frame, &cfg_v3_4()),
        Err(Invalid::EtherType(0x0806))
    );
    // Ethertype says IPv6, the packet is IPv4.
    frame[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(decode_frame(&frame, &cfg_v3_4()), Err(Invalid::IpHeader));
}

#[test]
fn configuration_checks() {
    let src = IpAddr::V4(SRC4);
    let v3 = encode(src, mcast4(), &advert_v3_4()).unwrap();
    // VRID not configured, or configured only for the other family.
    let mut cfg = cfg_v3_4();
    cfg[0].vrid = 52;
    assert_eq!(
        decode_vrrp(src, mcast4(), 255, &v3, &cfg),
        Err(Invalid::UnknownVrid(51))
    );
    assert_eq!(
        decode_vrrp(src, mcast4(), 255, &v3, &cfg_v3_6()),
        Err(Invalid::UnknownVrid(51))
    );
    assert_eq!(
        decode_vrrp(src, mcast4(), 255, &v3, &[]),
        Err(Invalid::UnknownVrid(51))
    );
    // The right entry is found among several.
    let mut many = cfg_v3_6();
    many.extend(cfg);
    many.extend(cfg_v3_4());
    assert!(decode_vrrp(src, mcast4(), 255, &v3, &many).is_ok());
    // We own the addresses.
    let mut cfg = cfg_v3_4();
    cfg[0].owner = true;
    assert_eq!(
        decode_vrrp(src, mcast4(), 255, &v3, &cfg),
        Err(Invalid::LocalOwner)
    );
    // Addresses: a mismatch is dropped, unless the sender is the owner (then flagged).
    let mut cfg = cfg_v3_4();
    cfg[0].addresses = Some(vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))]);
    assert_eq!(
        decode_vrrp(src, mcast4(), 255, &v3, &cfg),
        Err(Invalid::AddressMismatch)
    );
    let owner = encode(
        src,
        mcast4(),
        &Advert::v3(51, 255, 100, vec![IpAddr::V4(VIP4)]),
    )
    .unwrap();
    let rx = decode_vrrp(src, mcast4(), 255, &owner, &cfg).unwrap();
    assert!(rx.address_mismatch);
    cfg[0].addresses = Some(vec![IpAddr::V4(VIP4)]);
    assert!(
        !decode_vrrp(src, mcast4(), 255, &v3, &cfg)
            .unwrap()
            .address_mismatch
    );
    // Order does not matter.
    let two = Advert::v3(51, 100, 100, vec![IpAddr::V4(VIP4), src]);
    cfg[0].addresses = Some(vec![src, IpAddr::V4(VIP4)]);
    assert!(decode_vrrp(
        src,
        mcast4(),
        255,
        &encode(src, mcast4(), &two).unwrap(),
        &cfg
    )
    .is_ok());
    // v3 does not require the interval to match (the backup learns it, §6.4.2).
    let mut cfg = cfg_v3_4();
    cfg[0].adver_int_cs = 300;
    assert!(decode_vrrp(src, mcast4(), 255, &v3, &cfg).is_ok());
}

#[test]
fn v2_interval_and_auth_checks() {
    let src = IpAddr::V4(SRC4);
    let v2 = encode(src, mcast4(), &advert_v2()).unwrap();
    let mut cfg = cfg_v2();
    cfg[0].adver_int_cs = 200;
    assert_eq!(
        decode_vrrp(src, mcast4(), 255, &v2, &cfg),
        Err(Invalid::AdverInterval {
            got_cs: 100,
            configured_cs: 200
        })
    );
    let mut cfg = cfg_v2();
    cfg[0].auth_type = 1;
    cfg[0].auth_data = *b"secret\0\0";
    assert_eq!(
        decode_vrrp(src, mcast4(), 255, &v2, &cfg),
        Err(Invalid::AuthType {
            got: 0,
            configured: 1
        })
    );
    let mut ad = advert_v2();
    ad.auth_type = 1;
    ad.auth_data = *b"secret\0\0";
    let rx = decode_vrrp(
        src,
        mcast4(),
        255,
        &encode(src, mcast4(), &ad).unwrap(),
        &cfg,
    )
    .unwrap();
    assert_eq!(
        (rx.advert.auth_type, rx.advert.auth_data),
        (1, *b"secret\0\0")
    );
    ad.auth_data = *b"guess\0\0\0";
    let msg = encode(src, mcast4(), &ad).unwrap();
    assert_eq!(
        decode_vrrp(src, mcast4(), 255, &msg, &cfg),
        Err(Invalid::AuthData)
    );
    // Auth type 2 (old AH) is matched by type only; the data is not ours to check.
    cfg[0].auth_type = 2;
    ad.auth_type = 2;
    let msg = encode(src, mcast4(), &ad).unwrap();
    assert!(decode_vrrp(src, mcast4(), 255, &msg, &cfg).is_ok());
}

#[test]
fn v3_reserved_interval_bits_are_ignored() {
    let src = IpAddr::V4(SRC4);
    let mut msg = encode(src, mcast4(), &advert_v3_4()).unwrap();
    msg[4] |= 0xf0;
    fix_checksum(Version::V3, src, mcast4(), &mut msg);
    let rx = decode_vrrp(src, mcast4(), 255, &msg, &cfg_v3_4()).unwrap();
    assert_eq!(rx.advert.max_adver_int_cs, 100);
}

#[test]
fn encode_errors() {
    let src = IpAddr::V4(SRC4);
    let many: Vec<IpAddr> = (0..256u32).map(|i| IpAddr::V4(Ipv4Addr::from(i))).collect();
    assert_eq!(
        encode(src, mcast4(), &Advert::v3(1, 100, 100, many)),
        Err(EncodeError::TooManyAddresses(256))
    );
    assert_eq!(
        encode(
            src,
            mcast4(),
            &Advert::v3(1, 100, 100, vec![IpAddr::V6(VIP6)])
        ),
        Err(EncodeError::FamilyMismatch)
    );
    assert_eq!(
        encode(src, mcast6(), &advert_v3_4()),
        Err(EncodeError::FamilyMismatch)
    );
    assert_eq!(
        encode_ip_packet(src, Some(mcast6()), &advert_v3_4()),
        Err(EncodeError::FamilyMismatch)
    );
    let mut v2_6 = advert_v2();
    v2_6.addresses = vec![IpAddr::V6(VIP6)];
    assert_eq!(
        encode(IpAddr::V6(SRC6), mcast6(), &v2_6),
        Err(EncodeError::V2NotIpv4)
    );
    for cs in [0, 150, 25_600] {
        let mut ad = advert_v2();
        ad.max_adver_int_cs = cs;
        assert_eq!(
            encode(src, mcast4(), &ad),
            Err(EncodeError::Interval {
                version: Version::V2,
                cs
            })
        );
    }
    for cs in [0, 4096] {
        let ad = Advert::v3(1, 100, cs, vec![]);
        assert_eq!(
            encode(src, mcast4(), &ad),
            Err(EncodeError::Interval {
                version: Version::V3,
                cs
            })
        );
    }
}

#[test]
fn virtual_and_multicast_macs() {
    assert_eq!(virtual_mac(Family::V4, 1), [0, 0, 0x5e, 0, 1, 1]);
    assert_eq!(virtual_mac(Family::V6, 255), [0, 0, 0x5e, 0, 2, 255]);
    assert_eq!(Family::V4.multicast_mac(), [1, 0, 0x5e, 0, 0, 0x12]);
    assert_eq!(Family::V6.multicast_mac(), [0x33, 0x33, 0, 0, 0, 0x12]);
    assert_eq!(Family::V6.multicast_group().to_string(), "ff02::12");
    assert_eq!(Family::V4.multicast_group().to_string(), "224.0.0.18");
}

#[test]
fn reasons_are_distinct_labels() {
    let all = [
        Invalid::Truncated { need: 1, have: 0 },
        Invalid::EtherType(0),
        Invalid::IpHeader,
        Invalid::IpChecksum,
        Invalid::Fragment,
        Invalid::Protocol(0),
        Invalid::Ttl(0),
        Invalid::Version(0),
        Invalid::Type(0),
        Invalid::Family,
        Invalid::Length {
            count: 0,
            need: 0,
            have: 0,
        },
        Invalid::Checksum { got: 0, want: 0 },
        Invalid::UnknownVrid(0),
        Invalid::VersionMismatch {
            got: Version::V2,
            configured: Version::V3,
        },
        Invalid::LocalOwner,
        Invalid::AuthType {
            got: 0,
            configured: 0,
        },
        Invalid::AuthData,
        Invalid::AddressMismatch,
        Invalid::AdverInterval {
            got_cs: 0,
            configured_cs: 0,
        },
    ];
    let labels: std::collections::HashSet<_> = all.iter().map(Invalid::reason).collect();
    assert_eq!(labels.len(), all.len());
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let cfg: Vec<Configured> = cfg_v2()
        .into_iter()
        .chain(cfg_v3_4())
        .chain(cfg_v3_6())
        .collect();
    let valid = [
        encode_frame(None, IpAddr::V4(SRC4), &advert_v2()).unwrap(),
        encode_frame(None, IpAddr::V4(SRC4), &advert_v3_4()).unwrap(),
        encode_frame(None, IpAddr::V6(SRC6), &advert_v3_6()).unwrap(),
    ];
    for i in 0..10_000 {
        let len = (rng.next() % 160) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // Every other input starts from a valid frame with a few bytes changed, so the
        // deeper layers get exercised too, not just the first length check.
        if i % 2 == 1 {
            bytes = valid[i % 3].clone();
            for _ in 0..(1 + rng.next() % 4) {
                let at = (rng.next() as usize) % bytes.len();
                bytes[at] = rng.next() as u8;
            }
            bytes.truncate(bytes.len() - (rng.next() % 8) as usize);
        }
        let _ = decode_frame(&bytes, &cfg);
        let _ = decode_ip(&bytes, &cfg);
        let _ = decode_vrrp(IpAddr::V4(SRC4), mcast4(), 255, &bytes, &cfg);
        let _ = decode_vrrp(IpAddr::V6(SRC6), mcast6(), 255, &bytes, &cfg);
        // Interpreted from offset 14 as well, to hit the IP layer with random headers.
        if bytes.len() > 14 {
            let _ = decode_ip(&bytes[14..], &cfg);
        }
    }
}
