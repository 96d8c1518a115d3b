//! Child processes started inside namespaces, killed when the test is done with them.

use std::{
    io,
    process::{Child, ExitStatus},
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// The child, shared with the [`crate::Netns`] that started it so that dropping the
/// namespace can kill it too. `std` remembers a reaped child's status, so killing or
/// waiting twice (once per owner) is harmless and never signals a recycled pid.
pub(crate) type SharedChild = Mutex<Child>;

/// Owns a child process; SIGKILLs and reaps it on drop, so no daemon started by a
/// test outlives the test.
pub struct ChildGuard {
    child: Arc<SharedChild>,
    pid: u32,
    what: String,
}

impl ChildGuard {
    pub(crate) fn new(child: Child, what: String) -> ChildGuard {
        ChildGuard {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
            what,
        }
    }

    pub(crate) fn shared(&self) -> Weak<SharedChild> {
        Arc::downgrade(&self.child)
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command line it was started with (for messages).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The `std` child, e.g. to take its stdout or wait for it. Do not hold the guard
    /// across the drop of the namespace that started it (that drop locks it too).
    pub fn child_mut(&mut self) -> MutexGuard<'_, Child> {
        lock(&self.child)
    }

    /// The exit status if the child has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let what = &self.what;
        lock(&self.child)
            .try_wait()
            .unwrap_or_else(|e| panic!("wait for {what}: {e}"))
    }

    /// Waits up to `timeout` for the child to exit on its own; `None` if it still runs.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; SIGKILLs it after that.
    /// Returns the exit status either way (check `status.signal()` to tell them apart).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        // Not reaped yet (we checked, and only we reap it), so the pid is still ours.
        let pid = i32::try_from(self.pid).expect("pid fits in i32");
        match kill(Pid::from_raw(pid), Signal::SIGTERM) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => panic!("SIGTERM {}: {e}", self.what),
        }
        if let Some(status) = self.wait_timeout(timeout) {
            return status;
        }
        self.kill()
    }

    /// SIGKILLs the child (if still running) and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        kill_and_reap(&self.child).unwrap_or_else(|e| panic!("kill {}: {e}", self.what))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(e) = kill_and_reap(&self.child) {
            eprintln!("testbed: reaping {} failed: {e}", self.what);
        }
    }
}

impl std::fmt::Debug for ChildGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildGuard")
            .field("pid", &self.pid)
            .field("what", &self.what)
            .finish()
    }
}

/// SIGKILLs (a no-op for a child `std` already reaped) and waits.
pub(crate) fn kill_and_reap(child: &SharedChild) -> io::Result<ExitStatus> {
    let mut child = lock(child);
    // kill() fails only if the child already exited without being reaped (ESRCH is
    // mapped to Ok for reaped ones); wait() below covers that case.
    let _ = child.kill();
    child.wait()
}

fn lock(child: &SharedChild) -> MutexGuard<'_, Child> {
    // A panic while the lock was held leaves the Child intact; keep using it.
    child.lock().unwrap_or_else(PoisonError::into_inner)
}
