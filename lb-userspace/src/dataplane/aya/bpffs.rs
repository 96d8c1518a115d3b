//! bpffs handling: pins only survive on a mounted bpf filesystem, and a fresh boot (or a
//! new mount namespace) may not have one at /sys/fs/bpf.

use std::{
    io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{mount, MsFlags},
    sys::statfs::{statfs, FsType},
};

/// Where bpffs lives by convention.
pub const BPFFS_ROOT: &str = "/sys/fs/bpf";
// BPF_FS_MAGIC from linux/magic.h; nix does not export it.
const BPF_FS_MAGIC: FsType = FsType(0xcafe_4a11);

#[derive(Debug, thiserror::Error)]
pub enum BpffsError {
    #[error("pin directory {0} is not under {BPFFS_ROOT}")]
    OutsideBpffs(PathBuf),
    #[error("mounting bpffs at {BPFFS_ROOT} failed (needs root / CAP_SYS_ADMIN)")]
    Mount(#[source] nix::Error),
    #[error("checking {BPFFS_ROOT}")]
    Stat(#[source] nix::Error),
    #[error("creating pin directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether pins made now will outlive this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// bpffs was mounted already: pins stay until removed (or the host reboots).
    Lasting,
    /// xlb mounted bpffs itself in a mount namespace that is not the host's (e.g. `ip
    /// netns exec`, a container without the host's `/sys/fs/bpf`): the pins die with
    /// the namespace, so a crash detaches XDP and a restart adopts nothing.
    DiesWithNamespace,
    /// xlb mounted bpffs itself in the host's mount namespace (a fresh boot): pins last.
    MountedHere,
}

impl Persistence {
    /// What an operator must know, if anything.
    pub fn warning(&self) -> Option<String> {
        (*self == Persistence::DiesWithNamespace).then(|| {
            format!(
                "bpffs was not mounted at {BPFFS_ROOT} in this mount namespace, which is not \
                 (or cannot be shown to be) the host's: xlb mounted a private one, and its \
                 pins die with this process. \
                 A crash detaches XDP at once and a restart adopts nothing. Enter only the \
                 network namespace (nsenter --net=/run/netns/NAME), or bind-mount the \
                 host's {BPFFS_ROOT} into the container (docs/robustness.md)"
            )
        })
    }
}

/// Mounts bpffs at [`BPFFS_ROOT`] unless it is already there, then creates `pin_dir`.
/// Says whether pins made there outlive this process.
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<Persistence, BpffsError> {
    if !pin_dir.starts_with(BPFFS_ROOT) {
        return Err(BpffsError::OutsideBpffs(pin_dir.to_path_buf()));
    }
    let persistence = ensure_mounted()?;
    std::fs::create_dir_all(pin_dir).map_err(|source| BpffsError::CreateDir {
        path: pin_dir.to_path_buf(),
        source,
    })?;
    Ok(persistence)
}

/// Whether this process may run in a mount namespace of its own: not provably PID 1's
/// (the host's, or a container's, which outlives its processes). PID 1's namespace link
/// is not always readable (a sandbox, hidepid): then it cannot be told, and a bpffs
/// xlb had to mount itself is assumed private, since init systems mount one at boot.
fn private_mount_namespace() -> bool {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    !matches!((ns("self"), ns("1")), (Some(a), Some(b)) if a == b)
}

/// Mounts bpffs at [`BPFFS_ROOT`] if something else (or nothing) is mounted there.
pub fn ensure_mounted() -> Result<Persistence, BpffsError> {
    let root = Path::new(BPFFS_ROOT);
    if statfs(root).map_err(BpffsError::Stat)?.filesystem_type() == BPF_FS_MAGIC {
        return Ok(Persistence::Lasting);
    }
    mount(
        Some("bpf"),
        root,
        Some("bpf"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(BpffsError::Mount)?;
    tracing::info!("mounted bpffs at {BPFFS_ROOT}");
    Ok(if private_mount_namespace() {
        Persistence::DiesWithNamespace
    } else {
        Persistence::MountedHere
    })
}
