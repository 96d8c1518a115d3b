//! Wire-protocol numbers the data plane, the control plane and the tests all read and
//! write: EtherTypes, IP protocol numbers, header lengths and bits, ICMP types, VRRP
//! fields and XDP verdicts. One definition each, so no two places can disagree.
//!
//! Byte order: every multi-byte value here is in **host order**, as the standards print
//! it. A field read from a packet is converted first (`u16::from_be(eth.ether_type)`,
//! `u16::from_be_bytes(..)`) and a value is written with `.to_be()` / `.to_be_bytes()`.
//! Single-byte values (protocol numbers, ICMP types, TCP flags) have no byte order.
//!
//! Not the `network-types` crate: its EtherType enum holds byte-swapped values (its
//! `Ipv4` is `0x0008` on a little-endian host), it has no XDP verdicts, VRRP fields or
//! ICMP type constants, and its header structs would replace the data plane's own, a
//! change of the verifier-facing code this module does not need.

/// Ethernet II header: destination MAC, source MAC, EtherType (IEEE 802.3 §3.1.1).
pub const ETH_HLEN: usize = 14;
/// An 802.1Q / 802.1ad tag (TPID + TCI) in front of the EtherType (IEEE 802.1Q §9).
pub const VLAN_HLEN: usize = 4;

// EtherTypes: IEEE 802 numbers (IANA "ieee-802-numbers" registry), named like Linux's
// `include/uapi/linux/if_ether.h` `ETH_P_*`.
/// IPv4 (RFC 894).
pub const ETH_P_IPV4: u16 = 0x0800;
/// ARP (RFC 826).
pub const ETH_P_ARP: u16 = 0x0806;
/// 802.1Q VLAN tag (customer VLAN).
pub const ETH_P_8021Q: u16 = 0x8100;
/// IPv6 (RFC 8200).
pub const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1ad service VLAN tag (QinQ outer tag).
pub const ETH_P_8021AD: u16 = 0x88a8;
/// The VLAN id bits of a TCI (the rest are priority and drop-eligible).
pub const VLAN_VID_MASK: u16 = 0x0fff;

/// IPv4 header without options (RFC 791 §3.1); IHL 5.
pub const IPV4_HLEN: usize = 20;
/// The first IPv4 header byte without options: version 4, IHL 5.
pub const IPV4_VER_IHL: u8 = 0x45;
// IPv4 flags / fragment offset field (host order): Don't Fragment, More Fragments,
// and the 13-bit offset (RFC 791 §3.1).
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET: u16 = 0x1fff;
/// IPv6 fixed header (RFC 8200 §3).
pub const IPV6_HLEN: usize = 40;

// IP protocol numbers / IPv6 next headers (IANA "protocol-numbers" registry).
/// ICMP (RFC 792).
pub const IPPROTO_ICMP: u8 = 1;
/// IPv4 in IP (RFC 2003).
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 in IP (RFC 2473).
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ICMPV6: u8 = 58;
/// VRRP (RFC 5798 §5.1.1.3, §5.1.2.3).
pub const IPPROTO_VRRP: u8 = 112;

// IPv6 extension headers (IANA "ipv6-parameters", "IPv6 Extension Header Types").
/// Hop-by-hop options (RFC 8200 §4.3).
pub const IPPROTO_HOPOPTS: u8 = 0;
/// Routing header (RFC 8200 §4.4).
pub const IPPROTO_ROUTING: u8 = 43;
/// Fragment header (RFC 8200 §4.5).
pub const IPPROTO_FRAGMENT: u8 = 44;
/// Destination options (RFC 8200 §4.6).
pub const IPPROTO_DSTOPTS: u8 = 60;
/// Authentication Header (RFC 4302).
pub const IPPROTO_AH: u8 = 51;
/// Mobility header (RFC 6275).
pub const IPPROTO_MH: u8 = 135;
/// Host Identity Protocol (RFC 7401).
pub const IPPROTO_HIP: u8 = 139;
/// Shim6 (RFC 5533).
pub const IPPROTO_SHIM6: u8 = 140;

/// UDP header (RFC 768).
pub const UDP_HLEN: usize = 8;
/// TCP header without options (RFC 9293 §3.1).
pub const TCP_HLEN: usize = 20;
/// Offset of the TCP flags byte from the start of the TCP header (RFC 9293 §3.1).
pub const TCP_FLAGS_OFFSET: usize = 13;
// TCP flag bits in that byte.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

// ICMP (RFC 792) and ICMPv6 (RFC 4443) types and codes used here.
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
/// Destination unreachable code "fragmentation needed and DF set" (RFC 1191).
pub const ICMP_FRAG_NEEDED: u8 = 4;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_PACKET_TOO_BIG: u8 = 2;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
/// Neighbour advertisement (RFC 4861 §4.4).
pub const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;
/// ICMP / ICMPv6 header before an echo's data or an error's quoted packet: type, code,
/// checksum and four bytes of rest-of-header (RFC 792, RFC 4443 §2.1).
pub const ICMP_HLEN: usize = 8;

/// The only TTL / hop limit a VRRP packet may carry (RFC 5798 §5.1.1.3, §5.1.2.3): a
/// packet with 255 cannot have crossed a router, so adverts stay on the link.
pub const VRRP_TTL: u8 = 255;
/// VRRP packet type: the only one defined (RFC 5798 §5.2.2).
pub const VRRP_TYPE_ADVERTISEMENT: u8 = 1;
/// Fixed VRRP header: version/type, VRID, priority, count, (auth type, adver int | max
/// adver int), checksum (RFC 5798 §5.1, RFC 3768 §5.1).
pub const VRRP_HLEN: usize = 8;
/// VRRPv2 ends with 8 bytes of authentication data (RFC 3768 §5.3.10).
pub const VRRP_V2_AUTH_LEN: usize = 8;

// XDP verdicts: `enum xdp_action` of Linux `include/uapi/linux/bpf.h`, as an XDP
// program returns them and BPF_PROG_TEST_RUN reports them.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_order_values_become_the_wire_bytes() {
        // What a frame carries for IPv6 and for an 802.1ad tag, as the standards print it.
        assert_eq!(ETH_P_IPV6.to_be_bytes(), [0x86, 0xdd]);
        assert_eq!(ETH_P_8021AD.to_be_bytes(), [0x88, 0xa8]);
        assert_eq!(u16::from_be_bytes([0x08, 0x00]), ETH_P_IPV4);
        assert_eq!(IP_MF | IP_OFFSET, 0x3fff);
    }
}
