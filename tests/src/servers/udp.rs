//! UDP servers: a sink that counts datagrams and bytes, and a responder that answers
//! each datagram (echo-like or a toy DNS server) for UDP/DNS health checks.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use super::{wait_until, Stopper, STOP_POLL};
use crate::Netns;

#[derive(Debug, Default)]
struct Stats {
    datagrams: AtomicU64,
    bytes: AtomicU64,
}

/// Receives datagrams on one socket and counts them; never replies.
#[derive(Debug)]
pub struct UdpServer {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stopper: Stopper,
}

impl UdpServer {
    /// Binds `addr` inside `ns` (port 0 picks a free port) and starts counting.
    pub fn start(ns: &Netns, addr: SocketAddr) -> UdpServer {
        let socket = ns
            .run(|| UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("UdpServer: bind {addr} in netns {}: {e}", ns.name()));
        let addr = socket.local_addr().expect("local_addr of a bound socket");
        // The timeout lets the loop notice the stop flag.
        socket
            .set_read_timeout(Some(STOP_POLL))
            .expect("set UDP read timeout");
        let stats = Arc::new(Stats::default());
        let mut stopper = Stopper::default();
        let stop = stopper.flag();
        let thread_stats = stats.clone();
        stopper.thread = Some(ns.spawn_thread("udp-server", move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        // Bytes first: whoever sees the new datagram count also sees its bytes.
                        thread_stats.bytes.fetch_add(n as u64, Ordering::SeqCst);
                        thread_stats.datagrams.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    // E.g. ECONNREFUSED from an ICMP error: not fatal for a sink.
                    Err(_) => {}
                }
            }
        }));
        UdpServer {
            addr,
            stats,
            stopper,
        }
    }

    /// The bound address (with the real port if 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams received so far.
    pub fn datagrams(&self) -> u64 {
        self.stats.datagrams.load(Ordering::SeqCst)
    }

    /// Payload bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.stats.bytes.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` datagrams arrived; false on timeout.
    pub fn wait_for(&self, n: u64, timeout: Duration) -> bool {
        wait_until(timeout, || self.datagrams() >= n)
    }
}

impl Drop for UdpServer {
    fn drop(&mut self) {
        self.stopper.stop_and_join("UdpServer");
    }
}

/// A UDP responder: answers each datagram with `answer(datagram)` (nothing for an
/// empty answer), e.g. [`pong`] or [`dns_answer`]. Stops on drop.
pub struct UdpResponder {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpResponder {
    /// Binds `addr` inside `ns` and starts answering.
    pub fn start(ns: &Netns, addr: SocketAddr, answer: fn(&[u8]) -> Vec<u8>) -> UdpResponder {
        let socket = ns
            .run(|| UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("UdpResponder: bind {addr} in netns {}: {e}", ns.name()));
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("set UDP read timeout");
        let addr = socket.local_addr().expect("local_addr of a bound socket");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = ns.spawn_thread("udp-responder", move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let reply = answer(&buf[..len]);
                if !reply.is_empty() {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        UdpResponder {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers `pong <datagram>`.
pub fn pong(datagram: &[u8]) -> Vec<u8> {
    let mut reply = b"pong ".to_vec();
    reply.extend_from_slice(datagram);
    reply
}

/// A toy DNS server: NXDOMAIN for `nx.test`, an empty NOERROR answer otherwise; it
/// echoes the question (everything after the header) the way real servers do.
pub fn dns_answer(query: &[u8]) -> Vec<u8> {
    if query.len() < 12 {
        return Vec::new();
    }
    let mut reply = query.to_vec();
    let nx = query[12..].starts_with(b"\x02nx\x04test\x00");
    // QR, RD copied, RA; RCODE 3 or 0.
    reply[2] = 0x81;
    reply[3] = if nx { 0x83 } else { 0x80 };
    reply
}
