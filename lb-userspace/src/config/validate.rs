//! Validation of a whole configuration before anything is applied: every problem is
//! reported with its field path (`services[1].backends[3].weight: ...`), not just the
//! first, and a rejected config changes nothing.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    net::IpAddr,
};

use lb_common::limits::{MAX_BACKENDS, MAX_MAGLEV_SIZE, MAX_SERVICES};

use super::{
    check::{CheckKind, CheckSpec},
    scripts::{program_problem, RunAs, RunAsError},
    service::{is_prime, vip_key, EncapSources, Fallback, MacAddr, Mode, ServiceSpec, MAX_WEIGHT},
    Config,
};
use crate::dataplane::{addr::describe_vip, prefix::Prefix};

/// One problem in a requested service set, located by its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Checks a whole service set. Returns every problem found, not just the first.
pub fn services(specs: &[ServiceSpec], encap: &EncapSources) -> Result<(), Vec<Invalid>> {
    let mut errors = Vec::new();
    let mut bad = |path: String, reason: String| errors.push(Invalid { path, reason });
    if specs.len() >= MAX_SERVICES as usize {
        bad(
            "services".into(),
            format!(
                "{} services; at most {} fit the data plane",
                specs.len(),
                MAX_SERVICES - 1
            ),
        );
    }
    if let Some(Err(reason)) = encap.v4.map(Prefix::check) {
        bad("encap_sources.v4".into(), reason);
    }
    if let Some(Err(reason)) = encap.v6.map(Prefix::check) {
        bad("encap_sources.v6".into(), reason);
    }
    let mut seen = HashMap::new();
    let mut addresses = HashSet::new();
    for (i, s) in specs.iter().enumerate() {
        let p = format!("services[{i}]");
        if s.port == Some(0) {
            bad(
                format!("{p}.port"),
                "0 is not a valid port (omit it for an all-ports service)".into(),
            );
        }
        if let Some(j) = seen.insert((s.vip, s.port, s.protocol), i) {
            bad(
                format!("{p}.vip"),
                format!(
                    "{} {:?} port {} is already services[{j}]",
                    s.vip,
                    s.protocol,
                    port_text(s.port)
                ),
            );
        }
        if s.mode == Mode::Gue && encap.gue_port == 0 {
            bad(
                format!("{p}.mode"),
                "gue needs a non-zero encap_sources.gue_port".into(),
            );
        }
        if s.mode == Mode::Ipip || s.mode == Mode::Gue {
            let missing = if s.vip.is_ipv4() {
                encap.v4.is_none()
            } else {
                encap.v6.is_none()
            };
            if missing {
                bad(
                    format!("{p}.mode"),
                    format!(
                        "{} needs an encapsulation source address for {} (encap_sources)",
                        if s.mode == Mode::Gue { "gue" } else { "ipip" },
                        if s.vip.is_ipv4() { "IPv4" } else { "IPv6" }
                    ),
                );
            }
        }
        if !is_prime(s.table_size) || s.table_size > MAX_MAGLEV_SIZE {
            bad(
                format!("{p}.table_size"),
                format!(
                    "{} must be a prime no larger than {MAX_MAGLEV_SIZE}",
                    s.table_size
                ),
            );
        }
        let weighted = s.backends.iter().filter(|b| b.weight > 0).count();
        if weighted as u64 >= u64::from(s.table_size) {
            bad(
                format!("{p}.backends"),
                format!(
                    "{weighted} weighted backends need a table larger than {}",
                    s.table_size
                ),
            );
        }
        if let Some(iface) = &s.egress {
            if nix::net::if_::if_nametoindex(iface.as_str()).is_err() {
                bad(
                    format!("{p}.egress"),
                    format!("no interface named {iface:?}"),
                );
            }
        }
        if let Some(vlan) = s.vlan.filter(|v| !(1..=4094).contains(v)) {
            bad(
                format!("{p}.vlan"),
                format!("{vlan} is not a VLAN id (1..=4094)"),
            );
        }
        if let Some(check) = &s.check {
            for (field, reason) in check.problems(s.port) {
                bad(format!("{p}.check.{field}"), reason);
            }
            // Backends with a check of their own do not use the service's.
            let mut users = s.backends.iter().filter(|b| b.check.is_none());
            if let Some(reason) = users.find_map(|b| source_family_problem(check, b.address)) {
                bad(format!("{p}.check.source"), reason);
            }
        }
        if let Some(argv) = &s.notify {
            if argv.first().is_none_or(String::is_empty) {
                bad(
                    format!("{p}.notify"),
                    "needs a program (argv[0]) to run".into(),
                );
            }
        }
        if let Fallback::SorryServer(sorry) = &s.fallback {
            let fp = format!("{p}.fallback.sorry_server");
            if sorry.address.is_ipv4() != s.vip.is_ipv4() {
                bad(
                    format!("{fp}.address"),
                    format!("{} is not of the VIP's address family", sorry.address),
                );
            }
            if s.backends.iter().any(|b| b.address == sorry.address) {
                bad(
                    format!("{fp}.address"),
                    format!("{} is also a regular backend", sorry.address),
                );
            }
            if sorry.check.is_some() || sorry.disabled {
                bad(
                    fp.clone(),
                    "a sorry server has no check and cannot be disabled".into(),
                );
            }
            if let Some(mac) = sorry.mac.filter(|m| !is_unicast_mac(*m)) {
                bad(format!("{fp}.mac"), format!("{mac} is not a unicast MAC"));
            }
            addresses.insert(sorry.address);
        }
        let mut in_service = HashSet::new();
        for (j, b) in s.backends.iter().enumerate() {
            let bp = format!("{p}.backends[{j}]");
            if b.address.is_ipv4() != s.vip.is_ipv4() {
                bad(
                    format!("{bp}.address"),
                    format!("{} is not of the VIP's address family", b.address),
                );
            }
            if b.address.is_unspecified() || b.address.is_multicast() {
                bad(
                    format!("{bp}.address"),
                    format!("{} cannot be a backend", b.address),
                );
            }
            if !in_service.insert(b.address) {
                bad(
                    format!("{bp}.address"),
                    format!("{} is listed twice", b.address),
                );
            }
            if b.weight > MAX_WEIGHT {
                bad(
                    format!("{bp}.weight"),
                    format!("{} exceeds the maximum {MAX_WEIGHT}", b.weight),
                );
            }
            if let Some(check) = &b.check {
                for (field, reason) in check.problems(s.port) {
                    bad(format!("{bp}.check.{field}"), reason);
                }
                if let Some(reason) = source_family_problem(check, b.address) {
                    bad(format!("{bp}.check.source"), reason);
                }
            }
            if let Some(mac) = b.mac.filter(|m| !is_unicast_mac(*m)) {
                bad(format!("{bp}.mac"), format!("{mac} is not a unicast MAC"));
            }
            addresses.insert(b.address);
        }
    }
    if addresses.len() >= MAX_BACKENDS as usize {
        bad(
            "services".into(),
            format!(
                "{} distinct backends; at most {} fit the data plane",
                addresses.len(),
                MAX_BACKENDS - 1
            ),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn is_unicast_mac(mac: MacAddr) -> bool {
    mac.0 != [0; 6] && mac.0[0] & 1 == 0
}

fn port_text(port: Option<u16>) -> String {
    port.map_or_else(|| "all".into(), |p| p.to_string())
}

/// Every problem in a whole configuration: its services, VRRP instances and interfaces.
pub fn config(config: &Config) -> Vec<Invalid> {
    let mut errors = services(&config.services, &config.encap_sources)
        .err()
        .unwrap_or_default();
    let names: Vec<String> = config
        .services
        .iter()
        .map(|s| describe_vip(&vip_key(s)))
        .collect();
    errors.extend(super::vrrp::validate(&config.vrrp, &names));
    errors.extend(script_problems(config));
    errors.extend(super::conn_table::validate(&config.conn_table));
    if let Some(Err(reason)) = config.hash_seed.as_ref().map(super::HashSeed::value) {
        errors.push(Invalid {
            path: "hash_seed".into(),
            reason,
        });
    }
    let mut seen = HashSet::new();
    for (i, name) in config.interfaces.iter().enumerate() {
        // IFNAMSIZ is 16 with the terminating NUL.
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', '\0']) {
            errors.push(Invalid {
                path: format!("interfaces[{i}]"),
                reason: format!("{name:?} is not a valid interface name"),
            });
        } else if !seen.insert(name) {
            errors.push(Invalid {
                path: format!("interfaces[{i}]"),
                reason: format!("{name:?} is listed twice"),
            });
        }
    }
    errors
}

/// Users and groups that do not exist, and programs others could modify (see
/// [`super::scripts`]). Checked on load only: it reads the filesystem.
fn script_problems(config: &Config) -> Vec<Invalid> {
    let mut out = Vec::new();
    let mut bad = |path: String, reason: String| out.push(Invalid { path, reason });
    let resolve = |run_as: &RunAs, at: &str, bad: &mut dyn FnMut(String, String)| {
        run_as.resolve().unwrap_or_else(|e| {
            let field = if matches!(e, RunAsError::NoGroup(_)) {
                "group"
            } else {
                "user"
            };
            bad(format!("{at}.{field}"), e.to_string());
            None
        })
    };
    let default = resolve(&config.scripts, "scripts", &mut bad);
    let program = |argv: &[String], runs_as, path: String, bad: &mut dyn FnMut(String, String)| {
        if let Some(why) = argv.first().and_then(|p| program_problem(p, runs_as)) {
            bad(path, why);
        }
    };
    for (i, s) in config.services.iter().enumerate() {
        let p = format!("services[{i}]");
        let checks = s.check.iter().map(|c| (c, format!("{p}.check"))).chain(
            s.backends
                .iter()
                .enumerate()
                .filter_map(|(j, b)| Some((b.check.as_ref()?, format!("{p}.backends[{j}].check")))),
        );
        for (check, at) in checks {
            if let (CheckKind::Exec, Some(argv)) = (check.kind, &check.command) {
                let runs_as = resolve(&check.run_as().or(&config.scripts), &at, &mut bad);
                program(argv, runs_as, format!("{at}.command"), &mut bad);
            }
        }
        if let Some(argv) = &s.notify {
            program(argv, default, format!("{p}.notify"), &mut bad);
        }
    }
    for (i, v) in config.vrrp.iter().enumerate() {
        if let Some(argv) = &v.notify {
            program(argv, default, format!("vrrp[{i}].notify"), &mut bad);
        }
    }
    out
}

/// A check's source must be of the family of the backend it probes.
fn source_family_problem(check: &CheckSpec, backend: IpAddr) -> Option<String> {
    let source = check.source?;
    (source.is_ipv4() != backend.is_ipv4())
        .then(|| format!("{source} cannot reach backend {backend}: another address family"))
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{
        config::service::{BackendSpec, Protocol, DEFAULT_TABLE_SIZE},
        dataplane::addr::{be_words, ip_from_words},
    };

    fn spec(vip: &str, port: Option<u16>, backends: &[(&str, u32)]) -> ServiceSpec {
        let backends = backends
            .iter()
            .map(|(a, w)| BackendSpec::new(a.parse().unwrap(), MacAddr([2, 0, 0, 0, 0, 1]), *w))
            .collect();
        ServiceSpec {
            table_size: 7,
            ..ServiceSpec::new(
                vip.parse().unwrap(),
                port,
                Protocol::Tcp,
                Mode::Dsr,
                backends,
            )
        }
    }

    fn paths(specs: &[ServiceSpec]) -> Vec<String> {
        services(specs, &EncapSources::default())
            .unwrap_err()
            .into_iter()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn address_words_round_trip() {
        for a in ["10.1.2.3", "fd00::1:2", "::ffff:1.2.3.4"] {
            let ip: IpAddr = a.parse().unwrap();
            let (w, f) = be_words(ip);
            assert_eq!(ip_from_words(w, f), Some(ip));
        }
        let s = spec("fd00::100", None, &[]);
        assert_eq!(describe_vip(&vip_key(&s)), "[fd00::100]:*/tcp");
    }

    #[test]
    fn valid_set_passes() {
        services(
            &[spec(
                "10.0.0.100",
                Some(80),
                &[("10.0.1.1", 1), ("10.0.1.2", 3)],
            )],
            &EncapSources::default(),
        )
        .unwrap();
    }

    #[test]
    fn each_problem_is_named_by_path() {
        let mut bad = spec(
            "10.0.0.100",
            Some(0),
            &[("10.0.1.1", 70_000), ("fd00::1", 1), ("10.0.1.1", 1)],
        );
        bad.table_size = 8;
        bad.backends[0].mac = Some(MacAddr([1, 0, 0, 0, 0, 1]));
        let mut dup = spec("10.0.0.100", Some(0), &[("10.0.1.3", 1)]);
        dup.mode = Mode::Ipip;
        let got = paths(&[bad, dup]);
        let want = [
            "services[0].port: 0 is not a valid port (omit it for an all-ports service)",
            "services[0].table_size: 8 must be a prime no larger than 65537",
            "services[0].backends[0].weight: 70000 exceeds the maximum 65535",
            "services[0].backends[0].mac: 01:00:00:00:00:01 is not a unicast MAC",
            "services[0].backends[1].address: fd00::1 is not of the VIP's address family",
            "services[0].backends[2].address: 10.0.1.1 is listed twice",
            "services[1].port: 0 is not a valid port (omit it for an all-ports service)",
            "services[1].vip: 10.0.0.100 Tcp port 0 is already services[0]",
            "services[1].mode: ipip needs an encapsulation source address for IPv4 (encap_sources)",
        ];
        for w in want {
            assert!(got.iter().any(|g| g == w), "missing {w:?} in {got:#?}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    #[test]
    fn vlan_ids_outside_1_to_4094_are_rejected_by_path() {
        let with_vlan = |vlan| ServiceSpec {
            vlan: Some(vlan),
            ..spec("10.0.0.100", Some(80), &[("10.0.1.1", 1)])
        };
        let mut other = with_vlan(4094);
        other.port = Some(81);
        services(&[with_vlan(1), other], &EncapSources::default()).unwrap();
        let mut second = with_vlan(4095);
        second.port = Some(81);
        assert_eq!(
            paths(&[with_vlan(0), second]),
            [
                "services[0].vlan: 0 is not a VLAN id (1..=4094)",
                "services[1].vlan: 4095 is not a VLAN id (1..=4094)",
            ]
        );
    }

    #[test]
    fn more_backends_than_the_table_allows_is_rejected() {
        let many: Vec<(String, u32)> = (1..=7).map(|i| (format!("10.0.1.{i}"), 1)).collect();
        let refs: Vec<(&str, u32)> = many.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        let got = paths(&[spec("10.0.0.100", Some(80), &refs)]);
        assert_eq!(
            got,
            ["services[0].backends: 7 weighted backends need a table larger than 7"]
        );
    }

    #[test]
    fn config_json_round_trip_and_unknown_fields() {
        let json = r#"{"vip":"10.0.0.100","port":80,"protocol":"tcp","mode":"dsr",
            "backends":[{"address":"10.0.1.1","mac":"02:00:00:00:00:01","weight":2}]}"#;
        let s: ServiceSpec = serde_json::from_str(json).unwrap();
        assert_eq!(s.table_size, DEFAULT_TABLE_SIZE);
        assert_eq!(s.backends[0].mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
        let err =
            serde_json::from_str::<ServiceSpec>(&json.replace("\"mode\"", "\"mdoe\"")).unwrap_err();
        assert!(err.to_string().contains("mdoe"), "{err}");
        let err = serde_json::from_str::<ServiceSpec>(&json.replace("02:00:00:00:00:01", "02:00"))
            .unwrap_err();
        assert!(err.to_string().contains("not a MAC address"), "{err}");
    }

    #[test]
    fn a_check_source_must_match_its_backends_family() {
        use crate::config::check::{CheckKind, CheckSpec};
        let mut check = CheckSpec::new(CheckKind::Tcp);
        check.source = Some("fd00::2".parse().unwrap());
        let mut s = spec("10.0.0.100", Some(80), &[("10.0.1.1", 1), ("10.0.1.2", 1)]);
        s.check = Some(check.clone());
        // The second backend has a check of its own, with a matching source.
        let mut own = check.clone();
        own.source = Some("10.0.0.2".parse().unwrap());
        s.backends[1].check = Some(own);
        let mut v6 = spec("fd00::100", Some(80), &[("fd00::11", 1)]);
        v6.backends[0].check = Some(check.clone());
        let mut exec = CheckSpec::new(CheckKind::Exec);
        exec.command = Some(vec!["/bin/true".into()]);
        exec.source = Some("10.0.0.2".parse().unwrap());
        let mut e = spec("10.0.0.101", Some(80), &[("10.0.1.3", 1)]);
        e.check = Some(exec);
        assert_eq!(
            paths(&[s, v6, e]),
            [
                "services[0].check.source: fd00::2 cannot reach backend 10.0.1.1: another address family",
                "services[2].check.source: applies to icmp/tcp/http/https/udp/dns checks, not exec",
            ]
        );
    }
}
