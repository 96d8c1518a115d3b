//! Verifier statistics on the real kernel (`lb_userspace::verifier`): every program of
//! the object re-verifies with the instruction count of its real load, and the count is
//! sensitive enough for that to prove something.

use lb_common::programs;
use lb_userspace::{
    dataplane::aya::{AyaPort, LoadOptions, EBPF_OBJECT},
    verifier::verifier_stats,
};
use testbed::dataplane::{PinDir, TestDataplane};

const ALL: [&str; 6] = [
    programs::BALANCER,
    programs::DECAP,
    programs::PASS,
    programs::BENCH_PASS,
    programs::BENCH_TX,
    programs::BENCH_CONN,
];

#[test]
fn every_program_reports_states_with_its_loaded_instruction_count() {
    let mut dp = TestDataplane::load("verifier");
    for name in [
        programs::BENCH_PASS,
        programs::BENCH_TX,
        programs::BENCH_CONN,
    ] {
        dp.dp.xdp(name).unwrap().load().unwrap();
    }
    let stats = verifier_stats(dp.dp.ebpf(), EBPF_OBJECT, &ALL).unwrap();
    assert_eq!(stats.len(), ALL.len());
    for (name, s) in ALL.iter().zip(&stats) {
        assert_eq!(s.program, *name);
        let loaded = dp
            .dp
            .ebpf()
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
    let balancer = &stats[0];
    // Branches and bpf-to-bpf calls: the balancer cannot verify without pruning states.
    assert!(balancer.total_states > 100, "{balancer:?}");
    assert!(balancer.max_states_per_insn > 1, "{balancer:?}");
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
            })
            .unwrap();
            let stats = verifier_stats(dp.ebpf(), EBPF_OBJECT, &[programs::BALANCER]).unwrap();
            stats[0].processed_insns
        })
        .collect();
    assert_ne!(counts[0], counts[1], "log level off vs trace: {counts:?}");
}
