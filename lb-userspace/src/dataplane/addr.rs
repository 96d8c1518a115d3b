//! Addresses and service keys as the data plane stores them (network-order words and a
//! family tag), and how operators read them back.

use std::net::IpAddr;

use lb_common::{
    service::{AF_INET, AF_INET6},
    wire::{IPPROTO_TCP, IPPROTO_UDP},
    VipKey,
};

/// An address as the data plane stores it: network-order words and a family tag.
pub fn be_words(addr: IpAddr) -> ([u32; 4], u8) {
    match addr {
        IpAddr::V4(a) => ([u32::from_ne_bytes(a.octets()), 0, 0, 0], AF_INET),
        IpAddr::V6(a) => {
            let o = a.octets();
            (
                std::array::from_fn(|i| {
                    u32::from_ne_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]])
                }),
                AF_INET6,
            )
        }
    }
}

/// The inverse of [`be_words`]; `None` for an unknown family tag.
pub fn ip_from_words(words: [u32; 4], family: u8) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::from(words[0].to_ne_bytes())),
        AF_INET6 => {
            let mut o = [0u8; 16];
            for (chunk, w) in o.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::from(o))
        }
        _ => None,
    }
}

/// `vip:port/proto` as operators write it (`[v6]:port/proto`, port `*` for all ports).
pub fn describe_vip(key: &VipKey) -> String {
    let addr = ip_from_words(key.addr, key.family).map_or_else(|| "?".into(), |a| a.to_string());
    let port = match u16::from_be(key.port_be) {
        0 => "*".to_owned(),
        p => p.to_string(),
    };
    let proto = match key.proto {
        IPPROTO_TCP => "tcp".to_owned(),
        IPPROTO_UDP => "udp".to_owned(),
        p => p.to_string(),
    };
    if key.family == AF_INET6 {
        format!("[{addr}]:{port}/{proto}")
    } else {
        format!("{addr}:{port}/{proto}")
    }
}
