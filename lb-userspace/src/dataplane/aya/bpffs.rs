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

/// Mounts bpffs at [`BPFFS_ROOT`] unless it is already there, then creates `pin_dir`.
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<(), BpffsError> {
    if !pin_dir.starts_with(BPFFS_ROOT) {
        return Err(BpffsError::OutsideBpffs(pin_dir.to_path_buf()));
    }
    ensure_mounted()?;
    std::fs::create_dir_all(pin_dir).map_err(|source| BpffsError::CreateDir {
        path: pin_dir.to_path_buf(),
        source,
    })
}

/// Mounts bpffs at [`BPFFS_ROOT`] if something else (or nothing) is mounted there.
pub fn ensure_mounted() -> Result<(), BpffsError> {
    let root = Path::new(BPFFS_ROOT);
    if statfs(root).map_err(BpffsError::Stat)?.filesystem_type() == BPF_FS_MAGIC {
        return Ok(());
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
    Ok(())
}
