//! Loading the data plane: create (or reuse) the pinned maps, verify the programs, attach
//! them to interfaces and pin the XDP links so operators and restarts can find them.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::{
    maps::MapInfo,
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        ProgramError, Xdp, XdpMode,
    },
    Ebpf, EbpfError, EbpfLoader,
};
use aya_obj::generated::bpf_map_type;
use lb_common::{maps, programs};

use super::{
    bpffs::{self, BpffsError},
    conns::{self, FillCounter, Resize},
    maps::MapsError,
};
use crate::dataplane::{AttachMode, AttachedMode, Attachment, LruKind};

/// Every map the control plane pins, by name. Internal maps (.rodata, aya-log's ring
/// buffer) are left out: they belong to one program instance.
pub const PINNED_MAPS: &[&str] = &[
    maps::STATS,
    maps::SERVICES,
    maps::SERVICE_SLOTS,
    maps::VIP_FILTER,
    maps::VIPS,
    maps::BACKENDS,
    maps::MAGLEV,
    maps::CONNS,
    maps::CONFIG,
    maps::SERVICE_STATS,
    maps::BACKEND_STATS,
    maps::TX_PORTS,
    maps::TX_MACS,
    maps::VRRP_ROUTERS,
    maps::VRRP_SEEN,
    maps::DECAP_ALLOW,
    maps::DECAP_LENS,
    // Pinned so the tagged copies stay installed for an `xlb` left attached by a daemon
    // that died (the kernel empties a program array when its last holder closes it).
    maps::TAGGED,
];

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Bpffs(#[from] BpffsError),
    #[error("loading the eBPF object")]
    Object(#[source] Box<EbpfError>),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("no interface named {0} in this network namespace")]
    NoSuchInterface(String),
    #[error("attaching {program} to {iface} in {mode:?} mode")]
    Attach {
        program: &'static str,
        iface: String,
        mode: AttachMode,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("XDP link on {iface} cannot be pinned (needs bpf_link support, kernel >= 5.9)")]
    Link {
        iface: String,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("installing {program} in {map} for tail calls")]
    TailCall {
        program: &'static str,
        map: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("parsing the embedded eBPF object")]
    Parse(#[source] Box<aya_obj::ParseError>),
    #[error(
        "pin directory {} is in use by another xlb{}: one daemon owns a pin directory (stop \
         that one first, or give this one another --pin-dir)",
        pin_dir.display(),
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Busy {
        pin_dir: PathBuf,
        holder: Option<u32>,
    },
    #[error("pinning {what} at {path}")]
    Pin {
        what: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Load-time options.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Directory under bpffs where maps and links are pinned.
    pub pin_dir: PathBuf,
    /// Highest aya-log level the data plane emits; lower levels are removed by the
    /// verifier at load time and cost nothing per packet.
    /// `None` compiles every log statement out.
    pub ebpf_log_level: Option<aya_log::Level>,
    /// Connection-table entries (`conn_table.entries`); `None`: the object's size.
    pub conn_entries: Option<u32>,
    /// Unconfirmed-flow entries (`conn_table.unconfirmed_entries`); `None`: derived
    /// from `conn_entries` (`dataplane::unconfirmed_for`).
    pub unconfirmed_entries: Option<u32>,
    /// How both connection tables evict (`conn_table.lru`); a pinned table of the
    /// other kind is carried over like one of another size.
    pub conn_lru: LruKind,
}

/// The loaded kernel data plane: the eBPF object with its programs verified and maps
/// pinned. Implements [`crate::dataplane::DataPlane`] (in `super`).
pub struct AyaPort {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    /// Maps pinned by an earlier daemon were taken over: on a failed start they (and
    /// the link) must stay, since they may still be forwarding.
    adopted: bool,
    /// The pin directory's exclusive lock, held for this port's lifetime.
    lock: PinLock,
    /// A pinned connection table of another size, set aside until its entries are
    /// carried over ([`AyaPort::carry_over_conns`]).
    resize: Option<Resize>,
    fill: FillCounter,
}

impl AyaPort {
    /// Loads the embedded object, reusing maps already pinned in `opts.pin_dir`
    /// (so counters and, later, connection state survive a daemon restart).
    pub fn load(opts: &LoadOptions) -> Result<Self, LoadError> {
        Self::load_locked(opts, PinLock::acquire(&opts.pin_dir)?)
    }

    /// [`AyaPort::load`] with the pin directory's lock already taken (a daemon takes it
    /// first, before it binds its sockets).
    pub fn load_locked(opts: &LoadOptions, lock: PinLock) -> Result<Self, LoadError> {
        retire_incompatible_pins(&opts.pin_dir)?;
        // The object declares the table with `MAX_CONNS` entries (lb-ebpf maps.rs).
        let entries = opts.conn_entries.unwrap_or(lb_common::limits::MAX_CONNS);
        // Dropped on any failure below, which puts the old table back.
        let resize = conns::set_aside_if_resized(&opts.pin_dir, entries, opts.conn_lru).map_err(
            |source| LoadError::Pin {
                what: "connection table (set aside to resize it)".into(),
                path: opts.pin_dir.join(maps::CONNS),
                source,
            },
        )?;
        let mut loader = EbpfLoader::new();
        loader.map_max_entries(maps::CONNS, entries);
        let unconfirmed = opts
            .unconfirmed_entries
            .unwrap_or_else(|| crate::dataplane::unconfirmed_for(entries));
        loader.map_max_entries(maps::CONNS_NEW, unconfirmed);
        let pin_paths: Vec<(&str, PathBuf)> = PINNED_MAPS
            .iter()
            .map(|name| (*name, opts.pin_dir.join(name)))
            .collect();
        let adopted = pin_paths.iter().any(|(_, path)| path.exists());
        for (name, path) in &pin_paths {
            loader.map_pin_path(name, path.as_path());
        }
        // Only pinned for the load (each daemon starts its own unconfirmed table).
        let new_pin = opts.pin_dir.join(maps::CONNS_NEW);
        remove_pin(&new_pin)?;
        let _unpin_new = UnpinOnDrop(&new_pin);
        if opts.conn_lru == LruKind::PerCpu {
            let conns_pin = opts.pin_dir.join(maps::CONNS);
            if !conns_pin.exists() {
                create_per_cpu(&conns_pin, maps::CONNS, entries)?;
            }
            create_per_cpu(&new_pin, maps::CONNS_NEW, unconfirmed)?;
            loader.map_pin_path(maps::CONNS_NEW, new_pin.as_path());
        }
        let level = opts.ebpf_log_level.map_or(0, |l| l as u8);
        loader.override_global(aya_log::LEVEL, &level, true);
        let ebpf = loader
            .load(super::EBPF_OBJECT)
            .map_err(|e| LoadError::Object(Box::new(e)))?;
        let mut dp = Self {
            ebpf,
            pin_dir: opts.pin_dir.clone(),
            adopted,
            lock,
            resize,
            fill: FillCounter::start(&opts.pin_dir),
        };
        for name in [
            programs::BALANCER,
            programs::BALANCER_VLAN,
            programs::BALANCER_QINQ,
            programs::PASS,
            programs::DECAP,
        ] {
            dp.xdp(name)?.load().map_err(|e| program_err(name, e))?;
        }
        dp.install_tagged()?;
        Ok(dp)
    }

    /// Puts this load's tagged-frame copies of the balancer into `XLB_TAGGED`, where
    /// `xlb` tail-calls them (docs/vlans.md). An adopted array held the last daemon's:
    /// each slot is replaced in one update, so a tagged frame meets one copy or the other.
    fn install_tagged(&mut self) -> Result<(), LoadError> {
        for (slot, program) in [
            (
                lb_common::service::TAGGED_SLOT_VLAN,
                programs::BALANCER_VLAN,
            ),
            (
                lb_common::service::TAGGED_SLOT_QINQ,
                programs::BALANCER_QINQ,
            ),
        ] {
            let err = |source: Box<dyn std::error::Error + Send + Sync>| LoadError::TailCall {
                program,
                map: maps::TAGGED,
                source,
            };
            let fd = self
                .xdp(program)?
                .fd()
                .map_err(|e| err(Box::new(e)))?
                .try_clone()
                .map_err(|e| err(Box::new(e)))?;
            let map = self
                .ebpf
                .map_mut(maps::TAGGED)
                .ok_or_else(|| err("the map is missing from the eBPF object".into()))?;
            let mut array = aya::maps::ProgramArray::try_from(map).map_err(|e| err(Box::new(e)))?;
            array.set(slot, &fd, 0).map_err(|e| err(Box::new(e)))?;
        }
        Ok(())
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Finishes a resize of the connection table begun at load: copies the old table's
    /// entries into the new one. Call it once this port's program is attached (until
    /// then the old program forwards from the old table, and its entries keep coming).
    /// Returns the old size and the entries copied, `None` if nothing was resized.
    pub fn carry_over_conns(&mut self) -> Result<Option<(u32, usize)>, MapsError> {
        let Some(resize) = self.resize.take() else {
            return Ok(None);
        };
        let from = resize.from();
        Ok(Some((from, resize.carry_over(&mut self.ebpf)?)))
    }

    /// The connection table's size, LRU kind, kernel memory and last counted fill.
    pub fn conn_table(&self) -> Result<crate::dataplane::ConnTableUse, MapsError> {
        use std::os::fd::AsFd as _;
        let table = |name: &'static str| match self.ebpf.map(name) {
            Some(aya::maps::Map::LruHashMap(data)) => data
                .info()
                .map(|info| {
                    (
                        info.max_entries(),
                        conns::kind_of(&info),
                        conns::memory_bytes(data.fd().as_fd()),
                    )
                })
                .map_err(|source| MapsError::Map { name, source }),
            _ => Err(MapsError::Missing(name)),
        };
        let (capacity, lru, memory_bytes) = table(maps::CONNS)?;
        let (unconfirmed_capacity, _, unconfirmed_memory_bytes) = table(maps::CONNS_NEW)?;
        let fill = self.fill.last();
        Ok(crate::dataplane::ConnTableUse {
            capacity,
            lru,
            memory_bytes,
            flows: fill.map(|f| f.flows),
            counted_age: fill.map(|f| f.age),
            expired: fill.map(|f| f.expired),
            unconfirmed_capacity,
            unconfirmed_memory_bytes,
        })
    }

    /// Whether the pins outlive this process (bpffs as found at load).
    pub fn persistence(&self) -> &bpffs::Persistence {
        &self.lock.persistence
    }

    /// Whether this load took over maps an earlier daemon pinned.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// The named XDP program (already loaded).
    pub fn xdp(&mut self, name: &'static str) -> Result<&mut Xdp, LoadError> {
        let prog = self
            .ebpf
            .program_mut(name)
            .ok_or(LoadError::MissingProgram(name))?;
        prog.try_into().map_err(|e| program_err(name, e))
    }

    /// Attaches `program` to `iface` and pins the link as `<pin_dir>/link_<iface>`.
    ///
    /// A link left pinned by an earlier run (a restart, or a crash) is adopted: the new
    /// program replaces the old one on the live link in one `bpf_link_update`, so
    /// traffic never sees the interface without XDP. If adoption fails the stale link is
    /// replaced, so a crashed daemon never blocks a new one.
    pub fn attach(
        &mut self,
        program: &'static str,
        iface: &str,
        mode: AttachMode,
    ) -> Result<Attachment, LoadError> {
        // Fail on a typo here rather than "falling back" to generic mode on it.
        if nix::net::if_::if_nametoindex(iface).is_err() {
            return Err(LoadError::NoSuchInterface(iface.to_owned()));
        }
        let pin_path = self.pin_dir.join(format!("link_{iface}"));
        if pin_path.exists() {
            match self.adopt_link(program, iface, &pin_path) {
                Ok(attachment) => return Ok(attachment),
                Err(e) => {
                    tracing::warn!(
                        path = %pin_path.display(), error = %e,
                        "cannot adopt the pinned XDP link; replacing it"
                    );
                    remove_pin(&pin_path)?;
                }
            }
        }
        let xdp = self.xdp(program)?;
        let (link_id, used) = match mode {
            AttachMode::Native => (
                try_attach(xdp, program, iface, mode, XdpMode::Driver)?,
                XdpMode::Driver,
            ),
            AttachMode::Generic => (
                try_attach(xdp, program, iface, mode, XdpMode::Skb)?,
                XdpMode::Skb,
            ),
            AttachMode::Auto => match xdp.attach(iface, XdpMode::Driver) {
                Ok(id) => (id, XdpMode::Driver),
                Err(err) => {
                    tracing::warn!(
                        %iface, error = %err,
                        "native XDP not available on this interface; falling back to generic \
                         (skb) mode, which is slower. Use --xdp-mode native to make this an error."
                    );
                    (
                        try_attach(xdp, program, iface, mode, XdpMode::Skb)?,
                        XdpMode::Skb,
                    )
                }
            },
        };
        let link = xdp
            .take_link(link_id)
            .map_err(|e| program_err(program, e))?;
        let fd_link: FdLink = link.try_into().map_err(|source| LoadError::Link {
            iface: iface.to_owned(),
            source,
        })?;
        fd_link.pin(&pin_path).map_err(|e| LoadError::Pin {
            what: format!("XDP link of {iface}"),
            path: pin_path.clone(),
            source: io::Error::other(e),
        })?;
        Ok(Attachment {
            iface: iface.to_owned(),
            program,
            mode: if used == XdpMode::Skb {
                AttachedMode::Generic
            } else {
                AttachedMode::Native
            },
            pin_path,
            adopted: false,
        })
    }

    /// Puts `program` on the link pinned at `pin_path` (atomic program replacement) and
    /// pins the link again under the same name.
    fn adopt_link(
        &mut self,
        program: &'static str,
        iface: &str,
        pin_path: &Path,
    ) -> Result<Attachment, LoadError> {
        let link_err = |source| LoadError::Link {
            iface: iface.to_owned(),
            source,
        };
        let pinned = PinnedLink::from_pin(pin_path).map_err(link_err)?;
        let old = XdpLink::try_from(FdLink::from(pinned)).map_err(link_err)?;
        let xdp = self.xdp(program)?;
        let id = xdp
            .attach_to_link(old)
            .map_err(|e| program_err(program, e))?;
        let link = xdp.take_link(id).map_err(|e| program_err(program, e))?;
        let fd_link = FdLink::try_from(link).map_err(link_err)?;
        // We hold the link's fd, so it survives the moment between unpin and re-pin.
        remove_pin(pin_path)?;
        fd_link.pin(pin_path).map_err(|e| LoadError::Pin {
            what: format!("XDP link of {iface}"),
            path: pin_path.to_path_buf(),
            source: io::Error::other(e),
        })?;
        Ok(Attachment {
            iface: iface.to_owned(),
            program,
            mode: AttachedMode::Adopted,
            pin_path: pin_path.to_path_buf(),
            adopted: true,
        })
    }
}

fn try_attach(
    xdp: &mut Xdp,
    program: &'static str,
    iface: &str,
    requested: AttachMode,
    mode: XdpMode,
) -> Result<aya::programs::xdp::XdpLinkId, LoadError> {
    xdp.attach(iface, mode).map_err(|source| LoadError::Attach {
        program,
        iface: iface.to_owned(),
        mode: requested,
        source: Box::new(source),
    })
}

/// [`conns::create_per_cpu`] as a load error.
fn create_per_cpu(pin: &Path, name: &'static str, entries: u32) -> Result<(), LoadError> {
    conns::create_per_cpu(pin, name, entries)
        .map(drop)
        .map_err(|e| LoadError::Pin {
            what: format!("{name} (created with per-CPU LRU lists)"),
            path: pin.to_path_buf(),
            source: io::Error::other(e),
        })
}

/// Removes a pin when dropped (a pin that only serves one load).
struct UnpinOnDrop<'a>(&'a Path);

impl Drop for UnpinOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

fn program_err(name: &'static str, source: ProgramError) -> LoadError {
    LoadError::Program {
        name,
        source: Box::new(source),
    }
}

/// A pinned map left by an xlb whose map layout differs from this build's (an upgrade
/// across a change of a map's type, key, value or flags) is unpinned before the load:
/// the loader would otherwise reuse it, and the program would fail verification
/// against it (or, worse, misread it). The new map starts empty; what that loses is
/// logged per map (for `XLB_CONNS`, established flows pick their backend again by
/// Maglev: the same one unless the table changed). A different `max_entries` is not a
/// layout change, nor is the connection table's LRU kind (`BPF_F_NO_COMMON_LRU`): the
/// table is resized or changed with its entries at load ([`conns`]), other maps keep
/// their size. Returns the names of the maps replaced.
pub fn retire_incompatible_pins(pin_dir: &Path) -> Result<Vec<&'static str>, LoadError> {
    let obj =
        aya_obj::Object::parse(super::EBPF_OBJECT).map_err(|e| LoadError::Parse(Box::new(e)))?;
    let mut replaced = Vec::new();
    for &name in PINNED_MAPS {
        let path = pin_dir.join(name);
        let (Some(want), Ok(pinned)) = (obj.maps.get(name), MapInfo::from_pin(&path)) else {
            continue;
        };
        let have = (
            pinned.map_type().map_or(u32::MAX, |t| t as u32),
            pinned.key_size(),
            pinned.value_size(),
            pinned.map_flags(),
        );
        // aya sizes a devmap's values and sets BPF_F_RDONLY_PROG on it at load time,
        // depending on the kernel: the object says nothing about those two there.
        let devmap = want.map_type() == bpf_map_type::BPF_MAP_TYPE_DEVMAP as u32;
        // The connection table's LRU kind is configured, not declared: a table of the
        // other kind is carried over like one of another size (`conns`).
        let lru_kind = if name == maps::CONNS {
            have.3 & LruKind::NO_COMMON_LRU
        } else {
            0
        };
        let need = (
            want.map_type(),
            want.key_size(),
            if devmap { have.2 } else { want.value_size() },
            if devmap {
                have.3
            } else {
                want.map_flags() | lru_kind
            },
        );
        // Sizes are kept (a resized table keeps its entries), except an XLB_MAGLEV
        // too small for the second table slot of every service and an XLB_STATS with
        // fewer slots than this build's counters (the new reasons would go uncounted).
        let too_small =
            matches!(name, maps::MAGLEV | maps::STATS) && pinned.max_entries() < want.max_entries();
        if have == need && !too_small {
            continue;
        }
        tracing::warn!(
            map = name,
            pinned = ?have,
            needed = ?need,
            "pinned map has another layout (type, key size, value size, flags): replacing \
             it with an empty one; {}",
            what_is_lost(name)
        );
        remove_pin(&path)?;
        replaced.push(name);
    }
    // Connection entries name their service by slot generation and their backend by
    // id: entries outliving the slots they were written against could match a
    // restarted generation count, and an emptied backend array hands their ids to
    // other backends (the new daemon adopts no ids from it).
    let conns = pin_dir.join(maps::CONNS);
    let referred = replaced.contains(&maps::SERVICE_SLOTS) || replaced.contains(&maps::BACKENDS);
    if referred && !replaced.contains(&maps::CONNS) && conns.exists() {
        tracing::warn!(
            map = maps::CONNS,
            "replacing the connection table with the service slots or backends it refers to; {}",
            what_is_lost(maps::CONNS)
        );
        remove_pin(&conns)?;
        replaced.push(maps::CONNS);
    }
    Ok(replaced)
}

/// What an empty replacement of a pinned map costs (for the log line).
fn what_is_lost(name: &str) -> &'static str {
    match name {
        maps::CONNS => {
            "established flows pick their backend again by Maglev (the same one unless the \
             table changed)"
        }
        maps::STATS | maps::SERVICE_STATS | maps::BACKEND_STATS => "its counters restart from zero",
        maps::VRRP_SEEN => "the last adverts seen are forgotten (the election re-learns them)",
        _ => "the daemon writes it again from its configuration",
    }
}

