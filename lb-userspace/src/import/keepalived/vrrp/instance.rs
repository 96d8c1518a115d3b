//! `vrrp_instance` → an xlb VRRP instance: the block's keyword table, its builder, and
//! the instance assembled with keepalived's rules (version, priority, preemption,
//! advert interval rounding).

use std::net::IpAddr;

use super::{
    addresses,
    garp::{self, GarpTimers},
    globals::Globals,
    seconds_ms, tracking, valid_ifname, Converter, Node, MAX_ADDRESSES, STRICT_REASON,
};
use crate::{
    config::vrrp::{Garp, VrrpSpec},
    import::keepalived::{
        keywords::{Action::*, Block},
        split_command,
    },
};

/// One `vrrp_instance` as read so far.
struct VrrpInstanceBuilder {
    /// The line of `state MASTER`.
    master_line: Option<usize>,
    interface: Option<String>,
    vrid: Option<u8>,
    priority: Option<u8>,
    version: Option<(u8, usize)>,
    advert: Option<(f64, usize)>,
    nopreempt: Option<usize>,
    preempt_delay: Option<(u64, usize)>,
    strict: bool,
    // The last block of each of these, converted once the instance's family is known.
    auth: Option<Node>,
    vips: Option<Node>,
    peers: Option<Node>,
    track_script: Option<Node>,
    tracks: Vec<Node>,
    notify: Option<Vec<String>>,
    garp: GarpTimers,
    /// The first reason the instance is skipped.
    fatal: Option<String>,
}

impl AsMut<GarpTimers> for VrrpInstanceBuilder {
    fn as_mut(&mut self) -> &mut GarpTimers {
        &mut self.garp
    }
}

