//! What the read commands show: the daemon's status, its services and its backends,
//! as serde types (the `--json` output and the control-socket payload) and as aligned
//! text tables for people.
//!
//! Built from the running daemon (config + health + live counters) or, when no daemon
//! answers, from the pinned maps alone (counters, no health: the maps do not hold it).

use std::{collections::HashMap, fmt::Write as _, net::IpAddr, path::Path, time::SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    balancer::Balancer,
    config::{service::vip_key, BackendSpec, Fallback, MacAddr, Mode, OnFailure},
    dataplane::{
        addr::{describe_vip, ip_from_words},
        aya::stats,
        BackendStats, DataPlane, ServiceStats,
    },
    health::{CheckResult, Health},
    nexthop::Route,
    supervisor::{convergence::SyncStatus, Supervisor},
};

/// `xlb status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub pin_dir: String,
    pub interfaces: Vec<String>,
    pub config: Option<String>,
    pub services: usize,
    pub backends: usize,
    pub checks: usize,
    pub backends_down: usize,
    /// The last reload: `ok` or the reason it was rejected.
    pub last_reload: Option<String>,
    /// Whether the pinned data plane outlives the daemon (false: bpffs is private to its
    /// mount namespace, so a crash detaches XDP); `pins_warning` says why.
    #[serde(default = "yes")]
    pub pins_persist: bool,
    #[serde(default)]
    pub pins_warning: Option<String>,
    /// Whether the data plane serves the desired state, and if not why and since when.
    #[serde(default)]
    pub dataplane: SyncStatus,
    /// How the program is attached to each interface.
    #[serde(default)]
    pub attached: Vec<AttachedIface>,
    /// The connection table's size, memory and fill.
    #[serde(default)]
    pub conn_table: Option<ConnTableView>,
}

/// The connection table in `xlb status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnTableView {
    /// Entries it holds before the least recently used are evicted.
    pub entries: u32,
    /// Its eviction lists (`conn_table.lru` as loaded): `shared` or `per_cpu`.
    #[serde(default)]
    pub lru: crate::config::conn_table::LruKind,
    /// Kernel memory charged to it.
    pub memory_bytes: Option<u64>,
    /// Flows at the last count (counted every few seconds off the daemon's loop).
    pub flows: Option<u64>,
    /// How long ago that count was taken.
    pub counted_s_ago: Option<u64>,
    /// `conn_table.entries` of the config in force, when it differs from `entries`
    /// (a reload changed it: it takes effect at the next start).
    #[serde(default)]
    pub configured_entries: Option<u32>,
    /// Entries past their timeout deleted so far (by the walks that count the flows).
    #[serde(default)]
    pub expired: Option<u64>,
    /// The unconfirmed table (flows seen once, waiting for their second packet).
    #[serde(default)]
    pub unconfirmed_entries: u32,
    #[serde(default)]
    pub unconfirmed_memory_bytes: Option<u64>,
}

impl ConnTableView {
    pub fn new(table: &crate::dataplane::ConnTableUse, configured: u32) -> Self {
        Self {
            entries: table.capacity,
            lru: table.lru,
            memory_bytes: table.memory_bytes,
            flows: table.flows,
            counted_s_ago: table.counted_age.map(|a| a.as_secs()),
            configured_entries: (configured != table.capacity).then_some(configured),
            expired: table.expired,
            unconfirmed_entries: table.unconfirmed_capacity,
            unconfirmed_memory_bytes: table.unconfirmed_memory_bytes,
        }
    }
}

/// One interface the daemon attached to, in `xlb status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedIface {
    pub iface: String,
    /// `native`, `generic`, or `adopted` (an earlier daemon's link, kept as it was).
    pub mode: String,
    /// Generic only because native XDP was not available here (`--xdp-mode auto`).
    pub fallback: bool,
}

fn yes() -> bool {
    true
}

/// One row of `xlb services`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceView {
    pub service: String,
    /// `dsr`, `ipip`, `gue`; `None` when read from pins only.
    pub mode: Option<String>,
    /// Backends configured / taking new flows now (`None` from pins only).
    pub backends: Option<usize>,
    pub available: Option<usize>,
    /// `drop`, `pass`, `sorry_server <ip>`; `active` while it serves.
    pub fallback: Option<String>,
    pub fallback_active: Option<bool>,
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

