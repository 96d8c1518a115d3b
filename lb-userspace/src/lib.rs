//! xlb control plane library: everything `xlb` does, usable from tests and benchmarks.
//!
//! Layers, bottom to top (docs/architecture.md): a module imports only from layers
//! below it, or beside it where the list says so.
//!
//! 1. [`dataplane`]: the data-plane port ([`dataplane::DataPlane`]) with its kernel
//!    ([`dataplane::aya`]) and in-memory ([`dataplane::memory`]) implementations.
//! 2. [`config`]: the configuration as plain data, and its whole validation.
//! 3. [`balancer`]: service set → data plane (stable ids, apply ordering, Maglev);
//!    beside it [`health`] (checks, rise/fall, drain/reset), [`nexthop`] (backend MACs
//!    learned from the kernel's route and neighbour tables) and [`vrrp`] (protocol,
//!    election, VIPs).
//! 4. [`supervisor`]: config + health + VRRP standby → what the balancer serves;
//!    beside it [`import`] (keepalived.conf → config).
//! 5. [`edges`]: command line, control socket, metrics.

pub mod balancer;
pub mod config;
pub mod dataplane;
pub mod edges;
pub mod health;
pub mod import;
pub mod nexthop;
pub mod supervisor;
pub mod vrrp;

/// The text a panicked task passed to `panic!` (for the log line of a supervisor that
/// restarts it: health checkers, VRRP instances). A crate-root item, below every layer.
pub(crate) fn panic_message(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
