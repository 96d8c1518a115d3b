//! A health check as the config file writes it (`"check": {...}` on a service or a
//! backend), its validation, and running it once against a backend.
//!
//! One flat struct with a `type` tag rather than a tagged enum: serde cannot combine
//! `deny_unknown_fields` with flattened enums, and a misspelt field must be an error,
//! not silently ignored. Fields that do not belong to the chosen type are rejected by
//! [`CheckSpec::problems`] with the reason.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{http, tcp, CheckResult, Health};

/// Shortest accepted interval: faster checking only loads the backends.
pub const MIN_INTERVAL_MS: u64 = 100;
/// Longest accepted interval or timeout (a day): anything longer is a typo.
pub const MAX_INTERVAL_MS: u64 = 86_400_000;

/// A health check, as written in the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Port to probe; the service port when omitted (required for all-ports services).
    #[serde(default)]
    pub port: Option<u16>,
    /// tcp: bytes (UTF-8 text) to send after connecting.
    #[serde(default)]
    pub send: Option<String>,
    /// tcp: text the answer must contain.
    #[serde(default)]
    pub expect: Option<String>,
    /// http: request path (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// http: `Host` header (default `ip:port`).
    #[serde(default)]
    pub host: Option<String>,
    /// http: accepted status codes (default `[200]`).
    #[serde(default)]
    pub expect_status: Option<Vec<u16>>,
    /// http: text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
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
    /// TCP connect (keepalived TCP_CHECK), optionally with send/expect.
    Tcp,
    /// HTTP/1.1 GET (keepalived HTTP_GET).
    Http,
}

impl CheckKind {
    fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
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
            interval_ms: default_interval(),
            timeout_ms: default_timeout(),
            rise: default_rise(),
            fall: default_fall(),
            initial: default_initial(),
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
        match self.port {
            Some(0) => out.push(("port", "0 is not a valid port".into())),
            None if service_port.is_none() => out.push((
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
        only("send", self.send.is_some(), &[CheckKind::Tcp]);
        only("expect", self.expect.is_some(), &[CheckKind::Tcp]);
        only("path", self.path.is_some(), &[CheckKind::Http]);
        only("host", self.host.is_some(), &[CheckKind::Http]);
        only(
            "expect_status",
            self.expect_status.is_some(),
            &[CheckKind::Http],
        );
        only(
            "body_contains",
            self.body_contains.is_some(),
            &[CheckKind::Http],
        );
        if self.kind == CheckKind::Http {
            if let Err(e) = self.http().validate() {
                out.push(("path", e));
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
        }
        out
    }

    fn http(&self) -> http::Check {
        http::Check {
            path: self.path.clone().unwrap_or_else(|| "/".into()),
            host: self.host.clone(),
            expect_status: self.expect_status.clone().unwrap_or_else(|| vec![200]),
            body_contains: self.body_contains.clone(),
            timeout: self.timeout(),
        }
    }

    /// Probes `backend` once (port: the check's, else `service_port`). The socket is
    /// created in the calling thread's network namespace.
    pub async fn probe(&self, backend: IpAddr, service_port: Option<u16>) -> CheckResult {
        let port = self.port.or(service_port).unwrap_or(0);
        let addr = SocketAddr::new(backend, port);
        match self.kind {
            CheckKind::Tcp => tcp::check(addr, self.timeout()).await,
            CheckKind::Http => self.http().check(addr).await,
        }
    }
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
                "path: applies to http checks, not tcp",
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
}
