//! Userspace mappings of `BPF_F_MMAPABLE` array maps. A write through the mapping is a
//! plain store into the memory the program reads, so a value that fits one machine word
//! can be replaced with one atomic store: no packet ever reads half of it. A
//! `bpf_map_update_elem` on an array copies with `memcpy`, which promises no such thing.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::AtomicU64,
};

/// A whole array map mapped shared and writable; unmapped on drop.
pub struct MappedArray {
    base: NonNull<u8>,
    len: usize,
    entries: u32,
}

impl MappedArray {
    /// Maps an array of `entries` 8-byte values (the kernel lays array values out
    /// rounded up to 8 bytes; only 8-byte values are supported here).
    pub fn map_u64(fd: BorrowedFd<'_>, entries: u32) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::other("sysconf(_SC_PAGESIZE) failed"))?;
        let len = (entries as usize * 8).div_ceil(page) * page;
        // SAFETY: a fresh shared mapping of a map fd; the kernel checks the length
        // against the map and refuses maps without BPF_F_MMAPABLE.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len,
            entries,
        })
    }

    /// Value `index` as an atomic word, or `None` past the end.
    pub fn u64_at(&self, index: u32) -> Option<&AtomicU64> {
        (index < self.entries).then(|| {
            // SAFETY: in bounds (checked), 8-byte aligned (page-aligned base, 8-byte
            // values), and the mapping lives as long as `self`.
            unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(index as usize * 8).cast()) }
        })
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map_u64` mapped; no reference outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
