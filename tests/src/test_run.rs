//! XDP programs run on a frame with aya's own `BPF_PROG_TEST_RUN` wrapper
//! ([`aya::TestRun`]), plus the few pieces aya 0.14 leaves to its caller.
//!
//! aya 0.14 covers the syscall itself: `TestRunOptions` carries `data_in`/`data_out`,
//! `ctx_in`/`ctx_out` and `repeat`; `TestRunAttrs::xdp_live_frames(batch_size)` sets
//! `BPF_F_TEST_XDP_LIVE_FRAMES` with the batch size; `TestRunResult` returns the verdict,
//! the kernel-measured duration and the output size. Callers that need no more (timing
//! loops, live frames, an expected error) use it directly. What it lacks, and this module
//! adds:
//! - **the XDP context**: `ctx_in` is raw bytes; aya (and aya-obj's generated bindings)
//!   have no `struct xdp_md`, so a frame "arriving on" an interface (`ingress_ifindex`)
//!   needs the layout spelled out here ([`XdpMd`]);
//! - **the output frame**: aya writes into a caller's buffer and reports
//!   `data_size_out`; the buffer must leave room for headers the program pushes (the
//!   kernel fails the run with `ENOSPC` otherwise), and the frame is the buffer cut to
//!   that size ([`run`], [`run_on`]);
//! - **a second handle**: runs go through a program object (`&Xdp`), never a bare fd,
//!   so a thread or a harness that must not borrow the `Ebpf` opens its own handle on the
//!   loaded program ([`handle`]).

use std::borrow::Cow;

use aya::{
    programs::{ProgramError, Xdp},
    TestRun as _, TestRunOptions,
};
use aya_obj::programs::XdpAttachType;

/// Room for encapsulation headers a program may push in front of the frame.
const HEADROOM: usize = 256;

/// What one run returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpOutput {
    /// The XDP verdict (`xdp_action`).
    pub action: u32,
    /// The frame as the program left it.
    pub packet: Vec<u8>,
}

/// `struct xdp_md` (kernel ABI, include/uapi/linux/bpf.h) as `ctx_in`: `data` and
/// `data_end` are offsets into the frame; `data_meta`, `rx_queue_index` and
/// `egress_ifindex` must be 0 (the kernel rejects anything else).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpMd {
    pub data: u32,
    pub data_end: u32,
    pub data_meta: u32,
    pub ingress_ifindex: u32,
    pub rx_queue_index: u32,
    pub egress_ifindex: u32,
}

impl XdpMd {
    /// A whole `frame` arriving on `ingress_ifindex` (an interface of the calling
    /// thread's network namespace; without a context the kernel uses its loopback).
    pub fn arriving_on(frame: &[u8], ingress_ifindex: u32) -> Self {
        Self {
            data_end: frame.len() as u32,
            ingress_ifindex,
            ..Self::default()
        }
    }

    /// The bytes `ctx_in` points to (six native-endian `u32`s, no padding).
    pub fn to_bytes(self) -> [u8; 24] {
        let fields = [
            self.data,
            self.data_end,
            self.data_meta,
            self.ingress_ifindex,
            self.rx_queue_index,
            self.egress_ifindex,
        ];
        let mut bytes = [0u8; 24];
        for (chunk, field) in bytes.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&field.to_ne_bytes());
        }
        bytes
    }
}

/// Runs `prog` once on `frame` and returns the verdict and the frame it left.
pub fn run(prog: &Xdp, frame: &[u8]) -> Result<XdpOutput, ProgramError> {
    run_with(prog, frame, None)
}

/// [`run`] as if `frame` arrived on `ingress_ifindex` (an interface of the calling
/// thread's network namespace).
pub fn run_on(prog: &Xdp, frame: &[u8], ingress_ifindex: u32) -> Result<XdpOutput, ProgramError> {
    run_with(
        prog,
        frame,
        Some(XdpMd::arriving_on(frame, ingress_ifindex)),
    )
}

fn run_with(prog: &Xdp, frame: &[u8], ctx: Option<XdpMd>) -> Result<XdpOutput, ProgramError> {
    let mut out = vec![0u8; frame.len() + HEADROOM];
    let ctx = ctx.map(XdpMd::to_bytes);
    let result = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: ctx.as_ref().map(<[u8; 24]>::as_slice),
        ..TestRunOptions::new()
    })?;
    out.truncate(result.data_size_out as usize);
    Ok(XdpOutput {
        action: result.return_value,
        packet: out,
    })
}

/// A second handle on the loaded XDP program `prog` (its own fd on the same kernel
/// program), e.g. for a thread running it while the `Ebpf` it came from is borrowed
/// mutably elsewhere.
pub fn handle(prog: &Xdp, name: &'static str) -> Result<Xdp, ProgramError> {
    Xdp::from_program_info(prog.info()?, Cow::Borrowed(name), XdpAttachType::Interface)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_bytes_follow_the_kernel_layout() {
        let ctx = XdpMd::arriving_on(&[0u8; 60], 7).to_bytes();
        let word = |i: usize| u32::from_ne_bytes(ctx[i * 4..i * 4 + 4].try_into().unwrap());
        // data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        assert_eq!((0..6).map(word).collect::<Vec<_>>(), [0, 60, 0, 7, 0, 0]);
    }
}
