//! `real_server` → an xlb backend: the block's keyword table, its builder (weight, the
//! defaults it overrides for its checkers) and the one check it keeps.

use std::net::IpAddr;

use super::{
    check_defaults::{self as inherited, Defaults},
    checker,
    keywords::{Action::*, Block},
    virtual_server::port_reason,
    Converter, Node,
};
use crate::config::{service::MAX_WEIGHT, BackendSpec, ServiceSpec};

pub(super) const NOTIFY_REASON: &str =
    "not carried over: xlb runs one `notify` command per service, \
     called with EVENT SERVICE BACKEND REASON (docs/health.md); keepalived's per-server \
     scripts get no arguments. Wrap them in one script that dispatches on EVENT (up/down) \
     and BACKEND, and set it as the service's `notify`";

/// One `real_server` as read so far.
struct RealServerBuilder {
    backend: BackendSpec,
    /// The `virtual_server`'s, with what this block overrides.
    defaults: Defaults,
    /// Converted after the block: they inherit what it sets after them too.
    checkers: Vec<Node>,
}

impl AsMut<Defaults> for RealServerBuilder {
    fn as_mut(&mut self) -> &mut Defaults {
        &mut self.defaults
    }
}

static KEYWORDS: Block<RealServerBuilder> = Block {
    keywords: &[&[
        (&["weight"], Apply(RealServerBuilder::weight)),
        (
            &["inhibit_on_failure"],
            Apply(inherited::inhibit_on_failure),
        ),
        (&["notify_up", "notify_down"], Note(NOTIFY_REASON)),
        (
            &[
                "TCP_CHECK",
                "HTTP_GET",
                "SSL_GET",
                "PING_CHECK",
                "MISC_CHECK",
                "SMTP_CHECK",
                "DNS_CHECK",
                "UDP_CHECK",
                "BFD_CHECK",
                "FILE_CHECK",
            ],
            Apply(RealServerBuilder::checker),
        ),
        (&["delay_loop"], Apply(inherited::delay_loop)),
        (&["connect_timeout"], Apply(inherited::connect_timeout)),
        (&["retry", "nb_get_retry"], Apply(inherited::retry)),
        (&["virtualhost"], Apply(inherited::virtualhost)),
        (&["alpha"], Apply(inherited::alpha)),
        (
            &["delay_before_retry"],
            Note(inherited::DELAY_BEFORE_RETRY_REASON),
        ),
        (&["warmup"], Note(inherited::WARMUP_REASON)),
        (
            &["lb_kind", "lvs_method"],
            Note("not carried over: the forwarding method is per service in xlb"),
        ),
        (
            &["uthreshold", "lthreshold"],
            Note("not carried over: xlb does not count connections per backend"),
        ),
        (&["smtp_alert"], Note(inherited::SMTP_ALERT_REASON)),
    ]],
    unknown: "unknown keyword: not carried over",
    one_value_args: true,
};

/// One `real_server` of `spec` as a backend, and whether it has `inhibit_on_failure`;
/// `None` (noted) if it cannot be one.
pub(super) fn convert(
    c: &mut Converter<'_>,
    rs: &Node,
    spec: &ServiceSpec,
    defaults: &Defaults,
) -> Option<(BackendSpec, bool)> {
    let ip = address(c, rs, spec)?;
    let mac = c.mac(ip);
    let mut b = RealServerBuilder {
        backend: BackendSpec {
            mac,
            ..BackendSpec::learned(ip, 1)
        },
        defaults: defaults.clone(),
        checkers: Vec::new(),
    };
    KEYWORDS.walk(&mut b, c, rs.block.as_deref().unwrap_or_default());
    let mut used: Option<usize> = None;
    for n in &b.checkers {
        if let Some(first) = used {
            c.note(
                n.line,
                &n.keyword,
                format!("xlb runs one check per backend: the checker on line {first} is used"),
            );
            continue;
        }
        if let Some(check) = checker::convert(c, n, spec, &b.defaults) {
            b.backend.check = Some(check);
            used = Some(n.line);
        }
    }
    Some((b.backend, b.defaults.inhibit))
}

/// `real_server IP [PORT]`: the backend's address, or `None` (noted: skipped).
fn address(c: &mut Converter<'_>, rs: &Node, spec: &ServiceSpec) -> Option<IpAddr> {
    let k = "real_server";
    let Some(ip) = rs.arg().and_then(|a| a.parse::<IpAddr>().ok()) else {
        c.note(rs.line, k, "needs an IP address and a port: skipped");
        return None;
    };
    let skipped = if ip.is_ipv4() != spec.vip.is_ipv4() {
        Some(format!("{ip} is not of the VIP's address family: skipped"))
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some(format!("{ip} cannot be a backend: skipped"))
    } else if spec.backends.iter().any(|b| b.address == ip) {
        Some(format!("{ip} is listed twice: skipped"))
    } else {
        None
    };
    if let Some(why) = skipped {
        c.note(rs.line, k, why);
        return None;
    }
    match rs.args.get(1).map(|p| p.parse::<u16>()) {
        Some(Ok(p)) if spec.port.unwrap_or(0) != p => c.note(rs.line, k, port_reason(p, spec.port)),
        Some(Err(_)) => c.note(rs.line, k, "port is not a number: ignored"),
        _ => {}
    }
    Some(ip)
}

impl RealServerBuilder {
    fn weight(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg().and_then(|w| w.parse::<u64>().ok()) {
            Some(w) if w > u64::from(MAX_WEIGHT) => {
                c.note(
                    n.line,
                    &n.keyword,
                    format!("{w} above xlb's maximum: {MAX_WEIGHT}"),
                );
                self.backend.weight = MAX_WEIGHT;
            }
            Some(w) => self.backend.weight = w as u32,
            None => c.note(n.line, &n.keyword, "not a number: weight 1"),
        }
    }

    fn checker(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.checkers.push(n.clone());
    }
}
