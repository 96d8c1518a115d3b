//! keepalived's VRRP part → xlb `vrrp` instances: `vrrp_instance` blocks, the `vrrp_*`
//! settings of `global_defs` they inherit, and notes for the VRRP blocks xlb has no
//! equivalent for (`vrrp_sync_group`, `vrrp_script`, `static_*`, `track_*` at the top
//! level). See docs/keepalived-import.md for the mapping.
//!
//! keepalived's own rules are applied where they decide the result (keepalived 2.x,
//! `vrrp_complete_instance`): the version is 2 unless `vrrp_version`/`version` say
//! otherwise, IPv6 instances are always version 3, a `state MASTER` instance without a
//! `priority` has 255, `nopreempt` and `preempt_delay` are cleared for `state MASTER`
//! (and `preempt_delay` with `nopreempt`), advert intervals are rounded to whole
//! seconds (v2) or 10 ms (v3), authentication is ignored with VRRPv3 and strict mode.

mod addresses;
mod garp;
mod globals;
mod instance;
mod tracking;

pub(super) use globals::{Globals, TOP_LEVEL};
pub(super) use instance::convert as instance;

use super::{seconds_ms, Converter, Node};

/// Most virtual addresses per instance xlb takes (`vrrp::config::validate`).
const MAX_ADDRESSES: usize = 16;

const STRICT_REASON: &str = "not carried over: keepalived's strict mode (no_accept firewall \
     rules, no unicast peers, no authentication, no preempt_delay) has no xlb equivalent; \
     xlb's election follows RFC 5798 and the host accepts traffic to the virtual addresses";

/// Linux interface names (`dev_valid_name`): what can be written as `interface`.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}
