//! Where probes leave from. By default the kernel picks the source address by its
//! routing rules; a check's `source` (keepalived's `bindto`) pins it, for hosts where
//! the address the kernel would pick is one the backends must not see or cannot
//! answer (a VIP, an address of another network, a management address).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr` from `source` (any port), or from the kernel's choice.
pub(crate) async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|e| bind_error(source, &e))?;
    }
    socket.connect(addr).await
}

/// The local address a datagram socket towards `addr` binds to: `source` (any port),
/// or the unspecified address of `addr`'s family.
pub(crate) fn udp_local(addr: SocketAddr, source: Option<IpAddr>) -> SocketAddr {
    let ip = source.unwrap_or(match addr {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    SocketAddr::new(ip, 0)
}

/// Binds a raw socket to `source`, if given.
pub(crate) fn bind_raw(socket: &socket2::Socket, source: Option<IpAddr>) -> io::Result<()> {
    match source {
        Some(source) => socket
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(|e| bind_error(source, &e)),
        None => Ok(()),
    }
}

/// Names the source in the error (EADDRNOTAVAIL alone says nothing about which).
pub(crate) fn bind_error(source: IpAddr, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("binding to source {source}: {e}"))
}
