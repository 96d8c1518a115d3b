//! `xlb`: the xlb daemon and command-line tool.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lb_common::{programs, Stat, DEFAULT_PIN_DIR};
use lb_userspace::{
    config::Config,
    ebpf_log,
    loader::{self, AttachMode, Dataplane, LoadOptions},
    services::{describe_vip, ip_from_words, Balancer},
    stats,
    supervisor::Supervisor,
};
use lb_userspace::{
    control::{self, server::ControlSocket, views, Request, Response},
    health::notify::Notifier,
    health::Health,
    metrics,
    vrrp::runtime::Vrrp,
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
            let daemon = Daemon {
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
            let daemon = Daemon {
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
        } => print_stats(&pin_dir, json, interval),
        Command::Status { pin_dir, json } => show(&pin_dir, Request::Status, json),
        Command::Services { pin_dir, json } => show(&pin_dir, Request::Services, json),
        Command::Backends { pin_dir, json } => show(&pin_dir, Request::Backends, json),
        Command::Vrrp { pin_dir, json } => show(&pin_dir, Request::Vrrp, json),
        Command::Reload { pin_dir } => {
            let path = control::socket_path(&pin_dir);
            control::request(&path, Request::Reload, RELOAD_TIMEOUT)?;
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

/// `xlb run` / `xlb decap`: load, attach, serve, and clean up on the way out.
struct Daemon {
    program: &'static str,
    ifaces: Vec<String>,
    pin_dir: PathBuf,
    xdp_mode: AttachMode,
    ebpf_log_level: EbpfLogLevel,
    config: Option<PathBuf>,
    /// Overrides the config's GUE port (`xlb decap --gue-port`).
    gue_port: Option<u16>,
    metrics_listen: Option<std::net::SocketAddr>,
    keep_attached: bool,
}

impl Daemon {
    async fn run(mut self) -> Result<()> {
        let missing = missing_capabilities();
        if !missing.is_empty() {
            anyhow::bail!(
                "xlb {} needs CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN and \
                 CAP_PERFMON (missing: {}); run it as root",
                if self.program == programs::BALANCER {
                    "run"
                } else {
                    "decap"
                },
                missing.join(", ")
            );
        }
        // Validate before touching the kernel: a bad file must not cost a flap.
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if self.ifaces.is_empty() {
            self.ifaces.clone_from(&config.interfaces);
        }
        if self.ifaces.is_empty() {
            anyhow::bail!(
                "no interface to attach to: give --iface IF or list \"interfaces\" in the config"
            );
        }
        if let Some(port) = self.gue_port {
            config.encap_sources.gue_port = port;
        }
        let opts = LoadOptions {
            pin_dir: self.pin_dir.clone(),
            ebpf_log_level: self.ebpf_log_level.to_aya(),
        };
        let mut dp = Dataplane::load(&opts).context("loading the XDP data plane")?;
        if self.ebpf_log_level.to_aya().is_some() {
            ebpf_log::spawn(dp.ebpf_mut())?;
        }
        let result = self.serve(&mut dp, config).await;
        if self.keep_attached && result.is_ok() {
            tracing::info!(pin_dir = %self.pin_dir.display(), "left attached and pinned for the next xlb run");
            return Ok(());
        }
        // Clean up whatever got attached, also when attaching a later interface failed;
        // with the data plane gone there is no health for a successor to take over.
        let _ = std::fs::remove_file(control::health_state_path(&self.pin_dir));
        loader::unpin_all(&self.pin_dir).context("detaching on shutdown")?;
        tracing::info!(pin_dir = %self.pin_dir.display(), "detached and unpinned");
        result
    }

    async fn serve(&self, dp: &mut Dataplane, config: Config) -> Result<()> {
        // Maps pinned by an earlier daemon (restart, crash) carry backend ids that live
        // connection-table entries refer to: continue from them, never from scratch.
        let mut balancer = Balancer::adopt(dp.ebpf()).context("reading pinned state")?;
        if balancer.service_count() > 0 {
            tracing::info!(services = balancer.service_count(), "adopted pinned state");
        }
        let state_file =
            (self.program == programs::BALANCER).then(|| control::health_state_path(&self.pin_dir));
        let (mut sup, mut probes) =
            Supervisor::start(&mut balancer, dp.ebpf_mut(), config, state_file)?;
        // Until an instance is master here, its VIPs belong to whichever peer is; an
        // instance that still holds its addresses (its daemon restarted) resumes as
        // master, so its pinned data plane keeps forwarding them without a gap.
        let vrrp_specs = sup.config().vrrp.clone();
        let vips = vrrp_specs
            .iter()
            .filter(|s| {
                !(s.preempt
                    && lb_userspace::vrrp::net::iface(&s.interface, &s.addresses)
                        .is_ok_and(|i| i.holds_all(&s.addresses)))
            })
            .flat_map(|s| s.addresses.iter().copied());
        sup.set_standby(&mut balancer, dp.ebpf_mut(), vips.collect())?;
        for iface in &self.ifaces {
            let a = dp.attach(self.program, iface, self.xdp_mode)?;
            tracing::info!(
                iface = %a.iface, mode = ?a.mode, adopted = a.adopted,
                link = %a.pin_path.display(), "attached"
            );
        }
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        // The decap program has nothing to report: only the balancer gets a socket.
        let (requests_tx, mut requests) = tokio::sync::mpsc::channel(16);
        let _socket = if self.program == programs::BALANCER {
            Some(ControlSocket::bind(
                &control::socket_path(&self.pin_dir),
                requests_tx.clone(),
            )?)
        } else {
            None
        };
        if let Some(addr) = self.metrics_listen {
            metrics::serve(addr, requests_tx.clone()).await?;
        }
        drop(requests_tx);
        let (vrrp_tx, mut vrrp_events) = tokio::sync::mpsc::channel(16);
        let vrrp = Vrrp::start(&vrrp_specs, &vrrp_tx).context("starting VRRP")?;
        track(&sup, &vrrp);
        // The XDP side of VRRP follows the instances: on every state change, and each
        // second for priority changes from tracking.
        let mut xdp_vrrp = Vec::new();
        sync_xdp_vrrp(&vrrp, dp, &mut xdp_vrrp);
        let mut vrrp_tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let notifier = Notifier::default();
        let started = std::time::Instant::now();
        let mut last_reload: Option<String> = None;
        tracing::info!(
            pin_dir = %dp.pin_dir().display(), checks = sup.checks(),
            "running; SIGHUP reloads, SIGINT/SIGTERM stop"
        );
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM received");
                    clear_xdp_vrrp(dp, &xdp_vrrp);
                    vrrp.shutdown().await;
                    return Ok(());
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT received");
                    clear_xdp_vrrp(dp, &xdp_vrrp);
                    vrrp.shutdown().await;
                    return Ok(());
                }
                _ = vrrp_tick.tick(), if !vrrp.is_empty() => {
                    // Interfaces have no event here: their state is polled with the tick.
                    track(&sup, &vrrp);
                    sync_xdp_vrrp(&vrrp, dp, &mut xdp_vrrp);
                }
                Some(probe) = probes.recv() => {
                    if sup.on_probe(&mut balancer, dp.ebpf_mut(), &probe) {
                        track(&sup, &vrrp);
                    }
                }
                Some(ev) = vrrp_events.recv() => {
                    if let Err(e) = sup.set_standby(&mut balancer, dp.ebpf_mut(), vrrp.standby_addresses()) {
                        tracing::error!("applying a VRRP state change failed: {e:#}");
                    }
                    sync_xdp_vrrp(&vrrp, dp, &mut xdp_vrrp);
                    let _ = ev.applied.send(());
                    let (from, to) = (ev.from.to_string(), ev.to.to_string());
                    tracing::warn!(instance = %ev.name, %from, %to, reason = %ev.reason, "VRRP {to}");
                    if let Some(argv) = &vrrp_specs[ev.instance].notify {
                        notifier.spawn(
                            argv,
                            "vrrp",
                            &[&to, &ev.name, &ev.reason],
                            &[("XLB_VRRP_STATE", &to), ("XLB_VRRP_INSTANCE", &ev.name), ("XLB_REASON", &ev.reason)],
                        );
                    }
                }
                _ = hup.recv() => {
                    last_reload = Some(self.reload(&mut sup, &mut balancer, dp).err().unwrap_or_else(|| "ok".into()));
                }
                Some((request, reply)) = requests.recv() => {
                    let response = match request {
                        Request::Status => Response::ok(json(&views::Status {
                            version: env!("CARGO_PKG_VERSION").into(),
                            pid: std::process::id(),
                            uptime_s: started.elapsed().as_secs(),
                            pin_dir: self.pin_dir.display().to_string(),
                            interfaces: self.ifaces.clone(),
                            config: self.config.as_ref().map(|p| p.display().to_string()),
                            services: sup.config().services.len(),
                            backends: sup.config().services.iter().map(|s| s.backends.len()).sum(),
                            checks: sup.checks(),
                            backends_down: sup.book().iter().filter(|(_, h)| h.health() == Health::Down).count(),
                            last_reload: last_reload.clone(),
                        })),
                        Request::Services => Response::ok(json(&views::services(&sup, dp.ebpf()))),
                        Request::Backends => {
                            Response::ok(json(&views::backends(&sup, &balancer, dp.ebpf())))
                        }
                        Request::Metrics => Response::ok(serde_json::Value::String(
                            metrics::render(&sup, &balancer, dp.ebpf(), &vrrp.status()),
                        )),
                        Request::Vrrp => Response::ok(json(&vrrp.status())),
                        Request::Reload => {
                            let r = self.reload(&mut sup, &mut balancer, dp);
                            last_reload = Some(r.clone().err().unwrap_or_else(|| "ok".into()));
                            match r {
                                Ok(()) => Response::ok(serde_json::json!("reloaded")),
                                Err(e) => Response::error(e),
                            }
                        }
                    };
                    let _ = reply.send(response);
                }
            }
        }
    }

    /// Loads the config file again and applies it; a file that fails validation or
    /// application changes nothing and the running configuration stays. `Err` says why.
    fn reload(
        &self,
        sup: &mut Supervisor,
        balancer: &mut Balancer,
        dp: &mut Dataplane,
    ) -> Result<(), String> {
        let Some(path) = &self.config else {
            tracing::warn!("reload without --config: nothing to reload");
            return Err("the daemon runs without --config: nothing to reload".into());
        };
        let result = Config::load(path)
            .map_err(anyhow::Error::from)
            .and_then(|mut config| {
                if let Some(port) = self.gue_port {
                    config.encap_sources.gue_port = port;
                }
                sup.reload(balancer, dp.ebpf_mut(), config)
            });
        match result {
            Ok(()) => {
                tracing::info!(config = %path.display(), checks = sup.checks(), "reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!("reload rejected, running configuration kept: {e:#}");
                Err(format!(
                    "reload rejected, running configuration kept: {e:#}"
                ))
            }
        }
    }
}

/// The capabilities `xlb run` needs that this process lacks (from /proc/self/status):
/// loading and pinning BPF objects, attaching XDP, raw sockets for ICMP checks and
/// VRRP, netlink for the VIPs, bpffs mounts. Checked first, so a missing privilege is
/// named instead of surfacing as an EPERM from deep inside map creation.
fn missing_capabilities() -> Vec<&'static str> {
    const NEEDED: [(u32, &str); 5] = [
        (12, "CAP_NET_ADMIN"),
        (13, "CAP_NET_RAW"),
        (21, "CAP_SYS_ADMIN"),
        (38, "CAP_PERFMON"),
        (39, "CAP_BPF"),
    ];
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        });
    match effective {
        // Unknown (no procfs): let the kernel decide and report.
        None => Vec::new(),
        Some(caps) => NEEDED
            .iter()
            .filter(|(bit, _)| caps & (1u64 << bit) == 0)
            .map(|(_, name)| *name)
            .collect(),
    }
}

