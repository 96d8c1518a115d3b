//! Machine setup: everything the build and the tests need that a fresh Debian machine
//! lacks. Each step checks before it installs, so running it again is cheap.
//!
//! bpf-linker has to link against the LLVM that ships inside the Rust toolchain (Debian
//! has no LLVM of the same major), so it is built from crates.io against
//! `$(rustc --print sysroot)/lib/libLLVM*` and installed into `.tools/` in the repo.

use std::{path::Path, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::util::{root, run};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the tests and tools use (keepalived: the VRRP interop tests run a
/// real keepalived against xlb; haproxy: `cargo xtask bench cps` compares against it;
/// nftables: the VRRP tests cut adverts between nodes at the switch).
const DEBIAN_PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "util-linux",
    "keepalived",
    "haproxy",
    "nftables",
];

/// `cargo xtask setup`: every step, then a confirmation.
pub fn run_all() -> Result<()> {
    ensure()?;
    println!("setup complete");
    Ok(())
}

/// Checks every step and installs only what is missing; every other command runs this.
pub fn ensure() -> Result<()> {
    rust_src()?;
    bpf_linker()?;
    debian_packages()
}

fn rust_src() -> Result<()> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .context("running rustup (is the Rust toolchain installed with rustup?)")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        return Ok(());
    }
    eprintln!("setup: installing rust-src (needed for -Z build-std=core)");
    run(Command::new("rustup").args(["component", "add", "rust-src"]))
}

fn bpf_linker() -> Result<()> {
    let tools = root().join(".tools");
    let linker = tools.join("bin/bpf-linker");
    if let Ok(out) = Command::new(&linker).arg("--version").output() {
        if String::from_utf8_lossy(&out.stdout).contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against rustc's LLVM");
    let sysroot = stdout(Command::new("rustc").args(["--print", "sysroot"]))?;
    let version = stdout(Command::new("rustc").arg("-vV"))?;
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV does not report an LLVM version")?
        .to_owned();

    // bpf-linker's build looks for libLLVM.so under $LLVM_PREFIX/lib; link every libLLVM
    // file from the toolchain there so the soname also resolves through the rpath.
    let prefix = tools.join("llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let mut sonamed = None;
    for entry in std::fs::read_dir(Path::new(&sysroot).join("lib"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("libLLVM") && name.contains(".so") {
            symlink_force(&path, &lib.join(&name))?;
            if name.starts_with("libLLVM.so.") {
                sonamed = Some(path.clone());
            }
        }
    }
    let sonamed = sonamed.with_context(|| format!("no libLLVM.so.* in {sysroot}/lib"))?;
    symlink_force(&sonamed, &lib.join("libLLVM.so"))?;

    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
            "--no-default-features",
            "--features",
        ])
        .arg(format!("llvm-{llvm_major}"))
        .arg("--root")
        .arg(&tools)
        .env("LLVM_PREFIX", &prefix))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|pkg| {
            Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output()
                .map(|o| !String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(true)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("setup: installing Debian packages {missing:?}");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn stdout(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn symlink_force(target: &Path, link: &Path) -> Result<()> {
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}
