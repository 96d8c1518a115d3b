//! VRRP's I/O: the advert socket, the virtual addresses over netlink, gratuitous ARP
//! and unsolicited neighbour advertisements.
//!
//! - IPv4 adverts go through a raw IP socket of protocol 112 bound to the interface: the
//!   kernel writes the IP header (TTL 255 set on the socket, TOS 0xc0 like keepalived)
//!   and delivers received adverts with their IPv4 header, so [`super::packet`] can
//!   check TTL and checksum itself. Multicast loopback is off: we never hear ourselves.
//! - IPv6 adverts go through a raw IPv6 socket of protocol 112 bound to the interface
//!   and to its link-local address (RFC 5798 §5.1.2.1: the source of an IPv6 advert is
//!   the link-local address). An IPv6 raw socket never delivers the IPv6 header, so the
//!   hop limit and destination come as control messages (`IPV6_RECVHOPLIMIT`,
//!   `IPV6_RECVPKTINFO`) read with `recvmsg`, and the source from its address; the
//!   kernel computes and verifies the checksum (`IPV6_CHECKSUM`, see [`AdvertSocket::open_v6`]).
//! - Virtual addresses are added (/32, /128 `nodad`) and removed with rtnetlink, never by
//!   running `ip`.
//! - Gratuitous ARP is an ARP request for the address from the address itself, and its
//!   IPv6 counterpart an unsolicited neighbour advertisement with the Override flag
//!   (RFC 4861 §7.2.6), both sent as whole frames on an AF_PACKET socket, so switches and
//!   neighbours move the address to our MAC now rather than when their caches expire.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use super::packet::{MULTICAST_V4, MULTICAST_V6, TOS};
use anyhow::{bail, Context, Result};
use futures_util::TryStreamExt;
use lb_common::wire::{ETH_HLEN, ICMPV6_NEIGHBOR_ADVERT, IPPROTO_VRRP, IPV6_HLEN, VRRP_TTL};
use pnet_packet::{
    arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket},
    ethernet::{EtherTypes, MutableEthernetPacket},
    ip::IpNextHeaderProtocols,
    ipv6::MutableIpv6Packet,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};

/// What VRRP needs to know about its interface.
#[derive(Debug, Clone)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
    /// The interface's own IPv4 address: the source of our adverts and our identity in
    /// the election (never one of the virtual addresses).
    pub primary_v4: Option<Ipv4Addr>,
    /// The interface's IPv6 link-local address (fe80::/10): the source of IPv6 adverts
    /// (RFC 5798 §5.1.2.1) and our identity in an IPv6 election.
    pub primary_v6: Option<Ipv6Addr>,
    /// Whether the link is up and running (carrier).
    pub running: bool,
    /// Every address on the interface.
    pub addresses: Vec<IpAddr>,
}

impl Iface {
    /// Whether every one of `addrs` is on the interface (a non-empty list).
    pub fn holds_all(&self, addrs: &[IpAddr]) -> bool {
        !addrs.is_empty() && addrs.iter().all(|a| self.addresses.contains(a))
    }
}

/// Looks `name` up in the current network namespace; `virtual_addrs` are skipped when
/// picking the primary address (a master holds them on the same interface).
pub fn iface(name: &str, virtual_addrs: &[IpAddr]) -> Result<Iface> {
    let index = nix::net::if_::if_nametoindex(name)
        .with_context(|| format!("no interface named {name:?}"))?;
    let mut out = Iface {
        name: name.to_owned(),
        index,
        mac: [0; 6],
        primary_v4: None,
        primary_v6: None,
        running: false,
        addresses: Vec::new(),
    };
    for ifa in nix::ifaddrs::getifaddrs().context("listing interface addresses")? {
        if ifa.interface_name != name {
            continue;
        }
        out.running |= ifa
            .flags
            .contains(nix::net::if_::InterfaceFlags::IFF_RUNNING);
        let Some(addr) = ifa.address else { continue };
        if let Some(link) = addr
            .as_link_addr()
            .and_then(nix::sys::socket::LinkAddr::addr)
        {
            out.mac = link;
        }
        if let Some(v6) = addr.as_sockaddr_in6() {
            let ip = v6.ip();
            out.addresses.push(IpAddr::V6(ip));
            if out.primary_v6.is_none()
                && ip.is_unicast_link_local()
                && !virtual_addrs.contains(&IpAddr::V6(ip))
            {
                out.primary_v6 = Some(ip);
            }
        }
        if let Some(v4) = addr.as_sockaddr_in() {
            let ip = v4.ip();
            out.addresses.push(IpAddr::V4(ip));
            if out.primary_v4.is_none() && !virtual_addrs.contains(&IpAddr::V4(ip)) {
                out.primary_v4 = Some(ip);
            }
        }
    }
    Ok(out)
}

