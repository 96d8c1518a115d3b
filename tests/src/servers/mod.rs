//! Small servers that run inside a [`crate::Netns`] and count what reaches them.
//!
//! Each one binds from a thread inside the namespace, serves from threads inside it
//! (so even incidental traffic stays there), and stops and joins its threads on drop.
//! Drop a server before its namespace: open sockets keep a deleted namespace alive.

mod http;
mod tcp;
mod udp;

pub use http::HttpServer;
pub use tcp::{fnv1a, TcpServer, FNV_OFFSET};
pub use udp::{dns_answer, pong, UdpResponder, UdpServer};

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread::JoinHandle,
    time::Duration,
};

/// How often serving loops look at their stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);

/// Stop flag plus the serving thread: the shared part of every server's Drop.
#[derive(Debug, Default)]
struct Stopper {
    stop: std::sync::Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Stopper {
    fn flag(&self) -> std::sync::Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Tells the serving thread to stop and joins it; a panic in it is reported (not
    /// re-raised: this runs from Drop, possibly while unwinding).
    fn stop_and_join(&mut self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("testbed: {what} serving thread panicked");
            }
        }
    }
}

pub(crate) use crate::dataplane::wait_until;
