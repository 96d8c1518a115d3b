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

mod vrrp;

use crate::config::vrrp as vrrp_spec;

use super::{ImportReport, Note, Options, ParseError, PLACEHOLDER_MAC};
use crate::{
    config::{
        check::{CheckKind, CheckSpec, Health, MAX_INTERVAL_MS, MIN_INTERVAL_MS},
        service::{vip_key, MAX_WEIGHT},
        validate, BackendSpec, Config, Fallback, MacAddr, Mode, OnFailure, Protocol, ServiceSpec,
    },
    dataplane::addr::describe_vip,
};

/// Blocks nested deeper than this are refused (keepalived itself nests four deep).
pub const MAX_DEPTH: usize = 32;

/// One statement: `keyword args... [{ block }]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub keyword: String,
    pub args: Vec<String>,
    /// 1-based line of the keyword.
    pub line: usize,
    pub block: Option<Vec<Node>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Eol,
}

/// Splits `text` into words, braces and line ends, each with its line.
fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut word: Option<String> = None;
    let mut chars = text.chars().peekable();
    let flush = |word: &mut Option<String>, out: &mut Vec<(Tok, usize)>, line: usize| {
        if let Some(w) = word.take() {
            out.push((Tok::Word(w), line));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\n' => {
                flush(&mut word, &mut out, line);
                out.push((Tok::Eol, line));
                line += 1;
            }
            ' ' | '\t' | '\r' | '\x0b' | '\x0c' => flush(&mut word, &mut out, line),
            '#' | '!' => {
                flush(&mut word, &mut out, line);
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            '{' | '}' => {
                flush(&mut word, &mut out, line);
                out.push((if c == '{' { Tok::Open } else { Tok::Close }, line));
            }
            '\\' if chars.peek() == Some(&'\n') => {
                // Line continuation: the statement goes on, on the next line.
                chars.next();
                flush(&mut word, &mut out, line);
                line += 1;
            }
            '"' => {
                let start = line;
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        None | Some('\n') => {
                            return Err(ParseError {
                                line: start,
                                message: "unterminated quoted string (quotes end on their line)"
                                    .into(),
                            })
                        }
                        Some('"') => break,
                        Some('\\') if matches!(chars.peek(), Some('"' | '\\')) => {
                            w.extend(chars.next());
                        }
                        Some(c) => w.push(c),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    flush(&mut word, &mut out, line);
    Ok(out)
}

/// Parses keepalived.conf syntax into a tree of statements.
pub fn parse(text: &str) -> Result<Vec<Node>, ParseError> {
    let tokens = tokenize(text)?;
    let mut pos = 0;
    block(&tokens, &mut pos, 0, None)
}

fn block(
    tokens: &[(Tok, usize)],
    pos: &mut usize,
    depth: usize,
    opened: Option<usize>,
) -> Result<Vec<Node>, ParseError> {
    if depth > MAX_DEPTH {
        return Err(ParseError {
            line: opened.unwrap_or(0),
            message: format!("blocks nested deeper than {MAX_DEPTH}"),
        });
    }
    let mut nodes: Vec<Node> = Vec::new();
    // Whether the last statement ended at a line end without a block: only then may a
    // `{` at the start of a line open its block.
    let mut may_open = false;
    while let Some((tok, line)) = tokens.get(*pos) {
        *pos += 1;
        match tok {
            Tok::Eol => {}
            Tok::Close => {
                return match opened {
                    Some(_) => Ok(nodes),
                    None => Err(ParseError {
                        line: *line,
                        message: "`}` without a matching `{`".into(),
                    }),
                }
            }
            Tok::Open => match nodes.last_mut() {
                Some(node) if may_open && node.block.is_none() => {
                    node.block = Some(block(tokens, pos, depth + 1, Some(*line))?);
                    may_open = false;
                }
                _ => {
                    return Err(ParseError {
                        line: *line,
                        message: "`{` without a keyword before it".into(),
                    })
                }
            },
            Tok::Word(keyword) => {
                let mut node = Node {
                    keyword: keyword.clone(),
                    args: Vec::new(),
                    line: *line,
                    block: None,
                };
                may_open = true;
                while let Some((tok, line)) = tokens.get(*pos) {
                    match tok {
                        Tok::Word(w) => node.args.push(w.clone()),
                        Tok::Open => {
                            *pos += 1;
                            node.block = Some(block(tokens, pos, depth + 1, Some(*line))?);
                            may_open = false;
                            break;
                        }
                        Tok::Close => {
                            may_open = false;
                            break;
                        }
                        Tok::Eol => break,
                    }
                    *pos += 1;
                }
                nodes.push(node);
            }
        }
    }
    match opened {
        Some(line) => Err(ParseError {
            line,
            message: "`{` opened here is never closed".into(),
        }),
        None => Ok(nodes),
    }
}

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
            let Err(errors) = validate::services(&specs, &config.encap_sources) else {
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

/// keepalived timers: seconds, fractions allowed. `None` for anything else.
fn seconds_ms(text: &str) -> Option<u64> {
    let s: f64 = text.parse().ok()?;
    (s.is_finite() && (0.0..=1e9).contains(&s)).then(|| (s * 1000.0).round() as u64)
}

/// `status_code` arguments: codes and `N-M` ranges in 100..=599.
fn status_codes(args: &[String]) -> Option<Vec<u16>> {
    let mut out = Vec::new();
    for a in args {
        let (lo, hi) = match a.split_once('-') {
            Some((lo, hi)) => (lo.parse::<u16>().ok()?, hi.parse::<u16>().ok()?),
            None => {
                let c = a.parse::<u16>().ok()?;
                (c, c)
            }
        };
        if !(100..=599).contains(&lo) || !(lo..=599).contains(&hi) {
            return None;
        }
        out.extend(lo..=hi);
    }
    (!out.is_empty()).then_some(out)
}

/// Splits a command line into words like a shell would without expanding anything:
/// whitespace separates, '...' and "..." quote, `\` escapes the next character.
pub fn split_command(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => out.extend(word.take()),
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("trailing \\".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(word);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::import::{parse_for_another_host, to_json};

    const SAMPLE: &str = include_str!("../../tests/fixtures/keepalived/sample.conf");
    const DR_TCP: &str = include_str!("../../tests/fixtures/keepalived/dr_tcp.conf");
    const TUN_MISC: &str = include_str!("../../tests/fixtures/keepalived/tun_misc.conf");
    const QUIRKS: &str = include_str!("../../tests/fixtures/keepalived/quirks.conf");
    const VRRP: &str = include_str!("../../tests/fixtures/keepalived/vrrp.conf");

    const VRRP_NOTES: [(usize, &str, &str); 24] = [
        (
            2,
            "global_defs",
            "global settings: no xlb equivalent except the vrrp_* defaults of VRRP instances (each other one is listed)",
        ),
        (
            3,
            "router_id",
            "global setting: no xlb equivalent (e-mail alerts, router_id, logging, scripts)",
        ),
        (
            7,
            "vrrp_garp_master_delay",
            "not carried over: keepalived repeats the gratuitous ARPs 10 s after becoming master; xlb sends its garp.repeat announcements garp.delay_ms apart at once (and again when the link comes back), with no second round. For a slow switch raise garp.delay_ms",
        ),
        (
            8,
            "enable_script_security",
            "global setting: no xlb equivalent (e-mail alerts, router_id, logging, scripts)",
        ),
        (
            11,
            "vrrp_script",
            "chk_web (/usr/local/bin/check-web) not carried over: xlb lowers an instance's priority by its own health checks instead of scripts: `track_services` (a service with no usable backend) and `track_interfaces`",
        ),
        (
            17,
            "vrrp_sync_group",
            "VG_WEB (VI_WEB4, VI_WEB6) not carried over: xlb has no sync groups, each instance is elected on its own and they may be master on different hosts (give them the same priorities and tracking so that they move together). Its notify and track settings are not carried over either",
        ),
        (
            31,
            "unicast_src_ip",
            "not carried over: xlb sends adverts from the interface's primary address (IPv6: its link-local address); peers that check the source must expect that one",
        ),
        (
            37,
            "203.0.113.10/24",
            "/24 not carried over: xlb adds virtual addresses as /32 (no subnet route from them; the host's own address on that subnet provides it)",
        ),
        (
            37,
            "203.0.113.10/24",
            "label bond0:web not carried over: xlb adds a plain address (no label, scope or flags)",
        ),
        (
            40,
            "virtual_ipaddress_excluded",
            "1 excluded addresses not carried over: xlb adds only the advertised `addresses` (at most 16); add them there if they fit, or to the host's network configuration",
        ),
        (
            45,
            "eth3",
            "no weight (keepalived: FAULT while down, the instance gives up the addresses): weight 149 written, the priority drops to 1 while it is down and any peer takes over",
        ),
        (
            47,
            "track_script",
            "chk_web not carried over: xlb tracks services with its own health checks instead of scripts; for the converted services on this instance's addresses add e.g. \"track_services\": [{\"service\": \"203.0.113.10:80/tcp\", \"weight\": 60}]",
        ),
        (
            50,
            "notify",
            "carried over with other arguments: keepalived calls it as `SCRIPT INSTANCE NAME STATE PRIORITY` (STATE MASTER, BACKUP, FAULT, STOP); xlb as `argv... STATE NAME REASON` with STATE master, backup or initialize (lower case): adapt the script to read the state from its first argument",
        ),
        (
            51,
            "notify_master",
            "not carried over: xlb runs one `notify` per instance as `argv... STATE NAME REASON` (STATE master, backup, initialize; no fault or stop). Call this script from one that dispatches on its first argument and set that one as `notify`",
        ),
        (
            52,
            "garp_master_refresh",
            "not carried over: xlb does not refresh gratuitous ARPs periodically while master (only after becoming master and when the link comes back)",
        ),
        (
            56,
            "state",
            "MASTER not carried over: xlb starts every instance as backup (unless priority 255) and becomes master after the master-down interval if no better master advertises; the priority decides",
        ),
        (
            60,
            "advert_int",
            "0.125 s: VRRPv3 advertises 10 ms steps (0.01..=40.95 s), 130 ms, as keepalived",
        ),
        (
            62,
            "2001:db8:10::10/64",
            "/64 not carried over: xlb adds virtual addresses as /128 (no subnet route from them; the host's own address on that subnet provides it)",
        ),
        (
            64,
            "192.0.2.99",
            "not of the family of 2001:db8:10::10: not carried over (xlb instances are IPv4 or IPv6; write another vrrp_instance for it)",
        ),
        (
            68,
            "2001:db8:10::13",
            "not carried over: xlb sends and receives IPv6 adverts on link-local addresses only (RFC 5798); write this peer's fe80:: address",
        ),
        (
            71,
            "eth2",
            "positive weights: keepalived adds them to the priority while the interface is up, xlb subtracts the weight while it is down; priority 200 + 20 = 220 written, so that the priority with every interface up is keepalived's",
        ),
        (
            73,
            "authentication",
            "not carried over: keepalived ignores authentication with VRRPv3 too",
        ),
        (
            77,
            "use_vmac",
            "not carried over: xlb has no virtual MAC; a new master announces the addresses with its own MAC (gratuitous ARP / unsolicited NA)",
        ),
        (
            80,
            "vrrp_instance",
            "VI_WEB6 is already defined on line 55; skipped",
        ),
    ];

    /// A VRRP-heavy config: two instances (v3 with unicast peers, track_interface and
    /// nopreempt; IPv6 with a link-local peer), global VRRP defaults, a sync group and a
    /// script, a duplicate instance. Exact JSON and exact notes.
    #[test]
    fn vrrp_instances_exact() {
        let mut options = Options::default();
        options.macs.insert(
            "10.2.0.1".parse().unwrap(),
            "52:54:00:02:00:01".parse().unwrap(),
        );
        let (config, _, report) = run(VRRP, &options);
        assert_eq!(
            config,
            json!({
                "encap_sources": {},
                "services": [
                    {
                        "vip": "203.0.113.10", "port": 80, "protocol": "tcp", "mode": "dsr",
                        "check": {"type": "tcp", "interval_ms": 2000, "timeout_ms": 1000,
                                  "rise": 1, "fall": 2, "initial": "up"},
                        "on_failure": "reset",
                        "fallback": "drop",
                        "backends": [
                            {"address": "10.2.0.1", "mac": "52:54:00:02:00:01", "weight": 1}
                        ]
                    }
                ],
                "vrrp": [
                    {
                        "name": "VI_WEB4", "interface": "bond0", "vrid": 51, "priority": 150,
                        "version": 3, "advert_int_ms": 250, "preempt": false,
                        "preempt_delay_ms": 0,
                        "addresses": ["203.0.113.10", "203.0.113.11"],
                        "track_interfaces": [
                            {"interface": "eth2", "weight": 50},
                            {"interface": "eth3", "weight": 149}
                        ],
                        "unicast_peers": ["10.1.0.12", "10.1.0.13"],
                        "garp": {"repeat": 3, "delay_ms": 50},
                        "notify": ["/usr/local/bin/vrrp-notify", "--log"]
                    },
                    {
                        "name": "VI_WEB6", "interface": "bond0", "vrid": 52, "priority": 220,
                        "version": 3, "advert_int_ms": 130, "preempt": true,
                        "preempt_delay_ms": 0,
                        "addresses": ["2001:db8:10::10", "2001:db8:10::11"],
                        "track_interfaces": [{"interface": "eth2", "weight": 20}],
                        "unicast_peers": ["fe80::12"],
                        "garp": {"repeat": 3, "delay_ms": 100}
                    }
                ]
            })
        );
        let got: Vec<(usize, &str, &str)> = report
            .notes
            .iter()
            .map(|n| (n.line, n.keyword.as_str(), n.reason.as_str()))
            .collect();
        assert_eq!(got, VRRP_NOTES);
        // Written for another host: its interfaces need not exist here, but where they
        // do not, the full check (`xlb check-config`) names them.
        let json = to_json(&report.config);
        match Config::parse(&json) {
            Ok(_) => {}
            Err(crate::config::ConfigError::Invalid { errors, .. }) => {
                assert!(
                    errors.iter().all(crate::config::vrrp::host_dependent),
                    "{errors:?}"
                );
            }
            Err(e) => panic!("{e}"),
        }
    }

    /// keepalived's own defaults and corrections, and the instances it would refuse.
    #[test]
    fn vrrp_keepalived_rules() {
        let text = "vrrp_instance V2 {
    state MASTER
    virtual_router_id 7
    advert_int 2.5
    nopreempt
    preempt_delay 5
    authentication {
        auth_type PASS
        auth_pass 1234
    }
    virtual_ipaddress {
        10.0.0.7
    }
    track_interface {
        eth9 weight 10 reverse
    }
    track_script {
        chk
    }
}
vrrp_instance V6 {
    interface eth0
    version 2
    virtual_router_id 8
    priority 0
    virtual_ipaddress {
        fd00::8
    }
}
vrrp_instance NOVRID {
    interface eth0
    virtual_ipaddress {
        10.0.0.9
    }
}
vrrp_instance NOVIP {
    interface eth0
    virtual_router_id 9
}
vrrp_instance BADIF {
    interface \"a/b\"
    virtual_router_id 10
    virtual_ipaddress {
        10.0.0.10
    }
}
vrrp_instance SAME {
    interface eth0
    virtual_router_id 8
    virtual_ipaddress {
        fd00::9
    }
}
";
        let (config, notes, report) = run(text, &Options::default());
        assert_eq!(
            config["vrrp"],
            json!([
                {
                    // state MASTER without a priority: 255; keepalived's default version 2
                    // rounds 2.5 s to 3 s; nopreempt and preempt_delay are cleared.
                    "name": "V2", "interface": "eth0", "vrid": 7, "priority": 255,
                    "version": 2, "advert_int_ms": 3000, "preempt": true,
                    "preempt_delay_ms": 0, "addresses": ["10.0.0.7"],
                    "garp": {"repeat": 5, "delay_ms": 100}
                },
                {
                    "name": "V6", "interface": "eth0", "vrid": 8, "priority": 100,
                    "version": 3, "advert_int_ms": 1000, "preempt": true,
                    "preempt_delay_ms": 0, "addresses": ["fd00::8"],
                    "garp": {"repeat": 5, "delay_ms": 100}
                }
            ])
        );
        assert_eq!(
            notes,
            owned(&[
                (1, "vrrp_instance"),
                (2, "state"),
                (4, "advert_int"),
                (5, "nopreempt"),
                (6, "preempt_delay"),
                (7, "authentication"),
                (15, "eth9"),
                (17, "track_script"),
                (23, "version"),
                (25, "priority"),
                (30, "vrrp_instance"),
                (36, "vrrp_instance"),
                (40, "vrrp_instance"),
                (47, "vrrp_instance"),
            ])
        );
        assert_eq!(
            reason(&report, 1, "vrrp_instance"),
            "no interface: eth0, keepalived's default_interface"
        );
        assert!(
            reason(&report, 7, "authentication").starts_with(
                "NOT CARRIED OVER, BREAKS INTEROPERATION: xlb sends VRRPv2 adverts without \
                 authentication"
            ),
            "{}",
            reason(&report, 7, "authentication")
        );
        assert_eq!(
            reason(&report, 4, "advert_int"),
            "2.5 s: VRRPv2 advertises whole seconds (1..=255), 3000 ms, as keepalived"
        );
        assert_eq!(
            reason(&report, 17, "track_script"),
            "chk not carried over: xlb tracks services with its own health checks instead \
             of scripts; list the services it protects in `track_services` \
             (`vip:port/proto`, weight 254)"
        );
        assert_eq!(
            reason(&report, 30, "vrrp_instance"),
            "NOVRID: no virtual_router_id; skipped"
        );
        assert_eq!(
            reason(&report, 36, "vrrp_instance"),
            "NOVIP: no virtual_ipaddress (xlb needs at least one); skipped"
        );
        assert_eq!(
            reason(&report, 40, "vrrp_instance"),
            "BADIF: line 41: interface a/b: not an interface name; skipped"
        );
        assert_eq!(
            reason(&report, 47, "vrrp_instance"),
            "rejected by xlb's validation (vrrp[2].vrid: 8 on eth0 is already vrrp[1]); skipped"
        );
    }

    /// Imports `text`; checks that the JSON validates and reads back to the same
    /// config; returns it with the notes as (line, keyword).
    fn run(text: &str, options: &Options) -> (Value, Vec<(usize, String)>, ImportReport) {
        let report = import(text, options).unwrap();
        let json = to_json(&report.config);
        let parsed = parse_for_another_host(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
        assert_eq!(parsed, report.config, "{json}");
        let notes = report
            .notes
            .iter()
            .map(|n| (n.line, n.keyword.clone()))
            .collect();
        (serde_json::from_str(&json).unwrap(), notes, report)
    }

    fn owned(notes: &[(usize, &str)]) -> Vec<(usize, String)> {
        notes.iter().map(|(l, k)| (*l, (*k).to_owned())).collect()
    }

    fn reason<'a>(report: &'a ImportReport, line: usize, keyword: &str) -> &'a str {
        &report
            .notes
            .iter()
            .find(|n| n.line == line && n.keyword == keyword)
            .unwrap_or_else(|| panic!("no note {line} {keyword}: {:#?}", report.notes))
            .reason
    }

    const GLOBAL_AND_VRRP_NOTES: [(usize, &str); 11] = [
        (3, "global_defs"),
        (4, "notification_email"),
        (5, "acassen@firewall.loc"),
        (6, "failover@firewall.loc"),
        (8, "notification_email_from"),
        (9, "smtp_server"),
        (10, "smtp_connect_timeout"),
        (11, "router_id"),
        (12, "vrrp_strict"),
        (16, "state"),
        // keepalived itself ignores PASS authentication in strict mode.
        (21, "authentication"),
    ];

    /// keepalived's sample VI_1: VRRPv2 (keepalived's default), 1 s adverts.
    fn sample_vrrp() -> Value {
        json!([{
            "name": "VI_1", "interface": "eth0", "vrid": 51, "priority": 100, "version": 2,
            "advert_int_ms": 1000, "preempt": true, "preempt_delay_ms": 0,
            "addresses": ["192.168.200.16", "192.168.200.17"],
            "garp": {"repeat": 5, "delay_ms": 100}
        }])
    }

    #[test]
    fn keepalived_sample_nat_services_are_skipped_with_the_reason() {
        let (config, notes, report) = run(SAMPLE, &Options::default());
        assert_eq!(
            config,
            json!({"encap_sources": {}, "services": [], "vrrp": sample_vrrp()})
        );
        let mut want = owned(&GLOBAL_AND_VRRP_NOTES);
        want.extend(owned(&[(34, "lb_kind"), (74, "lb_kind")]));
        assert_eq!(notes, want);
        assert_eq!(
            reason(&report, 21, "authentication"),
            "not carried over: keepalived ignores authentication in strict mode too"
        );
        assert!(
            reason(&report, 34, "lb_kind").starts_with("NAT is not supported")
                && reason(&report, 34, "lb_kind")
                    .ends_with("virtual_server 10.10.10.2 1358 skipped"),
            "{}",
            reason(&report, 34, "lb_kind")
        );
    }

    #[test]
    fn keepalived_sample_as_dr() {
        let text = SAMPLE.replace("lb_kind NAT", "lb_kind DR");
        let mut options = Options::default();
        options.macs.insert(
            "192.168.200.2".parse().unwrap(),
            "52:54:00:c8:00:02".parse().unwrap(),
        );
        let (config, notes, report) = run(&text, &options);
        let placeholder = "02:00:00:00:00:00";
        assert_eq!(
            config,
            json!({
                "encap_sources": {},
                "services": [
                    {
                        "vip": "10.10.10.2", "port": 1358, "protocol": "tcp", "mode": "dsr",
                        "source_affinity": true,
                        "on_failure": "reset",
                        "fallback": {"sorry_server": {
                            "address": "192.168.200.200", "mac": placeholder, "weight": 1
                        }},
                        // Different digests: each backend carries its own check.
                        "backends": [
                            {"address": "192.168.200.2", "mac": "52:54:00:c8:00:02", "weight": 1,
                             "check": {
                                "type": "http", "path": "/testurl/test.jsp",
                                "digest": "640205b7b0fc66c1ea91c463fac6334d",
                                "interval_ms": 6000, "timeout_ms": 3000,
                                "rise": 1, "fall": 4, "initial": "up"
                             }},
                            {"address": "192.168.200.3", "mac": placeholder, "weight": 1,
                             "check": {
                                "type": "http", "path": "/testurl/test.jsp",
                                "digest": "640205b7b0fc66c1ea91c463fac6334c",
                                "interval_ms": 6000, "timeout_ms": 3000,
                                "rise": 1, "fall": 4, "initial": "up"
                             }}
                        ]
                    },
                    {
                        "vip": "10.10.10.3", "port": 443, "protocol": "tcp", "mode": "dsr",
                        "source_affinity": true,
                        "check": {
                            "type": "https", "path": "/testurl/test.jsp",
                            "expect_status": [200], "tls_insecure": true,
                            "interval_ms": 3000, "timeout_ms": 3000,
                            "rise": 1, "fall": 4, "initial": "up"
                        },
                        "on_failure": "reset",
                        "fallback": "drop",
                        "backends": [
                            {"address": "192.168.200.4", "mac": placeholder, "weight": 1}
                        ]
                    }
                ],
                "vrrp": sample_vrrp()
            })
        );
        let mut want = owned(&GLOBAL_AND_VRRP_NOTES);
        want.extend(owned(&[
            (33, "lb_algo"),
            (35, "persistence_timeout"),
            (38, "sorry_server"),
            (47, "url"),
            (53, "delay_before_retry"),
            (57, "real_server"),
            (66, "delay_before_retry"),
            (73, "lb_algo"),
            (75, "persistence_timeout"),
            (78, "real_server"),
            (80, "SSL_GET"),
            (87, "delay_before_retry"),
        ]));
        assert_eq!(notes, want);
        assert_eq!(
            reason(&report, 38, "sorry_server"),
            "MAC of 192.168.200.200 unknown: placeholder 02:00:00:00:00:00 written; set the \
             next-hop MAC (or pass --mac 192.168.200.200=MAC)"
        );
        assert!(reason(&report, 33, "lb_algo").starts_with("rr replaced by weighted Maglev"));
        assert!(
            reason(&report, 80, "SSL_GET")
                .starts_with("keepalived does not verify the server's certificate"),
            "{}",
            reason(&report, 80, "SSL_GET")
        );
    }

    #[test]
    fn dr_with_tcp_and_http_checks() {
        let mut options = Options::default();
        options.macs.insert(
            "192.0.2.11".parse().unwrap(),
            "52:54:00:00:00:11".parse().unwrap(),
        );
        let (config, notes, report) = run(DR_TCP, &options);
        let placeholder = "02:00:00:00:00:00";
        assert_eq!(
            config,
            json!({
                "encap_sources": {},
                "services": [
                    {
                        "vip": "203.0.113.10", "port": 80, "protocol": "tcp", "mode": "dsr",
                        "check": {
                            "type": "tcp", "port": 8080, "interval_ms": 2000,
                            "timeout_ms": 1000, "rise": 1, "fall": 3, "initial": "down"
                        },
                        "on_failure": "drain",
                        "fallback": "drop",
                        "backends": [
                            {"address": "192.0.2.11", "mac": "52:54:00:00:00:11", "weight": 3},
                            {"address": "192.0.2.12", "mac": placeholder, "weight": 1},
                            {"address": "192.0.2.13", "mac": placeholder, "weight": 0}
                        ]
                    },
                    {
                        "vip": "203.0.113.10", "port": 53, "protocol": "udp", "mode": "dsr",
                        "source_affinity": true,
                        "on_failure": "reset",
                        "fallback": "drop",
                        "backends": [
                            {"address": "192.0.2.21", "mac": placeholder, "weight": 1,
                             "check": {"type": "tcp", "interval_ms": 5000, "timeout_ms": 5000,
                                       "rise": 1, "fall": 2, "initial": "up"}},
                            {"address": "192.0.2.22", "mac": placeholder, "weight": 65535}
                        ]
                    },
                    {
                        "vip": "2001:db8::10", "port": 443, "protocol": "tcp", "mode": "dsr",
                        "source_affinity": true,
                        "check": {
                            "type": "http", "path": "/healthz", "host": "www.example.com",
                            "expect_status": [200, 201, 202, 203, 204],
                            "interval_ms": 10000, "timeout_ms": 2000,
                            "rise": 1, "fall": 5, "initial": "up"
                        },
                        "on_failure": "reset",
                        "fallback": "drop",
                        "backends": [
                            {"address": "2001:db8::11", "mac": placeholder, "weight": 1}
                        ]
                    }
                ]
            })
        );
        assert_eq!(
            notes,
            owned(&[
                (2, "vrrp_script"),
                (9, "lb_algo"),
                (12, "quorum"),
                (18, "notify_down"),
                (23, "delay_before_retry"),
                (26, "real_server"),
                (33, "delay_before_retry"),
                (36, "real_server"),
                (36, "real_server"),
                (43, "delay_before_retry"),
                (54, "real_server"),
                (55, "TCP_CHECK"),
                (60, "real_server"),
                (61, "weight"),
                (70, "persistence_timeout"),
                (72, "real_server"),
                (83, "real_server"),
            ])
        );
        assert_eq!(reason(&report, 18, "notify_down"), NOTIFY_REASON);
        assert!(report.notes[7]
            .reason
            .starts_with("port 8080 not carried over: DSR"));
        assert!(report.notes[8]
            .reason
            .starts_with("MAC of 192.0.2.13 unknown"));
        assert_eq!(
            reason(&report, 55, "TCP_CHECK"),
            "timeout 10000 ms is longer than the interval (delay_loop) 5000 ms: xlb needs \
             timeout <= interval, timeout set to 5000 ms"
        );
        assert_eq!(
            reason(&report, 83, "real_server"),
            "192.0.2.40 is not of the VIP's address family: skipped"
        );
    }

    #[test]
    fn tun_with_misc_and_ping_checks() {
        let options = Options::from_args(&[], &["192.0.2.1".parse().unwrap()]).unwrap();
        let (config, notes, _) = run(TUN_MISC, &options);
        let placeholder = "02:00:00:00:00:00";
        assert_eq!(
            config,
            json!({
                "encap_sources": {"v4": "192.0.2.1", "gue_port": 6081},
                "services": [
                    {
                        "vip": "198.51.100.7", "port": 25, "protocol": "tcp", "mode": "ipip",
                        "on_failure": "reset",
                        "fallback": "drop",
                        "backends": [
                            {"address": "10.20.0.5", "mac": placeholder, "weight": 2,
                             "check": {
                                "type": "exec",
                                "command": ["/usr/local/bin/check_smtp", "--host", "10.20.0.5",
                                            "--banner", "ESMTP ready"],
                                "interval_ms": 15000, "timeout_ms": 5000,
                                "rise": 1, "fall": 1, "initial": "up"
                             }},
                            {"address": "10.20.0.6", "mac": placeholder, "weight": 2,
                             "check": {
                                "type": "icmp", "interval_ms": 15000, "timeout_ms": 5000,
                                "rise": 1, "fall": 2, "initial": "up"
                             }}
                        ]
                    },
                    {
                        "vip": "198.51.100.8", "port": 4789, "protocol": "udp", "mode": "gue",
                        "on_failure": "drain",
                        "fallback": "drop",
                        "backends": [
                            {"address": "10.20.0.7", "mac": placeholder, "weight": 1}
                        ]
                    }
                ]
            })
        );
        assert_eq!(
            notes,
            owned(&[
                (1, "global_defs"),
                (2, "router_id"),
                (7, "lvs_sched"),
                (11, "real_server"),
                (16, "misc_dynamic"),
                (19, "real_server"),
                (21, "notify_up"),
                (22, "notify_down"),
                (35, "real_server"),
                (41, "lvs_method"),
            ])
        );
        let (_, _, report) = run(TUN_MISC, &options);
        assert!(
            reason(&report, 16, "misc_dynamic").contains("exit codes 2-255"),
            "{}",
            reason(&report, 16, "misc_dynamic")
        );

        // Without --encap-source: a placeholder that validates but is reported.
        let (config, notes, report) = run(TUN_MISC, &Options::default());
        assert_eq!(
            config["encap_sources"],
            json!({"v4": "0.0.0.0", "gue_port": 6081})
        );
        assert!(notes.contains(&(5, "virtual_server".to_owned())));
        assert!(reason(&report, 5, "virtual_server").contains("pass --encap-source IP"));
    }

    #[test]
    fn misc_ping_ssl_and_digest_details() {
        let text = "virtual_server 10.0.0.100 443 {
    lb_kind DR
    delay_loop 4
    real_server 10.0.0.1 443 {
        MISC_CHECK {
            misc_path /bin/check 10.0.0.1 'two words'
            user nobody
            connect_timeout 1
        }
    }
    real_server 10.0.0.2 443 {
        MISC_CHECK {
            misc_path \"/bin/check 'unterminated\"
        }
    }
    real_server 10.0.0.3 443 {
        PING_CHECK {
            connect_port 7
            connect_timeout 0.5
        }
    }
    real_server 10.0.0.4 443 {
        SSL_GET {
            virtualhost www.example.com
            url {
                path /health
                digest 640205B7B0FC66C1EA91C463FAC6334D
            }
        }
    }
    real_server 10.0.0.5 443 {
        HTTP_GET {
            url {
                digest 640205b7
            }
        }
    }
}
";
        let (config, notes, report) = run(text, &Options::default());
        let backends = &config["services"][0]["backends"];
        // Unquoted words are the arguments; without misc_timeout, keepalived's
        // MISC_CHECK times out after delay_loop.
        assert_eq!(
            backends[0]["check"],
            json!({
                "type": "exec", "command": ["/bin/check", "10.0.0.1", "two words"],
                "interval_ms": 4000, "timeout_ms": 4000, "rise": 1, "fall": 1,
                "initial": "up"
            })
        );
        assert_eq!(backends[1].get("check"), None);
        assert_eq!(
            backends[2]["check"],
            json!({
                "type": "icmp", "interval_ms": 4000, "timeout_ms": 500, "rise": 1,
                "fall": 2, "initial": "up"
            })
        );
        assert_eq!(
            backends[3]["check"],
            json!({
                "type": "https", "host": "www.example.com", "path": "/health",
                "digest": "640205b7b0fc66c1ea91c463fac6334d", "tls_insecure": true,
                "interval_ms": 4000, "timeout_ms": 4000, "rise": 1, "fall": 2,
                "initial": "up"
            })
        );
        assert_eq!(
            backends[4]["check"],
            json!({
                "type": "http", "interval_ms": 4000, "timeout_ms": 4000, "rise": 1,
                "fall": 2, "initial": "up"
            })
        );
        let keywords: Vec<(usize, &str)> = notes.iter().map(|(l, k)| (*l, k.as_str())).collect();
        assert_eq!(
            keywords,
            [
                (4, "real_server"),
                (7, "user"),
                (8, "connect_timeout"),
                (11, "real_server"),
                (12, "MISC_CHECK"),
                (13, "misc_path"),
                (16, "real_server"),
                (18, "connect_port"),
                (22, "real_server"),
                (23, "SSL_GET"),
                (23, "SSL_GET"),
                (31, "real_server"),
                (32, "HTTP_GET"),
                (34, "digest"),
            ]
        );
        assert!(reason(&report, 13, "misc_path").contains("unterminated"));
        assert!(
            reason(&report, 12, "MISC_CHECK").contains("command: required"),
            "{}",
            reason(&report, 12, "MISC_CHECK")
        );
        assert_eq!(
            reason(&report, 34, "digest"),
            "not an MD5 (32 hex digits): ignored"
        );
    }

    #[test]
    fn comments_quoting_and_odd_whitespace() {
        let (config, notes, report) = run(QUIRKS, &Options::default());
        let placeholder = "02:00:00:00:00:00";
        assert_eq!(
            config,
            json!({
                "encap_sources": {},
                "services": [
                    {
                        "vip": "203.0.113.30", "port": 8443, "protocol": "tcp", "mode": "dsr",
                        "on_failure": "reset",
                        "fallback": "drop",
                        "backends": [
                            {"address": "192.0.2.50", "mac": placeholder, "weight": 5},
                            {"address": "192.0.2.51", "mac": placeholder, "weight": 5,
                             "check": {"type": "http", "path": "/status!ok",
                                       "interval_ms": 500, "timeout_ms": 200,
                                       "rise": 1, "fall": 2, "initial": "up"}}
                        ]
                    }
                ]
            })
        );
        assert_eq!(
            notes,
            owned(&[
                (1, "include"),
                (3, "virtual_server_group"),
                (4, "203.0.113.20"),
                (5, "203.0.113.21"),
                (7, "virtual_server"),
                (10, "virtual_server"),
                (18, "real_server"),
                (19, "real_server"),
                (20, "weight"),
                (21, "path"),
                (24, "real_server"),
                (25, "frobnicate"),
                (27, "virtual_server"),
                (30, "lb_kind"),
            ])
        );
        assert_eq!(
            reason(&report, 1, "include"),
            "/etc/keepalived/conf.d/*.conf not read: import the included file separately"
        );
        assert_eq!(
            reason(&report, 21, "path"),
            "extra arguments ignored: status_code 200 (one statement per line)"
        );
        assert_eq!(
            reason(&report, 27, "virtual_server"),
            "203.0.113.30 TCP port 8443 is already defined above; skipped"
        );
        assert_eq!(
            reason(&report, 30, "lb_kind"),
            "not set: keepalived's default is NAT, which xlb does not support; \
             virtual_server 203.0.113.31 80 skipped"
        );
    }

    #[test]
    fn syntax() {
        let text = "a \"x y\" b\\c\n\
                    c { d \"e # f\" ! g\n\
                    \t}\n\
                    h i \\\n j\n\
                    k\n{\nl \"q\\\"q\" }\n\
                    m { n { o } } p\n";
        let got = parse(text).unwrap();
        let leaf = |k: &str, args: &[&str], line| Node {
            keyword: k.into(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            line,
            block: None,
        };
        let with = |mut n: Node, block: Vec<Node>| {
            n.block = Some(block);
            n
        };
        assert_eq!(
            got,
            [
                leaf("a", &["x y", "b\\c"], 1),
                with(leaf("c", &[], 2), vec![leaf("d", &["e # f"], 2)]),
                leaf("h", &["i", "j"], 4),
                with(leaf("k", &[], 6), vec![leaf("l", &["q\"q"], 8)]),
                with(
                    leaf("m", &[], 9),
                    vec![with(leaf("n", &[], 9), vec![leaf("o", &[], 9)])]
                ),
                leaf("p", &[], 9),
            ]
        );
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let cases: [(&str, usize, &str); 7] = [
            ("a {\n b\n", 1, "`{` opened here is never closed"),
            ("a\n}\n", 2, "`}` without a matching `{`"),
            ("a {\n}\n}\n", 3, "`}` without a matching `{`"),
            ("\n\n{ a }\n", 3, "`{` without a keyword before it"),
            ("a { b }\n{\n}", 2, "`{` without a keyword before it"),
            (
                "a\nb \"open\nc\n",
                2,
                "unterminated quoted string (quotes end on their line)",
            ),
            (&"a {\n".repeat(40), 33, "blocks nested deeper than 32"),
        ];
        for (text, line, message) in cases {
            let err = import(text, &Options::default()).unwrap_err();
            assert_eq!(
                err,
                ParseError {
                    line,
                    message: message.into()
                },
                "{text:?}"
            );
        }
        assert_eq!(
            import("a {", &Options::default()).unwrap_err().to_string(),
            "line 1: `{` opened here is never closed"
        );
    }

    #[test]
    fn command_lines_split_like_a_shell() {
        assert_eq!(
            split_command(r#"/bin/check --banner 'ESMTP ready' "a \"b\"" c\ d"#).unwrap(),
            ["/bin/check", "--banner", "ESMTP ready", "a \"b\"", "c d"]
        );
        assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
        assert!(split_command("a 'b").is_err());
        assert!(split_command("a \"b").is_err());
    }

    #[test]
    fn command_line_options() {
        let o = Options::from_args(
            &["10.0.0.1=52:54:00:00:00:01".into()],
            &["10.0.0.9".parse().unwrap(), "fd00::9".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(o.macs.len(), 1);
        assert_eq!(o.encap_v4, Some("10.0.0.9".parse().unwrap()));
        assert_eq!(o.encap_v6, Some("fd00::9".parse().unwrap()));
        for bad in ["10.0.0.1", "x=52:54:00:00:00:01", "10.0.0.1=52:54"] {
            assert!(Options::from_args(&[bad.into()], &[]).is_err(), "{bad}");
        }
        let e = Options::from_args(
            &[],
            &["10.0.0.9".parse().unwrap(), "10.0.0.8".parse().unwrap()],
        )
        .unwrap_err();
        assert!(e.contains("one address per family"), "{e}");
        // A --mac for no converted server is reported.
        let (_, notes, _) = run(
            "virtual_server 10.0.0.100 80 { lb_kind DR\n real_server 10.0.0.1 80 { } }",
            &Options::from_args(
                &[
                    "10.0.0.1=52:54:00:00:00:01".into(),
                    "10.0.0.2=52:54:00:00:00:02".into(),
                ],
                &[],
            )
            .unwrap(),
        );
        assert_eq!(notes, owned(&[(0, "--mac")]));
    }

    /// Mutated sample configs: never a panic; either a parse error with a line inside
    /// the text, or a config that passes validation.
    #[test]
    fn fuzzed_inputs_never_panic_and_yield_valid_configs() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let dr_sample = SAMPLE.replace("lb_kind NAT", "lb_kind DR");
        let seeds = [SAMPLE, DR_TCP, TUN_MISC, QUIRKS, VRRP, dr_sample.as_str()];
        let pieces = [
            "{",
            "}",
            "\"",
            "#",
            "!",
            "\n",
            "\\\n",
            " ",
            "0",
            "65536",
            "-1",
            "1e400",
            "NaN",
            "::",
            "real_server 10.0.0.1 80 {",
            "virtual_server 10.0.0.1 0 {",
            "lb_kind TUN",
            "weight 99999999999",
            "delay_loop 0",
            "connect_timeout 9999999999",
            "url {",
            "status_code 99-700",
            "TCP_CHECK {",
            "HTTP_GET {",
            "vrrp_instance VI_9 {",
            "virtual_ipaddress {",
            "unicast_peer {",
            "track_interface {",
            "virtual_router_id 0",
            "priority 300",
            "advert_int 0.001",
            "advert_int 99999",
            "version 2",
            "weight -300",
            "fe80::1",
            "10.0.0.1/8 dev x label y",
            "state MASTER",
            "\u{00e9}",
            "\t",
            "\r\n",
        ];
        let (mut errors, mut converted) = (0, 0);
        for i in 0..2_000 {
            let mut text: Vec<char> = seeds[i % seeds.len()].chars().collect();
            for _ in 0..1 + next() % 8 {
                let at = (next() as usize) % (text.len() + 1);
                match next() % 4 {
                    0 if !text.is_empty() => {
                        let end = (at + (next() as usize % 20)).min(text.len());
                        text.drain(at.min(end)..end);
                    }
                    1 => {
                        let piece = pieces[next() as usize % pieces.len()];
                        text.splice(at..at, piece.chars());
                    }
                    2 => {
                        let c = char::from_u32((next() % 0x250) as u32).unwrap_or('x');
                        text.insert(at, c);
                    }
                    _ => {
                        let from = (next() as usize) % (text.len() + 1);
                        let end = (from + (next() as usize % 200)).min(text.len());
                        let copy: Vec<char> = text[from..end].to_vec();
                        text.splice(at..at, copy);
                    }
                }
            }
            let text: String = text.into_iter().collect();
            match import(&text, &Options::default()) {
                Ok(report) => {
                    converted += 1;
                    let json = to_json(&report.config);
                    let parsed = parse_for_another_host(&json)
                        .unwrap_or_else(|e| panic!("iteration {i}: {e}\n{text}\n{json}"));
                    assert_eq!(parsed, report.config);
                    assert!(report.notes.windows(2).all(|w| w[0].line <= w[1].line));
                }
                Err(e) => {
                    errors += 1;
                    let lines = text.lines().count().max(1);
                    assert!(
                        (1..=lines + 1).contains(&e.line),
                        "iteration {i}: line {} of {lines}: {e}",
                        e.line
                    );
                }
            }
        }
        // Both outcomes are exercised.
        assert!(
            errors > 100 && converted > 100,
            "{errors} errors, {converted} converted"
        );
    }
}
