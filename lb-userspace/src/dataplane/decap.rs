//! What `xlb decap` lets its program unwrap, as `XLB_DECAP_ALLOW` entries: every
//! (allowed balancer source, local destination) pair of one family, plus one marker
//! per source (so a refused packet's counter tells an unknown sender from a known one
//! to a foreign address).

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{
    limits::{MAX_DECAP_ENTRIES, MAX_DECAP_SOURCES},
    service::{DECAP_PAIR, DECAP_SOURCE},
    DecapKey,
};

use super::addr::be_words;

/// Why an allow-list cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecapError {
    #[error(
        "no allowed source: give --allow-source with each balancer's encapsulation source \
         address (its config's encap_sources.v4 / v6), e.g. --allow-source 10.0.0.2; \
         unwrapping tunnels from any sender would let anyone inject packets to the VIPs"
    )]
    NoSource,
    #[error("{0} is not a usable source (unspecified, multicast or broadcast)")]
    BadSource(IpAddr),
    #[error("{given} allowed sources: at most {MAX_DECAP_SOURCES}")]
    TooManySources { given: usize },
    #[error(
        "{sources} sources × {destinations} local addresses need {entries} entries: at most \
         {MAX_DECAP_ENTRIES}"
    )]
    TooManyEntries {
        sources: usize,
        destinations: usize,
        entries: usize,
    },
}

/// The map's whole content for these sources and local destinations (duplicates and
/// unspecified destinations ignored; a pair needs both of one family).
pub fn allowlist(
    sources: &[IpAddr],
    destinations: &[IpAddr],
) -> Result<BTreeMap<DecapKey, u32>, DecapError> {
    if sources.is_empty() {
        return Err(DecapError::NoSource);
    }
    if sources.len() > MAX_DECAP_SOURCES {
        return Err(DecapError::TooManySources {
            given: sources.len(),
        });
    }
    if let Some(bad) = sources.iter().find(|s| !usable_source(**s)) {
        return Err(DecapError::BadSource(*bad));
    }
    let mut entries = BTreeMap::new();
    for &src in sources {
        let (src_w, family) = be_words(src);
        entries.insert(DecapKey::source(src_w, family), DECAP_SOURCE);
        for &dst in destinations.iter().filter(|d| !d.is_unspecified()) {
            let (dst_w, dst_family) = be_words(dst);
            if dst_family == family {
                let key = DecapKey {
                    dst: dst_w,
                    ..DecapKey::source(src_w, family)
                };
                entries.insert(key, DECAP_PAIR);
            }
        }
    }
    if entries.len() > MAX_DECAP_ENTRIES as usize {
        return Err(DecapError::TooManyEntries {
            sources: sources.len(),
            destinations: destinations.len(),
            entries: entries.len(),
        });
    }
    Ok(entries)
}

/// A balancer's encapsulation source is a unicast address of its own.
fn usable_source(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !(a.is_unspecified() || a.is_multicast() || a.is_broadcast()),
        IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast()),
    }
}

#[cfg(test)]
mod tests {
    use lb_common::service::{AF_INET, AF_INET6};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn pairs_of_one_family_and_a_marker_per_source() {
        let list = allowlist(
            &[ip("10.0.0.2"), ip("fd00::2")],
            &[
                ip("10.0.0.11"),
                ip("fd00::11"),
                ip("fe80::1"),
                ip("0.0.0.0"),
            ],
        )
        .unwrap();
        let (s4, _) = be_words(ip("10.0.0.2"));
        let (s6, _) = be_words(ip("fd00::2"));
        let (d4, _) = be_words(ip("10.0.0.11"));
        let (d6, _) = be_words(ip("fd00::11"));
        let (ll, _) = be_words(ip("fe80::1"));
        let want: BTreeMap<DecapKey, u32> = [
            (DecapKey::source(s4, AF_INET), DECAP_SOURCE),
            (DecapKey::source(s6, AF_INET6), DECAP_SOURCE),
            (
                DecapKey {
                    dst: d4,
                    ..DecapKey::source(s4, AF_INET)
                },
                DECAP_PAIR,
            ),
            (
                DecapKey {
                    dst: d6,
                    ..DecapKey::source(s6, AF_INET6)
                },
                DECAP_PAIR,
            ),
            (
                DecapKey {
                    dst: ll,
                    ..DecapKey::source(s6, AF_INET6)
                },
                DECAP_PAIR,
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(list, want);
    }

    #[test]
    fn refusals_name_what_to_change() {
        let e = allowlist(&[], &[ip("10.0.0.11")]).unwrap_err();
        assert_eq!(e, DecapError::NoSource);
        assert!(e.to_string().contains("--allow-source"), "{e}");
        assert_eq!(
            allowlist(&[ip("0.0.0.0")], &[]),
            Err(DecapError::BadSource(ip("0.0.0.0")))
        );
        assert_eq!(
            allowlist(&[ip("ff02::1")], &[]),
            Err(DecapError::BadSource(ip("ff02::1")))
        );
        let many: Vec<IpAddr> = (1..=65u8).map(|i| IpAddr::from([10, 0, 1, i])).collect();
        assert_eq!(
            allowlist(&many, &[]),
            Err(DecapError::TooManySources { given: 65 })
        );
        let dests: Vec<IpAddr> = (0..100u16)
            .map(|i| IpAddr::from([10, 1, (i >> 8) as u8, i as u8]))
            .collect();
        assert!(matches!(
            allowlist(&many[..64], &dests),
            Err(DecapError::TooManyEntries { entries: 6464, .. })
        ));
    }
}
