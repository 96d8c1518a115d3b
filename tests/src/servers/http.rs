//! HTTP server with a response that tests change at run time (health-check targets).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, Mutex, MutexGuard, PoisonError,
    },
};

use super::{Stopper, STOP_POLL};
use crate::Netns;

#[derive(Debug)]
struct State {
    status: u16,
    /// When non-empty, request n is answered with `cycle[n % len]` instead of `status`.
    cycle: Vec<u16>,
    body: String,
    last_path: Option<String>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    requests: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Answers every request, whatever its method or path, with the current status and
/// body (200 "ok" at first).
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stopper: Stopper,
}

impl HttpServer {
    /// Binds `addr` inside `ns` (port 0 picks a free port) and starts serving.
    pub fn start(ns: &Netns, addr: SocketAddr) -> HttpServer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                status: 200,
                cycle: Vec::new(),
                body: "ok".into(),
                last_path: None,
            }),
            requests: AtomicU64::new(0),
        });
        let mut stopper = Stopper::default();
        let stop = stopper.flag();
        let thread_shared = shared.clone();
        let (bound_tx, bound_rx) = mpsc::sync_channel(1);
        // The server is created and dropped on this thread inside the namespace: on drop
        // tiny_http connects to its own address to wake its accept thread, and that
        // connection must stay inside the namespace too.
        stopper.thread = Some(ns.spawn_thread("http-server", move || {
            let server = match tiny_http::Server::http(addr) {
                Ok(server) => server,
                Err(e) => {
                    let _ = bound_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = bound_tx.send(Ok(server.server_addr().to_ip()));
            while !stop.load(Ordering::Relaxed) {
                let request = match server.recv_timeout(STOP_POLL) {
                    Ok(Some(request)) => request,
                    Ok(None) => continue,
                    Err(e) => {
                        eprintln!("testbed: HttpServer on {addr}: {e}");
                        continue;
                    }
                };
                let n = thread_shared.requests.fetch_add(1, Ordering::SeqCst);
                let (status, body) = {
                    let mut state = thread_shared.state();
                    state.last_path = Some(request.url().to_owned());
                    let status = match state.cycle.len() {
                        0 => state.status,
                        len => state.cycle[(n % len as u64) as usize],
                    };
                    (status, state.body.clone())
                };
                let response = tiny_http::Response::from_string(body).with_status_code(status);
                // A client that hung up early is its own problem.
                let _ = request.respond(response);
            }
        }));
        let bound = bound_rx
            .recv()
            .unwrap_or_else(|_| panic!("HttpServer: server thread died while binding {addr}"));
        let addr = match bound {
            Ok(Some(bound)) => bound,
            Ok(None) => unreachable!("tiny_http::Server::http listens on an IP address"),
            Err(e) => panic!("HttpServer: bind {addr} in netns {}: {e}", ns.name()),
        };
        HttpServer {
            addr,
            shared,
            stopper,
        }
    }

    /// The bound address (with the real port if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes every following request get `status` with `body`.
    pub fn set_response(&self, status: u16, body: &str) {
        let mut state = self.shared.state();
        state.status = status;
        state.body = body.to_owned();
    }

    /// Answers request n with `statuses[n % len]` (e.g. `[200, 500]`: a flapping
    /// backend, one probe good, the next bad); an empty list goes back to the fixed
    /// status.
    pub fn set_cycle(&self, statuses: &[u16]) {
        self.shared.state().cycle = statuses.to_vec();
    }

    /// Requests answered so far (counted before the response is sent).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Path (with query) of the latest request, if any.
    pub fn last_path(&self) -> Option<String> {
        self.shared.state().last_path.clone()
    }

    /// Waits until at least `n` requests arrived; false on timeout.
    pub fn wait_for(&self, n: u64, timeout: std::time::Duration) -> bool {
        super::wait_until(timeout, || self.requests() >= n)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stopper.stop_and_join("HttpServer");
    }
}
