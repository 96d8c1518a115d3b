//! The benchmark floors (`tests/ebpf`, package `xlb-bench-ebpf`): XDP programs timed
//! next to the data plane, in an object of their own so that the one `xlb` ships holds
//! production programs only. `bench_conn` looks flows up in the connection table of the
//! data plane it is loaded next to.

use aya::{
    maps::Map,
    programs::{ProgramError, Xdp},
    Ebpf, EbpfLoader,
};
use lb_common::maps;
use lb_userspace::dataplane::aya::AyaPort;

use crate::{Netns, VethPair};

/// The object `tests/build.rs` builds from `tests/ebpf`.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-bench-ebpf.o"));

/// The cheapest possible program: XDP_PASS.
pub const PASS: &str = "bench_pass";
/// Swaps MACs and transmits, the least a forwarder does.
pub const TX: &str = "bench_tx";
/// One connection-table lookup, MAC swap, XDP_TX (XDP_DROP on a miss).
pub const CONN: &str = "bench_conn";
/// One `bpf_fib_lookup` (route + neighbour) per packet, its MACs written, XDP_TX
/// (XDP_DROP unless it found a neighbour).
pub const FIB: &str = "bench_fib";
/// Every floor of [`OBJECT`].
pub const ALL: [&str; 4] = [PASS, TX, CONN, FIB];
/// Not a floor: the lab's spoofed-SYN generator ([`SynFlood`]).
pub const SYN_FLOOD: &str = "lab_syn_flood";

/// The floors, loaded, with `bench_conn` reading the data plane's `XLB_CONNS`.
pub struct BenchPrograms {
    ebpf: Ebpf,
}

impl BenchPrograms {
    /// Loads every floor next to `dp`. The object declares `XLB_CONNS` with the
    /// production layout; aya opens the map `dp` pinned instead of creating one
    /// (`map_pin_path`), so `bench_conn` sees the very flows `xlb` inserted. Panics
    /// unless the map it got is `dp`'s (same kernel map id).
    pub fn load(dp: &AyaPort) -> Self {
        let pin = dp.pin_dir().join(maps::CONNS);
        // Without the pin aya would create a fresh, empty table and pin it there.
        assert!(
            pin.exists(),
            "{} is not pinned: the data plane must be loaded first",
            pin.display()
        );
        let mut ebpf = EbpfLoader::new()
            .map_pin_path(maps::CONNS, pin.as_path())
            .load(OBJECT)
            .unwrap_or_else(|e| panic!("loading the benchmark object: {e}"));
        for name in ALL {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("{name} is not in the benchmark object"))
                .try_into()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            prog.load()
                .unwrap_or_else(|e| panic!("loading {name}: {e:?}"));
        }
        assert_eq!(
            conns_id(&ebpf),
            conns_id(dp.ebpf()),
            "bench_conn must read the data plane's own connection table"
        );
        Self { ebpf }
    }

    /// The named floor ([`PASS`], [`TX`], [`CONN`], [`FIB`]), loaded.
    pub fn xdp(&self, name: &str) -> &Xdp {
        let prog = self
            .ebpf
            .program(name)
            .unwrap_or_else(|| panic!("{name} is not in the benchmark object"));
        prog.try_into()
            .unwrap_or_else(|e: ProgramError| panic!("{name}: {e}"))
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }
}

/// [`SYN_FLOOD`] aimed at a running balancer: each BPF_PROG_TEST_RUN iteration turns
/// the frame into the SYN of a new spoofed flow and tail-calls the balancer program with
/// it, so the balancer's real program and tables see one more spoofed SYN. Nothing is
/// transmitted (a test run without live frames sends nothing).
pub struct SynFlood {
    ebpf: Ebpf,
}

impl SynFlood {
    /// Loads the generator with the program attached through the XDP link pinned at
    /// `link_pin` (a running daemon's) as its target.
    pub fn aimed_at(link_pin: &std::path::Path) -> Self {
        use aya::programs::{links::FdLink, links::PinnedLink, loaded_programs};
        let link: FdLink = PinnedLink::from_pin(link_pin)
            .unwrap_or_else(|e| panic!("opening {}: {e}", link_pin.display()))
            .into();
        let id = link.info().expect("link info").program_id();
        let target = loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .unwrap_or_else(|| panic!("program {id} of {} not loaded", link_pin.display()))
            .fd()
            .expect("the balancer's program fd");
        Self::with_target(&target)
    }

    /// Loads the generator with the loaded program `target` (a balancer, or a floor
    /// to time the generator itself) as its target.
    pub fn aimed_at_program(target: &Xdp) -> Self {
        Self::with_target(target.fd().expect("the target's program fd"))
    }

    fn with_target(target: &aya::programs::ProgramFd) -> Self {
        use aya::maps::ProgramArray;
        // The object's XLB_CONNS serves `bench_conn` only: the smallest one will do.
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::CONNS, 1)
            .load(OBJECT)
            .unwrap_or_else(|e| panic!("loading the benchmark object: {e}"));
        let prog: &mut Xdp = ebpf
            .program_mut(SYN_FLOOD)
            .expect("lab_syn_flood in the object")
            .try_into()
            .expect("an XDP program");
        prog.load()
            .unwrap_or_else(|e| panic!("loading {SYN_FLOOD}: {e:?}"));
        let mut targets: ProgramArray<_> =
            ProgramArray::try_from(ebpf.map_mut("FLOOD_TARGET").expect("FLOOD_TARGET"))
                .expect("a program array");
        targets.set(0, target, 0).expect("aiming the flood");
        Self { ebpf }
    }

    /// The generator program (loaded and aimed).
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(SYN_FLOOD)
            .expect("lab_syn_flood in the object")
            .try_into()
            .expect("an XDP program")
    }

    /// Runs `n` spoofed SYNs made from `syn` (an IPv4 TCP SYN to a VIP, no IP options)
    /// through the target; returns the last verdict.
    pub fn run(&self, syn: &[u8], n: u32) -> u32 {
        use aya::{TestRun as _, TestRunOptions};
        self.program()
            .test_run(TestRunOptions {
                data_in: Some(syn),
                repeat: n,
                ..TestRunOptions::new()
            })
            .expect("BPF_PROG_TEST_RUN of the flood")
            .return_value
    }
}

/// The kernel id of `ebpf`'s `XLB_CONNS`.
fn conns_id(ebpf: &Ebpf) -> u32 {
    match ebpf.map(maps::CONNS) {
        Some(Map::LruHashMap(data)) => data.info().expect("XLB_CONNS info").id(),
        _ => panic!("{} is not an LRU hash in this object", maps::CONNS),
    }
}

/// A namespace whose FIB and neighbour table give [`FIB`] a forwarded answer for
/// `dst`: one connected /24 holding `dst` (on a veth with both ends inside), forwarding
/// on, and a permanent neighbour entry for `dst`. BPF_PROG_TEST_RUN looks routes up in
/// the namespace of the thread running it, so [`FIB`] is timed from inside this one
/// (`Netns::run`); the lookup then never depends on the host's own tables.
pub fn fib_namespace(dst: std::net::Ipv4Addr, dst_mac: [u8; 6]) -> Netns {
    let ns = Netns::new("bench-fib");
    let veth = VethPair::new(&ns, &ns);
    let [a, b, c, _] = dst.octets();
    ns.add_addr(&veth.a, format!("{a}.{b}.{c}.254/24"));
    // bpf_fib_lookup answers only what the kernel would forward from the ingress
    // interface (lo for a context-less test run).
    ns.sysctl("net.ipv4.ip_forward", 1);
    ns.add_neigh(&veth.a, dst, dst_mac);
    ns
}
