//! Reading the data plane's per-CPU counters and summing them across CPUs.

use std::path::Path;

use aya::maps::{Map, MapData, MapError, PerCpuArray};
use lb_common::{maps, Counter, Stat};

/// Global counters, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalStats {
    counters: [Counter; Stat::COUNT as usize],
}

impl GlobalStats {
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

/// Sums every slot of the stats map over all CPUs.
pub fn read_global<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<T, Counter>,
) -> Result<GlobalStats, MapError> {
    let mut out = GlobalStats::default();
    for &stat in Stat::ALL {
        let sum = &mut out.counters[stat as usize];
        for per_cpu in map.get(&(stat as u32), 0)?.iter() {
            sum.add(per_cpu);
        }
    }
    Ok(out)
}

/// Reads the stats map of a loaded object.
pub fn read_loaded(ebpf: &aya::Ebpf) -> Result<GlobalStats, MapError> {
    let map = ebpf.map(maps::STATS).ok_or(MapError::InvalidName {
        name: maps::STATS.into(),
    })?;
    read_global(&PerCpuArray::<_, Counter>::try_from(map)?)
}

/// Opens the stats map pinned in `pin_dir` (works while no daemon runs).
pub fn open_pinned(pin_dir: &Path) -> Result<PerCpuArray<MapData, Counter>, MapError> {
    let data = MapData::from_pin(pin_dir.join(maps::STATS))?;
    PerCpuArray::try_from(Map::PerCpuArray(data))
}
