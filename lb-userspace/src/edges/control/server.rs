//! The daemon side of the control socket: accepts connections, reads one request each
//! and hands it to the daemon's main loop, which answers through a oneshot channel.

use std::{
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

use super::{parse_request, Request, Response, MAX_REQUEST};

/// A request waiting for the main loop's answer.
pub type Pending = (Request, oneshot::Sender<Response>);

/// A client gets this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The listening socket; removes its file when dropped.
pub struct ControlSocket {
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` (root-only) and starts accepting; requests go to `tx`. Refuses to
    /// take over a socket another live daemon answers on.
    pub fn bind(path: &Path, tx: mpsc::Sender<Pending>) -> Result<ControlSocket> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "another xlb daemon answers on {} (same pin directory?)",
                    path.display()
                );
            }
            // Left behind by a daemon that was killed.
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        let listener =
            UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod 0600 {}", path.display()))?;
        tokio::spawn(accept_loop(listener, tx));
        Ok(ControlSocket {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn accept_loop(listener: UnixListener, tx: mpsc::Sender<Pending>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, tx.clone()));
            }
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve(stream: UnixStream, tx: mpsc::Sender<Pending>) {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(read.take(MAX_REQUEST as u64)).read_until(b'\n', &mut line),
    )
    .await;
    let response = match read {
        Err(_) => Response::error("no request within 5 s"),
        Ok(Err(e)) => Response::error(format!("reading the request: {e}")),
        Ok(Ok(_)) => match parse_request(&line) {
            Err(e) => Response::error(e.to_string()),
            Ok(request) => {
                let (reply, answer) = oneshot::channel();
                if tx.send((request, reply)).await.is_err() {
                    Response::error("the daemon is shutting down")
                } else {
                    answer
                        .await
                        .unwrap_or_else(|_| Response::error("the daemon dropped the request"))
                }
            }
        },
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    let _ = write.write_all(&out).await;
}
