//! HTTP check: `GET <path>` over HTTP/1.1 with `Connection: close`, then match the
//! status and, optionally, a substring of the body (keepalived's `HTTP_GET` with
//! `status_code`, but a substring instead of a digest).
//!
//! The client is deliberately minimal: one request per connection, plain TCP (no TLS),
//! response parsing by `httparse`. The body is read only when a substring is to be
//! matched, and then at most [`MAX_BODY`] bytes of it, so a backend answering with a
//! huge (or endless) body costs the checker a bounded amount of memory and time.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{tcp::abort, CheckResult, FailReason};

/// At most this many body bytes are read (and searched) after the headers.
pub const MAX_BODY: usize = 64 * 1024;
/// Headers larger than this make the check fail.
pub const MAX_HEADER: usize = 16 * 1024;
/// Headers beyond this count make the check fail.
const MAX_HEADERS: usize = 64;

/// An HTTP health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Request target, e.g. `/healthz?deep=1`; must start with `/` and contain no
    /// spaces or control characters.
    pub path: String,
    /// `Host` header; the probed `ip:port` when `None`.
    pub host: Option<String>,
    /// Accepted status codes; an empty list means `[200]`.
    pub expect_status: Vec<u16>,
    /// When set, the first [`MAX_BODY`] bytes of the body must contain this text.
    pub body_contains: Option<String>,
    /// Budget for the whole probe: connect, request and response.
    pub timeout: Duration,
}

impl Default for Check {
    /// `GET /`, expecting 200, any body, within 3 s.
    fn default() -> Check {
        Check {
            path: "/".into(),
            host: None,
            expect_status: vec![200],
            body_contains: None,
            timeout: Duration::from_secs(3),
        }
    }
}

impl Check {
    /// Probes `addr` once. The socket is created in the network namespace of the
    /// calling thread.
    pub async fn check(&self, addr: SocketAddr) -> CheckResult {
        if let Err(e) = self.validate() {
            return CheckResult::Fail(FailReason::Io(format!("invalid HTTP check: {e}")));
        }
        match tokio::time::timeout(self.timeout, self.probe(addr)).await {
            Err(_elapsed) => CheckResult::Fail(FailReason::Timeout(self.timeout)),
            Ok(Err(reason)) => CheckResult::Fail(reason),
            Ok(Ok(())) => CheckResult::Ok,
        }
    }

    /// Checks that `path` and `host` can go into a request line and header as they are
    /// (no request smuggling through a configured path).
    pub fn validate(&self) -> Result<(), String> {
        let bad = |s: &str| s.bytes().any(|b| b <= b' ' || b == 0x7f);
        if !self.path.starts_with('/') || bad(&self.path) {
            return Err(format!(
                "path {:?} must start with '/' and contain no spaces or control characters",
                self.path
            ));
        }
        if let Some(host) = &self.host {
            if host.is_empty() || bad(host) {
                return Err(format!(
                    "host {host:?} must be non-empty without spaces or control characters"
                ));
            }
        }
        Ok(())
    }

    fn status_ok(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            status == 200
        } else {
            self.expect_status.contains(&status)
        }
    }

    async fn probe(&self, addr: SocketAddr) -> Result<(), FailReason> {
        let io = |e: std::io::Error| FailReason::from_io(&e);
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        // Abortive close on drop, whichever way this function returns: see tcp::abort.
        // The response has been read (or given up on) by then, so the RST loses nothing.
        abort(&stream);
        let host = self.host.clone().unwrap_or_else(|| addr.to_string());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xlb-health-check\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n",
            self.path
        );
        stream.write_all(request.as_bytes()).await.map_err(io)?;

        let (status, body_framing, mut raw) = read_head(&mut stream).await?;
        if !self.status_ok(status) {
            return Err(FailReason::Status(status));
        }
        let Some(needle) = &self.body_contains else {
            return Ok(());
        };
        let limit = match body_framing {
            Framing::Empty => 0,
            Framing::Length(len) => usize::try_from(len).unwrap_or(usize::MAX).min(MAX_BODY),
            Framing::Chunked | Framing::UntilClose => MAX_BODY,
        };
        let mut chunk = [0u8; 8192];
        while raw.len() < limit {
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
        }
        raw.truncate(limit);
        let body = match body_framing {
            Framing::Chunked => dechunk(&raw),
            _ => raw,
        };
        if contains(&body, needle.as_bytes()) {
            Ok(())
        } else {
            Err(FailReason::BodyMismatch(needle.clone()))
        }
    }
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// 1xx, 204 and 304 responses have no body.
    Empty,
    Length(u64),
    Chunked,
    /// No length: the body ends when the server closes (we sent `Connection: close`).
    UntilClose,
}

