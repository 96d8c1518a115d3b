//! The one ethtool setting the testbed needs, via the SIOCETHTOOL ioctl (the machines
//! have no `ethtool` binary).

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::Netns;

/// `ETHTOOL_GTXCSUM` / `ETHTOOL_STXCSUM` from linux/ethtool.h.
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of its union (40 bytes on 64-bit Linux).
#[repr(C)]
struct IfreqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

impl Netns {
    /// Turns TX checksum offload of `iface` on or off (`ethtool -K <iface> tx on|off`).
    ///
    /// With it off, the device computes every checksum in software before sending, so
    /// the receiver gets complete checksums as if from a wire. That matters on a veth
    /// whose peer runs native XDP that sends frames on (XDP_TX, redirect): a locally
    /// generated TCP/UDP packet carries only a partial checksum (CHECKSUM_PARTIAL) and
    /// the offload promise is lost when the frame is turned into an XDP buffer, so the
    /// final receiver drops it as corrupt (`InCsumErrors`). Also applies to packets
    /// forwarded through `iface` (e.g. by a bridge), which is where it is usually set.
    pub fn set_tx_checksumming(&self, iface: &str, on: bool) {
        let result = self.run(|| {
            ethtool_value(iface, ETHTOOL_STXCSUM, u32::from(on))?;
            ethtool_value(iface, ETHTOOL_GTXCSUM, 0)
        });
        match result {
            Ok(got) if got == u32::from(on) => {}
            Ok(got) => panic!(
                "tx checksumming of {iface} in netns {} is {got} after setting {on}",
                self.name()
            ),
            Err(e) => panic!(
                "setting tx checksumming of {iface} in netns {} to {on}: {e}",
                self.name()
            ),
        }
    }
}

/// Runs one `ethtool_value` command on `iface` in the calling thread's namespace and
/// returns the `data` the kernel left in it.
fn ethtool_value(iface: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let bytes = iface.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {iface:?}"),
        ));
    }
    // SAFETY: plain socket(2); the fd is owned (and closed) by `sock`.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut value = EthtoolValue { cmd, data };
    let mut ifr = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    ifr.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: SIOCETHTOOL reads the ifreq and reads/writes the ethtool_value it points
    // to; both outlive the call and have the kernel's layout.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut ifr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value.data)
}
