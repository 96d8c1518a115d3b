//! The configuration (JSON): everything `xlb run --config` serves, as plain data, and
//! its validation. Parsed and validated as a whole before anything is applied; errors
//! name the field path. This layer imports nothing above the data plane's address
//! helpers: the balancer, health checks, VRRP and the edges all read it.
//!
//! - [`service`]: virtual services and backends; [`check`]: health checks;
//!   [`vrrp`]: VRRP instances; [`seed`]: `hash_seed`; [`validate`]: the whole-config
//!   rules.

pub mod check;
pub mod seed;
pub mod service;
pub mod validate;
pub mod vrrp;

use std::path::Path;

use serde::{Deserialize, Serialize};

use self::vrrp::VrrpSpec;
pub use self::{
    seed::HashSeed,
    service::{
        BackendSpec, EncapSources, Fallback, MacAddr, Mode, OnFailure, Protocol, ServiceSpec,
    },
    validate::Invalid,
};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Interfaces `xlb run` attaches the balancer to (`--iface` overrides them).
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// The balancer's own addresses used as outer source for ipip services.
    #[serde(default)]
    pub encap_sources: EncapSources,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// VRRP instances: which virtual addresses this host holds while it is master.
    #[serde(default)]
    pub vrrp: Vec<VrrpSpec>,
    /// Seed of the flow hash and the Maglev tables ([`seed`]); the same on every
    /// balancer of a group. Absent = 0, the built-in constants.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_seed: Option<HashSeed>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    // The serde error is a leaf with line and column: part of the message, not a cause.
    #[error("{path}: {error}")]
    Parse {
        path: String,
        error: serde_json::Error,
    },
    #[error("{path}: rejected, nothing applied:\n{}", .errors.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: String, errors: Vec<Invalid> },
}

/// Largest accepted config file; anything bigger is a mistake, not a config.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

impl Config {
    /// The hash seed in force (0 when absent; an invalid one never passes validation).
    pub fn hash_seed(&self) -> u32 {
        self.hash_seed
            .as_ref()
            .and_then(|s| s.value().ok())
            .unwrap_or(0)
    }

    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let read_err = |source| ConfigError::Read {
            path: shown.clone(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(read_err(std::io::Error::other(format!(
                "{len} bytes is larger than the {MAX_CONFIG_BYTES}-byte limit"
            ))));
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { error, .. } => ConfigError::Parse {
                path: shown.clone(),
                error,
            },
            ConfigError::Invalid { errors, .. } => ConfigError::Invalid {
                path: shown.clone(),
                errors,
            },
            other => other,
        })
    }

    /// Parses and validates a config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = serde_json::from_str(text).map_err(|error| ConfigError::Parse {
            path: "<config>".into(),
            error,
        })?;
        let errors = validate::config(&config);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                path: "<config>".into(),
                errors,
            });
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../../examples/xlb.json");
        let config = Config::parse(text).unwrap();
        assert_eq!(config.services.len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let err = Config::parse(r#"{"services":[{"vip":"10.0.0.1","port":0,"protocol":"tcp","mode":"dsr","backends":[]}]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("services[0].port: 0 is not a valid port"),
            "{err}"
        );
        let err = Config::parse(r#"{"servics":[]}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `servics`"), "{err}");
        let err = Config::parse(r#"{"interfaces":["eth0","eth0","a/b"]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("interfaces[1]: \"eth0\" is listed twice")
                && err.contains("interfaces[2]: \"a/b\" is not a valid interface name"),
            "{err}"
        );
    }

    #[test]
    fn hash_seed_is_a_32_bit_number_or_hex_string() {
        assert_eq!(Config::parse("{}").unwrap().hash_seed(), 0);
        assert_eq!(
            Config::parse(r#"{"hash_seed": 305419896}"#)
                .unwrap()
                .hash_seed(),
            0x1234_5678
        );
        assert_eq!(
            Config::parse(r#"{"hash_seed": "0x12345678"}"#)
                .unwrap()
                .hash_seed(),
            0x1234_5678
        );
        let err = Config::parse(r#"{"hash_seed": "0x123456789"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("hash_seed: \"0x123456789\": expected a 32-bit"),
            "{err}"
        );
        let err = Config::parse(r#"{"hash_seed": -1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hash_seed: -1: expected a 32-bit"), "{err}");
    }
}
