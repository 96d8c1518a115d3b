//! Forwards aya-log records from the data plane into this process's `log`/`tracing`.
//!
//! The logger owns the `AYA_LOGS` ring buffer. It must be created *after* the programs
//! are loaded, or be kept alive until they are: `take_map` moves the map's fd out of the
//! `Ebpf` object, and dropping the logger early closes an fd that the not-yet-loaded
//! program's instructions still reference ("fd N is not pointing to valid bpf_map").

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::unix::AsyncFd;

/// Starts a task that drains the ring buffer whenever it becomes readable. Returns
/// `Ok(false)` when the object has no `AYA_LOGS` map (no log statements compiled in).
pub fn spawn(ebpf: &mut Ebpf) -> anyhow::Result<bool> {
    let logger = match EbpfLogger::init(ebpf) {
        Ok(logger) => logger,
        Err(aya_log::Error::MapNotFound) => return Ok(false),
        Err(e) => return Err(anyhow::Error::new(e).context("starting the eBPF logger")),
    };
    // SAFETY: the logger owns the ring buffer's fd and keeps it open for as long as the
    // AsyncFd (which owns the logger) is registered.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
        .map_err(|e| {
            anyhow::anyhow!("registering the eBPF log ring buffer: {}", e.into_parts().1)
        })?;
    tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::error!(error = %e, "eBPF log reader stopped");
                    return;
                }
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(true)
}