/// The raw socket adverts are sent and received on (IPv4 or IPv6). Held as a tokio
/// `UdpSocket` for its safe, runtime-driven sendto/recvfrom on any datagram-style
/// socket (as `health::icmp` does); nothing UDP happens, it stays `SOCK_RAW`.
pub struct AdvertSocket {
    sock: tokio::net::UdpSocket,
    /// The interface index for IPv6 (the scope of ff02::12); `None` for IPv4.
    v6_scope: Option<u32>,
}

/// One advert as the socket delivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram {
    /// IPv4: the whole IP packet (header included) is `buf[..len]`.
    Ipv4Packet { len: usize },
    /// IPv6: the VRRP message alone is `buf[..len]`; the rest came as ancillary data.
    Ipv6Message {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        len: usize,
    },
}

impl AdvertSocket {
    pub fn open_v4(iface: &Iface) -> Result<AdvertSocket> {
        let primary = iface
            .primary_v4
            .with_context(|| format!("{} has no IPv4 address to send adverts from", iface.name))?;
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )
        .context("opening a raw VRRP socket (needs CAP_NET_RAW)")?;
        s.bind_device(Some(iface.name.as_bytes()))
            .with_context(|| format!("binding the VRRP socket to {}", iface.name))?;
        s.join_multicast_v4_n(&MULTICAST_V4, &InterfaceIndexOrAddress::Index(iface.index))
            .context("joining 224.0.0.18")?;
        s.set_multicast_loop_v4(false)?;
        s.set_multicast_ttl_v4(u32::from(VRRP_TTL))?;
        s.set_ttl_v4(u32::from(VRRP_TTL))?;
        s.set_tos_v4(u32::from(TOS))?;
        s.set_multicast_if_v4(&primary)?;
        s.set_nonblocking(true)?;
        Ok(AdvertSocket {
            sock: tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))?,
            v6_scope: None,
        })
    }

    /// The IPv6 advert socket: raw, next header 112, bound to the interface and to its
    /// link-local address, member of ff02::12 there, hop limit 255 (RFC 5798 §5.1.2.3).
    ///
    /// Checksums: `IPV6_CHECKSUM` = 6 makes the kernel compute the checksum at byte 6
    /// of every message we send and verify it on every message it delivers, over the
    /// IPv6 pseudo-header (RFC 8200 §8.1) with next header = the socket's protocol.
    /// That is exactly the VRRPv3 checksum (RFC 5798 §5.2.8). We need the kernel for it:
    /// the pseudo-header holds the source address, which the kernel picks (we bind the
    /// link-local, but this keeps it right whatever it picks), and a receiver cannot
    /// recompute it without the destination (which we only get as ancillary data).
    /// Linux's raw IPv6 sockets (net/ipv6/raw.c) do this for any protocol once the
    /// option is set (RFC 3542 §3.1; ICMPv6 sockets always do it at offset 2):
    /// `rawv6_push_pending_frames` writes `csum_ipv6_magic(saddr, daddr, len, proto,
    /// sum)` at the offset (whatever the field held), and `rawv6_rcv`/`rawv6_recvmsg`
    /// drop a message whose sum over the pseudo-header and message does not verify, so
    /// such messages never reach [`super::packet::decode_vrrp`]'s own check (it still
    /// runs, and is the one that counts, for IPv4). A message shorter than 8 bytes
    /// cannot hold the field and is dropped by the kernel too.
    pub fn open_v6(iface: &Iface) -> Result<AdvertSocket> {
        let primary = iface.primary_v6.with_context(|| {
            format!(
                "{} has no IPv6 link-local address to send adverts from",
                iface.name
            )
        })?;
        let s = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )
        .context("opening a raw IPv6 VRRP socket (needs CAP_NET_RAW)")?;
        s.bind_device(Some(iface.name.as_bytes()))
            .with_context(|| format!("binding the VRRP socket to {}", iface.name))?;
        // A link-local address is tentative for a moment after the link comes up (DAD);
        // binding it then would fail with EADDRNOTAVAIL. Freebind lets the daemon start
        // during that second (an advert sent meanwhile may fail and is retried on the
        // next interval).
        s.set_freebind_v6(true)?;
        s.bind(&SocketAddrV6::new(primary, 0, 0, iface.index).into())
            .with_context(|| format!("binding the VRRP socket to {primary}%{}", iface.name))?;
        s.join_multicast_v6(&MULTICAST_V6, iface.index)
            .context("joining ff02::12")?;
        s.set_multicast_loop_v6(false)?;
        s.set_multicast_hops_v6(u32::from(VRRP_TTL))?;
        s.set_unicast_hops_v6(u32::from(VRRP_TTL))?;
        s.set_multicast_if_v6(iface.index)?;
        s.set_tclass_v6(u32::from(TOS))?;
        s.set_recv_hoplimit_v6(true)?;
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
            .context("IPV6_RECVPKTINFO")?;
        setsockopt_int(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_CHECKSUM, 6)
            .context("IPV6_CHECKSUM")?;
        s.set_nonblocking(true)?;
        Ok(AdvertSocket {
            sock: tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))?,
            v6_scope: Some(iface.index),
        })
    }

    /// One received advert into `buf`.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        if self.v6_scope.is_none() {
            let (len, _) = self.sock.recv_from(buf).await?;
            return Ok(Datagram::Ipv4Packet { len });
        }
        // Readiness from tokio, the read itself with recvmsg(2): a WouldBlock (also
        // what the kernel answers after dropping a message with a bad checksum)
        // clears the readiness and waits again.
        let fd = self.sock.as_raw_fd();
        self.sock
            .async_io(tokio::io::Interest::READABLE, || recvmsg_v6(fd, buf))
            .await
    }

    /// Sends a VRRP message (no IP header) to `dst` (for IPv6, on our interface).
    pub async fn send(&self, msg: &[u8], dst: IpAddr) -> io::Result<()> {
        let to = match (dst, self.v6_scope) {
            (IpAddr::V6(d), Some(scope)) => SocketAddr::V6(SocketAddrV6::new(d, 0, 0, scope)),
            _ => SocketAddr::new(dst, 0),
        };
        self.sock.send_to(msg, to).await.map(drop)
    }
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length given is its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Room for the two control messages we ask for (in6_pktinfo: 20 bytes, hop limit: an
/// int, each behind a 16-byte header and padded to 8), with margin; u64 for alignment.
const CONTROL_WORDS: usize = 16;

/// One `recvmsg(2)` on the IPv6 advert socket: the message into `buf`, the source from
/// the address, destination and hop limit from the control messages.
fn recvmsg_v6(fd: RawFd, buf: &mut [u8]) -> io::Result<Datagram> {
    // SAFETY (for both): plain C structs for which all-zero bytes are valid values.
    let mut from: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    msg.msg_name = std::ptr::from_mut(&mut from).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in `msg` refers to a live local (or `buf`) of exactly the
    // length stated next to it; the kernel writes at most those lengths.
    let n = unsafe { libc::recvmsg(fd, &raw mut msg, 0) };
    let len = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "advert longer than the receive buffer",
        ));
    }
    if i32::from(from.sin6_family) != libc::AF_INET6 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no IPv6 source address",
        ));
    }
    let used = msg.msg_controllen.min(size_of_val(&control));
    let bytes: Vec<u8> = control.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ctl = parse_control(&bytes[..used]);
    let (Some(dst), Some(hop_limit)) = (ctl.dst, ctl.hop_limit) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no IPV6_PKTINFO / IPV6_HOPLIMIT control message",
        ));
    };
    Ok(Datagram::Ipv6Message {
        src: Ipv6Addr::from(from.sin6_addr.s6_addr),
        dst,
        hop_limit,
        len,
    })
}

