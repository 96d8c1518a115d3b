//! Test packet builders on top of `pnet_packet`: whole Ethernet frames with correct
//! lengths and checksums, so a fixture states intent (addresses, ports) and not bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::wire::{ETH_HLEN, IPPROTO_TCP, IPV4_HLEN, IPV6_HLEN, TCP_HLEN, UDP_HLEN};
use pnet_packet::{
    ethernet::{EtherType, EtherTypes, MutableEthernetPacket},
    ip::{IpNextHeaderProtocol, IpNextHeaderProtocols},
    ipv4::{self, MutableIpv4Packet},
    ipv6::MutableIpv6Packet,
    tcp::{self, MutableTcpPacket, TcpFlags},
    udp::{self, MutableUdpPacket},
    MutablePacket,
};

/// Fixed MACs for fixtures: `CLIENT_MAC` → `LB_MAC`.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// An IPv4 address as the data plane's maps store it: be32 word 0, the rest zero.
pub fn be4(a: Ipv4Addr) -> [u32; 4] {
    [u32::from_ne_bytes(a.octets()), 0, 0, 0]
}

/// An IPv6 address as the data plane's maps store it: four be32 words.
pub fn be6(a: Ipv6Addr) -> [u32; 4] {
    let o = a.octets();
    core::array::from_fn(|i| u32::from_ne_bytes(o[i * 4..i * 4 + 4].try_into().unwrap()))
}

/// An Ethernet frame around `payload`.
pub fn ethernet(src: [u8; 6], dst: [u8; 6], ether_type: EtherType, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; ETH_HLEN + payload.len()];
    let mut eth = MutableEthernetPacket::new(&mut buf).expect("buffer fits");
    eth.set_source(src.into());
    eth.set_destination(dst.into());
    eth.set_ethertype(ether_type);
    eth.payload_mut().copy_from_slice(payload);
    buf
}

/// An IPv4 header (no options, DF set, TTL 64) around `l4`, with a valid checksum.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: IpNextHeaderProtocol, l4: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; IPV4_HLEN + l4.len()];
    let mut ip = MutableIpv4Packet::new(&mut buf).expect("buffer fits");
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_total_length((IPV4_HLEN + l4.len()) as u16);
    ip.set_identification(0x1234);
    ip.set_flags(0b010);
    ip.set_ttl(64);
    ip.set_next_level_protocol(proto);
    ip.set_source(src);
    ip.set_destination(dst);
    ip.payload_mut().copy_from_slice(l4);
    let csum = ipv4::checksum(&ip.to_immutable());
    ip.set_checksum(csum);
    buf
}

/// An IPv6 header (hop limit 64) around `l4`.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: IpNextHeaderProtocol, l4: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; IPV6_HLEN + l4.len()];
    let mut ip = MutableIpv6Packet::new(&mut buf).expect("buffer fits");
    ip.set_version(6);
    ip.set_payload_length(l4.len() as u16);
    ip.set_next_header(next);
    ip.set_hop_limit(64);
    ip.set_source(src);
    ip.set_destination(dst);
    ip.payload_mut().copy_from_slice(l4);
    buf
}

/// A UDP datagram with an IPv4 pseudo-header checksum.
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = udp_bare(sport, dport, payload);
    let mut u = MutableUdpPacket::new(&mut buf).expect("buffer fits");
    let csum = udp::ipv4_checksum(&u.to_immutable(), &src, &dst);
    u.set_checksum(csum);
    buf
}

/// A TCP segment (no options) with an IPv6 pseudo-header checksum.
pub fn tcp6(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut buf = tcp_bare(sport, dport, flags);
    let mut t = MutableTcpPacket::new(&mut buf).expect("buffer fits");
    let csum = tcp::ipv6_checksum(&t.to_immutable(), &src, &dst);
    t.set_checksum(csum);
    buf
}

