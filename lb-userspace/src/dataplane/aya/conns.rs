//! The connection table outside the packet path: sized when the data plane is loaded
//! (`conn_table.entries`), resized with its entries when the pins an earlier daemon
//! left hold a table of another size, and watched: its kernel memory and how many
//! flows it holds.
//!
//! Resizing keeps established flows: the kernel cannot resize a map, so the pinned
//! table is set aside before the load (which then creates one of the configured size),
//! the old program keeps forwarding from it until this daemon's program replaces it on
//! the link, and only then are its entries copied over: entries the new program made
//! meanwhile win (`BPF_NOEXIST`). A start that fails before that puts the old table
//! back, as it was.
//!
//! A pinned table of the other LRU kind (`conn_table.lru`) is carried over the same
//! way. aya cannot create a BTF map with flags the object does not declare, so a
//! per-CPU table is created here ([`create_per_cpu`]) and pinned where the loader
//! looks, which then reuses it. Copying into a per-CPU table spreads the inserts over
//! the CPUs ([`Resize::carry_over`]): each CPU's list holds only its share of the
//! entries, and an insert goes to the list of the CPU that makes it.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use aya::{
    maps::{HashMap, Map, MapData, MapError, MapInfo},
    Ebpf,
};
use aya_obj::{
    generated::bpf_map_type,
    maps::{bpf_map_def, LegacyMap, PinningType},
    EbpfSectionKind,
};
use lb_common::{
    maps,
    service::{expired, CONN_TICK_SHIFT},
    Config, Conn, FlowKey,
};

use super::maps::MapsError;
use crate::dataplane::LruKind;

/// `bpf_map_update_elem` flag: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// A pinned connection table of another size or LRU kind, set aside for this load.
#[derive(Debug)]
pub struct Resize {
    pin: PathBuf,
    aside: PathBuf,
    from: (u32, LruKind),
    to: (u32, LruKind),
    done: bool,
}

/// The LRU kind of the map `info` describes.
pub fn kind_of(info: &MapInfo) -> LruKind {
    LruKind::of_flags(info.map_flags())
}

/// Sets the pinned table aside if its size is not `entries` or its kind not `kind`
/// (before the loader opens the pins). `None` when there is nothing pinned or it
/// already is what is configured.
pub fn set_aside_if_resized(
    pin_dir: &Path,
    entries: u32,
    kind: LruKind,
) -> std::io::Result<Option<Resize>> {
    let pin = pin_dir.join(maps::CONNS);
    let Ok(info) = MapInfo::from_pin(&pin) else {
        return Ok(None);
    };
    let from = (info.max_entries(), kind_of(&info));
    if from == (entries, kind) {
        return Ok(None);
    }
    let aside = pin_dir.join(format!("{}_RESIZING", maps::CONNS));
    move_pin(&pin, &aside)?;
    Ok(Some(Resize {
        pin,
        aside,
        from,
        to: (entries, kind),
        done: false,
    }))
}

/// Creates an LRU hash of flows with per-CPU LRU lists (`BPF_F_NO_COMMON_LRU`), named
/// `name` and sized `entries`, and pins it at `pin`, so that the loader (given that
/// pin path) takes it for the object's map of that name. Key, value and type are the
/// object's; it carries no BTF (bpftool prints it in hex), which the program does not
/// need.
pub fn create_per_cpu(pin: &Path, name: &str, entries: u32) -> Result<MapData, MapError> {
    let def = bpf_map_def {
        map_type: bpf_map_type::BPF_MAP_TYPE_LRU_HASH as u32,
        key_size: size_of::<FlowKey>() as u32,
        value_size: size_of::<Conn>() as u32,
        max_entries: entries,
        map_flags: LruKind::PerCpu.map_flags(),
        id: 0,
        pinning: PinningType::None,
    };
    let obj = aya_obj::Map::Legacy(LegacyMap {
        def,
        inner_def: None,
        section_index: 0,
        section_kind: EbpfSectionKind::Maps,
        symbol_index: None,
        data: Vec::new(),
    });
    let map = MapData::create(obj, name, None)?;
    map.pin(pin).map_err(|error| MapError::PinError {
        name: Some(name.into()),
        error,
    })?;
    Ok(map)
}

impl Resize {
    /// The set-aside table's size.
    pub fn from(&self) -> u32 {
        self.from.0
    }

