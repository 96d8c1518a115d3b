//! `conn_table`: the connection table's size. The kernel fixes a map's size when it is
//! created, so this takes effect when the daemon loads the data plane (a start, or a
//! restart over pins of another size, which carries the entries over); a reload that
//! changes it keeps the running table and says so.

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
}

impl Default for ConnTableSpec {
    fn default() -> Self {
        Self {
            entries: DEFAULT_ENTRIES,
        }
    }
}

fn default_entries() -> u32 {
    DEFAULT_ENTRIES
}

/// The problems of a `conn_table` section (empty when it is valid).
pub fn validate(spec: &ConnTableSpec) -> Vec<Invalid> {
    check_entries(spec.entries)
        .err()
        .map(|reason| Invalid {
            path: "conn_table.entries".into(),
            reason,
        })
        .into_iter()
        .collect()
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
