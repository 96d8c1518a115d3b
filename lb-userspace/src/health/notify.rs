//! Notify hooks: the operator's command run on every backend transition (keepalived's
//! `notify_up` / `notify_down`, one command for both).
//!
//! The command is run without a shell as `argv... EVENT SERVICE BACKEND REASON`, e.g.
//! `/usr/local/bin/page-me down 10.0.0.1:80/tcp 10.0.1.2 "3 consecutive failures, last:
//! connection refused"`, with the same values in `XLB_EVENT`, `XLB_SERVICE`,
//! `XLB_BACKEND` and `XLB_REASON`. EVENT is `up`, `down`, `fallback` (no backend left:
//! BACKEND is `-`) or `restored`.
//!
//! Hooks never block the daemon: each runs in its own task, in a process group of its
//! own (a timeout kills the group: a script's children die with it), as
//! `scripts.user`/`scripts.group` if set, and is killed after [`HOOK_TIMEOUT`]; its
//! failure is logged, nothing more. Backend hooks ([`Notifier`]): at most
//! [`MAX_RUNNING_HOOKS`] run at once, beyond that a hook is skipped (and logged) rather
//! than queued, so a flap storm cannot fork-bomb the host. VRRP hooks
//! ([`OrderedHooks`]): few and meaningful in their order, so they are queued and run
//! one after another, never dropped, whatever the backend hooks are doing.

use std::{
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::sync::mpsc;

use super::exec;
use crate::config::scripts::RunAs;

/// A hook still running after this long is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
/// Hooks running at the same time, at most.
pub const MAX_RUNNING_HOOKS: usize = 32;

/// One event to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: &'static str,
    pub service: String,
    pub backend: String,
    pub reason: String,
}

/// One hook to run: `argv` with `args` appended and `envs` set, as `run_as`.
#[derive(Debug, Clone)]
pub struct Hook {
    pub argv: Vec<String>,
    /// The event's name, for the log.
    pub kind: &'static str,
    pub args: Vec<String>,
    pub envs: Vec<(String, String)>,
    pub run_as: RunAs,
}

impl Hook {
    /// The hook of a backend or service event (`argv EVENT SERVICE BACKEND REASON`).
    pub fn for_event(argv: &[String], event: &Event, run_as: &RunAs) -> Hook {
        Hook {
            argv: argv.to_vec(),
            kind: event.kind,
            args: vec![
                event.kind.into(),
                event.service.clone(),
                event.backend.clone(),
                event.reason.clone(),
            ],
            envs: vec![
                ("XLB_EVENT".into(), event.kind.into()),
                ("XLB_SERVICE".into(), event.service.clone()),
                ("XLB_BACKEND".into(), event.backend.clone()),
                ("XLB_REASON".into(), event.reason.clone()),
            ],
            run_as: run_as.clone(),
        }
    }

    /// Runs it to the end (or `timeout`, then kills its process group), logging how it
    /// went.
    async fn run(self, timeout: Duration) {
        let Some(program) = self.argv.first().cloned() else {
            return;
        };
        let kind = self.kind;
        match self.execute(timeout).await {
            Ok(()) => tracing::debug!(hook = %program, event = kind, "notify hook done"),
            Err(why) => tracing::warn!(hook = %program, event = kind, "notify hook failed: {why}"),
        }
    }

    async fn execute(self, timeout: Duration) -> Result<(), String> {
        let (program, fixed) = self.argv.split_first().ok_or("empty command")?;
        let run_as = self.run_as.resolve().map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(fixed)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        exec::run_as_credentials(&mut cmd, run_as);
        let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(status.to_string()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                exec::kill(&mut child).await;
                Err(format!("killed (with its process group) after {timeout:?}"))
            }
        }
    }
}

/// Runs backend hooks concurrently, up to [`MAX_RUNNING_HOOKS`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    running: Arc<AtomicUsize>,
    timeout: Duration,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::with_timeout(HOOK_TIMEOUT)
    }
}