/// A TCP segment (no options) with an IPv4 pseudo-header checksum.
pub fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut buf = tcp_bare(sport, dport, flags);
    let mut t = MutableTcpPacket::new(&mut buf).expect("buffer fits");
    let csum = tcp::ipv4_checksum(&t.to_immutable(), &src, &dst);
    t.set_checksum(csum);
    buf
}

/// A whole client→balancer IPv4/UDP frame.
pub fn udp4_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let l4 = udp4(src, dst, sport, dport, payload);
    let l3 = ipv4(src, dst, IpNextHeaderProtocols::Udp, &l4);
    ethernet(CLIENT_MAC, LB_MAC, EtherTypes::Ipv4, &l3)
}

/// A whole client→balancer IPv4/TCP frame.
pub fn tcp4_frame(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let l4 = tcp4(src, dst, sport, dport, flags);
    let l3 = ipv4(src, dst, IpNextHeaderProtocols::Tcp, &l4);
    ethernet(CLIENT_MAC, LB_MAC, EtherTypes::Ipv4, &l3)
}

/// A whole client→balancer IPv6/TCP frame.
pub fn tcp6_frame(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let l4 = tcp6(src, dst, sport, dport, flags);
    let l3 = ipv6(src, dst, IpNextHeaderProtocols::Tcp, &l4);
    ethernet(CLIENT_MAC, LB_MAC, EtherTypes::Ipv6, &l3)
}

pub use pnet_packet::tcp::TcpFlags as Flags;

/// Bare TCP SYN flag, re-exported for fixtures.
pub const SYN: u8 = TcpFlags::SYN;

fn udp_bare(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; UDP_HLEN + payload.len()];
    let mut u = MutableUdpPacket::new(&mut buf).expect("buffer fits");
    u.set_source(sport);
    u.set_destination(dport);
    u.set_length((UDP_HLEN + payload.len()) as u16);
    u.payload_mut().copy_from_slice(payload);
    buf
}

fn tcp_bare(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut buf = vec![0u8; TCP_HLEN];
    let mut t = MutableTcpPacket::new(&mut buf).expect("buffer fits");
    t.set_source(sport);
    t.set_destination(dport);
    t.set_sequence(1000);
    t.set_data_offset(5);
    t.set_flags(flags);
    t.set_window(65535);
    buf
}

/// Rewrites the IPv4 header of a frame built here (`f` may change TTL, flags, fragment
/// offset, ...) and recomputes its checksum.
pub fn tweak_ipv4(frame: &mut [u8], f: impl FnOnce(&mut MutableIpv4Packet)) {
    let mut ip = MutableIpv4Packet::new(&mut frame[ETH_HLEN..]).expect("IPv4 frame");
    f(&mut ip);
    ip.set_checksum(0);
    let csum = ipv4::checksum(&ip.to_immutable());
    ip.set_checksum(csum);
}

/// A client→balancer IPv4/TCP frame whose IP header carries `options` (a multiple of 4
/// bytes), so IHL > 5.
pub fn tcp4_frame_with_options(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    options: &[u8],
) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4) && options.len() <= 40);
    let l4 = tcp4(src, dst, sport, dport, SYN);
    let hlen = IPV4_HLEN + options.len();
    let mut buf = vec![0u8; hlen + l4.len()];
    {
        let mut ip = MutableIpv4Packet::new(&mut buf).expect("buffer fits");
        ip.set_version(4);
        ip.set_header_length((hlen / 4) as u8);
        ip.set_total_length((hlen + l4.len()) as u16);
        ip.set_ttl(64);
        ip.set_next_level_protocol(IpNextHeaderProtocols::Tcp);
        ip.set_source(src);
        ip.set_destination(dst);
    }
    buf[IPV4_HLEN..hlen].copy_from_slice(options);
    buf[hlen..].copy_from_slice(&l4);
    let mut ip = MutableIpv4Packet::new(&mut buf).expect("buffer fits");
    let csum = ipv4::checksum(&ip.to_immutable());
    ip.set_checksum(csum);
    ethernet(CLIENT_MAC, LB_MAC, EtherTypes::Ipv4, &buf)
}