/// Removes one pinned object; a missing pin is not an error.
fn remove_pin(path: &Path) -> Result<(), LoadError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LoadError::Pin {
            what: "stale pin".into(),
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Detaches everything xlb pinned in `pin_dir` (links first, so no program runs on a
/// half-removed map set), then removes map pins and the directory. Used on clean
/// shutdown and by `xlb detach` after a crash.
pub fn unpin_all(pin_dir: &Path) -> Result<(), LoadError> {
    let entries = match std::fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(LoadError::Pin {
                what: "pin directory".into(),
                path: pin_dir.to_path_buf(),
                source,
            })
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // Links sort first: "link_*" < upper-case map names is false, so order explicitly.
    paths.sort_by_key(|p| {
        !p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link_"))
    });
    for path in &paths {
        remove_pin(path)?;
    }
    match std::fs::remove_dir(pin_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LoadError::Pin {
            what: "pin directory".into(),
            path: pin_dir.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// An exclusive `flock` on the pin directory itself (bpffs holds no regular files), so
/// a second daemon on the same pins fails before it touches anything. The kernel drops
/// it when the owner exits, however it exits, so a restart after kill -9 takes it.
pub struct PinLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
    persistence: bpffs::Persistence,
}

impl PinLock {
    /// Mounts bpffs if needed, creates the pin directory and locks it; fails at once
    /// (naming the holder) if another process holds it.
    pub fn acquire(pin_dir: &Path) -> Result<PinLock, LoadError> {
        let persistence = bpffs::prepare_pin_dir(pin_dir)?;
        let pin_err = |source| LoadError::Pin {
            what: "pin directory (to lock it)".into(),
            path: pin_dir.to_path_buf(),
            source,
        };
        let dir = std::fs::File::open(pin_dir).map_err(pin_err)?;
        match nix::fcntl::Flock::lock(dir, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(PinLock {
                _lock: lock,
                persistence,
            }),
            Err((dir, nix::errno::Errno::EWOULDBLOCK)) => Err(LoadError::Busy {
                pin_dir: pin_dir.to_path_buf(),
                holder: lock_holder(&dir),
            }),
            Err((_, e)) => Err(pin_err(io::Error::from(e))),
        }
    }
}

/// The pid holding a `flock` on `file`, from `/proc/locks`
/// (`1: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> 0 EOF`).
fn lock_holder(file: &std::fs::File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata().ok()?;
    let (dev, ino) = (meta.dev(), meta.ino());
    let id = format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev));
    std::fs::read_to_string("/proc/locks")
        .ok()?
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id.as_str()))
        .and_then(|f| f.get(4)?.parse().ok())
}
