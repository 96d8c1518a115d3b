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

use std::net::IpAddr;

use super::{seconds_ms, split_command, Converter, Node};
use crate::config::vrrp::{Garp, TrackInterface, VrrpSpec};

/// Most virtual addresses per instance xlb takes (`config::vrrp::validate`).
const MAX_ADDRESSES: usize = 16;

/// The `vrrp_*` settings of `global_defs` (and `default_interface`) instances inherit.
#[derive(Clone, Debug, Default)]
pub(super) struct Globals {
    version: Option<u8>,
    strict: bool,
    default_interface: Option<String>,
    garp_repeat: Option<u32>,
    garp_interval_ms: Option<u64>,
    gna_interval_ms: Option<u64>,
    /// `vrrp_script` weights by name (keepalived's default 0: FAULT when it fails).
    script_weights: std::collections::HashMap<String, i64>,
}

const STRICT_REASON: &str = "not carried over: keepalived's strict mode (no_accept firewall \
     rules, no unicast peers, no authentication, no preempt_delay) has no xlb equivalent; \
     xlb's election follows RFC 5798 and the host accepts traffic to the virtual addresses";

fn garp_delay_reason(seconds: &str) -> String {
    format!(
        "not carried over: keepalived repeats the gratuitous ARPs {seconds} s after becoming \
         master; xlb sends its garp.repeat announcements garp.delay_ms apart at once (and \
         again when the link comes back), with no second round. For a slow switch raise \
         garp.delay_ms"
    )
}

const GARP_REFRESH_REASON: &str = "not carried over: xlb does not refresh gratuitous ARPs \
     periodically while master (only after becoming master and when the link comes back)";

/// Linux interface names (`dev_valid_name`): what can be written as `interface`.
fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
}

/// Seconds (fractions allowed) as ms, at most `max_ms`.
fn interval_ms(arg: Option<&str>, max_ms: u64) -> Option<u64> {
    arg.and_then(seconds_ms).filter(|ms| *ms <= max_ms)
}

