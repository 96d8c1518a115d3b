//! Removal of namespaces left behind by test processes that died without cleaning up
//! (SIGKILL, abort, power loss).

use std::{fs, os::unix::fs::MetadataExt, path::Path, process::Command};

use nix::{
    errno::Errno,
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{
    netns::{try_run, NETNS_DIR},
    NETNS_PREFIX,
};

/// Deletes every `xlbt-<pid>-…` namespace whose creating process `pid` is gone, after
/// SIGKILLing any process still running inside it (a daemon started by the dead run
/// would otherwise keep the namespace and its interfaces alive).
///
/// Namespaces of live processes, such as test binaries running in parallel, are left
/// alone. Failures are reported on stderr, not raised: a sweep must not fail tests.
pub fn sweep_stale() {
    sweep_netns();
    sweep_pins();
}

/// [`sweep_stale`] once per test process: every namespace or pin directory a test creates
/// goes through here first, so leftovers of a killed run never pile up.
pub(crate) fn sweep_once() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(sweep_stale);
}

/// Detaches and removes `/sys/fs/bpf/xlbt-<pid>-…` pin directories of dead processes (a
/// SIGKILLed daemon leaves its XDP link and maps pinned).
fn sweep_pins() {
    let Ok(entries) = fs::read_dir(lb_userspace::dataplane::aya::bpffs::BPFFS_ROOT) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        match owner_pid(&name) {
            Some(pid) if !process_alive(pid) => {}
            _ => continue,
        }
        match lb_userspace::dataplane::aya::loader::unpin_all(&entry.path()) {
            Ok(()) => eprintln!("testbed: removed stale pins {name}"),
            Err(e) => eprintln!("testbed: {e}"),
        }
    }
    // The control sockets of SIGKILLed daemons (named after their pin directories).
    let Ok(entries) = fs::read_dir(lb_userspace::edges::control::SOCKET_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if matches!(owner_pid(&name), Some(pid) if !process_alive(pid)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

fn sweep_netns() {
    let entries = match fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("read {NETNS_DIR}: {e}"),
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        kill_processes_in(&entry.path());
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "del", &name]);
        match try_run(&mut cmd, &format!("ip netns del {name}")) {
            Ok(_) => eprintln!("testbed: removed stale netns {name}"),
            Err(e) => eprintln!("testbed: {e}"),
        }
    }
}

/// The creator's pid from a name `xlbt-<pid>-<counter>-<tag>`.
fn owner_pid(name: &str) -> Option<Pid> {
    let pid: i32 = name
        .strip_prefix(NETNS_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()?;
    // kill(0 or negative) would address process groups, never a single process.
    (pid > 0).then(|| Pid::from_raw(pid))
}

fn process_alive(pid: Pid) -> bool {
    // EPERM means it exists but is not ours to signal: still alive.
    !matches!(kill(pid, None), Err(Errno::ESRCH))
}

/// SIGKILLs every process whose network namespace is the one bind-mounted at `path`.
fn kill_processes_in(path: &Path) {
    let Ok(ns) = fs::metadata(path) else {
        return;
    };
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(net) = fs::metadata(entry.path().join("ns/net")) else {
            continue;
        };
        if net.dev() == ns.dev() && net.ino() == ns.ino() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_owner_pid() {
        assert_eq!(owner_pid("xlbt-1234-0-tcp"), Some(Pid::from_raw(1234)));
        assert_eq!(owner_pid("xlbt-1234-7-a-b"), Some(Pid::from_raw(1234)));
        assert_eq!(owner_pid("xlbt-0-1-x"), None);
        assert_eq!(owner_pid("xlbt--1-x"), None);
        assert_eq!(owner_pid("other-1234-0-x"), None);
        assert_eq!(owner_pid("xlbt-abc-0-x"), None);
    }
}
