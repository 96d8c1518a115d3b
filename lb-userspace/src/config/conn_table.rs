//! `conn_table`: the connection table's size. The kernel fixes a map's size when it is
//! created, so this takes effect when the daemon loads the data plane (a start, or a
//! restart over pins of another size, which carries the entries over); a reload that
//! changes it keeps the running table and says so.
//!
//! `unconfirmed_entries` sizes the table of flows seen once (`XLB_CONNS_NEW`: a SYN, a
//! first datagram) until their next packet confirms them: it must hold the flows that
//! open within one round trip (new flows per second × RTT), and under a flood of spoofed
//! first packets it is the only table that turns over (docs/robustness.md).
//!
//! `timeouts` end an entry's life before the LRU would: a TCP flow whose client sent
//! FIN or RST after `tcp_closing_s` without packets, other TCP flows after `tcp_idle_s`,
//! UDP (and any other protocol) after `udp_idle_s`. An expired entry no longer pins its
//! flow: the next packet takes the Maglev choice as a new flow does. Unlike the sizes,
//! timeouts follow a reload at once (they are read per packet from `XLB_CONFIG`).
//!
//! `lru` picks how both tables evict (docs/maps.md "Shared or per-CPU LRU"): `shared`
//! (the default) keeps one LRU list for all CPUs; `per_cpu` creates the maps with
//! `BPF_F_NO_COMMON_LRU`, one list per CPU (no shared lock when flows are inserted, but
//! each CPU evicts only what it inserted, out of its own share of the entries). Either
//! way there is one hash, so a flow whose packets change CPU keeps its entry.

use serde::{Deserialize, Serialize};

use super::validate::Invalid;

/// The size when none is configured: the table's size in the compiled object.
pub const DEFAULT_ENTRIES: u32 = lb_common::limits::MAX_CONNS;
/// Below this a busy host turns its table over in well under a second, and every
/// turned-over flow of a changed Maglev table moves.
pub const MIN_ENTRIES: u32 = 1_024;
/// 2^25 entries take about 3.4 GiB of kernel memory (an entry is about 104 bytes
/// with the hash's own element header): beyond that a typo, not a sizing.
pub const MAX_ENTRIES: u32 = 1 << 25;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnTableSpec {
    /// Flows the table holds before the least recently used are evicted.
    #[serde(default = "default_entries")]
    pub entries: u32,
    /// Unconfirmed flows held until their second packet; `None`: [`unconfirmed_for`]
    /// of `entries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed_entries: Option<u32>,
    #[serde(default)]
    pub timeouts: ConnTimeouts,
    /// How the tables evict: one LRU list for all CPUs or one per CPU.
    #[serde(default)]
    pub lru: LruKind,
}

impl Default for ConnTableSpec {
    fn default() -> Self {
        Self {
            entries: DEFAULT_ENTRIES,
            unconfirmed_entries: None,
            timeouts: ConnTimeouts::default(),
            lru: LruKind::default(),
        }
    }
}

pub use crate::dataplane::LruKind;

/// Idle times after which an entry no longer pins its flow, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnTimeouts {
    /// Established TCP. Long: an entry only matters once the flow's Maglev slot has
    /// changed, and an idle connection without keepalives (SSH, database pools) must
    /// survive a drain; LVS's 900 s is a known source of broken idle connections.
    pub tcp_idle_s: u32,
    /// TCP after the client's FIN or RST: long enough for the last ACKs of a close
    /// (the server's FIN goes around the balancer in DSR, so only the client's half of
    /// the close is seen), short enough to free the entry soon.
    pub tcp_closing_s: u32,
    /// UDP and other protocols: no close is ever seen, so idleness is all there is
    /// (LVS's default).
    pub udp_idle_s: u32,
}

impl Default for ConnTimeouts {
    fn default() -> Self {
        Self {
            tcp_idle_s: 3_600,
            tcp_closing_s: 30,
            udp_idle_s: 300,
        }
    }
}

/// A week: a longer idle timeout is a typo (the LRU still evicts idle flows first).
pub const MAX_TIMEOUT_S: u32 = 7 * 24 * 3_600;

impl ConnTimeouts {
    fn problems(&self) -> Vec<Invalid> {
        let mut errors = Vec::new();
        for (field, value) in [
            ("tcp_idle_s", self.tcp_idle_s),
            ("tcp_closing_s", self.tcp_closing_s),
            ("udp_idle_s", self.udp_idle_s),
        ] {
            if !(1..=MAX_TIMEOUT_S).contains(&value) {
                errors.push(Invalid {
                    path: format!("conn_table.timeouts.{field}"),
                    reason: format!("{value} s; a timeout is 1 to {MAX_TIMEOUT_S} s"),
                });
            }
        }
        if self.tcp_closing_s > self.tcp_idle_s {
            errors.push(Invalid {
                path: "conn_table.timeouts.tcp_closing_s".into(),
                reason: format!(
                    "{} s is longer than tcp_idle_s ({} s): a closing flow would outlive an open one",
                    self.tcp_closing_s, self.tcp_idle_s
                ),
            });
        }
        errors
    }

    /// The data plane's form: [`lb_common::service::CONN_TICK_SHIFT`] ticks, rounded up.
    pub fn ticks(&self) -> lb_common::ConnTimeoutTicks {
        let ticks = |s: u32| {
            let ns = u64::from(s) * 1_000_000_000;
            u32::try_from(ns.div_ceil(1 << lb_common::service::CONN_TICK_SHIFT)).unwrap_or(u32::MAX)
        };
        lb_common::ConnTimeoutTicks {
            tcp_idle: ticks(self.tcp_idle_s),
            tcp_closing: ticks(self.tcp_closing_s),
            udp_idle: ticks(self.udp_idle_s),
        }
    }
}

