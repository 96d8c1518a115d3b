//! VRRP (RFC 5798 v3 for IPv4/IPv6, RFC 3768 v2 for IPv4) so that a pair of xlb nodes
//! can share virtual addresses without running keepalived beside them.
//!
//! The protocol core ([`packet`], [`state`]) is pure: no sockets, no clock, no
//! netlink, no XDP. That split is deliberate. The protocol's correctness lives in two places that are easy
//! to get subtly wrong and hard to test on a live network: the wire format with its
//! receive checks, and the timer-driven election. Keeping both free of I/O makes every
//! RFC rule a plain unit test with exact bytes and a fake clock, and lets whoever
//! wires it up pick the transport (raw IP socket, `AF_PACKET`, or the XDP program
//! itself) without touching the protocol.
//!
//! - [`packet`]: encode adverts as a VRRP message, an IP packet or an Ethernet frame,
//!   and decode/validate them per RFC 5798 §7.1 / RFC 3768 §7.1 into a typed drop
//!   reason.
//! - [`state`]: the Initialize/Backup/Master state machine of RFC 5798 §6.4 as a
//!   struct fed events and times, answering with actions (send an advert, take or
//!   release the virtual addresses) and the next time it wants to be woken.
//!
//! The I/O lives around it: [`runtime`] (one task per instance) decodes what the socket
//! delivers with [`packet`], hands valid adverts and timer expiries to
//! [`state::VirtualRouter::handle`], and carries out the returned actions with [`net`]
//! (send adverts; add/remove VIPs; gratuitous ARP / unsolicited NA); [`crate::config::vrrp`]
//! is the instances as the config file writes them. docs/vrrp.md has the behaviour and numbers.

pub mod net;
pub mod packet;
pub mod runtime;
pub mod state;

use crate::config::vrrp::VrrpSpec;

impl VrrpSpec {
    /// The protocol version this instance speaks.
    pub fn version(&self) -> packet::Version {
        if self.version == 2 {
            packet::Version::V2
        } else {
            packet::Version::V3
        }
    }
}