/// One row of `xlb backends`: a backend of a service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    /// `None` when read from pins only (backends are global there).
    pub service: Option<String>,
    pub address: IpAddr,
    pub weight: Option<u32>,
    /// The weight the data plane uses now (0 while drained).
    pub effective_weight: Option<u32>,
    /// `up`, `down`, `disabled`, `unchecked`, `sorry`; `None` from pins only.
    pub state: Option<String>,
    pub last_check: Option<String>,
    /// Seconds in the current state.
    pub since_s: Option<u64>,
    pub probes: Option<u64>,
    pub failures: Option<u64>,
    pub transitions: Option<u64>,
    /// The next-hop MAC frames to it carry (configured, or learned from the kernel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Where that MAC comes from: `configured`, `on-link` or `via GATEWAY` (learned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
    /// Why its next hop keeps it from new flows, if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_problem: Option<String>,
    /// Counters of the backend (all services it serves).
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Dsr => "dsr",
        Mode::Ipip => "ipip",
        Mode::Gue => "gue",
    }
}

/// The services of a running daemon.
pub fn services(sup: &Supervisor, dp: &dyn DataPlane) -> Vec<ServiceView> {
    let (svc_stats, _) = dp.flows().unwrap_or_default();
    let counters: HashMap<_, _> = svc_stats.iter().map(|s| (s.key, s.counter)).collect();
    sup.config()
        .services
        .iter()
        .map(|svc| {
            let key = vip_key(svc);
            let c = counters.get(&key).copied().unwrap_or_default();
            let available = svc
                .backends
                .iter()
                .filter(|b| {
                    b.weight > 0
                        && !b.disabled
                        && sup
                            .book()
                            .get(&(key, b.address))
                            .is_none_or(|h| h.health() == Health::Up)
                })
                .count();
            let fallback = match &svc.fallback {
                Fallback::Drop => "drop".to_owned(),
                Fallback::Pass => "pass".to_owned(),
                Fallback::SorryServer(s) => format!("sorry_server {}", s.address),
            };
            ServiceView {
                service: describe_vip(&key),
                mode: Some(mode_name(svc.mode).into()),
                backends: Some(svc.backends.len()),
                available: Some(available),
                fallback: Some(fallback),
                fallback_active: Some(available == 0),
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
            }
        })
        .collect()
}

/// The backends of a running daemon, per service.
pub fn backends(sup: &Supervisor, balancer: &Balancer, dp: &dyn DataPlane) -> Vec<BackendView> {
    let (_, be_stats) = dp.flows().unwrap_or_default();
    let counters: HashMap<u32, _> = be_stats.iter().map(|b| (b.id, b.counter)).collect();
    let effective = sup.effective().services;
    let now = SystemTime::now();
    let mut out = Vec::new();
    for (svc, eff) in sup.config().services.iter().zip(&effective) {
        let key = vip_key(svc);
        let eff_weight = |addr: IpAddr| {
            eff.backends
                .iter()
                .find(|b| b.address == addr)
                .map_or(0, |b| b.weight)
        };
        let counter = |addr: IpAddr| {
            balancer
                .backend_id(addr)
                .and_then(|id| counters.get(&id).copied())
                .unwrap_or_default()
        };
        for b in &svc.backends {
            let health = sup.book().get(&(key, b.address));
            let state = match (b.disabled, health) {
                (true, _) => "disabled",
                (false, Some(h)) if h.health() == Health::Down => "down",
                (false, Some(_)) => "up",
                (false, None) => "unchecked",
            };
            let c = counter(b.address);
            out.push(BackendView {
                service: Some(describe_vip(&key)),
                address: b.address,
                weight: Some(b.weight),
                effective_weight: Some(
                    if svc.on_failure == OnFailure::Reset
                        && !eff.backends.iter().any(|e| e.address == b.address)
                    {
                        0
                    } else {
                        eff_weight(b.address)
                    },
                ),
                state: Some(state.into()),
                last_check: health.and_then(|h| {
                    h.last.as_ref().map(|r| match r {
                        CheckResult::Ok => "ok".to_owned(),
                        CheckResult::Fail(why) => why.to_string(),
                    })
                }),
                since_s: health.and_then(|h| now.duration_since(h.since).ok().map(|d| d.as_secs())),
                probes: health.map(|h| h.probes),
                failures: health.map(|h| h.failures),
                transitions: health.map(|h| h.transitions),
                mac: mac_of(sup, b),
                next_hop: Some(next_hop_of(sup, b)),
                next_hop_problem: sup.next_hop_problem(svc, b.address),
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
            });
        }
        if let Fallback::SorryServer(s) = &svc.fallback {
            let c = counter(s.address);
            out.push(BackendView {
                service: Some(describe_vip(&key)),
                address: s.address,
                weight: Some(s.weight),
                effective_weight: Some(eff_weight(s.address)),
                state: Some("sorry".into()),
                last_check: None,
                since_s: None,
                probes: None,
                failures: None,
                transitions: None,
                mac: mac_of(sup, s),
                next_hop: Some(next_hop_of(sup, s)),
                next_hop_problem: None,
                packets: c.packets,
                bytes: c.bytes,
                new_flows: c.new_flows,
            });
        }
    }
    out
}

