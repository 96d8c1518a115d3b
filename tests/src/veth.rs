//! veth pairs between two namespaces.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Netns;

static NEXT_VETH: AtomicU64 = AtomicU64::new(0);

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// A veth pair: end `a` lives in one namespace, end `b` in the other, both up.
///
/// There is no Drop: deleting either namespace destroys its end, and a veth end never
/// exists without its peer, so the pair goes away with whichever namespace goes first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethPair {
    /// Name of the end in `ns_a`.
    pub a: String,
    /// Name of the end in `ns_b`.
    pub b: String,
}

impl VethPair {
    /// Creates `xv<pid%10000>n<counter>a` in `ns_a` and its peer `…b` in `ns_b` (which
    /// may be the same namespace) and brings both up.
    ///
    /// The pair is created inside `ns_a` with the peer placed straight into `ns_b`, so
    /// it never appears in the host namespace, not even for a moment; the pid and
    /// counter make the names unique across test processes and threads anyway, which
    /// keeps logs unambiguous.
    pub fn new(ns_a: &Netns, ns_b: &Netns) -> VethPair {
        let n = NEXT_VETH.fetch_add(1, Ordering::Relaxed);
        let stem = format!("xv{}n{n}", std::process::id() % 10_000);
        let (a, b) = (format!("{stem}a"), format!("{stem}b"));
        assert!(
            b.len() <= MAX_IFNAME,
            "veth name {b} is longer than {MAX_IFNAME} bytes"
        );
        ns_a.ip(&[
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            ns_b.name(),
        ]);
        ns_a.link_up(&a);
        ns_b.link_up(&b);
        VethPair { a, b }
    }
}
