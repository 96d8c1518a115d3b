//! Weighted Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
//! Software Network Load Balancer", NSDI 2016, section 3.4).
//!
//! [`build`] turns a set of backends into a lookup table of `m` backend ids (`m` prime);
//! the data plane picks `table[hash(flow) % m]` for a new flow. The table depends only
//! on the *set* of backends (their `key`, `id` and `weight`) and the seed, never on
//! input order, the process or the host, so every xlb instance with the same seed
//! computes the same table.
//!
//! # Permutations
//!
//! Each backend's preference list is the paper's permutation
//! `permutation[j] = (offset + j * skip) mod m` with
//! `offset = h1(key) mod m` and `skip = h2(key) mod (m - 1) + 1`. Because `m` is prime
//! and `1 <= skip < m`, the list visits every slot exactly once. It is never
//! materialised: each backend keeps its current position and advances by `skip`.
//! `h1`/`h2` are the MurmurHash3 64-bit finaliser (`fmix64`) of `key` XOR two constants
//! ([`H1_SEED`], [`H2_SEED`]), each XORed with the config's `hash_seed` (low and high
//! half; seed 0 leaves them as they were before the option existed).
//!
//! # Weights
//!
//! Backends take turns in rounds, as in the paper, but a backend with weight `w` only
//! claims a slot in a fraction `w / max_weight` of the rounds: its `k`-th claim
//! (`k = 0, 1, ...`) happens in round `floor(k * max_weight / w)`. This is the per-round
//! credit accumulator used by Katran's weighted Maglev (credit `+= w` each round, claim
//! when credit `>= max_weight`), with the credit starting full so that every weighted
//! backend claims one slot in round 0 and therefore always appears in the table (that is
//! why `m` must exceed the number of weighted backends). Within a round, backends go in
//! their sorted `(key, id)` order. Instead of scanning all backends every round (cost
//! `rounds * N`, which explodes for skewed weights such as 1 vs 10 000), the rounds are
//! simulated with a min-heap keyed by `(round, position)`, so a build costs
//! `O(m log N)` heap work plus the permutation probes, whatever the weights. With equal
//! weights this is exactly the paper's round-robin: every backend owns `floor(m / N)` or
//! `ceil(m / N)` entries. With weights, a backend owns `ceil(R * w / max_weight)` or one
//! entry less, where `R` is the number of rounds needed to fill the table.
//!
//! A backend whose proportional share is below one slot still gets its round-0 slot, so
//! extreme weight ratios (beyond `m / N`) are not represented exactly.

use std::{cmp::Reverse, collections::BinaryHeap, net::IpAddr};

/// The table size rules live with the config that carries `table_size`.
pub use crate::config::service::{is_prime, DEFAULT_TABLE_SIZE};

/// Seed XORed into a backend key before hashing it for the permutation `offset`.
pub const H1_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
/// Seed XORed into a backend key before hashing it for the permutation `skip`.
pub const H2_SEED: u64 = 0xc2b2_ae3d_27d4_eb4f;

/// One backend as seen by the table builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MaglevBackend {
    /// Id stored in the table (the `XLB_BACKENDS` index). 0 means "empty" and is rejected.
    pub id: u32,
    /// Relative weight. 0 means drained: the backend gets no slot.
    pub weight: u32,
    /// Stable identity used to derive the backend's permutation, normally
    /// [`backend_key`] of its address and port. It must not change across restarts,
    /// or the backend's slots move.
    pub key: u64,
}

/// Why a Maglev table could not be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("Maglev table size {m} is not prime")]
    NotPrime { m: u32 },
    #[error(
        "Maglev table size {m} must be larger than the number of backends with non-zero \
         weight ({backends})"
    )]
    TooSmall { m: u32, backends: usize },
    #[error("backend id 0 is reserved for empty Maglev table entries")]
    ZeroId,
    #[error("backend id {0} appears more than once")]
    DuplicateId(u32),
    #[error("no backend with non-zero weight: nothing to put in the Maglev table")]
    NoCapacity,
}

