//! HTTP check: `GET <path>` over HTTP/1.1 with `Connection: close`, then match the
//! status and, optionally, a substring of the body and/or the MD5 digest of the whole
//! body (keepalived's `HTTP_GET` with `status_code` and `digest`); over TLS too
//! (keepalived's `SSL_GET`).
//!
//! The client is deliberately minimal: one request per connection, response parsing
//! by `httparse`. The body is read only when it is to be matched: at most
//! [`MAX_BODY`] bytes of it for a substring, the whole of it, but at most
//! [`MAX_DIGEST_BODY`] bytes, for a digest. So a backend answering with a huge (or
//! endless) body costs the checker a bounded amount of memory and time.
//!
//! TLS ([`Tls`]) uses rustls with the *ring* provider. Unlike keepalived's `SSL_GET`,
//! which does not verify the server certificate unless given a CA, the default here
//! ([`Tls::Verify`]) verifies it against the Mozilla roots of `webpki-roots`, for the
//! name in [`Check::host`] (or the probed IP); skipping verification is opt-in
//! ([`Tls::Insecure`]), for backends with self-signed certificates.
//!
//! The TLS and digest settings live in [`Options`], beside [`Check`], so that code
//! building a plain `Check` with a struct literal keeps compiling.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use md5::{Digest, Md5};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{self, CryptoProvider},
    pki_types::{CertificateDer, ServerName, UnixTime},
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use super::{contains, tcp::abort, CheckResult, FailReason};

/// At most this many body bytes are searched for [`Check::body_contains`].
pub const MAX_BODY: usize = 64 * 1024;
/// A body to digest ([`Options::digest`]) may be at most this long (de-chunked);
/// longer ones make the check fail.
pub const MAX_DIGEST_BODY: usize = 1024 * 1024;
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
    /// `Host` header (and, over TLS, the server name: SNI and the name the
    /// certificate must be valid for, any `:port` removed); the probed `ip:port` when
    /// `None`.
    pub host: Option<String>,
    /// Accepted status codes; an empty list means `[200]`.
    pub expect_status: Vec<u16>,
    /// When set, the first [`MAX_BODY`] bytes of the body must contain this text.
    pub body_contains: Option<String>,
    /// Budget for the whole probe: connect, TLS handshake, request and response.
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

/// Whether and how the check speaks TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Tls {
    /// Plain HTTP.
    #[default]
    Off,
    /// HTTPS; the certificate must chain to a `webpki-roots` (Mozilla) root and be
    /// valid for [`Check::host`] (without port), or for the probed IP address when
    /// there is no host.
    Verify,
    /// HTTPS without any certificate check (self-signed or expired certificates,
    /// names that do not match): keepalived `SSL_GET`'s default behaviour. The
    /// handshake still has to complete, so this does prove a working TLS server.
    Insecure,
}

/// What an HTTP check can do beyond [`Check`]: TLS and a body digest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Plain HTTP by default.
    pub tls: Tls,
    /// When set, the MD5 of the whole (de-chunked) body, as 32 hex digits, must be
    /// this (keepalived's `digest`; `md5sum` of the page gives it). The body may be
    /// at most [`MAX_DIGEST_BODY`] bytes and must arrive complete.
    pub digest: Option<String>,
    /// The address probes leave from (default: the kernel's choice).
    pub source: Option<std::net::IpAddr>,
}

impl Options {
    /// Checks that `digest` is 32 hex digits.
    pub fn validate(&self) -> Result<(), String> {
        crate::config::check::digest_problem(self.digest.as_deref())
    }
}

impl Check {
    /// Probes `addr` once over plain HTTP. The socket is created in the network
    /// namespace of the calling thread.
    pub async fn check(&self, addr: SocketAddr) -> CheckResult {
        self.check_with(addr, &Options::default()).await
    }

    /// Probes `addr` once with `options` (TLS, digest). The socket is created in the
    /// network namespace of the calling thread.
    ///
    /// Failures: [`FailReason::Status`], [`FailReason::BodyMismatch`],
    /// [`FailReason::DigestMismatch`], [`FailReason::Tls`] (handshake or certificate),
    /// [`FailReason::Protocol`] (not HTTP, truncated, too large to digest), plus the
    /// connection failures of [`super::tcp::check`] and [`FailReason::Timeout`].
    pub async fn check_with(&self, addr: SocketAddr, options: &Options) -> CheckResult {
        if let Err(e) = self.validate().and_then(|()| options.validate()) {
            return CheckResult::Fail(FailReason::Io(format!("invalid HTTP check: {e}")));
        }
        match tokio::time::timeout(self.timeout, self.probe(addr, options)).await {
            Err(_elapsed) => CheckResult::Fail(FailReason::Timeout(self.timeout)),
            Ok(Err(reason)) => CheckResult::Fail(reason),
            Ok(Ok(())) => CheckResult::Ok,
        }
    }

