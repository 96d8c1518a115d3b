//! A checker block of a `real_server` (`TCP_CHECK`, `HTTP_GET`, `SSL_GET`, `PING_CHECK`,
//! `MISC_CHECK`) → an xlb check: one keyword table per check type (shared rows plus
//! the type's own), the `url` block's table, and xlb's limits on the timing.

use super::{
    check_defaults::{Defaults, DELAY_BEFORE_RETRY_REASON, WARMUP_REASON},
    keywords::{Action::*, Block, Row},
    seconds_ms, split_command, status_codes, Converter, Node,
};
use crate::config::{
    check::{CheckKind, CheckSpec, Health, MAX_INTERVAL_MS, MIN_INTERVAL_MS},
    ServiceSpec,
};

/// One checker block as read so far.
struct CheckerBuilder {
    check: CheckSpec,
    retry: Option<u32>,
    host: Option<String>,
    /// The first `url` block.
    url: Option<Node>,
    /// keepalived's MISC_CHECK times out after delay_loop unless misc_timeout says.
    misc_timeout: Option<u64>,
    /// `status_code`s of the `url` block.
    status: Vec<u16>,
}

/// The checker types xlb has: keyword, check, keepalived's default `retry`, and how
/// the block reads.
static CHECK_TYPES: &[(&str, CheckKind, u32, &Block<CheckerBuilder>)] = &[
    ("TCP_CHECK", CheckKind::Tcp, 1, &TCP),
    ("HTTP_GET", CheckKind::Http, 1, &HTTP),
    ("SSL_GET", CheckKind::Https, 1, &HTTP),
    ("PING_CHECK", CheckKind::Icmp, 1, &PING),
    ("MISC_CHECK", CheckKind::Exec, 0, &MISC),
];

const UNKNOWN: &str = "not carried over for this check type";

static TCP: Block<CheckerBuilder> = Block {
    keywords: &[COMMON, TIMEOUT, PORT, SOURCE],
    unknown: UNKNOWN,
    one_value_args: true,
};

static HTTP: Block<CheckerBuilder> = Block {
    keywords: &[COMMON, TIMEOUT, PORT, SOURCE, HTTP_ONLY],
    unknown: UNKNOWN,
    one_value_args: true,
};

static PING: Block<CheckerBuilder> = Block {
    keywords: &[COMMON, TIMEOUT, SOURCE],
    unknown: UNKNOWN,
    one_value_args: true,
};

static MISC: Block<CheckerBuilder> = Block {
    keywords: &[COMMON, MISC_ONLY],
    unknown: UNKNOWN,
    one_value_args: true,
};

/// Every check type's.
const COMMON: &[Row<CheckerBuilder>] = &[
    (&["retry", "nb_get_retry"], Apply(CheckerBuilder::retry)),
    (&["delay_loop"], Apply(CheckerBuilder::delay_loop)),
    (&["delay_before_retry"], Note(DELAY_BEFORE_RETRY_REASON)),
    (&["warmup"], Note(WARMUP_REASON)),
    (&["alpha"], Apply(CheckerBuilder::alpha)),
    (
        &["connect_ip", "bind_port", "bind_if", "fwmark"],
        Note(
            "not carried over: xlb probes the backend address from the host's own \
             routing",
        ),
    ),
    (
        &["log_all_failures"],
        Note("not needed: xlb logs every state change (not every failed probe)"),
    ),
];

/// Of the checks that connect (not MISC_CHECK: misc_timeout).
const TIMEOUT: &[Row<CheckerBuilder>] =
    &[(&["connect_timeout"], Apply(CheckerBuilder::connect_timeout))];

/// Of the checks that open sockets (not MISC_CHECK: its program opens its own).
const SOURCE: &[Row<CheckerBuilder>] = &[(&["bindto"], Apply(CheckerBuilder::bindto))];

/// Of the checks that connect to a port (not PING_CHECK).
const PORT: &[Row<CheckerBuilder>] = &[(&["connect_port"], Apply(CheckerBuilder::connect_port))];

