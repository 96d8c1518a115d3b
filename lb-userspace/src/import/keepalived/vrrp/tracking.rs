//! What a `vrrp_instance` tracks: `track_interface` (carried over as xlb's
//! `track_interfaces`, with keepalived's weights turned around) and `track_script`
//! (noted, with the `track_services` that would replace it).

use std::net::IpAddr;

use super::{valid_ifname, Converter, Node};
use crate::config::vrrp::TrackInterface;

/// The `track_interface` blocks as xlb's `track_interfaces`, and the priority that
/// gives the instance keepalived's priority with every interface up.
///
/// keepalived adds a positive weight while the interface is up, subtracts a negative
/// one while it is down, and goes to FAULT (weight 0 or none).
pub(super) fn interfaces(
    c: &mut Converter<'_>,
    tracks: &[Node],
    priority: u8,
) -> (u8, Vec<TrackInterface>) {
    let mut track_interfaces: Vec<(TrackInterface, usize, bool)> = Vec::new();
    let mut raised: u32 = 0;
    let mut first_raised: Option<(usize, String)> = None;
    for n in tracks.iter().flat_map(|b| b.block.iter().flatten()) {
        let Some((t, fault, up_weight)) = interface(c, n) else {
            continue;
        };
        if track_interfaces
            .iter()
            .any(|(o, _, _)| o.interface == t.interface)
        {
            c.note(n.line, &n.keyword, "listed twice: ignored");
            continue;
        }
        raised += up_weight;
        if up_weight > 0 && first_raised.is_none() {
            first_raised = Some((n.line, t.interface.clone()));
        }
        track_interfaces.push((t, n.line, fault));
    }
    let mut priority = priority;
    if raised > 0 && priority < 255 {
        let p = (u32::from(priority) + raised).min(254);
        if let Some((l, interface)) = first_raised {
            c.note(
                l,
                &interface,
                format!(
                    "positive weights: keepalived adds them to the priority while the \
                     interface is up, xlb subtracts the weight while it is down; priority \
                     {priority} + {raised} = {p} written{}, so that the priority with every \
                     interface up is keepalived's",
                    if u32::from(priority) + raised > 254 {
                        " (at most 254)"
                    } else {
                        ""
                    }
                ),
            );
        }
        priority = p as u8;
    }
    let track_interfaces = track_interfaces
        .into_iter()
        .map(|(mut t, l, fault)| {
            if fault {
                t.weight = priority.saturating_sub(1).max(1);
                c.note(
                    l,
                    &t.interface,
                    format!(
                        "no weight (keepalived: FAULT while down, the instance gives up the \
                         addresses): weight {} written, the priority drops to 1 while it is \
                         down and any peer takes over",
                        t.weight
                    ),
                );
            }
            t
        })
        .collect();
    (priority, track_interfaces)
}

/// One `track_interface` line: `IF [weight N [reverse]]`. Returns the entry (weight
/// still to be set when it means FAULT), whether it means FAULT, and the priority a
/// positive weight adds while the interface is up.
fn interface(c: &mut Converter<'_>, n: &Node) -> Option<(TrackInterface, bool, u32)> {
    let k = n.keyword.as_str();
    if !valid_ifname(k) {
        c.note(n.line, k, "not an interface name: not carried over");
        return None;
    }
    let mut weight: i64 = 0;
    let mut args = n.args.iter().map(String::as_str);
    while let Some(a) = args.next() {
        match a {
            "weight" => match args.next().and_then(|w| w.parse::<i64>().ok()) {
                Some(w) if (-254..=254).contains(&w) => weight = w,
                _ => {
                    c.note(
                        n.line,
                        k,
                        "weight not -254..=254: not carried over (keepalived ignores it too)",
                    );
                    return None;
                }
            },
            "reverse" => {
                c.note(
                    n.line,
                    k,
                    "reverse not carried over: xlb lowers the priority while the interface \
                     is down, never while it is up; not tracked",
                );
                return None;
            }
            other => c.note(n.line, k, format!("{other}: ignored")),
        }
    }
    let interface = k.to_owned();
    Some(match weight {
        0 => (
            TrackInterface {
                interface,
                weight: 1,
            },
            true,
            0,
        ),
        w if w < 0 => (
            TrackInterface {
                interface,
                weight: (-w) as u8,
            },
            false,
            0,
        ),
        w => (
            TrackInterface {
                interface,
                weight: w as u8,
            },
            false,
            w as u32,
        ),
    })
}

/// Notes the `track_script` block `n` with the `track_services` that would replace
/// it: the converted services on the instance's `addresses`, with the first script's
/// weight.
pub(super) fn script(
    c: &mut Converter<'_>,
    n: &Node,
    services: &[(IpAddr, String)],
    addresses: &[IpAddr],
    priority: u8,
) {
    let mine: Vec<&str> = services
        .iter()
        .filter(|(vip, _)| addresses.contains(vip))
        .map(|(_, s)| s.as_str())
        .collect();
    let scripts: Vec<&str> = n
        .block
        .iter()
        .flatten()
        .map(|s| s.keyword.as_str())
        .collect();
    // The first script's weight (the track_script line may override it).
    let weight = n
        .block
        .iter()
        .flatten()
        .next()
        .and_then(|s| {
            let own = s
                .args
                .iter()
                .position(|a| a == "weight")
                .and_then(|i| s.args.get(i + 1))
                .and_then(|w| w.parse::<i64>().ok());
            own.or_else(|| c.vrrp_globals.script_weights.get(&s.keyword).copied())
        })
        .unwrap_or(0);
    let weight = match weight.unsigned_abs().min(255) {
        0 => u64::from(priority.saturating_sub(1).max(1)),
        w => w,
    };
    let hint = if mine.is_empty() {
        format!(
            "list the services it protects in `track_services` (`vip:port/proto`, weight \
             {weight})"
        )
    } else {
        format!(
            "for the converted services on this instance's addresses add e.g. \
             \"track_services\": [{}]",
            mine.iter()
                .map(|s| format!("{{\"service\": \"{s}\", \"weight\": {weight}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    c.note(
        n.line,
        "track_script",
        format!(
            "{} not carried over: xlb tracks services with its own health checks instead of \
             scripts; {hint}",
            scripts.join(", ")
        ),
    );
}