static KEYWORDS: Block<VrrpInstanceBuilder> = Block {
    keywords: &[&[
        (&["state"], Apply(VrrpInstanceBuilder::state)),
        (&["interface"], Apply(VrrpInstanceBuilder::interface)),
        (
            &["virtual_router_id"],
            Apply(VrrpInstanceBuilder::virtual_router_id),
        ),
        (&["priority"], Apply(VrrpInstanceBuilder::priority)),
        (&["version"], Apply(VrrpInstanceBuilder::version)),
        (&["advert_int"], Apply(VrrpInstanceBuilder::advert_int)),
        (&["nopreempt"], Apply(VrrpInstanceBuilder::nopreempt)),
        (&["preempt"], Apply(VrrpInstanceBuilder::preempt)),
        (
            &["preempt_delay"],
            Apply(VrrpInstanceBuilder::preempt_delay),
        ),
        (&["strict_mode"], Apply(VrrpInstanceBuilder::strict_mode)),
        (
            &["authentication"],
            Apply(VrrpInstanceBuilder::authentication),
        ),
        (
            &["virtual_ipaddress"],
            Apply(VrrpInstanceBuilder::virtual_ipaddress),
        ),
        (
            &["virtual_ipaddress_excluded"],
            Apply(VrrpInstanceBuilder::virtual_ipaddress_excluded),
        ),
        (&["unicast_peer"], Apply(VrrpInstanceBuilder::unicast_peer)),
        (
            &["unicast_src_ip"],
            Note(
                "not carried over: xlb sends adverts from the interface's primary address \
                 (IPv6: its link-local address); peers that check the source must expect \
                 that one",
            ),
        ),
        (
            &["track_interface"],
            Apply(VrrpInstanceBuilder::track_interface),
        ),
        (&["track_script"], Apply(VrrpInstanceBuilder::track_script)),
        (
            &["track_file", "track_process", "track_bfd", "track_src_ip"],
            Note(
                "not carried over: xlb tracks services (track_services) and interfaces \
                 (track_interfaces) only",
            ),
        ),
        (&["notify"], Apply(VrrpInstanceBuilder::notify)),
        (
            &[
                "notify_master",
                "notify_backup",
                "notify_fault",
                "notify_stop",
                "notify_deleted",
                "notify_master_rx_lower_pri",
            ],
            Note(
                "not carried over: xlb runs one `notify` per instance as `argv... STATE \
                 NAME REASON` (STATE master, backup, initialize; no fault or stop). Call \
                 this script from one that dispatches on its first argument and set that \
                 one as `notify`",
            ),
        ),
        (&["garp_master_repeat"], Apply(garp::repeat)),
        (&["garp_interval"], Apply(garp::interval)),
        (&["gna_interval"], Apply(garp::gna_interval)),
        (&["garp_master_delay"], Apply(garp::master_delay)),
        (
            &["garp_master_refresh", "garp_master_refresh_repeat"],
            Apply(garp::master_refresh),
        ),
        (
            &["garp_lower_prio_delay", "garp_lower_prio_repeat"],
            Note(
                "not carried over: xlb's master answers a lower-priority advert with an \
                 advert (from XDP), not with gratuitous ARPs",
            ),
        ),
        (
            &["smtp_alert"],
            Note("not carried over: no e-mail alerts (use the instance's `notify`)"),
        ),
        (
            &["use_vmac", "vmac_xmit_base", "use_ipvlan"],
            Note(
                "not carried over: xlb has no virtual MAC; a new master announces the \
                 addresses with its own MAC (gratuitous ARP / unsolicited NA)",
            ),
        ),
        (
            &["dont_track_primary"],
            Note(
                "not carried over: xlb does not put an instance in a fault state when its \
                 interface goes down; to lower its priority then, list the interface in \
                 track_interfaces",
            ),
        ),
        (
            &["accept"],
            Note(
                "nothing to set: xlb adds the addresses to the interface, so the master's \
                 host accepts traffic to them, as with accept",
            ),
        ),
        (
            &["no_accept"],
            Note(
                "not carried over: xlb installs no firewall rules; the master's host \
                 accepts traffic to the virtual addresses (as with accept)",
            ),
        ),
        (
            &["skip_check_adv_addr", "check_unicast_src"],
            Note(
                "not carried over: xlb checks adverts as RFC 5798 says and takes unicast \
                 adverts only from unicast_peers",
            ),
        ),
        (
            &["lower_prio_no_advert", "higher_prio_send_advert"],
            Note(
                "not carried over: xlb's master answers a lower-priority advert at once \
                 (docs/vrrp-xdp.md) and a backup stays silent",
            ),
        ),
        (
            &["linkbeat_use_polling"],
            Note("not needed: xlb follows carrier changes through netlink"),
        ),
        (
            &["virtual_routes", "virtual_rules"],
            Note("not carried over: xlb adds addresses only, no routes or rules"),
        ),
        (
            &[
                "mcast_src_ip",
                "native_ipv6",
                "unicast_ttl",
                "unicast_fault_no_peer",
                "old_unicast_checksum",
                "debug",
                "kernel_rx_buf_size",
                "notify_priority_changes",
                "lvs_sync_daemon_interface",
                "ha_suspend",
            ],
            Note("not carried over: no xlb equivalent"),
        ),
    ]],
    unknown: "unknown keyword: not carried over",
    one_value_args: false,
};

