//! VRRP advertisements on the wire: VRRPv3 (RFC 5798) for IPv4 and IPv6 and VRRPv2
//! (RFC 3768, IPv4 only), encoded and decoded without any I/O.
//!
//! Three layers, because the sockets that will carry these packets see different
//! amounts of them:
//!
//! - the VRRP message alone ([`encode`], [`decode_vrrp`]): what an IPv6 raw socket
//!   delivers (the kernel strips the IPv6 header; the hop limit comes from
//!   `IPV6_RECVHOPLIMIT`), and what an IPv4 raw socket sends without `IP_HDRINCL`;
//! - the IP packet ([`encode_ip_packet`], [`decode_ip`]): what an IPv4 raw socket
//!   delivers, and what one sends with `IP_HDRINCL`;
//! - the Ethernet frame ([`encode_frame`], [`decode_frame`]): what `AF_PACKET` or an
//!   XDP program sees, and the only layer where the virtual router MAC can be set as
//!   the source (RFC 5798 §7.3).
//!
//! Decoding applies the receive checks of RFC 5798 §7.1 and RFC 3768 §7.1 in the order
//! the RFCs list them, and reports the first failure as a typed [`Invalid`] so the
//! caller can count drops per reason ([`Invalid::reason`] gives a stable label). What
//! the RFCs ask of "the local configuration" is passed in as [`Configured`] entries.
//! Decoding never panics, whatever the bytes: every read is bounds-checked.
//!
//! IPv4/IPv6 header fields are read and written with `pnet_packet`, and its RFC 1071
//! helpers compute the checksums. The VRRP header itself is hand-written: pnet's
//! `#[packet]` derive needs `pnet_macros` as a direct dependency, and eight fixed bytes
//! do not justify one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::{self, Ipv4Packet, MutableIpv4Packet};
use pnet_packet::ipv6::{Ipv6Packet, MutableIpv6Packet};
use pnet_packet::util;

use lb_common::wire::{
    ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_VRRP, IPV4_HLEN,
    IPV6_HLEN, VLAN_HLEN, VRRP_HLEN, VRRP_TTL, VRRP_TYPE_ADVERTISEMENT, VRRP_V2_AUTH_LEN,
};

/// The IPv4 multicast group adverts are sent to (RFC 5798 §5.1.1.2).
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group adverts are sent to (RFC 5798 §5.1.2.2).
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The IPv4 TOS / IPv6 traffic class put on sent adverts: DSCP CS6 (network control),
/// as keepalived does, so adverts win over data traffic in congested queues.
pub const TOS: u8 = 0xc0;
/// Largest Max Adver Int a VRRPv3 packet can carry: a 12-bit field (RFC 5798 §5.2.7).
pub const MAX_ADVER_INT_V3_CS: u16 = 0x0fff;

/// The checksum is the fourth 16-bit word of the VRRP header; pnet's helpers skip it.
const CHECKSUM_WORD: usize = 3;

/// VRRP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, 8-bit advert interval in seconds, authentication fields,
    /// checksum over the VRRP message only.
    V2,
    /// RFC 5798: IPv4 and IPv6, 12-bit interval in centiseconds, pseudo-header checksum.
    V3,
}

impl Version {
    /// The value of the 4-bit version field.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// Address family of a virtual router. RFC 5798 §1: IPv4 and IPv6 virtual routers
/// with the same VRID are separate routers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of `addr`.
    pub fn of(addr: IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The VRRP multicast group of this family (224.0.0.18 / ff02::12).
    pub fn multicast_group(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(MULTICAST_V4),
            Family::V6 => IpAddr::V6(MULTICAST_V6),
        }
    }

    /// Ethernet multicast address of the VRRP group (RFC 1112 §6.4 / RFC 2464 §7).
    pub fn multicast_mac(self) -> [u8; 6] {
        match self {
            Family::V4 => [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12],
            Family::V6 => [0x33, 0x33, 0x00, 0x00, 0x00, 0x12],
        }
    }

    fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }
}

/// The virtual router MAC address: 00-00-5E-00-01-{VRID} for IPv4, 00-00-5E-00-02-{VRID}
/// for IPv6 (RFC 5798 §7.3).
pub fn virtual_mac(family: Family, vrid: u8) -> [u8; 6] {
    let kind = match family {
        Family::V4 => 0x01,
        Family::V6 => 0x02,
    };
    [0x00, 0x00, 0x5e, 0x00, kind, vrid]
}

/// One VRRP advertisement, version-independent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    /// Virtual router id, 1..=255 (0 is not a valid VRID, but is carried as is).
    pub vrid: u8,
    /// 255: address owner; 0: the master is resigning (RFC 5798 §5.2.4).
    pub priority: u8,
    /// Advertisement interval in centiseconds. VRRPv3 carries it as is (12 bits);
    /// VRRPv2 carries whole seconds, so encoding a v2 advert needs a multiple of 100
    /// and decoding one multiplies by 100.
    pub max_adver_int_cs: u16,
    /// The virtual addresses; all of the family of the IP packet that carries them.
    pub addresses: Vec<IpAddr>,
    /// VRRPv2 authentication type (RFC 3768 §5.3.6: 0 = none; 1 and 2 are reserved,
    /// used by older implementations for simple text and AH). Always 0 in VRRPv3.
    pub auth_type: u8,
    /// VRRPv2 authentication data (simple text password for type 1). Zero in VRRPv3.
    pub auth_data: [u8; 8],
}

impl Advert {
    /// A VRRPv3 advert without any v2 authentication.
    pub fn v3(vrid: u8, priority: u8, max_adver_int_cs: u16, addresses: Vec<IpAddr>) -> Advert {
        Advert {
            version: Version::V3,
            vrid,
            priority,
            max_adver_int_cs,
            addresses,
            auth_type: 0,
            auth_data: [0; 8],
        }
    }

    /// A VRRPv2 advert with authentication type 0 (RFC 3768 §5.3.6.1).
    pub fn v2(vrid: u8, priority: u8, adver_int_s: u8, addresses: Vec<Ipv4Addr>) -> Advert {
        Advert {
            version: Version::V2,
            vrid,
            priority,
            max_adver_int_cs: u16::from(adver_int_s) * 100,
            addresses: addresses.into_iter().map(IpAddr::V4).collect(),
            auth_type: 0,
            auth_data: [0; 8],
        }
    }
}

/// Why an [`Advert`] could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} addresses do not fit the 8-bit count field")]
    TooManyAddresses(usize),
    #[error("source, destination and virtual addresses must all be of one address family")]
    FamilyMismatch,
    #[error("VRRPv2 is IPv4 only (RFC 3768)")]
    V2NotIpv4,
    #[error("advert interval {cs} cs cannot be carried by VRRP{version:?}")]
    Interval { version: Version, cs: u16 },
}

