//! Testbed for xlb integration tests on the real kernel.
//!
//! Everything here builds small, throw-away network topologies out of network
//! namespaces ([`Netns`]), veth pairs ([`VethPair`]) and bridges, plus simple servers
//! ([`TcpServer`], [`UdpServer`], [`HttpServer`]) that live inside those namespaces.
//!
//! Safety rules the whole crate follows:
//! - traffic only ever flows between addresses inside namespaces the tests created; no
//!   host interface is touched (veths are created inside the test namespaces, never in
//!   the host namespace, even transiently);
//! - everything is torn down on drop, also while unwinding from a panic, and
//!   [`sweep_stale`] removes what a killed test process left behind.
//!
//! Helpers panic with a descriptive message instead of returning `Result`: a failing
//! setup step should fail the test right there.
//!
//! Test and benchmark tooling that `xlb` does not ship lives here too: [`test_run`]
//! (XDP runs through aya's `BPF_PROG_TEST_RUN`), [`verifier`] (the verifier's
//! statistics of loaded programs) and [`bench`] (the benchmark floors' object).

pub mod bench;
pub mod capture;
pub mod case;
pub mod dataplane;
mod ethtool;
pub mod fixture;
pub mod fuzz;
pub mod lab;
pub mod model;
mod netns;
pub mod packet;
mod process;
pub mod servers;
mod sweep;
pub mod test_run;
pub mod topology;
pub mod verifier;
mod veth;
pub mod vlan_lab;
pub mod vrrp_lab;

pub use netns::Netns;
pub use process::ChildGuard;
pub use servers::{HttpServer, TcpServer, UdpResponder, UdpServer};
pub use sweep::sweep_stale;
pub use veth::VethPair;

/// Prefix of every namespace this crate creates; [`sweep_stale`] relies on it.
pub const NETNS_PREFIX: &str = "xlbt-";

/// Panics with an explanation unless the process runs as root.
///
/// Namespaces, veths and XDP programs all need `CAP_SYS_ADMIN`/`CAP_NET_ADMIN`; failing
/// early gives a clearer message than a failing `ip netns add`.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!(
            "these tests create network namespaces and need root (euid is {}); \
             run them as root, e.g. `sudo -E cargo test -p xlb-tests`",
            nix::unistd::geteuid()
        );
    }
}
