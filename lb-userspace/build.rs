//! Builds the XDP object (`lb-ebpf`) for `bpfel-unknown-none` so that every build of `xlb`
//! embeds a data plane compiled from the same sources.
//!
//! The nested cargo runs on the stable toolchain with `RUSTC_BOOTSTRAP=1` (for
//! `-Z build-std=core`) and links with `bpf-linker`, which `cargo xtask setup` builds
//! against the toolchain's own LLVM into `.tools/bin` (see docs/toolchain.md, which also says
//! why this is not aya-build: it cannot share one BPF target dir between builds).

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

fn main() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("workspace root")?
        .to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    for dir in ["lb-ebpf/src", "lb-common/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for file in ["lb-ebpf/Cargo.toml", "lb-common/Cargo.toml", "Cargo.lock"] {
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
    let target_dir = root.join("target/ebpf");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--package",
            "lb-ebpf",
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
    let status = cmd.status().context("running cargo for lb-ebpf")?;
    if !status.success() {
        bail!("building lb-ebpf failed ({status})");
    }

    let object = target_dir.join("bpfel-unknown-none/release/lb-ebpf");
    let dest = out_dir.join("lb-ebpf.o");
    std::fs::copy(&object, &dest)
        .with_context(|| format!("copying {} to {}", object.display(), dest.display()))?;
    Ok(())
}

fn which(bin: &str) -> Option<PathBuf> {
    env::var_os("PATH").and_then(|paths| {
        env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| Path::new(p).exists())
    })
}