/// Stable 64-bit identity of a backend from its address and port: FNV-1a 64 over
/// `[family, address octets (4 or 16, network order)..., port (big endian, 2 bytes)]`
/// where `family` is 4 or 6. An IPv4-mapped IPv6 address is hashed as IPv6, i.e.
/// differently from the plain IPv4 address.
pub fn backend_key(addr: IpAddr, port: u16) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut buf = [0u8; 1 + 16 + 2];
    let len = match addr {
        IpAddr::V4(a) => {
            buf[0] = 4;
            buf[1..5].copy_from_slice(&a.octets());
            5
        }
        IpAddr::V6(a) => {
            buf[0] = 6;
            buf[1..17].copy_from_slice(&a.octets());
            17
        }
    };
    buf[len..len + 2].copy_from_slice(&port.to_be_bytes());
    buf[..len + 2].iter().fold(FNV_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// MurmurHash3's 64-bit finaliser: a bijective mixer with full avalanche.
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// A weighted backend's walk through its permutation.
struct Walk {
    id: u32,
    weight: u64,
    /// Next slot of the permutation to try.
    pos: u32,
    skip: u32,
    /// Slots claimed so far.
    claimed: u64,
}

/// Builds a Maglev lookup table of `m` entries, each a backend id.
///
/// `m` must be prime and larger than the number of backends with non-zero weight.
/// Ids must be non-zero and unique (weight-0 backends included). Checks run in this
/// order: `m` prime, ids, at least one non-zero weight, `m` large enough. The result is
/// the same for any order of `backends`.
pub fn build(backends: &[MaglevBackend], m: u32) -> Result<Vec<u32>, MaglevError> {
    build_seeded(backends, m, 0)
}

/// [`build`] with the permutations derived under `seed` (the config's `hash_seed`; 0 =
/// the built-in [`H1_SEED`] / [`H2_SEED`] alone, the tables of xlb before the option):
/// the same seed and backends give the same table on every balancer, another seed
/// another table.
pub fn build_seeded(
    backends: &[MaglevBackend],
    m: u32,
    seed: u32,
) -> Result<Vec<u32>, MaglevError> {
    if !is_prime(m) {
        return Err(MaglevError::NotPrime { m });
    }
    let mut ids: Vec<u32> = backends.iter().map(|b| b.id).collect();
    ids.sort_unstable();
    if ids.first() == Some(&0) {
        return Err(MaglevError::ZeroId);
    }
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(MaglevError::DuplicateId(w[0]));
    }

    let mut weighted: Vec<&MaglevBackend> = backends.iter().filter(|b| b.weight > 0).collect();
    if weighted.is_empty() {
        return Err(MaglevError::NoCapacity);
    }
    if weighted.len() >= m as usize {
        return Err(MaglevError::TooSmall {
            m,
            backends: weighted.len(),
        });
    }
    // Ids are unique, so (key, id) is a total order: input order cannot matter.
    weighted.sort_unstable_by_key(|b| (b.key, b.id));

    let m64 = u64::from(m);
    // The seed in the low half of one constant and the high half of the other: both
    // permutation parameters change with any seed bit, and seed 0 changes nothing.
    let (h1, h2) = (H1_SEED ^ u64::from(seed), H2_SEED ^ (u64::from(seed) << 32));
    let mut walks: Vec<Walk> = weighted
        .iter()
        .map(|b| Walk {
            id: b.id,
            weight: u64::from(b.weight),
            // m is prime, so m >= 2; both results are < m <= u32::MAX.
            pos: (fmix64(b.key ^ h1) % m64) as u32,
            skip: (fmix64(b.key ^ h2) % (m64 - 1) + 1) as u32,
            claimed: 0,
        })
        .collect();
    let max_weight = walks.iter().map(|w| w.weight).max().unwrap_or(1);

    let mut table = vec![0u32; m as usize];
    let mut filled = 0u32;
    // Min-heap of (round of the backend's next claim, its position in `walks`). Every
    // backend claims in round 0. Positions fit in u32 because there are fewer than m.
    let mut heap: BinaryHeap<Reverse<(u64, u32)>> =
        (0..walks.len() as u32).map(|i| Reverse((0, i))).collect();
    while filled < m {
        let Some(mut top) = heap.peek_mut() else {
            break; // unreachable: the heap never shrinks
        };
        let walk = &mut walks[top.0 .1 as usize];
        // The permutation visits every slot, and the table is not full: this ends.
        loop {
            let slot = walk.pos;
            walk.pos = if walk.pos >= m - walk.skip {
                walk.pos - (m - walk.skip)
            } else {
                walk.pos + walk.skip
            };
            let entry = &mut table[slot as usize];
            if *entry == 0 {
                *entry = walk.id;
                break;
            }
        }
        filled += 1;
        walk.claimed += 1;
        // k * max_weight < 2^32 * 2^32: no overflow.
        top.0 .0 = walk.claimed * max_weight / walk.weight;
        // Dropping `top` sifts the updated entry down.
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        net::{Ipv4Addr, Ipv6Addr},
        time::Instant,
    };

    use super::*;

    const M: u32 = DEFAULT_TABLE_SIZE;

    /// Backends 1..=n with weight 1 and keys from their (distinct) addresses.
    fn equal(n: u32) -> Vec<MaglevBackend> {
        (1..=n)
            .map(|id| MaglevBackend {
                id,
                weight: 1,
                key: backend_key(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + id)), 8080),
            })
            .collect()
    }

    fn counts(table: &[u32]) -> HashMap<u32, usize> {
        let mut c = HashMap::new();
        for &id in table {
            *c.entry(id).or_insert(0) += 1;
        }
        c
    }

    /// Deterministic Fisher-Yates with xorshift64*, so tests need no `rand`.
    fn shuffle<T>(v: &mut [T], mut seed: u64) {
        for i in (1..v.len()).rev() {
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            let r = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
            v.swap(i, (r % (i as u64 + 1)) as usize);
        }
    }

    /// Fraction of slots not owned by `removed` in `before` whose owner changed.
    fn moved_fraction(before: &[u32], after: &[u32], removed: u32) -> (f64, usize) {
        let mut kept = 0usize;
        let mut moved = 0usize;
        let mut removed_left = 0usize;
        for (&b, &a) in before.iter().zip(after) {
            if b == removed {
                if a == removed {
                    removed_left += 1;
                }
            } else {
                kept += 1;
                if a != b {
                    moved += 1;
                }
            }
        }
        (moved as f64 / kept as f64, removed_left)
    }

    #[test]
    fn default_size_is_prime() {
        assert!(is_prime(DEFAULT_TABLE_SIZE));
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..40).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
        assert!(is_prime(65537));
        assert!(!is_prime(65535));
        assert!(!is_prime(65536));
        assert!(is_prime(4_294_967_291)); // largest u32 prime
        assert!(!is_prime(u32::MAX));
        assert!(!is_prime(65521 * 65519)); // product of two large primes, < 2^32
    }

    #[test]
    fn backend_key_is_fixed_fnv1a() {
        // FNV-1a 64 of the empty input is the offset basis; pin the encoding with
        // values computed by hand from the documented byte layout.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in [4u8, 10, 0, 0, 1, 0x1f, 0x90] {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        assert_eq!(backend_key(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8080), h);
        assert_eq!(
            backend_key(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8080),
            0x84f2_6c1c_fdd6_3181
        );
        let v4 = backend_key(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80);
        let v4_other_port = backend_key(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 81);
        let mapped = backend_key(IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()), 80);
        let v6 = backend_key(IpAddr::V6(Ipv6Addr::LOCALHOST), 80);
        assert_ne!(v4, v4_other_port);
        assert_ne!(v4, mapped);
        assert_ne!(v4, v6);
    }

    #[test]
    fn entries_valid_and_drained_backends_absent() {
        let mut backends = equal(20);
        for b in backends.iter_mut().filter(|b| b.id % 4 == 0) {
            b.weight = 0;
        }
        for b in backends.iter_mut().filter(|b| b.id % 4 == 1) {
            b.weight = 7;
        }
        let table = build(&backends, M).unwrap();
        assert_eq!(table.len(), M as usize);
        let c = counts(&table);
        for b in &backends {
            if b.weight == 0 {
                assert!(!c.contains_key(&b.id), "drained backend {} in table", b.id);
            } else {
                assert!(c[&b.id] > 0, "weighted backend {} missing", b.id);
            }
        }
        // Every entry is one of the weighted ids (so in particular never 0).
        assert_eq!(c.len(), backends.iter().filter(|b| b.weight > 0).count());
        assert!(!c.contains_key(&0));
    }

    #[test]
    fn small_table_every_backend_present() {
        // m = N + 1: round 0 gives each weighted backend its slot, whatever the weights.
        let mut backends = equal(12);
        backends[0].weight = 1_000_000;
        let table = build(&backends, 13).unwrap();
        let c = counts(&table);
        assert_eq!(c.len(), 12);
        assert_eq!(c[&1], 2);
        // m = 2 with one backend.
        assert_eq!(build(&equal(1), 2).unwrap(), [1, 1]);
    }

    #[test]
    fn equal_weights_balance() {
        for n in [3u32, 10, 100, 1000] {
            let table = build(&equal(n), M).unwrap();
            let c = counts(&table);
            assert_eq!(c.len(), n as usize);
            let ideal = f64::from(M) / f64::from(n);
            let min = *c.values().min().unwrap();
            let max = *c.values().max().unwrap();
            // The round-robin gives each backend floor(m/N) or ceil(m/N) entries.
            assert!(max - min <= 1, "n={n}: min {min} max {max}");
            for (&id, &k) in &c {
                let err = (k as f64 - ideal).abs() / ideal;
                assert!(err <= 0.01, "n={n}: backend {id} has {k}, ideal {ideal}");
            }
        }
    }

    #[test]
    fn weights_1_2_3() {
        let mut backends = equal(3);
        for b in &mut backends {
            b.weight = b.id;
        }
        let table = build(&backends, M).unwrap();
        let c = counts(&table);
        for b in &backends {
            let share = c[&b.id] as f64 / f64::from(M);
            let want = f64::from(b.weight) / 6.0;
            // Measured: within 1 entry of the exact share, i.e. |error| < 2e-5.
            assert!(
                (share - want).abs() < 1e-4,
                "backend {} share {share}, want {want}",
                b.id
            );
        }
    }

    #[test]
    fn mixed_weights_many_backends() {
        // 100 backends with weights 1..=4: each within 1% of its proportional share.
        let mut backends = equal(100);
        for b in &mut backends {
            b.weight = b.id % 4 + 1;
        }
        let total: u32 = backends.iter().map(|b| b.weight).sum();
        let table = build(&backends, M).unwrap();
        let c = counts(&table);
        for b in &backends {
            let ideal = f64::from(M) * f64::from(b.weight) / f64::from(total);
            let err = (c[&b.id] as f64 - ideal).abs() / ideal;
            assert!(
                err <= 0.01,
                "backend {} has {}, ideal {ideal}",
                b.id,
                c[&b.id]
            );
        }
    }

    #[test]
    fn order_independent() {
        let mut backends = equal(100);
        for b in &mut backends {
            b.weight = b.id % 5; // includes drained backends
        }
        let table = build(&backends, M).unwrap();
        for seed in [1u64, 0xdead_beef, 42] {
            let mut shuffled = backends.clone();
            shuffle(&mut shuffled, seed);
            assert_ne!(shuffled, backends);
            assert_eq!(build(&shuffled, M).unwrap(), table);
        }
        let mut reversed = backends.clone();
        reversed.reverse();
        assert_eq!(build(&reversed, M).unwrap(), table);
    }

    #[test]
    fn same_keys_distinct_ids_still_deterministic() {
        let mut backends = equal(4);
        for b in &mut backends {
            b.key = 7;
        }
        let table = build(&backends, 101).unwrap();
        backends.reverse();
        assert_eq!(build(&backends, 101).unwrap(), table);
    }

    #[test]
    fn disruption_on_removal() {
        // Share of the *other* backends' entries that change owner when one backend goes
        // (m = 65537, every removal for N=10, every 9th for N=100). Measured max/mean:
        // N=10: 0.334% / 0.279%, N=100: 0.653% / 0.581% (N=1000: 0.651% / 0.582%).
        // Bounds leave about 2x margin; a non-consistent scheme (e.g. hash mod N) moves
        // most entries.
        for (n, bound, step) in [(10u32, 0.01, 1), (100, 0.015, 9)] {
            let all = equal(n);
            let before = build(&all, M).unwrap();
            for removed in (1..=n).step_by(step).chain([n]) {
                let rest: Vec<_> = all.iter().copied().filter(|b| b.id != removed).collect();
                let after = build(&rest, M).unwrap();
                let (moved, removed_left) = moved_fraction(&before, &after, removed);
                assert_eq!(removed_left, 0, "n={n}: removed backend still in table");
                assert!(
                    moved < bound,
                    "n={n} removed={removed}: {:.3}% of other entries moved",
                    moved * 100.0
                );
                // Adding it back (anywhere in the list) restores the original table.
                let mut readded = rest.clone();
                readded.push(all[removed as usize - 1]);
                assert_eq!(build(&readded, M).unwrap(), before);
            }
        }
    }

    #[test]
    fn disruption_on_addition() {
        // Adding a backend to N: it takes about m/(N+1) entries; entries that move between
        // the old backends measured 0.264% (N=10) and 0.616% (N=100) of the table.
        for (n, bound) in [(10u32, 0.01), (100, 0.015)] {
            let all = equal(n);
            let before = build(&all, M).unwrap();
            let new_id = n + 1;
            let mut plus = all.clone();
            plus.push(MaglevBackend {
                id: new_id,
                weight: 1,
                key: backend_key(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)), 80),
            });
            let after = build(&plus, M).unwrap();
            let reshuffled = before
                .iter()
                .zip(&after)
                .filter(|&(b, a)| b != a && *a != new_id)
                .count();
            let frac = reshuffled as f64 / f64::from(M);
            assert!(
                frac < bound,
                "n={n}: {:.3}% moved between old backends",
                frac * 100.0
            );
            let ideal = f64::from(M) / f64::from(n + 1);
            let got = counts(&after)[&new_id] as f64;
            assert!(
                (got - ideal).abs() / ideal <= 0.01,
                "n={n}: new backend has {got}"
            );
        }
    }

    #[test]
    fn the_seed_decides_the_table() {
        let mut backends = equal(10);
        for b in &mut backends {
            b.weight = b.id % 3 + 1;
        }
        // Seed 0 is the table of xlb before the seed existed: upgrades move nothing.
        assert_eq!(build_seeded(&backends, M, 0), build(&backends, M));
        let a = build_seeded(&backends, M, 0x1a2b_3c4d).unwrap();
        // Another balancer, backends listed in another order, same seed: same table.
        let mut shuffled = backends.clone();
        shuffle(&mut shuffled, 7);
        assert_eq!(build_seeded(&shuffled, M, 0x1a2b_3c4d).unwrap(), a);
        // Another seed (each of the lowest and highest bit alone): another table,
        // balanced all the same.
        for other in [0, 0x1a2b_3c4c, 0x9a2b_3c4d] {
            let b = build_seeded(&backends, M, other).unwrap();
            let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            assert!(
                differ > a.len() / 2,
                "seed {other:#x}: only {differ} of {M} entries differ"
            );
            assert_eq!(counts(&b).len(), 10);
        }
        let c = counts(&a);
        for bk in &backends {
            let ideal = f64::from(M) * f64::from(bk.weight) / 20.0;
            assert!(
                (c[&bk.id] as f64 - ideal).abs() / ideal <= 0.01,
                "{bk:?}: {}",
                c[&bk.id]
            );
        }
    }

    #[test]
    fn draining_equals_removal() {
        let mut backends = equal(10);
        let rest: Vec<_> = backends.iter().copied().filter(|b| b.id != 3).collect();
        backends[2].weight = 0;
        assert_eq!(build(&backends, M).unwrap(), build(&rest, M).unwrap());
    }

    #[test]
    fn errors() {
        let ok = equal(3);
        assert_eq!(build(&ok, 65535), Err(MaglevError::NotPrime { m: 65535 }));
        assert_eq!(build(&ok, 0), Err(MaglevError::NotPrime { m: 0 }));
        assert_eq!(build(&ok, 1), Err(MaglevError::NotPrime { m: 1 }));
        assert_eq!(
            build(&ok, 3),
            Err(MaglevError::TooSmall { m: 3, backends: 3 })
        );
        assert!(build(&ok, 5).is_ok());
        // Drained backends do not count towards the size requirement.
        let mut with_drained = equal(5);
        with_drained[3].weight = 0;
        with_drained[4].weight = 0;
        assert!(build(&with_drained, 5).is_ok());

        let mut zero = equal(3);
        zero[1].id = 0;
        assert_eq!(build(&zero, M), Err(MaglevError::ZeroId));
        // Also for a drained backend.
        zero[1].weight = 0;
        assert_eq!(build(&zero, M), Err(MaglevError::ZeroId));

        let mut dup = equal(3);
        dup[2].id = 1;
        dup[2].weight = 0;
        assert_eq!(build(&dup, M), Err(MaglevError::DuplicateId(1)));

        let mut none = equal(3);
        for b in &mut none {
            b.weight = 0;
        }
        assert_eq!(build(&none, M), Err(MaglevError::NoCapacity));
        assert_eq!(build(&[], M), Err(MaglevError::NoCapacity));

        // Messages are readable.
        assert_eq!(
            MaglevError::TooSmall { m: 3, backends: 3 }.to_string(),
            "Maglev table size 3 must be larger than the number of backends with non-zero \
             weight (3)"
        );
        assert_eq!(
            MaglevError::NotPrime { m: 4 }.to_string(),
            "Maglev table size 4 is not prime"
        );
    }

    /// Build times; run with
    /// `cargo test --release -p lb-userspace maglev -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing report, not a test"]
    fn timing_report() {
        for n in [10u32, 100, 1000, 10_000] {
            for (label, weighted) in [("equal", false), ("weights 1..=10", true)] {
                let mut backends = equal(n);
                if weighted {
                    for b in &mut backends {
                        b.weight = b.id % 10 + 1;
                    }
                }
                let _ = build(&backends, M).unwrap();
                let runs = 20;
                let mut best = f64::MAX;
                let start = Instant::now();
                for _ in 0..runs {
                    let t = Instant::now();
                    std::hint::black_box(build(std::hint::black_box(&backends), M).unwrap());
                    best = best.min(t.elapsed().as_secs_f64());
                }
                let mean = start.elapsed().as_secs_f64() / f64::from(runs);
                println!(
                    "m={M} n={n:>5} {label:<14}: mean {:.3} ms, best {:.3} ms",
                    mean * 1e3,
                    best * 1e3
                );
            }
        }
    }
}
