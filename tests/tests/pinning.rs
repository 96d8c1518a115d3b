//! Maps are pinned with BTF: re-opened by path they hold the program's counters, and
//! bpftool prints them with field names.

use std::process::Command;

use aya::maps::{Map, MapData, PerCpuArray};
use lb_common::{maps, Counter, Stat};
use testbed::{dataplane::TestDataplane, packet};

#[test]
fn pinned_stats_reopen_by_path_and_dump_with_btf() {
    let mut dp = TestDataplane::load("pin");
    let frame = packet::udp4_frame([10, 1, 0, 1].into(), [10, 1, 0, 2].into(), 1, 2, b"x");
    const RUNS: u64 = 7;
    for _ in 0..RUNS {
        dp.run(&frame);
    }

    let path = dp.pin_dir().join(maps::STATS);
    let reopened = MapData::from_pin(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let array = PerCpuArray::<_, Counter>::try_from(Map::PerCpuArray(reopened)).unwrap();
    let passed: u64 = array
        .get(&(Stat::Pass as u32), 0)
        .unwrap()
        .iter()
        .map(|c| c.packets)
        .sum();
    assert_eq!(passed, RUNS, "pass packets through the re-opened pin");

    let out = Command::new("bpftool")
        .args(["--json", "map", "dump", "pinned"])
        .arg(&path)
        .output()
        .expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    let entries = dump.as_array().expect("array of entries");
    assert_eq!(
        entries.len(),
        Stat::COUNT as usize,
        "one entry per counter slot"
    );
    let sum = |key: Stat, field: &str| -> u64 {
        let entry = entries
            .iter()
            .map(|e| &e["formatted"])
            .find(|e| e["key"] == u64::from(key as u32))
            .unwrap_or_else(|| panic!("no BTF-formatted key {} in {dump}", key as u32));
        // Only with BTF does bpftool add "formatted": {"key": n, "values": [{"cpu": c,
        // "value": {"packets": .., "bytes": ..}}]} next to the raw hex bytes.
        entry["values"]
            .as_array()
            .expect("per-CPU values")
            .iter()
            .map(|v| {
                v["value"][field]
                    .as_u64()
                    .unwrap_or_else(|| panic!("field {field} missing (no BTF?) in {v}"))
            })
            .sum()
    };
    // `rx` is derived by readers (the sum of the verdicts): its slot stays zero.
    assert_eq!(sum(Stat::Rx, "packets"), 0);
    assert_eq!(sum(Stat::Pass, "packets"), RUNS);
    assert_eq!(sum(Stat::Pass, "bytes"), RUNS * frame.len() as u64);
    assert_eq!(sum(Stat::Drop, "packets"), 0);
}

/// An upgrade across a map layout change: the connection table pinned by an older xlb
/// (8-byte values, before the service generation) is replaced by the loader rather
/// than reused (the program would fail verification against it), the load succeeds and
/// forwards; a same-layout pin (a normal restart) is kept, whatever its size.
#[test]
fn pins_of_another_layout_are_replaced_and_same_layout_pins_kept() {
    use lb_userspace::dataplane::aya::loader::retire_incompatible_pins;
    use testbed::dataplane::PinDir;

    let pin_dir = PinDir::new("pin-layout");
    lb_userspace::dataplane::aya::bpffs::prepare_pin_dir(pin_dir.path()).unwrap();
    let conns = pin_dir.path().join(maps::CONNS);
    pin_map(&conns, maps::CONNS, "lru_hash", 40, 8);

    let dp = TestDataplane::load_in(pin_dir);
    let info = aya::maps::MapInfo::from_pin(dp.pin_dir().join(maps::CONNS)).unwrap();
    assert_eq!(
        (info.value_size(), info.max_entries()),
        (
            size_of::<lb_common::Conn>() as u32,
            lb_common::limits::MAX_CONNS
        ),
        "the old-layout table was replaced by this build's"
    );
    // Now every pin is this build's: a restart keeps them all.
    assert_eq!(
        retire_incompatible_pins(dp.pin_dir()).unwrap(),
        Vec::<&str>::new(),
        "a restart with the same build replaces nothing"
    );
    // Service slots of another layout take the connection table with them: its
    // entries name services by slot generation.
    let slots = dp.pin_dir().join(maps::SERVICE_SLOTS);
    std::fs::remove_file(&slots).unwrap();
    pin_map(&slots, maps::SERVICE_SLOTS, "array", 4, 16);
    assert_eq!(
        retire_incompatible_pins(dp.pin_dir()).unwrap(),
        vec![maps::SERVICE_SLOTS, maps::CONNS]
    );
    assert!(!slots.exists() && !dp.pin_dir().join(maps::CONNS).exists());
}

/// Creates and pins a map of another layout with bpftool (1,024 entries).
fn pin_map(path: &std::path::Path, name: &str, kind: &str, key: u32, value: u32) {
    let out = Command::new("bpftool")
        .args(["map", "create"])
        .arg(path)
        .args([
            "type",
            kind,
            "key",
            &key.to_string(),
            "value",
            &value.to_string(),
        ])
        .args(["entries", "1024", "name", name])
        .output()
        .expect("running bpftool");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