/// What the IPv6 control messages of one received message said.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// `IPV6_HOPLIMIT`: the hop limit the packet arrived with.
    pub hop_limit: Option<u8>,
    /// `IPV6_PKTINFO`: the packet's destination address ...
    pub dst: Option<Ipv6Addr>,
    /// ... and the interface it arrived on.
    pub ifindex: Option<u32>,
}

/// Walks the control buffer `recvmsg` filled (`msg_controllen` bytes), the way
/// `CMSG_FIRSTHDR`/`CMSG_NXTHDR`/`CMSG_DATA` do, but over bytes: every header and
/// datum is bounds-checked and read by value, so no unaligned or out-of-bounds pointer
/// is ever formed. Unknown messages are skipped; a truncated one ends the walk.
pub fn parse_control(buf: &[u8]) -> Control {
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; }, each message
    // (header and data) padded to a multiple of size_t.
    const LEN: usize = size_of::<usize>();
    const HDR: usize = size_of::<libc::cmsghdr>();
    let align = |n: usize| n.div_ceil(LEN) * LEN;
    let int = |b: &[u8]| b.try_into().ok().map(i32::from_ne_bytes);
    let mut out = Control::default();
    let mut at = 0;
    while let Some(hdr) = buf.get(at..at + HDR) {
        let Some(cmsg_len) = hdr[..LEN].try_into().ok().map(usize::from_ne_bytes) else {
            break;
        };
        let (level, kind) = (int(&hdr[LEN..LEN + 4]), int(&hdr[LEN + 4..LEN + 8]));
        let Some(data) = cmsg_len
            .checked_sub(align(HDR))
            .and_then(|n| buf.get(at + align(HDR)..at + align(HDR) + n))
        else {
            break;
        };
        if level == Some(libc::IPPROTO_IPV6) {
            match kind {
                Some(libc::IPV6_HOPLIMIT) => {
                    out.hop_limit = data
                        .get(..4)
                        .and_then(int)
                        .and_then(|h| u8::try_from(h).ok());
                }
                Some(libc::IPV6_PKTINFO) => {
                    // struct in6_pktinfo { struct in6_addr ipi6_addr; int ipi6_ifindex; }
                    if let (Some(addr), Some(index)) = (data.get(..16), data.get(16..20)) {
                        out.dst = <[u8; 16]>::try_from(addr).ok().map(Ipv6Addr::from);
                        out.ifindex = index.try_into().ok().map(u32::from_ne_bytes);
                    }
                }
                _ => {}
            }
        }
        at += align(cmsg_len.max(HDR));
    }
    out
}

