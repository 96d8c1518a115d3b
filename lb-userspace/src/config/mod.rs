//! The configuration (JSON): everything `xlb run --config` serves, as plain data, and
//! its validation. Parsed and validated as a whole before anything is applied; errors
//! name the field path. This layer imports nothing above the data plane's address
//! helpers: the balancer, health checks, VRRP and the edges all read it.
//!
//! - [`service`]: virtual services and backends; [`check`]: health checks;
//!   [`vrrp`]: VRRP instances; [`scripts`]: who runs exec checks and hooks;
//!   [`seed`]: `hash_seed`; [`conn_table`]: the connection table's size;
//!   [`validate`]: the whole-config rules.

pub mod check;
pub mod conn_table;
pub mod scripts;
pub mod seed;
pub mod service;
pub mod validate;
pub mod vrrp;

use std::path::Path;

use serde::{Deserialize, Serialize};

use self::{conn_table::ConnTableSpec, scripts::RunAs, vrrp::VrrpSpec};
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
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" answers XDP may send per
    /// CPU and second for packets too big to encapsulate (docs/mtu.md). Absent = 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_toobig_per_sec: Option<u32>,
    /// Who runs exec checks and notify hooks (default: the daemon's user, root).
    #[serde(default, skip_serializing_if = "is_default")]
    pub scripts: RunAs,
    /// The connection table's size (taken when the data plane is loaded).
    #[serde(default, skip_serializing_if = "is_default")]
    pub conn_table: ConnTableSpec,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
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
    #[error(
        "{path}: refused: {reason}; whoever can change it can make xlb run any program as root"
    )]
    Unsafe { path: String, reason: String },
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
        if let Some(reason) = scripts::config_file_problem(path) {
            return Err(ConfigError::Unsafe {
                path: shown,
                reason,
            });
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
        let mut config = config;
        let errors = validate::config(&config);
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                path: "<config>".into(),
                errors,
            });
        }
        config.settle_script_users();
        Ok(config)
    }

    /// Gives every exec check the user and group it runs as (its own, else
    /// `scripts`), so a check carries all it needs and a change of `scripts` restarts
    /// the checks it concerns.
    fn settle_script_users(&mut self) {
        let default = self.scripts.clone();
        let checks = self.services.iter_mut().flat_map(|s| {
            s.check
                .iter_mut()
                .chain(s.backends.iter_mut().filter_map(|b| b.check.as_mut()))
        });
        for check in checks {
            if check.kind == check::CheckKind::Exec {
                let run_as = check.run_as().or(&default);
                check.user = run_as.user;
                check.group = run_as.group;
            }
        }
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

    /// Issue 15.5: an encap source may be a prefix whose host bits carry each flow's
    /// hash; its length and host bits are checked with the field's path, every problem
    /// at once, and a bare address keeps meaning one address.
    #[test]
    fn encap_source_prefixes_are_validated_by_path() {
        let config = Config::parse(
            r#"{"encap_sources":{"v4":"10.99.0.0/16","v6":"fd99::/96"},"services":[]}"#,
        )
        .unwrap();
        let (v4, v6) = (
            config.encap_sources.v4.unwrap(),
            config.encap_sources.v6.unwrap(),
        );
        assert_eq!((v4.to_string(), v4.len), ("10.99.0.0/16".into(), 16));
        assert_eq!(v6.ip().host_bits(), u32::MAX);
        let config = Config::parse(r#"{"encap_sources":{"v4":"10.0.0.2"}}"#).unwrap();
        let bare = config.encap_sources.v4.unwrap();
        assert_eq!((bare.len, bare.ip().host_bits()), (32, 0));
        let rejected = |text: &str| match Config::parse(text) {
            Err(ConfigError::Invalid { errors, .. }) => {
                errors.iter().map(ToString::to_string).collect::<Vec<_>>()
            }
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(
            rejected(r#"{"encap_sources":{"v4":"10.99.0.1/16","v6":"fd99::/95"}}"#),
            [
                "encap_sources.v4: 10.99.0.1/16: host bits are set (the prefix's host bits \
                 carry each flow's hash)",
                "encap_sources.v6: fd99::/95: the prefix length must be 96 to 128 (a bare \
                 address is a /128)",
            ]
        );
        assert_eq!(
            rejected(r#"{"encap_sources":{"v4":"10.0.0.0/7"}}"#),
            [
                "encap_sources.v4: 10.0.0.0/7: the prefix length must be 8 to 32 (a bare \
              address is a /32)"
            ]
        );
        for text in [
            r#"{"encap_sources":{"v4":"10.0.0.0/33"}}"#,
            r#"{"encap_sources":{"v4":"fd00::/96"}}"#,
            r#"{"encap_sources":{"v6":"fd00::/x"}}"#,
        ] {
            let err = Config::parse(text).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{text}: {err}");
        }
    }

    /// Issue 14 ("Also"): who runs operator programs, and refusing programs others
    /// could change.
    #[test]
    fn script_users_and_unsafe_programs_are_named_by_path() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xlb-cfg-scripts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.join("check");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o777)).unwrap();
        let text = format!(
            r#"{{"scripts": {{"user": "no-such-user-xlb"}},
                "services": [{{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "mode": "dsr",
                  "check": {{"type": "exec", "command": ["{0}"], "user": "root",
                             "group": "no-such-group-xlb"}},
                  "notify": ["{0}"],
                  "backends": [{{"address": "10.0.1.1", "mac": "02:00:00:00:00:01", "weight": 1}}]}}]}}"#,
            script.display()
        );
        let err = Config::parse(&text).unwrap_err().to_string();
        let unsafe_script = format!("{} (file) is writable by everyone", script.display());
        for want in [
            "scripts.user: no such user \"no-such-user-xlb\"".to_owned(),
            "services[0].check.group: no such group \"no-such-group-xlb\"".to_owned(),
            format!("services[0].check.command: {unsafe_script}"),
            format!("services[0].notify: {unsafe_script}"),
        ] {
            assert!(err.contains(&want), "missing {want:?} in {err}");
        }

        // Safe, with users that exist: accepted, and every exec check carries its user.
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let good = text.replace("no-such-user-xlb", "root").replace(
            r#", "user": "root",
                             "group": "no-such-group-xlb""#,
            "",
        );
        let config = Config::parse(&good).unwrap();
        let check = config.services[0].check.as_ref().unwrap();
        assert_eq!(check.user.as_deref(), Some("root"));
        // The config file itself must not be writable by others either.
        let file = dir.join("xlb.json");
        std::fs::write(&file, &good).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o646)).unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(
            err.contains("xlb.json (file) is writable by everyone"),
            "{err}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        Config::load(&file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
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
