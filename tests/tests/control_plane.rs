//! The control plane against the two data-plane ports.
//!
//! - `no_packet_sees_a_half_applied_set`: without root or a kernel. Random reload
//!   sequences go through the real `Balancer` into the in-memory port; after every
//!   single operation of an apply (each table of a batch on its own, as the kernel swaps
//!   them) the packet model decides a fixed set of frames, and each decision must be the
//!   one of the set before the apply or of the set after it. One allowance: an
//!   established flow whose backend leaves the set may, until that backend is removed
//!   at the end of the apply, still go to it under the service's new settings (its
//!   connection is reset either way; removal is the documented "reset").
//! - `both_ports_decide_the_same`: the same operation sequence replayed into the
//!   kernel data plane; every frame gets the same verdict, bytes and counters from the
//!   XDP program (BPF_PROG_TEST_RUN) as from the model over the memory port.

use std::{
    cell::RefCell,
    net::{IpAddr, Ipv4Addr},
    rc::Rc,
};

use lb_common::wire::XDP_TX;
use lb_userspace::{
    balancer::Balancer,
    config::{BackendSpec, EncapSources, MacAddr, Mode, Protocol, ServiceSpec},
    dataplane::memory::{replay, MemoryPort},
};
use testbed::{
    fuzz::{Harness, Rng},
    model::{Expected, Model},
    packet::{self, Flags},
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const ENCAP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const VIPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 0, 0, 100),
    Ipv4Addr::new(10, 0, 0, 101),
    Ipv4Addr::new(10, 0, 0, 102),
];
const PORTS: [u16; 2] = [80, 443];

/// A random service set: each (VIP, port) present or not, DSR or IPIP, drop or pass
/// when empty, with up to 8 backends of one of two address pools (weights 0..=3).
fn random_set(r: &mut Rng) -> Vec<ServiceSpec> {
    let mut specs = Vec::new();
    for vip in VIPS {
        for port in PORTS {
            if !r.chance(60) {
                continue;
            }
            let pool = r.below(2) as u8;
            let backends: Vec<BackendSpec> = (0..r.below(9) as u8)
                .map(|n| {
                    let last = 1 + (r.below(12) as u8);
                    (last, n)
                })
                .collect::<std::collections::BTreeMap<u8, u8>>()
                .into_keys()
                .map(|last| {
                    BackendSpec::new(
                        IpAddr::V4(Ipv4Addr::new(10, 1 + pool, 0, last)),
                        MacAddr([2, 0xbe, 0, 0, pool, last]),
                        r.below(4) as u32,
                    )
                })
                .collect();
            let mode = if r.chance(30) { Mode::Ipip } else { Mode::Dsr };
            let mut spec = ServiceSpec {
                table_size: 31,
                ..ServiceSpec::new(vip.into(), Some(port), Protocol::Tcp, mode, backends)
            };
            if r.chance(30) {
                spec.fallback = lb_userspace::config::Fallback::Pass;
            }
            spec.source_affinity = r.chance(20);
            specs.push(spec);
        }
    }
    specs
}

/// New flows and established-flow packets to every (VIP, port) from a few clients.
fn frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for vip in VIPS {
        for port in PORTS {
            for sport in [40_001u16, 40_002, 40_003, 40_004] {
                out.push(packet::tcp4_frame(CLIENT, vip, sport, port, packet::SYN));
                out.push(packet::tcp4_frame(CLIENT, vip, sport, port, Flags::ACK));
            }
        }
    }
    out
}

/// The operation just performed and every frame's decision right after it.
type Snapshot = (String, Vec<Expected>);

fn decide_all(port: &MemoryPort, frames: &[Vec<u8>]) -> Vec<Expected> {
    let model = Model::new(port.clone());
    frames.iter().map(|f| model.predict(f).expected).collect()
}

/// Runs every frame through the model once, as clients would, so that established
/// flows have connection entries.
fn establish(port: &mut MemoryPort, frames: &[Vec<u8>]) {
    let mut model = Model::new(std::mem::take(port));
    for f in frames {
        model.step(f);
    }
    *port = model.tables;
}

#[test]
fn no_packet_sees_a_half_applied_set() {
    let frames = frames();
    let mut intermediate_states = 0usize;
    for seed in 0..40u64 {
        let mut r = Rng::new(seed);
        let mut port = MemoryPort::new();
        let mut balancer = Balancer::default();
        balancer
            .set_encap_sources(
                &mut port,
                EncapSources {
                    v4: Some(ENCAP.into()),
                    ..EncapSources::default()
                },
            )
            .unwrap();
        let mut old_specs: Vec<ServiceSpec> = Vec::new();
        for step in 0..8 {
            let specs = random_set(&mut r);
            let macs = |set: &[ServiceSpec]| -> std::collections::HashSet<[u8; 6]> {
                set.iter()
                    .flat_map(|s| s.backends.iter().map(|b| b.mac.unwrap_or_default().0))
                    .collect()
            };
            let staying = macs(&specs);
            let leaving: std::collections::HashSet<[u8; 6]> =
                macs(&old_specs).difference(&staying).copied().collect();
            establish(&mut port, &frames);
            let before = decide_all(&port, &frames);
            let seen: Rc<RefCell<Vec<Snapshot>>> = Rc::default();
            {
                let (seen, frames) = (seen.clone(), frames.clone());
                port.observe(move |p, op| {
                    seen.borrow_mut()
                        .push((format!("{op:?}"), decide_all(p, &frames)));
                });
            }
            balancer.apply(&mut port, &specs).unwrap();
            port.observe(|_, _| {});
            let after = decide_all(&port, &frames);
            for (op, decisions) in seen.borrow().iter() {
                intermediate_states += 1;
                for (i, d) in decisions.iter().enumerate() {
                    let to_leaving_backend = d.action == XDP_TX
                        && before[i].action == XDP_TX
                        && d.packet[..6] == before[i].packet[..6]
                        && leaving.contains(&d.packet[..6]);
                    assert!(
                        *d == before[i] || *d == after[i] || to_leaving_backend,
                        "seed {seed} step {step}: after {op:.80}, frame {i} is decided \
                         {d:?}\nbefore the apply: {:?}\nafter it: {:?}",
                        before[i],
                        after[i]
                    );
                }
            }
            old_specs = specs;
        }
    }
    // The property was checked at many points, not vacuously.
    assert!(intermediate_states > 1000, "{intermediate_states}");
}

#[test]
fn both_ports_decide_the_same() {
    let frames = frames();
    let mut h = Harness::new("cp-diff", MemoryPort::new());
    let mut balancer = Balancer::default();
    let mut logged = 0;
    balancer
        .set_encap_sources(
            &mut h.model.tables,
            EncapSources {
                v4: Some(ENCAP.into()),
                ..EncapSources::default()
            },
        )
        .unwrap();
    let mut r = Rng::new(7);
    let mut checked = 0;
    for step in 0..30 {
        let specs = random_set(&mut r);
        balancer.apply(&mut h.model.tables, &specs).unwrap();
        // The same operations, in the same order, into the kernel.
        let ops = h.model.tables.log[logged..].to_vec();
        replay(&ops, &mut h.dp.dp).unwrap();
        logged = h.model.tables.log.len();
        for (i, f) in frames.iter().enumerate() {
            let (outcome, actual, agree) = h.check(f);
            assert!(
                agree,
                "step {step}, frame {i}: the model says {:?}, the kernel did {actual:?}",
                outcome.expected
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 30 * frames.len());
}