/// Encode the VRRP message (no IP header) of `advert`, sent from `src` to `dst`.
///
/// VRRPv3 checksums cover an IPv4/IPv6 pseudo-header of `src`, `dst`, protocol 112
/// and the message length (RFC 5798 §5.2.8), which is why the addresses are needed;
/// VRRPv2 checksums cover the message only (RFC 3768 §5.3.8) and ignore them (but
/// they must still be IPv4).
pub fn encode(src: IpAddr, dst: IpAddr, advert: &Advert) -> Result<Vec<u8>, EncodeError> {
    let family = Family::of(src);
    if Family::of(dst) != family || advert.addresses.iter().any(|a| Family::of(*a) != family) {
        return Err(EncodeError::FamilyMismatch);
    }
    let count = u8::try_from(advert.addresses.len())
        .map_err(|_| EncodeError::TooManyAddresses(advert.addresses.len()))?;
    let interval_err = EncodeError::Interval {
        version: advert.version,
        cs: advert.max_adver_int_cs,
    };
    let mut msg = Vec::with_capacity(VRRP_HLEN + advert.addresses.len() * 16 + VRRP_V2_AUTH_LEN);
    msg.extend_from_slice(&[
        (advert.version.number() << 4) | VRRP_TYPE_ADVERTISEMENT,
        advert.vrid,
        advert.priority,
        count,
    ]);
    match advert.version {
        Version::V2 => {
            if family != Family::V4 {
                return Err(EncodeError::V2NotIpv4);
            }
            // RFC 3768 §5.3.7: whole seconds, default 1; 0 would mean "never".
            let cs = advert.max_adver_int_cs;
            if !cs.is_multiple_of(100) {
                return Err(interval_err);
            }
            let secs = u8::try_from(cs / 100).map_err(|_| interval_err.clone())?;
            if secs == 0 {
                return Err(interval_err);
            }
            msg.extend_from_slice(&[advert.auth_type, secs]);
        }
        Version::V3 => {
            // The upper four bits are reserved and MUST be zero (RFC 5798 §5.2.6).
            if advert.max_adver_int_cs == 0 || advert.max_adver_int_cs > MAX_ADVER_INT_V3_CS {
                return Err(interval_err);
            }
            msg.extend_from_slice(&advert.max_adver_int_cs.to_be_bytes());
        }
    }
    msg.extend_from_slice(&[0, 0]);
    for addr in &advert.addresses {
        match addr {
            IpAddr::V4(a) => msg.extend_from_slice(&a.octets()),
            IpAddr::V6(a) => msg.extend_from_slice(&a.octets()),
        }
    }
    if advert.version == Version::V2 {
        msg.extend_from_slice(&advert.auth_data);
    }
    let sum = vrrp_checksum(advert.version, src, dst, &msg);
    msg[6..8].copy_from_slice(&sum.to_be_bytes());
    Ok(msg)
}

/// Encode `advert` as a whole IP packet from `src` to `dst` (the family's multicast
/// group when `None`): IPv4 with TTL 255, TOS 0xc0, protocol 112, no fragmentation
/// (RFC 5798 §5.1.1), or IPv6 with hop limit 255, traffic class 0xc0, next header 112
/// (RFC 5798 §5.1.2).
pub fn encode_ip_packet(
    src: IpAddr,
    dst: Option<IpAddr>,
    advert: &Advert,
) -> Result<Vec<u8>, EncodeError> {
    let dst = dst.unwrap_or_else(|| Family::of(src).multicast_group());
    let msg = encode(src, dst, advert)?;
    // `encode` has checked that src and dst are of one family, so the arms match.
    Ok(match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_packet(s, d, &msg),
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6_packet(s, d, &msg),
        _ => return Err(EncodeError::FamilyMismatch),
    })
}

fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, msg: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; IPV4_HLEN + msg.len()];
    buf[IPV4_HLEN..].copy_from_slice(msg);
    // Sizes are ours: at most 20 + 8 + 255 * 4 + 8 bytes.
    let total = u16::try_from(buf.len()).unwrap_or(u16::MAX);
    if let Some(mut ip) = MutableIpv4Packet::new(&mut buf) {
        ip.set_version(4);
        ip.set_header_length(5);
        ip.set_dscp(TOS >> 2);
        ip.set_ecn(0);
        ip.set_total_length(total);
        ip.set_ttl(VRRP_TTL);
        ip.set_next_level_protocol(IpNextHeaderProtocols::Vrrp);
        ip.set_source(src);
        ip.set_destination(dst);
        let sum = ipv4::checksum(&ip.to_immutable());
        ip.set_checksum(sum);
    }
    buf
}

fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; IPV6_HLEN + msg.len()];
    buf[IPV6_HLEN..].copy_from_slice(msg);
    let payload = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    if let Some(mut ip) = MutableIpv6Packet::new(&mut buf) {
        ip.set_version(6);
        ip.set_traffic_class(TOS);
        ip.set_payload_length(payload);
        ip.set_next_header(IpNextHeaderProtocols::Vrrp);
        ip.set_hop_limit(VRRP_TTL);
        ip.set_source(src);
        ip.set_destination(dst);
    }
    buf
}

/// Encode `advert` as an Ethernet frame to the family's VRRP multicast group and MAC.
///
/// The source MAC is the virtual router MAC of `advert.vrid` (RFC 5798 §7.3) unless
/// `src_mac` overrides it (keepalived's default without `use_vmac` sends from the
/// interface MAC). Unicast adverts need a neighbour lookup and so go through
/// [`encode_ip_packet`] and the kernel instead.
pub fn encode_frame(
    src_mac: Option<[u8; 6]>,
    src: IpAddr,
    advert: &Advert,
) -> Result<Vec<u8>, EncodeError> {
    let family = Family::of(src);
    let packet = encode_ip_packet(src, None, advert)?;
    let ethertype = match family {
        Family::V4 => ETH_P_IPV4,
        Family::V6 => ETH_P_IPV6,
    };
    let mut frame = Vec::with_capacity(ETH_HLEN + packet.len());
    frame.extend_from_slice(&family.multicast_mac());
    frame.extend_from_slice(&src_mac.unwrap_or_else(|| virtual_mac(family, advert.vrid)));
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(&packet);
    Ok(frame)
}

/// RFC 1071 checksum of a VRRP message whose checksum field (word 3) is ignored.
fn vrrp_checksum(version: Version, src: IpAddr, dst: IpAddr, msg: &[u8]) -> u16 {
    let proto = IpNextHeaderProtocols::Vrrp;
    match (version, src, dst) {
        (Version::V3, IpAddr::V4(s), IpAddr::V4(d)) => {
            util::ipv4_checksum(msg, CHECKSUM_WORD, &[], &s, &d, proto)
        }
        (Version::V3, IpAddr::V6(s), IpAddr::V6(d)) => {
            util::ipv6_checksum(msg, CHECKSUM_WORD, &[], &s, &d, proto)
        }
        // v2, or (unreachable through the public API) mixed families: message only.
        _ => util::checksum(msg, CHECKSUM_WORD),
    }
}

/// What the local configuration says about one virtual router, for the receive checks
/// that depend on it (RFC 5798 §7.1, RFC 3768 §7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    pub vrid: u8,
    pub family: Family,
    /// The version this router speaks; adverts of the other version are dropped.
    pub version: Version,
    /// Priority 255: the local router owns the addresses, and the RFCs have the owner
    /// drop every advert for its VRID (another router claiming them is misconfigured).
    pub owner: bool,
    /// VRRPv2 only: the advert interval must equal this (RFC 3768 §7.1).
    pub adver_int_cs: u16,
    /// VRRPv2 only: the auth type must match (RFC 3768 §7.1); for type 1 (simple text,
    /// RFC 2338) the data must match too.
    pub auth_type: u8,
    pub auth_data: [u8; 8],
    /// The virtual addresses, for the optional check that they match (RFC 5798 §7.1
    /// "MAY verify"); `None` skips it. Compared as sets.
    pub addresses: Option<Vec<IpAddr>>,
}

impl Configured {
    /// A router that is not the address owner, with a 1 s interval, no authentication
    /// and no address check: the fields to set for other cases are public.
    pub fn new(vrid: u8, family: Family, version: Version) -> Configured {
        Configured {
            vrid,
            family,
            version,
            owner: false,
            adver_int_cs: 100,
            auth_type: 0,
            auth_data: [0; 8],
            addresses: None,
        }
    }
}

