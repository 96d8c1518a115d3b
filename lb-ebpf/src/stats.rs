//! Per-CPU global counters (`XLB_STATS`): no atomics needed, userspace sums the CPUs.

use aya_ebpf::{bindings::xdp_action, btf_maps::PerCpuArray, macros::btf_map};
use lb_common::{
    limits::{MAX_BACKENDS, MAX_SERVICES},
    Counter, FlowCounter, Stat,
};

#[btf_map]
static XLB_STATS: PerCpuArray<Counter, { Stat::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
static XLB_SERVICE_STATS: PerCpuArray<FlowCounter, { MAX_SERVICES as usize }> = PerCpuArray::new();

#[btf_map]
static XLB_BACKEND_STATS: PerCpuArray<FlowCounter, { MAX_BACKENDS as usize }> = PerCpuArray::new();

/// Counts one forwarded packet for its service and backend.
#[inline(always)]
pub fn count_forward(service_id: u32, backend_id: u32, bytes: u64, new_flow: bool) {
    bump(XLB_SERVICE_STATS.get_ptr_mut(service_id), bytes, new_flow);
    bump(XLB_BACKEND_STATS.get_ptr_mut(backend_id), bytes, new_flow);
}

#[inline(always)]
fn bump(slot: Option<*mut FlowCounter>, bytes: u64, new_flow: bool) {
    if let Some(c) = slot {
        // SAFETY: per-CPU slot, only this program on this CPU writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
            (*c).new_flows += u64::from(new_flow);
        }
    }
}

#[inline(always)]
pub fn count(stat: Stat, bytes: u64) {
    if let Some(c) = XLB_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, only this program on this CPU writes it.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}

#[inline(always)]
pub fn count_verdict(action: u32, bytes: u64) {
    let stat = match action {
        xdp_action::XDP_PASS => Stat::Pass,
        xdp_action::XDP_DROP => Stat::Drop,
        xdp_action::XDP_TX => Stat::Tx,
        xdp_action::XDP_REDIRECT => Stat::Redirect,
        _ => Stat::Aborted,
    };
    count(stat, bytes);
}