/// Adds and removes the virtual addresses.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// A netlink connection in the current network namespace (needs a tokio runtime).
    pub fn new() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Adds `addr` as a host address (/32, /128) to `index`; already present is fine.
    ///
    /// An IPv6 address is added with `IFA_F_NODAD` (`ip addr add ... nodad`): with
    /// duplicate address detection it would stay tentative for about a second (one
    /// `RetransTimer` per `dad_transmits`), during which the stack neither accepts
    /// traffic for it nor answers neighbour solicitations, and the new master's
    /// neighbour advertisements would point clients at an address that is not usable
    /// yet. The VRRP election is what guarantees uniqueness here (a backup never holds
    /// the address), which is the same reason keepalived adds its VIPs `nodad`.
    pub async fn add(&self, index: u32, addr: IpAddr) -> Result<()> {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        let mut req = self.handle.address().add(index, addr, prefix);
        if addr.is_ipv6() {
            use rtnetlink::packet_route::address::{
                AddressAttribute, AddressHeaderFlags, CacheInfo,
            };
            // The header's flag byte is enough: the kernel reads IFA_FLAGS when present,
            // ifa_flags otherwise, and rtnetlink's builder sends no IFA_FLAGS.
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
            // Preferred lifetime 0 (valid forever): the VIP answers neighbour
            // solicitations but is never chosen as a source address. As a /128 it would
            // otherwise win source selection towards the backends' subnet, and health
            // checks from it would be answered by the DSR backends to themselves.
            let mut lifetimes = CacheInfo::default();
            lifetimes.ifa_preferred = 0;
            lifetimes.ifa_valid = u32::MAX;
            req.message_mut()
                .attributes
                .push(AddressAttribute::CacheInfo(lifetimes));
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(e) => Err(e).with_context(|| format!("adding {addr} to ifindex {index}")),
        }
    }

    /// Removes `addr` from `index`; absent is fine.
    pub async fn remove(&self, index: u32, addr: IpAddr) -> Result<()> {
        let mut found = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(addr)
            .execute();
        while let Some(msg) = found
            .try_next()
            .await
            .with_context(|| format!("listing addresses of ifindex {index}"))?
        {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
                Err(e) => bail!("removing {addr} from ifindex {index}: {e}"),
            }
        }
        Ok(())
    }
}

