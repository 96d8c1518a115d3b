//! Importing other load balancers' configuration into an xlb [`Config`].
//!
//! - [`keepalived`]: `keepalived.conf` (`virtual_server`, `real_server` and their
//!   health checkers; `vrrp_instance`), behind `xlb import-keepalived`.
//!
//! An import never fails because of something it cannot express: it converts what has
//! an xlb equivalent, and reports everything else as a [`Note`] (file line, keyword,
//! why). Only input that cannot be parsed at all is an error. The config it returns
//! always passes `xlb check-config`; values the source file does not contain (next-hop
//! MACs, the balancer's own address for IPIP) come from [`Options`] or are written as
//! placeholders that are reported as notes. Interfaces (VRRP) are the target host's:
//! they need not exist where the import runs ([`parse_for_another_host`]).

pub mod keepalived;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
};

use anyhow::{bail, Context as _};

use crate::config::{Config, ConfigError, MacAddr, MAX_CONFIG_BYTES};

/// Something of the source file that was not carried over (or only approximately).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// 1-based line in the source file; 0 for command-line options.
    pub line: usize,
    pub keyword: String,
    pub reason: String,
}

/// The result of an import: the config, and what it does not (exactly) express.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportReport {
    pub config: Config,
    /// Sorted by line.
    pub notes: Vec<Note>,
}

/// What the source file does not say but an xlb config needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Next-hop MAC of each backend / sorry server address (`--mac IP=MAC`).
    pub macs: BTreeMap<IpAddr, MacAddr>,
    /// The balancer's own addresses, outer source of IPIP (`--encap-source IP`).
    pub encap_v4: Option<Ipv4Addr>,
    pub encap_v6: Option<Ipv6Addr>,
}

impl Options {
    /// Options from the command line: `IP=MAC` pairs and encapsulation sources.
    pub fn from_args(macs: &[String], encap_sources: &[IpAddr]) -> Result<Options, String> {
        let mut out = Options::default();
        for pair in macs {
            let (ip, mac) = pair
                .split_once('=')
                .ok_or_else(|| format!("--mac {pair:?}: want IP=MAC"))?;
            let ip: IpAddr = ip
                .trim()
                .parse()
                .map_err(|_| format!("--mac {pair:?}: {ip:?} is not an IP address"))?;
            let mac: MacAddr = mac
                .trim()
                .parse()
                .map_err(|e| format!("--mac {pair:?}: {e}"))?;
            if out.macs.insert(ip, mac).is_some_and(|old| old != mac) {
                return Err(format!("--mac {ip}: given twice with different MACs"));
            }
        }
        for ip in encap_sources {
            let dup = match ip {
                IpAddr::V4(a) => out.encap_v4.replace(*a).is_some(),
                IpAddr::V6(a) => out.encap_v6.replace(*a).is_some(),
            };
            if dup {
                return Err(format!(
                    "--encap-source {ip}: one address per family (IPv4, IPv6)"
                ));
            }
        }
        Ok(out)
    }
}

/// Input that cannot be parsed at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// The config as JSON for people: pretty, without the fields that are null, false
/// (except VRRP `preempt`, true by default), empty lists or at their default table size
/// or GUE port. Should that ever not read
/// back to exactly the same [`Config`] (a field whose absence means something else),
/// every field is written.
pub fn to_json(config: &Config) -> String {
    let full = serde_json::to_value(config).unwrap_or(serde_json::Value::Null);
    let mut value = full.clone();
    prune(&mut value);
    if serde_json::from_value::<Config>(value.clone())
        .ok()
        .as_ref()
        != Some(config)
    {
        value = full;
    }
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

fn prune(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            map.retain(|key, v| match v {
                Value::Null => false,
                // `preempt` (VRRP) defaults to true: its false is information.
                Value::Bool(false) => key == "preempt",
                // Required (`backends`) or the point of the file (`services`).
                Value::Array(items) => !items.is_empty() || key == "services" || key == "backends",
                Value::Number(n) => {
                    let default = match key.as_str() {
                        "table_size" => Some(u64::from(crate::config::service::DEFAULT_TABLE_SIZE)),
                        "gue_port" => Some(u64::from(lb_common::service::DEFAULT_GUE_PORT)),
                        _ => None,
                    };
                    default.is_none() || n.as_u64() != default
                }
                _ => true,
            });
            map.values_mut().for_each(prune);
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

/// Parses and validates a config written for another host: as [`Config::parse`], except
/// that the interfaces it names need not exist here (they must where it runs, where
/// `xlb check-config` checks them too).
pub fn parse_for_another_host(text: &str) -> Result<Config, ConfigError> {
    match Config::parse(text) {
        Err(ConfigError::Invalid { path, errors }) => {
            let errors: Vec<_> = errors
                .into_iter()
                .filter(|e| !crate::config::vrrp::host_dependent(e))
                .collect();
            if errors.is_empty() {
                serde_json::from_str(text).map_err(|error| ConfigError::Parse { path, error })
            } else {
                Err(ConfigError::Invalid { path, errors })
            }
        }
        other => other,
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.keyword, self.reason)
    }
}

/// `xlb import-keepalived FILE [--mac IP=MAC]... [--encap-source IP]... [-o OUT]`:
/// the config as JSON to `output` (stdout without it), the notes to stderr as
/// `FILE:LINE: KEYWORD: reason`. Notes are expected and not an error; a file that
/// cannot be read or parsed is.
pub fn import_keepalived_cli(
    file: &Path,
    macs: &[String],
    encap_sources: &[IpAddr],
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let options = Options::from_args(macs, encap_sources).map_err(anyhow::Error::msg)?;
    let shown = file.display();
    let len = std::fs::metadata(file)
        .with_context(|| format!("reading {shown}"))?
        .len();
    if len > MAX_CONFIG_BYTES {
        bail!("{shown}: {len} bytes is larger than the {MAX_CONFIG_BYTES}-byte limit");
    }
    let bytes = std::fs::read(file).with_context(|| format!("reading {shown}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let report = keepalived::import(&text, &options)
        .map_err(|e| anyhow::anyhow!("{shown}:{}: {} (nothing converted)", e.line, e.message))?;
    let json = to_json(&report.config);
    match output {
        Some(path) => {
            std::fs::write(path, &json).with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{json}"),
    }
    for note in &report.notes {
        if note.line == 0 {
            eprintln!("{shown}: {note}");
        } else {
            eprintln!("{shown}:{}: {note}", note.line);
        }
    }
    let mut interfaces: Vec<&str> = report
        .config
        .vrrp
        .iter()
        .flat_map(|v| {
            std::iter::once(v.interface.as_str())
                .chain(v.track_interfaces.iter().map(|t| t.interface.as_str()))
        })
        .collect();
    interfaces.sort_unstable();
    interfaces.dedup();
    let needs = if interfaces.is_empty() {
        String::new()
    } else {
        format!(
            " (interfaces {} must exist where it runs)",
            interfaces.join(", ")
        )
    };
    eprintln!(
        "{shown}: {} services and {} VRRP instances converted{needs}, {} notes",
        report.config.services.len(),
        report.config.vrrp.len(),
        report.notes.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruned_json_reads_back_to_the_same_config() {
        let config = Config::parse(include_str!("../../../examples/xlb.json")).unwrap();
        let json = to_json(&config);
        assert_eq!(Config::parse(&json).unwrap(), config);
        assert!(!json.contains("null") && !json.contains("false"), "{json}");
    }
}
