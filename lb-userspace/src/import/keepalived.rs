//! `keepalived.conf` → xlb [`Config`]: a tokenizer and block parser for keepalived's
//! syntax, and a converter of its LVS part and (in [`vrrp`]) its VRRP instances. See
//! docs/keepalived-import.md for the mapping and what is not carried over.
//!
//! Syntax: one statement per line (`keyword arg...`), `{ ... }` blocks (the `{` may
//! also start the next line), `#` and `!` comments to the end of the line, `"..."`
//! quoting (with `\"` and `\\`), `\` at the end of a line continuing it. `include`
//! is reported, not followed.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

mod syntax;
mod values;
mod vrrp;

pub use syntax::{parse, Node, MAX_DEPTH};
pub use values::split_command;
use values::{seconds_ms, status_codes};

use crate::vrrp::config as vrrp_spec;

use super::{ImportReport, Note, Options, ParseError, PLACEHOLDER_MAC};
use crate::{
    config::Config,
    health::{
        check::{CheckKind, CheckSpec, MAX_INTERVAL_MS, MIN_INTERVAL_MS},
        Health,
    },
    services::{
        self, describe_vip, vip_key, BackendSpec, Fallback, MacAddr, Mode, OnFailure, Protocol,
        ServiceSpec, MAX_WEIGHT,
    },
};

/// Parses and converts a keepalived.conf text.
pub fn import(text: &str, options: &Options) -> Result<ImportReport, ParseError> {
    let nodes = parse(text)?;
    let mut c = Converter {
        options,
        notes: Vec::new(),
        services: Vec::new(),
        mac_noted: HashSet::new(),
        macs_used: HashSet::new(),
        gue_port: None,
        vrrp_globals: vrrp::Globals::default(),
    };
    // Instances are converted last: they inherit global_defs wherever it is, and their
    // notes name the converted services.
    let mut instances = Vec::new();
    for node in &nodes {
        if node.keyword == "vrrp_instance" {
            instances.push(node);
        } else {
            c.top_level(node);
        }
    }
    Ok(c.finish(&instances))
}
const NOTIFY_REASON: &str = "not carried over: xlb runs one `notify` command per service, \
     called with EVENT SERVICE BACKEND REASON (docs/health.md); keepalived's per-server \
     scripts get no arguments. Wrap them in one script that dispatches on EVENT (up/down) \
     and BACKEND, and set it as the service's `notify`";

struct Converter<'a> {
    options: &'a Options,
    notes: Vec<Note>,
    /// Converted services with the line of their `virtual_server`.
    services: Vec<(ServiceSpec, usize)>,
    /// Addresses whose missing MAC was already reported.
    mac_noted: HashSet<IpAddr>,
    /// `--mac` addresses that were used.
    macs_used: HashSet<IpAddr>,
    /// The GUE port of the first GUE service and its line.
    gue_port: Option<(u16, usize)>,
    vrrp_globals: vrrp::Globals,
}

/// Settings of a `virtual_server` that its real servers and checkers inherit.
#[derive(Clone, Debug)]
struct Defaults {
    /// Seconds → ms; keepalived's default `delay_loop` is 60 s.
    interval_ms: u64,
    /// keepalived's default `connect_timeout` is 5 s.
    timeout_ms: u64,
    /// `retry` / `nb_get_retry`; keepalived's default is 1 (0 for MISC_CHECK).
    retry: Option<u32>,
    host: Option<String>,
    initial: Health,
    inhibit: bool,
}

