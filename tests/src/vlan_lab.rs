//! The VLAN end-to-end lab (`tests/tests/vlan_e2e.rs`): the one-arm [`Testbed`] with the
//! client's VIP traffic tagged as it enters the switch (and sent straight to the lb's
//! port, past the bridge) and the balancer's output untagged as it enters the switch
//! from the lb (`lab_vlan_push` / `lab_vlan_pop` from the benchmark object,
//! `tests/ebpf/src/lab_vlan.rs`): this kernel has no `type vlan` links. So the lb
//! receives tagged frames and must send them on tagged, and the backends, which know
//! nothing of VLANs, get plain frames.
//!
//! [`Testbed`]: crate::topology::Testbed

use std::net::IpAddr;

use aya::{
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};

use crate::{bench::OBJECT, packet::be6, Netns};

/// Tags the client's frames to the VIP (on the switch port the client sends into).
pub const PUSH: &str = "lab_vlan_push";
/// Takes the tags off the balancer's output (on the switch port the lb sends into).
pub const POP: &str = "lab_vlan_pop";
/// The lab programs of [`OBJECT`] (next to `bench::ALL`).
pub const PROGRAMS: [&str; 2] = [PUSH, POP];

/// The loaded tagger and untagger; dropping it detaches both.
pub struct VlanLab {
    ebpf: Ebpf,
}

impl VlanLab {
    /// Loads both programs: `tags` (TPID, VLAN id; outermost first, one or two) go on
    /// every client frame to `vip`, which then leaves by interface `to_lb` (ifindex).
    pub fn load(vip: IpAddr, tags: &[(u16, u16)], to_lb: u32) -> VlanLab {
        assert!(matches!(tags.len(), 1 | 2), "one or two tags: {tags:?}");
        let mut words = [0u32; 2];
        for (w, (tpid, vid)) in words.iter_mut().zip(tags) {
            // As on the wire: TPID then TCI, read natively by the program.
            let mut bytes = [0u8; 4];
            bytes[..2].copy_from_slice(&tpid.to_be_bytes());
            bytes[2..].copy_from_slice(&vid.to_be_bytes());
            *w = u32::from_ne_bytes(bytes);
        }
        let (vip4, vip6) = match vip {
            IpAddr::V4(a) => (u32::from_ne_bytes(a.octets()), [0; 4]),
            IpAddr::V6(a) => (0, be6(a)),
        };
        let count = tags.len() as u32;
        let mut ebpf = EbpfLoader::new()
            .override_global("LAB_TAGS", &words, true)
            .override_global("LAB_TAG_COUNT", &count, true)
            .override_global("LAB_VIP4", &vip4, true)
            .override_global("LAB_VIP6", &vip6, true)
            .override_global("LAB_REDIRECT_IFINDEX", &to_lb, true)
            .load(OBJECT)
            .unwrap_or_else(|e| panic!("loading the VLAN lab programs: {e}"));
        for name in PROGRAMS {
            program(&mut ebpf, name)
                .load()
                .unwrap_or_else(|e| panic!("loading {name}: {e:?}"));
        }
        VlanLab { ebpf }
    }

    /// Attaches `name` natively to `iface` in `ns`.
    pub fn attach(&mut self, name: &str, ns: &Netns, iface: &str) {
        let prog = program(&mut self.ebpf, name);
        ns.run(|| prog.attach(iface, XdpMode::Driver))
            .unwrap_or_else(|e| panic!("attaching {name} to {iface}: {e:?}"));
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> &'a mut Xdp {
    ebpf.program_mut(name)
        .unwrap_or_else(|| panic!("{name} is missing from the benchmark object"))
        .try_into()
        .unwrap_or_else(|e| panic!("{name} is not XDP: {e:?}"))
}
