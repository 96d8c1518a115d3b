//! The edges: how operators and other programs reach the daemon. Nothing below this
//! layer imports it.
//!
//! - [`cli`]: the `xlb` command line (clap definitions).
//! - [`control`]: the control socket and what `xlb status/services/backends` show.
//! - [`metrics`]: the opt-in Prometheus endpoint.

pub mod cli;
pub mod control;
pub mod metrics;