/// A valid advertisement and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Source MAC, when decoded from a frame.
    pub src_mac: Option<[u8; 6]>,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub hop_limit: u8,
    pub advert: Advert,
    /// The addresses differ from [`Configured::addresses`] but the sender is the
    /// address owner, which the RFCs keep processing; the caller SHOULD log it as a
    /// misconfiguration (RFC 5798 §7.1).
    pub address_mismatch: bool,
}

/// Why a received packet was dropped; one variant per RFC check so drops can be
/// counted per reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("ethertype {0:#06x} is neither IPv4 nor IPv6")]
    EtherType(u16),
    #[error("malformed IP header")]
    IpHeader,
    #[error("bad IPv4 header checksum")]
    IpChecksum,
    #[error("IPv4 fragment (VRRP is never fragmented)")]
    Fragment,
    #[error("IP protocol {0} is not VRRP (112)")]
    Protocol(u8),
    #[error("TTL/hop limit {0}, must be 255")]
    Ttl(u8),
    #[error("unknown VRRP version {0}")]
    Version(u8),
    #[error("VRRP type {0} is not an advertisement")]
    Type(u8),
    #[error("VRRPv2 over IPv6")]
    Family,
    #[error("VRRP length {have} does not match the {count} addresses it announces (needs {need})")]
    Length { count: u8, need: usize, have: usize },
    #[error("bad VRRP checksum {got:#06x}, expected {want:#06x}")]
    Checksum { got: u16, want: u16 },
    #[error("VRID {0} is not configured here")]
    UnknownVrid(u8),
    #[error("VRRP{got:?} advert for a VRRP{configured:?} virtual router")]
    VersionMismatch { got: Version, configured: Version },
    #[error("we own the addresses (priority 255); adverts from others are dropped")]
    LocalOwner,
    #[error("auth type {got} does not match configured {configured}")]
    AuthType { got: u8, configured: u8 },
    #[error("authentication data does not match")]
    AuthData,
    #[error("virtual addresses differ from the configured ones")]
    AddressMismatch,
    #[error("advert interval {got_cs} cs differs from configured {configured_cs} cs")]
    AdverInterval { got_cs: u16, configured_cs: u16 },
}

impl Invalid {
    /// A stable snake_case label, e.g. for per-reason drop counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Invalid::Truncated { .. } => "truncated",
            Invalid::EtherType(_) => "ethertype",
            Invalid::IpHeader => "ip_header",
            Invalid::IpChecksum => "ip_checksum",
            Invalid::Fragment => "fragment",
            Invalid::Protocol(_) => "protocol",
            Invalid::Ttl(_) => "ttl",
            Invalid::Version(_) => "version",
            Invalid::Type(_) => "type",
            Invalid::Family => "family",
            Invalid::Length { .. } => "length",
            Invalid::Checksum { .. } => "checksum",
            Invalid::UnknownVrid(_) => "unknown_vrid",
            Invalid::VersionMismatch { .. } => "version_mismatch",
            Invalid::LocalOwner => "local_owner",
            Invalid::AuthType { .. } => "auth_type",
            Invalid::AuthData => "auth_data",
            Invalid::AddressMismatch => "address_mismatch",
            Invalid::AdverInterval { .. } => "adver_interval",
        }
    }
}

fn need(bytes: &[u8], len: usize) -> Result<(), Invalid> {
    if bytes.len() < len {
        return Err(Invalid::Truncated {
            need: len,
            have: bytes.len(),
        });
    }
    Ok(())
}

/// Decode an Ethernet frame (at most one 802.1Q/802.1ad tag) carrying an advert.
pub fn decode_frame(frame: &[u8], configured: &[Configured]) -> Result<Received, Invalid> {
    need(frame, ETH_HLEN)?;
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    let mut offset = 12;
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        need(frame, ETH_HLEN + VLAN_HLEN)?;
        offset += 4;
        ethertype = u16::from_be_bytes([frame[16], frame[17]]);
    }
    match ethertype {
        ETH_P_IPV4 | ETH_P_IPV6 => {}
        other => return Err(Invalid::EtherType(other)),
    }
    let packet = &frame[offset + 2..];
    let mut rx = decode_ip(packet, configured)?;
    // The IP version nibble must agree with the ethertype.
    let want = if ethertype == ETH_P_IPV4 {
        Family::V4
    } else {
        Family::V6
    };
    if Family::of(rx.src) != want {
        return Err(Invalid::IpHeader);
    }
    rx.src_mac = Some(src_mac);
    Ok(rx)
}