impl Converter<'_> {
    fn note(&mut self, line: usize, keyword: &str, reason: impl Into<String>) {
        self.notes.push(Note {
            line,
            keyword: keyword.to_owned(),
            reason: reason.into(),
        });
    }

    /// Notes arguments beyond those a one-value keyword takes (one statement per line:
    /// `path / status_code 200` on one line is a `path` with three arguments).
    /// The checker defaults a `virtual_server` sets and a `real_server` overrides
    /// (`delay_loop`, `connect_timeout`, `retry`, `virtualhost`, `alpha`): whether
    /// `keyword` was one of them.
    fn check_default(
        &mut self,
        defaults: &mut Defaults,
        line: usize,
        keyword: &str,
        arg: Option<&str>,
    ) -> bool {
        match keyword {
            "delay_loop" => match arg.and_then(seconds_ms) {
                Some(ms) => defaults.interval_ms = ms,
                None => self.note(line, keyword, "not a number of seconds: ignored"),
            },
            "connect_timeout" => match arg.and_then(seconds_ms) {
                Some(ms) => defaults.timeout_ms = ms,
                None => self.note(line, keyword, "not a number of seconds: ignored"),
            },
            "retry" | "nb_get_retry" => match arg.and_then(|a| a.parse().ok()) {
                Some(r) => defaults.retry = Some(r),
                None => self.note(line, keyword, "not a number: ignored"),
            },
            "virtualhost" => defaults.host = arg.map(str::to_owned),
            "alpha" => defaults.initial = Health::Down,
            _ => return false,
        }
        true
    }

    /// Drops the converted entries that xlb's validation rejected, each with a note at
    /// its keepalived line naming the reasons. An error's path `<prefix>i]...` names
    /// entry i; one without a usable index is charged to the last entry, so every round
    /// of validation drops at least one and the caller's loop ends.
    fn drop_rejected<'e, T>(
        &mut self,
        entries: &mut Vec<(T, usize)>,
        errors: impl Iterator<Item = (&'e str, String)>,
        prefix: &str,
        keyword: &str,
    ) {
        let mut drop: HashMap<usize, Vec<String>> = HashMap::new();
        for (path, text) in errors {
            let index = path
                .strip_prefix(prefix)
                .and_then(|r| r.split(']').next())
                .and_then(|i| i.parse::<usize>().ok())
                .filter(|i| *i < entries.len())
                .unwrap_or(entries.len() - 1);
            drop.entry(index).or_default().push(text);
        }
        for index in (0..entries.len()).rev() {
            if let Some(why) = drop.remove(&index) {
                let (_, line) = entries.remove(index);
                self.note(
                    line,
                    keyword,
                    format!("rejected by xlb's validation ({}); skipped", why.join("; ")),
                );
            }
        }
    }

    fn extra_args(&mut self, n: &Node) {
        const ONE: &[&str] = &[
            "protocol",
            "lb_algo",
            "lvs_sched",
            "persistence_timeout",
            "delay_loop",
            "connect_timeout",
            "retry",
            "nb_get_retry",
            "virtualhost",
            "weight",
            "connect_port",
            "path",
            "digest",
            "misc_timeout",
        ];
        if ONE.contains(&n.keyword.as_str()) && n.args.len() > 1 {
            self.note(
                n.line,
                &n.keyword,
                format!(
                    "extra arguments ignored: {} (one statement per line)",
                    n.args[1..].join(" ")
                ),
            );
        }
    }

    /// Lists `node` and everything in its block as not carried over.
    fn list_all(&mut self, node: &Node, reason: &str) {
        self.note(node.line, &node.keyword, reason);
        for child in node.block.iter().flatten() {
            self.list_all(child, reason);
        }
    }

    fn top_level(&mut self, node: &Node) {
        match node.keyword.as_str() {
            "virtual_server" => self.virtual_server(node),
            "virtual_server_group" => self.list_all(
                node,
                "virtual_server_group is not carried over: write one virtual_server per \
                 address and port (xlb has one service per VIP, port and protocol)",
            ),
            "include" => self.note(
                node.line,
                "include",
                format!(
                    "{} not read: import the included file separately",
                    node.args.join(" ")
                ),
            ),
            "global_defs" => {
                self.note(
                    node.line,
                    "global_defs",
                    "global settings: no xlb equivalent except the vrrp_* defaults of VRRP \
                     instances (each other one is listed)",
                );
                for n in node.block.iter().flatten() {
                    if !self.vrrp_global(n) {
                        self.list_all(
                            n,
                            "global setting: no xlb equivalent (e-mail alerts, router_id, \
                             logging, scripts)",
                        );
                    }
                }
            }
            _ if self.vrrp_top_level(node) => {}
            k if k.starts_with('$') || k.starts_with('@') => self.list_all(
                node,
                "keepalived parameters and conditional configuration ($NAME, @host) are not \
                 expanded: import a file without them",
            ),
            _ => self.list_all(node, "unknown keyword: not carried over"),
        }
    }

    fn virtual_server(&mut self, vs: &Node) {
        let line = vs.line;
        // Nothing inside a skipped virtual_server is converted: the note says why.
        let skip = |c: &mut Self, why: String| {
            c.note(line, "virtual_server", format!("{why}; skipped"));
        };
        let (vip, port) = match vs.args.as_slice() {
            [kind, name, ..] if kind == "group" => {
                return skip(
                    self,
                    format!(
                        "virtual_server group {name}: virtual_server_group is not carried \
                         over (write one virtual_server per address and port)"
                    ),
                )
            }
            [kind, ..] if kind == "fwmark" => {
                return skip(
                    self,
                    "fwmark services are not supported (xlb matches VIP, port and protocol)".into(),
                )
            }
            [ip, port, ..] => match (ip.parse::<IpAddr>(), port.parse::<u16>()) {
                (Ok(ip), Ok(port)) => (ip, (port != 0).then_some(port)),
                (Err(_), _) => return skip(self, format!("{ip:?} is not an IP address")),
                (_, Err(_)) => return skip(self, format!("{port:?} is not a port")),
            },
            _ => return skip(self, "needs an IP address and a port".into()),
        };
        let Some(body) = &vs.block else {
            return skip(self, "no { } block".into());
        };
        let what = format!("virtual_server {} {}", vs.args[0], vs.args[1]);

        // Everything noted while converting this service is dropped if it is skipped:
        // then the notes are only the reasons why.
        let notes_before = self.notes.len();
        let mac_noted_before = self.mac_noted.clone();
        let gue_port_before = self.gue_port;
        let mut fatal: Vec<Note> = Vec::new();
        let mut fail = |line: usize, keyword: &str, reason: String| {
            fatal.push(Note {
                line,
                keyword: keyword.to_owned(),
                reason: format!("{reason}; {what} skipped"),
            });
        };

        let mut protocol = Protocol::Tcp;
        let mut mode: Option<Mode> = None;
        let mut mode_given = false;
        let mut affinity = false;
        let mut hash_ports = false;
        let mut defaults = Defaults {
            interval_ms: 60_000,
            timeout_ms: 5_000,
            retry: None,
            host: None,
            initial: Health::Up,
            inhibit: false,
        };
        let mut sorry: Option<&Node> = None;
        let mut real_servers = Vec::new();
        for n in body {
            self.extra_args(n);
            let arg = n.args.first().map(String::as_str);
            let k = n.keyword.as_str();
            match k {
                "real_server" => real_servers.push(n),
                "protocol" => match arg.map(str::to_ascii_uppercase).as_deref() {
                    Some("TCP") => protocol = Protocol::Tcp,
                    Some("UDP") => protocol = Protocol::Udp,
                    other => fail(
                        n.line,
                        k,
                        format!(
                            "protocol {}: xlb balances TCP and UDP only",
                            other.unwrap_or("(none)")
                        ),
                    ),
                },
                "lb_kind" | "lvs_method" => {
                    mode_given = true;
                    match arg.map(str::to_ascii_uppercase).as_deref() {
                        Some("DR") => mode = Some(Mode::Dsr),
                        Some("TUN") => match tunnel_mode(&n.args[1..]) {
                            Ok((m, gue_port)) => {
                                mode = Some(m);
                                if let Some(p) = gue_port {
                                    match self.gue_port {
                                        Some((q, l)) if q != p => fail(
                                            n.line,
                                            k,
                                            format!(
                                                "GUE port {p} differs from {q} (line {l}): xlb \
                                                 has one GUE port (encap_sources.gue_port)"
                                            ),
                                        ),
                                        _ => self.gue_port = Some((p, n.line)),
                                    }
                                }
                            }
                            Err(why) => fail(n.line, k, why),
                        },
                        Some("NAT") => fail(
                            n.line,
                            k,
                            "NAT is not supported: xlb forwards by direct server return (DR) \
                             or encapsulation (TUN) and never rewrites addresses"
                                .into(),
                        ),
                        other => fail(
                            n.line,
                            k,
                            format!("{} is not DR, TUN or NAT", other.unwrap_or("(none)")),
                        ),
                    }
                }
                "lb_algo" | "lvs_sched" => match arg {
                    Some("sh" | "mh") => affinity = true,
                    Some(algo) => self.note(
                        n.line,
                        k,
                        format!(
                            "{algo} replaced by weighted Maglev consistent hashing (xlb's only \
                             scheduler): weights are kept, connection counts and order are not"
                        ),
                    ),
                    None => {}
                },
                "sh-port" | "mh-port" => hash_ports = true,
                // Maglev skips unusable backends anyway: nothing to carry over.
                "sh-fallback" | "mh-fallback" | "ip_family" => {}
                "persistence_timeout" => {
                    if arg.is_some_and(|t| t.parse::<f64>().is_ok_and(|t| t > 0.0)) {
                        affinity = true;
                        self.note(
                            n.line,
                            k,
                            "approximated by source_affinity: xlb hashes the client address, \
                             so a client keeps its backend with no timeout, as long as the \
                             backend set does not change",
                        );
                    }
                }
                "persistence_granularity" => self.note(
                    n.line,
                    k,
                    "not carried over: source_affinity hashes the whole client address",
                ),
                "persistence_engine" => {
                    self.note(n.line, k, "not carried over: no SIP persistence");
                }
                _ if self.check_default(&mut defaults, n.line, k, arg) => {}
                "inhibit_on_failure" => {
                    defaults.inhibit = !matches!(arg, Some("false" | "off" | "no"));
                }
                "sorry_server" => sorry = Some(n),
                "quorum" | "quorum_up" | "quorum_down" | "hysteresis" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb has no quorum, a service serves while any backend \
                     is usable (`fallback` decides what happens when none is; `notify` gets \
                     fallback/restored events)",
                ),
                "omega" => self.note(n.line, k, "not carried over: no quorum scripts in xlb"),
                "ha_suspend" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb checks backends in every VRRP state, so a new \
                     master knows their health at once (its services are on standby while \
                     it is backup)",
                ),
                "delay_before_retry" => self.note(n.line, k, delay_before_retry_reason()),
                "warmup" => self.note(n.line, k, warmup_reason()),
                "sorry_server_inhibit" | "sorry_server_lvs_method" => self.note(
                    n.line,
                    k,
                    "not carried over: the sorry server gets the service's forwarding",
                ),
                "ops" | "one_packet_scheduling" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb schedules flows, not packets (a UDP flow keeps \
                     its backend)",
                ),
                "nat_mask" | "net_mask" => self.note(n.line, k, "not carried over: NAT only"),
                "smtp_alert" => self.note(
                    n.line,
                    k,
                    "not carried over: no e-mail alerts (use the service's `notify`)",
                ),
                _ => self.list_all(n, "unknown keyword: not carried over"),
            }
        }
        let mode = match mode {
            Some(m) => m,
            None => {
                if !mode_given {
                    fail(
                        line,
                        "lb_kind",
                        "not set: keepalived's default is NAT, which xlb does not support".into(),
                    );
                }
                Mode::Dsr
            }
        };
        if !fatal.is_empty() {
            self.notes.truncate(notes_before);
            self.mac_noted = mac_noted_before;
            self.gue_port = gue_port_before;
            self.notes.extend(fatal);
            return;
        }
        if self
            .services
            .iter()
            .any(|(s, _)| s.vip == vip && s.port == port && s.protocol == protocol)
        {
            self.notes.truncate(notes_before);
            self.mac_noted = mac_noted_before;
            self.gue_port = gue_port_before;
            return skip(
                self,
                format!(
                    "{vip} {} port {} is already defined above",
                    if protocol == Protocol::Tcp {
                        "TCP"
                    } else {
                        "UDP"
                    },
                    port.unwrap_or(0)
                ),
            );
        }

        let mut spec = ServiceSpec::new(vip, port, protocol, mode, Vec::new());
        spec.source_affinity = affinity && !hash_ports;
        let mut inhibits: Vec<(bool, usize)> = Vec::new();
        for rs in real_servers {
            if let Some((backend, inhibit)) = self.real_server(rs, &spec, &defaults) {
                spec.backends.push(backend);
                inhibits.push((inhibit, rs.line));
            }
        }
        // on_failure is per service in xlb: drain (inhibit_on_failure) unless no real
        // server asks for it, then reset (keepalived removes a failed server).
        if !inhibits.is_empty() && inhibits.iter().all(|(i, _)| !i) {
            spec.on_failure = OnFailure::Reset;
        } else {
            for (_, l) in inhibits.iter().filter(|(i, _)| !i) {
                self.note(
                    *l,
                    "real_server",
                    "no inhibit_on_failure, but xlb's on_failure is per service: drain, as \
                     other real servers of this virtual_server inhibit",
                );
            }
        }
        // One check for the service when every backend has the same one.
        let first = spec.backends.first().and_then(|b| b.check.clone());
        if first.is_some() && spec.backends.iter().all(|b| b.check == first) {
            spec.check = first;
            for b in &mut spec.backends {
                b.check = None;
            }
        }
        if let Some(n) = sorry {
            self.sorry_server(n, &mut spec);
        }
        self.services.push((spec, line));
    }

    fn sorry_server(&mut self, n: &Node, spec: &mut ServiceSpec) {
        let k = "sorry_server";
        let Some(ip) = n.args.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
            return self.note(n.line, k, "needs an IP address: not carried over");
        };
        if ip.is_ipv4() != spec.vip.is_ipv4() {
            return self.note(
                n.line,
                k,
                format!("{ip} is not of the VIP's address family"),
            );
        }
        if spec.backends.iter().any(|b| b.address == ip) {
            return self.note(n.line, k, format!("{ip} is also a real_server"));
        }
        if let Some(p) = n.args.get(1).and_then(|p| p.parse::<u16>().ok()) {
            if spec.port.is_some_and(|sp| sp != p) {
                self.note(n.line, k, port_reason(p, spec.port));
            }
        }
        let mac = self.mac(ip, n.line, k);
        spec.fallback = Fallback::SorryServer(Box::new(BackendSpec::new(ip, mac, 1)));
    }

    /// The next-hop MAC of `ip`: given with `--mac`, else the placeholder (reported once).
    fn mac(&mut self, ip: IpAddr, line: usize, keyword: &str) -> MacAddr {
        if let Some(mac) = self.options.macs.get(&ip) {
            self.macs_used.insert(ip);
            return *mac;
        }
        if self.mac_noted.insert(ip) {
            self.note(
                line,
                keyword,
                format!(
                    "MAC of {ip} unknown: placeholder {PLACEHOLDER_MAC} written; set the \
                     next-hop MAC (or pass --mac {ip}=MAC)"
                ),
            );
        }
        PLACEHOLDER_MAC
    }

    /// A backend, and whether it has `inhibit_on_failure`.
    fn real_server(
        &mut self,
        rs: &Node,
        spec: &ServiceSpec,
        defaults: &Defaults,
    ) -> Option<(BackendSpec, bool)> {
        let k = "real_server";
        let Some(ip) = rs.args.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
            self.note(rs.line, k, "needs an IP address and a port: skipped");
            return None;
        };
        if ip.is_ipv4() != spec.vip.is_ipv4() {
            self.note(
                rs.line,
                k,
                format!("{ip} is not of the VIP's address family: skipped"),
            );
            return None;
        }
        if ip.is_unspecified() || ip.is_multicast() {
            self.note(rs.line, k, format!("{ip} cannot be a backend: skipped"));
            return None;
        }
        if spec.backends.iter().any(|b| b.address == ip) {
            self.note(rs.line, k, format!("{ip} is listed twice: skipped"));
            return None;
        }
        match rs.args.get(1).map(|p| p.parse::<u16>()) {
            Some(Ok(p)) if spec.port.unwrap_or(0) != p => {
                self.note(rs.line, k, port_reason(p, spec.port));
            }
            Some(Err(_)) => self.note(rs.line, k, "port is not a number: ignored"),
            _ => {}
        }
        let mac = self.mac(ip, rs.line, k);
        let mut backend = BackendSpec::new(ip, mac, 1);
        let mut defaults = defaults.clone();
        let mut checkers = Vec::new();
        for n in rs.block.iter().flatten() {
            self.extra_args(n);
            let arg = n.args.first().map(String::as_str);
            let nk = n.keyword.as_str();
            match nk {
                "weight" => match arg.and_then(|w| w.parse::<u64>().ok()) {
                    Some(w) if w > u64::from(MAX_WEIGHT) => {
                        self.note(n.line, nk, format!("{w} above xlb's maximum: {MAX_WEIGHT}"));
                        backend.weight = MAX_WEIGHT;
                    }
                    Some(w) => backend.weight = w as u32,
                    None => self.note(n.line, nk, "not a number: weight 1"),
                },
                "inhibit_on_failure" => {
                    defaults.inhibit = !matches!(arg, Some("false" | "off" | "no"));
                }
                "notify_up" | "notify_down" => self.note(n.line, nk, NOTIFY_REASON),
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "PING_CHECK" | "MISC_CHECK"
                | "SMTP_CHECK" | "DNS_CHECK" | "UDP_CHECK" | "BFD_CHECK" | "FILE_CHECK" => {
                    checkers.push(n);
                }
                _ if self.check_default(&mut defaults, n.line, nk, arg) => {}
                "delay_before_retry" => self.note(n.line, nk, delay_before_retry_reason()),
                "warmup" => self.note(n.line, nk, warmup_reason()),
                "lb_kind" | "lvs_method" => self.note(
                    n.line,
                    nk,
                    "not carried over: the forwarding method is per service in xlb",
                ),
                "uthreshold" | "lthreshold" => self.note(
                    n.line,
                    nk,
                    "not carried over: xlb does not count connections per backend",
                ),
                "smtp_alert" => self.note(
                    n.line,
                    nk,
                    "not carried over: no e-mail alerts (use the service's `notify`)",
                ),
                _ => self.list_all(n, "unknown keyword: not carried over"),
            }
        }
        let mut used: Option<usize> = None;
        for n in checkers {
            if let Some(first) = used {
                self.note(
                    n.line,
                    &n.keyword,
                    format!("xlb runs one check per backend: the checker on line {first} is used"),
                );
                continue;
            }
            if let Some(check) = self.checker(n, spec, &defaults) {
                backend.check = Some(check);
                used = Some(n.line);
            }
        }
        Some((backend, defaults.inhibit))
    }

    /// One checker block as a check, or `None` (noted) if it cannot be carried over.
    fn checker(&mut self, ck: &Node, spec: &ServiceSpec, defaults: &Defaults) -> Option<CheckSpec> {
        let (kind, default_retry) = match ck.keyword.as_str() {
            "TCP_CHECK" => (CheckKind::Tcp, 1),
            "HTTP_GET" => (CheckKind::Http, 1),
            "SSL_GET" => (CheckKind::Https, 1),
            "PING_CHECK" => (CheckKind::Icmp, 1),
            "MISC_CHECK" => (CheckKind::Exec, 0),
            other => {
                self.note(
                    ck.line,
                    other,
                    "not carried over: xlb has no such check type (this backend gets no \
                     check from it)",
                );
                return None;
            }
        };
        let mut check = CheckSpec::new(kind);
        check.interval_ms = defaults.interval_ms;
        check.timeout_ms = defaults.timeout_ms;
        check.rise = 1;
        check.initial = defaults.initial;
        let mut retry = defaults.retry;
        let mut host = defaults.host.clone();
        let mut url: Option<&Node> = None;
        let http = matches!(kind, CheckKind::Http | CheckKind::Https);
        // keepalived's MISC_CHECK times out after delay_loop unless misc_timeout says.
        let mut misc_timeout: Option<u64> = None;
        for n in ck.block.iter().flatten() {
            self.extra_args(n);
            let arg = n.args.first().map(String::as_str);
            let k = n.keyword.as_str();
            match k {
                "connect_timeout" if kind != CheckKind::Exec => match arg.and_then(seconds_ms) {
                    Some(ms) => check.timeout_ms = ms,
                    None => self.note(n.line, k, "not a number of seconds: ignored"),
                },
                "connect_port" if !matches!(kind, CheckKind::Icmp | CheckKind::Exec) => {
                    match arg.and_then(|p| p.parse::<u16>().ok()) {
                        Some(p) if p != 0 => check.port = Some(p),
                        _ => self.note(n.line, k, "not a port: ignored"),
                    }
                }
                "retry" | "nb_get_retry" => match arg.and_then(|a| a.parse().ok()) {
                    Some(r) => retry = Some(r),
                    None => self.note(n.line, k, "not a number: ignored"),
                },
                "delay_loop" => match arg.and_then(seconds_ms) {
                    Some(ms) => check.interval_ms = ms,
                    None => self.note(n.line, k, "not a number of seconds: ignored"),
                },
                "delay_before_retry" => self.note(n.line, k, delay_before_retry_reason()),
                "warmup" => self.note(n.line, k, warmup_reason()),
                "alpha" => check.initial = Health::Down,
                "url" if http => {
                    if let Some(first) = url {
                        self.note(
                            n.line,
                            k,
                            format!(
                                "xlb checks one URL: the url block on line {} is used",
                                first.line
                            ),
                        );
                    } else {
                        url = Some(n);
                    }
                }
                "virtualhost" if http => host = arg.map(str::to_owned),
                "misc_path" if kind == CheckKind::Exec => {
                    // keepalived splits the script line into words itself: quoted as
                    // one argument or not, it is one command line.
                    match split_command(&n.args.join(" ")) {
                        Ok(argv) => check.command = Some(argv),
                        Err(e) => self.note(n.line, k, format!("cannot split the command: {e}")),
                    }
                }
                "misc_timeout" if kind == CheckKind::Exec => match arg.and_then(seconds_ms) {
                    Some(ms) => misc_timeout = Some(ms),
                    None => self.note(n.line, k, "not a number of seconds: ignored"),
                },
                "misc_dynamic" if kind == CheckKind::Exec => self.note(
                    n.line,
                    k,
                    "not carried over: xlb's exec check has no dynamic weight; exit status 0 \
                     is up and any other is down, so exit codes 2-255 (keepalived: up with \
                     weight code-2) take the backend out",
                ),
                "user" if kind == CheckKind::Exec => self.note(
                    n.line,
                    k,
                    "not carried over: xlb runs exec checks as the daemon's user",
                ),
                "connect_ip" | "bindto" | "bind_port" | "bind_if" | "fwmark" => self.note(
                    n.line,
                    k,
                    "not carried over: xlb probes the backend address from the host's own \
                     routing",
                ),
                "log_all_failures" => self.note(
                    n.line,
                    k,
                    "not needed: xlb logs every state change (not every failed probe)",
                ),
                _ => self.list_all(n, "not carried over for this check type"),
            }
        }
        check.fall = retry.unwrap_or(default_retry).saturating_add(1).max(1);
        if http {
            check.host = host;
            if let Some(url) = url {
                self.url(url, &mut check);
            }
        }
        if kind == CheckKind::Https {
            check.tls_insecure = true;
            self.note(
                ck.line,
                &ck.keyword,
                "keepalived does not verify the server's certificate: tls_insecure written; \
                 remove it to have xlb verify the certificate (Mozilla roots, for `host` or \
                 the backend address)",
            );
        }
        if kind == CheckKind::Exec {
            check.timeout_ms = misc_timeout.unwrap_or(check.interval_ms);
        }
        if check.port == spec.port && spec.port.is_some() {
            check.port = None;
        }
        self.fit_timing(ck, &mut check);
        let problems = check.problems(spec.port);
        if !problems.is_empty() {
            let why: Vec<String> = problems.iter().map(|(f, r)| format!("{f}: {r}")).collect();
            self.note(
                ck.line,
                &ck.keyword,
                format!(
                    "not carried over: {} (this backend gets no check)",
                    why.join("; ")
                ),
            );
            return None;
        }
        Some(check)
    }

    /// Keeps interval and timeout within what xlb accepts, noting every change.
    fn fit_timing(&mut self, ck: &Node, check: &mut CheckSpec) {
        let k = &ck.keyword;
        let interval = check.interval_ms.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS);
        if interval != check.interval_ms {
            self.note(
                ck.line,
                k,
                format!(
                    "interval {} ms outside xlb's {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS}: {interval} ms",
                    check.interval_ms
                ),
            );
            check.interval_ms = interval;
        }
        if check.timeout_ms > check.interval_ms {
            self.note(
                ck.line,
                k,
                format!(
                    "timeout {} ms is longer than the interval (delay_loop) {} ms: xlb needs \
                     timeout <= interval, timeout set to {} ms",
                    check.timeout_ms, check.interval_ms, check.interval_ms
                ),
            );
            check.timeout_ms = check.interval_ms;
        }
        if check.timeout_ms == 0 {
            self.note(
                ck.line,
                k,
                "timeout 0: xlb needs at least 1 ms, set to 1 ms",
            );
            check.timeout_ms = 1;
        }
    }

    fn url(&mut self, url: &Node, check: &mut CheckSpec) {
        let mut status: Vec<u16> = Vec::new();
        for n in url.block.iter().flatten() {
            self.extra_args(n);
            let k = n.keyword.as_str();
            match k {
                "path" => match n.args.first() {
                    Some(p) if p.starts_with('/') => check.path = Some(p.clone()),
                    _ => self.note(n.line, k, "not an absolute path: `/` is checked"),
                },
                "status_code" => match status_codes(&n.args) {
                    Some(codes) => status.extend(codes),
                    None => self.note(
                        n.line,
                        k,
                        "not status codes (N or N-M in 100..=599): 200 is expected",
                    ),
                },
                "virtualhost" => check.host = n.args.first().cloned(),
                "digest" => match n.args.first() {
                    Some(d) if d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {
                        check.digest = Some(d.to_ascii_lowercase());
                    }
                    _ => self.note(n.line, k, "not an MD5 (32 hex digits): ignored"),
                },
                "regex" | "regex_no_match" | "regex_max_offset" | "regex_min_offset"
                | "regex_stack" | "regex_options" => self.note(
                    n.line,
                    k,
                    "not carried over: no regular expressions (xlb's body_contains is a \
                     plain substring)",
                ),
                _ => self.list_all(n, "not carried over"),
            }
        }
        if !status.is_empty() {
            status.sort_unstable();
            status.dedup();
            check.expect_status = Some(status);
        }
    }

    fn finish(mut self, instances: &[&Node]) -> ImportReport {
        let mut config = Config::default();
        let needs = |v4: bool| {
            self.services
                .iter()
                .find(|(s, _)| s.mode != Mode::Dsr && s.vip.is_ipv4() == v4)
                .map(|(_, l)| *l)
        };
        let (need_v4, need_v6) = (needs(true), needs(false));
        config.encap_sources.v4 = self.options.encap_v4;
        config.encap_sources.v6 = self.options.encap_v6;
        if let (Some(line), None) = (need_v4, self.options.encap_v4) {
            config.encap_sources.v4 = Some(Ipv4Addr::UNSPECIFIED);
            self.note(line, "virtual_server", encap_reason("v4", "0.0.0.0"));
        }
        if let (Some(line), None) = (need_v6, self.options.encap_v6) {
            config.encap_sources.v6 = Some(Ipv6Addr::UNSPECIFIED);
            self.note(line, "virtual_server", encap_reason("v6", "::"));
        }
        if let Some((port, _)) = self.gue_port {
            config.encap_sources.gue_port = port;
        }
        // The converter keeps each service valid; should anything still fail the
        // config's validation, the services concerned are dropped rather than writing
        // a config `xlb run` refuses.
        let mut services = std::mem::take(&mut self.services);
        loop {
            let specs: Vec<ServiceSpec> = services.iter().map(|(s, _)| s.clone()).collect();
            let Err(errors) = services::validate(&specs, &config.encap_sources) else {
                break;
            };
            let errors = errors.iter().map(|e| (e.path.as_str(), e.to_string()));
            self.drop_rejected(&mut services, errors, "services[", "virtual_server");
        }
        config.services = services.into_iter().map(|(s, _)| s).collect();
        config.vrrp = self.vrrp(instances, &config.services);
        let unused: Vec<IpAddr> = self
            .options
            .macs
            .keys()
            .filter(|ip| !self.macs_used.contains(ip))
            .copied()
            .collect();
        for ip in unused {
            self.note(
                0,
                "--mac",
                format!("{ip} is no real_server or sorry_server of a converted service"),
            );
        }
        self.notes.sort_by_key(|n| n.line);
        ImportReport {
            config,
            notes: self.notes,
        }
    }
}

