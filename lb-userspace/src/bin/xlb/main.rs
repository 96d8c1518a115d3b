//! `xlb`: the xlb daemon and command-line tool.
//!
//! - this file: what each command of the command line ([`lb_userspace::edges::cli`]) runs;
//! - [`daemon`]: `xlb run` / `xlb decap`, the daemon's loop;
//! - [`decap`]: `xlb decap`'s allow-list (balancer sources, local destinations);
//! - [`show`]: `xlb status | services | backends | vrrp` over the control socket;
//! - [`counters`]: `xlb stats` from the pinned maps, with rates.

mod counters;
mod daemon;
mod decap;
mod show;

use anyhow::{Context as _, Result};
use clap::Parser;
use lb_common::programs;
use lb_userspace::{
    config::Config,
    dataplane::aya::loader,
    edges::{
        cli::{Cli, Command, EbpfLogLevel},
        control::{self, Request},
    },
};
use tracing_subscriber::EnvFilter;

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
            conn_table_entries,
            conn_table_lru,
        } => {
            let default = std::path::Path::new(DEFAULT_CONFIG);
            if config.is_none() && default.exists() {
                config = Some(default.to_owned());
            }
            let daemon = daemon::Daemon {
                program: programs::BALANCER,
                decap: None,
                ifaces,
                pin_dir,
                xdp_mode,
                ebpf_log_level,
                config,
                gue_port: None,
                metrics_listen,
                keep_attached,
                conn_table_entries,
                conn_table_lru,
            };
            daemon.run().await
        }
        Command::Decap {
            ifaces,
            pin_dir,
            xdp_mode,
            gue_port,
            allow_sources,
            allow_destinations,
        } => {
            let allow = decap::Allow::new(allow_sources, allow_destinations)?;
            let daemon = daemon::Daemon {
                program: programs::DECAP,
                decap: Some(allow),
                ifaces,
                pin_dir,
                xdp_mode,
                ebpf_log_level: EbpfLogLevel::Off,
                config: None,
                gue_port: Some(gue_port),
                metrics_listen: None,
                keep_attached: false,
                // Its program keeps no flows: the smallest table (saves ~25 MiB).
                conn_table_entries: Some(lb_userspace::config::conn_table::MIN_ENTRIES),
                conn_table_lru: None,
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