    /// Checks that `path` and `host` can go into a request line and header as they are
    /// (no request smuggling through a configured path).
    pub fn validate(&self) -> Result<(), String> {
        crate::config::check::http_target_problem(&self.path, self.host.as_deref())
    }

    fn status_ok(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            status == 200
        } else {
            self.expect_status.contains(&status)
        }
    }

    async fn probe(&self, addr: SocketAddr, options: &Options) -> Result<(), FailReason> {
        let tcp = super::source::tcp_connect(addr, options.source)
            .await
            .map_err(|e| FailReason::from_io(&e))?;
        // Abortive close on drop, whichever way this function returns: see tcp::abort.
        // The response has been read (or given up on) by then, so the RST loses
        // nothing (over TLS it replaces the close_notify, which nobody waits for).
        abort(&tcp);
        let insecure = match options.tls {
            Tls::Off => return self.exchange(tcp, addr, options).await,
            Tls::Verify => false,
            Tls::Insecure => true,
        };
        let name = server_name(self.host.as_deref(), addr)?;
        let connector = TlsConnector::from(client_config(insecure)?);
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| handshake_reason(&e))?;
        self.exchange(tls, addr, options).await
    }

    /// Sends the request on `stream` and judges the response.
    async fn exchange<S>(
        &self,
        mut stream: S,
        addr: SocketAddr,
        options: &Options,
    ) -> Result<(), FailReason>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let host = self.host.clone().unwrap_or_else(|| addr.to_string());
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: xlb-health-check\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n",
            self.path
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| FailReason::from_io(&e))?;
        stream.flush().await.map_err(|e| FailReason::from_io(&e))?;
        self.judge(&mut stream, options).await
    }

    /// Reads the response from `stream` and judges it: status, then body substring
    /// and digest when asked for.
    async fn judge<S>(&self, stream: &mut S, options: &Options) -> Result<(), FailReason>
    where
        S: AsyncRead + Unpin,
    {
        let (status, framing, raw) = read_head(stream).await?;
        if !self.status_ok(status) {
            return Err(FailReason::Status(status));
        }
        if self.body_contains.is_none() && options.digest.is_none() {
            return Ok(());
        }
        let limit = if options.digest.is_some() {
            if let Framing::Length(len) = framing {
                if len > MAX_DIGEST_BODY as u64 {
                    return Err(too_large_to_digest());
                }
            }
            MAX_DIGEST_BODY
        } else {
            MAX_BODY
        };
        let body = read_body(stream, framing, raw, limit).await?;
        if let Some(needle) = &self.body_contains {
            let searched = &body.data[..body.data.len().min(MAX_BODY)];
            if !contains(searched, needle.as_bytes()) {
                return Err(FailReason::BodyMismatch(needle.clone()));
            }
        }
        if let Some(expected) = &options.digest {
            match body.end {
                End::Complete => {}
                End::OverLimit => return Err(too_large_to_digest()),
                End::Truncated => {
                    return Err(FailReason::Protocol(
                        "body ended early, cannot digest it".into(),
                    ))
                }
            }
            let got = hex(&Md5::digest(&body.data));
            if !got.eq_ignore_ascii_case(expected) {
                return Err(FailReason::DigestMismatch {
                    expected: expected.to_ascii_lowercase(),
                    got,
                });
            }
        }
        Ok(())
    }
}

/// Judges `response`, the complete bytes a server sent (the connection closing after
/// them), exactly as [`Check::check_with`] judges a response read from a socket, but
/// without a timeout (reading from memory never waits). For fuzzing and tests.
#[doc(hidden)]
pub fn judge_response(check: &Check, options: &Options, response: &[u8]) -> CheckResult {
    if let Err(e) = check.validate().and_then(|()| options.validate()) {
        return CheckResult::Fail(FailReason::Io(format!("invalid HTTP check: {e}")));
    }
    let mut stream = response;
    let judged = std::pin::pin!(check.judge(&mut stream, options));
    // `&[u8]` never returns Pending, so neither does `judge` on it: one poll finishes.
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::future::Future::poll(judged, &mut cx) {
        std::task::Poll::Ready(Ok(())) => CheckResult::Ok,
        std::task::Poll::Ready(Err(reason)) => CheckResult::Fail(reason),
        std::task::Poll::Pending => unreachable!("reading from memory does not wait"),
    }
}

