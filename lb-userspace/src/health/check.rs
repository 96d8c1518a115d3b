//! Running a configured check ([`CheckSpec`]) once against a backend: the spec picks
//! the checker (`icmp`, `tcp`, `http`, `udp`, `exec`) and its settings.

use std::net::{IpAddr, SocketAddr};

pub use crate::config::check::{
    CheckKind, CheckSpec, DNS_DEFAULT_NAME, DNS_PORT, MAX_INTERVAL_MS, MIN_INTERVAL_MS,
};

use super::{exec, http, icmp, tcp, udp, CheckResult};

impl CheckSpec {
    fn http(&self) -> http::Check {
        http::Check {
            path: self.path.clone().unwrap_or_else(|| "/".into()),
            host: self.host.clone(),
            expect_status: self.expect_status.clone().unwrap_or_else(|| vec![200]),
            body_contains: self.body_contains.clone(),
            timeout: self.timeout(),
        }
    }

    fn http_options(&self) -> http::Options {
        let tls = match (self.kind, self.tls_insecure) {
            (CheckKind::Https, false) => http::Tls::Verify,
            (CheckKind::Https, true) => http::Tls::Insecure,
            _ => http::Tls::Off,
        };
        http::Options {
            tls,
            digest: self.digest.clone(),
            source: self.source,
        }
    }

    /// Probes `backend` once (port: the check's, else `service_port`, else 53 for
    /// `dns`). `service` (`vip:port/proto`) is passed to `exec` programs as
    /// `XLB_SERVICE`. Sockets and programs are created in the calling thread's network
    /// namespace.
    pub async fn probe(
        &self,
        backend: IpAddr,
        service_port: Option<u16>,
        service: &str,
    ) -> CheckResult {
        let port = self.port.or(service_port);
        let addr = SocketAddr::new(backend, port.unwrap_or(0));
        let send = self.send.as_deref().map(str::as_bytes);
        let expect = self.expect.as_deref().map(str::as_bytes);
        match self.kind {
            CheckKind::Icmp => icmp::check(backend, self.source, self.timeout()).await,
            CheckKind::Tcp if send.is_none() && expect.is_none() => {
                tcp::check(addr, self.source, self.timeout()).await
            }
            CheckKind::Tcp => {
                tcp::check_exchange(addr, self.source, self.timeout(), send, expect).await
            }
            CheckKind::Http | CheckKind::Https => {
                self.http().check_with(addr, &self.http_options()).await
            }
            CheckKind::Udp => {
                let send = send.unwrap_or_default();
                udp::check(addr, self.source, self.timeout(), send, expect).await
            }
            CheckKind::Dns => {
                let addr = SocketAddr::new(backend, self.port.unwrap_or(DNS_PORT));
                udp::check_dns(addr, self.source, self.timeout(), self.dns_name()).await
            }
            CheckKind::Exec => {
                let env = exec_env(backend, port, service);
                let argv = self.command.as_deref().unwrap_or_default();
                match self.run_as().resolve() {
                    Ok(run_as) => exec::check(argv, &env, run_as, self.timeout()).await,
                    Err(e) => CheckResult::Fail(super::FailReason::Io(format!(
                        "cannot run the exec check: {e}"
                    ))),
                }
            }
        }
    }
}

/// The environment of an exec check's program: `XLB_BACKEND` (address),
/// `XLB_PORT` (the check's or the service's port; empty when neither has one) and
/// `XLB_SERVICE` (`vip:port/proto`).
pub fn exec_env(backend: IpAddr, port: Option<u16>, service: &str) -> Vec<(String, String)> {
    vec![
        ("XLB_BACKEND".into(), backend.to_string()),
        (
            "XLB_PORT".into(),
            port.map(|p| p.to_string()).unwrap_or_default(),
        ),
        ("XLB_SERVICE".into(), service.to_owned()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::CheckResult;

    fn parse(json: &str) -> CheckSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn tls_follows_the_check_type() {
        let c = parse(r#"{"type":"https","tls_insecure":true}"#);
        assert_eq!(c.http_options().tls, http::Tls::Insecure);
        assert_eq!(
            parse(r#"{"type":"https"}"#).http_options().tls,
            http::Tls::Verify
        );
        assert_eq!(
            parse(r#"{"type":"http"}"#).http_options().tls,
            http::Tls::Off
        );
    }

    #[test]
    fn exec_programs_learn_which_backend() {
        let env = exec_env(
            "10.0.0.11".parse().unwrap(),
            Some(8080),
            "10.0.0.100:80/tcp",
        );
        assert_eq!(
            env,
            [
                ("XLB_BACKEND".to_owned(), "10.0.0.11".to_owned()),
                ("XLB_PORT".to_owned(), "8080".to_owned()),
                ("XLB_SERVICE".to_owned(), "10.0.0.100:80/tcp".to_owned()),
            ]
        );
        assert_eq!(exec_env("fd00::1".parse().unwrap(), None, "x")[1].1, "");
    }

    #[test]
    fn exec_probe_runs_the_command_with_the_environment() {
        let mut c = CheckSpec::new(CheckKind::Exec);
        c.command = Some(vec![
            "/bin/sh".into(),
            "-c".into(),
            r#"test "$XLB_BACKEND $XLB_PORT $XLB_SERVICE" = "10.0.0.11 80 svc" || exit 3"#.into(),
        ]);
        let ip: IpAddr = "10.0.0.11".parse().unwrap();
        assert_eq!(
            crate::health::block_on(c.probe(ip, Some(80), "svc")),
            CheckResult::Ok
        );
        let r = crate::health::block_on(c.probe(ip, Some(81), "svc"));
        assert_eq!(r.to_string(), "exit status 3");
    }
}