impl Notifier {
    /// A notifier whose hooks are killed after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Self {
        Notifier {
            running: Arc::default(),
            timeout,
        }
    }

    /// Starts `hook` in the background, unless [`MAX_RUNNING_HOOKS`] already run. Must
    /// be called inside a tokio runtime.
    pub fn run(&self, hook: Hook) {
        if self.running.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING_HOOKS {
            self.running.fetch_sub(1, Ordering::SeqCst);
            let program = hook.argv.first().map_or("", String::as_str);
            tracing::warn!(hook = %program, event = hook.kind, "{MAX_RUNNING_HOOKS} notify hooks already running: skipped");
            return;
        }
        let (running, timeout) = (self.running.clone(), self.timeout);
        tokio::spawn(async move {
            hook.run(timeout).await;
            running.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Runs hooks one at a time, in the order they were pushed, none dropped.
#[derive(Debug, Clone)]
pub struct OrderedHooks {
    queue: mpsc::UnboundedSender<Hook>,
}

impl OrderedHooks {
    /// Starts the worker (inside a tokio runtime); hooks are killed after `timeout`.
    pub fn start(timeout: Duration) -> Self {
        let (queue, mut hooks) = mpsc::unbounded_channel::<Hook>();
        tokio::spawn(async move {
            while let Some(hook) = hooks.recv().await {
                hook.run(timeout).await;
            }
        });
        OrderedHooks { queue }
    }

    /// Queues `hook` behind the ones not yet done.
    pub fn push(&self, hook: Hook) {
        // The worker lives as long as the runtime: a send fails only on the way out.
        let _ = self.queue.send(hook);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn shell(script: &str, kind: &'static str, args: &[&str]) -> Hook {
        Hook {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into(), "hook".into()],
            kind,
            args: args.iter().map(|&a| a.to_owned()).collect(),
            envs: Vec::new(),
            run_as: RunAs::default(),
        }
    }

    fn temp(tag: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("xlb-hook-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        path
    }

    /// More VRRP hooks than backend hooks may run at once, each slow: every one runs,
    /// in the order pushed, one at a time.
    #[test]
    fn ordered_hooks_all_run_in_order() {
        let log = temp("ordered");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let n = MAX_RUNNING_HOOKS + 8;
        rt.block_on(async {
            let hooks = OrderedHooks::start(Duration::from_secs(5));
            let script = format!(
                "echo start $1 >> {0}; sleep 0.01; echo end $1 >> {0}",
                log.display()
            );
            for i in 0..n {
                hooks.push(shell(&script, "vrrp", &[&i.to_string()]));
            }
            let lines = || std::fs::read_to_string(&log).unwrap_or_default();
            let done = format!("end {}\n", n - 1);
            let until = Instant::now() + Duration::from_secs(20);
            while !lines().ends_with(&done) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let want: String = (0..n).map(|i| format!("start {i}\nend {i}\n")).collect();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), want);
        std::fs::remove_file(&log).unwrap();
    }

    /// A hook that overruns its timeout is killed with everything it started.
    #[test]
    fn a_hook_past_its_timeout_is_killed_with_its_process_group() {
        let pidfile = temp("pgrp");
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let notifier = Notifier::with_timeout(Duration::from_millis(300));
            // A background child that would outlive its shell.
            let script = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
            notifier.run(shell(&script, "down", &[]));
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(pidfile.exists(), "the hook did not start");
            let pid = std::fs::read_to_string(&pidfile).unwrap();
            let proc = std::path::PathBuf::from(format!("/proc/{}", pid.trim()));
            assert!(proc.exists(), "the background child is not running");
            // Dead and reaped (by init, its new parent) soon after the timeout.
            let gone = || {
                std::fs::read_to_string(proc.join("stat"))
                    .map_or(true, |stat| stat.contains(") Z "))
            };
            let until = Instant::now() + Duration::from_secs(5);
            while !gone() && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(gone(), "the hook's child survived the timeout");
        });
        std::fs::remove_file(&pidfile).unwrap();
    }
}
