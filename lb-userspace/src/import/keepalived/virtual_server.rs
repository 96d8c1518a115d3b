//! `virtual_server` → an xlb service: the block's keyword table, its builder (forwarding
//! method, scheduler, defaults for the real servers) and the service assembled from its
//! real servers and sorry server.

use std::net::IpAddr;

use super::{
    check_defaults::{self as inherited, Defaults},
    keywords::{Action::*, Block},
    real_server, Converter, Node,
};
use crate::{
    config::{BackendSpec, Fallback, Mode, OnFailure, Protocol, ServiceSpec},
    import::Note,
};

/// One `virtual_server` as read so far.
struct VirtualServerBuilder {
    /// `virtual_server IP PORT`, named in the notes that skip it.
    what: String,
    protocol: Protocol,
    mode: Option<Mode>,
    mode_given: bool,
    affinity: bool,
    hash_ports: bool,
    defaults: Defaults,
    /// The last `sorry_server`.
    sorry: Option<Node>,
    /// Converted after the block: they inherit what it sets after them too.
    real_servers: Vec<Node>,
    /// Why the service cannot be converted; then these are its only notes.
    fatal: Vec<Note>,
}

impl AsMut<Defaults> for VirtualServerBuilder {
    fn as_mut(&mut self) -> &mut Defaults {
        &mut self.defaults
    }
}

static KEYWORDS: Block<VirtualServerBuilder> = Block {
    keywords: &[&[
        (&["real_server"], Apply(VirtualServerBuilder::real_server)),
        (&["protocol"], Apply(VirtualServerBuilder::protocol)),
        (
            &["lb_kind", "lvs_method"],
            Apply(VirtualServerBuilder::lb_kind),
        ),
        (
            &["lb_algo", "lvs_sched"],
            Apply(VirtualServerBuilder::lb_algo),
        ),
        (
            &["sh-port", "mh-port"],
            Apply(VirtualServerBuilder::hash_ports),
        ),
        // Maglev skips unusable backends anyway: nothing to carry over.
        (&["sh-fallback", "mh-fallback", "ip_family"], Nothing),
        (
            &["persistence_timeout"],
            Apply(VirtualServerBuilder::persistence_timeout),
        ),
        (
            &["persistence_granularity"],
            Note("not carried over: source_affinity hashes the whole client address"),
        ),
        (
            &["persistence_engine"],
            Note("not carried over: no SIP persistence"),
        ),
        (&["delay_loop"], Apply(inherited::delay_loop)),
        (&["connect_timeout"], Apply(inherited::connect_timeout)),
        (&["retry", "nb_get_retry"], Apply(inherited::retry)),
        (&["virtualhost"], Apply(inherited::virtualhost)),
        (&["alpha"], Apply(inherited::alpha)),
        (
            &["inhibit_on_failure"],
            Apply(inherited::inhibit_on_failure),
        ),
        (&["sorry_server"], Apply(VirtualServerBuilder::sorry_server)),
        (
            &["quorum", "quorum_up", "quorum_down", "hysteresis"],
            Note(
                "not carried over: xlb has no quorum, a service serves while any backend \
                 is usable (`fallback` decides what happens when none is; `notify` gets \
                 fallback/restored events)",
            ),
        ),
        (
            &["omega"],
            Note("not carried over: no quorum scripts in xlb"),
        ),
        (
            &["ha_suspend"],
            Note(
                "not carried over: xlb checks backends in every VRRP state, so a new \
                 master knows their health at once (its services are on standby while \
                 it is backup)",
            ),
        ),
        (
            &["delay_before_retry"],
            Note(inherited::DELAY_BEFORE_RETRY_REASON),
        ),
        (&["warmup"], Note(inherited::WARMUP_REASON)),
        (
            &["sorry_server_inhibit", "sorry_server_lvs_method"],
            Note("not carried over: the sorry server gets the service's forwarding"),
        ),
        (
            &["ops", "one_packet_scheduling"],
            Note(
                "not carried over: xlb schedules flows, not packets (a UDP flow keeps \
                 its backend)",
            ),
        ),
        (
            &["nat_mask", "net_mask"],
            Note("not carried over: NAT only"),
        ),
        (&["smtp_alert"], Note(inherited::SMTP_ALERT_REASON)),
    ]],
    unknown: "unknown keyword: not carried over",
    one_value_args: true,
};

