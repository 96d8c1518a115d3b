//! A health check as the config file writes it (`"check": {...}` on a service or a
//! backend) and its validation. Running it is [`crate::health::check`]'s job.
//!
//! One flat struct with a `type` tag rather than a tagged enum: serde cannot combine
//! `deny_unknown_fields` with flattened enums, and a misspelt field must be an error,
//! not silently ignored. Fields that do not belong to the chosen type are rejected by
//! [`CheckSpec::problems`] with the reason.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::scripts::RunAs;

/// Shortest accepted interval: faster checking only loads the backends.
pub const MIN_INTERVAL_MS: u64 = 100;
/// Longest accepted interval or timeout (a day): anything longer is a typo.
pub const MAX_INTERVAL_MS: u64 = 86_400_000;
/// Port of a `dns` check without `port`: DNS's, whatever the service's port is.
pub const DNS_PORT: u16 = 53;
/// Name a `dns` check asks for without `name`: the root (keepalived's default).
pub const DNS_DEFAULT_NAME: &str = ".";

/// A health check, as written in the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Port to probe; the service port when omitted (required for all-ports services),
    /// 53 for `dns`; `icmp` has none.
    #[serde(default)]
    pub port: Option<u16>,
    /// tcp: bytes (UTF-8 text) to send after connecting; udp (required): the
    /// datagram to send.
    #[serde(default)]
    pub send: Option<String>,
    /// tcp, udp: text the answer must contain.
    #[serde(default)]
    pub expect: Option<String>,
    /// http, https: request path (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// http, https: `Host` header and TLS server name (default `ip:port`).
    #[serde(default)]
    pub host: Option<String>,
    /// http, https: accepted status codes (default `[200]`).
    #[serde(default)]
    pub expect_status: Option<Vec<u16>>,
    /// http, https: text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
    /// https: do not verify the certificate (keepalived `SSL_GET`'s behaviour).
    #[serde(default)]
    pub tls_insecure: bool,
    /// http, https: MD5 of the whole body, 32 hex digits (keepalived's `digest`).
    #[serde(default)]
    pub digest: Option<String>,
    /// dns: the name whose A record is asked for (default `.`, the root).
    #[serde(default)]
    pub name: Option<String>,
    /// exec (required): the program and its arguments, run without a shell, with
    /// `XLB_BACKEND`, `XLB_PORT` and `XLB_SERVICE` in its environment.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// The local address probes leave from (keepalived's `bindto`); default: the one
    /// the kernel's routing picks. Every probe fails if it is not an address of the
    /// host. Not for exec checks (the program opens its own sockets).
    #[serde(default)]
    pub source: Option<std::net::IpAddr>,
    /// exec: the user the program runs as (default: `scripts.user`, else the
    /// daemon's, root); its primary group unless `group` says.
    #[serde(default)]
    pub user: Option<String>,
    /// exec: the group the program runs as (default: `scripts.group`).
    #[serde(default)]
    pub group: Option<String>,
    /// Milliseconds between the starts of two probes.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
    /// Budget of one probe, at most `interval_ms`.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Consecutive successes before a Down backend is Up again.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures before an Up backend is Down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// State of a backend before its first verdict: `up` (serve at once, keepalived's
    /// default) or `down` (serve only after `rise` good probes).
    #[serde(default = "default_initial")]
    pub initial: Health,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// ICMP echo (keepalived PING_CHECK).
    Icmp,
    /// TCP connect (keepalived TCP_CHECK), optionally with send/expect.
    Tcp,
    /// HTTP/1.1 GET (keepalived HTTP_GET).
    Http,
    /// HTTP/1.1 GET over TLS (keepalived SSL_GET), verifying the certificate unless
    /// `tls_insecure`.
    Https,
    /// One datagram out, one back (keepalived UDP_CHECK).
    Udp,
    /// A DNS query for an A record (keepalived DNS_CHECK).
    Dns,
    /// A program, exit status 0 is up (keepalived MISC_CHECK).
    Exec,
}

