//! The VRRP receive path on arbitrary bytes, against a fixed set of configured virtual
//! routers (v2 and v3, IPv4 and IPv6, simple-text auth, an owner, address checks):
//! `decode_frame`, `decode_ip` and `decode_vrrp` never panic, and an advert any of them
//! accepts encodes (`encode_frame` / `encode_ip_packet`) to a packet that decodes to the
//! same advert, from the same addresses. The one exception: a VRRPv3 advert with a
//! Max Adver Int of 0 is accepted (the state machine counts it as 1 cs) but never sent.
#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::OnceLock,
};

use lb_userspace::vrrp::packet::{
    decode_frame, decode_ip, decode_vrrp, encode_frame, encode_ip_packet, Configured, EncodeError,
    Family, Received, Version,
};
use libfuzzer_sys::fuzz_target;

fn configured() -> &'static [Configured] {
    static CONFIGURED: OnceLock<Vec<Configured>> = OnceLock::new();
    CONFIGURED.get_or_init(|| {
        vec![
            Configured::new(51, Family::V4, Version::V2),
            Configured::new(52, Family::V4, Version::V3),
            Configured::new(51, Family::V6, Version::V3),
            Configured {
                auth_type: 1,
                auth_data: *b"secret\0\0",
                adver_int_cs: 300,
                ..Configured::new(53, Family::V4, Version::V2)
            },
            Configured {
                owner: true,
                ..Configured::new(54, Family::V4, Version::V3)
            },
            Configured {
                addresses: Some(vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))]),
                ..Configured::new(56, Family::V4, Version::V3)
            },
            Configured {
                addresses: Some(vec![IpAddr::V6(Ipv6Addr::new(
                    0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100,
                ))]),
                ..Configured::new(55, Family::V6, Version::V3)
            },
        ]
    })
}

/// Re-encodes what was received and checks that it decodes to the same advert.
fn round_trip(rx: &Received, frame: bool) {
    let advert = &rx.advert;
    let encoded = if frame {
        encode_frame(rx.src_mac, rx.src, advert)
    } else {
        encode_ip_packet(rx.src, Some(rx.dst), advert)
    };
    let bytes = match encoded {
        Ok(bytes) => bytes,
        Err(EncodeError::Interval { .. })
            if advert.version == Version::V3 && advert.max_adver_int_cs == 0 =>
        {
            return
        }
        Err(e) => panic!("accepted advert {advert:?} does not encode: {e}"),
    };
    let again = if frame {
        decode_frame(&bytes, configured())
    } else {
        decode_ip(&bytes, configured())
    };
    match again {
        Ok(again) => {
            assert_eq!(
                &again.advert, advert,
                "advert changed through encode/decode"
            );
            assert_eq!(again.src, rx.src);
            assert_eq!(again.src_mac, rx.src_mac);
            assert_eq!(again.address_mismatch, rx.address_mismatch);
            if !frame {
                assert_eq!(again.dst, rx.dst);
            }
        }
        Err(e) => panic!("re-encoded advert {advert:?} does not decode: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(rx) = decode_frame(data, configured()) {
        round_trip(&rx, true);
    }
    if let Ok(rx) = decode_ip(data, configured()) {
        round_trip(&rx, false);
    }
    // The bare message: the first byte picks the family and whether the hop limit is
    // 255, the rest is the VRRP message.
    if let Some((&head, msg)) = data.split_first() {
        let (src, dst) = if head & 1 == 0 {
            (
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
                IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
            )
        } else {
            (
                IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x10)),
                IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)),
            )
        };
        let hop_limit = if head & 2 == 0 { 255 } else { head };
        if let Ok(rx) = decode_vrrp(src, dst, hop_limit, msg, configured()) {
            round_trip(&rx, false);
        }
    }
});
