//! A packet capture on one interface of a test namespace (an `AF_PACKET` socket read by
//! a background thread), for tests that assert what went over the wire: which VRRP
//! adverts a node sent and with what priority, who sent gratuitous ARPs and when.
//!
//! A hook may run on every frame as it arrives (e.g. to signal a daemon at the exact
//! moment it starts advertising): the capture thread calls it before storing the frame.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::Netns;

/// A frame and when the capture thread read it.
pub type Frame = (Instant, Vec<u8>);

/// Called with every frame as it arrives.
pub type Hook = Box<dyn FnMut(&[u8]) + Send>;

/// A running capture; stops on drop.
pub struct Capture {
    frames: Arc<Mutex<Vec<Frame>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// An IPv4 VRRP advert seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenAdvert {
    pub at: Instant,
    pub src: Ipv4Addr,
    pub priority: u8,
}

/// A gratuitous ARP (sender address = target address) seen on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenGarp {
    pub at: Instant,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
}

impl Capture {
    /// Captures every frame received or sent on `iface` inside `ns`.
    pub fn start(ns: &Netns, iface: &str) -> Capture {
        Capture::start_with(ns, iface, Box::new(|_| {}))
    }

    /// Like [`Capture::start`], calling `hook` on every frame as it arrives.
    pub fn start_with(ns: &Netns, iface: &str, mut hook: Hook) -> Capture {
        let index = ns.ifindex(iface);
        // The socket is opened inside the namespace and keeps belonging to it.
        let fd = ns.run(move || open(index));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (frames, stop) = (frames.clone(), stop.clone());
            std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || {
                    let mut buf = vec![0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        // SAFETY: `buf` is valid for its length; the fd is ours.
                        let n = unsafe {
                            libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                        };
                        let Ok(n) = usize::try_from(n) else {
                            continue; // the receive timeout: look at `stop` again
                        };
                        let at = Instant::now();
                        hook(&buf[..n]);
                        frames
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push((at, buf[..n].to_vec()));
                    }
                })
                .expect("spawn the capture thread")
        };
        Capture {
            frames,
            stop,
            thread: Some(thread),
        }
    }

    /// Every frame so far.
    pub fn frames(&self) -> Vec<Frame> {
        self.frames
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every IPv4 VRRP advert so far, in order.
    pub fn adverts(&self) -> Vec<SeenAdvert> {
        self.frames()
            .iter()
            .filter_map(|(at, f)| {
                advert(f).map(|(src, priority)| SeenAdvert {
                    at: *at,
                    src,
                    priority,
                })
            })
            .collect()
    }

    /// Every gratuitous ARP so far, in order.
    pub fn garps(&self) -> Vec<SeenGarp> {
        self.frames()
            .iter()
            .filter_map(|(at, f)| garp(f).map(|(mac, ip)| SeenGarp { at: *at, mac, ip }))
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// (source, priority) of an IPv4 VRRP frame.
pub fn advert(frame: &[u8]) -> Option<(Ipv4Addr, u8)> {
    if frame.get(12..14)? != [0x08, 0x00] {
        return None;
    }
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    if *frame.get(14 + 9)? != 112 {
        return None;
    }
    let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
    let priority = *frame.get(14 + ihl + 2)?;
    Some((src, priority))
}

/// (sender MAC, address) of a gratuitous ARP: an ARP whose sender and target
/// protocol addresses are the same.
pub fn garp(frame: &[u8]) -> Option<([u8; 6], Ipv4Addr)> {
    if frame.get(12..14)? != [0x08, 0x06] || frame.len() < 14 + 28 {
        return None;
    }
    let arp = &frame[14..];
    let (spa, tpa) = (&arp[14..18], &arp[24..28]);
    if spa != tpa {
        return None;
    }
    let mac: [u8; 6] = arp[8..14].try_into().ok()?;
    Some((mac, Ipv4Addr::new(spa[0], spa[1], spa[2], spa[3])))
}

/// An `AF_PACKET` socket for every protocol, bound to `index`, with a 50 ms receive
/// timeout (so the thread notices `stop`).
fn open(index: u32) -> OwnedFd {
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); checked below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
    assert!(
        raw >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; zeroed is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = all;
    sll.sll_ifindex = i32::try_from(index).expect("ifindex fits");
    // SAFETY: the address is valid for the length given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&sll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert!(
        r == 0,
        "bind AF_PACKET: {}",
        std::io::Error::last_os_error()
    );
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: i64::try_from(Duration::from_millis(50).as_micros()).unwrap_or(50_000),
    };
    // SAFETY: `tv` is a live timeval of the size given.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::from_ref(&tv).cast(),
            size_of::<libc::timeval>() as u32,
        )
    };
    assert!(r == 0, "SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    fd
}