impl CheckKind {
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Icmp => "icmp",
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Https => "https",
            CheckKind::Udp => "udp",
            CheckKind::Dns => "dns",
            CheckKind::Exec => "exec",
        }
    }
}

fn default_interval() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    1000
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_initial() -> Health {
    Health::Up
}

impl CheckSpec {
    /// A check of this kind with every other setting at its default.
    pub fn new(kind: CheckKind) -> CheckSpec {
        CheckSpec {
            kind,
            port: None,
            send: None,
            expect: None,
            path: None,
            host: None,
            expect_status: None,
            body_contains: None,
            tls_insecure: false,
            digest: None,
            name: None,
            command: None,
            source: None,
            user: None,
            group: None,
            interval_ms: default_interval(),
            timeout_ms: default_timeout(),
            rise: default_rise(),
            fall: default_fall(),
            initial: default_initial(),
        }
    }

    /// Who runs an exec check's program (as configured on the check).
    pub fn run_as(&self) -> RunAs {
        RunAs {
            user: self.user.clone(),
            group: self.group.clone(),
        }
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Problems with this check, as (field, reason); `service_port` is the port of
    /// the service it belongs to (`None` for an all-ports service).
    pub fn problems(&self, service_port: Option<u16>) -> Vec<(&'static str, String)> {
        use CheckKind::*;
        let mut out = Vec::new();
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            out.push((
                "interval_ms",
                format!(
                    "{} is outside {MIN_INTERVAL_MS}..={MAX_INTERVAL_MS}",
                    self.interval_ms
                ),
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > self.interval_ms {
            out.push((
                "timeout_ms",
                format!(
                    "{} must be 1..=interval_ms ({})",
                    self.timeout_ms, self.interval_ms
                ),
            ));
        }
        if self.rise == 0 {
            out.push(("rise", "must be at least 1".into()));
        }
        if self.fall == 0 {
            out.push(("fall", "must be at least 1".into()));
        }
        // icmp has no port; dns defaults to 53 and exec only passes it on, so only
        // the port-probing checks need one on an all-ports service.
        let needs_port = matches!(self.kind, Tcp | Http | Https | Udp);
        match self.port {
            Some(_) if self.kind == Icmp => {}
            Some(0) => out.push(("port", "0 is not a valid port".into())),
            None if service_port.is_none() && needs_port => out.push((
                "port",
                "required: the service listens on all ports, so there is no default".into(),
            )),
            _ => {}
        }
        let kind = self.kind.name();
        let mut only = |field: &'static str, set: bool, kinds: &[CheckKind]| {
            if set && !kinds.contains(&self.kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                out.push((
                    field,
                    format!("applies to {} checks, not {kind}", names.join("/")),
                ));
            }
        };
        only(
            "port",
            self.port.is_some(),
            &[Tcp, Http, Https, Udp, Dns, Exec],
        );
        only("send", self.send.is_some(), &[Tcp, Udp]);
        only("expect", self.expect.is_some(), &[Tcp, Udp]);
        only("path", self.path.is_some(), &[Http, Https]);
        only("host", self.host.is_some(), &[Http, Https]);
        only(
            "expect_status",
            self.expect_status.is_some(),
            &[Http, Https],
        );
        only(
            "body_contains",
            self.body_contains.is_some(),
            &[Http, Https],
        );
        only("tls_insecure", self.tls_insecure, &[Https]);
        only("digest", self.digest.is_some(), &[Http, Https]);
        only("name", self.name.is_some(), &[Dns]);
        only("command", self.command.is_some(), &[Exec]);
        only("user", self.user.is_some(), &[Exec]);
        only("group", self.group.is_some(), &[Exec]);
        only(
            "source",
            self.source.is_some(),
            &[Icmp, Tcp, Http, Https, Udp, Dns],
        );
        if let Some(source) = self.source {
            if source.is_unspecified() || source.is_multicast() {
                out.push((
                    "source",
                    format!("{source} cannot be a source address: give one of this host's"),
                ));
            }
        }
        match self.kind {
            Http | Https => {
                let path = self.path.as_deref().unwrap_or("/");
                if let Err(e) = http_target_problem(path, self.host.as_deref()) {
                    let field = if e.starts_with("host") {
                        "host"
                    } else {
                        "path"
                    };
                    out.push((field, e));
                }
                if self
                    .expect_status
                    .as_ref()
                    .is_some_and(|s| s.is_empty() || s.iter().any(|c| !(100..=599).contains(c)))
                {
                    out.push((
                        "expect_status",
                        "must list status codes in 100..=599".into(),
                    ));
                }
                if let Err(e) = digest_problem(self.digest.as_deref()) {
                    out.push(("digest", e));
                }
            }
            Udp if self.send.is_none() => {
                out.push((
                    "send",
                    "required for udp checks: the datagram to send".into(),
                ));
            }
            Dns => {
                if let Err(e) = valid_dns_name(self.dns_name()) {
                    out.push(("name", e));
                }
            }
            Exec => match &self.command {
                None => out.push((
                    "command",
                    "required for exec checks: the program and its arguments".into(),
                )),
                Some(argv) if argv.first().is_none_or(String::is_empty) => {
                    out.push(("command", "needs a program (argv[0]) to run".into()));
                }
                Some(argv) if argv.iter().any(|a| a.contains('\0')) => {
                    out.push(("command", "arguments cannot contain NUL bytes".into()));
                }
                Some(_) => {}
            },
            _ => {}
        }
        out
    }

    /// The name a `dns` check asks for.
    pub fn dns_name(&self) -> &str {
        self.name.as_deref().unwrap_or(DNS_DEFAULT_NAME)
    }
}

/// A backend's health as the tracker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Receives traffic.
    Up,
    /// Taken out of rotation.
    Down,
}

/// A name a DNS check can ask for: printable ASCII without spaces (no IDNA, no
/// escapes), labels of 1 to 63 bytes, at most 253 characters, or `.` for the root.
fn valid_dns_name(name: &str) -> Result<(), String> {
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "DNS name {name:?} must be printable ASCII without spaces (write IDNs in \
             their xn-- form)"
        ));
    }
    dns_name_rules(name)
}