/// The gratuitous ARP frame announcing that `ip` is at `mac`.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut frame = vec![0u8; 14 + 28];
    {
        let mut eth = MutableEthernetPacket::new(&mut frame).expect("sized above");
        eth.set_destination([0xff; 6].into());
        eth.set_source(mac.into());
        eth.set_ethertype(EtherTypes::Arp);
    }
    let mut arp = MutableArpPacket::new(&mut frame[14..]).expect("sized above");
    arp.set_hardware_type(ArpHardwareTypes::Ethernet);
    arp.set_protocol_type(EtherTypes::Ipv4);
    arp.set_hw_addr_len(6);
    arp.set_proto_addr_len(4);
    arp.set_operation(ArpOperations::Request);
    arp.set_sender_hw_addr(mac.into());
    arp.set_sender_proto_addr(ip);
    arp.set_target_hw_addr([0; 6].into());
    arp.set_target_proto_addr(ip);
    frame
}

/// All-nodes (RFC 4291 §2.7.1), where unsolicited neighbour advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The Override flag of a neighbour advertisement (R = 0x80, S = 0x40, O = 0x20).
const NA_OVERRIDE: u8 = 0x20;
/// Target link-layer address option (RFC 4861 §4.6.1).
const ND_OPT_TARGET_LL_ADDR: u8 = 2;

