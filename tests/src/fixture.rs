//! The two-service DSR fixture the packet tests share (forwarding.rs, swap_table.rs):
//! backends 1..=n at 10.0.1.<id> with MAC 02:be:00:00:00:<id>, and DSR services 1
//! ([`VIP4`]:80/tcp) and 2 ([`vip6`]:80/tcp), both using one Maglev table.

use std::net::{Ipv4Addr, Ipv6Addr};

use lb_common::{
    service::{AF_INET, AF_INET6},
    wire::IPPROTO_TCP,
    Backend, ForwardMode, Service, VipKey,
};
use lb_userspace::dataplane::aya::maps;

use crate::{
    dataplane::TestDataplane,
    packet::{be4, be6},
};

pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
pub const VIP_PORT: u16 = 80;

pub fn vip6() -> Ipv6Addr {
    "fd00::100".parse().unwrap()
}

/// Backend `id`'s next-hop MAC.
pub fn backend_mac(id: u32) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 0, id as u8]
}

/// Installs backends `1..=backends` and both services with `table`.
pub fn install_dsr_pair(dp: &mut TestDataplane, backends: u32, table: &[u32]) {
    let ebpf = dp.dp.ebpf_mut();
    for id in 1..=backends {
        let backend = Backend {
            addr: be4(Ipv4Addr::new(10, 0, 1, id as u8)),
            family: AF_INET,
            mac: backend_mac(id),
            ..Default::default()
        };
        maps::set_backend(ebpf, id, &backend).unwrap();
    }
    for (id, addr, family) in [(1, be4(VIP4), AF_INET), (2, be6(vip6()), AF_INET6)] {
        maps::swap_table(ebpf, id, table).unwrap();
        let key = VipKey {
            addr,
            port_be: VIP_PORT.to_be(),
            proto: IPPROTO_TCP,
            family,
        };
        let svc = Service {
            id,
            mode: ForwardMode::Dsr as u8,
            ..Default::default()
        };
        maps::set_service(ebpf, &key, &svc).unwrap();
    }
}

/// The UDP port of [`install_udp_service`]'s service.
pub const UDP_PORT: u16 = 53;

/// Adds service 3, DSR on VIP4:[`UDP_PORT`]/udp with `table`, to [`install_dsr_pair`]'s.
pub fn install_udp_service(dp: &mut TestDataplane, table: &[u32]) {
    let ebpf = dp.dp.ebpf_mut();
    maps::swap_table(ebpf, 3, table).unwrap();
    let key = VipKey {
        addr: be4(VIP4),
        port_be: UDP_PORT.to_be(),
        proto: lb_common::wire::IPPROTO_UDP,
        family: AF_INET,
    };
    let svc = Service {
        id: 3,
        mode: ForwardMode::Dsr as u8,
        ..Default::default()
    };
    maps::set_service(ebpf, &key, &svc).unwrap();
}

/// Switches both services of [`install_dsr_pair`] to `mode` (IPIP or GUE), the IPv6 one
/// to IPv6 backends `4..=6` (`fd00:1::4..6`, mirroring 1..=3) with table
/// `[4, 5, 6, 4, 5, 6, 4]`. The encap sources and GUE port are the caller's
/// (`XLB_CONFIG`).
pub fn switch_to_encap(dp: &mut TestDataplane, mode: ForwardMode) {
    let ebpf = dp.dp.ebpf_mut();
    for (id, addr, family) in [(1, be4(VIP4), AF_INET), (2, be6(vip6()), AF_INET6)] {
        let key = VipKey {
            addr,
            port_be: VIP_PORT.to_be(),
            proto: IPPROTO_TCP,
            family,
        };
        let svc = Service {
            id,
            mode: mode as u8,
            ..Default::default()
        };
        maps::set_service(ebpf, &key, &svc).unwrap();
    }
    for id in 4..=6u32 {
        let backend = Backend {
            addr: be6(format!("fd00:1::{id}").parse().unwrap()),
            family: AF_INET6,
            mac: backend_mac(id),
            ..Default::default()
        };
        maps::set_backend(ebpf, id, &backend).unwrap();
    }
    maps::swap_table(ebpf, 2, &[4, 5, 6, 4, 5, 6, 4]).unwrap();
}