/// Where `xlb run` looks for its config when `--config` is not given.
const DEFAULT_CONFIG: &str = "/etc/xlb/xlb.json";

/// How long a read command waits for the daemon.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A reload re-applies every service: allow for big configs.
const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `xlb status|services|backends`: ask the daemon; without one, read the pins.
fn show(pin_dir: &std::path::Path, request: Request, as_json: bool) -> Result<()> {
    let path = control::socket_path(pin_dir);
    let data = match control::request(&path, request, READ_TIMEOUT) {
        Ok(data) => data,
        Err(control::ClientError::NotRunning { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            anyhow::bail!(
                "permission denied on {}: the control socket is root-only (run as root)",
                path.display()
            )
        }
        Err(control::ClientError::NotRunning { .. }) => {
            return show_pinned(pin_dir, request, as_json)
        }
        Err(e) => return Err(e.into()),
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(());
    }
    let text = match request {
        Request::Status => views::status_text(&serde_json::from_value(data)?),
        Request::Services => views::services_table(&serde_json::from_value::<Vec<_>>(data)?),
        Request::Backends => views::backends_table(&serde_json::from_value::<Vec<_>>(data)?),
        Request::Vrrp => views::vrrp_table(&serde_json::from_value::<Vec<_>>(data)?),
        Request::Reload | Request::Metrics => unreachable!("not a table command"),
    };
    print!("{text}");
    Ok(())
}

/// The read commands' fallback while no daemon runs: counters from the pinned maps.
fn show_pinned(pin_dir: &std::path::Path, request: Request, as_json: bool) -> Result<()> {
    if request == Request::Vrrp {
        anyhow::bail!(
            "no daemon answers on {}: VRRP state lives in the daemon only",
            control::socket_path(pin_dir).display()
        );
    }
    let pinned = views::from_pins(pin_dir);
    if request == Request::Status {
        let attached = pinned.is_ok();
        if as_json {
            let v = serde_json::json!({"running": false, "pinned_data_plane": attached});
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if attached {
            println!(
                "xlb daemon not running; the data plane pinned in {} keeps forwarding \
                 (no health checks until a daemon adopts it)",
                pin_dir.display()
            );
        } else {
            println!(
                "xlb is not running (nothing pinned in {})",
                pin_dir.display()
            );
        }
        return Ok(());
    }
    let (services, backends) = pinned.with_context(|| {
        format!(
            "no daemon answers on {} and no data plane is pinned in {}",
            control::socket_path(pin_dir).display(),
            pin_dir.display()
        )
    })?;
    if !as_json {
        eprintln!("(daemon not running: counters from the pinned maps, no health)");
    }
    match (request, as_json) {
        (Request::Services, true) => println!("{}", serde_json::to_string_pretty(&services)?),
        (Request::Services, false) => print!("{}", views::services_table(&services)),
        (_, true) => println!("{}", serde_json::to_string_pretty(&backends)?),
        (_, false) => print!("{}", views::backends_table(&backends)),
    }
    Ok(())
}

/// Writes the instances' XDP records where they changed since `last`.
fn sync_xdp_vrrp(
    vrrp: &Vrrp,
    dp: &mut Dataplane,
    last: &mut Vec<(lb_common::VrrpKey, lb_common::VrrpRouter)>,
) {
    let now = vrrp.xdp_routers();
    if now == *last {
        return;
    }
    for (key, router) in &now {
        if let Err(e) = lb_userspace::maps::set_vrrp_router(dp.ebpf_mut(), key, router) {
            tracing::warn!("updating the XDP VRRP record failed: {e}");
        }
    }
    *last = now;
}

/// On the way out nobody answers for us any more: XDP must stop answering too.
fn clear_xdp_vrrp(dp: &mut Dataplane, last: &[(lb_common::VrrpKey, lb_common::VrrpRouter)]) {
    for (key, _) in last {
        let _ = lb_userspace::maps::remove_vrrp_router(dp.ebpf_mut(), key);
    }
}

/// VRRP priority tracking: each instance loses the weight of every tracked service
/// that has no backend taking new flows and of every tracked interface that is down, so
/// a master with nothing to serve (or no way to reach it) yields.
fn track(sup: &Supervisor, vrrp: &Vrrp) {
    let available = sup.availability();
    for (i, spec) in vrrp.specs().enumerate() {
        let services: u32 = spec
            .track_services
            .iter()
            .filter(|t| available.get(&t.service) == Some(&false))
            .map(|t| u32::from(t.weight))
            .sum();
        let interfaces: u32 = spec
            .track_interfaces
            .iter()
            .filter(|t| !lb_userspace::vrrp::net::iface(&t.interface, &[]).is_ok_and(|i| i.running))
            .map(|t| u32::from(t.weight))
            .sum();
        let lost = services + interfaces;
        let priority = u32::from(spec.priority).saturating_sub(lost).max(1);
        vrrp.set_priority(i, u8::try_from(priority).unwrap_or(spec.priority));
    }
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// One reading of every counter in the pins.
struct Snapshot {
    global: stats::GlobalStats,
    services: Vec<stats::ServiceStats>,
    backends: Vec<stats::BackendStats>,
}

fn snapshot(pin_dir: &std::path::Path) -> Result<Snapshot> {
    let map = stats::open_pinned(pin_dir).with_context(|| {
        format!(
            "opening the pinned stats map in {} (is `xlb run` running?)",
            pin_dir.display()
        )
    })?;
    let global = stats::read_global(&map).context("reading counters")?;
    let (services, backends) =
        stats::read_pinned_flows(pin_dir).context("reading per-service counters")?;
    Ok(Snapshot {
        global,
        services,
        backends,
    })
}

/// `xlb stats`: every counter, and its rate over `interval` (0: no rates).
fn print_stats(pin_dir: &std::path::Path, json: bool, interval: f64) -> Result<()> {
    let first = snapshot(pin_dir)?;
    let (now, secs) = if interval > 0.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(interval));
        (snapshot(pin_dir)?, interval)
    } else {
        (
            Snapshot {
                global: first.global,
                services: first.services.clone(),
                backends: first.backends.clone(),
            },
            0.0,
        )
    };
    let rate = |new: u64, old: u64| {
        if secs > 0.0 {
            new.saturating_sub(old) as f64 / secs
        } else {
            0.0
        }
    };
    let service_before = |id: u32| {
        first
            .services
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.counter)
            .unwrap_or_default()
    };
    let backend_before = |id: u32| {
        first
            .backends
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.counter)
            .unwrap_or_default()
    };
    if json {
        let flows = |c: &lb_common::FlowCounter, old: &lb_common::FlowCounter| {
            serde_json::json!({
                "packets": c.packets, "bytes": c.bytes, "new_flows": c.new_flows,
                "packets_per_s": rate(c.packets, old.packets),
                "bits_per_s": rate(c.bytes, old.bytes) * 8.0,
                "new_flows_per_s": rate(c.new_flows, old.new_flows),
            })
        };
        let global: serde_json::Map<String, serde_json::Value> = Stat::ALL
            .iter()
            .map(|&stat| {
                let (c, old) = (now.global.get(stat), first.global.get(stat));
                (
                    stat.name().to_owned(),
                    serde_json::json!({
                        "packets": c.packets, "bytes": c.bytes,
                        "packets_per_s": rate(c.packets, old.packets),
                    }),
                )
            })
            .collect();
        let out = serde_json::json!({
            "interval_s": secs,
            "global": global,
            "services": now.services.iter().map(|s| serde_json::json!({
                "id": s.id, "service": describe_vip(&s.key),
                "counters": flows(&s.counter, &service_before(s.id)),
            })).collect::<Vec<_>>(),
            "backends": now.backends.iter().map(|b| serde_json::json!({
                "id": b.id,
                "address": ip_from_words(b.backend.addr, b.backend.family),
                "counters": flows(&b.counter, &backend_before(b.id)),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let per_s = |v: f64| format!("{v:.0}");
    let rows: Vec<Vec<String>> = Stat::ALL
        .iter()
        .map(|&stat| {
            let (c, old) = (now.global.get(stat), first.global.get(stat));
            vec![
                stat.name().to_owned(),
                c.packets.to_string(),
                c.bytes.to_string(),
                per_s(rate(c.packets, old.packets)),
            ]
        })
        .collect();
    print!(
        "{}",
        views::table(&["COUNTER", "PACKETS", "BYTES", "PKT/S"], &rows)
    );
    let flow_row = |name: String, c: lb_common::FlowCounter, old: lb_common::FlowCounter| {
        vec![
            name,
            c.packets.to_string(),
            c.bytes.to_string(),
            c.new_flows.to_string(),
            per_s(rate(c.packets, old.packets)),
            per_s(rate(c.bytes, old.bytes) * 8.0),
            per_s(rate(c.new_flows, old.new_flows)),
        ]
    };
    let header = ["PACKETS", "BYTES", "NEW FLOWS", "PKT/S", "BIT/S", "FLOWS/S"];
    let rows: Vec<Vec<String>> = now
        .services
        .iter()
        .map(|s| flow_row(describe_vip(&s.key), s.counter, service_before(s.id)))
        .collect();
    println!();
    print!(
        "{}",
        views::table(&[&["SERVICE"][..], &header[..]].concat(), &rows)
    );
    let rows: Vec<Vec<String>> = now
        .backends
        .iter()
        .map(|b| {
            let addr = ip_from_words(b.backend.addr, b.backend.family)
                .map_or_else(|| "?".into(), |a| a.to_string());
            flow_row(addr, b.counter, backend_before(b.id))
        })
        .collect();
    println!();
    print!(
        "{}",
        views::table(&[&["BACKEND"][..], &header[..]].concat(), &rows)
    );
    if secs > 0.0 {
        println!(
            "
(rates over {secs} s)"
        );
    }
    Ok(())
}