/// The unsolicited neighbour advertisement (RFC 4861 §7.2.6) announcing that `target`
/// is at `mac`: from `src` (our link-local address) to all-nodes, hop limit 255,
/// Override set (Router and Solicited clear: we are no router, and nobody asked), with
/// the target link-layer address option, as a whole Ethernet frame.
pub fn unsolicited_na_frame(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    // type, code, checksum, flags + reserved, target, option (type, length in 8 bytes, MAC)
    let mut icmp = vec![ICMPV6_NEIGHBOR_ADVERT, 0, 0, 0, NA_OVERRIDE, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[ND_OPT_TARGET_LL_ADDR, 1]);
    icmp.extend_from_slice(&mac);
    let sum = pnet_packet::util::ipv6_checksum(
        &icmp,
        1,
        &[],
        &src,
        &ALL_NODES,
        IpNextHeaderProtocols::Icmpv6,
    );
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut frame = vec![0u8; ETH_HLEN + IPV6_HLEN + icmp.len()];
    {
        let mut eth = MutableEthernetPacket::new(&mut frame).expect("sized above");
        // 33:33 + the low 32 bits of the group (RFC 2464 §7).
        eth.set_destination([0x33, 0x33, 0, 0, 0, 1].into());
        eth.set_source(mac.into());
        eth.set_ethertype(EtherTypes::Ipv6);
    }
    {
        let mut ip = MutableIpv6Packet::new(&mut frame[ETH_HLEN..]).expect("sized above");
        ip.set_version(6);
        ip.set_payload_length(icmp.len() as u16);
        ip.set_next_header(IpNextHeaderProtocols::Icmpv6);
        ip.set_hop_limit(255);
        ip.set_source(src);
        ip.set_destination(ALL_NODES);
    }
    frame[ETH_HLEN + IPV6_HLEN..].copy_from_slice(&icmp);
    frame
}

/// Every ARP packet arriving on one interface (an `AF_PACKET` socket for ARP), so a
/// master notices another host announcing one of its addresses: a router that was
/// master too (a healed split whose adverts never reached us) has moved clients to its
/// MAC, and only our announcement moves them back.
pub struct ArpWatch {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl ArpWatch {
    pub fn open(index: u32) -> io::Result<ArpWatch> {
        let arp = (libc::ETH_P_ARP as u16).to_be();
        // SAFETY: plain socket(2); checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(arp),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = arp;
        sll.sll_ifindex = i32::try_from(index).map_err(io::Error::other)?;
        // SAFETY: the address is valid for the length given.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a valid descriptor owned by the `AsyncFd` from here on; it is
        // neither replaced nor closed while registered.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd)? };
        Ok(ArpWatch { fd })
    }

    /// The next ARP frame into `buf`; its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            // SAFETY: `buf` is valid for its length; the fd is ours.
            let n = unsafe {
                libc::recv(
                    self.fd.get_ref().as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            match usize::try_from(n) {
                Ok(n) => return Ok(n),
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::WouldBlock {
                        return Err(e);
                    }
                    ready.clear_ready();
                }
            }
        }
    }
}

/// The sender (IPv4 address, MAC) of an Ethernet ARP frame, request or reply.
pub fn arp_sender(frame: &[u8]) -> Option<(Ipv4Addr, [u8; 6])> {
    if frame.get(12..14)? != [0x08, 0x06] {
        return None;
    }
    let arp = frame.get(14..14 + 28)?;
    // Ethernet / IPv4 only.
    if arp[..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    let mac: [u8; 6] = arp[8..14].try_into().ok()?;
    Some((Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]), mac))
}