/// The rules `name` must follow to go into a DNS query as it is: 1 to 253 characters
/// (the root is `.`), labels of 1 to 63 bytes.
pub fn dns_name_rules(name: &str) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Err("DNS name is empty (the root is \".\")".into());
    }
    if trimmed.len() > 253 {
        return Err(format!("DNS name {name:?} is longer than 253 characters"));
    }
    if !trimmed.is_empty() {
        if let Some(label) = trimmed.split('.').find(|l| !(1..=63).contains(&l.len())) {
            return Err(format!(
                "DNS name {name:?}: label {label:?} must be 1 to 63 bytes"
            ));
        }
    }
    Ok(())
}

/// Checks that an HTTP check's `path` and `host` can go into a request line and header
/// as they are (no request smuggling through a configured path).
pub fn http_target_problem(path: &str, host: Option<&str>) -> Result<(), String> {
    let bad = |s: &str| s.bytes().any(|b| b <= b' ' || b == 0x7f);
    if !path.starts_with('/') || bad(path) {
        return Err(format!(
            "path {path:?} must start with '/' and contain no spaces or control characters"
        ));
    }
    if let Some(host) = host {
        if host.is_empty() || bad(host) {
            return Err(format!(
                "host {host:?} must be non-empty without spaces or control characters"
            ));
        }
    }
    Ok(())
}