/// Converts one `virtual_server` into a service of `c`, or notes why it is skipped.
pub(super) fn convert(c: &mut Converter<'_>, vs: &Node) {
    let line = vs.line;
    // Nothing inside a skipped virtual_server is converted: the note says why.
    let skip = |c: &mut Converter<'_>, why: String| {
        c.note(line, "virtual_server", format!("{why}; skipped"));
    };
    let (vip, port, body) = match header(vs) {
        Ok(header) => header,
        Err(why) => return skip(c, why),
    };

    // Everything noted while converting this service is dropped if it is skipped:
    // then the notes are only the reasons why.
    let notes_before = c.notes.len();
    let gue_port_before = c.gue_port;
    let mut b = VirtualServerBuilder {
        what: format!("virtual_server {} {}", vs.args[0], vs.args[1]),
        protocol: Protocol::Tcp,
        mode: None,
        mode_given: false,
        affinity: false,
        hash_ports: false,
        defaults: Defaults::keepalived(),
        sorry: None,
        real_servers: Vec::new(),
        fatal: Vec::new(),
    };
    KEYWORDS.walk(&mut b, c, body);
    let mode = b.mode(line);
    if !b.fatal.is_empty() {
        c.notes.truncate(notes_before);
        c.gue_port = gue_port_before;
        c.notes.extend(b.fatal);
        return;
    }
    let protocol = b.protocol;
    if c.services
        .iter()
        .any(|(s, _)| s.vip == vip && s.port == port && s.protocol == protocol)
    {
        c.notes.truncate(notes_before);
        c.gue_port = gue_port_before;
        let name = if protocol == Protocol::Tcp {
            "TCP"
        } else {
            "UDP"
        };
        let port = port.unwrap_or(0);
        return skip(
            c,
            format!("{vip} {name} port {port} is already defined above"),
        );
    }
    let spec = b.service(c, ServiceSpec::new(vip, port, protocol, mode, Vec::new()));
    c.services.push((spec, line));
}

/// `virtual_server IP PORT { ... }`: the VIP, the port (`None` for 0: every port) and
/// the block, or why the service is skipped.
fn header(vs: &Node) -> Result<(IpAddr, Option<u16>, &[Node]), String> {
    let (vip, port) = match vs.args.as_slice() {
        [kind, name, ..] if kind == "group" => {
            return Err(format!(
                "virtual_server group {name}: virtual_server_group is not carried over \
                 (write one virtual_server per address and port)"
            ))
        }
        [kind, ..] if kind == "fwmark" => {
            return Err(
                "fwmark services are not supported (xlb matches VIP, port and protocol)".into(),
            )
        }
        [ip, port, ..] => match (ip.parse::<IpAddr>(), port.parse::<u16>()) {
            (Ok(ip), Ok(port)) => (ip, (port != 0).then_some(port)),
            (Err(_), _) => return Err(format!("{ip:?} is not an IP address")),
            (_, Err(_)) => return Err(format!("{port:?} is not a port")),
        },
        _ => return Err("needs an IP address and a port".into()),
    };
    match &vs.block {
        Some(body) => Ok((vip, port, body)),
        None => Err("no { } block".into()),
    }
}

impl VirtualServerBuilder {
    /// A reason the whole service is skipped.
    fn fail(&mut self, line: usize, keyword: &str, reason: impl std::fmt::Display) {
        self.fatal.push(Note {
            line,
            keyword: keyword.to_owned(),
            reason: format!("{reason}; {} skipped", self.what),
        });
    }

    fn real_server(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.real_servers.push(n.clone());
    }

    fn sorry_server(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.sorry = Some(n.clone());
    }

    fn protocol(&mut self, _: &mut Converter<'_>, n: &Node) {
        match n.arg().map(str::to_ascii_uppercase).as_deref() {
            Some("TCP") => self.protocol = Protocol::Tcp,
            Some("UDP") => self.protocol = Protocol::Udp,
            other => self.fail(
                n.line,
                &n.keyword,
                format!(
                    "protocol {}: xlb balances TCP and UDP only",
                    other.unwrap_or("(none)")
                ),
            ),
        }
    }