/// One `vrrp_instance` as a [`VrrpSpec`], or `None` (noted: why it is skipped).
/// `services` are the converted services as (VIP, `vip:port/proto`).
pub(in super::super) fn convert(
    c: &mut Converter<'_>,
    node: &Node,
    services: &[(IpAddr, String)],
) -> Option<VrrpSpec> {
    let line = node.line;
    let skip = |c: &mut Converter<'_>, why: String| {
        c.note(line, "vrrp_instance", format!("{why}; skipped"));
        None
    };
    let name = match node.args.as_slice() {
        [name] if name.len() <= 64 => name.clone(),
        [name] => return skip(c, format!("{name}: xlb names are 1..=64 characters")),
        [] => return skip(c, "needs a name".into()),
        _ => return skip(c, "needs exactly one name (keepalived skips it too)".into()),
    };
    let Some(body) = &node.block else {
        return skip(c, format!("{name}: no {{ }} block"));
    };
    // Notes about the instance's contents are dropped when it is skipped.
    let notes_before = c.notes.len();
    let mut b = VrrpInstanceBuilder::new(&c.vrrp_globals);
    KEYWORDS.walk(&mut b, c, body);

    let addresses = b.addresses(c);
    let v4 = addresses.first().is_none_or(IpAddr::is_ipv4);
    let interface = b.resolved_interface(c, line);
    let Some(vrid) = b.vrid else {
        let why = b.fatal.unwrap_or_else(|| "no virtual_router_id".into());
        c.notes.truncate(notes_before);
        return skip(c, format!("{name}: {why}"));
    };
    if let Some(why) = b.fatal.take() {
        c.notes.truncate(notes_before);
        return skip(c, format!("{name}: {why}"));
    }

    let version = b.resolved_version(c, v4);
    let advert_int_ms = advert_int(c, b.advert, version);
    let priority = b.resolved_priority(c);
    let preempt = b.resolved_preempt(c, priority);
    let preempt_delay_ms = b.preempt_delay_ms(c, preempt);
    if let Some(a) = &b.auth {
        authentication(c, a, version, b.strict, vrid);
    }
    let unicast_peers = b
        .peers
        .as_ref()
        .map(|block| addresses::peers(c, block, v4))
        .unwrap_or_default();
    let (priority, track_interfaces) = tracking::interfaces(c, &b.tracks, priority);
    if let Some(n) = &b.track_script {
        tracking::script(c, n, services, &addresses, priority);
    }
    let garp = b.garp(c, line, v4);
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
        notify: b.notify,
    })
}

impl VrrpInstanceBuilder {
    /// An instance that inherits `global_defs`' settings.
    fn new(g: &Globals) -> VrrpInstanceBuilder {
        VrrpInstanceBuilder {
            master_line: None,
            interface: None,
            vrid: None,
            priority: None,
            version: None,
            advert: None,
            nopreempt: None,
            preempt_delay: None,
            strict: g.strict,
            auth: None,
            vips: None,
            peers: None,
            track_script: None,
            tracks: Vec::new(),
            notify: None,
            garp: g.garp,
            fatal: None,
        }
    }

    /// The `virtual_ipaddress` block's addresses: the first one's family wins, as in
    /// keepalived. None is a reason to skip the instance.
    fn addresses(&mut self, c: &mut Converter<'_>) -> Vec<IpAddr> {
        let mut addresses: Vec<IpAddr> = Vec::new();
        for n in self.vips.iter().flat_map(|v| v.block.iter().flatten()) {
            addresses::vip(c, n, self.interface.as_deref(), &mut addresses);
        }
        if addresses.is_empty() {
            self.fatal
                .get_or_insert("no virtual_ipaddress (xlb needs at least one)".into());
        }
        addresses
    }

    /// `interface`, else `global_defs`' `default_interface`, else keepalived's eth0.
    fn resolved_interface(&mut self, c: &mut Converter<'_>, line: usize) -> String {
        match (self.interface.take(), &c.vrrp_globals.default_interface) {
            (Some(i), _) => i,
            (None, Some(d)) => d.clone(),
            (None, None) => {
                c.note(
                    line,
                    "vrrp_instance",
                    "no interface: eth0, keepalived's default_interface",
                );
                "eth0".into()
            }
        }
    }

    fn state(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg() {
            Some("MASTER") => self.master_line = Some(n.line),
            Some("BACKUP") => {}
            _ => c.note(
                n.line,
                &n.keyword,
                "not MASTER or BACKUP: BACKUP, as keepalived",
            ),
        }
    }

    fn interface(&mut self, _: &mut Converter<'_>, n: &Node) {
        match n.arg() {
            Some(i) if valid_ifname(i) => self.interface = Some(i.to_owned()),
            arg => {
                self.fatal.get_or_insert(format!(
                    "line {}: interface {}: not an interface name",
                    n.line,
                    arg.unwrap_or("(none)")
                ));
            }
        }
    }