    /// Copies every entry of the set-aside table into `ebpf`'s (the one now pinned),
    /// keeping entries already there, then drops the old table. Returns how many
    /// entries were copied. A table smaller than the old one keeps the most recently
    /// copied ones (the LRU evicts as it fills). Into a per-CPU table the entries are
    /// inserted from every CPU this process may run on in turn, a share each: from one
    /// CPU they would all land in its list, which holds only its share of the table.
    pub fn carry_over(mut self, ebpf: &mut Ebpf) -> Result<usize, MapsError> {
        let map_err = |source| MapsError::Map {
            name: maps::CONNS,
            source,
        };
        let old = MapData::from_pin(&self.aside).map_err(map_err)?;
        let old: HashMap<MapData, FlowKey, Conn> =
            HashMap::try_from(Map::LruHashMap(old)).map_err(map_err)?;
        let entries: Vec<(FlowKey, Conn)> = old.iter().filter_map(Result::ok).collect();
        let cpus = match self.to.1 {
            LruKind::Shared => Vec::new(),
            LruKind::PerCpu => allowed_cpus(),
        };
        let copied = if cpus.len() < 2 {
            let mut new: HashMap<&mut MapData, FlowKey, Conn> = HashMap::try_from(
                ebpf.map_mut(maps::CONNS)
                    .ok_or(MapsError::Missing(maps::CONNS))?,
            )
            .map_err(map_err)?;
            copy_into(&mut new, &entries).map_err(map_err)?
        } else {
            let share = entries.len().div_ceil(cpus.len()).max(1);
            let pin = &self.pin;
            std::thread::scope(|scope| {
                let workers: Vec<_> = entries
                    .chunks(share)
                    .zip(&cpus)
                    .map(|(chunk, &cpu)| {
                        scope.spawn(move || -> Result<usize, MapError> {
                            let mut set = nix::sched::CpuSet::new();
                            // An unpinned copy still copies, only less evenly.
                            if set.set(cpu).is_ok() {
                                let _ = nix::sched::sched_setaffinity(
                                    nix::unistd::Pid::from_raw(0),
                                    &set,
                                );
                            }
                            let data = MapData::from_pin(pin)?;
                            let mut new: HashMap<MapData, FlowKey, Conn> =
                                HashMap::try_from(Map::LruHashMap(data))?;
                            copy_into(&mut new, chunk)
                        })
                    })
                    .collect();
                workers.into_iter().try_fold(0, |sum, w| {
                    let copied = w.join().map_err(|_| {
                        MapError::IoError(std::io::Error::other("carry-over thread panicked"))
                    })?;
                    Ok(sum + copied?)
                })
            })
            .map_err(map_err)?
        };
        self.done = true;
        let _ = std::fs::remove_file(&self.aside);
        tracing::info!(
            from = self.from.0,
            to = self.to.0,
            from_lru = self.from.1.as_str(),
            to_lru = self.to.1.as_str(),
            copied,
            "connection table resized; established flows carried over"
        );
        Ok(copied)
    }
}