fn too_large_to_digest() -> FailReason {
    FailReason::Protocol(format!(
        "body longer than {MAX_DIGEST_BODY} bytes, too large to digest"
    ))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// The TLS server name for `host` (a Host header value: a port is removed, IPv6
/// brackets too), or the probed IP address when there is no host. rustls sends SNI
/// for DNS names only, and checks an IP address against the certificate's IP SANs.
fn server_name(host: Option<&str>, addr: SocketAddr) -> Result<ServerName<'static>, FailReason> {
    let Some(host) = host else {
        return Ok(ServerName::IpAddress(addr.ip().into()));
    };
    let name = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or(bracketed)
    } else {
        match host.split_once(':') {
            // Exactly one colon: name:port. More: a bare IPv6 address.
            Some((name, port)) if !port.contains(':') => name,
            _ => host,
        }
    };
    ServerName::try_from(name.to_owned()).map_err(|_| {
        FailReason::Tls(format!(
            "host {host:?} is neither a DNS name nor an IP address"
        ))
    })
}

/// A failed handshake's reason: rustls' own error when it has one ("invalid peer
/// certificate: UnknownIssuer", "received fatal alert: HandshakeFailure"), else the
/// socket error.
fn handshake_reason(e: &io::Error) -> FailReason {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => FailReason::Tls(tls.to_string()),
        None => FailReason::Tls(format!("handshake failed: {e}")),
    }
}

/// The rustls client configuration, verifying or not; built once per process
/// (parsing the root store for every probe would cost more than the probe) and
/// immutable afterwards.
fn client_config(insecure: bool) -> Result<Arc<ClientConfig>, FailReason> {
    static VERIFY: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    static INSECURE: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    let cell = if insecure { &INSECURE } else { &VERIFY };
    cell.get_or_init(|| build_client_config(insecure).map(Arc::new))
        .clone()
        .map_err(FailReason::Tls)
}