const HTTP_ONLY: &[Row<CheckerBuilder>] = &[
    (&["url"], Apply(CheckerBuilder::url)),
    (&["virtualhost"], Apply(CheckerBuilder::virtualhost)),
];

const MISC_ONLY: &[Row<CheckerBuilder>] = &[
    (&["misc_path"], Apply(CheckerBuilder::misc_path)),
    (&["misc_timeout"], Apply(CheckerBuilder::misc_timeout)),
    (
        &["misc_dynamic"],
        Note(
            "not carried over: xlb's exec check has no dynamic weight; exit status 0 is up \
             and any other is down, so exit codes 2-255 (keepalived: up with weight code-2) \
             take the backend out",
        ),
    ),
    (
        &["user"],
        Note("not carried over: xlb runs exec checks as the daemon's user"),
    ),
];

/// The `url` block of HTTP_GET and SSL_GET.
static URL: Block<CheckerBuilder> = Block {
    keywords: &[&[
        (&["path"], Apply(CheckerBuilder::path)),
        (&["status_code"], Apply(CheckerBuilder::status_code)),
        (&["virtualhost"], Apply(CheckerBuilder::url_virtualhost)),
        (&["digest"], Apply(CheckerBuilder::digest)),
        (
            &[
                "regex",
                "regex_no_match",
                "regex_max_offset",
                "regex_min_offset",
                "regex_stack",
                "regex_options",
            ],
            Note(
                "not carried over: no regular expressions (xlb's body_contains is a plain \
                 substring)",
            ),
        ),
    ]],
    unknown: "not carried over",
    one_value_args: true,
};

