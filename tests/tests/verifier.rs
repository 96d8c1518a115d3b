//! Verifier statistics on the real kernel (`testbed::verifier`): every program of both
//! objects (the shipped data plane and the benchmark floors) re-verifies with the
//! instruction count of its real load, and the count is sensitive enough for that to
//! prove something. Also what each object holds: the shipped one production programs
//! only.

use std::collections::BTreeSet;

use lb_common::programs;
use lb_userspace::{
    config::conn_table::LruKind,
    dataplane::aya::{AyaPort, LoadOptions, EBPF_OBJECT},
};
use testbed::{
    bench::{self, BenchPrograms},
    dataplane::{PinDir, TestDataplane},
    verifier::verifier_stats,
};

/// The programs `xlb` ships (and `AyaPort::load` loads).
const PRODUCTION: [&str; 5] = [
    programs::BALANCER,
    programs::BALANCER_VLAN,
    programs::BALANCER_QINQ,
    programs::DECAP,
    programs::PASS,
];

#[test]
fn every_program_reports_states_with_its_loaded_instruction_count() {
    // Against either kind of connection table (`conn_table.lru`): the per-CPU one is
    // created outside aya, without BTF, and both objects' programs must accept it.
    for lru in [LruKind::Shared, LruKind::PerCpu] {
        every_program_verifies(&TestDataplane::load_with(
            PinDir::new("verifier"),
            None,
            lru,
        ));
    }
}

fn every_program_verifies(dp: &TestDataplane) {
    assert_eq!(
        LruKind::of_flags(conn_flags(dp)),
        dp.dp.conn_table().unwrap().lru
    );
    let floors = BenchPrograms::load(&dp.dp);
    for (ebpf, object, names) in [
        (dp.dp.ebpf(), EBPF_OBJECT, &PRODUCTION[..]),
        (floors.ebpf(), bench::OBJECT, &bench::ALL[..]),
    ] {
        let stats = verifier_stats(ebpf, object, names).unwrap();
        assert_eq!(stats.len(), names.len());
        for (name, s) in names.iter().zip(&stats) {
            assert_eq!(s.program, *name);
            let loaded = ebpf
                .program(name)
                .unwrap()
                .info()
                .unwrap()
                .verified_instruction_count();
            assert_eq!(Some(s.processed_insns), loaded, "{name}: processed insns");
            assert_eq!(s.insn_limit, 1_000_000, "{name}");
            assert!(s.total_states >= s.peak_states, "{name}: {s:?}");
            assert!(!s.stack_depth.is_empty(), "{name}: {s:?}");
            eprintln!("{s:?}");
        }
        if object == EBPF_OBJECT {
            let balancer = &stats[0];
            // Branches and bpf-to-bpf calls: the balancer cannot verify without pruning
            // states.
            assert!(balancer.total_states > 100, "{balancer:?}");
            assert!(balancer.max_states_per_insn > 1, "{balancer:?}");
        }
    }
}

/// The map flags of the connection table `dp` loaded.
fn conn_flags(dp: &TestDataplane) -> u32 {
    aya::maps::MapInfo::from_pin(dp.pin_dir().join(lb_common::maps::CONNS))
        .unwrap()
        .map_flags()
}

/// The equality above means "the same program" only because the count moves with what
/// the program was verified against: the aya-log level in `.rodata` (frozen, so the
/// verifier removes the disabled log calls) changes the balancer's count, and each
/// re-load, relocated against its own load's maps, matches its own load.
#[test]
fn instruction_count_follows_the_frozen_rodata() {
    let counts: Vec<u32> = [None, Some(aya_log::Level::Trace)]
        .into_iter()
        .map(|ebpf_log_level| {
            let pin_dir = PinDir::new("verifier-log");
            let dp = AyaPort::load(&LoadOptions {
                pin_dir: pin_dir.path().to_path_buf(),
                ebpf_log_level,
                conn_entries: None,
                unconfirmed_entries: None,
                conn_lru: Default::default(),
            })
            .unwrap();
            let stats = verifier_stats(dp.ebpf(), EBPF_OBJECT, &[programs::BALANCER]).unwrap();
            stats[0].processed_insns
        })
        .collect();
    assert_ne!(counts[0], counts[1], "log level off vs trace: {counts:?}");
}

/// The program names of an object file, as the loader sees them.
fn program_names(object: &[u8]) -> BTreeSet<String> {
    aya_obj::Object::parse(object)
        .unwrap()
        .programs
        .into_keys()
        .collect()
}

#[test]
fn shipped_object_holds_production_programs_only() {
    let names = |set: &[&str]| set.iter().map(|n| (*n).to_owned()).collect::<BTreeSet<_>>();
    assert_eq!(program_names(EBPF_OBJECT), names(&PRODUCTION));
    let mut test_programs = names(&bench::ALL);
    test_programs.insert(bench::SYN_FLOOD.to_owned());
    test_programs.extend(names(&testbed::vlan_lab::PROGRAMS));
    assert_eq!(program_names(bench::OBJECT), test_programs);
}
