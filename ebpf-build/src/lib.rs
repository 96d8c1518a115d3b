//! Compiles one of the workspace's eBPF crates for `bpfel-unknown-none` from a build
//! script, so that the binary embedding the object always carries one built from the
//! same sources. Used by `lb-userspace/build.rs` (the data plane, `lb-ebpf`) and
//! `tests/build.rs` (the benchmark floors, `xlb-bench-ebpf`).
//!
//! The nested cargo runs on the stable toolchain with `RUSTC_BOOTSTRAP=1` (for
//! `-Z build-std=core`) and links with `bpf-linker`, which `cargo xtask setup` builds
//! against the toolchain's own LLVM into `.tools/bin` (see docs/toolchain.md).

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// One eBPF crate of the workspace.
#[derive(Debug, Clone, Copy)]
pub struct EbpfCrate<'a> {
    /// The package (and binary) name, e.g. `lb-ebpf`.
    pub package: &'a str,
    /// Its directory, relative to the workspace root.
    pub dir: &'a str,
}

/// Builds `krate` in release mode and copies the object to `$OUT_DIR/<package>.o`;
/// returns that path. `root` is the workspace root ([`workspace_root`]).
pub fn build(root: &Path, krate: EbpfCrate<'_>) -> Result<PathBuf> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // lb-common is shared by every eBPF crate (map and program layouts).
    for dir in [format!("{}/src", krate.dir), "lb-common/src".to_owned()] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for file in [
        format!("{}/Cargo.toml", krate.dir),
        "lb-common/Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
    ] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=XLB_BPF_LINKER_DIR");

    let linker_dir = env::var_os("XLB_BPF_LINKER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".tools/bin"));
    if !linker_dir.join("bpf-linker").exists() && which("bpf-linker").is_none() {
        bail!(
            "bpf-linker not found in {} or on PATH: run `cargo xtask setup` first",
            linker_dir.display()
        );
    }
    let mut path = OsString::from(&linker_dir);
    if let Some(old) = env::var_os("PATH") {
        path.push(":");
        path.push(old);
    }

    // Separate target dir: the outer cargo holds the lock on the workspace target dir.
    // Both eBPF crates share it (and so their builds of core, aya-ebpf and lb-common);
    // cargo's own lock serialises two build scripts running at once.
    let target_dir = root.join("target/ebpf");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--package",
            krate.package,
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("PATH", path)
        .env("RUSTC_BOOTSTRAP", "1")
        // BTF (for bpftool and BTF-defined maps) needs full debug info plus --btf.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            ["-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f"),
        );
    // Do not leak the host build's compiler wrappers (clippy-driver, sccache) or flags.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo for {}", krate.package))?;
    if !status.success() {
        bail!("building {} failed ({status})", krate.package);
    }

    let object = target_dir
        .join("bpfel-unknown-none/release")
        .join(krate.package);
    let dest = out_dir.join(format!("{}.o", krate.package));
    std::fs::copy(&object, &dest)
        .with_context(|| format!("copying {} to {}", object.display(), dest.display()))?;
    Ok(dest)
}

/// The workspace root of a build script whose crate sits `depth` directories below it
/// (1 for `lb-userspace/`, 1 for `tests/`).
pub fn workspace_root(depth: usize) -> Result<PathBuf> {
    let mut dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    for _ in 0..depth {
        dir = dir.parent().context("workspace root")?.to_path_buf();
    }
    Ok(dir)
}

fn which(bin: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| Path::new(p).exists())
    })
}
