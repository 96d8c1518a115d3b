//! Benchmark floors: XDP programs `cargo xtask bench` times next to the data plane, built
//! into an object of their own (`testbed::bench::OBJECT`) so that the shipped one carries
//! production programs only.
//!
//! `bench_fib` prices the other way to find a next hop: `bpf_fib_lookup` per packet, as
//! Cilium does, against the learned MAC xlb keeps in the backend record (docs/next-hops.md).
//!
//! `lab_syn_flood` is no floor: it turns one SYN into a stream of spoofed ones for the
//! flood tests (tests/tests/flood_e2e.rs), handing each to a running balancer.
//!
//! `bench_conn` looks flows up in the data plane's own connection table: this object
//! declares `XLB_CONNS` with the production layout, and the bench loader points it at
//! the map the data plane pinned (`testbed::bench::BenchPrograms`), so both time the
//! very same flows in the very same table.
//!
//! `lab_vlan_push` / `lab_vlan_pop` are not floors: the VLAN lab's tagger and untagger
//! (`lab_vlan`), kept in this object so the shipped one holds production programs only.
#![no_std]
#![no_main]

mod lab_vlan;

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action, BPF_FIB_LKUP_RET_SUCCESS},
    btf_maps::{LruHashMap, ProgramArray},
    helpers::{bpf_get_prandom_u32, generated::bpf_fib_lookup},
    macros::btf_map,
    macros::xdp,
    programs::XdpContext,
    EbpfContext as _,
};
use lb_common::{limits::MAX_CONNS, service::AF_INET, Conn, FlowKey};

/// The data plane's connection table (lb-ebpf's `XLB_CONNS`: same name, key, value and
/// size, so the pinned production map can stand in for it).
#[btf_map]
static XLB_CONNS: LruHashMap<FlowKey, Conn, { MAX_CONNS as usize }> = LruHashMap::new();

/// Slot 0: the program [`lab_syn_flood`] hands its frames to (a running balancer).
#[btf_map]
static FLOOD_TARGET: ProgramArray<1> = ProgramArray::new();

const ETH_HLEN: usize = 14;

/// The layouts of lb-ebpf's `EthHdr` and `Ipv4Hdr` (same field types and alignment), so
/// the floors read the packet with the loads the data plane uses.
#[repr(C)]
#[allow(dead_code, reason = "the header's layout matters, not every field")]
struct EthHdr {
    dst: [u8; 6],
    src: [u8; 6],
    ether_type: u16,
}

/// IPv4 header without options; multi-byte fields in network byte order.
#[repr(C)]
#[allow(dead_code, reason = "the header's layout matters, not every field")]
struct Ipv4Hdr {
    ver_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    proto: u8,
    check: u16,
    src: u32,
    dst: u32,
}

/// A pointer to a `T` at `offset` bytes into the packet, if the packet holds it (the
/// bounds check the verifier needs before any access).
#[inline(always)]
fn header<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    if ctx.data() + offset + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((ctx.data() + offset) as *mut T)
}

/// The flow's connection-table entry, if it has one (lb-ebpf's `lookup::conn`).
#[inline(always)]
fn conn(flow: &FlowKey) -> Option<Conn> {
    // SAFETY: LRU values are read by copy right away.
    unsafe { XLB_CONNS.get(flow) }.copied()
}

/// Benchmark floor: the cheapest possible program.
#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Benchmark floor: swap MACs and transmit, the least a forwarder does.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn bench_tx(ctx: XdpContext) -> u32 {
    match header::<EthHdr>(&ctx, 0) {
        Some(eth) => {
            // SAFETY: `header` bounds-checked the Ethernet header.
            let eth = unsafe { &mut *eth };
            core::mem::swap(&mut eth.src, &mut eth.dst);
            xdp_action::XDP_TX
        }
        None => xdp_action::XDP_DROP,
    }
}