/// `frame` with 802.1Q / 802.1ad tags inserted after its MACs, outermost first: each
/// `(tpid, vid)` becomes TPID, TCI (priority 0); the frame's ethertype follows the last.
/// A tagged balancer output is the untagged output with the input's tags inserted.
pub fn tagged(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    for &(tpid, vid) in tags {
        out.extend_from_slice(&tpid.to_be_bytes());
        out.extend_from_slice(&vid.to_be_bytes());
    }
    out.extend_from_slice(&frame[12..]);
    out
}

/// An IPv6 TCP SYN behind extension headers `chain` (types, outermost first), each the
/// smallest one (8 bytes: next header, length 0, a 4-byte PadN option, or zeros).
pub fn tcp6_frame_with_ext(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    chain: &[u8],
) -> Vec<u8> {
    let mut body = tcp6(src, dst, sport, dport, SYN);
    let mut next = IPPROTO_TCP;
    for &kind in chain.iter().rev() {
        let mut h = vec![next, 0, 1, 4, 0, 0, 0, 0];
        h.extend_from_slice(&body);
        body = h;
        next = kind;
    }
    let l3 = ipv6(src, dst, IpNextHeaderProtocol::new(next), &body);
    ethernet(CLIENT_MAC, LB_MAC, EtherTypes::Ipv6, &l3)
}

/// The frame a DSR balancer sends for `input`: same bytes, source MAC = the input's
/// destination MAC, destination MAC = `backend_mac`.
pub fn dsr_output(input: &[u8], backend_mac: [u8; 6]) -> Vec<u8> {
    let mut out = input.to_vec();
    out[6..12].copy_from_slice(&input[0..6]);
    out[0..6].copy_from_slice(&backend_mac);
    out
}

/// What an IPIP balancer sends for the IPv4 `input` frame: Ethernet (source = the
/// input's destination MAC, destination = `backend_mac`), an outer IPv4 header
/// (`src` → `dst`, protocol 4, TTL 64, id 0, no flags, the inner TOS), then the
/// inner IP packet unchanged. The outer checksum is computed by pnet, independently of
/// the data plane.
pub fn ipip4_output(input: &[u8], backend_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let inner = &input[ETH_HLEN..];
    let mut l3 = vec![0u8; IPV4_HLEN + inner.len()];
    let mut ip = MutableIpv4Packet::new(&mut l3).expect("buffer fits");
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_dscp(inner[1] >> 2);
    ip.set_ecn(inner[1] & 3);
    ip.set_total_length((IPV4_HLEN + inner.len()) as u16);
    ip.set_ttl(64);
    ip.set_next_level_protocol(IpNextHeaderProtocols::Ipv4);
    ip.set_source(src);
    ip.set_destination(dst);
    ip.payload_mut().copy_from_slice(inner);
    let csum = ipv4::checksum(&ip.to_immutable());
    ip.set_checksum(csum);
    let our_mac: [u8; 6] = input[0..6].try_into().unwrap();
    ethernet(our_mac, backend_mac, EtherTypes::Ipv4, &l3)
}

/// The IPv6-in-IPv6 twin of [`ipip4_output`]: outer next header 41, hop limit 64.
pub fn ipip6_output(input: &[u8], backend_mac: [u8; 6], src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
    let inner = &input[ETH_HLEN..];
    let mut l3 = ipv6(src, dst, IpNextHeaderProtocols::Ipv6, inner);
    // Keep the inner traffic class, as the balancer does.
    l3[0] = (l3[0] & 0xf0) | (inner[0] & 0x0f);
    l3[1] = (l3[1] & 0x0f) | (inner[1] & 0xf0);
    let our_mac: [u8; 6] = input[0..6].try_into().unwrap();
    ethernet(our_mac, backend_mac, EtherTypes::Ipv6, &l3)
}

