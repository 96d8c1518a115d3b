//! The `xlb` command line (clap): every command and option. In the library rather than
//! the binary so the argument parser can be tested and fuzzed
//! (fuzz/fuzz_targets/cli_args.rs) as the binary runs it.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use lb_common::DEFAULT_PIN_DIR;

use crate::dataplane::AttachMode;

#[derive(Debug, Parser)]
#[command(name = "xlb", version, about = "xlb: an XDP layer-4 load balancer")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
        /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9641; a port alone,
        /// `9641` or `:9641`, means loopback): counters per verdict, service and backend,
        /// backend health, check latencies. Off by default.
        #[arg(long, value_parser = listen_addr)]
        metrics_listen: Option<std::net::SocketAddr>,
        /// On exit leave program, maps and links pinned (traffic keeps flowing), for a
        /// restart or upgrade: the next `xlb run` with the same pin directory adopts them.
        #[arg(long)]
        keep_attached: bool,
        /// Connection-table entries, overriding the config's `conn_table.entries`
        /// (default 262144). Taken when the data plane loads: a restart over pins of
        /// another size resizes the table and carries its entries over.
        #[arg(long, value_parser = conn_entries)]
        conn_table_entries: Option<u32>,
        /// `shared` or `per_cpu`, overriding the config's `conn_table.lru`: one LRU
        /// list for all CPUs or one per CPU (docs/maps.md). A restart over pins of the
        /// other kind carries the entries over.
        #[arg(long, value_parser = conn_lru)]
        conn_table_lru: Option<crate::config::conn_table::LruKind>,
    },
    /// On a backend: unwrap the balancers' IPIP / IPv6-in-IPv6 / GUE packets in XDP so the
    /// inner packets (to the VIP on lo) reach the local stack; only tunnels from an
    /// `--allow-source` to an address of this host. Runs until SIGINT/SIGTERM.
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
        /// A balancer's encapsulation source address or prefix (its
        /// `encap_sources.v4` / `v6`, e.g. 10.0.0.2 or 10.99.0.0/16; IPv4 /8–/32, IPv6
        /// /96–/128, at most 4 distinct lengths per family): only tunnels from these are
        /// unwrapped (repeat for every balancer and family; at least one is required).
        /// Other tunnel packets pass to the stack untouched, counted
        /// `decap_foreign_source`.
        #[arg(long = "allow-source", value_name = "IP[/LEN]")]
        allow_sources: Vec<crate::dataplane::prefix::IpPrefix>,
        /// An outer destination to unwrap besides the addresses of the `--iface`
        /// interfaces (which are followed as they change), e.g. an address on lo the
        /// balancers encapsulate to (repeat). Others count `decap_foreign_dest`.
        #[arg(long = "allow-destination", value_name = "IP")]
        allow_destinations: Vec<std::net::IpAddr>,
    },
    /// Validate a configuration file without applying it; prints every problem.
    CheckConfig { file: PathBuf },
    /// Convert a keepalived.conf (its virtual_server part) into an xlb config: the JSON
    /// to stdout (or --output), every keyword not carried over to stderr as
    /// `FILE:LINE: KEYWORD: reason`. See docs/keepalived-import.md.
    ImportKeepalived {
        file: PathBuf,
        /// Next-hop MAC of a real or sorry server, `IP=MAC` (repeat), as an override;
        /// without one xlb learns it from the kernel's neighbour table.
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

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EbpfLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl EbpfLogLevel {
    pub fn to_aya(self) -> Option<aya_log::Level> {
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

/// `PORT` or `:PORT` (loopback: nothing is exposed beyond the host unless an address
/// says so), or `ADDR:PORT`.
fn listen_addr(s: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.strip_prefix(':').unwrap_or(s).parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|e| format!("{s:?}: {e} (want PORT, :PORT or ADDR:PORT)"))
}

/// `--conn-table-entries`: a size the connection table may have.
fn conn_entries(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .map_err(|e| format!("{text:?} is not a number of entries: {e}"))?;
    crate::config::conn_table::check_entries(n)?;
    Ok(n)
}

/// `--conn-table-lru`: `shared` or `per_cpu`.
fn conn_lru(text: &str) -> Result<crate::config::conn_table::LruKind, String> {
    text.parse()
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own consistency checks (conflicting ids, bad defaults), which otherwise
    /// only fire as a panic the first time a user hits the broken argument.
    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_and_refuses() {
        let cli = Cli::try_parse_from(["xlb", "run", "-i", "eth0", "--iface", "eth1"]).unwrap();
        let Command::Run { ifaces, .. } = cli.command else {
            panic!("not run");
        };
        assert_eq!(ifaces, ["eth0", "eth1"]);
        let err = |args: &[&str]| Cli::try_parse_from(args).err().unwrap().kind();
        use clap::error::ErrorKind;
        assert_eq!(
            err(&["xlb"]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(err(&["xlb", "decap"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            err(&["xlb", "stats", "--interval", "x"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            err(&["xlb", "run", "--xdp-mode", "fast"]),
            ErrorKind::InvalidValue
        );
    }

    #[test]
    fn a_metrics_port_alone_means_loopback() {
        assert_eq!(listen_addr("9641").unwrap().to_string(), "127.0.0.1:9641");
        assert_eq!(listen_addr(":9641").unwrap().to_string(), "127.0.0.1:9641");
        assert_eq!(
            listen_addr("0.0.0.0:9641").unwrap().to_string(),
            "0.0.0.0:9641"
        );
        assert_eq!(listen_addr("[::1]:9641").unwrap().to_string(), "[::1]:9641");
        assert!(listen_addr("example:9641").is_err());
    }

    #[test]
    fn conn_table_entries_out_of_range_are_refused() {
        assert_eq!(conn_entries("4096"), Ok(4096));
        let err = conn_entries("10").unwrap_err();
        assert!(err.contains("holds 1024 to"), "{err}");
        assert!(conn_entries("many").is_err());
    }
}