/// Sends raw Ethernet `frames` out of interface `index` (each frame's own ethertype
/// is its protocol).
pub fn send_frames(index: u32, frames: &[Vec<u8>]) -> io::Result<()> {
    // Protocol 0: a send-only socket, it never queues received frames.
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = i32::try_from(index).map_err(io::Error::other)?;
    sll.sll_halen = 6;
    for frame in frames {
        let Some(ethertype) = frame.get(12..14) else {
            continue;
        };
        // sll_protocol (network order) is the frame's ethertype, as it is on the wire.
        sll.sll_protocol = u16::from_ne_bytes([ethertype[0], ethertype[1]]);
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::from_ref(&sll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_sender_reads_who_claims_an_address() {
        let f = garp_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(
            arp_sender(&f),
            Some((Ipv4Addr::new(10, 0, 0, 100), [2, 0, 0, 0, 0, 1]))
        );
        assert_eq!(arp_sender(&f[..30]), None);
        let mut ipv4 = f.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(arp_sender(&ipv4), None);
    }

    #[test]
    fn garp_is_an_arp_request_for_itself() {
        let f = garp_frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(10, 0, 0, 100));
        assert_eq!(
            f,
            [
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, // ethernet
                0, 1, 0x08, 0x00, 6, 4, 0, 1, // ARP request, Ethernet/IPv4
                2, 0, 0, 0, 0, 1, 10, 0, 0, 100, // sender: us, the address
                0, 0, 0, 0, 0, 0, 10, 0, 0, 100, // target: the address itself
            ]
        );
    }

    #[test]
    fn unsolicited_na_overrides_to_all_nodes() {
        let mac = [2, 0, 0, 0, 0, 1];
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let vip: Ipv6Addr = "fd70::100".parse().unwrap();
        let f = unsolicited_na_frame(mac, src, vip);
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &[0x33, 0x33, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd][..], // ethernet
            &[0x60, 0, 0, 0, 0, 32, 58, 255], // IPv6, payload 32, ICMPv6, hop limit 255
            &src.octets(),
            &ALL_NODES.octets(),
            &[136, 0, 0x57, 0xac], // neighbour advertisement, checksum
            &[0x20, 0, 0, 0], // R=0 S=0 O=1
            &vip.octets(), // target: the VIP
            &[2, 1, 2, 0, 0, 0, 0, 1], // target link-layer address: our MAC
        ]
        .concat();
        assert_eq!(f, want);
        // The checksum verifies over the pseudo-header (RFC 4443 §2.3), computed here
        // independently of pnet.
        let mut words = src.octets().to_vec();
        words.extend_from_slice(&ALL_NODES.octets());
        words.extend_from_slice(&32u32.to_be_bytes());
        words.extend_from_slice(&[0, 0, 0, 58]);
        words.extend_from_slice(&f[54..]);
        let mut sum: u32 = words
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff);
    }

    /// Lays out control messages with libc's own CMSG_* macros, as the kernel does.
    fn control(msgs: &[(i32, i32, &[u8])]) -> Vec<u8> {
        let mut buf = vec![0u64; 32];
        // SAFETY: msghdr is plain data; the macros only walk `buf`, which is large
        // enough for every message written (checked by the assertion below).
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_control = buf.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(buf.as_slice());
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            let mut used = 0;
            for (level, kind, data) in msgs {
                assert!(!cmsg.is_null());
                (*cmsg).cmsg_level = *level;
                (*cmsg).cmsg_type = *kind;
                (*cmsg).cmsg_len = libc::CMSG_LEN(data.len() as u32) as usize;
                std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(cmsg), data.len());
                used += libc::CMSG_SPACE(data.len() as u32) as usize;
                cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
            }
            let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
            bytes[..used].to_vec()
        }
    }

    #[test]
    fn control_messages_give_hop_limit_and_destination() {
        let dst: Ipv6Addr = "ff02::12".parse().unwrap();
        let mut pktinfo = dst.octets().to_vec();
        pktinfo.extend_from_slice(&7u32.to_ne_bytes());
        let buf = control(&[
            (libc::SOL_SOCKET, libc::SO_TIMESTAMP, &[0; 16]), // skipped
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &pktinfo),
            (
                libc::IPPROTO_IPV6,
                libc::IPV6_HOPLIMIT,
                &255i32.to_ne_bytes(),
            ),
        ]);
        assert_eq!(
            parse_control(&buf),
            Control {
                hop_limit: Some(255),
                dst: Some(dst),
                ifindex: Some(7)
            }
        );
        let buf = control(&[(
            libc::IPPROTO_IPV6,
            libc::IPV6_HOPLIMIT,
            &64i32.to_ne_bytes(),
        )]);
        assert_eq!(parse_control(&buf).hop_limit, Some(64));
        assert_eq!(parse_control(&buf).dst, None);
        // Truncated or garbage control data never panics and yields nothing made up
        // (the message ends at CMSG_LEN(4) = 20 bytes; the rest is padding).
        for cut in 0..20 {
            assert_eq!(parse_control(&buf[..cut]).hop_limit, None);
        }
        assert_eq!(parse_control(&[0xff; 40]), Control::default());
        assert_eq!(parse_control(&[]), Control::default());
    }
}