    fn virtual_router_id(&mut self, _: &mut Converter<'_>, n: &Node) {
        match n.arg().and_then(|a| a.parse::<u8>().ok()) {
            Some(v) if v > 0 => self.vrid = Some(v),
            _ => {
                self.fatal.get_or_insert(format!(
                    "line {}: virtual_router_id {}: not a VRID (1..=255)",
                    n.line,
                    n.arg().unwrap_or("(none)")
                ));
            }
        }
    }

    fn priority(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg().and_then(|a| a.parse::<u8>().ok()) {
            Some(p) if p > 0 => self.priority = Some(p),
            _ => {
                self.priority = Some(100);
                c.note(n.line, &n.keyword, "not 1..=255: 100, as keepalived");
            }
        }
    }

    fn version(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg() {
            Some("2") => self.version = Some((2, n.line)),
            Some("3") => self.version = Some((3, n.line)),
            _ => c.note(n.line, &n.keyword, "not 2 or 3: ignored"),
        }
    }

    fn advert_int(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg().and_then(|a| a.parse::<f64>().ok()) {
            Some(s) if s.is_finite() && s > 0.0 => self.advert = Some((s, n.line)),
            _ => c.note(
                n.line,
                &n.keyword,
                "not a positive number of seconds: ignored",
            ),
        }
    }

    fn nopreempt(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.nopreempt = Some(n.line);
    }

    fn preempt(&mut self, _: &mut Converter<'_>, _: &Node) {
        self.nopreempt = None;
    }

    fn preempt_delay(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg().and_then(seconds_ms) {
            Some(ms) if ms <= 1_000_000 => self.preempt_delay = Some((ms, n.line)),
            _ => c.note(
                n.line,
                &n.keyword,
                "not 0..=1000 seconds: ignored, as keepalived",
            ),
        }
    }

    fn strict_mode(&mut self, c: &mut Converter<'_>, n: &Node) {
        self.strict = !matches!(n.arg(), Some("false" | "off" | "no" | "0"));
        if self.strict {
            c.note(n.line, &n.keyword, STRICT_REASON);
        }
    }

    fn authentication(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.auth = Some(n.clone());
    }

    fn virtual_ipaddress(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.vips = Some(n.clone());
    }

    fn virtual_ipaddress_excluded(&mut self, c: &mut Converter<'_>, n: &Node) {
        let count = n.block.iter().flatten().count();
        c.note(
            n.line,
            &n.keyword,
            format!(
                "{count} excluded addresses not carried over: xlb adds only the advertised \
                 `addresses` (at most {MAX_ADDRESSES}); add them there if they fit, or to \
                 the host's network configuration"
            ),
        );
    }

    fn unicast_peer(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.peers = Some(n.clone());
    }

    fn track_interface(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.tracks.push(n.clone());
    }

    fn track_script(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.track_script = Some(n.clone());
    }

    fn notify(&mut self, c: &mut Converter<'_>, n: &Node) {
        let k = &n.keyword;
        match n.arg().map(split_command) {
            Some(Ok(argv)) if !argv.is_empty() => {
                self.notify = Some(argv);
                c.note(
                    n.line,
                    k,
                    "carried over with other arguments: keepalived calls it as `SCRIPT \
                     INSTANCE NAME STATE PRIORITY` (STATE MASTER, BACKUP, FAULT, STOP); xlb \
                     as `argv... STATE NAME REASON` with STATE master, backup or initialize \
                     (lower case): adapt the script to read the state from its first \
                     argument",
                );
                if n.args.len() > 1 {
                    c.note(
                        n.line,
                        k,
                        format!(
                            "user/group {} not carried over: xlb runs notify as the daemon's \
                             user (quote a script with arguments)",
                            n.args[1..].join(" ")
                        ),
                    );
                }
            }
            Some(Err(e)) => c.note(n.line, k, format!("cannot split the command: {e}")),
            _ => c.note(n.line, k, "no command: ignored"),
        }
    }