/// Inserts `entries` absent from `table`; returns how many it inserted.
fn copy_into<T: std::borrow::BorrowMut<MapData>>(
    table: &mut HashMap<T, FlowKey, Conn>,
    entries: &[(FlowKey, Conn)],
) -> Result<usize, MapError> {
    let mut copied = 0;
    for (key, conn) in entries {
        match table.insert(key, conn, BPF_NOEXIST) {
            Ok(()) => copied += 1,
            // The new program already has this flow: its entry is the newer one.
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(copied)
}

/// The CPUs this process may run on (none if that cannot be read).
fn allowed_cpus() -> Vec<usize> {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Resize {
    /// A start that ends before the carry-over puts the old table back under its pin,
    /// for the program still forwarding from it and for the next start.
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = move_pin(&self.aside, &self.pin) {
                tracing::error!(
                    aside = %self.aside.display(), error = %e,
                    "could not put the connection table back under its pin"
                );
            }
        }
    }
}

/// Moves the map pinned at `from` to `to` (replacing whatever is pinned there). bpffs
/// has no rename (and no dots in names): the map is pinned again under the new name,
/// then the old pin goes.
fn move_pin(from: &Path, to: &Path) -> std::io::Result<()> {
    let map = MapData::from_pin(from).map_err(std::io::Error::other)?;
    match std::fs::remove_file(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    map.pin(to).map_err(std::io::Error::other)?;
    std::fs::remove_file(from)
}

/// Kernel memory charged to the map behind `fd` (`memlock:` of its fdinfo).
pub fn memory_bytes(fd: std::os::fd::BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
}

/// How many flows the table held at the last count, counted off the daemon's loop, and
/// the expired entries it removed.
///
/// The kernel keeps no element count an LRU hash reports, so a thread walks the entries
/// (about 0.5 µs each): every 5 s, or 20 × as long as the last walk took, so a huge
/// table costs at most 5 % of a core. A walk of a table changing under it is an
/// estimate, which is what a fill level is for. The same walk deletes entries past
/// their timeout (`conn_table.timeouts`, read from the pinned `XLB_CONFIG`): the data
/// plane already ignores them, and deleting them gives their room to live flows
/// before the LRU would have to evict one.
#[derive(Debug)]
pub struct FillCounter {
    stop: Arc<AtomicBool>,
    fill: Arc<Fill>,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Fill {
    /// Flows + 1 at the last count (0: not counted yet).
    flows_plus_one: AtomicU64,
    /// Milliseconds after the counter's epoch at the last count.
    at_ms: AtomicU64,
    /// Expired entries deleted so far.
    expired: AtomicU64,
}

/// The last count: flows and how long ago it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillCount {
    pub flows: u64,
    pub age: Duration,
    /// Expired entries the walks deleted, since the daemon started.
    pub expired: u64,
}

const MIN_PAUSE: Duration = Duration::from_secs(5);

impl FillCounter {
    /// Starts counting the table pinned in `pin_dir` (the thread stops with the
    /// counter).
    pub fn start(pin_dir: &Path) -> FillCounter {
        let counter = FillCounter {
            stop: Arc::new(AtomicBool::new(false)),
            fill: Arc::new(Fill::default()),
            epoch: Instant::now(),
        };
        let (stop, fill, epoch) = (counter.stop.clone(), counter.fill.clone(), counter.epoch);
        let (pin, config) = (pin_dir.join(maps::CONNS), pin_dir.join(maps::CONFIG));
        let spawned = std::thread::Builder::new()
            .name("xlb-conn-count".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    // Not pinned (yet, or any more): look again later.
                    if let Some((flows, expired)) = sweep(&pin, &config) {
                        fill.expired.fetch_add(expired, Ordering::Relaxed);
                        fill.flows_plus_one.store(flows + 1, Ordering::Relaxed);
                        fill.at_ms
                            .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    }
                    pause(&stop, MIN_PAUSE.max(started.elapsed() * 20));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no connection-table fill level: cannot start its thread");
        }
        counter
    }

    /// The last count, if one finished.
    pub fn last(&self) -> Option<FillCount> {
        let flows = self
            .fill
            .flows_plus_one
            .load(Ordering::Relaxed)
            .checked_sub(1)?;
        let at = Duration::from_millis(self.fill.at_ms.load(Ordering::Relaxed));
        Some(FillCount {
            flows,
            age: self.epoch.elapsed().saturating_sub(at),
            expired: self.fill.expired.load(Ordering::Relaxed),
        })
    }
}

impl Drop for FillCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Walks the table pinned at `pin`: deletes the entries expired by the timeouts in the
/// `XLB_CONFIG` pinned at `config` and returns (live entries, deleted); `None` if the
/// table cannot be opened. Without a readable config nothing expires.
fn sweep(pin: &Path, config: &Path) -> Option<(u64, u64)> {
    let data = MapData::from_pin(pin).ok()?;
    let mut table: HashMap<MapData, FlowKey, Conn> =
        HashMap::try_from(Map::LruHashMap(data)).ok()?;
    let timeouts = MapData::from_pin(config)
        .ok()
        .and_then(|data| aya::maps::Array::<MapData, Config>::try_from(Map::Array(data)).ok())
        .and_then(|array| array.get(&0, 0).ok())
        .map(|c| c.timeouts)
        .unwrap_or_default();
    let now = now_ticks();
    let stale = |key: &FlowKey, conn: &Conn| {
        expired(conn.seen, now, timeouts.for_entry(key.proto, conn.flags))
    };
    let (mut live, mut gone) = (0, Vec::new());
    for (key, conn) in table.iter().filter_map(Result::ok) {
        if stale(&key, &conn) {
            gone.push(key);
        } else {
            live += 1;
        }
    }
    let mut deleted = 0;
    for key in gone {
        // Read again right before: a packet since the walk refreshed it (it lives on).
        if table.get(&key, 0).is_ok_and(|conn| stale(&key, &conn)) && table.remove(&key).is_ok() {
            deleted += 1;
        } else {
            live += 1;
        }
    }
    Some((live, deleted))
}

/// Now on the data plane's clock (`bpf_ktime_get_coarse_ns` is CLOCK_MONOTONIC_COARSE),
/// in its ticks.
pub fn now_ticks() -> u32 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the kernel to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) };
    let ns = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
    (ns >> CONN_TICK_SHIFT) as u32
}

/// Sleeps `total`, waking every 100 ms to see whether to stop.
fn pause(stop: &AtomicBool, total: Duration) {
    let until = Instant::now() + total;
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100).min(until - Instant::now()));
    }
}
