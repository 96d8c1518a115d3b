//! Tunnel source prefixes: `encap_sources.v4` / `v6` on the balancer and
//! `xlb decap --allow-source` on backends take an address or `ADDR/LEN`. With a prefix the
//! balancer puts the flow hash in the host bits of the outer source (a per-flow address,
//! so backends' RSS spreads tunnelled flows) and the backend accepts the whole prefix.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use lb_common::service::{prefix_mask, AF_INET};
use serde::{Deserialize, Serialize};

use super::addr::be_words;

/// The shortest prefixes accepted: IPv4 /8 (a prefix longer than the flows it spreads
/// is pointless, a shorter one would be most of a network's space), IPv6 /96 (so the
/// host bits stay within the last word: one AND and one OR per packet in XDP).
pub const MIN_LEN_V4: u8 = 8;
pub const MIN_LEN_V6: u8 = 96;

/// An address with a prefix length (the address's full width for a bare address).
/// Parsing accepts any length up to the width; [`Prefix::check`] says whether it is
/// usable as a tunnel source prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix<A> {
    pub addr: A,
    pub len: u8,
}

/// An IPv4 or IPv6 prefix (`--allow-source`).
pub type IpPrefix = Prefix<IpAddr>;

/// What the three address types have in common here.
pub trait Family: Copy + FromStr + fmt::Display + Into<IpAddr> {
    /// Bits in this address (32 or 128).
    fn width(self) -> u8 {
        if self.into().is_ipv4() {
            32
        } else {
            128
        }
    }
}

impl Family for Ipv4Addr {}
impl Family for Ipv6Addr {}
impl Family for IpAddr {}

impl<A: Family> Prefix<A> {
    /// A bare address: a /32 or /128.
    pub fn host(addr: A) -> Self {
        Self {
            addr,
            len: addr.width(),
        }
    }

    /// The same prefix as an [`IpPrefix`].
    pub fn ip(self) -> IpPrefix {
        Prefix {
            addr: self.addr.into(),
            len: self.len,
        }
    }

    /// Whether it is a usable tunnel source prefix; the reason if not.
    pub fn check(self) -> Result<(), String> {
        self.ip().check_ip()
    }
}

impl IpPrefix {
    fn min_len(self) -> u8 {
        if self.addr.is_ipv4() {
            MIN_LEN_V4
        } else {
            MIN_LEN_V6
        }
    }

    /// The address as be32 words with the family tag.
    pub fn words(self) -> ([u32; 4], u8) {
        be_words(self.addr)
    }

    /// The network mask (be32 words).
    pub fn mask(self) -> [u32; 4] {
        let (_, family) = self.words();
        prefix_mask(u32::from(self.len), family)
    }

    /// The host bits of the last word the family uses (be32): what the balancer ORs the
    /// flow hash into (`Config::encap_host_v4` / `v6`). Only meaningful after
    /// [`IpPrefix::check`] (IPv6 /96 or longer).
    pub fn host_bits(self) -> u32 {
        let (_, family) = self.words();
        !self.mask()[if family == AF_INET { 0 } else { 3 }]
    }

    /// Whether it is a usable tunnel source prefix (length within the family's range,
    /// no host bits set); the reason if not. A bare address is always one (the
    /// balancer's unset placeholders `0.0.0.0` / `::` included: those services count
    /// `encap_error`, as before prefixes).
    fn check_ip(self) -> Result<(), String> {
        let (min, width) = (self.min_len(), self.addr.width());
        if self.len < min || self.len > width {
            return Err(format!(
                "{self}: the prefix length must be {min} to {width} (a bare address is a /{width})"
            ));
        }
        let (words, _) = self.words();
        if words.iter().zip(self.mask()).any(|(w, m)| w & !m != 0) {
            return Err(format!(
                "{self}: host bits are set (the prefix's host bits carry each flow's hash)"
            ));
        }
        Ok(())
    }
}

impl<A: Family> From<A> for Prefix<A> {
    fn from(addr: A) -> Self {
        Self::host(addr)
    }
}

impl<A: Family> fmt::Display for Prefix<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == self.addr.width() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl<A: Family> FromStr for Prefix<A> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s.split_once('/').map_or((s, None), |(a, l)| (a, Some(l)));
        let addr: A = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or ADDRESS/LENGTH of this family"))?;
        let width = addr.width();
        let len = match len {
            None => width,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= width)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {width}"))?,
        };
        Ok(Self { addr, len })
    }
}

impl<A: Family> Serialize for Prefix<A> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de, A: Family> Deserialize<'de> for Prefix<A> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_is_a_full_length_prefix() {
        let p: Prefix<Ipv4Addr> = "10.0.0.2".parse().unwrap();
        assert_eq!(p, Prefix::host(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(p.to_string(), "10.0.0.2");
        assert_eq!(p.ip().host_bits(), 0);
        assert_eq!(p.check(), Ok(()));
        let p: IpPrefix = "fd00::2".parse().unwrap();
        assert_eq!(p.len, 128);
        assert_eq!(p.host_bits(), 0);
    }

    #[test]
    fn host_bits_are_the_last_words_low_bits_in_network_order() {
        let p: Prefix<Ipv4Addr> = "10.99.0.0/16".parse().unwrap();
        assert_eq!(p.to_string(), "10.99.0.0/16");
        assert_eq!(p.ip().host_bits().to_ne_bytes(), [0, 0, 0xff, 0xff]);
        let p: Prefix<Ipv6Addr> = "fd99::/100".parse().unwrap();
        assert_eq!(p.ip().host_bits().to_ne_bytes(), [0x0f, 0xff, 0xff, 0xff]);
        assert_eq!(p.check(), Ok(()));
    }

    #[test]
    fn lengths_out_of_range_and_host_bits_are_refused() {
        let bad = |s: &str| s.parse::<IpPrefix>().unwrap().check().unwrap_err();
        assert!(bad("10.0.0.0/7").contains("must be 8 to 32"));
        assert!(bad("fd00::/95").contains("must be 96 to 128"));
        assert!(bad("10.0.0.1/24").contains("host bits are set"));
        assert!(bad("fd00::1:0/96").contains("host bits are set"));
        assert!("10.0.0.0/33".parse::<IpPrefix>().is_err());
        assert!("10.0.0.0/x".parse::<IpPrefix>().is_err());
        assert!("fd00::/16".parse::<Prefix<Ipv4Addr>>().is_err());
    }
}
