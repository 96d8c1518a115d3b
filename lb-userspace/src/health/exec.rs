//! Program check (keepalived's `MISC_CHECK`): run an operator's program, exit status
//! 0 means the backend is up.
//!
//! For what no built-in check can express: a database query, a multi-step protocol,
//! a local agent. The program is executed directly (no shell: an argument vector, so
//! nothing in a configured value is ever interpreted as shell syntax), inherits the
//! daemon's environment plus the given variables, gets /dev/null as stdin and stdout,
//! and a pipe as stderr whose first line goes into the failure reason.
//!
//! It runs as the check's `user`/`group` (else `scripts.user`/`scripts.group`, else
//! the daemon's own user, root): see [`crate::config::scripts`].
//!
//! A check that overruns its timeout is killed with its whole process group (the
//! program runs as the leader of a group of its own, so a shell script's children
//! die with it instead of piling up one per interval) and reaped: no zombie, no
//! orphan left running.

use std::{process::Stdio, time::Duration};

use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt},
    process::{Child, Command},
};

use super::{CheckResult, FailReason};
use crate::config::scripts::Credentials;

/// At most this much of the program's stderr is kept; the rest is read and dropped
/// so a chatty program never blocks on a full pipe.
const MAX_STDERR: usize = 4096;
/// The stderr line in a failure reason is cut to this many bytes.
const MAX_STDERR_LINE: usize = 200;
/// After the program exited, how long its stderr may stay open (a background child
/// inherited it) before we stop reading and report what we have.
const STDERR_GRACE: Duration = Duration::from_millis(100);

/// Runs `argv[0]` with arguments `argv[1..]` and the extra environment `env` (as
/// `run_as`, if given), and waits up to `timeout` for it to exit.
///
/// The program runs in the network namespace of the calling thread (and everything
/// else of the daemon's: user, mounts, working directory).
///
/// - exit status 0 is [`CheckResult::Ok`];
/// - any other exit, or death by a signal, is [`FailReason::Exit`]: "exit status 3"
///   or "killed by signal 9", then ": " and the first line of stderr if there is one;
/// - still running after `timeout` is [`FailReason::Timeout`], the process group
///   having been killed and the program reaped;
/// - a program that cannot be started (not found, not executable) or an empty
///   `argv` is [`FailReason::Io`].
pub async fn check(
    argv: &[String],
    env: &[(String, String)],
    run_as: Option<Credentials>,
    timeout: Duration,
) -> CheckResult {
    let Some((program, args)) = argv.split_first() else {
        return CheckResult::Fail(FailReason::Io("invalid exec check: empty command".into()));
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout can kill everything it started.
        .process_group(0)
        // If this future is dropped (the daemon stops checking) the program is
        // killed, and tokio reaps it in the background.
        .kill_on_drop(true);
    run_as_credentials(&mut command, run_as);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return CheckResult::Fail(FailReason::Io(format!("cannot run {program}: {e}"))),
    };
    let mut stderr = Vec::new();
    let outcome = tokio::time::timeout(timeout, wait(&mut child, &mut stderr)).await;
    match outcome {
        Err(_elapsed) => {
            kill(&mut child).await;
            CheckResult::Fail(FailReason::Timeout(timeout))
        }
        Ok(Err(e)) => {
            kill(&mut child).await;
            CheckResult::Fail(FailReason::Io(format!("waiting for {program}: {e}")))
        }
        Ok(Ok(status)) if status.success() => CheckResult::Ok,
        Ok(Ok(status)) => {
            let mut reason = describe(status);
            if let Some(line) = first_line(&stderr) {
                reason.push_str(": ");
                reason.push_str(&line);
            }
            CheckResult::Fail(FailReason::Exit(reason))
        }
    }
}

/// Waits for `child` to exit while collecting (the start of) its stderr.
async fn wait(
    child: &mut Child,
    stderr: &mut Vec<u8>,
) -> std::io::Result<std::process::ExitStatus> {
    let pipe = child.stderr.take();
    let read = async {
        if let Some(pipe) = pipe {
            collect(pipe, stderr).await;
        }
    };
    tokio::pin!(read);
    let mut read_done = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            () = &mut read, if !read_done => read_done = true,
        }
    };
    if !read_done {
        // Usually the pipe is at EOF right after the exit; a background grandchild
        // holding it open must not keep the check waiting.
        let _ = tokio::time::timeout(STDERR_GRACE, read).await;
    }
    Ok(status)
}