/// Benchmark floor of a connection-tracking balancer: one `XLB_CONNS` lookup of the
/// packet's IPv4 5-tuple (IHL 5 assumed, nothing validated), then `bench_tx`'s MAC swap
/// and XDP_TX on a hit (XDP_DROP on a miss, so a benchmark can tell). What `xlb` costs
/// beyond this is its own; this much every balancer that keeps a per-flow table in a
/// BPF hash pays.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn bench_conn(ctx: XdpContext) -> u32 {
    let (Some(eth), Some(ip), Some(ports)) = (
        header::<EthHdr>(&ctx, 0),
        header::<Ipv4Hdr>(&ctx, ETH_HLEN),
        header::<[u16; 2]>(&ctx, ETH_HLEN + size_of::<Ipv4Hdr>()),
    ) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: `header` bounds-checked all three.
    let (eth, ip, ports) = unsafe { (&mut *eth, &*ip, &*ports) };
    let key = FlowKey {
        src: [ip.src, 0, 0, 0],
        dst: [ip.dst, 0, 0, 0],
        sport_be: ports[0],
        dport_be: ports[1],
        proto: ip.proto,
        family: AF_INET,
        vlan: 0,
    };
    if conn(&key).is_none() {
        return xdp_action::XDP_DROP;
    }
    core::mem::swap(&mut eth.src, &mut eth.dst);
    xdp_action::XDP_TX
}

/// The kernel's `AF_INET`, which `bpf_fib_lookup` takes (lb-common's `AF_INET` is xlb's
/// own family tag).
const KERNEL_AF_INET: u8 = 2;

/// Benchmark floor of a per-packet next-hop lookup (Cilium's way): one `bpf_fib_lookup`
/// of the IPv4 destination as forwarded from the ingress interface (route, then
/// neighbour), the MACs it returns written into the frame, XDP_TX. XDP_DROP unless the
/// lookup succeeded, so a benchmark can tell it found a neighbour.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn bench_fib(ctx: XdpContext) -> u32 {
    let (Some(eth), Some(ip)) = (header::<EthHdr>(&ctx, 0), header::<Ipv4Hdr>(&ctx, ETH_HLEN))
    else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: `header` bounds-checked both.
    let (eth, ip) = unsafe { (&mut *eth, &*ip) };
    // SAFETY: all-zero is a valid value of this plain C struct (its unions hold
    // integers only).
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.family = KERNEL_AF_INET;
    fib.l4_protocol = ip.proto;
    fib.__bindgen_anon_1.tot_len = u16::from_be(ip.tot_len);
    fib.__bindgen_anon_2.tos = ip.tos;
    fib.__bindgen_anon_3.ipv4_src = ip.src;
    fib.__bindgen_anon_4.ipv4_dst = ip.dst;
    // SAFETY: the context pointer is the kernel's xdp_md for this run.
    fib.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: `fib` is a live, writable bpf_fib_lookup of the size passed.
    let rc =
        unsafe { bpf_fib_lookup(ctx.as_ptr(), &raw mut fib, size_of::<FibParams>() as i32, 0) };
    if rc != i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        return xdp_action::XDP_DROP;
    }
    eth.dst = fib.dmac;
    eth.src = fib.smac;
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic path, so this is never executed.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Flood generator for the lab: makes the frame (an IPv4 TCP SYN without options to a
/// VIP) the SYN of a new spoofed flow — a random source in 172.16.0.0/12 and a random
/// source port — and tail-calls the program in `FLOOD_TARGET` with it. Run with
/// BPF_PROG_TEST_RUN `repeat` (which does not restore the frame, so each iteration
/// rewrites it): every iteration is one more spoofed SYN through the balancer's real
/// program and tables. The checksums are left stale: the balancer does not check them.
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the #[xdp] ABI hands the context over by value"
)]
pub fn lab_syn_flood(ctx: XdpContext) -> u32 {
    let (Some(ip), Some(ports)) = (
        header::<Ipv4Hdr>(&ctx, ETH_HLEN),
        header::<[u16; 2]>(&ctx, ETH_HLEN + size_of::<Ipv4Hdr>()),
    ) else {
        return xdp_action::XDP_ABORTED;
    };
    // SAFETY: a helper without arguments; both headers are inside the packet (checked
    // by `header`).
    unsafe {
        let (src, sport) = (bpf_get_prandom_u32(), bpf_get_prandom_u32());
        (*ip).src = (0xac10_0000 | (src & 0x000f_ffff)).to_be();
        (*ports)[0] = (sport as u16 | 1024).to_be();
        FLOOD_TARGET.tail_call(&ctx, 0);
    }
    // Only reached if the tail call failed (no target installed).
    xdp_action::XDP_ABORTED
}
