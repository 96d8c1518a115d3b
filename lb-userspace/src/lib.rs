//! xlb control plane library: everything `xlb` does, usable from tests and benchmarks.
//!
//! - [`health`]: health checks (TCP connect, HTTP GET) and the rise/fall state machine.
//! - [`loader`]: load the embedded XDP object, pin maps, attach/detach on interfaces.
//! - [`config`]: the JSON configuration file, validated whole.
//! - [`control`]: the daemon's control socket and what `xlb status/services/backends` show.
//! - [`import`]: convert other balancers' configs (keepalived.conf) into an xlb config.
//! - [`cli`]: the `xlb` command line (clap definitions).
//! - [`bpffs`]: make sure bpffs is mounted and the pin directory exists.
//! - [`maps`]: typed map writes and the atomic Maglev table swap.
//! - [`metrics`]: the opt-in Prometheus endpoint.
//! - [`mmap`]: mappings of mmapable array maps, for atomic in-place writes.
//! - [`services`]: validate a whole service set and apply it (Maglev, stable backend ids).
//! - [`supervisor`]: the daemon's loop state: config + health → what the data plane serves.
//! - [`stats`]: read and sum the per-CPU counters (live or from pins).
//! - [`ebpf_log`]: forward aya-log records from the data plane into `tracing`.
//! - [`vrrp`]: VRRP v2/v3 wire format and election state machine, pure (no I/O).

pub mod bpffs;
pub mod cli;
pub mod config;
pub mod control;
pub mod ebpf_log;
pub mod health;
pub mod import;
pub mod loader;
pub mod maglev;
pub mod maps;
pub mod metrics;
pub mod mmap;
pub mod services;
pub mod stats;
pub mod supervisor;
pub mod vrrp;

/// The XDP object built from `lb-ebpf` by this crate's build script.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));