/// Decode an IPv4 or IPv6 packet (told apart by its version nibble) carrying an advert.
/// IPv6 extension headers are not followed: VRRP packets carry none.
pub fn decode_ip(packet: &[u8], configured: &[Configured]) -> Result<Received, Invalid> {
    need(packet, 1)?;
    match packet[0] >> 4 {
        4 => decode_ipv4(packet, configured),
        6 => decode_ipv6(packet, configured),
        _ => Err(Invalid::IpHeader),
    }
}

fn decode_ipv4(packet: &[u8], configured: &[Configured]) -> Result<Received, Invalid> {
    let ip = Ipv4Packet::new(packet).ok_or(Invalid::Truncated {
        need: IPV4_HLEN,
        have: packet.len(),
    })?;
    let header_len = usize::from(ip.get_header_length()) * 4;
    let total_len = usize::from(ip.get_total_length());
    if header_len < IPV4_HLEN || total_len < header_len {
        return Err(Invalid::IpHeader);
    }
    need(packet, header_len)?;
    if ipv4::checksum(&ip) != ip.get_checksum() {
        return Err(Invalid::IpChecksum);
    }
    need(packet, total_len)?;
    if ip.get_fragment_offset() != 0 || ip.get_flags() & ipv4::Ipv4Flags::MoreFragments != 0 {
        return Err(Invalid::Fragment);
    }
    let proto = ip.get_next_level_protocol().0;
    if proto != IPPROTO_VRRP {
        return Err(Invalid::Protocol(proto));
    }
    // Anything past total_len is link-layer padding, not VRRP.
    let payload = &packet[header_len..total_len];
    let (src, dst) = (
        IpAddr::V4(ip.get_source()),
        IpAddr::V4(ip.get_destination()),
    );
    decode_vrrp(src, dst, ip.get_ttl(), payload, configured)
}

fn decode_ipv6(packet: &[u8], configured: &[Configured]) -> Result<Received, Invalid> {
    let ip = Ipv6Packet::new(packet).ok_or(Invalid::Truncated {
        need: IPV6_HLEN,
        have: packet.len(),
    })?;
    let end = IPV6_HLEN + usize::from(ip.get_payload_length());
    need(packet, end)?;
    let proto = ip.get_next_header().0;
    if proto != IPPROTO_VRRP {
        return Err(Invalid::Protocol(proto));
    }
    let payload = &packet[IPV6_HLEN..end];
    let (src, dst) = (
        IpAddr::V6(ip.get_source()),
        IpAddr::V6(ip.get_destination()),
    );
    decode_vrrp(src, dst, ip.get_hop_limit(), payload, configured)
}