/// ICMP echo (request `kind` 8 or reply 0) with id/seq and payload, checksummed by pnet.
pub fn icmp4_echo(kind: u8, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 8 + payload.len()];
    buf[0] = kind;
    buf[4..6].copy_from_slice(&id.to_be_bytes());
    buf[6..8].copy_from_slice(&seq.to_be_bytes());
    buf[8..].copy_from_slice(payload);
    let csum = pnet_packet::icmp::checksum(&pnet_packet::icmp::IcmpPacket::new(&buf).unwrap());
    buf[2..4].copy_from_slice(&csum.to_be_bytes());
    buf
}

/// ICMPv6 echo (request `kind` 128 or reply 129), checksummed by pnet with the
/// pseudo-header of `src` → `dst`.
pub fn icmp6_echo(
    kind: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    id: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut buf = vec![0u8; 8 + payload.len()];
    buf[0] = kind;
    buf[4..6].copy_from_slice(&id.to_be_bytes());
    buf[6..8].copy_from_slice(&seq.to_be_bytes());
    buf[8..].copy_from_slice(payload);
    let packet = pnet_packet::icmpv6::Icmpv6Packet::new(&buf).unwrap();
    let csum = pnet_packet::icmpv6::checksum(&packet, &src, &dst);
    buf[2..4].copy_from_slice(&csum.to_be_bytes());
    buf
}

/// What a GUE balancer sends for the IPv4 `input` frame: like [`ipip4_output`] but the
/// outer protocol is UDP (`sport` → `dport`, checksum 0) carrying the inner IP packet.
pub fn gue4_output(
    input: &[u8],
    backend_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let inner = &input[ETH_HLEN..];
    let udp = gue_udp(inner, sport, dport);
    let mut l3 = vec![0u8; IPV4_HLEN + udp.len()];
    let mut ip = MutableIpv4Packet::new(&mut l3).expect("buffer fits");
    ip.set_version(4);
    ip.set_header_length(5);
    ip.set_dscp(inner[1] >> 2);
    ip.set_ecn(inner[1] & 3);
    ip.set_total_length((IPV4_HLEN + udp.len()) as u16);
    ip.set_ttl(64);
    ip.set_next_level_protocol(IpNextHeaderProtocols::Udp);
    ip.set_source(src);
    ip.set_destination(dst);
    ip.payload_mut().copy_from_slice(&udp);
    let csum = ipv4::checksum(&ip.to_immutable());
    ip.set_checksum(csum);
    let our_mac: [u8; 6] = input[0..6].try_into().unwrap();
    ethernet(our_mac, backend_mac, EtherTypes::Ipv4, &l3)
}

/// The IPv6 twin of [`gue4_output`].
pub fn gue6_output(
    input: &[u8],
    backend_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let inner = &input[ETH_HLEN..];
    let udp = gue_udp(inner, sport, dport);
    let mut l3 = ipv6(src, dst, IpNextHeaderProtocols::Udp, &udp);
    l3[0] = (l3[0] & 0xf0) | (inner[0] & 0x0f);
    l3[1] = (l3[1] & 0x0f) | (inner[1] & 0xf0);
    let our_mac: [u8; 6] = input[0..6].try_into().unwrap();
    ethernet(our_mac, backend_mac, EtherTypes::Ipv6, &l3)
}

fn gue_udp(inner: &[u8], sport: u16, dport: u16) -> Vec<u8> {
    let mut udp = udp_bare(sport, dport, inner);
    // Checksum 0, as the balancer sends it.
    udp[6..8].copy_from_slice(&[0, 0]);
    udp
}

/// The data plane's key of an untagged TCP flow from `src:sport` to `dst:dport`
/// (both addresses of one family).
pub fn tcp_flow(
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    sport: u16,
    dport: u16,
) -> lb_common::FlowKey {
    use lb_userspace::dataplane::addr::be_words;
    let ((src, family), (dst, _)) = (be_words(src), be_words(dst));
    lb_common::FlowKey {
        src,
        dst,
        sport_be: sport.to_be(),
        dport_be: dport.to_be(),
        proto: IPPROTO_TCP,
        family,
        // Not hashed: the VLAN never changes where a flow goes.
        vlan: 0,
    }
}
