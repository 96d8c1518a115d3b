//! VRRP instances as the config file writes them (`"vrrp": [...]`), and their
//! validation (field path + reason, like the rest of the config).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::validate::Invalid;

/// One virtual router this host takes part in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrrpSpec {
    /// Name for logs, the CLI and notify hooks (keepalived's instance name).
    pub name: String,
    /// Interface the adverts go out of and the virtual addresses are added to.
    pub interface: String,
    /// Virtual router id, 1..=255, shared by every router of the group.
    pub vrid: u8,
    /// 1..=254 (255: this host owns the addresses and is always master).
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// 3 (RFC 5798, default) or 2 (RFC 3768, IPv4 only, whole seconds).
    #[serde(default = "default_version")]
    pub version: u8,
    /// Advertisement interval. v3: 10 ms steps, 10..=40950 ms; v2: whole seconds.
    #[serde(default = "default_interval")]
    pub advert_int_ms: u32,
    /// Take over from a lower-priority master (RFC default: true).
    #[serde(default = "default_true")]
    pub preempt: bool,
    /// After start, wait this long before preempting (keepalived `preempt_delay`).
    #[serde(default)]
    pub preempt_delay_ms: u64,
    /// The virtual addresses (all of one family), added while master.
    pub addresses: Vec<IpAddr>,
    /// Lower the priority by `weight` while a service has no backend taking new flows
    /// (keepalived `track_script`-like, driven by our own health checks).
    #[serde(default)]
    pub track_services: Vec<TrackService>,
    /// Lower the priority by `weight` while an interface is down (no carrier), e.g. the
    /// uplink a master needs to reach its backends (keepalived `track_interface`).
    #[serde(default)]
    pub track_interfaces: Vec<TrackInterface>,
    /// Send adverts to these peers by unicast instead of to 224.0.0.18 / ff02::12 (IPv6:
    /// their link-local addresses), and accept
    /// adverts from them only (keepalived `unicast_peer`), for networks without
    /// multicast. Empty: multicast, from anyone on the segment.
    #[serde(default)]
    pub unicast_peers: Vec<IpAddr>,
    /// Gratuitous ARP after becoming master (and after the link comes back).
    #[serde(default)]
    pub garp: Garp,
    /// Command (argv, no shell) run on every state change as `argv... STATE NAME
    /// REASON` (STATE: master, backup, initialize).
    #[serde(default)]
    pub notify: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackService {
    /// `vip:port/proto` as `xlb services` shows it, e.g. `10.0.0.100:80/tcp`.
    pub service: String,
    pub weight: u8,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackInterface {
    pub interface: String,
    pub weight: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Garp {
    /// How many gratuitous ARPs per address.
    #[serde(default = "default_garp_repeat")]
    pub repeat: u32,
    /// Between two of them.
    #[serde(default = "default_garp_delay")]
    pub delay_ms: u64,
    /// While master, one more round every this many seconds (keepalived
    /// `garp_master_refresh`), so neighbours and switches that lost the entry (a
    /// flushed cache, a replaced switch) learn it again; 0 (the default) is off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refresh_s: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for Garp {
    fn default() -> Self {
        Garp {
            repeat: default_garp_repeat(),
            delay_ms: default_garp_delay(),
            refresh_s: 0,
        }
    }
}

fn default_priority() -> u8 {
    100
}
fn default_version() -> u8 {
    3
}
fn default_interval() -> u32 {
    1000
}
fn default_true() -> bool {
    true
}
fn default_garp_repeat() -> u32 {
    5
}
fn default_garp_delay() -> u64 {
    100
}

impl VrrpSpec {
    /// The advert interval in centiseconds.
    pub fn adver_int_cs(&self) -> u16 {
        u16::try_from(self.advert_int_ms / 10).unwrap_or(u16::MAX)
    }
}

/// Every problem in `specs`; `services` are the `vip:port/proto` names tracking may
/// refer to.
pub fn validate(specs: &[VrrpSpec], services: &[String]) -> Vec<Invalid> {
    let mut out = Vec::new();
    let mut bad = |path: String, reason: String| out.push(Invalid { path, reason });
    let mut seen = std::collections::HashMap::new();
    for (i, s) in specs.iter().enumerate() {
        let p = format!("vrrp[{i}]");
        if s.name.is_empty() || s.name.len() > 64 {
            bad(format!("{p}.name"), "must be 1..=64 characters".into());
        }
        if s.vrid == 0 {
            bad(
                format!("{p}.vrid"),
                "0 is not a valid VRID (1..=255)".into(),
            );
        }
        if s.priority == 0 {
            bad(
                format!("{p}.priority"),
                "0 is reserved for a resigning master (1..=255)".into(),
            );
        }
        let family_v4 = s.addresses.first().is_none_or(IpAddr::is_ipv4);
        if let Some(j) = seen.insert((s.interface.clone(), s.vrid, family_v4), i) {
            bad(
                format!("{p}.vrid"),
                format!("{} on {} is already vrrp[{j}]", s.vrid, s.interface),
            );
        }
        match s.version {
            3 => {
                if s.advert_int_ms % 10 != 0 || !(10..=40_950).contains(&s.advert_int_ms) {
                    bad(
                        format!("{p}.advert_int_ms"),
                        format!(
                            "{} must be a multiple of 10 in 10..=40950 for VRRPv3",
                            s.advert_int_ms
                        ),
                    );
                }
            }
            2 => {
                if s.advert_int_ms % 1000 != 0 || !(1000..=255_000).contains(&s.advert_int_ms) {
                    bad(
                        format!("{p}.advert_int_ms"),
                        format!(
                            "{} must be whole seconds (1000..=255000) for VRRPv2",
                            s.advert_int_ms
                        ),
                    );
                }
                if !family_v4 {
                    bad(format!("{p}.version"), "VRRPv2 is IPv4 only".into());
                }
            }
            v => bad(format!("{p}.version"), format!("{v} is not 2 or 3")),
        }
        if s.addresses.is_empty() {
            bad(
                format!("{p}.addresses"),
                "at least one virtual address".into(),
            );
        }
        if s.addresses.len() > 16 {
            bad(
                format!("{p}.addresses"),
                format!("{} addresses; at most 16 per instance", s.addresses.len()),
            );
        }
        if s.addresses.iter().any(|a| a.is_ipv4() != family_v4) {
            bad(
                format!("{p}.addresses"),
                "all addresses of an instance must be of one family".into(),
            );
        }
        for (j, t) in s.track_services.iter().enumerate() {
            if !services.contains(&t.service) {
                bad(
                    format!("{p}.track_services[{j}].service"),
                    format!("{:?} is not a configured service", t.service),
                );
            }
        }
        for (j, t) in s.track_interfaces.iter().enumerate() {
            if t.weight == 0 {
                bad(
                    format!("{p}.track_interfaces[{j}].weight"),
                    "must be 1..=255 (the priority drops by it while the interface is down)".into(),
                );
            }
            if nix::net::if_::if_nametoindex(t.interface.as_str()).is_err() {
                bad(
                    format!("{p}.track_interfaces[{j}].interface"),
                    format!("no interface named {:?}", t.interface),
                );
            }
        }
        for (j, peer) in s.unicast_peers.iter().enumerate() {
            if peer.is_ipv4() != family_v4 || peer.is_multicast() || peer.is_unspecified() {
                bad(
                    format!("{p}.unicast_peers[{j}]"),
                    format!("{peer} is not a unicast address of the instance's family"),
                );
            } else if let IpAddr::V6(v6) = peer {
                // The IPv6 advert socket is bound to our link-local address: adverts go
                // from it and are only received on it (RFC 5798 §5.1.2.1).
                if !v6.is_unicast_link_local() {
                    bad(
                        format!("{p}.unicast_peers[{j}]"),
                        format!("{peer}: IPv6 peers are link-local addresses (fe80::/10)"),
                    );
                }
            }
        }
        if s.garp.repeat > 100 || s.garp.delay_ms > 10_000 {
            bad(
                format!("{p}.garp"),
                "repeat at most 100, delay_ms at most 10000".into(),
            );
        }
        if s.garp.refresh_s > 86_400 {
            bad(
                format!("{p}.garp.refresh_s"),
                format!("{} s: at most 86400 (0 = off)", s.garp.refresh_s),
            );
        }
        if let Some(argv) = &s.notify {
            if argv.first().is_none_or(String::is_empty) {
                bad(
                    format!("{p}.notify"),
                    "needs a program (argv[0]) to run".into(),
                );
            }
        }
        if nix::net::if_::if_nametoindex(s.interface.as_str()).is_err() {
            bad(
                format!("{p}.interface"),
                format!("no interface named {:?}", s.interface),
            );
        }
    }
    out
}

/// Whether `problem` (from [`validate`]) is about this host rather than the config: an
/// interface that does not exist here. Configs written for another host (`xlb
/// import-keepalived`) are checked without these; the host that runs them checks all.
pub fn host_dependent(problem: &Invalid) -> bool {
    problem.path.starts_with("vrrp[")
        && problem.path.ends_with("interface")
        && problem.reason.starts_with("no interface named")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> VrrpSpec {
        serde_json::from_str(json).unwrap()
    }

    /// What [`validate`] says of `s` alone, as text.
    fn problems(s: VrrpSpec) -> Vec<String> {
        validate(&[s], &[])
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn defaults_and_problems() {
        let s = spec(r#"{"name":"VI_1","interface":"lo","vrid":51,"addresses":["10.0.0.100"]}"#);
        assert_eq!(
            (s.priority, s.version, s.advert_int_ms, s.preempt),
            (100, 3, 1000, true)
        );
        assert_eq!(s.adver_int_cs(), 100);
        assert!(validate(&[s], &[]).is_empty());
        let s = spec(
            r#"{"name":"","interface":"nope0","vrid":0,"priority":0,"version":2,
                "advert_int_ms":1500,"addresses":["fd00::1"],
                "track_services":[{"service":"10.0.0.1:80/tcp","weight":10}]}"#,
        );
        let got = problems(s);
        assert_eq!(
            got,
            [
                "vrrp[0].name: must be 1..=64 characters",
                "vrrp[0].vrid: 0 is not a valid VRID (1..=255)",
                "vrrp[0].priority: 0 is reserved for a resigning master (1..=255)",
                "vrrp[0].advert_int_ms: 1500 must be whole seconds (1000..=255000) for VRRPv2",
                "vrrp[0].version: VRRPv2 is IPv4 only",
                "vrrp[0].track_services[0].service: \"10.0.0.1:80/tcp\" is not a configured service",
                "vrrp[0].interface: no interface named \"nope0\"",
            ]
        );
        let s = spec(
            r#"{"name":"VI_1","interface":"lo","vrid":51,"addresses":["10.0.0.100"],
                "garp":{"refresh_s":86401}}"#,
        );
        let got = problems(s);
        assert_eq!(
            got,
            ["vrrp[0].garp.refresh_s: 86401 s: at most 86400 (0 = off)"]
        );
        let s = spec(
            r#"{"name":"VI_1","interface":"lo","vrid":51,"addresses":["10.0.0.100"],
                "garp":{"refresh_s":60}}"#,
        );
        assert_eq!((s.garp.refresh_s, s.garp.repeat), (60, 5));
        assert!(validate(&[s], &[]).is_empty());
    }

    #[test]
    fn ipv6_unicast_peers_are_link_local() {
        let s = spec(
            r#"{"name":"VI_6","interface":"lo","vrid":51,"addresses":["fd00::100"],
                "unicast_peers":["fe80::2","fd00::3","10.0.0.3"]}"#,
        );
        let got = problems(s);
        assert_eq!(
            got,
            [
                "vrrp[0].unicast_peers[1]: fd00::3: IPv6 peers are link-local addresses (fe80::/10)",
                "vrrp[0].unicast_peers[2]: 10.0.0.3 is not a unicast address of the instance's family",
            ]
        );
    }
}
