//! `xlb`: the xlb daemon and command-line tool.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lb_common::{programs, Stat, DEFAULT_PIN_DIR};
use lb_userspace::{
    ebpf_log,
    loader::{self, AttachMode, Dataplane, LoadOptions},
    stats,
};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "xlb", version, about = "xlb: an XDP layer-4 load balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: load the XDP program, attach it, pin its maps, and stay up until
    /// SIGINT/SIGTERM, then detach and remove the pins.
    Run {
        /// Interface to attach the balancer to (repeat for several).
        #[arg(long = "iface", short = 'i', required = true)]
        ifaces: Vec<String>,
        /// Directory under bpffs for pinned maps and links.
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// XDP attach mode; `auto` tries native first and falls back to generic.
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        xdp_mode: AttachMode,
        /// Highest log level the XDP program emits. `trace` logs every packet; levels
        /// above it are removed by the verifier and cost nothing.
        #[arg(long, value_enum, default_value_t = EbpfLogLevel::Info)]
        ebpf_log_level: EbpfLogLevel,
    },
    /// Print the global data-plane counters from the pinned maps.
    Stats {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Detach and unpin everything a crashed daemon left under the pin directory.
    Detach {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum EbpfLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl EbpfLogLevel {
    fn to_aya(self) -> Option<aya_log::Level> {
        Some(match self {
            Self::Off => return None,
            Self::Error => aya_log::Level::Error,
            Self::Warn => aya_log::Level::Warn,
            Self::Info => aya_log::Level::Info,
            Self::Debug => aya_log::Level::Debug,
            Self::Trace => aya_log::Level::Trace,
        })
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // The eBPF side filters by its own --ebpf-log-level; let its records through here.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive("lb_ebpf=trace".parse()?);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    match Cli::parse().command {
        Command::Run {
            ifaces,
            pin_dir,
            xdp_mode,
            ebpf_log_level,
        } => run(ifaces, pin_dir, xdp_mode, ebpf_log_level).await,
        Command::Stats { pin_dir, json } => print_stats(&pin_dir, json),
        Command::Detach { pin_dir } => {
            loader::unpin_all(&pin_dir)
                .with_context(|| format!("detaching everything under {}", pin_dir.display()))?;
            println!("detached and unpinned {}", pin_dir.display());
            Ok(())
        }
    }
}

async fn run(
    ifaces: Vec<String>,
    pin_dir: PathBuf,
    xdp_mode: AttachMode,
    ebpf_log_level: EbpfLogLevel,
) -> Result<()> {
    let opts = LoadOptions {
        pin_dir: pin_dir.clone(),
        ebpf_log_level: ebpf_log_level.to_aya(),
    };
    let mut dp = Dataplane::load(&opts).context("loading the XDP data plane")?;
    if ebpf_log_level.to_aya().is_some() {
        ebpf_log::spawn(dp.ebpf_mut())?;
    }
    let result = attach_and_wait(&mut dp, &ifaces, xdp_mode).await;
    // Clean up whatever got attached, also when attaching a later interface failed.
    loader::unpin_all(&pin_dir).context("detaching on shutdown")?;
    tracing::info!(pin_dir = %pin_dir.display(), "detached and unpinned");
    result
}

async fn attach_and_wait(dp: &mut Dataplane, ifaces: &[String], mode: AttachMode) -> Result<()> {
    for iface in ifaces {
        let a = dp
            .attach(programs::BALANCER, iface, mode)
            .with_context(|| format!("attaching to {iface}"))?;
        tracing::info!(iface = %a.iface, mode = ?a.mode, link = %a.pin_path.display(), "attached");
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tracing::info!(pin_dir = %dp.pin_dir().display(), "running; SIGINT/SIGTERM to stop");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

fn print_stats(pin_dir: &std::path::Path, json: bool) -> Result<()> {
    let map = stats::open_pinned(pin_dir).with_context(|| {
        format!(
            "opening the pinned stats map in {} (is `xlb run` running?)",
            pin_dir.display()
        )
    })?;
    let global = stats::read_global(&map).context("reading counters")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&global.to_json())?);
        return Ok(());
    }
    println!("{:<10} {:>14} {:>16}", "counter", "packets", "bytes");
    for &stat in Stat::ALL {
        let c = global.get(stat);
        println!("{:<10} {:>14} {:>16}", stat.name(), c.packets, c.bytes);
    }
    Ok(())
}