/// Reads until the response headers are complete; returns the status, the body
/// framing and the body bytes already read past the headers.
async fn read_head(stream: &mut TcpStream) -> Result<(u16, Framing, Vec<u8>), FailReason> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| FailReason::from_io(&e))?;
        if n == 0 {
            return Err(FailReason::Protocol(if buf.is_empty() {
                "connection closed without a response".into()
            } else {
                "connection closed in the middle of the headers".into()
            }));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = response.code.unwrap_or_default();
                let framing = framing(status, response.headers);
                return Ok((status, framing, buf.split_off(len)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEADER => {}
            Ok(httparse::Status::Partial) => {
                return Err(FailReason::Protocol(format!(
                    "headers longer than {MAX_HEADER} bytes"
                )))
            }
            Err(e) => return Err(FailReason::Protocol(e.to_string())),
        }
    }
}

fn framing(status: u16, headers: &[httparse::Header<'_>]) -> Framing {
    if (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::Empty;
    }
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    // Transfer-Encoding wins over Content-Length (RFC 9112 6.3).
    if let Some(te) = value("transfer-encoding") {
        if te
            .rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
        {
            return Framing::Chunked;
        }
        return Framing::UntilClose;
    }
    match value("content-length").map(str::parse::<u64>) {
        Some(Ok(len)) => Framing::Length(len),
        _ => Framing::UntilClose,
    }
}

/// Decodes as much of a chunked body as `raw` holds; a truncated or malformed tail is
/// dropped (the caller only searches the result).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    while let Ok(httparse::Status::Complete((start, size))) = httparse::parse_chunk_size(raw) {
        if size == 0 {
            break;
        }
        let data = &raw[start..];
        let take = usize::try_from(size).unwrap_or(usize::MAX).min(data.len());
        out.extend_from_slice(&data[..take]);
        match data[take..].strip_prefix(b"\r\n") {
            Some(rest) => raw = rest,
            None => break,
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn framing_follows_the_headers() {
        assert_eq!(framing(200, &[]), Framing::UntilClose);
        assert_eq!(
            framing(200, &[header("Content-Length", " 42 ")]),
            Framing::Length(42)
        );
        assert_eq!(
            framing(200, &[header("content-length", "x")]),
            Framing::UntilClose
        );
        assert_eq!(
            framing(
                200,
                &[
                    header("Content-Length", "3"),
                    header("Transfer-Encoding", "gzip, Chunked")
                ]
            ),
            Framing::Chunked
        );
        assert_eq!(
            framing(204, &[header("Content-Length", "3")]),
            Framing::Empty
        );
        assert_eq!(framing(304, &[]), Framing::Empty);
    }

    #[test]
    fn dechunk_decodes_and_tolerates_truncation() {
        assert_eq!(dechunk(b"2\r\nok\r\n3;x=y\r\n!!!\r\n0\r\n\r\n"), b"ok!!!");
        assert_eq!(dechunk(b"5\r\nhel"), b"hel");
        assert_eq!(dechunk(b"zz\r\n"), b"");
        assert_eq!(dechunk(b""), b"");
    }

    #[test]
    fn substring_search() {
        assert!(contains(b"status: ok", b"ok"));
        assert!(!contains(b"status: o k", b"ok"));
        assert!(contains(b"", b""));
        assert!(!contains(b"o", b"ok"));
    }

    #[test]
    fn status_matching() {
        let mut check = Check::default();
        assert!(check.status_ok(200) && !check.status_ok(204));
        check.expect_status = vec![];
        assert!(check.status_ok(200) && !check.status_ok(500));
        check.expect_status = vec![200, 204];
        assert!(check.status_ok(204) && !check.status_ok(301));
    }

    #[test]
    fn validation_rejects_injection() {
        let ok = Check::default();
        assert!(ok.validate().is_ok());
        for path in ["", "health", "/a b", "/a\r\nX-Evil: 1", "/\u{7f}"] {
            let check = Check {
                path: path.into(),
                ..Check::default()
            };
            assert!(check.validate().is_err(), "{path:?}");
        }
        let check = Check {
            host: Some("a\r\nb".into()),
            ..Check::default()
        };
        assert!(check.validate().is_err());
    }

    #[test]
    fn invalid_check_fails_without_connecting() {
        let check = Check {
            path: "no-slash".into(),
            ..Check::default()
        };
        // Port 9 on a TEST-NET address: never contacted, validation fails first.
        let result = crate::health::block_on(check.check("192.0.2.1:9".parse().unwrap()));
        assert!(
            matches!(&result, CheckResult::Fail(FailReason::Io(m)) if m.contains("invalid HTTP check")),
            "{result:?}"
        );
    }
}
