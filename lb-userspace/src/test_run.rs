//! `BPF_PROG_TEST_RUN` for XDP programs: run a program on a packet without a NIC and get
//! the verdict and the rewritten packet back. aya 0.14 has no public wrapper for XDP.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

/// `BPF_PROG_TEST_RUN` command number (`enum bpf_cmd`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// Run each iteration on a fresh copy of the frame and really transmit XDP_TX/REDIRECT.
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// The `test` member of `union bpf_attr` (kernel ABI, include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// What one test run returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP verdict (`xdp_action`).
    pub action: u32,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
    /// Mean nanoseconds per iteration as measured by the kernel.
    pub duration_ns: u32,
}

/// Runs `prog` on `packet` `repeat` times (0 and 1 both mean once).
///
/// With `repeat > 1` the kernel does **not** restore the packet between iterations: a
/// program that rewrites it sees its own output from the second iteration on.
pub fn run_xdp(
    prog: &impl AsFd,
    packet: &[u8],
    repeat: u32,
    flags: u32,
) -> io::Result<TestRunOutput> {
    run(prog, packet, repeat, flags, None)
}

/// `struct xdp_md` (kernel ABI) as `ctx_in`: `data`/`data_end` are offsets into the
/// frame; `data_meta`, `rx_queue_index` and `egress_ifindex` must be 0.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

/// [`run_xdp`] once, as if `packet` arrived on `ingress_ifindex` (an interface of the
/// caller's network namespace; without a context the kernel uses its loopback, ifindex 1).
pub fn run_xdp_on(
    prog: &impl AsFd,
    packet: &[u8],
    ingress_ifindex: u32,
) -> io::Result<TestRunOutput> {
    let ctx = XdpMd {
        data_end: packet.len() as u32,
        ingress_ifindex,
        ..Default::default()
    };
    run(prog, packet, 1, 0, Some(&ctx))
}

/// Live frames (`BPF_F_TEST_XDP_LIVE_FRAMES`): `repeat` iterations of `prog`, each on a
/// fresh copy of `frame` arriving on `ingress_ifindex`, with XDP_TX / XDP_REDIRECT really
/// transmitted — a packet generator at XDP speed. The kernel returns no output frame in
/// this mode (it rejects an output buffer), so only success is reported.
pub fn run_xdp_live(
    prog: &impl AsFd,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
) -> io::Result<()> {
    let ctx = XdpMd {
        data_end: frame.len() as u32,
        ingress_ifindex,
        ..Default::default()
    };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_fd().as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        ctx_in: &ctx as *const XdpMd as u64,
        ctx_size_in: size_of::<XdpMd>() as u32,
        repeat,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..Default::default()
    };
    test_run(&mut attr)
}

fn run(
    prog: &impl AsFd,
    packet: &[u8],
    repeat: u32,
    flags: u32,
    ctx: Option<&XdpMd>,
) -> io::Result<TestRunOutput> {
    // Room for encapsulation headers the program may push in front of the frame.
    let mut out = vec![0u8; packet.len() + 256];
    let (ctx_in, ctx_size_in) = ctx.map_or((0, 0), |c| {
        (c as *const XdpMd as u64, size_of::<XdpMd>() as u32)
    });
    let mut attr = TestRunAttr {
        ctx_in,
        ctx_size_in,
        prog_fd: prog.as_fd().as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        flags,
        ..Default::default()
    };
    test_run(&mut attr)?;
    out.truncate(attr.data_size_out as usize);
    Ok(TestRunOutput {
        action: attr.retval,
        packet: out,
        duration_ns: attr.duration,
    })
}

/// The `BPF_PROG_TEST_RUN` syscall on a filled-in `attr`.
fn test_run(attr: &mut TestRunAttr) -> io::Result<()> {
    // SAFETY: attr is a correctly sized, initialised bpf_attr prefix whose pointers
    // (data_in, data_out, ctx_in) the caller keeps alive and sized for the call; the
    // kernel writes at most data_size_out bytes to data_out.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr as *mut TestRunAttr,
            size_of::<TestRunAttr>() as u32,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