    /// keepalived's: 2 unless set; IPv6 instances are always 3.
    fn resolved_version(&self, c: &mut Converter<'_>, v4: bool) -> u8 {
        match (self.version, v4) {
            (Some((2, l)), false) => {
                c.note(
                    l,
                    "version",
                    "VRRPv2 is IPv4 only: 3 for this IPv6 instance",
                );
                3
            }
            (Some((v, _)), _) => v,
            (None, false) => 3,
            (None, true) => c.vrrp_globals.version.unwrap_or(2),
        }
    }

    /// keepalived's: 255 for `state MASTER` without one, else 100; the state is noted.
    fn resolved_priority(&self, c: &mut Converter<'_>) -> u8 {
        let priority = match (self.priority, self.master_line) {
            (Some(p), _) => p,
            (None, Some(_)) => 255,
            (None, None) => 100,
        };
        if let Some(l) = self.master_line {
            c.note(
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
        priority
    }

    /// `nopreempt`, unless keepalived ignores it.
    fn resolved_preempt(&self, c: &mut Converter<'_>, priority: u8) -> bool {
        let Some(l) = self.nopreempt else {
            return true;
        };
        let ignored = if priority == 255 {
            "ignored, as keepalived: incompatible with priority 255"
        } else if self.master_line.is_some() {
            "ignored, as keepalived: does not work with state MASTER"
        } else {
            return false;
        };
        c.note(l, "nopreempt", ignored);
        true
    }

    /// `preempt_delay`, unless keepalived ignores it.
    fn preempt_delay_ms(&self, c: &mut Converter<'_>, preempt: bool) -> u64 {
        let Some((ms, l)) = self.preempt_delay.filter(|(ms, _)| *ms > 0) else {
            return 0;
        };
        let why = if self.master_line.is_some() {
            "does not work with state MASTER"
        } else if !preempt {
            "incompatible with nopreempt"
        } else if self.strict {
            "incompatible with strict mode"
        } else {
            return ms;
        };
        c.note(l, "preempt_delay", format!("ignored, as keepalived: {why}"));
        0
    }

    fn garp(&self, c: &mut Converter<'_>, line: usize, v4: bool) -> Garp {
        let mut garp = Garp::default();
        if let Some(r) = self.garp.repeat {
            garp.repeat = r.min(100);
            if r > 100 {
                c.note(
                    line,
                    "garp_master_repeat",
                    format!("{r}: at most 100 in xlb"),
                );
            }
        }
        let interval = if v4 {
            self.garp.interval_ms
        } else {
            self.garp.gna_interval_ms
        };
        if let Some(ms) = interval {
            garp.delay_ms = ms;
        }
        if let Some(s) = self.garp.refresh_s {
            garp.refresh_s = s;
        }
        garp
    }
}

/// keepalived's advert interval rounding, noted where it changes the value.
fn advert_int(c: &mut Converter<'_>, advert: Option<(f64, usize)>, version: u8) -> u32 {
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
        c.note(
            l,
            "advert_int",
            format!("{s} s: {why}, {ms} ms, as keepalived"),
        );
    }
    ms
}

fn authentication(c: &mut Converter<'_>, a: &Node, version: u8, strict: bool, vrid: u8) {
    let kind = a
        .block
        .iter()
        .flatten()
        .find(|n| n.keyword == "auth_type")
        .and_then(Node::arg)
        .unwrap_or("PASS");
    let reason = if version == 3 {
        "not carried over: keepalived ignores authentication with VRRPv3 too".to_owned()
    } else if strict {
        "not carried over: keepalived ignores authentication in strict mode too".to_owned()
    } else {
        format!(
            "NOT CARRIED OVER, BREAKS INTEROPERATION: xlb sends VRRPv2 adverts without \
             authentication (type 0) and drops adverts that carry any. keepalived peers with \
             auth_type {kind} ignore xlb's adverts and xlb theirs: both become master. \
             Remove `authentication` from every keepalived peer of VRID {vrid} before an \
             xlb joins them"
        )
    };
    c.note(a.line, "authentication", reason);
}
