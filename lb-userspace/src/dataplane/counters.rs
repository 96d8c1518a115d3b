//! The data plane's counters as the control plane reads them: summed over CPUs, with
//! `rx` derived from the verdicts.

use lb_common::{Counter, FlowCounter, Stat};

/// Global counters, summed over all CPUs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalStats {
    counters: [Counter; Stat::COUNT as usize],
}

// By hand: std derives `Default` for arrays of at most 32 elements.
impl Default for GlobalStats {
    fn default() -> Self {
        Self {
            counters: [Counter::default(); Stat::COUNT as usize],
        }
    }
}

impl GlobalStats {
    /// Counters summed over CPUs as the program writes them (`rx` untouched): `rx` is
    /// derived here, since every packet ends in exactly one verdict.
    pub fn from_sums(mut counters: [Counter; Stat::COUNT as usize]) -> Self {
        let mut rx = Counter::default();
        for verdict in Stat::VERDICTS {
            rx.add(&counters[*verdict as usize]);
        }
        counters[Stat::Rx as usize] = rx;
        Self { counters }
    }

    pub fn get(&self, stat: Stat) -> Counter {
        self.counters[stat as usize]
    }

    /// `(name, counter)` for every slot, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Counter)> + '_ {
        Stat::ALL.iter().map(|s| (s.name(), self.get(*s)))
    }

    /// JSON object keyed by counter name.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.iter()
                .map(|(name, c)| {
                    (
                        name.to_owned(),
                        serde_json::json!({ "packets": c.packets, "bytes": c.bytes }),
                    )
                })
                .collect(),
        )
    }
}

/// Counters of one service, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceStats {
    pub key: lb_common::VipKey,
    pub id: u32,
    /// The `XLB_MAGLEV` slot its entry names.
    pub table: u32,
    pub counter: FlowCounter,
}

/// Counters of one backend, summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStats {
    pub id: u32,
    pub backend: lb_common::Backend,
    pub counter: FlowCounter,
}