/// Reads `pipe` to EOF, keeping the first [`MAX_STDERR`] bytes in `out`.
async fn collect(mut pipe: impl AsyncRead + Unpin, out: &mut Vec<u8>) {
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = MAX_STDERR.saturating_sub(out.len());
                out.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// Kills `child`'s process group, then reaps `child`.
/// Makes `command` run as `run_as` (std drops the supplementary groups too).
pub(crate) fn run_as_credentials(command: &mut Command, run_as: Option<Credentials>) {
    if let Some(c) = run_as {
        command.uid(c.uid).gid(c.gid);
    }
}

/// Kills `child`'s whole process group (it must have been started with
/// `process_group(0)`) and reaps it.
pub(crate) async fn kill(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        // The group id is the child's pid (process_group(0)). ESRCH (already gone)
        // is fine.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    // Also covers the child having left its group (setsid): kill it directly.
    let _ = child.start_kill();
    let _ = child.wait().await;
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    match status.signal() {
        Some(signal) => match Signal::try_from(signal) {
            Ok(name) => format!("killed by signal {signal} ({name})"),
            Err(_) => format!("killed by signal {signal}"),
        },
        None => format!("{status}"),
    }
}

/// The first non-empty line of `stderr`, lossily decoded, trimmed and cut to at
/// most [`MAX_STDERR_LINE`] bytes (at a character boundary).
fn first_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).find(|line| !line.is_empty())?;
    let mut end = line.len().min(MAX_STDERR_LINE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let mut out: String = line[..end]
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if end < line.len() {
        out.push_str("...");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::health::block_on;

    fn run(argv: &[&str], timeout: Duration) -> CheckResult {
        let argv: Vec<String> = argv.iter().map(|&s| s.to_owned()).collect();
        block_on(check(&argv, &[], None, timeout))
    }

    /// Children of this process named `comm` (zombies included: a zombie keeps its
    /// name and parent until reaped).
    fn children_named(comm: &str) -> Vec<String> {
        let me = std::process::id().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid ...": comm may contain spaces, so split at ")".
            let Some((head, tail)) = stat.rsplit_once(") ") else {
                continue;
            };
            let name = head.split_once(" (").map_or("", |(_, name)| name);
            let ppid = tail.split_whitespace().nth(1).unwrap_or("");
            if name == comm && ppid == me {
                found.push(stat);
            }
        }
        found
    }

    #[test]
    fn exit_zero_is_ok() {
        assert_eq!(run(&["/bin/true"], Duration::from_secs(5)), CheckResult::Ok);
    }

    #[test]
    fn exit_status_and_stderr_make_the_reason() {
        assert_eq!(
            run(&["/bin/sh", "-c", "exit 3"], Duration::from_secs(5)),
            CheckResult::Fail(FailReason::Exit("exit status 3".into()))
        );
        let result = run(
            &[
                "/bin/sh",
                "-c",
                "printf '\\n  db down: connection refused  \\nmore\\n' >&2; exit 2",
            ],
            Duration::from_secs(5),
        );
        assert_eq!(
            result.to_string(),
            "exit status 2: db down: connection refused"
        );
        let result = run(&["/bin/sh", "-c", "kill -9 $$"], Duration::from_secs(5));
        assert_eq!(
            result,
            CheckResult::Fail(FailReason::Exit("killed by signal 9 (SIGKILL)".into()))
        );
    }

    #[test]
    fn environment_is_passed_without_a_shell() {
        let argv: Vec<String> = [
            "/bin/sh",
            "-c",
            "test \"$XLB_BACKEND\" = '10.0.0.1;rm -rf /'",
        ]
        .iter()
        .map(|&s| s.to_owned())
        .collect();
        let env = [("XLB_BACKEND".to_owned(), "10.0.0.1;rm -rf /".to_owned())];
        let result = block_on(check(&argv, &env, None, Duration::from_secs(5)));
        assert_eq!(result, CheckResult::Ok);
    }

    #[test]
    fn long_stderr_is_cut() {
        let result = run(
            &[
                "/bin/sh",
                "-c",
                "head -c 100000 /dev/zero | tr '\\0' x >&2; exit 1",
            ],
            Duration::from_secs(5),
        );
        let CheckResult::Fail(FailReason::Exit(reason)) = result else {
            panic!("{result:?}");
        };
        let line = reason.strip_prefix("exit status 1: ").unwrap();
        assert_eq!(line, format!("{}...", "x".repeat(MAX_STDERR_LINE)));
    }

    #[test]
    fn unrunnable_program_is_an_io_failure() {
        let result = run(&["/nonexistent/xlb-check"], Duration::from_secs(5));
        assert!(
            matches!(&result, CheckResult::Fail(FailReason::Io(m)) if m.starts_with("cannot run /nonexistent/xlb-check")),
            "{result:?}"
        );
        assert!(matches!(
            block_on(check(&[], &[], None, Duration::from_secs(1))),
            CheckResult::Fail(FailReason::Io(_))
        ));
    }

    #[test]
    fn timeout_kills_and_reaps() {
        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        let result = run(&["sleep", "5"], timeout);
        let took = started.elapsed();
        assert_eq!(result, CheckResult::Fail(FailReason::Timeout(timeout)));
        assert!(took < Duration::from_secs(2), "took {took:?}");
        assert_eq!(children_named("sleep"), Vec::<String>::new());

        // A shell whose child outlives it unless the whole group is killed: the
        // grandchild is reparented (not our child), so look for it by its unusual
        // argument in every process.
        let result = run(&["/bin/sh", "-c", "sleep 7.25; true"], timeout);
        assert_eq!(result, CheckResult::Fail(FailReason::Timeout(timeout)));
        std::thread::sleep(Duration::from_millis(100));
        let survivors: Vec<_> = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|cmdline| cmdline == b"sleep\x007.25\x00")
            .collect();
        assert!(survivors.is_empty(), "the shell's sleep survived");
    }

    #[test]
    fn first_line_is_trimmed_and_bounded() {
        assert_eq!(first_line(b""), None);
        assert_eq!(first_line(b"\n \n"), None);
        assert_eq!(first_line(b" a\tb \nc").as_deref(), Some("a?b"));
        let long = "é".repeat(150); // 300 bytes
        let line = first_line(long.as_bytes()).unwrap();
        assert_eq!(line, format!("{}...", "é".repeat(100)));
        assert_eq!(first_line(b"\xffbad").as_deref(), Some("\u{fffd}bad"));
    }
}
