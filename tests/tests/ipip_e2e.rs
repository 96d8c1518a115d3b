//! Real TCP through the XDP balancer in IPIP mode (LVS "TUN"), end to end, with our own
//! decapsulation on the backends (this kernel has no `ipip` module).
//!
//! ```text
//!   client  .1   ──┐
//!   lb      .2   ──┤   xlb (native) on the lb's veth, xlb_pass on its switch-side peer
//!   be1     .11  ──┤ br0 (in the `switch` namespace)
//!   be2     .12  ──┤   xlb_decap (native) on each backend's veth, from the backend's
//!   be3     .13  ──┘   own data plane (own maps and counters)
//! ```
//!
//! The client routes the VIP via the lb. The lb's XDP program picks a backend and wraps
//! the packet in an outer header from the lb's address (the configured encap source) to
//! the backend's, sending it back out of the same veth (XDP_TX). On the backend,
//! `xlb_decap` strips the outer header and passes the inner packet, still from the client
//! to the VIP, to the local stack, which owns the VIP on `lo`. The backend answers the
//! client directly from the VIP (direct server return).
//!
//! Every packet count is checked three ways: segments the client's TCP sent, packets
//! the lb encapsulated and sent (`tx`), and segments the backends' TCP received; and per
//! backend, packets its decap program unwrapped against segments its TCP received.
//!
//! Both address families: IPv4-in-IPv4 on 10.50.0.0/24 and IPv6-in-IPv6 on fd00:50::/64
//! (real neighbour discovery through the bridge, `nodad` addresses, VIP on `lo`).

use std::{collections::HashSet, time::Instant};

use lb_common::Stat;
use lb_userspace::{balancer::maglev, config::Mode};
use testbed::topology::{greet_ephemeral, tally, Addresses, Testbed, V4, V6};

/// Connections per test.
const N: usize = 1000;

#[test]
fn ipip4_spreads_real_tcp_connections_by_weight_through_decap() {
    spreads_by_weight("ipip4", V4);
}

#[test]
fn ipip6_spreads_real_tcp_connections_by_weight_through_decap() {
    spreads_by_weight("ipip6", V6);
}

/// 1,000 graceful connections to a 1:1:2 IPIP service: all succeed, each goes where the
/// live Maglev table says, the spread follows the weights, every client segment is
/// encapsulated once and unwrapped once by the backend that received it.
fn spreads_by_weight(tag: &str, addrs: Addresses) {
    let start = Instant::now();
    let mut tb = Testbed::new(tag, Mode::Ipip, addrs);
    // be3 gets twice the weight of be1 and be2: shares 1/4, 1/4, 1/2.
    let report = tb.apply(&[(0, 1), (1, 1), (2, 2)]);
    assert_eq!(report.backends_added, 3, "{report:?}");
    let table = tb.live_table();
    assert_eq!(table.len(), maglev::DEFAULT_TABLE_SIZE as usize);

    // The decap programs see nothing but what the lb sends them, plus ARP/ND: before
    // any connection, nothing was unwrapped.
    let before = tb.counters();
    for (b, stats) in tb.backends.iter().zip(&before.decap) {
        assert_eq!(stats.get(Stat::Decap).packets, 0, "{}: {stats:?}", b.name);
    }
    let vip = tb.vip();
    let t = Instant::now();
    let flows: Vec<(u16, String)> = tb
        .client
        .run(|| (0..N).map(|_| greet_ephemeral(vip)).collect());
    let elapsed = t.elapsed();
    let delta = tb.settle(&before);

    // Every connection reached a backend and got its greeting and EOF (else a panic
    // above). The kernel chose N distinct ports: N new flows for the data plane.
    let ports: HashSet<u16> = flows.iter().map(|(p, _)| *p).collect();
    assert_eq!(ports.len(), N, "source ports were reused");
    delta.check(tag, N, N);
    delta.check_decap(tag, &tb.backends);

    // Each flow went exactly where the live table sends it.
    let wrong: Vec<String> = flows
        .iter()
        .filter(|(port, id)| tb.predict(&table, *port) != id)
        .map(|(port, id)| format!(":{port} → {id}, table says {}", tb.predict(&table, *port)))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} flows off the table: {wrong:?}",
        wrong.len()
    );

    // The spread follows the weights.
    let counts = tally(flows.iter().map(|(_, id)| id.as_str()));
    let decapped: Vec<(&str, u64)> = tb
        .backends
        .iter()
        .zip(&delta.decap)
        .map(|(b, d)| (b.name, *d))
        .collect();
    eprintln!(
        "{tag}: weighted 1:1:2, {N} connections in {elapsed:?}: {counts:?}; packets: client \
         sent {}, lb encapsulated {}, backends received {}; unwrapped per backend {decapped:?}",
        delta.client_sent, delta.tx, delta.backends_received
    );
    // The servers saw the real client address: the inner packet is the client's own,
    // only wrapped for the trip.
    tb.assert_spread_1_1_2(&table, &counts, N, addrs.client);
    let accepted = tb.accepted();
    // Each backend unwrapped at least one packet per connection it accepted, three
    // really (handshake ACK, FIN, last ACK): the return path did not go through the lb.
    for (i, b) in tb.backends.iter().enumerate() {
        assert!(
            delta.decap[i] >= 3 * accepted[b.name],
            "{}: {} unwrapped for {} connections",
            b.name,
            delta.decap[i],
            accepted[b.name]
        );
    }
    tb.teardown();
    eprintln!("{tag}: {:?}", start.elapsed());
}

