//! Network namespaces: creation and removal, entering them from threads and child
//! processes, and the `ip`/sysctl helpers that configure them.
//!
//! Namespaces are named `xlbt-<pid>-<counter>-<tag>`: the pid keeps concurrent test
//! processes apart and lets [`crate::sweep_stale`] recognise leftovers of dead runs, the
//! counter keeps threads of one process apart, and the tag says which test made it.

use std::{
    ffi::OsStr,
    fmt::Display,
    fs::{self, File},
    io,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Mutex, MutexGuard, PoisonError, Weak,
    },
    thread::{self, JoinHandle},
};

use nix::sched::{setns, CloneFlags};

use crate::{
    process::{kill_and_reap, ChildGuard, SharedChild},
    NETNS_PREFIX,
};

/// Where `ip netns add` bind-mounts the namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// Longest tag kept in a namespace name; the rest is cut so names stay readable.
const MAX_TAG: usize = 16;

static NEXT_NETNS: AtomicU64 = AtomicU64::new(0);

/// A network namespace owned by the test; deleted (with everything inside) on drop.
pub struct Netns {
    name: String,
    /// Children started with [`Netns::spawn`]; killed before the namespace is deleted
    /// so that no daemon keeps running (and keeps the namespace alive) after the test.
    children: Mutex<Vec<Weak<SharedChild>>>,
}

