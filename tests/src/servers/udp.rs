//! UDP sink that counts datagrams and bytes.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
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