/// The MAC frames to `b` carry now.
fn mac_of(sup: &Supervisor, b: &BackendSpec) -> Option<String> {
    b.mac
        .map(|m| m.0)
        .or_else(|| sup.next_hops().mac(b.address))
        .map(|m| MacAddr(m).to_string())
}

/// Where `b`'s MAC comes from.
fn next_hop_of(sup: &Supervisor, b: &BackendSpec) -> String {
    if b.mac.is_some() {
        return "configured".into();
    }
    match sup.next_hops().get(b.address).route {
        Some(Route {
            gateway: Some(gw), ..
        }) => format!("via {gw}"),
        Some(_) => "on-link".into(),
        None => "unknown".into(),
    }
}

/// Services and backends from the pins alone (no daemon): counters only.
pub fn from_pins(
    pin_dir: &Path,
) -> Result<(Vec<ServiceView>, Vec<BackendView>), aya::maps::MapError> {
    let (services, backends) = stats::read_pinned_flows(pin_dir)?;
    Ok((
        services.iter().map(pinned_service).collect(),
        backends.iter().filter_map(pinned_backend).collect(),
    ))
}

fn pinned_service(s: &ServiceStats) -> ServiceView {
    ServiceView {
        service: describe_vip(&s.key),
        mode: None,
        backends: None,
        available: None,
        fallback: None,
        fallback_active: None,
        packets: s.counter.packets,
        bytes: s.counter.bytes,
        new_flows: s.counter.new_flows,
    }
}

fn pinned_backend(b: &BackendStats) -> Option<BackendView> {
    Some(BackendView {
        service: None,
        address: ip_from_words(b.backend.addr, b.backend.family)?,
        weight: None,
        effective_weight: None,
        state: None,
        last_check: None,
        since_s: None,
        probes: None,
        failures: None,
        transitions: None,
        // The MAC the data plane holds (the pins know no more than that).
        mac: Some(MacAddr(b.backend.mac).to_string()),
        next_hop: None,
        next_hop_problem: None,
        packets: b.counter.packets,
        bytes: b.counter.bytes,
        new_flows: b.counter.new_flows,
    })
}

