//! The kernel data plane: the XDP object `lb-ebpf` built and embedded by this crate's
//! build script, loaded with aya, its maps pinned and written. This is the only part of
//! the control plane that sees `aya::Ebpf`.
//!
//! - [`loader`]: load, pin (replacing pins of another layout after an upgrade), attach;
//!   [`AyaPort`] is the loaded object and implements [`DataPlane`].
//! - [`maps`]: typed map writes, the atomic table swap, the service slots.
//! - [`conns`]: the connection table's size (resized with its entries), memory, fill.
//! - [`mmap`]: mappings of mmapable arrays (whole-table copies, atomic slot stores).
//! - [`stats`]: per-CPU counters, live or from the pins.
//! - [`bpffs`]: bpffs mounted and the pin directory present.
//! - [`ebpf_log`]: aya-log records from the programs into `tracing`.

pub mod bpffs;
pub mod conns;
pub mod ebpf_log;
pub mod loader;
pub mod maps;
pub mod mmap;
pub mod stats;

use lb_common::{Backend, Config, Service, VipKey, VrrpKey, VrrpRouter, VrrpSeen};

pub use self::loader::{AyaPort, LoadError, LoadOptions, PinLock};
use super::{
    AttachMode, Attachment, BackendStats, DataPlane, GlobalStats, PortError, ServiceStats,
};

/// The XDP object built from `lb-ebpf` by this crate's build script.
pub static EBPF_OBJECT: &[u8] =
    ::aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-ebpf.o"));

fn stats_err(name: &'static str) -> impl FnOnce(::aya::maps::MapError) -> PortError {
    move |source| PortError::Maps(maps::MapsError::Map { name, source })
}

impl DataPlane for AyaPort {
    fn set_config(&mut self, config: &Config) -> Result<(), PortError> {
        Ok(maps::set_config(self.ebpf_mut(), config)?)
    }

    fn set_decap_allowed(
        &mut self,
        allow: &crate::dataplane::decap::DecapAllow,
    ) -> Result<(), PortError> {
        Ok(maps::set_decap_allowed(self.ebpf_mut(), allow)?)
    }

    fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<(), PortError> {
        Ok(maps::set_backend(self.ebpf_mut(), id, backend)?)
    }

    fn swap_tables(&mut self, tables: &[(u32, Vec<u32>)]) -> Result<(), PortError> {
        Ok(maps::swap_tables(self.ebpf_mut(), tables)?)
    }

    fn set_service(&mut self, key: &VipKey, service: &Service) -> Result<(), PortError> {
        Ok(maps::set_service(self.ebpf_mut(), key, service)?)
    }

    fn remove_service(&mut self, key: &VipKey) -> Result<(), PortError> {
        Ok(maps::remove_service(self.ebpf_mut(), key)?)
    }

    fn set_tx_port(&mut self, slot: u32, ifindex: u32, mac: [u8; 6]) -> Result<(), PortError> {
        Ok(maps::set_tx_port(self.ebpf_mut(), slot, ifindex, mac)?)
    }

    fn forget_backend_flows(&mut self, ids: &[u32]) -> Result<usize, PortError> {
        Ok(maps::forget_backend_flows(self.ebpf_mut(), ids)?)
    }

    fn set_vrrp_router(&mut self, key: &VrrpKey, router: &VrrpRouter) -> Result<(), PortError> {
        Ok(maps::set_vrrp_router(self.ebpf_mut(), key, router)?)
    }

    fn remove_vrrp_router(&mut self, key: &VrrpKey) -> Result<(), PortError> {
        Ok(maps::remove_vrrp_router(self.ebpf_mut(), key)?)
    }

    fn vrrp_seen(&self) -> Result<Vec<(VrrpKey, VrrpSeen)>, PortError> {
        Ok(maps::read_vrrp_seen(self.ebpf())?)
    }

    fn global_stats(&self) -> Result<GlobalStats, PortError> {
        stats::read_loaded(self.ebpf()).map_err(stats_err(lb_common::maps::STATS))
    }

    fn flows(&self) -> Result<(Vec<ServiceStats>, Vec<BackendStats>), PortError> {
        stats::read_loaded_flows(self.ebpf()).map_err(stats_err(lb_common::maps::SERVICES))
    }

    fn attach(
        &mut self,
        program: &'static str,
        iface: &str,
        mode: AttachMode,
    ) -> Result<Attachment, PortError> {
        AyaPort::attach(self, program, iface, mode).map_err(|e| PortError::Load(Box::new(e)))
    }

    fn conn_table(&self) -> Result<super::ConnTableUse, PortError> {
        Ok(AyaPort::conn_table(self)?)
    }

    fn detach_all(&mut self) -> Result<(), PortError> {
        loader::unpin_all(self.pin_dir()).map_err(|e| PortError::Load(Box::new(e)))
    }
}