impl Netns {
    /// Creates a fresh namespace named `xlbt-<pid>-<counter>-<tag>` with `lo` up.
    ///
    /// `tag` is sanitised to `[A-Za-z0-9_-]` and cut to a few characters.
    pub fn new(tag: &str) -> Netns {
        crate::sweep::sweep_once();
        let tag: String = tag
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(MAX_TAG)
            .collect();
        let counter = NEXT_NETNS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NETNS_PREFIX}{}-{counter}-{tag}", std::process::id());
        // `ip netns add` itself flocks /run/netns while it sets the directory up as a
        // shared mount, so concurrent creation from threads and processes is safe.
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "add", &name]);
        run_checked(&mut cmd, &format!("ip netns add {name}"));
        // From here on, Drop removes the namespace even if a later step panics.
        let ns = Netns {
            name,
            children: Mutex::new(Vec::new()),
        };
        ns.link_up("lo");
        ns
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's bind mount (`/run/netns/<name>`), e.g. to open it as a file.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    fn open(&self) -> File {
        let path = self.path();
        File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    /// Runs `f` on a new thread that first enters this namespace, and returns its result.
    ///
    /// Sockets created by `f` keep belonging to this namespace after `f` returns, so
    /// this is the way to bind servers or connect clients "inside" it. A panic in `f`
    /// is re-raised in the caller.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = self.open();
        let name = &self.name;
        thread::scope(|scope| {
            let handle = thread::Builder::new()
                .name(format!("netns-run:{name}"))
                .spawn_scoped(scope, move || {
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("setns into netns {name}: {e}"));
                    drop(file);
                    f()
                })
                .unwrap_or_else(|e| panic!("spawn thread for netns {name}: {e}"));
            match handle.join() {
                Ok(result) => result,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    /// Starts a long-lived thread inside this namespace (servers use it).
    ///
    /// Threads that thread spawns inherit the namespace too, so anything it does, also
    /// incidental traffic such as tiny_http connecting to itself on shutdown, stays in
    /// the namespace. Panics in the caller if the namespace cannot be entered.
    pub fn spawn_thread<F, R>(&self, thread_name: &str, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let file = self.open();
        let (entered_tx, entered_rx) = mpsc::sync_channel(1);
        let handle = thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                let entered = setns(&file, CloneFlags::CLONE_NEWNET);
                drop(file);
                let failed = entered.is_err();
                // The receiver only goes away if the caller already panicked.
                let _ = entered_tx.send(entered);
                if failed {
                    panic!("could not enter the network namespace");
                }
                f()
            })
            .unwrap_or_else(|e| panic!("spawn thread {thread_name}: {e}"));
        match entered_rx.recv() {
            Ok(Ok(())) => handle,
            Ok(Err(e)) => panic!("thread {thread_name}: setns into netns {}: {e}", self.name),
            Err(_) => panic!(
                "thread {thread_name} died before entering netns {}",
                self.name
            ),
        }
    }

    /// A `Command` whose child runs in this network namespace.
    ///
    /// Only the network namespace is switched: unlike `ip netns exec`, the child keeps
    /// the host's mount namespace, so the host's /sys/fs/bpf (pinned maps and programs)
    /// stays visible. The flip side: /sys/class/net in the child still shows the host's
    /// interfaces; use netlink (`ip`) to inspect the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let file = self.open();
        let mut cmd = Command::new(program);
        // SAFETY: the closure only calls setns(2), which is async-signal-safe, on an fd
        // opened before the fork; building the error from errno does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Starts `cmd` (normally from [`Netns::command`]) and returns a guard that kills it.
    ///
    /// The child is also killed when this namespace is dropped, whichever goes first.
    pub fn spawn(&self, mut cmd: Command) -> ChildGuard {
        let what = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what} in netns {}: {e}", self.name));
        let guard = ChildGuard::new(child, what);
        let mut children = self.children();
        children.retain(|c| c.strong_count() > 0);
        children.push(guard.shared());
        guard
    }

    fn children(&self) -> MutexGuard<'_, Vec<Weak<SharedChild>>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `ip <args>` inside the namespace and returns its stdout; panics on failure
    /// with the command line and ip's stderr.
    pub fn ip(&self, args: &[&str]) -> String {
        self.try_ip(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Netns::ip`] but returns the failure (command line, status and stderr) as
    /// `Err` instead of panicking, for steps that are expected to fail.
    pub fn try_ip(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.command("ip");
        cmd.args(args);
        try_run(&mut cmd, &format!("ip -n {} {}", self.name, args.join(" ")))
    }

    /// Runs an nft script (`nft -f`, the script in a temporary file) inside the
    /// namespace; panics on failure with nft's stderr.
    pub fn nft(&self, script: &str) {
        let file = crate::dataplane::TempFile::new("rules.nft");
        fs::write(file.path(), script).expect("write the nft script");
        let mut cmd = self.command("nft");
        cmd.arg("-f").arg(file.path());
        run_checked(&mut cmd, &format!("nft -f in {}:\n{script}", self.name));
    }

    /// Sets a sysctl in this namespace, e.g. `sysctl("net.ipv4.ip_forward", 1)`.
    ///
    /// Written through /proc/sys from a thread inside the namespace: the net.* entries
    /// there resolve to the namespace of the task that accesses them.
    pub fn sysctl(&self, key: &str, value: impl Display) {
        let path = sysctl_path(key);
        let value = value.to_string();
        self.run(|| fs::write(&path, &value))
            .unwrap_or_else(|e| panic!("sysctl -w {key}={value} in netns {}: {e}", self.name));
    }

    /// Reads a sysctl in this namespace (trimmed).
    pub fn sysctl_get(&self, key: &str) -> String {
        let path = sysctl_path(key);
        self.run(|| fs::read_to_string(&path))
            .unwrap_or_else(|e| panic!("sysctl {key} in netns {}: {e}", self.name))
            .trim()
            .to_owned()
    }

    /// `ip addr add <cidr> dev <iface>`; IPv6 addresses skip duplicate address detection
    /// so they are usable (bindable) at once instead of "tentative" for a while.
    pub fn add_addr(&self, iface: &str, cidr: impl Display) {
        let cidr = cidr.to_string();
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", iface];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(&args);
    }

    /// `ip link set dev <iface> up`.
    pub fn link_up(&self, iface: &str) {
        self.ip(&["link", "set", "dev", iface, "up"]);
    }

    /// `ip -j link show dev <iface>`, the single entry of the returned array.
    fn link_json(&self, iface: &str) -> serde_json::Value {
        let out = self.ip(&["-j", "link", "show", "dev", iface]);
        let mut links: Vec<serde_json::Value> = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("parse `ip -j link show dev {iface}` output {out:?}: {e}"));
        assert_eq!(links.len(), 1, "ip -j link show dev {iface}: {out}");
        links.remove(0)
    }

    /// The interface's MAC address.
    pub fn mac(&self, iface: &str) -> [u8; 6] {
        let link = self.link_json(iface);
        let text = link["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no address for {iface} in netns {}: {link}", self.name));
        parse_mac(text).unwrap_or_else(|| panic!("bad MAC {text:?} for {iface}"))
    }

    /// The interface's ifindex (inside this namespace).
    pub fn ifindex(&self, iface: &str) -> u32 {
        let link = self.link_json(iface);
        link["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or_else(|| panic!("no ifindex for {iface} in netns {}: {link}", self.name))
    }

    /// Disables IPv6 on `iface` so it sends no router solicitations or neighbour
    /// discovery that would show up in packet counters. A no-op without IPv6 support.
    pub fn disable_ipv6(&self, iface: &str) {
        let path = sysctl_path(&format!("net.ipv6.conf.{iface}.disable_ipv6"));
        let result = self.run(|| {
            if Path::new("/proc/sys/net/ipv6").exists() {
                fs::write(&path, "1")
            } else {
                Ok(())
            }
        });
        result.unwrap_or_else(|e| panic!("disable IPv6 on {iface} in netns {}: {e}", self.name));
    }

    /// A static ARP/NDP entry: `ip neigh replace <ip> lladdr <mac> dev <iface> nud permanent`.
    pub fn add_neigh(&self, iface: &str, ip: impl Display, mac: [u8; 6]) {
        let ip = ip.to_string();
        let mac = format_mac(mac);
        self.ip(&[
            "neigh",
            "replace",
            &ip,
            "lladdr",
            &mac,
            "dev",
            iface,
            "nud",
            "permanent",
        ]);
    }

    /// `ip route replace <cidr> via <via>`.
    pub fn add_route(&self, cidr: impl Display, via: impl Display) {
        let (cidr, via) = (cidr.to_string(), via.to_string());
        self.ip(&["route", "replace", &cidr, "via", &via]);
    }

    /// Creates a bridge (STP off, so ports forward at once) and brings it up.
    pub fn add_bridge(&self, name: &str) {
        self.ip(&["link", "add", name, "type", "bridge", "stp_state", "0"]);
        self.link_up(name);
    }

    /// Makes `iface` a port of `bridge`.
    pub fn enslave(&self, iface: &str, bridge: &str) {
        self.ip(&["link", "set", "dev", iface, "master", bridge]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill daemons first: a process inside keeps the namespace (and its veths)
        // alive after `ip netns del`.
        let children = std::mem::take(&mut *self.children());
        for child in children.iter().filter_map(Weak::upgrade) {
            if let Err(e) = kill_and_reap(&child) {
                eprintln!(
                    "testbed: reaping a child of netns {} failed: {e}",
                    self.name
                );
            }
        }
        // No panic here: Drop may run while unwinding, where a panic aborts.
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "del", &self.name]);
        if let Err(e) = try_run(&mut cmd, &format!("ip netns del {}", self.name)) {
            eprintln!("testbed: {e}");
        }
    }
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netns").field("name", &self.name).finish()
    }
}

/// Runs `cmd` to completion; `Ok(stdout)` on success, otherwise an error naming `what`.
pub(crate) fn try_run(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{what}` could not be started: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// [`try_run`] that panics on failure.
pub(crate) fn run_checked(cmd: &mut Command, what: &str) -> String {
    try_run(cmd, what).unwrap_or_else(|e| panic!("{e}"))
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let mac = [0x02, 0, 0xab, 0x10, 0xff, 0x7];
        assert_eq!(format_mac(mac), "02:00:ab:10:ff:07");
        assert_eq!(parse_mac("02:00:ab:10:ff:07"), Some(mac));
        assert_eq!(parse_mac("02:00:ab:10:ff"), None);
        assert_eq!(parse_mac("02:00:ab:10:ff:07:01"), None);
    }

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_path("net.ipv6.conf.xv1n2a.disable_ipv6"),
            Path::new("/proc/sys/net/ipv6/conf/xv1n2a/disable_ipv6")
        );
    }
}