impl Converter<'_> {
    /// The VRRP instances, each valid for a host that has its interfaces: an instance
    /// the validation still rejects is dropped (noted), as services are.
    fn vrrp(&mut self, instances: &[&Node], services: &[ServiceSpec]) -> Vec<vrrp_spec::VrrpSpec> {
        let names: Vec<String> = services.iter().map(|s| describe_vip(&vip_key(s))).collect();
        let vips: Vec<(IpAddr, String)> = services
            .iter()
            .zip(&names)
            .map(|(s, n)| (s.vip, n.clone()))
            .collect();
        let mut out: Vec<(vrrp_spec::VrrpSpec, usize)> = Vec::new();
        for node in instances {
            if let Some(spec) = self.vrrp_instance(node, &vips) {
                if let Some((_, l)) = out.iter().find(|(o, _)| o.name == spec.name) {
                    let reason = format!("{} is already defined on line {l}; skipped", spec.name);
                    self.note(node.line, "vrrp_instance", reason);
                    continue;
                }
                out.push((spec, node.line));
            }
        }
        loop {
            let specs: Vec<_> = out.iter().map(|(s, _)| s.clone()).collect();
            let errors: Vec<_> = vrrp_spec::validate(&specs, &names)
                .into_iter()
                .filter(|e| !vrrp_spec::host_dependent(e))
                .collect();
            if errors.is_empty() {
                break;
            }
            let errors = errors.iter().map(|e| (e.path.as_str(), e.to_string()));
            self.drop_rejected(&mut out, errors, "vrrp[", "vrrp_instance");
        }
        out.into_iter().map(|(s, _)| s).collect()
    }
}

