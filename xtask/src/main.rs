//! `cargo xtask`: build, run, test, bench and demo xlb. Every command first makes sure the
//! machine has what it needs (see [`setup`]), so a fresh clone needs no manual steps.

mod setup;
mod util;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::util::{cargo, root, run};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what a fresh machine lacks: rust-src, bpf-linker (against rustc's own
    /// LLVM), Debian packages. Idempotent; other commands run it implicitly.
    Setup,
    /// Build the XDP object (release, with BTF) and print its path.
    BuildEbpf,
    /// Build everything (release): the XDP object embedded in the `xlb` binary.
    Build,
    /// Build, then run `xlb run` with the given arguments, e.g. `-- --iface eth0`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The whole suite: fmt, clippy (host and eBPF), unit tests, BPF_PROG_TEST_RUN packet
    /// tests and network-namespace tests on the real kernel.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run the demo topology in network namespaces and show what happens.
    Demo,
    /// Per-packet cost of every data-plane path next to XDP_PASS / XDP_TX floors,
    /// verifier instruction counts, control-plane timings and the health-check load of
    /// the real daemon; writes target/bench/bench.json. Parts alone: `cargo xtask bench
    /// packets | scaling | e2e | cps | failover | health | lru` (docs/benchmarks.md).
    Bench {
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Differential fuzzing of the XDP program against the reference model
    /// (tests/src/model.rs, docs/fuzzing.md): N generated and mutated packets through
    /// BPF_PROG_TEST_RUN and the model; prints packets/s, disagreements (saved under
    /// target/fuzz) and a per-class summary. Needs root.
    FuzzDatapath {
        /// Packets to generate.
        #[arg(long, default_value_t = 1_000_000)]
        packets: u64,
        /// PRNG seed (the same seed replays the same packets).
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// cargo-fuzz (libFuzzer) targets for the control plane's parsers (fuzz/,
    /// docs/fuzzing.md): each target for N seconds, all of them without a
    /// TARGET; crashes land in fuzz/artifacts/TARGET. Installs cargo-fuzz if missing.
    Fuzz {
        /// config, keepalived_import, vrrp_decode or http_response.
        target: Option<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Setup) {
        setup::ensure()?;
    }
    match cli.command {
        Command::Setup => setup::run_all(),
        Command::BuildEbpf => build_ebpf(),
        Command::Build => cargo(&["build", "--release", "-p", "lb-userspace"]),
        Command::Run { args } => {
            cargo(&["build", "--release", "-p", "lb-userspace"])?;
            let xlb = root().join("target/release/xlb");
            let mut full = vec!["run".to_owned()];
            full.extend(args);
            run(std::process::Command::new(xlb).args(&full))
        }
        Command::Test { args } => test(&args),
        Command::Bench { args } => {
            // The health-check load runs the real daemon: build it too.
            cargo(&[
                "build",
                "--release",
                "-p",
                "lb-userspace",
                "-p",
                "xlb-tests",
                "--bin",
                "xlb-bench",
                "--bin",
                "xlb",
            ])?;
            // One CPU, so runs compete with each other less than with the machine;
            // `lru` times two CPUs at once (its threads pin themselves to each).
            let cpus = if args.first().is_some_and(|a| a == "lru") {
                "0,1"
            } else {
                "1"
            };
            run(std::process::Command::new("taskset")
                .args(["-c", cpus])
                .arg(root().join("target/release/xlb-bench"))
                .args(&args)
                .env("XLB_BIN", root().join("target/release/xlb")))
        }
        Command::FuzzDatapath { packets, seed } => {
            if !nix_is_root() {
                bail!("fuzz-datapath loads the XDP program (BPF_PROG_TEST_RUN): run it as root");
            }
            cargo(&["build", "--release", "-p", "xlb-tests", "--bin", "xlb-fuzz"])?;
            run(
                std::process::Command::new(root().join("target/release/xlb-fuzz")).args([
                    "--packets",
                    &packets.to_string(),
                    "--seed",
                    &seed.to_string(),
                ]),
            )
        }
        Command::Fuzz { target, seconds } => fuzz(target.as_deref(), seconds),
        Command::Demo => {
            cargo(&[
                "build",
                "--release",
                "-p",
                "lb-userspace",
                "-p",
                "xlb-tests",
            ])?;
            let mut cmd = std::process::Command::new(root().join("target/release/xlb-demo"));
            cmd.env("XLB_BIN", root().join("target/release/xlb"));
            run(&mut cmd)
        }
    }
}

/// The object is built by lb-userspace's build script (one place for the eBPF build
/// recipe); this just triggers it in release mode and checks that BTF made it in.
fn build_ebpf() -> Result<()> {
    cargo(&["build", "--release", "-p", "lb-userspace"])?;
    let object = root().join("target/ebpf/bpfel-unknown-none/release/lb-ebpf");
    if !object.exists() {
        bail!("expected the XDP object at {}", object.display());
    }
    let btf = std::process::Command::new("bpftool")
        .args(["btf", "dump", "file"])
        .arg(&object)
        .output()?;
    if !btf.status.success() || btf.stdout.is_empty() {
        bail!(
            "{} has no readable BTF: {}",
            object.display(),
            String::from_utf8_lossy(&btf.stderr)
        );
    }
    println!("{}", object.display());
    Ok(())
}

fn test(extra: &[String]) -> Result<()> {
    if !nix_is_root() {
        bail!(
            "the test suite attaches XDP programs and creates network namespaces: run it as root"
        );
    }
    cargo(&["fmt", "--all", "--", "--check"])?;
    let mut clippy = vec!["clippy".to_owned(), "--workspace".to_owned()];
    clippy.extend(util::exclude_ebpf());
    clippy.extend(["--all-targets", "--", "-D", "warnings"].map(String::from));
    run(&mut util::cargo_cmd(&clippy))?;
    util::clippy_ebpf()?;
    // Integration tests start the real `xlb` binary.
    cargo(&["build", "-p", "lb-userspace"])?;
    let mut args = vec!["test".to_owned(), "--workspace".to_owned()];
    args.extend(util::exclude_ebpf());
    args.extend(extra.iter().cloned());
    let mut cmd = util::cargo_cmd(&args);
    cmd.env("XLB_BIN", root().join("target/debug/xlb"));
    run(&mut cmd)
}

fn nix_is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The cargo-fuzz targets in fuzz/, in the order `cargo xtask fuzz` runs them.
const FUZZ_TARGETS: &[&str] = &[
    "config",
    "keepalived_import",
    "vrrp_decode",
    "http_response",
    "control_request",
    "cli_args",
];

/// `cargo xtask fuzz [TARGET] [--seconds N]`. The stable toolchain runs cargo-fuzz with
/// RUSTC_BOOTSTRAP=1 (it passes -Z flags, e.g. for ASan); -O -a: optimised, with
/// overflow checks and debug assertions, so arithmetic slips show up as panics.
fn fuzz(target: Option<&str>, seconds: u64) -> Result<()> {
    let targets = match target {
        None => FUZZ_TARGETS.to_vec(),
        Some(t) if FUZZ_TARGETS.contains(&t) => vec![t],
        Some(t) => bail!("no fuzz target {t:?}: one of {}", FUZZ_TARGETS.join(", ")),
    };
    let installed = util::cargo_cmd(&["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("fuzz: installing cargo-fuzz");
        cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    for target in targets {
        let mut cmd = util::cargo_cmd(&[
            "fuzz",
            "run",
            "-O",
            "-a",
            target,
            "--",
            &format!("-max_total_time={seconds}"),
            "-print_final_stats=1",
        ]);
        cmd.current_dir(root().join("fuzz"))
            .env("RUSTC_BOOTSTRAP", "1");
        run(&mut cmd)?;
    }
    Ok(())
}
