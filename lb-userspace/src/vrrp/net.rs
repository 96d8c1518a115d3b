//! VRRP's I/O: the advert socket, the virtual addresses over netlink, gratuitous ARP.
//!
//! - Adverts go through a raw IP socket of protocol 112 bound to the interface: the
//!   kernel writes the IP header (TTL 255 set on the socket, TOS 0xc0 like keepalived)
//!   and delivers received adverts with their IPv4 header, so [`super::packet`] can
//!   check TTL and checksum itself. Multicast loopback is off: we never hear ourselves.
//! - Virtual addresses are added (/32) and removed with rtnetlink, never by running `ip`.
//! - Gratuitous ARP is an ARP request for the address from the address itself, sent on
//!   an AF_PACKET socket, so switches and neighbours move the address to our MAC now
//!   rather than when their caches expire.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use super::packet::{IPPROTO_VRRP, MULTICAST_V4, TOS};
use anyhow::{bail, Context, Result};
use futures_util::TryStreamExt;
use pnet_packet::{
    arp::{ArpHardwareTypes, ArpOperations, MutableArpPacket},
    ethernet::{EtherTypes, MutableEthernetPacket},
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
            out.addresses.push(IpAddr::V6(v6.ip()));
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

/// The raw socket adverts are sent and received on (IPv4). Held as a tokio
/// `UdpSocket` for its safe, runtime-driven sendto/recvfrom on any datagram-style
/// socket (as `health::icmp` does); nothing UDP happens, it stays `SOCK_RAW`.
pub struct AdvertSocket {
    sock: tokio::net::UdpSocket,
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
        s.set_multicast_ttl_v4(255)?;
        s.set_ttl_v4(255)?;
        s.set_tos_v4(u32::from(TOS))?;
        s.set_multicast_if_v4(&primary)?;
        s.set_nonblocking(true)?;
        Ok(AdvertSocket {
            sock: tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))?,
        })
    }

    /// One received IP packet (header included).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv_from(buf).await.map(|(n, _)| n)
    }

    /// Sends a VRRP message (no IP header) to `dst`.
    pub async fn send(&self, msg: &[u8], dst: IpAddr) -> io::Result<()> {
        self.sock
            .send_to(msg, SocketAddr::new(dst, 0))
            .await
            .map(drop)
    }
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
    pub async fn add(&self, index: u32, addr: IpAddr) -> Result<()> {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        match self
            .handle
            .address()
            .add(index, addr, prefix)
            .execute()
            .await
        {
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

/// Sends raw Ethernet `frames` out of interface `index`.
pub fn send_frames(index: u32, frames: &[Vec<u8>]) -> io::Result<()> {
    let proto = (libc::ETH_P_ARP as u16).to_be();
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid starting value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = i32::try_from(index).map_err(io::Error::other)?;
    sll.sll_halen = 6;
    sll.sll_addr[..6].fill(0xff);
    for frame in frames {
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
}