    /// `lb_kind` / `lvs_method`: DR, or TUN with the GUE port shared by every service.
    fn lb_kind(&mut self, c: &mut Converter<'_>, n: &Node) {
        self.mode_given = true;
        let k = &n.keyword;
        match n.arg().map(str::to_ascii_uppercase).as_deref() {
            Some("DR") => self.mode = Some(Mode::Dsr),
            Some("TUN") => match tunnel_mode(&n.args[1..]) {
                Ok((m, gue_port)) => {
                    self.mode = Some(m);
                    if let Some(p) = gue_port {
                        match c.gue_port {
                            Some((q, l)) if q != p => self.fail(
                                n.line,
                                k,
                                format!(
                                    "GUE port {p} differs from {q} (line {l}): xlb has one \
                                     GUE port (encap_sources.gue_port)"
                                ),
                            ),
                            _ => c.gue_port = Some((p, n.line)),
                        }
                    }
                }
                Err(why) => self.fail(n.line, k, why),
            },
            Some("NAT") => self.fail(
                n.line,
                k,
                "NAT is not supported: xlb forwards by direct server return (DR) or \
                 encapsulation (TUN) and never rewrites addresses",
            ),
            other => self.fail(
                n.line,
                k,
                format!("{} is not DR, TUN or NAT", other.unwrap_or("(none)")),
            ),
        }
    }

    /// `lb_algo` / `lvs_sched`: source hashing is affinity, the rest is Maglev.
    fn lb_algo(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg() {
            Some("sh" | "mh") => self.affinity = true,
            Some(algo) => c.note(
                n.line,
                &n.keyword,
                format!(
                    "{algo} replaced by weighted Maglev consistent hashing (xlb's only \
                     scheduler): weights are kept, connection counts and order are not"
                ),
            ),
            None => {}
        }
    }

    /// `sh-port` / `mh-port`: the ports are hashed too, so no source affinity.
    fn hash_ports(&mut self, _: &mut Converter<'_>, _: &Node) {
        self.hash_ports = true;
    }

    fn persistence_timeout(&mut self, c: &mut Converter<'_>, n: &Node) {
        if n.arg()
            .is_some_and(|t| t.parse::<f64>().is_ok_and(|t| t > 0.0))
        {
            self.affinity = true;
            c.note(
                n.line,
                &n.keyword,
                "approximated by source_affinity: xlb hashes the client address, so a \
                 client keeps its backend with no timeout, as long as the backend set does \
                 not change",
            );
        }
    }

    /// The forwarding method; one is needed even when the service is skipped.
    fn mode(&mut self, line: usize) -> Mode {
        if let Some(m) = self.mode {
            return m;
        }
        if !self.mode_given {
            self.fail(
                line,
                "lb_kind",
                "not set: keepalived's default is NAT, which xlb does not support",
            );
        }
        Mode::Dsr
    }

    /// The service with its backends, shared check and fallback.
    fn service(self, c: &mut Converter<'_>, mut spec: ServiceSpec) -> ServiceSpec {
        spec.source_affinity = self.affinity && !self.hash_ports;
        let mut inhibits: Vec<(bool, usize)> = Vec::new();
        for rs in &self.real_servers {
            if let Some((backend, inhibit)) = real_server::convert(c, rs, &spec, &self.defaults) {
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
                c.note(
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
        if let Some(n) = &self.sorry {
            sorry_server(c, n, &mut spec);
        }
        spec
    }
}

fn sorry_server(c: &mut Converter<'_>, n: &Node, spec: &mut ServiceSpec) {
    let k = "sorry_server";
    let Some(ip) = n.arg().and_then(|a| a.parse::<IpAddr>().ok()) else {
        return c.note(n.line, k, "needs an IP address: not carried over");
    };
    if ip.is_ipv4() != spec.vip.is_ipv4() {
        return c.note(
            n.line,
            k,
            format!("{ip} is not of the VIP's address family"),
        );
    }
    if spec.backends.iter().any(|b| b.address == ip) {
        return c.note(n.line, k, format!("{ip} is also a real_server"));
    }
    if let Some(p) = n.args.get(1).and_then(|p| p.parse::<u16>().ok()) {
        if spec.port.is_some_and(|sp| sp != p) {
            c.note(n.line, k, port_reason(p, spec.port));
        }
    }
    let mac = c.mac(ip);
    spec.fallback = Fallback::SorryServer(Box::new(BackendSpec {
        mac,
        ..BackendSpec::learned(ip, 1)
    }));
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

/// Why a real or sorry server's port is not used.
pub(super) fn port_reason(port: u16, service: Option<u16>) -> String {
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
