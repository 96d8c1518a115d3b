//! Notify hooks: the operator's command run on every backend transition (keepalived's
//! `notify_up` / `notify_down`, one command for both).
//!
//! The command is run without a shell as `argv... EVENT SERVICE BACKEND REASON`, e.g.
//! `/usr/local/bin/page-me down 10.0.0.1:80/tcp 10.0.1.2 "3 consecutive failures, last:
//! connection refused"`, with the same values in `XLB_EVENT`, `XLB_SERVICE`,
//! `XLB_BACKEND` and `XLB_REASON`. EVENT is `up`, `down`, `fallback` (no backend left:
//! BACKEND is `-`) or `restored`.
//!
//! Hooks never block the daemon: each runs in its own task, is killed after
//! [`HOOK_TIMEOUT`], and its failure is logged, nothing more. At most
//! [`MAX_RUNNING_HOOKS`] run at once; beyond that a hook is skipped (and logged) rather
//! than queued, so a flap storm cannot fork-bomb the host.

use std::{
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

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

/// Runs hooks; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    running: Arc<AtomicUsize>,
}

impl Notifier {
    /// Starts `argv` for `event` in the background. Must be called inside a tokio
    /// runtime.
    pub fn run(&self, argv: &[String], event: &Event) {
        self.spawn(
            argv,
            event.kind,
            &[event.kind, &event.service, &event.backend, &event.reason],
            &[
                ("XLB_EVENT", event.kind),
                ("XLB_SERVICE", &event.service),
                ("XLB_BACKEND", &event.backend),
                ("XLB_REASON", &event.reason),
            ],
        );
    }

    /// Starts `argv` with `args` appended and `envs` set, in the background (the
    /// general form of [`Notifier::run`], e.g. for VRRP state changes).
    pub fn spawn(&self, argv: &[String], kind: &'static str, args: &[&str], envs: &[(&str, &str)]) {
        let Some((program, fixed)) = argv.split_first() else {
            return;
        };
        if self.running.fetch_add(1, Ordering::SeqCst) >= MAX_RUNNING_HOOKS {
            self.running.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(hook = %program, event = kind, "{MAX_RUNNING_HOOKS} notify hooks already running: skipped");
            return;
        }
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(fixed)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let running = self.running.clone();
        let program = program.clone();
        tokio::spawn(async move {
            let outcome = match cmd.spawn() {
                Err(e) => Err(format!("cannot start: {e}")),
                Ok(mut child) => match tokio::time::timeout(HOOK_TIMEOUT, child.wait()).await {
                    Ok(Ok(status)) if status.success() => Ok(()),
                    Ok(Ok(status)) => Err(status.to_string()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => {
                        // kill_on_drop kills it; wait() reaps it so no zombie remains.
                        let _ = child.kill().await;
                        Err(format!("killed after {HOOK_TIMEOUT:?}"))
                    }
                },
            };
            running.fetch_sub(1, Ordering::SeqCst);
            match outcome {
                Ok(()) => tracing::debug!(hook = %program, event = kind, "notify hook done"),
                Err(why) => {
                    tracing::warn!(hook = %program, event = kind, "notify hook failed: {why}");
                }
            }
        });
    }
}