/// Decode and validate a VRRP message whose IP header has already been taken apart
/// (`hop_limit` is the IPv4 TTL or IPv6 hop limit it arrived with). `msg` must be
/// exactly the IP payload: the RFCs size the message by its address count, and any
/// mismatch either way is reported as [`Invalid::Length`].
///
/// Checks, in RFC 5798 §7.1 / RFC 3768 §7.1 order: TTL 255; version 2 or 3 (and type 1,
/// §5.2.2; v2 only over IPv4); complete message; checksum; VRID configured for this
/// family and not locally owned; v2 auth type (and simple-text data); virtual
/// addresses (the MAY check: a mismatch is dropped unless the sender is the owner);
/// v2 advert interval equal to the configured one.
pub fn decode_vrrp(
    src: IpAddr,
    dst: IpAddr,
    hop_limit: u8,
    msg: &[u8],
    configured: &[Configured],
) -> Result<Received, Invalid> {
    if hop_limit != VRRP_TTL {
        return Err(Invalid::Ttl(hop_limit));
    }
    need(msg, 1)?;
    let version = match msg[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        other => return Err(Invalid::Version(other)),
    };
    let kind = msg[0] & 0x0f;
    if kind != VRRP_TYPE_ADVERTISEMENT {
        return Err(Invalid::Type(kind));
    }
    let family = Family::of(src);
    if Family::of(dst) != family || (version == Version::V2 && family != Family::V4) {
        return Err(Invalid::Family);
    }
    need(msg, VRRP_HLEN)?;
    let count = msg[3];
    let auth_len = if version == Version::V2 {
        VRRP_V2_AUTH_LEN
    } else {
        0
    };
    let addr_len = family.addr_len();
    let expected = VRRP_HLEN + usize::from(count) * addr_len + auth_len;
    if msg.len() != expected {
        return Err(Invalid::Length {
            count,
            need: expected,
            have: msg.len(),
        });
    }
    let got = u16::from_be_bytes([msg[6], msg[7]]);
    let want = vrrp_checksum(version, src, dst, msg);
    if got != want {
        return Err(Invalid::Checksum { got, want });
    }

    let (vrid, priority) = (msg[1], msg[2]);
    let (auth_type, max_adver_int_cs) = match version {
        Version::V2 => (msg[4], u16::from(msg[5]) * 100),
        // The upper four bits are reserved: ignored on receipt (RFC 5798 §5.2.6).
        Version::V3 => (
            0,
            u16::from_be_bytes([msg[4], msg[5]]) & MAX_ADVER_INT_V3_CS,
        ),
    };
    let addr_bytes = &msg[VRRP_HLEN..VRRP_HLEN + usize::from(count) * addr_len];
    let addresses: Vec<IpAddr> = addr_bytes
        .chunks_exact(addr_len)
        .map(|c| match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])),
            Family::V6 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(c);
                IpAddr::V6(Ipv6Addr::from(b))
            }
        })
        .collect();
    let mut auth_data = [0u8; 8];
    if version == Version::V2 {
        auth_data.copy_from_slice(&msg[msg.len() - VRRP_V2_AUTH_LEN..]);
    }

    let local = configured
        .iter()
        .find(|c| c.vrid == vrid && c.family == family)
        .ok_or(Invalid::UnknownVrid(vrid))?;
    if local.owner {
        return Err(Invalid::LocalOwner);
    }
    if local.version != version {
        return Err(Invalid::VersionMismatch {
            got: version,
            configured: local.version,
        });
    }
    if version == Version::V2 {
        if auth_type != local.auth_type {
            return Err(Invalid::AuthType {
                got: auth_type,
                configured: local.auth_type,
            });
        }
        if auth_type == 1 && auth_data != local.auth_data {
            return Err(Invalid::AuthData);
        }
    }
    let address_mismatch = local
        .addresses
        .as_ref()
        .is_some_and(|want| !same_set(want, &addresses));
    if address_mismatch && priority != 255 {
        return Err(Invalid::AddressMismatch);
    }
    if version == Version::V2 && max_adver_int_cs != local.adver_int_cs {
        return Err(Invalid::AdverInterval {
            got_cs: max_adver_int_cs,
            configured_cs: local.adver_int_cs,
        });
    }

    Ok(Received {
        src_mac: None,
        src,
        dst,
        hop_limit,
        advert: Advert {
            version,
            vrid,
            priority,
            max_adver_int_cs,
            addresses,
            auth_type,
            auth_data,
        },
        address_mismatch,
    })
}

fn same_set(a: &[IpAddr], b: &[IpAddr]) -> bool {
    a.iter().all(|x| b.contains(x)) && b.iter().all(|x| a.contains(x))
}

#[cfg(test)]
mod tests;
