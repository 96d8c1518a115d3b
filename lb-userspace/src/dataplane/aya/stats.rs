//! Reading the data plane's per-CPU counters and summing them across CPUs.

use std::{borrow::Borrow, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use lb_common::{maps, Counter, FlowCounter, Stat};

pub use crate::dataplane::counters::{BackendStats, GlobalStats, ServiceStats};

/// Sums every slot of the stats map over all CPUs.
pub fn read_global<T: Borrow<MapData>>(
    map: &PerCpuArray<T, Counter>,
) -> Result<GlobalStats, MapError> {
    let mut sums = [Counter::default(); Stat::COUNT as usize];
    for &stat in Stat::ALL {
        for per_cpu in map.get(&(stat as u32), 0)?.iter() {
            sums[stat as usize].add(per_cpu);
        }
    }
    // The programs leave `rx` alone (one counter update less per packet).
    Ok(GlobalStats::from_sums(sums))
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

fn sum_flow<T: Borrow<MapData>>(
    map: &PerCpuArray<T, FlowCounter>,
    id: u32,
) -> Result<FlowCounter, MapError> {
    let mut sum = FlowCounter::default();
    for c in map.get(&id, 0)?.iter() {
        sum.add(c);
    }
    Ok(sum)
}

/// Every configured service with its counters (from `XLB_SERVICES` and
/// `XLB_SERVICE_STATS`), sorted by id.
pub fn read_services<A: Borrow<MapData>, B: Borrow<MapData>>(
    services: &HashMap<A, lb_common::VipKey, lb_common::Service>,
    stats: &PerCpuArray<B, FlowCounter>,
) -> Result<Vec<ServiceStats>, MapError> {
    let mut out = Vec::new();
    for entry in services.iter() {
        let (key, svc) = entry?;
        out.push(ServiceStats {
            key,
            id: svc.id,
            table: svc.table_slot(),
            counter: sum_flow(stats, svc.id)?,
        });
    }
    out.sort_by_key(|s| s.id);
    Ok(out)
}

/// Every live backend with its counters (from `XLB_BACKENDS` and `XLB_BACKEND_STATS`).
pub fn read_backends<A: Borrow<MapData>, B: Borrow<MapData>>(
    backends: &Array<A, lb_common::Backend>,
    stats: &PerCpuArray<B, FlowCounter>,
) -> Result<Vec<BackendStats>, MapError> {
    let mut out = Vec::new();
    for (id, backend) in (0u32..).zip(backends.iter()) {
        let backend = backend?;
        if id == 0 || backend.family == 0 {
            continue;
        }
        out.push(BackendStats {
            id,
            backend,
            counter: sum_flow(stats, id)?,
        });
    }
    Ok(out)
}

/// Opens a map pinned as `<pin_dir>/<name>`.
pub fn open_pinned_map(pin_dir: &Path, name: &str) -> Result<MapData, MapError> {
    MapData::from_pin(pin_dir.join(name))
}

/// Per-service and per-backend counters from the pins in `pin_dir`.
pub fn read_pinned_flows(
    pin_dir: &Path,
) -> Result<(Vec<ServiceStats>, Vec<BackendStats>), MapError> {
    let services = HashMap::try_from(Map::HashMap(open_pinned_map(pin_dir, maps::SERVICES)?))?;
    let service_stats = PerCpuArray::try_from(Map::PerCpuArray(open_pinned_map(
        pin_dir,
        maps::SERVICE_STATS,
    )?))?;
    let backends = Array::try_from(Map::Array(open_pinned_map(pin_dir, maps::BACKENDS)?))?;
    let backend_stats = PerCpuArray::try_from(Map::PerCpuArray(open_pinned_map(
        pin_dir,
        maps::BACKEND_STATS,
    )?))?;
    Ok((
        read_services(&services, &service_stats)?,
        read_backends(&backends, &backend_stats)?,
    ))
}

/// Per-service and per-backend counters of a loaded object.
pub fn read_loaded_flows(
    ebpf: &aya::Ebpf,
) -> Result<(Vec<ServiceStats>, Vec<BackendStats>), MapError> {
    let get = |name: &str| {
        ebpf.map(name)
            .ok_or(MapError::InvalidName { name: name.into() })
    };
    let services = HashMap::try_from(get(maps::SERVICES)?)?;
    let service_stats = PerCpuArray::try_from(get(maps::SERVICE_STATS)?)?;
    let backends = Array::try_from(get(maps::BACKENDS)?)?;
    let backend_stats = PerCpuArray::try_from(get(maps::BACKEND_STATS)?)?;
    Ok((
        read_services(&services, &service_stats)?,
        read_backends(&backends, &backend_stats)?,
    ))
}
