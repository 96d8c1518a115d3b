//! VRRP adverts handled in XDP: the routers userspace configures (`XLB_VRRP_ROUTERS`) and
//! what the data plane saw of its peers (`XLB_VRRP_SEEN`). Rules: docs/vrrp-xdp.md.

/// Largest prebuilt advertisement frame (Ethernet header included) XDP can send.
pub const VRRP_FRAME_MAX: usize = 256;

/// VRID of the per-interface marker key (VRID 0 is not a valid virtual router id).
pub const VRRP_MARKER_VRID: u8 = 0;

/// `VrrpRouter::state` values.
pub const VRRP_STATE_NOT_MASTER: u8 = 0;
pub const VRRP_STATE_MASTER: u8 = 1;

/// Key of `XLB_VRRP_ROUTERS` and `XLB_VRRP_SEEN`: one virtual router on one interface.
///
/// `vrid` [`VRRP_MARKER_VRID`] with `family` 0 is the interface marker: userspace keeps it
/// in `XLB_VRRP_ROUTERS` while any router is configured on `ifindex` (see
/// [`VrrpKey::marker`]), so XDP can tell "VRRP not used on this interface" (pass
/// untouched) from "unknown VRID" (drop) with one exact hash lookup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VrrpKey {
    /// Receiving interface (`xdp_md.ingress_ifindex`).
    pub ifindex: u32,
    /// Virtual router id, 1..=255; 0 = the interface marker.
    pub vrid: u8,
    /// [`crate::service::AF_INET`] or [`crate::service::AF_INET6`]; 0 in the marker.
    pub family: u8,
    pub _pad: [u8; 2],
}

impl VrrpKey {
    pub const fn new(ifindex: u32, vrid: u8, family: u8) -> Self {
        Self {
            ifindex,
            vrid,
            family,
            _pad: [0; 2],
        }
    }

    /// The marker key of `ifindex`: present while any router is configured there.
    pub const fn marker(ifindex: u32) -> Self {
        Self::new(ifindex, VRRP_MARKER_VRID, 0)
    }

    /// Whether this is an interface marker rather than a virtual router.
    pub const fn is_marker(&self) -> bool {
        self.vrid == VRRP_MARKER_VRID && self.family == 0
    }
}

/// Value of `XLB_VRRP_ROUTERS`: written by userspace, read by XDP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VrrpRouter {
    /// [`VRRP_STATE_MASTER`] or [`VRRP_STATE_NOT_MASTER`].
    pub state: u8,
    /// Our priority (1..=255).
    pub priority: u8,
    /// VRRP version we speak: 2 (IPv4 only) or 3. Adverts of the other version are invalid.
    pub version: u8,
    pub _pad: u8,
    /// Our advertisement interval, centiseconds (informational for the data plane).
    pub adver_int_cs: u16,
    /// Bytes of `frame` to send; 0 (or out of range) = never answer.
    pub frame_len: u16,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) until which XDP may answer as master. The
    /// daemon renews it every advert interval: a daemon that died (SIGKILL, OOM) stops
    /// renewing, and its XDP stops defending a mastership nobody holds any more.
    pub lease_until_ns: u64,
    /// Our primary address on the interface, be32 words (IPv4 in word 0): adverts from it
    /// are never answered.
    pub addr: [u32; 4],
    /// Our complete advertisement Ethernet frame, prebuilt by userspace.
    pub frame: [u8; VRRP_FRAME_MAX],
}

impl Default for VrrpRouter {
    fn default() -> Self {
        Self {
            state: VRRP_STATE_NOT_MASTER,
            priority: 0,
            version: 0,
            _pad: 0,
            adver_int_cs: 0,
            frame_len: 0,
            lease_until_ns: 0,
            addr: [0; 4],
            frame: [0; VRRP_FRAME_MAX],
        }
    }
}

/// Value of `XLB_VRRP_SEEN`: the last valid advert XDP saw for a router, written by XDP,
/// read by the userspace election.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VrrpSeen {
    /// Sender's address, be32 words (IPv4 in word 0). Can be our own `VrrpRouter::addr`
    /// (our advert reflected back): the reader decides.
    pub src: [u32; 4],
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the last valid advert arrived.
    pub last_seen_ns: u64,
    /// Valid adverts seen for this key.
    pub adverts: u64,
    /// `bpf_ktime_get_ns` when XDP last answered one with our advert (0 = never); the
    /// answer rate limit (one per 10 ms per key) reads it.
    pub answered_ns: u64,
    /// The last advert's priority.
    pub priority: u8,
    /// The last advert's version (2 or 3).
    pub version: u8,
    /// The last advert's interval, centiseconds (v2 seconds × 100).
    pub adver_int_cs: u16,
    pub _pad: [u8; 4],
}

/// Minimum time between two answers from XDP for one key (amplification bound).
pub const VRRP_ANSWER_INTERVAL_NS: u64 = 10_000_000;

/// Largest address count XDP validates (bigger adverts are invalid there).
pub const VRRP_MAX_ADDRS: u8 = 16;

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): repr(C), integer and byte-array fields, explicit padding fields leave
    // no implicit padding (sizes 8, 280 and 48 are asserted below), every bit pattern is
    // valid.
    unsafe impl aya::Pod for super::VrrpKey {}
    unsafe impl aya::Pod for super::VrrpRouter {}
    unsafe impl aya::Pod for super::VrrpSeen {}
}

const _: () = {
    assert!(size_of::<VrrpKey>() == 8);
    assert!(size_of::<VrrpRouter>() == 32 + VRRP_FRAME_MAX);
    assert!(size_of::<VrrpSeen>() == 48);
};