fn build_client_config(insecure: bool) -> Result<ClientConfig, String> {
    // Explicitly ring, not the process default: nothing else gets to pick (or fail
    // to pick, when two providers are compiled in) the crypto of health checks.
    let provider = Arc::new(crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        let roots: RootCertStore = webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect();
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // Servers that prefer HTTP/2 must not pick it: we speak HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// [`Tls::Insecure`]'s verifier: any certificate, for any name, is accepted. The
/// handshake signature is still verified, so the server must hold the private key
/// of the certificate it shows (this proves a working TLS server, not its identity).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads into `buf`; end of stream is `Ok(0)`, also when a TLS peer closes the
/// connection without a close_notify (tokio-rustls reports that as UnexpectedEof):
/// many servers do, and with `Connection: close` and a framed body nothing is lost.
async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut [u8],
) -> Result<usize, FailReason> {
    match stream.read(buf).await {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(FailReason::from_io(&e)),
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
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(u16, Framing, Vec<u8>), FailReason> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let n = read_some(stream, &mut chunk).await?;
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

/// How reading a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The whole body, as framed, arrived.
    Complete,
    /// More than the limit arrived before the end.
    OverLimit,
    /// The connection closed (or the chunked framing broke) before the end.
    Truncated,
}

/// A (possibly partial) decoded body.
#[derive(Debug)]
struct Body {
    data: Vec<u8>,
    end: End,
}

/// Reads the body framed by `framing`, of which `raw` has arrived already, until it
/// is complete, more than `limit` bytes (plus chunk framing) have arrived, or the
/// peer closes. The data returned is at most `limit` bytes.
async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    framing: Framing,
    mut raw: Vec<u8>,
    limit: usize,
) -> Result<Body, FailReason> {
    // A chunked body's framing takes room on the wire too: allow for it generously
    // (the decoded body is held to `limit` below).
    let raw_limit = match framing {
        Framing::Chunked => limit.saturating_add(limit / 8).saturating_add(1024),
        _ => limit,
    };
    let mut chunk = [0u8; 8192];
    let end = loop {
        let complete = match framing {
            Framing::Empty => true,
            Framing::Length(len) => raw.len() as u64 >= len,
            Framing::Chunked => chunked_complete(&raw),
            Framing::UntilClose => false,
        };
        if complete {
            break End::Complete;
        }
        if raw.len() > raw_limit {
            break End::OverLimit;
        }
        let n = read_some(stream, &mut chunk).await?;
        if n == 0 {
            break match framing {
                Framing::UntilClose => End::Complete,
                _ => End::Truncated,
            };
        }
        raw.extend_from_slice(&chunk[..n]);
    };
    let mut data = match framing {
        Framing::Empty => Vec::new(),
        Framing::Length(len) => {
            raw.truncate(usize::try_from(len).unwrap_or(usize::MAX));
            raw
        }
        Framing::Chunked => dechunk(&raw),
        Framing::UntilClose => raw,
    };
    let end = if end == End::Complete && data.len() > limit {
        End::OverLimit
    } else {
        end
    };
    data.truncate(limit);
    Ok(Body { data, end })
}

/// True once `raw` holds a whole chunked body: every chunk, the last (empty) chunk
/// and the end of the (usually empty) trailer section.
fn chunked_complete(mut raw: &[u8]) -> bool {
    loop {
        match httparse::parse_chunk_size(raw) {
            Ok(httparse::Status::Complete((start, 0))) => {
                let trailer = &raw[start..];
                return trailer.starts_with(b"\r\n") || contains(trailer, b"\r\n\r\n");
            }
            Ok(httparse::Status::Complete((start, size))) => {
                let next = usize::try_from(size)
                    .ok()
                    .and_then(|size| start.checked_add(size))
                    .and_then(|end| end.checked_add(2));
                match next {
                    Some(next) if next <= raw.len() => raw = &raw[next..],
                    _ => return false,
                }
            }
            _ => return false,
        }
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
    fn chunked_end_is_found() {
        assert!(chunked_complete(b"2\r\nok\r\n0\r\n\r\n"));
        assert!(chunked_complete(b"0\r\nX-Trailer: 1\r\n\r\n"));
        assert!(!chunked_complete(b"2\r\nok\r\n0\r\n"));
        assert!(!chunked_complete(b"2\r\nok\r\n"));
        assert!(!chunked_complete(b"5\r\nok"));
        assert!(!chunked_complete(b"ffffffffffffffff\r\n"));
        assert!(!chunked_complete(b""));
    }

    #[test]
    fn md5_hex() {
        assert_eq!(hex(&Md5::digest(b"ok")), "444bcb3a3fcf8389296c49467f27e1d6");
        assert_eq!(hex(&Md5::digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn digest_must_be_md5_hex() {
        let ok = Options {
            digest: Some("444BCB3A3FCF8389296C49467F27E1D6".into()),
            ..Options::default()
        };
        assert!(ok.validate().is_ok());
        for bad in ["", "444bcb3a", "444bcb3a3fcf8389296c49467f27e1dz"] {
            let options = Options {
                digest: Some(bad.into()),
                ..Options::default()
            };
            assert!(options.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_names_come_from_the_host_header() {
        let addr: SocketAddr = "10.71.0.2:443".parse().unwrap();
        let name = |host: Option<&str>| server_name(host, addr).map(|n| n.to_str().into_owned());
        assert_eq!(name(None).unwrap(), "10.71.0.2");
        assert_eq!(name(Some("backend.test")).unwrap(), "backend.test");
        assert_eq!(name(Some("backend.test:8443")).unwrap(), "backend.test");
        assert_eq!(name(Some("[fd71::2]:443")).unwrap(), "fd71::2");
        assert_eq!(name(Some("fd71::2")).unwrap(), "fd71::2");
        assert!(matches!(name(Some("bad_name!")), Err(FailReason::Tls(_))));
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
    fn responses_are_judged_from_memory() {
        let check = Check {
            body_contains: Some("ok".into()),
            ..Check::default()
        };
        let judge = |options: &Options, response: &[u8]| judge_response(&check, options, response);
        let plain = Options::default();
        assert_eq!(
            judge(&plain, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            CheckResult::Ok
        );
        assert_eq!(
            judge(
                &plain,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n"
            ),
            CheckResult::Ok
        );
        assert_eq!(
            judge(&plain, b"HTTP/1.1 503 Busy\r\n\r\nok"),
            CheckResult::Fail(FailReason::Status(503))
        );
        assert_eq!(
            judge(&plain, b"HTTP/1.1 200 OK\r\n\r\nnope"),
            CheckResult::Fail(FailReason::BodyMismatch("ok".into()))
        );
        assert!(matches!(
            judge(&plain, b""),
            CheckResult::Fail(FailReason::Protocol(_))
        ));
        let digest = Options {
            digest: Some("444bcb3a3fcf8389296c49467f27e1d6".into()),
            ..Options::default()
        };
        assert_eq!(
            judge(&digest, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            CheckResult::Ok
        );
        assert!(matches!(
            judge(&digest, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"),
            CheckResult::Fail(FailReason::Protocol(_))
        ));
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
