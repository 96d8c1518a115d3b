//! `xlb`: the xlb daemon and command-line tool.
//!
//! - this file: the command line (clap) and what each command runs;
//! - [`daemon`]: `xlb run` / `xlb decap`, the daemon's loop;
//! - [`show`]: `xlb status | services | backends | vrrp` over the control socket;
//! - [`counters`]: `xlb stats` from the pinned maps, with rates.

mod counters;
mod daemon;
mod show;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lb_common::{programs, DEFAULT_PIN_DIR};
use lb_userspace::{
    config::Config,
    control::{self, Request},
    loader::{self, AttachMode},
};
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
        /// Interface to attach the balancer to (repeat for several); overrides the
        /// config's `interfaces`.
        #[arg(long = "iface", short = 'i')]
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
        /// Services, checks and VRRP instances (JSON, see examples/xlb.json); default
        /// /etc/xlb/xlb.json when that file exists, else nothing is served. Re-read on
        /// SIGHUP or `xlb reload`; a config that fails validation is rejected whole and
        /// the running one stays.
        #[arg(long, short = 'c')]
        config: Option<PathBuf>,
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9641): counters per
        /// verdict, service and backend, backend health, check latencies. Off by default.
        #[arg(long)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// On exit leave program, maps and links pinned (traffic keeps flowing), for a
        /// restart or upgrade: the next `xlb run` with the same pin directory adopts them.
        #[arg(long)]
        keep_attached: bool,
    },
    /// On a backend: unwrap the balancer's IPIP / IPv6-in-IPv6 packets in XDP so the
    /// inner packets (to the VIP on lo) reach the local stack. Runs until SIGINT/SIGTERM.
    Decap {
        #[arg(long = "iface", short = 'i', required = true)]
        ifaces: Vec<String>,
        #[arg(long, default_value = "/sys/fs/bpf/xlb-decap")]
        pin_dir: PathBuf,
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        xdp_mode: AttachMode,
        /// UDP port of the balancer's GUE packets (its `encap_sources.gue_port`).
        #[arg(long, default_value_t = lb_common::service::DEFAULT_GUE_PORT)]
        gue_port: u16,
    },
    /// Validate a configuration file without applying it; prints every problem.
    CheckConfig { file: PathBuf },
    /// Convert a keepalived.conf (its virtual_server part) into an xlb config: the JSON
    /// to stdout (or --output), every keyword not carried over to stderr as
    /// `FILE:LINE: KEYWORD: reason`. See docs/keepalived-import.md.
    ImportKeepalived {
        file: PathBuf,
        /// Next-hop MAC of a real or sorry server, `IP=MAC` (repeat); without one the
        /// placeholder 02:00:00:00:00:00 is written and reported.
        #[arg(long = "mac", value_name = "IP=MAC")]
        macs: Vec<String>,
        /// The balancer's own address, outer source for TUN services (one per family).
        #[arg(long = "encap-source", value_name = "IP")]
        encap_sources: Vec<std::net::IpAddr>,
        /// Write the config here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Print the global data-plane counters from the pinned maps.
    Stats {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Seconds between the two readings the rates come from; 0 = no rates.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Show the running daemon: interfaces, config, services and health at a glance.
    Status {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every virtual service: mode, backends taking new flows, fallback, counters. Without
    /// a daemon, the counters from the pinned maps.
    Services {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every backend of every service: health state, weight (configured -> in use), last
    /// check, transitions, counters. Without a daemon, the counters from the pinned maps.
    Backends {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// VRRP instances: state, priority (configured/effective), master, adverts, drops,
    /// recent transitions.
    Vrrp {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Make the running daemon re-read its config file (like SIGHUP) and say whether it
    /// was applied; a rejected config changes nothing.
    Reload {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
    /// Detach and unpin everything a crashed daemon left under the pin directory.
    Detach {
        #[arg(long, default_value = DEFAULT_PIN_DIR)]
        pin_dir: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum EbpfLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl EbpfLogLevel {
    pub(crate) fn to_aya(self) -> Option<aya_log::Level> {
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

fn main() -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(real_main()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The whole context chain, no backtrace: this is for operators.
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> Result<()> {
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
            mut config,
            metrics_listen,
            keep_attached,
        } => {
            let default = std::path::Path::new(DEFAULT_CONFIG);
            if config.is_none() && default.exists() {
                config = Some(default.to_owned());
            }
            let daemon = daemon::Daemon {
                program: programs::BALANCER,
                ifaces,
                pin_dir,
                xdp_mode,
                ebpf_log_level,
                config,
                gue_port: None,
                metrics_listen,
                keep_attached,
            };
            daemon.run().await
        }
        Command::Decap {
            ifaces,
            pin_dir,
            xdp_mode,
            gue_port,
        } => {
            let daemon = daemon::Daemon {
                program: programs::DECAP,
                ifaces,
                pin_dir,
                xdp_mode,
                ebpf_log_level: EbpfLogLevel::Off,
                config: None,
                gue_port: Some(gue_port),
                metrics_listen: None,
                keep_attached: false,
            };
            daemon.run().await
        }
        Command::CheckConfig { file } => {
            let config = Config::load(&file)?;
            println!(
                "{}: ok ({} services)",
                file.display(),
                config.services.len()
            );
            Ok(())
        }
        Command::ImportKeepalived {
            file,
            macs,
            encap_sources,
            output,
        } => lb_userspace::import::import_keepalived_cli(
            &file,
            &macs,
            &encap_sources,
            output.as_deref(),
        ),
        Command::Stats {
            pin_dir,
            json,
            interval,
        } => counters::print_stats(&pin_dir, json, interval),
        Command::Status { pin_dir, json } => show::show(&pin_dir, Request::Status, json),
        Command::Services { pin_dir, json } => show::show(&pin_dir, Request::Services, json),
        Command::Backends { pin_dir, json } => show::show(&pin_dir, Request::Backends, json),
        Command::Vrrp { pin_dir, json } => show::show(&pin_dir, Request::Vrrp, json),
        Command::Reload { pin_dir } => {
            let path = control::socket_path(&pin_dir);
            control::request(&path, Request::Reload, show::RELOAD_TIMEOUT)?;
            println!("reloaded");
            Ok(())
        }
        Command::Detach { pin_dir } => {
            loader::unpin_all(&pin_dir)
                .with_context(|| format!("detaching everything under {}", pin_dir.display()))?;
            println!("detached and unpinned {}", pin_dir.display());
            Ok(())
        }
    }
}

/// Where `xlb run` looks for its config when `--config` is not given.
const DEFAULT_CONFIG: &str = "/etc/xlb/xlb.json";
