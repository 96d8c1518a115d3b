//! The address lines of a `vrrp_instance`: `virtual_ipaddress` (the addresses xlb adds
//! as master) and `unicast_peer` (where it sends its adverts).

use std::net::IpAddr;

use super::{Converter, Node, MAX_ADDRESSES};

/// One `virtual_ipaddress` line: `IP[/len] [dev IF] [label L] [scope S] ...`.
pub(super) fn vip(c: &mut Converter<'_>, n: &Node, interface: Option<&str>, out: &mut Vec<IpAddr>) {
    let k = n.keyword.as_str();
    let (ip, len) = match k.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (k, None),
    };
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return c.note(n.line, k, "not an IP address: not carried over");
    };
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return c.note(n.line, k, "cannot be a virtual address: not carried over");
    }
    if let Some(first) = out.first() {
        if first.is_ipv4() != ip.is_ipv4() {
            return c.note(
                n.line,
                k,
                format!(
                    "not of the family of {first}: not carried over (xlb instances are IPv4 \
                     or IPv6; write another vrrp_instance for it)"
                ),
            );
        }
    }
    if out.contains(&ip) {
        return c.note(n.line, k, "listed twice: ignored");
    }
    if out.len() == MAX_ADDRESSES {
        return c.note(
            n.line,
            k,
            format!("not carried over: at most {MAX_ADDRESSES} addresses per instance"),
        );
    }
    let full = if ip.is_ipv4() { "32" } else { "128" };
    if let Some(len) = len.filter(|l| *l != full) {
        c.note(
            n.line,
            k,
            format!(
                "/{len} not carried over: xlb adds virtual addresses as /{full} (no subnet \
                 route from them; the host's own address on that subnet provides it)"
            ),
        );
    }
    let mut others = Vec::new();
    let mut args = n.args.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "dev" => match args.next() {
                Some(dev) if Some(dev.as_str()) != interface => c.note(
                    n.line,
                    k,
                    format!(
                        "dev {dev} not carried over: xlb adds every address to the \
                         instance's interface{}",
                        interface.map(|i| format!(" ({i})")).unwrap_or_default()
                    ),
                ),
                _ => {}
            },
            "label" | "scope" | "brd" | "broadcast" | "peer" | "preferred_lft" => {
                others.push(format!("{a} {}", args.next().map_or("", String::as_str)));
            }
            other => others.push(other.to_owned()),
        }
    }
    if !others.is_empty() {
        c.note(
            n.line,
            k,
            format!(
                "{} not carried over: xlb adds a plain address (no label, scope or flags)",
                others.join(", ")
            ),
        );
    }
    out.push(ip);
}

/// The `unicast_peer` block: its usable peers (none: noted, multicast adverts).
pub(super) fn peers(c: &mut Converter<'_>, block: &Node, v4: bool) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for n in block.block.iter().flatten() {
        peer(c, n, v4, &mut out);
    }
    if out.is_empty() {
        c.note(
            block.line,
            "unicast_peer",
            "no usable peer: the instance is written with multicast adverts (224.0.0.18 / \
             ff02::12)",
        );
    }
    out
}

/// One `unicast_peer` line: `IP [min_ttl N] [max_ttl N]`.
fn peer(c: &mut Converter<'_>, n: &Node, v4: bool, out: &mut Vec<IpAddr>) {
    let k = n.keyword.as_str();
    let Ok(ip) = k.parse::<IpAddr>() else {
        return c.note(n.line, k, "not an IP address: not carried over");
    };
    if ip.is_ipv4() != v4 || ip.is_multicast() || ip.is_unspecified() {
        return c.note(
            n.line,
            k,
            "not a unicast address of the instance's family: not carried over",
        );
    }
    if let IpAddr::V6(v6) = ip {
        if !v6.is_unicast_link_local() {
            return c.note(
                n.line,
                k,
                "not carried over: xlb sends and receives IPv6 adverts on link-local \
                 addresses only (RFC 5798); write this peer's fe80:: address",
            );
        }
    }
    if out.contains(&ip) {
        return c.note(n.line, k, "listed twice: ignored");
    }
    if !n.args.is_empty() {
        c.note(
            n.line,
            k,
            format!(
                "{} not carried over: xlb checks the TTL / hop limit is 255 (RFC 5798)",
                n.args.join(" ")
            ),
        );
    }
    out.push(ip);
}
