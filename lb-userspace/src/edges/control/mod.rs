//! The daemon's control socket: how `xlb status`, `xlb services`, `xlb backends` and
//! `xlb reload` talk to a running `xlb run`.
//!
//! - One Unix stream socket per daemon, at [`socket_path`]`(pin_dir)`, so several
//!   daemons (or test labs) on one host never meet. The directory is root-only (0700)
//!   and the socket 0600: reading health and triggering reloads is for root alone.
//! - Protocol: one JSON request line (`{"cmd":"status"}`), one JSON response line
//!   (`{"ok":true,"data":...}` or `{"ok":false,"error":"..."}`), then the daemon closes.
//!   Requests are at most [`MAX_REQUEST`] bytes; anything else is an error reply.
//! - The daemon answers from its main loop (the only owner of its state), so an answer
//!   is always a consistent snapshot.

pub mod server;
pub mod views;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Where control sockets live.
pub const SOCKET_DIR: &str = "/run/xlb";
/// Longest request line accepted.
pub const MAX_REQUEST: usize = 4096;
/// Longest response line a client reads (a config with thousands of backends).
pub const MAX_RESPONSE: u64 = 64 << 20;

/// The control socket of the daemon pinning under `pin_dir`:
/// `/run/xlb/<last component of pin_dir>.sock` (`/run/xlb/xlb.sock` by default).
pub fn socket_path(pin_dir: &Path) -> PathBuf {
    let name = pin_dir
        .file_name()
        .map_or_else(|| "xlb".into(), |n| n.to_string_lossy().into_owned());
    Path::new(SOCKET_DIR).join(format!("{name}.sock"))
}

/// Where the daemon pinning under `pin_dir` saves backend health for its successor:
/// next to its socket, `/run/xlb/<name>.health.json` (tmpfs: a reboot forgets it, as
/// it should, since the pins are gone too).
pub fn health_state_path(pin_dir: &Path) -> PathBuf {
    socket_path(pin_dir).with_extension("health.json")
}

/// What a client asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Status,
    Services,
    Backends,
    Vrrp,
    Reload,
    /// The Prometheus exposition (what the metrics endpoint serves), as a string.
    Metrics,
}

/// Why a request line was refused (the text goes back to the client).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("no request")]
    Empty,
    /// The client closed its end before the newline.
    #[error("request not terminated by a newline")]
    Unterminated,
    #[error("request longer than {MAX_REQUEST} bytes")]
    TooLong,
    #[error("bad request: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes one request line as the daemon receives it: the bytes up to and including
/// the first newline, read through a [`MAX_REQUEST`]-byte limit (so a line that hits
/// the limit without a newline is too long, not merely unterminated). Pure, so the
/// fuzzer (fuzz/fuzz_targets/control_request.rs) runs exactly what the server runs.
pub fn parse_request(line: &[u8]) -> Result<Request, RequestError> {
    if line.is_empty() {
        return Err(RequestError::Empty);
    }
    if line.len() > MAX_REQUEST {
        return Err(RequestError::TooLong);
    }
    if !line.ends_with(b"\n") {
        return Err(if line.len() == MAX_REQUEST {
            RequestError::TooLong
        } else {
            RequestError::Unterminated
        });
    }
    Ok(serde_json::from_slice(line)?)
}

/// The daemon's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(data: serde_json::Value) -> Response {
        Response {
            ok: true,
            data: Some(data),
            error: None,
        }
    }

    pub fn error(e: impl Into<String>) -> Response {
        Response {
            ok: false,
            data: None,
            error: Some(e.into()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens (not running, or another pin directory).
    #[error("no daemon answers on {path}: {source}")]
    NotRunning {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon's answer is not valid: {0}")]
    Protocol(String),
    /// The daemon understood and refused (e.g. a reload with a bad config).
    #[error("{0}")]
    Refused(String),
}

/// Sends `request` to the daemon at `path` and returns its data.
pub fn request(
    path: &Path,
    request: Request,
    timeout: Duration,
) -> Result<serde_json::Value, ClientError> {
    let shown = path.display().to_string();
    let mut stream = UnixStream::connect(path).map_err(|source| ClientError::NotRunning {
        path: shown.clone(),
        source,
    })?;
    let io = |source| ClientError::Io {
        path: shown.clone(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(&request).expect("requests serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(std::io::Read::take(&stream, MAX_RESPONSE))
        .read_line(&mut answer)
        .map_err(io)?;
    let response: Response =
        serde_json::from_str(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
    match response {
        Response { ok: true, data, .. } => Ok(data.unwrap_or(serde_json::Value::Null)),
        Response { error, .. } => Err(ClientError::Refused(
            error.unwrap_or_else(|| "refused without a reason".into()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_per_pin_dir() {
        assert_eq!(
            socket_path(Path::new("/sys/fs/bpf/xlb")),
            Path::new("/run/xlb/xlb.sock")
        );
        assert_eq!(
            socket_path(Path::new("/sys/fs/bpf/edge-a/")),
            Path::new("/run/xlb/edge-a.sock")
        );
    }

    #[test]
    fn wire_format() {
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"cmd":"status"}"#
        );
        let r: Request = serde_json::from_str(r#"{"cmd":"reload"}"#).unwrap();
        assert_eq!(r, Request::Reload);
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"shutdown"}"#).is_err());
        assert_eq!(
            parse_request(b"{\"cmd\":\"vrrp\"}\n").unwrap(),
            Request::Vrrp
        );
        assert_eq!(
            serde_json::to_string(&Response::error("no")).unwrap(),
            r#"{"ok":false,"error":"no"}"#
        );
    }

    #[test]
    fn request_framing() {
        let err = |line: &[u8]| parse_request(line).unwrap_err();
        assert!(matches!(err(b""), RequestError::Empty));
        assert!(matches!(
            err(br#"{"cmd":"status"}"#),
            RequestError::Unterminated
        ));
        // What the server's bounded read yields for an endless line.
        assert!(matches!(err(&[b' '; MAX_REQUEST]), RequestError::TooLong));
        let mut longest = vec![b' '; MAX_REQUEST - 17];
        longest.extend_from_slice(b"{\"cmd\":\"status\"}\n");
        assert_eq!(longest.len(), MAX_REQUEST);
        assert_eq!(parse_request(&longest).unwrap(), Request::Status);
        longest.insert(0, b' ');
        assert!(matches!(err(&longest), RequestError::TooLong));
        assert!(matches!(
            err(b"{\"cmd\":\"shutdown\"}\n"),
            RequestError::Json(_)
        ));
        assert!(matches!(
            err(b"{\"cmd\":\"st\xffatus\"}\n"),
            RequestError::Json(_)
        ));
        assert!(matches!(
            err(b"{\"cmd\":\"status\"} {}\n"),
            RequestError::Json(_)
        ));
    }
}