/// Checks that a body digest is 32 hex digits (an MD5).
pub fn digest_problem(digest: Option<&str>) -> Result<(), String> {
    if let Some(digest) = digest {
        if digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("digest {digest:?} must be 32 hex digits (an MD5)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> CheckSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults() {
        let c = parse(r#"{"type":"tcp"}"#);
        assert_eq!(c, CheckSpec::new(CheckKind::Tcp));
        assert!(c.problems(Some(80)).is_empty());
        assert_eq!(c.initial, Health::Up);
    }

    #[test]
    fn problems_name_field_and_reason() {
        let c = parse(
            r#"{"type":"tcp","interval_ms":50,"timeout_ms":0,"rise":0,"fall":0,
                "path":"/x","initial":"down"}"#,
        );
        let got: Vec<String> = c
            .problems(None)
            .into_iter()
            .map(|(f, r)| format!("{f}: {r}"))
            .collect();
        assert_eq!(
            got,
            [
                "interval_ms: 50 is outside 100..=86400000",
                "timeout_ms: 0 must be 1..=interval_ms (50)",
                "rise: must be at least 1",
                "fall: must be at least 1",
                "port: required: the service listens on all ports, so there is no default",
                "path: applies to http/https checks, not tcp",
            ]
        );
        let c = parse(r#"{"type":"http","path":"no-slash","expect_status":[42]}"#);
        let fields: Vec<&str> = c.problems(Some(80)).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["path", "expect_status"]);
    }

    #[test]
    fn unknown_fields_are_errors() {
        let e = serde_json::from_str::<CheckSpec>(r#"{"type":"tcp","intervall_ms":5}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `intervall_ms`"), "{e}");
        let e = serde_json::from_str::<CheckSpec>(r#"{"type":"smtp"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `smtp`"), "{e}");
    }

    fn problems(json: &str, service_port: Option<u16>) -> Vec<String> {
        parse(json)
            .problems(service_port)
            .into_iter()
            .map(|(f, r)| format!("{f}: {r}"))
            .collect()
    }

    #[test]
    fn every_type_parses_and_validates() {
        let good = [
            r#"{"type":"icmp"}"#,
            r#"{"type":"tcp","send":"PING\r\n","expect":"+PONG"}"#,
            r#"{"type":"http","path":"/","digest":"444bcb3a3fcf8389296c49467f27e1d6"}"#,
            r#"{"type":"https","host":"www.example.com","tls_insecure":true,
                "digest":"444BCB3A3FCF8389296C49467F27E1D6","expect_status":[200,301]}"#,
            r#"{"type":"https"}"#,
            r#"{"type":"udp","send":"status","expect":"ok"}"#,
            r#"{"type":"udp","send":""}"#,
            r#"{"type":"dns","name":"example.com."}"#,
            r#"{"type":"dns"}"#,
            r#"{"type":"exec","command":["/usr/local/bin/check","--deep"]}"#,
        ];
        for json in good {
            assert_eq!(problems(json, Some(80)), Vec::<String>::new(), "{json}");
        }
        assert_eq!(parse(r#"{"type":"dns"}"#).dns_name(), ".");
        // Round trip through serde, as the config does.
        let c = parse(good[3]);
        let back: CheckSpec = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn ports_per_type() {
        // icmp has no port, so it needs none on an all-ports service and rejects one.
        assert!(problems(r#"{"type":"icmp"}"#, None).is_empty());
        assert_eq!(
            problems(r#"{"type":"icmp","port":80}"#, Some(80)),
            ["port: applies to tcp/http/https/udp/dns/exec checks, not icmp"]
        );
        // dns defaults to 53 and exec only passes the port on: no port needed either.
        assert!(problems(r#"{"type":"dns"}"#, None).is_empty());
        assert!(problems(r#"{"type":"exec","command":["/bin/true"]}"#, None).is_empty());
        for kind in ["tcp", "http", "https"] {
            assert_eq!(
                problems(&format!(r#"{{"type":"{kind}"}}"#), None),
                ["port: required: the service listens on all ports, so there is no default"],
                "{kind}"
            );
        }
        assert_eq!(
            problems(r#"{"type":"udp","send":"x"}"#, None),
            ["port: required: the service listens on all ports, so there is no default"]
        );
        assert!(problems(r#"{"type":"dns","port":5353}"#, None).is_empty());
        assert_eq!(
            problems(r#"{"type":"dns","port":0}"#, Some(80)),
            ["port: 0 is not a valid port"]
        );
    }

    #[test]
    fn fields_of_other_types_are_rejected() {
        assert_eq!(
            problems(
                r#"{"type":"icmp","send":"x","expect":"y","path":"/","host":"h",
                    "expect_status":[200],"body_contains":"ok","tls_insecure":true,
                    "digest":"444bcb3a3fcf8389296c49467f27e1d6","name":"a.b",
                    "command":["/bin/true"]}"#,
                Some(80)
            ),
            [
                "send: applies to tcp/udp checks, not icmp",
                "expect: applies to tcp/udp checks, not icmp",
                "path: applies to http/https checks, not icmp",
                "host: applies to http/https checks, not icmp",
                "expect_status: applies to http/https checks, not icmp",
                "body_contains: applies to http/https checks, not icmp",
                "tls_insecure: applies to https checks, not icmp",
                "digest: applies to http/https checks, not icmp",
                "name: applies to dns checks, not icmp",
                "command: applies to exec checks, not icmp",
            ]
        );
        assert_eq!(
            problems(r#"{"type":"http","tls_insecure":true}"#, Some(80)),
            ["tls_insecure: applies to https checks, not http"]
        );
        // `false` is the default, so writing it out is fine anywhere.
        assert!(problems(r#"{"type":"tcp","tls_insecure":false}"#, Some(80)).is_empty());
        assert_eq!(
            problems(
                r#"{"type":"exec","command":["/bin/true"],"send":"x"}"#,
                Some(80)
            ),
            ["send: applies to tcp/udp checks, not exec"]
        );
        assert_eq!(
            problems(
                r#"{"type":"dns","digest":"444bcb3a3fcf8389296c49467f27e1d6"}"#,
                Some(80)
            ),
            ["digest: applies to http/https checks, not dns"]
        );
    }

    #[test]
    fn values_of_the_new_fields_are_checked() {
        for bad in [
            "444bcb3a3fcf8389296c49467f27e1d",
            "444bcb3a3fcf8389296c49467f27e1dz",
            "",
        ] {
            let got = problems(
                &format!(r#"{{"type":"https","digest":"{bad}"}}"#),
                Some(443),
            );
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(
                got[0].starts_with("digest: ") && got[0].contains("32 hex digits"),
                "{got:?}"
            );
        }
        assert_eq!(
            problems(r#"{"type":"udp"}"#, Some(53)),
            ["send: required for udp checks: the datagram to send"]
        );
        assert_eq!(
            problems(r#"{"type":"exec"}"#, Some(80)),
            ["command: required for exec checks: the program and its arguments"]
        );
        for argv in [r#"[]"#, r#"[""]"#, r#"["", "x"]"#] {
            assert_eq!(
                problems(&format!(r#"{{"type":"exec","command":{argv}}}"#), Some(80)),
                ["command: needs a program (argv[0]) to run"],
                "{argv}"
            );
        }
        assert_eq!(
            problems(
                r#"{"type":"exec","command":["/bin/x","a\u0000b"]}"#,
                Some(80)
            ),
            ["command: arguments cannot contain NUL bytes"]
        );
        for good in [
            ".",
            "example.com",
            "example.com.",
            "_dns.xn--bcher-kva.example",
        ] {
            let json = format!(r#"{{"type":"dns","name":"{good}"}}"#);
            assert!(problems(&json, Some(53)).is_empty(), "{good}");
        }
        let long = ["a"; 130].join(".");
        for bad in [
            "",
            "a..b",
            ".a",
            "has space.com",
            "bücher.de",
            &"x".repeat(64),
            &long,
        ] {
            let got = problems(&format!(r#"{{"type":"dns","name":"{bad}"}}"#), Some(53));
            assert_eq!(got.len(), 1, "{bad:?}: {got:?}");
            assert!(got[0].starts_with("name: DNS name"), "{bad:?}: {got:?}");
        }
        let got = problems(r#"{"type":"https","host":"a b"}"#, Some(443));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("host: "), "{got:?}");
    }
}
