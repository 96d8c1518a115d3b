//! What `xlb decap` lets its program unwrap, as `XLB_DECAP_ALLOW` entries: every
//! (allowed balancer source, local destination) pair of one family, plus one marker
//! per source (so a refused packet's counter tells an unknown sender from a known one
//! to a foreign address). A source may be a prefix (a balancer whose outer sources
//! carry flow entropy, `encap_sources.v4: "10.99.0.0/16"`): its entries hold the
//! prefix's address and `XLB_DECAP_LENS` the family's distinct lengths, which the
//! program masks each packet's source with before the probe.

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{
    limits::{MAX_DECAP_ENTRIES, MAX_DECAP_LENS, MAX_DECAP_SOURCES},
    service::{decap_lens_base, AF_INET, AF_INET6, DECAP_PAIR, DECAP_SOURCE},
    DecapKey,
};

use super::{addr::be_words, prefix::IpPrefix};

/// Everything `xlb_decap` reads to decide a tunnel packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecapAllow {
    /// `XLB_DECAP_ALLOW`'s whole content.
    pub entries: BTreeMap<DecapKey, u32>,
    /// `XLB_DECAP_LENS`: per family (IPv4 first), the distinct source prefix lengths,
    /// longest first, 0 after the last.
    pub lens: [u32; 2 * MAX_DECAP_LENS as usize],
}

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
    #[error("--allow-source {0}")]
    BadPrefix(String),
    #[error(
        "{given} distinct IPv{family} prefix lengths in --allow-source: at most \
         {MAX_DECAP_LENS} (each costs a tunnel packet one more lookup)"
    )]
    TooManyLengths { family: u8, given: usize },
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

/// The maps' whole content for these sources (addresses or prefixes) and local
/// destinations (duplicates and unspecified destinations ignored; a pair needs both of
/// one family).
pub fn allowlist<S: Copy + Into<IpPrefix>>(
    sources: &[S],
    destinations: &[IpAddr],
) -> Result<DecapAllow, DecapError> {
    if sources.is_empty() {
        return Err(DecapError::NoSource);
    }
    if sources.len() > MAX_DECAP_SOURCES {
        return Err(DecapError::TooManySources {
            given: sources.len(),
        });
    }
    let sources: Vec<IpPrefix> = sources.iter().map(|s| (*s).into()).collect();
    if let Some(bad) = sources.iter().find(|s| !usable_source(s.addr)) {
        return Err(DecapError::BadSource(bad.addr));
    }
    for prefix in &sources {
        prefix.check().map_err(DecapError::BadPrefix)?;
    }
    let mut allow = DecapAllow::default();
    for family in [AF_INET, AF_INET6] {
        let mut lens: Vec<u32> = sources
            .iter()
            .filter(|p| p.words().1 == family)
            .map(|p| u32::from(p.len))
            .collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        if lens.len() > MAX_DECAP_LENS as usize {
            return Err(DecapError::TooManyLengths {
                family,
                given: lens.len(),
            });
        }
        let base = decap_lens_base(family) as usize;
        allow.lens[base..base + lens.len()].copy_from_slice(&lens);
    }
    let entries = &mut allow.entries;
    for src in &sources {
        let (src_w, family) = src.words();
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
    Ok(allow)
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
        assert_eq!(list.entries, want);
        assert_eq!(list.lens, [32, 0, 0, 0, 128, 0, 0, 0]);
    }

    #[test]
    fn prefixes_are_stored_by_their_address_with_their_lengths_longest_first() {
        let p = |s: &str| s.parse::<IpPrefix>().unwrap();
        let list = allowlist(
            &[
                p("10.99.0.0/16"),
                p("10.0.0.2"),
                p("10.98.0.0/16"),
                p("fd99::/96"),
            ],
            &[ip("10.0.0.11")],
        )
        .unwrap();
        assert_eq!(list.lens, [32, 16, 0, 0, 96, 0, 0, 0]);
        let (s4, _) = be_words(ip("10.99.0.0"));
        let (d4, _) = be_words(ip("10.0.0.11"));
        let pair = DecapKey {
            dst: d4,
            ..DecapKey::source(s4, AF_INET)
        };
        assert_eq!(list.entries.get(&pair), Some(&DECAP_PAIR));
        assert_eq!(
            allowlist(&[p("10.99.0.1/16")], &[]),
            Err(DecapError::BadPrefix(
                "10.99.0.1/16: host bits are set (the prefix's host bits carry each flow's hash)"
                    .into()
            ))
        );
        assert!(matches!(
            allowlist(&[p("10.0.0.0/8")], &[]).map(|l| l.lens[0]),
            Ok(8)
        ));
        assert!(matches!(
            allowlist(&[p("fd00::/64")], &[]),
            Err(DecapError::BadPrefix(_))
        ));
        let five = [
            "10.1.0.0/16",
            "10.2.0.0/17",
            "10.3.0.0/18",
            "10.4.0.0/19",
            "10.5.0.0/20",
        ]
        .map(p);
        assert_eq!(
            allowlist(&five, &[]),
            Err(DecapError::TooManyLengths {
                family: AF_INET,
                given: 5
            })
        );
    }

    #[test]
    fn refusals_name_what_to_change() {
        let e = allowlist::<IpAddr>(&[], &[ip("10.0.0.11")]).unwrap_err();
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
