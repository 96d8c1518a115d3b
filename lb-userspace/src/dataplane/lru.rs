//! How the connection tables are sized and listed: what the loader needs to create
//! them, kept here so the data plane does not depend on the configuration layer.

use serde::{Deserialize, Serialize};

/// The eviction lists of the connection tables (both LRU hashes: one hash either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LruKind {
    /// One LRU list shared by all CPUs (the kernel's default for an LRU hash): the
    /// table evicts its least recently used flows whichever CPU saw them. The default:
    /// never slower than `per_cpu` on two CPUs, for established or new flows (`cargo
    /// xtask bench lru`, docs/maps.md), and its capacity does not depend on how evenly
    /// flows spread over CPUs.
    #[default]
    Shared,
    /// `BPF_F_NO_COMMON_LRU`: a list per possible CPU, each with `entries / CPUs` of
    /// the elements; an insert never takes another CPU's lock.
    PerCpu,
}

impl LruKind {
    /// `BPF_F_NO_COMMON_LRU` (include/uapi/linux/bpf.h).
    pub const NO_COMMON_LRU: u32 = 1 << 1;

    /// The map flags a table of this kind is created with.
    pub fn map_flags(self) -> u32 {
        match self {
            Self::Shared => 0,
            Self::PerCpu => Self::NO_COMMON_LRU,
        }
    }

    /// The kind of a map created with `flags`.
    pub fn of_flags(flags: u32) -> Self {
        if flags & Self::NO_COMMON_LRU != 0 {
            Self::PerCpu
        } else {
            Self::Shared
        }
    }

    /// The config's spelling (`shared`, `per_cpu`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::PerCpu => "per_cpu",
        }
    }
}

impl std::str::FromStr for LruKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "shared" => Ok(Self::Shared),
            "per_cpu" | "per-cpu" => Ok(Self::PerCpu),
            other => Err(format!(
                "{other:?}: the connection table's LRU is \"shared\" or \"per_cpu\""
            )),
        }
    }
}

/// The default unconfirmed-table size: a quarter of the connection table (65,536 for
/// the default 262,144: one second of 65,000 new flows per second with a 1 s RTT), at
/// least `config::conn_table::MIN_ENTRIES`.
pub fn unconfirmed_for(entries: u32) -> u32 {
    (entries / 4).max(1_024)
}
