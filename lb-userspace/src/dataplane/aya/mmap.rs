//! Userspace mappings of `BPF_F_MMAPABLE` array maps. A write through the mapping is a
//! plain store into the memory the program reads: a whole table is filled with one copy
//! instead of a syscall per slot, and a value that fits one machine word is replaced
//! with one atomic store, so no packet ever reads half of it (a `bpf_map_update_elem`
//! on an array copies with `memcpy`, which promises no such thing).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::AtomicU64,
};

/// A shared, writable mapping of an mmapable array's values, unmapped on drop.
pub struct Mapping {
    addr: NonNull<libc::c_void>,
    len: usize,
}

impl Mapping {
    /// Maps the first `bytes` of the map's values, rounded up to whole pages (the kernel
    /// maps pages, and allows up to the page-rounded size of the array; it refuses maps
    /// without `BPF_F_MMAPABLE`).
    pub fn new(fd: BorrowedFd<'_>, bytes: usize) -> io::Result<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| io::Error::last_os_error())?;
        let len = bytes.next_multiple_of(page);
        // SAFETY: a fresh shared mapping at an address the kernel picks, of a map fd the
        // caller holds open for the call; the result is checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = NonNull::new(addr).ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        Ok(Self { addr, len })
    }

    /// The mapping as `u32` words.
    pub fn words(&mut self) -> &mut [u32] {
        // SAFETY: `len` bytes at `addr` are mapped readable and writable, page-aligned
        // (so aligned for u32), and only reachable through `&mut self` while it lives.
        unsafe { std::slice::from_raw_parts_mut(self.addr.as_ptr().cast::<u32>(), self.len / 4) }
    }

    /// The `index`-th 8-byte word as an atomic, or `None` past the mapping.
    pub fn u64_at(&self, index: usize) -> Option<&AtomicU64> {
        (index < self.len / 8).then(|| {
            // SAFETY: in bounds (checked), 8-byte aligned (page-aligned base), and the
            // mapping lives as long as the returned reference.
            unsafe { AtomicU64::from_ptr(self.addr.as_ptr().cast::<u64>().add(index)) }
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; no reference outlives `self`.
        unsafe { libc::munmap(self.addr.as_ptr(), self.len) };
    }
}
