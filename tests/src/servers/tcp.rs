//! TCP server that greets each client with its id (which backend answered) and then
//! drains the connection until the client closes it.

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{wait_until, Stopper, STOP_POLL};
use crate::Netns;

/// A connection is given up after this long without data, so a client that never
/// closes cannot pin a thread forever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Stats {
    connections: AtomicU64,
    peers: Mutex<Vec<SocketAddr>>,
    /// Per connection closed by its client: bytes received and their FNV-1a hash.
    received: Mutex<Vec<(u64, u64)>>,
}

/// Thread-per-connection TCP server: writes `<id>\n` to every client, then reads
/// until EOF and closes.
#[derive(Debug)]
pub struct TcpServer {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stopper: Stopper,
}

impl TcpServer {
    /// Binds `addr` inside `ns` (port 0 picks a free port, see [`TcpServer::addr`]) and
    /// starts serving.
    pub fn start(ns: &Netns, addr: SocketAddr, id: &str) -> TcpServer {
        let listener = ns
            .run(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("TcpServer {id}: bind {addr} in netns {}: {e}", ns.name()));
        let addr = listener
            .local_addr()
            .expect("local_addr of a bound listener");
        // Non-blocking accept plus poll() lets the loop notice the stop flag.
        listener
            .set_nonblocking(true)
            .expect("set listener non-blocking");
        let stats = Arc::new(Stats::default());
        let mut stopper = Stopper::default();
        let stop = stopper.flag();
        let (thread_stats, greeting) = (stats.clone(), Arc::<str>::from(format!("{id}\n")));
        stopper.thread = Some(ns.spawn_thread(&format!("tcp-{id}"), move || {
            let mut conns: Vec<(JoinHandle<()>, TcpStream)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        thread_stats.connections.fetch_add(1, Ordering::Relaxed);
                        thread_stats
                            .peers
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(peer);
                        let stats = thread_stats.clone();
                        if let Some(conn) = spawn_conn(stream, greeting.clone(), stats) {
                            conns.push(conn);
                        }
                        conns.retain(|(handle, _)| !handle.is_finished());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                        let timeout = PollTimeout::try_from(STOP_POLL).expect("small timeout");
                        let _ = poll(&mut fds, timeout);
                    }
                    // Aborted handshakes, EINTR, or running out of fds under a flood:
                    // keep serving after a short breather.
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            // Unblock handlers still waiting for their client, then wait for them.
            for (handle, stream) in conns {
                let _ = stream.shutdown(Shutdown::Both);
                let _ = handle.join();
            }
        }));
        TcpServer {
            addr,
            stats,
            stopper,
        }
    }

    /// The bound address (with the real port if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// Source addresses of the accepted connections, in order (e.g. to check that a
    /// load balancer preserved the client address).
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.stats
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// For each connection its client closed: (bytes received, [`fnv1a`] of them).
    pub fn received(&self) -> Vec<(u64, u64)> {
        self.stats
            .received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until at least `n` connections were accepted; false on timeout.
    pub fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        wait_until(timeout, || self.connections() >= n)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stopper.stop_and_join("TcpServer");
    }
}

/// Starts the handler thread; returns it with a clone of the stream for shutdown.
fn spawn_conn(
    stream: TcpStream,
    greeting: Arc<str>,
    stats: Arc<Stats>,
) -> Option<(JoinHandle<()>, TcpStream)> {
    // accept() does not pass O_NONBLOCK on, but be explicit: the handler blocks.
    stream.set_nonblocking(false).ok()?;
    let for_shutdown = stream.try_clone().ok()?;
    let handle = thread::Builder::new()
        .name("tcp-conn".into())
        .spawn(move || serve(stream, &greeting, &stats))
        .ok()?;
    Some((handle, for_shutdown))
}

/// FNV-1a over `bytes`, continuing from `hash` (start with [`FNV_OFFSET`]): a cheap
/// digest to tell that a transfer arrived intact.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Initial state of [`fnv1a`].
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn serve(mut stream: TcpStream, greeting: &str, stats: &Stats) {
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    if stream.write_all(greeting.as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let (mut bytes, mut hash) = (0u64, FNV_OFFSET);
    // Read until EOF (client closed), an error, or the idle timeout.
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            stats
                .received
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((bytes, hash));
            break;
        }
        bytes += n as u64;
        hash = fnv1a(hash, &buf[..n]);
    }
    // Dropping `stream` would not close the socket: the server keeps a clone for
    // shutdown-on-drop. Shut it down explicitly so the client sees EOF now.
    let _ = stream.shutdown(Shutdown::Both);
}
