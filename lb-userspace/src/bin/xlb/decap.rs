//! `xlb decap`'s allow-list: tunnels from the `--allow-source` balancers to the
//! addresses of this host, kept in step with the interfaces' addresses (DHCP, an
//! address added later) by a resync every second.

use std::net::IpAddr;

use anyhow::{Context as _, Result};
use lb_userspace::dataplane::{
    decap::{self, DecapAllow},
    prefix::IpPrefix,
    DataPlane,
};

/// What the decap program may unwrap, and what was last written.
pub(crate) struct Allow {
    pub(crate) sources: Vec<IpPrefix>,
    /// `--allow-destination`: outer destinations besides the interfaces' addresses.
    pub(crate) destinations: Vec<IpAddr>,
    written: Option<DecapAllow>,
}

impl Allow {
    /// Refuses an allow-list that could never be written (no source, a multicast
    /// one, too many), before anything is loaded.
    pub(crate) fn new(sources: Vec<IpPrefix>, destinations: Vec<IpAddr>) -> Result<Allow> {
        decap::allowlist(&sources, &destinations)?;
        Ok(Allow {
            sources,
            destinations,
            written: None,
        })
    }

    /// Writes the allow-list for the current addresses of `ifaces` if it changed.
    pub(crate) fn sync(&mut self, dp: &mut dyn DataPlane, ifaces: &[String]) -> Result<()> {
        let mut local = self.destinations.clone();
        for name in ifaces {
            let iface = lb_userspace::vrrp::net::iface(name, &[])
                .with_context(|| format!("reading the addresses of {name}"))?;
            local.extend(iface.addresses);
        }
        local.sort_unstable();
        local.dedup();
        let entries = decap::allowlist(&self.sources, &local)?;
        if self.written.as_ref() == Some(&entries) {
            return Ok(());
        }
        dp.set_decap_allowed(&entries)
            .context("writing the decap allow-list")?;
        tracing::info!(
            sources = ?self.sources,
            destinations = ?local,
            "decap: unwrapping tunnels from these sources to these destinations only"
        );
        self.written = Some(entries);
        Ok(())
    }
}