#[test]
fn ipip4_path_mtu_discovery_converges_for_a_1_mib_upload() {
    pmtud_upload("pmtu4", V4, Stat::IcmpTooBigSentV4);
}

#[test]
fn ipip6_path_mtu_discovery_converges_for_a_1_mib_upload() {
    pmtud_upload("pmtu6", V6, Stat::IcmpTooBigSentV6);
}

/// A real TCP client behind a 1500-byte path uploads 1 MiB through the IPIP service: its
/// full-size segments do not fit the lb's 1500-byte egress once wrapped, so the lb
/// answers with frag-needed / packet-too-big (docs/mtu.md), the client's TCP lowers its
/// segment size, and the whole upload reaches the backend intact. Without the answers
/// the segments vanish at the lb and the upload stalls (a PMTUD black hole).
fn pmtud_upload(tag: &str, addrs: Addresses, answered: Stat) {
    use std::{
        io::{Read, Write},
        net::{Shutdown, TcpStream},
        time::Duration,
    };
    const SIZE: usize = 1 << 20;
    let mut tb = Testbed::new(tag, Mode::Ipip, addrs);
    tb.apply(&[(0, 1), (1, 1), (2, 1)]);
    // Deterministic, non-repeating-per-segment content.
    let data: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let before = tb.counters();
    let vip = tb.vip();
    let (backend, sent) = tb.client.run(|| {
        let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("connect {vip}: {e}"));
        // Generous for a shared 2-core machine; a black hole never finishes.
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut greeting = [0u8; 16];
        let n = s.read(&mut greeting).expect("greeting");
        let backend = String::from_utf8_lossy(&greeting[..n]).trim().to_string();
        s.write_all(&data)
            .unwrap_or_else(|e| panic!("writing 1 MiB through the IPIP service: {e}"));
        s.shutdown(Shutdown::Write).unwrap();
        // The server closes after reading everything.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (backend, data.len())
    });
    let index = tb
        .index_of(&backend)
        .unwrap_or_else(|| panic!("greeted by unknown backend {backend:?}"));
    let want = (
        sent as u64,
        testbed::servers::fnv1a(testbed::servers::FNV_OFFSET, &data),
    );
    let server = &tb.servers[index];
    assert!(
        testbed::dataplane::wait_until(Duration::from_secs(10), || server
            .received()
            .contains(&want)),
        "{backend} received {:?}, want {want:?}",
        server.received()
    );
    let after = tb.counters();
    let answers = after.lb.get(answered).packets - before.lb.get(answered).packets;
    assert!(answers >= 1, "no {} counted", answered.name());
    assert_eq!(
        after.lb.get(Stat::EncapTooBig).packets,
        before.lb.get(Stat::EncapTooBig).packets
    );
    tb.teardown();
}