/// An aligned text table: columns whose cells are all numbers (or `-`) are
/// right-aligned, header included; the others are left-aligned.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let is_number = |c: &str| c == "-" || (!c.is_empty() && c.chars().all(|c| c.is_ascii_digit()));
    let numeric: Vec<bool> = (0..header.len())
        .map(|i| !rows.is_empty() && rows.iter().all(|r| r.get(i).is_none_or(|c| is_number(c))))
        .collect();
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            if numeric[i] {
                let _ = write!(text, "{cell:>w$}");
            } else {
                let _ = write!(text, "{cell:<w$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>());
    for row in rows {
        line(row);
    }
    out
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub fn services_table(rows: &[ServiceView]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|s| {
            let fallback = match (&s.fallback, s.fallback_active) {
                (Some(f), Some(true)) => format!("{f} (ACTIVE)"),
                (f, _) => opt(f.clone()),
            };
            vec![
                s.service.clone(),
                opt(s.mode.clone()),
                match (s.available, s.backends) {
                    (Some(a), Some(b)) => format!("{a}/{b}"),
                    _ => "-".into(),
                },
                fallback,
                s.packets.to_string(),
                s.bytes.to_string(),
                s.new_flows.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "MODE",
            "UP",
            "FALLBACK",
            "PACKETS",
            "BYTES",
            "NEW FLOWS",
        ],
        &rows,
    )
}

pub fn backends_table(rows: &[BackendView]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|b| {
            vec![
                opt(b.service.clone()),
                b.address.to_string(),
                opt(b.state.clone()),
                match (b.weight, b.effective_weight) {
                    (Some(w), Some(e)) if w != e => format!("{w}->{e}"),
                    (w, _) => opt(w),
                },
                opt(b.since_s.map(|s| format!("{s}s"))),
                opt(b.last_check.clone()),
                opt(b.next_hop_problem.clone().or_else(|| b.mac.clone())),
                opt(b.transitions),
                b.packets.to_string(),
                b.new_flows.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE",
            "BACKEND",
            "STATE",
            "WEIGHT",
            "SINCE",
            "LAST CHECK",
            "NEXT HOP",
            "CHANGES",
            "PACKETS",
            "NEW FLOWS",
        ],
        &rows,
    )
}

pub fn vrrp_table(rows: &[crate::vrrp::runtime::InstanceStatus]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|v| {
            let invalid: u64 = v.invalid.values().sum();
            vec![
                v.name.clone(),
                v.interface.clone(),
                v.vrid.to_string(),
                v.state.to_uppercase(),
                if v.priority == v.base_priority {
                    v.priority.to_string()
                } else {
                    format!("{}->{}", v.base_priority, v.priority)
                },
                opt(v.master),
                v.addresses
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                v.adverts_sent.to_string(),
                v.adverts_received.to_string(),
                invalid.to_string(),
                v.history
                    .last()
                    .map_or_else(|| "-".into(), |(_, _, _, why)| why.clone()),
            ]
        })
        .collect();
    table(
        &[
            "INSTANCE",
            "IFACE",
            "VRID",
            "STATE",
            "PRIO",
            "MASTER",
            "ADDRESSES",
            "SENT",
            "RECV",
            "DROPPED",
            "LAST CHANGE",
        ],
        &rows,
    )
}

pub fn status_text(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "xlb {} running (pid {}, up {}s)",
        s.version, s.pid, s.uptime_s
    );
    let _ = writeln!(out, "  interfaces   {}", s.interfaces.join(", "));
    for a in &s.attached {
        let why = if a.fallback {
            " (fallback: no native XDP on this interface; slower)"
        } else {
            ""
        };
        let _ = writeln!(out, "  attached     {} {}{why}", a.iface, a.mode);
    }
    let _ = writeln!(out, "  pin dir      {}", s.pin_dir);
    let _ = writeln!(out, "  config       {}", opt(s.config.clone()));
    let _ = writeln!(
        out,
        "  services     {} ({} backends, {} checked, {} down)",
        s.services, s.backends, s.checks, s.backends_down
    );
    let _ = writeln!(out, "  last reload  {}", opt(s.last_reload.clone()));
    let d = &s.dataplane;
    if d.in_sync {
        let _ = writeln!(out, "  data plane   in sync");
    } else {
        let mut why = Vec::new();
        if let Some(e) = &d.error {
            why.push(format!("{e} ({} failed attempts, retrying)", d.attempts));
        }
        if !d.missing_egress.is_empty() {
            why.push(format!("egress missing: {}", d.missing_egress.join(", ")));
        }
        let _ = writeln!(out, "  data plane   OUT OF SYNC: {}", why.join("; "));
    }
    if let Some(c) = &s.conn_table {
        let fill = match c.flows {
            Some(n) => format!(
                "{n} of {} entries ({:.1} %, counted {}s ago)",
                c.entries,
                n as f64 * 100.0 / f64::from(c.entries.max(1)),
                c.counted_s_ago.unwrap_or(0)
            ),
            None => format!("{} entries (not counted yet)", c.entries),
        };
        let memory = c
            .memory_bytes
            .map(|b| format!(", {:.1} MiB", b as f64 / f64::from(1u32 << 20)))
            .unwrap_or_default();
        let next = c
            .configured_entries
            .map(|n| format!("; {n} configured, taken at the next start"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  conn table   {fill}{memory}, {} LRU{next}",
            c.lru.as_str()
        );
        let _ = writeln!(
            out,
            "  unconfirmed  {} entries (flows seen once, until their next packet)",
            c.unconfirmed_entries
        );
    }
    if let Some(warning) = &s.pins_warning {
        let _ = writeln!(
            out,
            "  WARNING      pins do not outlive this daemon: {warning}"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["NAME", "N"],
            &[
                vec!["a".into(), "5".into()],
                vec!["longer".into(), "12345".into()],
            ],
        );
        assert_eq!(t, "NAME        N\na           5\nlonger  12345\n");
    }
}