/// One checker block as a check, or `None` (noted) if it cannot be carried over.
pub(super) fn convert(
    c: &mut Converter<'_>,
    ck: &Node,
    spec: &ServiceSpec,
    defaults: &Defaults,
) -> Option<CheckSpec> {
    let Some((_, kind, default_retry, block)) = CHECK_TYPES.iter().find(|(k, ..)| *k == ck.keyword)
    else {
        c.note(
            ck.line,
            &ck.keyword,
            "not carried over: xlb has no such check type (this backend gets no check from \
             it)",
        );
        return None;
    };
    let kind = *kind;
    let mut b = CheckerBuilder {
        check: CheckSpec::new(kind),
        retry: defaults.retry,
        host: defaults.host.clone(),
        url: None,
        misc_timeout: None,
        status: Vec::new(),
    };
    b.check.interval_ms = defaults.interval_ms;
    b.check.timeout_ms = defaults.timeout_ms;
    b.check.rise = 1;
    b.check.initial = defaults.initial;
    block.walk(&mut b, c, ck.block.as_deref().unwrap_or_default());

    b.check.fall = b.retry.unwrap_or(*default_retry).saturating_add(1).max(1);
    if matches!(kind, CheckKind::Http | CheckKind::Https) {
        b.check.host = b.host.take();
        if let Some(url) = b.url.take() {
            URL.walk(&mut b, c, url.block.as_deref().unwrap_or_default());
        }
        if !b.status.is_empty() {
            b.status.sort_unstable();
            b.status.dedup();
            b.check.expect_status = Some(std::mem::take(&mut b.status));
        }
    }
    let mut check = b.check;
    if kind == CheckKind::Https {
        check.tls_insecure = true;
        c.note(
            ck.line,
            &ck.keyword,
            "keepalived does not verify the server's certificate: tls_insecure written; \
             remove it to have xlb verify the certificate (Mozilla roots, for `host` or \
             the backend address)",
        );
    }
    if kind == CheckKind::Exec {
        check.timeout_ms = b.misc_timeout.unwrap_or(check.interval_ms);
    }
    if check.port == spec.port && spec.port.is_some() {
        check.port = None;
    }
    fit_timing(c, ck, &mut check);
    let problems = check.problems(spec.port);
    if !problems.is_empty() {
        let why: Vec<String> = problems.iter().map(|(f, r)| format!("{f}: {r}")).collect();
        c.note(
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
fn fit_timing(c: &mut Converter<'_>, ck: &Node, check: &mut CheckSpec) {
    let k = &ck.keyword;
    let interval = check.interval_ms.clamp(MIN_INTERVAL_MS, MAX_INTERVAL_MS);
    if interval != check.interval_ms {
        c.note(
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
        c.note(
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
        c.note(
            ck.line,
            k,
            "timeout 0: xlb needs at least 1 ms, set to 1 ms",
        );
        check.timeout_ms = 1;
    }
}

/// Seconds as ms, or a note that the value is ignored.
fn seconds(c: &mut Converter<'_>, n: &Node) -> Option<u64> {
    let ms = n.arg().and_then(seconds_ms);
    if ms.is_none() {
        c.note(n.line, &n.keyword, "not a number of seconds: ignored");
    }
    ms
}

impl CheckerBuilder {
    fn connect_timeout(&mut self, c: &mut Converter<'_>, n: &Node) {
        if let Some(ms) = seconds(c, n) {
            self.check.timeout_ms = ms;
        }
    }

    fn connect_port(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg().and_then(|p| p.parse::<u16>().ok()) {
            Some(p) if p != 0 => self.check.port = Some(p),
            _ => c.note(n.line, &n.keyword, "not a port: ignored"),
        }
    }

    /// `retry` and `nb_get_retry`.
    fn retry(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg().and_then(|a| a.parse().ok()) {
            Some(r) => self.retry = Some(r),
            None => c.note(n.line, &n.keyword, "not a number: ignored"),
        }
    }

    fn delay_loop(&mut self, c: &mut Converter<'_>, n: &Node) {
        if let Some(ms) = seconds(c, n) {
            self.check.interval_ms = ms;
        }
    }

    fn alpha(&mut self, _: &mut Converter<'_>, _: &Node) {
        self.check.initial = Health::Down;
    }

    fn url(&mut self, c: &mut Converter<'_>, n: &Node) {
        match &self.url {
            Some(first) => c.note(
                n.line,
                &n.keyword,
                format!(
                    "xlb checks one URL: the url block on line {} is used",
                    first.line
                ),
            ),
            None => self.url = Some(n.clone()),
        }
    }

    fn bindto(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg().and_then(|a| a.parse().ok()) {
            Some(addr) => self.check.source = Some(addr),
            None => c.note(n.line, &n.keyword, "not an IP address: ignored"),
        }
    }

    fn virtualhost(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.host = n.arg().map(str::to_owned);
    }

    fn misc_path(&mut self, c: &mut Converter<'_>, n: &Node) {
        // keepalived splits the script line into words itself: quoted as one argument
        // or not, it is one command line.
        match split_command(&n.args.join(" ")) {
            Ok(argv) => self.check.command = Some(argv),
            Err(e) => c.note(n.line, &n.keyword, format!("cannot split the command: {e}")),
        }
    }

    fn misc_timeout(&mut self, c: &mut Converter<'_>, n: &Node) {
        if let Some(ms) = seconds(c, n) {
            self.misc_timeout = Some(ms);
        }
    }

    // The `url` block.

    fn path(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg() {
            Some(p) if p.starts_with('/') => self.check.path = Some(p.to_owned()),
            _ => c.note(n.line, &n.keyword, "not an absolute path: `/` is checked"),
        }
    }

    fn status_code(&mut self, c: &mut Converter<'_>, n: &Node) {
        match status_codes(&n.args) {
            Some(codes) => self.status.extend(codes),
            None => c.note(
                n.line,
                &n.keyword,
                "not status codes (N or N-M in 100..=599): 200 is expected",
            ),
        }
    }

    fn url_virtualhost(&mut self, _: &mut Converter<'_>, n: &Node) {
        self.check.host = n.arg().map(str::to_owned);
    }

    fn digest(&mut self, c: &mut Converter<'_>, n: &Node) {
        match n.arg() {
            Some(d) if d.len() == 32 && d.bytes().all(|b| b.is_ascii_hexdigit()) => {
                self.check.digest = Some(d.to_ascii_lowercase());
            }
            _ => c.note(n.line, &n.keyword, "not an MD5 (32 hex digits): ignored"),
        }
    }
}
