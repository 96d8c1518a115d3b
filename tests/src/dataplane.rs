//! A loaded data plane for packet tests, with its own pin directory that is removed on
//! drop (also when the test panics), so tests can run in parallel without sharing maps.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use lb_common::programs;
use lb_userspace::{
    config::conn_table::LruKind,
    dataplane::{
        aya::{loader, stats, AyaPort, LoadOptions},
        GlobalStats,
    },
};

use crate::test_run::{self, XdpOutput};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Prefix of every pin directory a test creates: `/sys/fs/bpf/xlbt-<pid>-<n>`.
pub const PIN_PREFIX: &str = "xlbt-";

/// A unique pin directory for this process and call.
pub fn unique_pin_dir(tag: &str) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/bpf/{PIN_PREFIX}{}-{}-{tag}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A pin directory that is detached and removed on drop, even if the test panics or the
/// daemon that owned it was killed.
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new(tag: &str) -> Self {
        crate::sweep::sweep_once();
        Self(unique_pin_dir(tag))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = loader::unpin_all(&self.0) {
            eprintln!("cleaning {}: {e}", self.0.display());
        }
        // A daemon killed with SIGKILL leaves its control socket behind.
        let _ = std::fs::remove_file(lb_userspace::edges::control::socket_path(&self.0));
        let _ = std::fs::remove_file(lb_userspace::edges::control::health_state_path(&self.0));
    }
}

/// A scratch file (e.g. a daemon's log) removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(tag: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "xlbt-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The current contents, or "" if unreadable.
    pub fn read(&self) -> String {
        std::fs::read_to_string(&self.0).unwrap_or_default()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub struct TestDataplane {
    pub dp: AyaPort,
    pin_dir: PinDir,
}

impl TestDataplane {
    /// A packet fixture: runs `input` through the balancer, then asserts the verdict,
    /// the exact output bytes, and that exactly the counters in `counted` moved, each by
    /// one packet of `input`'s length (every counter counts the frame as it arrived).
    /// Tables of these are [`crate::case::Case`] rows.
    #[track_caller]
    pub fn check(
        &mut self,
        what: &str,
        input: &[u8],
        verdict: u32,
        output: &[u8],
        counted: &[lb_common::Stat],
    ) {
        self.check_program(programs::BALANCER, what, input, verdict, output, counted);
    }

    /// [`Self::check`] for the program `name` (e.g. `xlb_decap`).
    #[track_caller]
    pub fn check_program(
        &mut self,
        name: &'static str,
        what: &str,
        input: &[u8],
        verdict: u32,
        output: &[u8],
        counted: &[lb_common::Stat],
    ) {
        let before = self.stats();
        let out = self.run_program(name, input);
        self.assert_outcome(what, &before, &out, input, verdict, output, counted);
    }

    /// [`Self::check`] of a frame arriving on `ingress_ifindex` (an interface of the
    /// calling thread's network namespace: call it inside [`crate::netns::Netns::run`]).
    #[track_caller]
    pub fn check_on(
        &mut self,
        ingress_ifindex: u32,
        what: &str,
        input: &[u8],
        verdict: u32,
        output: &[u8],
        counted: &[lb_common::Stat],
    ) {
        let before = self.stats();
        let out = self.run_on(ingress_ifindex, input);
        self.assert_outcome(what, &before, &out, input, verdict, output, counted);
    }

    #[track_caller]
    #[expect(clippy::too_many_arguments, reason = "the fields of one check row")]
    fn assert_outcome(
        &self,
        what: &str,
        before: &GlobalStats,
        out: &XdpOutput,
        input: &[u8],
        verdict: u32,
        output: &[u8],
        counted: &[lb_common::Stat],
    ) {
        assert_eq!(out.action, verdict, "{what}: verdict");
        assert_eq!(out.packet, output, "{what}: output bytes");
        let after = self.stats();
        for &stat in lb_common::Stat::ALL {
            let (b, a) = (before.get(stat), after.get(stat));
            let moved = (a.packets - b.packets, a.bytes - b.bytes);
            let want = if counted.contains(&stat) {
                (1, input.len() as u64)
            } else {
                (0, 0)
            };
            assert_eq!(
                moved,
                want,
                "{what}: counter {} (packets, bytes)",
                stat.name()
            );
        }
    }

    /// Loads the embedded object with all programs verified by the kernel.
    pub fn load(tag: &str) -> Self {
        Self::load_in(PinDir::new(tag))
    }

    /// [`Self::load`] into `pin_dir`, reusing whatever the caller pinned there first
    /// (as a restarted or upgraded daemon does).
    pub fn load_in(pin_dir: PinDir) -> Self {
        Self::load_sized(pin_dir, None)
    }

    /// [`Self::load_in`] with a connection table of `conn_entries` (the unconfirmed
    /// table then gets the daemon's default share of it).
    pub fn load_sized(pin_dir: PinDir, conn_entries: Option<u32>) -> Self {
        Self::load_with(pin_dir, conn_entries, LruKind::default())
    }

    /// [`Self::load_sized`] with both connection tables of the LRU kind `lru`.
    pub fn load_with(pin_dir: PinDir, conn_entries: Option<u32>, lru: LruKind) -> Self {
        let dp = AyaPort::load(&LoadOptions {
            pin_dir: pin_dir.path().to_path_buf(),
            ebpf_log_level: None,
            conn_entries,
            unconfirmed_entries: None,
            conn_lru: lru,
        })
        .unwrap_or_else(|e| panic!("loading the data plane: {e:?}"));
        Self { dp, pin_dir }
    }

    /// This data plane's port closed (its pins stay, as a killed daemon's do) and a
    /// new one loaded over them, as a restarted daemon configured with `conn_entries`
    /// and `lru` does (a table of another size or kind is set aside, to be carried
    /// over with [`AyaPort::carry_over_conns`]).
    pub fn restart(self, conn_entries: Option<u32>, lru: LruKind) -> Self {
        let Self { dp, pin_dir } = self;
        drop(dp);
        Self::load_with(pin_dir, conn_entries, lru)
    }

    /// Runs the balancer program once on `packet` through BPF_PROG_TEST_RUN.
    pub fn run(&mut self, packet: &[u8]) -> XdpOutput {
        self.run_program(programs::BALANCER, packet)
    }

    /// Runs the named program once on `packet`.
    pub fn run_program(&mut self, name: &'static str, packet: &[u8]) -> XdpOutput {
        let prog = self.dp.xdp(name).expect("program in the object");
        test_run::run(prog, packet).expect("BPF_PROG_TEST_RUN")
    }

    /// Runs the balancer program once on `packet` as if it arrived on `ingress_ifindex`
    /// (an interface of this thread's network namespace).
    pub fn run_on(&mut self, ingress_ifindex: u32, packet: &[u8]) -> XdpOutput {
        let prog = self
            .dp
            .xdp(programs::BALANCER)
            .expect("program in the object");
        test_run::run_on(prog, packet, ingress_ifindex).expect("BPF_PROG_TEST_RUN")
    }

    pub fn stats(&self) -> GlobalStats {
        stats::read_loaded(self.dp.ebpf()).expect("reading XLB_STATS")
    }

    pub fn pin_dir(&self) -> &std::path::Path {
        self.pin_dir.path()
    }
}

/// The `xlb` binary under test: `$XLB_BIN` (set by `cargo xtask test`) or the workspace's
/// debug build.
pub fn xlb_bin() -> PathBuf {
    let path = std::env::var_os("XLB_BIN").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/debug/xlb")),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "xlb binary not found at {}: run the suite with `cargo xtask test`",
        path.display()
    );
    path
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
