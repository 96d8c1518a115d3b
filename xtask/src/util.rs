//! Small process helpers shared by the xtask commands.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

/// Runs a command with inherited stdio; fails with the command line on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// A `cargo` command in the workspace root, with bpf-linker on PATH.
pub fn cargo_cmd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root())
        .args(args)
        .env("PATH", path_with_tools());
    cmd
}

pub fn cargo(args: &[&str]) -> Result<()> {
    run(&mut cargo_cmd(args))
}

/// PATH with the project's own tools (`.tools/bin`: bpf-linker) first.
pub fn path_with_tools() -> std::ffi::OsString {
    let mut path = std::ffi::OsString::from(root().join(".tools/bin"));
    if let Some(old) = std::env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }
    path
}

/// The workspace's no_std eBPF crates (bpfel-unknown-none only): the data plane and the
/// benchmark floors. Host-side cargo runs over the workspace exclude them.
pub const EBPF_CRATES: [&str; 2] = ["lb-ebpf", "xlb-bench-ebpf"];

/// `--exclude <crate>` for each of [`EBPF_CRATES`].
pub fn exclude_ebpf() -> Vec<String> {
    EBPF_CRATES
        .iter()
        .flat_map(|krate| ["--exclude".to_owned(), (*krate).to_owned()])
        .collect()
}

/// Clippy for the no_std XDP crates, on their real target.
pub fn clippy_ebpf() -> Result<()> {
    let mut cmd = cargo_cmd(&[
        "clippy",
        "-p",
        EBPF_CRATES[0],
        "-p",
        EBPF_CRATES[1],
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--target-dir",
        "target/ebpf-clippy",
        "--",
        "-D",
        "warnings",
    ]);
    cmd.env("RUSTC_BOOTSTRAP", "1");
    run(&mut cmd)
}