impl ConnTableSpec {
    /// The unconfirmed table's size for a connection table of `entries` (the
    /// configured `entries` may be overridden by `xlb run --conn-table-entries`).
    pub fn unconfirmed(&self, entries: u32) -> u32 {
        self.unconfirmed_entries
            .unwrap_or_else(|| unconfirmed_for(entries))
    }
}

pub use crate::dataplane::unconfirmed_for;

fn default_entries() -> u32 {
    DEFAULT_ENTRIES
}

/// The problems of a `conn_table` section (empty when it is valid).
pub fn validate(spec: &ConnTableSpec) -> Vec<Invalid> {
    let mut errors: Vec<Invalid> = check_entries(spec.entries)
        .err()
        .map(|reason| Invalid {
            path: "conn_table.entries".into(),
            reason,
        })
        .into_iter()
        .collect();
    if let Some(Err(reason)) = spec.unconfirmed_entries.map(check_entries) {
        errors.push(Invalid {
            path: "conn_table.unconfirmed_entries".into(),
            reason,
        });
    }
    errors.extend(spec.timeouts.problems());
    errors
}

/// Whether `entries` is a size the table may have (shared by the config and
/// `xlb run --conn-table-entries`).
pub fn check_entries(entries: u32) -> Result<(), String> {
    if (MIN_ENTRIES..=MAX_ENTRIES).contains(&entries) {
        Ok(())
    } else {
        Err(format!(
            "{entries} entries; the connection table holds {MIN_ENTRIES} to {MAX_ENTRIES}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn absent_means_the_compiled_size() {
        assert_eq!(
            Config::parse("{}").unwrap().conn_table.entries,
            DEFAULT_ENTRIES
        );
        let c = Config::parse(r#"{"conn_table": {"entries": 4096}}"#).unwrap();
        assert_eq!(c.conn_table.entries, 4096);
    }

    #[test]
    fn the_unconfirmed_table_is_a_quarter_unless_configured() {
        let c = Config::parse("{}").unwrap().conn_table;
        assert_eq!(c.unconfirmed(DEFAULT_ENTRIES), DEFAULT_ENTRIES / 4);
        assert_eq!(c.unconfirmed(MIN_ENTRIES), MIN_ENTRIES);
        let c = Config::parse(r#"{"conn_table": {"unconfirmed_entries": 2048}}"#).unwrap();
        assert_eq!(c.conn_table.unconfirmed(DEFAULT_ENTRIES), 2048);
        let err = Config::parse(r#"{"conn_table": {"unconfirmed_entries": 10}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("conn_table.unconfirmed_entries: 10 entries"),
            "{err}"
        );
    }

    #[test]
    fn timeouts_default_validate_and_convert_to_ticks() {
        let c = Config::parse(r#"{"conn_table": {"timeouts": {"udp_idle_s": 60}}}"#).unwrap();
        let t = c.conn_table.timeouts;
        assert_eq!(
            (t.tcp_idle_s, t.tcp_closing_s, t.udp_idle_s),
            (3_600, 30, 60)
        );
        // 2^30 ns ticks, rounded up: 60 s = 55.9 ticks.
        assert_eq!(t.ticks().udp_idle, 56);
        for (text, path) in [
            (
                r#"{"udp_idle_s": 0}"#,
                "conn_table.timeouts.udp_idle_s: 0 s",
            ),
            (
                r#"{"tcp_idle_s": 10, "tcp_closing_s": 20}"#,
                "conn_table.timeouts.tcp_closing_s: 20 s is longer",
            ),
            (
                r#"{"tcp_idle_s": 604801}"#,
                "conn_table.timeouts.tcp_idle_s: 604801 s",
            ),
        ] {
            let err = Config::parse(&format!(r#"{{"conn_table": {{"timeouts": {text}}}}}"#))
                .unwrap_err()
                .to_string();
            assert!(err.contains(path), "{err}");
        }
    }

    #[test]
    fn the_lru_kind_is_shared_unless_configured() {
        assert_eq!(Config::parse("{}").unwrap().conn_table.lru, LruKind::Shared);
        let c = Config::parse(r#"{"conn_table": {"lru": "per_cpu"}}"#).unwrap();
        assert_eq!(c.conn_table.lru, LruKind::PerCpu);
        assert_eq!(c.conn_table.lru.map_flags(), LruKind::NO_COMMON_LRU);
        assert_eq!(LruKind::of_flags(LruKind::NO_COMMON_LRU), LruKind::PerCpu);
        assert_eq!(LruKind::of_flags(0), LruKind::Shared);
        let err = Config::parse(r#"{"conn_table": {"lru": "percpu"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `percpu`"), "{err}");
        assert_eq!("per-cpu".parse(), Ok(LruKind::PerCpu));
        assert!("both".parse::<LruKind>().is_err());
    }

    #[test]
    fn out_of_range_sizes_are_rejected_with_the_field_path() {
        for bad in [0, MIN_ENTRIES - 1, MAX_ENTRIES + 1] {
            let text = format!(r#"{{"conn_table": {{"entries": {bad}}}}}"#);
            let err = Config::parse(&text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("conn_table.entries: {bad} entries")),
                "{err}"
            );
        }
        let err = Config::parse(r#"{"conn_table": {"entires": 4096}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `entires`"), "{err}");
    }
}
