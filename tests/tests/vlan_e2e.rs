//! Real TCP through the balancer on tagged frames, end to end (docs/vlans.md): the
//! one-arm testbed with the client's VIP traffic tagged on its way to the lb (one tag or
//! QinQ) and the lb's output untagged on its way to the backends (`testbed::vlan_lab`:
//! this kernel has no `type vlan` links, so tiny XDP programs on the switch ports do it).
//!
//! The service is scoped to the innermost VLAN: an untagged frame would be passed
//! (`vlan_mismatch`), so every connection that succeeds proves the lb received the tags,
//! balanced the frame in a tagged copy, and sent it on with its tags where the untagger
//! expects them (a frame with the tags anywhere else would reach no backend). A service
//! scoped to another VLAN gets nothing through.

use lb_common::{
    wire::{ETH_P_8021AD, ETH_P_8021Q},
    Stat,
};
use lb_userspace::config::{Mode, ServiceSpec};
use testbed::topology::{greet_ephemeral, tally, try_greet, Addresses, Counters, Testbed, V4, V6};

/// Connections per case.
const N: usize = 30;
const DOT1Q: &[(u16, u16)] = &[(ETH_P_8021Q, 10)];
const QINQ: &[(u16, u16)] = &[(ETH_P_8021AD, 100), (ETH_P_8021Q, 20)];

/// `N` connections through a service scoped to the innermost VLAN of `tags`.
fn balance_tagged(tag: &str, mode: Mode, addrs: Addresses, tags: &[(u16, u16)]) {
    let mut tb = Testbed::tagged(tag, mode, addrs, tags);
    let vlan = tags.last().unwrap().1;
    let spec = ServiceSpec {
        vlan: Some(vlan),
        ..tb.spec(&[(0, 1), (1, 1), (2, 1)])
    };
    tb.balancer
        .apply(&mut tb.dp, &[spec])
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let before = tb.counters();
    let vip = tb.vip();
    let greetings: Vec<String> = tb
        .client
        .run(|| (0..N).map(|_| greet_ephemeral(vip).1).collect());
    let delta = tb.settle(&before);
    delta.check(tag, N, N);
    if mode == Mode::Ipip {
        delta.check_decap(tag, &tb.backends);
    }
    let spread = tally(greetings.iter().map(String::as_str));
    assert!(
        spread.len() >= 2,
        "{tag}: {N} connections reached {spread:?}"
    );
    assert_eq!(mismatches(&before, &tb.counters()), 0, "{tag}");
    // Every flow is keyed on the VLAN it arrived on.
    let vlans: Vec<u16> = tb.conns().keys().map(|k| k.unwrap().vlan).collect();
    assert!(
        !vlans.is_empty() && vlans.iter().all(|v| *v == vlan),
        "{tag}: {vlans:?}"
    );
    tb.teardown();
}

fn mismatches(before: &Counters, after: &Counters) -> u64 {
    after.lb.get(Stat::VlanMismatch).packets - before.lb.get(Stat::VlanMismatch).packets
}

#[test]
fn dsr_over_one_tag_v4() {
    balance_tagged("vlan-dsr4", Mode::Dsr, V4, DOT1Q);
}

#[test]
fn dsr_over_qinq_v6() {
    balance_tagged("vlan-dsr6q", Mode::Dsr, V6, QINQ);
}

#[test]
fn ipip_over_qinq_v4() {
    balance_tagged("vlan-ipip4q", Mode::Ipip, V4, QINQ);
}

#[test]
fn ipip_over_one_tag_v6() {
    balance_tagged("vlan-ipip6", Mode::Ipip, V6, DOT1Q);
}

#[test]
fn a_service_on_another_vlan_gets_nothing() {
    let mut tb = Testbed::tagged("vlan-other", Mode::Dsr, V4, DOT1Q);
    let spec = ServiceSpec {
        vlan: Some(11),
        ..tb.spec(&[(0, 1), (1, 1), (2, 1)])
    };
    tb.balancer
        .apply(&mut tb.dp, &[spec])
        .unwrap_or_else(|e| panic!("apply: {e}"));
    let before = tb.counters();
    let vip = tb.vip();
    let result = tb.client.run(|| try_greet(vip, std::time::Duration::ZERO));
    assert!(
        result.is_err(),
        "connected through a service on VLAN 11: {result:?}"
    );
    let after = tb.counters();
    assert!(
        mismatches(&before, &after) > 0,
        "no SYN was passed as vlan_mismatch"
    );
    assert_eq!(
        after.lb.get(Stat::Tx).packets,
        before.lb.get(Stat::Tx).packets,
        "forwarded"
    );
    tb.teardown();
}