impl Converter<'_> {
    /// A `vrrp_*` (or VRRP-related) child of `global_defs`; false if it is none.
    pub(super) fn vrrp_global(&mut self, n: &Node) -> bool {
        let arg = n.args.first().map(String::as_str);
        let k = n.keyword.as_str();
        let g = &mut self.vrrp_globals;
        match k {
            "vrrp_version" => match arg {
                Some("2") => g.version = Some(2),
                Some("3") => g.version = Some(3),
                _ => self.note(n.line, k, "not 2 or 3: ignored (keepalived's default is 2)"),
            },
            "vrrp_strict" => {
                g.strict = true;
                self.note(n.line, k, STRICT_REASON);
            }
            "default_interface" => match arg {
                Some(i) if valid_ifname(i) => g.default_interface = Some(i.to_owned()),
                _ => self.note(n.line, k, "not an interface name: ignored"),
            },
            "vrrp_garp_master_repeat" => match arg.and_then(|a| a.parse::<u32>().ok()) {
                Some(r) => g.garp_repeat = Some(r),
                None => self.note(n.line, k, "not a number: ignored"),
            },
            "vrrp_garp_interval" | "vrrp_gna_interval" => match interval_ms(arg, 10_000) {
                Some(ms) if k == "vrrp_garp_interval" => g.garp_interval_ms = Some(ms),
                Some(ms) => g.gna_interval_ms = Some(ms),
                None => self.note(
                    n.line,
                    k,
                    "not a number of seconds up to 10 (xlb's garp.delay_ms limit): ignored",
                ),
            },
            "vrrp_garp_master_delay" => {
                if arg.and_then(seconds_ms).is_some_and(|ms| ms > 0) {
                    let reason = garp_delay_reason(arg.unwrap_or_default());
                    self.note(n.line, k, reason);
                }
            }
            "vrrp_garp_master_refresh" | "vrrp_garp_master_refresh_repeat" => {
                if arg.is_some_and(|a| a != "0") {
                    self.note(n.line, k, GARP_REFRESH_REASON);
                }
            }
            k if k.starts_with("vrrp_") => self.list_all(
                n,
                "VRRP global setting: no xlb equivalent (xlb's VRRP settings are per \
                 instance, docs/vrrp.md)",
            ),
            _ => return false,
        }
        true
    }

    /// A top-level VRRP block other than `vrrp_instance`; false if `node` is none.
    pub(super) fn vrrp_top_level(&mut self, node: &Node) -> bool {
        let k = node.keyword.as_str();
        let name = node.args.first().map_or("", String::as_str);
        let reason = match k {
            "vrrp_sync_group" => {
                let members: Vec<&str> = node
                    .block
                    .iter()
                    .flatten()
                    .filter(|n| n.keyword == "group")
                    .flat_map(|n| n.block.iter().flatten())
                    .map(|n| n.keyword.as_str())
                    .collect();
                format!(
                    "{name} ({}) not carried over: xlb has no sync groups, each instance is \
                     elected on its own and they may be master on different hosts (give them \
                     the same priorities and tracking so that they move together). Its \
                     notify and track settings are not carried over either",
                    members.join(", ")
                )
            }
            "vrrp_script" => {
                let weight = node
                    .block
                    .iter()
                    .flatten()
                    .find(|n| n.keyword == "weight")
                    .and_then(|n| n.args.first())
                    .and_then(|w| w.parse::<i64>().ok())
                    .unwrap_or(0);
                self.vrrp_globals
                    .script_weights
                    .insert(name.to_owned(), weight);
                let script = node
                    .block
                    .iter()
                    .flatten()
                    .find(|n| n.keyword == "script")
                    .map(|n| n.args.join(" "))
                    .unwrap_or_default();
                format!(
                    "{name} ({script}) not carried over: xlb lowers an instance's priority \
                     by its own health checks instead of scripts: `track_services` (a \
                     service with no usable backend) and `track_interfaces`"
                )
            }
            "vrrp_track_process" | "track_process" | "track_file" | "vrrp_track_file"
            | "track_bfd" | "bfd_instance" => format!(
                "{name} not carried over: xlb tracks services (track_services) and \
                 interfaces (track_interfaces) only"
            ),
            "static_ipaddress" | "static_routes" | "static_rules" => {
                "not carried over: xlb does not manage static addresses, routes or rules; \
                 configure them with the host's network configuration"
                    .to_owned()
            }
            "garp_group" => "not carried over: xlb's gratuitous ARPs are per instance \
                 (garp.repeat, garp.delay_ms)"
                .to_owned(),
            "linkbeat_use_polling" => {
                "not needed: xlb follows carrier changes through netlink".to_owned()
            }
            k if k.starts_with("vrrp_") || k.starts_with("track_") || k.starts_with("static_") => {
                "unknown VRRP keyword: not carried over".to_owned()
            }
            _ => return false,
        };
        self.note(node.line, k, reason);
        true
    }

    /// One `vrrp_instance` as a [`VrrpSpec`], or `None` (noted: why it is skipped).
    /// `services` are the converted services as (VIP, `vip:port/proto`).
    pub(super) fn vrrp_instance(
        &mut self,
        node: &Node,
        services: &[(IpAddr, String)],
    ) -> Option<VrrpSpec> {
        let line = node.line;
        let skip = |c: &mut Self, why: String| {
            c.note(line, "vrrp_instance", format!("{why}; skipped"));
            None
        };
        let name = match node.args.as_slice() {
            [name] if name.len() <= 64 => name.clone(),
            [name] => return skip(self, format!("{name}: xlb names are 1..=64 characters")),
            [] => return skip(self, "needs a name".into()),
            _ => {
                return skip(
                    self,
                    "needs exactly one name (keepalived skips it too)".into(),
                )
            }
        };
        let Some(body) = &node.block else {
            return skip(self, format!("{name}: no {{ }} block"));
        };
        // Notes about the instance's contents are dropped when it is skipped.
        let notes_before = self.notes.len();
        let mut fatal: Option<String> = None;

        let mut master_line: Option<usize> = None;
        let mut interface: Option<String> = None;
        let mut vrid: Option<u8> = None;
        let mut priority: Option<u8> = None;
        let mut version: Option<(u8, usize)> = None;
        let mut advert: Option<(f64, usize)> = None;
        let mut nopreempt: Option<usize> = None;
        let mut preempt_delay: Option<(u64, usize)> = None;
        let mut strict = self.vrrp_globals.strict;
        let mut auth: Option<&Node> = None;
        let mut vips: Option<&Node> = None;
        let mut peers: Option<&Node> = None;
        let mut tracks: Vec<&Node> = Vec::new();
        let mut notify: Option<Vec<String>> = None;
        let mut garp_repeat = self.vrrp_globals.garp_repeat;
        let mut garp_interval = self.vrrp_globals.garp_interval_ms;
        let mut gna_interval = self.vrrp_globals.gna_interval_ms;
        let mut track_script: Option<&Node> = None;
        for n in body {
            let arg = n.args.first().map(String::as_str);
            let k = n.keyword.as_str();
            match k {
                "state" => match arg {
                    Some("MASTER") => master_line = Some(n.line),
                    Some("BACKUP") => {}
                    _ => self.note(n.line, k, "not MASTER or BACKUP: BACKUP, as keepalived"),
                },
                "interface" => match arg {
                    Some(i) if valid_ifname(i) => interface = Some(i.to_owned()),
                    _ => {
                        fatal.get_or_insert(format!(
                            "line {}: interface {}: not an interface name",
                            n.line,
                            arg.unwrap_or("(none)")
                        ));
                    }
                },
                "virtual_router_id" => match arg.and_then(|a| a.parse::<u8>().ok()) {
                    Some(v) if v > 0 => vrid = Some(v),
                    _ => {
                        fatal.get_or_insert(format!(
                            "line {}: virtual_router_id {}: not a VRID (1..=255)",
                            n.line,
                            arg.unwrap_or("(none)")
                        ));
                    }
                },
                "priority" => match arg.and_then(|a| a.parse::<u8>().ok()) {
                    Some(p) if p > 0 => priority = Some(p),
                    _ => {
                        priority = Some(100);
                        self.note(n.line, k, "not 1..=255: 100, as keepalived");
                    }
                },
                "version" => match arg {
                    Some("2") => version = Some((2, n.line)),
                    Some("3") => version = Some((3, n.line)),
                    _ => self.note(n.line, k, "not 2 or 3: ignored"),
                },
                "advert_int" => match arg.and_then(|a| a.parse::<f64>().ok()) {
                    Some(s) if s.is_finite() && s > 0.0 => advert = Some((s, n.line)),
                    _ => self.note(n.line, k, "not a positive number of seconds: ignored"),
                },
                "nopreempt" => nopreempt = Some(n.line),
                "preempt" => nopreempt = None,
                "preempt_delay" => match arg.and_then(seconds_ms) {
                    Some(ms) if ms <= 1_000_000 => preempt_delay = Some((ms, n.line)),
                    _ => self.note(n.line, k, "not 0..=1000 seconds: ignored, as keepalived"),
                },
                "strict_mode" => {
                    strict = !matches!(arg, Some("false" | "off" | "no" | "0"));
                    if strict {
                        self.note(n.line, k, STRICT_REASON);
                    }
                }
                "authentication" => auth = Some(n),
                "virtual_ipaddress" => vips = Some(n),
                "virtual_ipaddress_excluded" => {
                    let count = n.block.iter().flatten().count();
                    self.note(
                        n.line,
                        k,
                        format!(
                            "{count} excluded addresses not carried over: xlb adds only the \
                             advertised `addresses` (at most {MAX_ADDRESSES}); add them there \
                             if they fit, or to the host's network configuration"
                        ),
                    );
                }
                "unicast_peer" => peers = Some(n),
                "unicast_src_ip" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb sends adverts from the interface's primary address \
                     (IPv6: its link-local address); peers that check the source must expect \
                     that one",
                ),
                "track_interface" => tracks.push(n),
                "track_script" => track_script = Some(n),
                "track_file" | "track_process" | "track_bfd" | "track_src_ip" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb tracks services (track_services) and interfaces \
                     (track_interfaces) only",
                ),
                "notify" => match arg.map(split_command) {
                    Some(Ok(argv)) if !argv.is_empty() => {
                        notify = Some(argv);
                        self.note(
                            n.line,
                            k,
                            "carried over with other arguments: keepalived calls it as \
                             `SCRIPT INSTANCE NAME STATE PRIORITY` (STATE MASTER, BACKUP, \
                             FAULT, STOP); xlb as `argv... STATE NAME REASON` with STATE \
                             master, backup or initialize (lower case): adapt the script to \
                             read the state from its first argument",
                        );
                        if n.args.len() > 1 {
                            self.note(
                                n.line,
                                k,
                                format!(
                                    "user/group {} not carried over: xlb runs notify as the \
                                     daemon's user (quote a script with arguments)",
                                    n.args[1..].join(" ")
                                ),
                            );
                        }
                    }
                    Some(Err(e)) => self.note(n.line, k, format!("cannot split the command: {e}")),
                    _ => self.note(n.line, k, "no command: ignored"),
                },
                "notify_master"
                | "notify_backup"
                | "notify_fault"
                | "notify_stop"
                | "notify_deleted"
                | "notify_master_rx_lower_pri" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb runs one `notify` per instance as `argv... STATE \
                     NAME REASON` (STATE master, backup, initialize; no fault or stop). \
                     Call this script from one that dispatches on its first argument and set \
                     that one as `notify`",
                ),
                "garp_master_repeat" => match arg.and_then(|a| a.parse::<u32>().ok()) {
                    Some(r) => garp_repeat = Some(r),
                    None => self.note(n.line, k, "not a number: ignored"),
                },
                "garp_interval" | "gna_interval" => match interval_ms(arg, 10_000) {
                    Some(ms) if k == "garp_interval" => garp_interval = Some(ms),
                    Some(ms) => gna_interval = Some(ms),
                    None => self.note(
                        n.line,
                        k,
                        "not a number of seconds up to 10 (xlb's garp.delay_ms limit): ignored",
                    ),
                },
                "garp_master_delay" => {
                    if arg.and_then(seconds_ms).is_some_and(|ms| ms > 0) {
                        let reason = garp_delay_reason(arg.unwrap_or_default());
                        self.note(n.line, k, reason);
                    }
                }
                "garp_master_refresh" | "garp_master_refresh_repeat" => {
                    if arg.is_some_and(|a| a != "0") {
                        self.note(n.line, k, GARP_REFRESH_REASON);
                    }
                }
                "garp_lower_prio_delay" | "garp_lower_prio_repeat" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb's master answers a lower-priority advert with an \
                     advert (from XDP), not with gratuitous ARPs",
                ),
                "smtp_alert" => self.note(
                    n.line,
                    k,
                    "not carried over: no e-mail alerts (use the instance's `notify`)",
                ),
                "use_vmac" | "vmac_xmit_base" | "use_ipvlan" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb has no virtual MAC; a new master announces the \
                     addresses with its own MAC (gratuitous ARP / unsolicited NA)",
                ),
                "dont_track_primary" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb does not put an instance in a fault state when its \
                     interface goes down; to lower its priority then, list the interface in \
                     track_interfaces",
                ),
                "accept" => self.note(
                    n.line,
                    k,
                    "nothing to set: xlb adds the addresses to the interface, so the master's \
                     host accepts traffic to them, as with accept",
                ),
                "no_accept" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb installs no firewall rules; the master's host \
                     accepts traffic to the virtual addresses (as with accept)",
                ),
                "skip_check_adv_addr" | "check_unicast_src" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb checks adverts as RFC 5798 says and takes \
                     unicast adverts only from unicast_peers",
                ),
                "lower_prio_no_advert" | "higher_prio_send_advert" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb's master answers a lower-priority advert at once \
                     (docs/vrrp-xdp.md) and a backup stays silent",
                ),
                "linkbeat_use_polling" => self.note(
                    n.line,
                    k,
                    "not needed: xlb follows carrier changes through netlink",
                ),
                "virtual_routes" | "virtual_rules" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb adds addresses only, no routes or rules",
                ),
                "mcast_src_ip"
                | "native_ipv6"
                | "unicast_ttl"
                | "unicast_fault_no_peer"
                | "old_unicast_checksum"
                | "debug"
                | "kernel_rx_buf_size"
                | "notify_priority_changes"
                | "lvs_sync_daemon_interface"
                | "ha_suspend" => {
                    self.note(n.line, k, "not carried over: no xlb equivalent");
                }
                _ => self.list_all(n, "unknown keyword: not carried over"),
            }
        }

        // The addresses: the first one's family wins, as in keepalived.
        let mut addresses: Vec<IpAddr> = Vec::new();
        if let Some(block) = vips {
            for n in block.block.iter().flatten() {
                self.vip(n, interface.as_deref(), &mut addresses);
            }
        }
        let v4 = addresses.first().is_none_or(IpAddr::is_ipv4);
        if addresses.is_empty() {
            fatal.get_or_insert("no virtual_ipaddress (xlb needs at least one)".into());
        }
        let interface = match (interface, &self.vrrp_globals.default_interface) {
            (Some(i), _) => i,
            (None, Some(d)) => d.clone(),
            (None, None) => {
                self.note(
                    line,
                    "vrrp_instance",
                    "no interface: eth0, keepalived's default_interface",
                );
                "eth0".into()
            }
        };
        let Some(vrid) = vrid else {
            let why = fatal.unwrap_or_else(|| "no virtual_router_id".into());
            self.notes.truncate(notes_before);
            return skip(self, format!("{name}: {why}"));
        };
        if let Some(why) = fatal {
            self.notes.truncate(notes_before);
            return skip(self, format!("{name}: {why}"));
        }

        let version = match (version, v4) {
            (Some((2, l)), false) => {
                self.note(
                    l,
                    "version",
                    "VRRPv2 is IPv4 only: 3 for this IPv6 instance",
                );
                3
            }
            (Some((v, _)), _) => v,
            (None, false) => 3,
            (None, true) => self.vrrp_globals.version.unwrap_or(2),
        };
        let advert_int_ms = self.advert_int(advert, version);

        let priority = match (priority, master_line) {
            (Some(p), _) => p,
            (None, Some(_)) => 255,
            (None, None) => 100,
        };
        if let Some(l) = master_line {
            self.note(
                l,
                "state",
                if priority == 255 {
                    "MASTER not carried over: with priority 255 (keepalived's default for \
                     state MASTER without a priority) xlb owns the addresses and becomes \
                     master at once"
                } else {
                    "MASTER not carried over: xlb starts every instance as backup (unless \
                     priority 255) and becomes master after the master-down interval if no \
                     better master advertises; the priority decides"
                },
            );
        }
        let mut preempt = true;
        if let Some(l) = nopreempt {
            if priority == 255 {
                self.note(
                    l,
                    "nopreempt",
                    "ignored, as keepalived: incompatible with priority 255",
                );
            } else if master_line.is_some() {
                self.note(
                    l,
                    "nopreempt",
                    "ignored, as keepalived: does not work with state MASTER",
                );
            } else {
                preempt = false;
            }
        }
        let mut preempt_delay_ms = 0;
        if let Some((ms, l)) = preempt_delay.filter(|(ms, _)| *ms > 0) {
            let why = if master_line.is_some() {
                Some("does not work with state MASTER")
            } else if !preempt {
                Some("incompatible with nopreempt")
            } else if strict {
                Some("incompatible with strict mode")
            } else {
                None
            };
            match why {
                Some(why) => {
                    self.note(l, "preempt_delay", format!("ignored, as keepalived: {why}"));
                }
                None => preempt_delay_ms = ms,
            }
        }
        if let Some(a) = auth {
            self.authentication(a, version, strict, vrid);
        }

        let mut unicast_peers = Vec::new();
        if let Some(block) = peers {
            for n in block.block.iter().flatten() {
                self.peer(n, v4, &mut unicast_peers);
            }
            if unicast_peers.is_empty() {
                self.note(
                    block.line,
                    "unicast_peer",
                    "no usable peer: the instance is written with multicast adverts \
                     (224.0.0.18 / ff02::12)",
                );
            }
        }

        // track_interface: keepalived adds a positive weight while the interface is up,
        // subtracts a negative one while it is down, and goes to FAULT (weight 0 or none).
        let mut track_interfaces: Vec<(TrackInterface, usize, bool)> = Vec::new();
        let mut raised: u32 = 0;
        let mut first_raised: Option<(usize, String)> = None;
        for block in tracks {
            for n in block.block.iter().flatten() {
                if let Some((t, fault, up_weight)) = self.track_interface(n) {
                    if track_interfaces
                        .iter()
                        .any(|(o, _, _)| o.interface == t.interface)
                    {
                        self.note(n.line, &n.keyword, "listed twice: ignored");
                        continue;
                    }
                    raised += up_weight;
                    if up_weight > 0 && first_raised.is_none() {
                        first_raised = Some((n.line, t.interface.clone()));
                    }
                    track_interfaces.push((t, n.line, fault));
                }
            }
        }
        let mut priority = priority;
        if raised > 0 && priority < 255 {
            let p = (u32::from(priority) + raised).min(254);
            if let Some((l, interface)) = first_raised {
                self.note(
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
        let track_interfaces: Vec<TrackInterface> = track_interfaces
            .into_iter()
            .map(|(mut t, l, fault)| {
                if fault {
                    t.weight = priority.saturating_sub(1).max(1);
                    self.note(
                        l,
                        &t.interface,
                        format!(
                            "no weight (keepalived: FAULT while down, the instance gives up \
                             the addresses): weight {} written, the priority drops to 1 while \
                             it is down and any peer takes over",
                            t.weight
                        ),
                    );
                }
                t
            })
            .collect();

        if let Some(n) = track_script {
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
                    own.or_else(|| self.vrrp_globals.script_weights.get(&s.keyword).copied())
                })
                .unwrap_or(0);
            let weight = match weight.unsigned_abs().min(255) {
                0 => u64::from(priority.saturating_sub(1).max(1)),
                w => w,
            };
            let hint = if mine.is_empty() {
                format!(
                    "list the services it protects in `track_services` (`vip:port/proto`, \
                     weight {weight})"
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
            self.note(
                n.line,
                "track_script",
                format!(
                    "{} not carried over: xlb tracks services with its own health checks \
                     instead of scripts; {hint}",
                    scripts.join(", ")
                ),
            );
        }

        let mut garp = Garp::default();
        if let Some(r) = garp_repeat {
            garp.repeat = r.min(100);
            if r > 100 {
                self.note(
                    line,
                    "garp_master_repeat",
                    format!("{r}: at most 100 in xlb"),
                );
            }
        }
        if let Some(ms) = if v4 { garp_interval } else { gna_interval } {
            garp.delay_ms = ms;
        }

        Some(VrrpSpec {
            name,
            interface,
            vrid,
            priority,
            version,
            advert_int_ms,
            preempt,
            preempt_delay_ms,
            addresses,
            track_services: Vec::new(),
            track_interfaces,
            unicast_peers,
            garp,
            notify,
        })
    }

    /// keepalived's advert interval rounding, noted where it changes the value.
    fn advert_int(&mut self, advert: Option<(f64, usize)>, version: u8) -> u32 {
        let Some((s, l)) = advert else {
            return 1000;
        };
        let (ms, why) = if version == 2 {
            let whole = (s + 0.5).floor().clamp(1.0, 255.0);
            (
                whole as u32 * 1000,
                "VRRPv2 advertises whole seconds (1..=255)",
            )
        } else {
            let cs = (s * 100.0).round().clamp(1.0, 4095.0);
            (
                cs as u32 * 10,
                "VRRPv3 advertises 10 ms steps (0.01..=40.95 s)",
            )
        };
        if (f64::from(ms) - s * 1000.0).abs() > 1e-6 {
            self.note(
                l,
                "advert_int",
                format!("{s} s: {why}, {ms} ms, as keepalived"),
            );
        }
        ms
    }

    fn authentication(&mut self, a: &Node, version: u8, strict: bool, vrid: u8) {
        let kind = a
            .block
            .iter()
            .flatten()
            .find(|n| n.keyword == "auth_type")
            .and_then(|n| n.args.first())
            .map_or("PASS", String::as_str);
        let reason = if version == 3 {
            "not carried over: keepalived ignores authentication with VRRPv3 too".to_owned()
        } else if strict {
            "not carried over: keepalived ignores authentication in strict mode too".to_owned()
        } else {
            format!(
                "NOT CARRIED OVER, BREAKS INTEROPERATION: xlb sends VRRPv2 adverts without \
                 authentication (type 0) and drops adverts that carry any. keepalived peers \
                 with auth_type {kind} ignore xlb's adverts and xlb theirs: both become \
                 master. Remove `authentication` from every keepalived peer of VRID {vrid} \
                 before an xlb joins them"
            )
        };
        self.note(a.line, "authentication", reason);
    }

    /// One `virtual_ipaddress` line: `IP[/len] [dev IF] [label L] [scope S] ...`.
    fn vip(&mut self, n: &Node, interface: Option<&str>, out: &mut Vec<IpAddr>) {
        let k = n.keyword.as_str();
        let (ip, len) = match k.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (k, None),
        };
        let Ok(ip) = ip.parse::<IpAddr>() else {
            return self.note(n.line, k, "not an IP address: not carried over");
        };
        if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
            return self.note(n.line, k, "cannot be a virtual address: not carried over");
        }
        if let Some(first) = out.first() {
            if first.is_ipv4() != ip.is_ipv4() {
                return self.note(
                    n.line,
                    k,
                    format!(
                        "not of the family of {first}: not carried over (xlb instances are \
                         IPv4 or IPv6; write another vrrp_instance for it)"
                    ),
                );
            }
        }
        if out.contains(&ip) {
            return self.note(n.line, k, "listed twice: ignored");
        }
        if out.len() == MAX_ADDRESSES {
            return self.note(
                n.line,
                k,
                format!("not carried over: at most {MAX_ADDRESSES} addresses per instance"),
            );
        }
        let full = if ip.is_ipv4() { "32" } else { "128" };
        if let Some(len) = len.filter(|l| *l != full) {
            self.note(
                n.line,
                k,
                format!(
                    "/{len} not carried over: xlb adds virtual addresses as /{full} (no \
                     subnet route from them; the host's own address on that subnet provides it)"
                ),
            );
        }
        let mut others = Vec::new();
        let mut args = n.args.iter();
        while let Some(a) = args.next() {
            match a.as_str() {
                "dev" => match args.next() {
                    Some(dev) if Some(dev.as_str()) != interface => self.note(
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
            self.note(
                n.line,
                k,
                format!(
                    "{} not carried over: xlb adds a plain address (no label, scope or \
                     flags)",
                    others.join(", ")
                ),
            );
        }
        out.push(ip);
    }

    /// One `unicast_peer` line: `IP [min_ttl N] [max_ttl N]`.
    fn peer(&mut self, n: &Node, v4: bool, out: &mut Vec<IpAddr>) {
        let k = n.keyword.as_str();
        let Ok(ip) = k.parse::<IpAddr>() else {
            return self.note(n.line, k, "not an IP address: not carried over");
        };
        if ip.is_ipv4() != v4 || ip.is_multicast() || ip.is_unspecified() {
            return self.note(
                n.line,
                k,
                "not a unicast address of the instance's family: not carried over",
            );
        }
        if let IpAddr::V6(v6) = ip {
            if !v6.is_unicast_link_local() {
                return self.note(
                    n.line,
                    k,
                    "not carried over: xlb sends and receives IPv6 adverts on link-local \
                     addresses only (RFC 5798); write this peer's fe80:: address",
                );
            }
        }
        if out.contains(&ip) {
            return self.note(n.line, k, "listed twice: ignored");
        }
        if !n.args.is_empty() {
            self.note(
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

    /// One `track_interface` line: `IF [weight N [reverse]]`. Returns the entry (weight
    /// still to be set when it means FAULT), whether it means FAULT, and the priority a
    /// positive weight adds while the interface is up.
    fn track_interface(&mut self, n: &Node) -> Option<(TrackInterface, bool, u32)> {
        let k = n.keyword.as_str();
        if !valid_ifname(k) {
            self.note(n.line, k, "not an interface name: not carried over");
            return None;
        }
        let mut weight: i64 = 0;
        let mut args = n.args.iter().map(String::as_str);
        while let Some(a) = args.next() {
            match a {
                "weight" => match args.next().and_then(|w| w.parse::<i64>().ok()) {
                    Some(w) if (-254..=254).contains(&w) => weight = w,
                    _ => {
                        self.note(
                            n.line,
                            k,
                            "weight not -254..=254: not carried over (keepalived ignores it too)",
                        );
                        return None;
                    }
                },
                "reverse" => {
                    self.note(
                        n.line,
                        k,
                        "reverse not carried over: xlb lowers the priority while the \
                         interface is down, never while it is up; not tracked",
                    );
                    return None;
                }
                other => {
                    self.note(n.line, k, format!("{other}: ignored"));
                }
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
}