/// `TUN` arguments (keepalived ≥ 2.2): `[type ipip|gue port N|gre]`.
fn tunnel_mode(args: &[String]) -> Result<(Mode, Option<u16>), String> {
    let mut it = args.iter().map(String::as_str);
    match (it.next(), it.next()) {
        (None, _) | (Some("type"), Some("ipip")) => Ok((Mode::Ipip, None)),
        (Some("type"), Some("gue")) => {
            let mut port = None;
            while let Some(a) = it.next() {
                if a == "port" {
                    port = it
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                        .filter(|p| *p != 0);
                }
            }
            match port {
                Some(p) => Ok((Mode::Gue, Some(p))),
                None => Err("TUN type gue needs `port N`".into()),
            }
        }
        (Some("type"), Some("gre")) => {
            Err("TUN type gre is not supported: xlb encapsulates in IPIP or GUE".into())
        }
        _ => Err(format!("TUN {}: unknown tunnel arguments", args.join(" "))),
    }
}

fn encap_reason(family: &str, placeholder: &str) -> String {
    format!(
        "TUN needs the balancer's own address as outer source: encap_sources.{family} \
         placeholder {placeholder} written; set it (or pass --encap-source IP)"
    )
}

fn port_reason(port: u16, service: Option<u16>) -> String {
    match service {
        Some(sp) => format!(
            "port {port} not carried over: DSR and IPIP deliver to the virtual_server port \
             {sp} (no port translation); the server must listen on {sp}"
        ),
        None => format!(
            "port {port} not carried over: the service takes all ports and delivers each \
             packet to its own destination port"
        ),
    }
}

fn delay_before_retry_reason() -> &'static str {
    "not carried over: xlb probes at interval_ms (delay_loop) also after a failure, so a \
     failure is confirmed after fall x interval, not retry x delay_before_retry"
}

fn warmup_reason() -> &'static str {
    "not carried over: xlb spreads the first probes of all backends over the interval"
}

#[cfg(test)]
mod tests;
