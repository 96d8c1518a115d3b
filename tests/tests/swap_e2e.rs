//! Atomic table swaps under load: client threads keep opening TCP connections through
//! the DSR balancer (topology of `dsr_e2e`, see `testbed::topology`) while the control
//! plane re-applies the service hundreds of times, cycling the backend set through
//! {be1,be2,be3} → {be1,be2} → {be1,be2} → {be2,be3} → {be2,be3} → … with the weights
//! changing on every apply. Each apply builds a complete Maglev table in a fresh inner
//! map and swaps it in with one map update (map-in-map).
//!
//! Which sets a connection may see: the main thread bumps a generation counter to
//! `2i - 1` before apply `i` and to `2i` after it returns, and each client thread reads
//! it before `connect` and after the last byte of the answer. Generation `2i` means set
//! `S_i` is live; `2i - 1` means `S_{i-1}` or `S_i`. A connection seen with generations
//! `g0..g1` had its SYN placed by one of `S_{g0/2} ..= S_{⌈g1/2⌉}`, so the backend that
//! answered must belong to their union.
//!
//! Two ways to take a backend out of a set:
//! - drain (weight 0, the backend stays configured): established flows keep their
//!   backend, so every connection must succeed, and every packet but the SYNs must hit
//!   the connection table;
//! - removal (the backend leaves the spec): its record is cleared and its flows are
//!   forgotten, so a connection in flight to it is re-placed on another backend, which
//!   resets it. Failures are allowed, but only for connections that were accepted by
//!   (or never accepted by anyone, their SYN's backend having been) a backend removed
//!   while they were open.
//!
//! Most connections are short (held 5 ms before the client half-closes); a few client
//! threads hold theirs longer than a whole apply, so that every swap has connections
//! established under the old table that still have packets to send under the new one.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use lb_userspace::config::Mode;
use testbed::topology::{try_greet, GreetError, Testbed, V4};

/// Applies per test (each one a table swap of the production-size table, M = 65537).
const APPLIES: usize = 300;
/// Client threads (one connection at a time each) and how long each of their
/// connections stays open before the client half-closes it. The short ones make up the
/// load (about 20,000 connections a run, well inside the client's ~64,000 source
/// ports); the long ones outlast a whole apply (~80 ms), so each is certainly
/// established before some swap and still open after it.
const CLIENTS: [(usize, Duration); 2] = [
    (4, Duration::from_millis(5)),
    (4, Duration::from_millis(150)),
];
/// A backend stays out for two applies in a row (the second only changes weights), so
/// a connection established on it before the first swap and still open at the end of
/// that apply ends during the next one, when it is certainly still out (see
/// [`Record::kept_a_drained_backend`]).
const SETS: [&[usize]; 5] = [&[0, 1, 2], &[0, 1], &[0, 1], &[1, 2], &[1, 2]];

/// The two tests take turns: each keeps a CPU busy with applies and another with the
/// client and servers, and the apply latencies they report should not measure each other.
static SERIAL: Mutex<()> = Mutex::new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Out {
    /// Weight 0: out of new-flow rotation, established flows stay.
    Drain,
    /// Not in the spec at all: the backend record is cleared, its flows forgotten.
    Remove,
}

/// What one client connection saw.
struct Record {
    /// When it started (records of all threads are checked in this order).
    at: Instant,
    /// Generation before connect and after the answer (or the failure).
    g0: u64,
    g1: u64,
    result: Result<(u16, String), GreetError>,
}

impl Record {
    /// Whether the connection was open across the end of an apply. (The swap itself
    /// happens a few milliseconds earlier: the kernel returns from a map-in-map update
    /// only after an RCU grace period, once no program can still read the old table.)
    fn across_an_apply_end(&self) -> bool {
        self.g1 / 2 > self.g0 / 2
    }

    /// Whether it was answered by a backend that no set live after the last apply that
    /// returned before its end contains: its SYN was then placed by an older table, so
    /// it was established on a backend that a swap took out of rotation while it was
    /// open, and it still finished there.
    fn kept_a_drained_backend(&self, tb: &Testbed) -> bool {
        let Ok((_, id)) = &self.result else {
            return false;
        };
        let after = (self.g1 / 2) as usize..=self.g1.div_ceil(2) as usize;
        self.across_an_apply_end()
            && after
                .into_iter()
                .all(|i| !live_set(tb, i).contains(id.as_str()))
    }
}

/// The service's backends for apply `i` (0 = the initial one): `(index, weight)`.
fn plan(i: usize, out: Out) -> Vec<(usize, u32)> {
    let set = SETS[i % SETS.len()];
    (0..3)
        .filter_map(|j| {
            if set.contains(&j) {
                Some((j, 1 + ((i * 7 + j * 3) % 4) as u32))
            } else {
                (out == Out::Drain).then_some((j, 0))
            }
        })
        .collect()
}

/// The backends taking new flows after apply `i`, by name.
fn live_set(tb: &Testbed, i: usize) -> BTreeSet<&'static str> {
    SETS[i % SETS.len()]
        .iter()
        .map(|&j| tb.backends[j].name)
        .collect()
}

/// The indices of the sets a connection seen with generations `g0..=g1` may have used.
fn sets_in(g0: u64, g1: u64) -> std::ops::RangeInclusive<usize> {
    (g0 / 2) as usize..=g1.div_ceil(2) as usize
}

/// What a run measured.
struct Outcome {
    tb: Testbed,
    records: Vec<Record>,
    latencies: Vec<Duration>,
    delta: testbed::topology::Delta,
    elapsed: Duration,
}

/// Builds the topology, applies set 0, runs the clients while applying sets
/// 1..=APPLIES back to back, and returns everything for checking.
fn run(tag: &str, out: Out) -> Outcome {
    let mut tb = Testbed::new(tag, Mode::Dsr, V4);
    // All ports from 1024 up for connect(): more than a run uses.
    tb.client
        .sysctl("net.ipv4.ip_local_port_range", "1024 65535");
    tb.apply(&plan(0, out));

    // Counters from before the first connection: a snapshot taken while segments are in
    // flight could count one at the client but not yet at the lb or a backend.
    let before = tb.counters();
    let generation = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let vip = tb.vip();
    let holds = CLIENTS
        .iter()
        .flat_map(|&(threads, hold)| std::iter::repeat_n(hold, threads));
    let clients: Vec<_> = holds
        .enumerate()
        .map(|(c, hold)| {
            let (generation, stop, done) = (generation.clone(), stop.clone(), done.clone());
            tb.client.spawn_thread(&format!("swap-client{c}"), move || {
                let mut records = Vec::new();
                while !stop.load(SeqCst) {
                    let at = Instant::now();
                    let g0 = generation.load(SeqCst);
                    let result = try_greet(vip, hold);
                    let g1 = generation.load(SeqCst);
                    records.push(Record { at, g0, g1, result });
                    done.fetch_add(1, SeqCst);
                }
                records
            })
        })
        .collect();
    let start = Instant::now();
    // Let the clients get going before the first swap, and run on a little after the
    // last one.
    let warm = |done: &AtomicU64| {
        let n = done.load(SeqCst) + 20;
        assert!(
            testbed::dataplane::wait_until(Duration::from_secs(10), || done.load(SeqCst) >= n),
            "the clients made no progress"
        );
    };
    warm(&done);
    let mut latencies = Vec::with_capacity(APPLIES);
    for i in 1..=APPLIES {
        let spec = tb.spec(&plan(i, out));
        generation.store(2 * i as u64 - 1, SeqCst);
        let t = Instant::now();
        tb.balancer
            .apply(&mut tb.dp, &[spec])
            .unwrap_or_else(|e| panic!("apply {i}: {e}"));
        latencies.push(t.elapsed());
        generation.store(2 * i as u64, SeqCst);
    }
    warm(&done);
    stop.store(true, SeqCst);
    let mut records: Vec<Record> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect();
    records.sort_by_key(|r| r.at);
    let elapsed = start.elapsed();
    let delta = tb.settle(&before);
    Outcome {
        tb,
        records,
        latencies,
        delta,
        elapsed,
    }
}

/// The backends removed from the service by the applies within `sets`.
fn removed_in(tb: &Testbed, sets: &std::ops::RangeInclusive<usize>) -> BTreeSet<&'static str> {
    (sets.start() + 1..=*sets.end())
        .flat_map(|i| {
            let (old, new) = (live_set(tb, i - 1), live_set(tb, i));
            old.difference(&new).copied().collect::<Vec<_>>()
        })
        .collect()
}

/// What [`check_answers`] found.
struct Answers {
    /// `(source port, backend)` of every answered connection.
    answered: Vec<(u16, String)>,
    /// Connections whose source port an earlier connection of the run had used.
    reused: usize,
}

/// Checks that every answered connection came from a backend live in its window.
///
/// A source port can recur. Under the applies' CPU load a client's two closing ACKs
/// occasionally reach the backend out of order (the veth/bridge path queues packets on
/// per-CPU backlogs); the backend's listener answers the late one, for a connection
/// already closed, with a reset (`tcp_send_reset` from TCP_LISTEN, reason TCP_FLAGS),
/// which ends the client's TIME_WAIT (`tcp_rfc1337 = 0`), so the port is free again.
/// A recurring 5-tuple is a new connection all the same: its SYN skips the connection
/// table and is placed by the live table, like any other.
fn check_answers(o: &Outcome) -> Answers {
    let mut last: HashMap<u16, Option<&str>> = HashMap::new();
    let mut answered = Vec::new();
    let mut reused = 0;
    for r in &o.records {
        let port = match &r.result {
            Ok((port, _)) => *port,
            Err(e) => match e.port {
                Some(port) => port,
                None => continue,
            },
        };
        let previous = last.get(&port).copied();
        if previous.is_some() {
            reused += 1;
        }
        if let Ok((_, id)) = &r.result {
            let allowed: BTreeSet<&str> = sets_in(r.g0, r.g1)
                .flat_map(|i| live_set(&o.tb, i))
                .collect();
            assert!(
                allowed.contains(id.as_str()),
                ":{port} answered by {id}, generations {}..{} (port used before: \
                 {previous:?}) allow only {allowed:?}",
                r.g0,
                r.g1
            );
            answered.push((port, id.clone()));
        }
        last.insert(port, r.result.as_ref().ok().map(|(_, id)| id.as_str()));
    }
    Answers { answered, reused }
}

fn median_max(latencies: &[Duration]) -> (Duration, Duration) {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    (sorted[sorted.len() / 2], sorted[sorted.len() - 1])
}

#[test]
fn drain_swaps_under_load_lose_no_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let start = Instant::now();
    let o = run("swap-drain", Out::Drain);
    let n = o.records.len();
    let failures: Vec<String> = o
        .records
        .iter()
        .filter_map(|r| r.result.as_ref().err())
        .map(|e| format!("{:?}: {}", e.kind, e.message))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {n} connections failed: {failures:?}",
        failures.len()
    );
    let Answers { answered, reused } = check_answers(&o);
    // Every packet reached a backend, nothing was dropped, and the only connection-table
    // misses were the SYNs: no established packet was ever re-placed.
    o.delta.check("drain swaps", n, n);

    let across = o.records.iter().filter(|r| r.across_an_apply_end()).count();
    let kept_drained = o
        .records
        .iter()
        .filter(|r| r.kept_a_drained_backend(&o.tb))
        .count();
    let counts = testbed::topology::tally(answered.iter().map(|(_, id)| id.as_str()));
    let accepted = o.tb.accepted();
    for (name, count) in &counts {
        assert_eq!(accepted[name], *count as u64, "accepted: {accepted:?}");
    }
    let (median, max) = median_max(&o.latencies);
    eprintln!(
        "drain swaps: {APPLIES} applies, {n} connections in {:?} ({across} open across \
         the end of an apply, {kept_drained} established on a backend that a swap drained \
         while they were open, {reused} on a recurring port), answers {counts:?}; apply \
         median {median:?}, max {max:?}; packets: client sent {}, lb forwarded {}, \
         backends received {}, conn_hit {}, conn_miss {}",
        o.elapsed,
        o.delta.client_sent,
        o.delta.tx,
        o.delta.backends_received,
        o.delta.conn_hit,
        o.delta.conn_miss
    );
    // Not a timing assertion: every long-held connection spans at least one apply, and
    // a third of the swaps drain a backend.
    assert!(
        kept_drained > 0,
        "no connection stayed on a backend drained while it was open: the test proved \
         nothing"
    );
    o.tb.teardown();
    eprintln!(
        "drain_swaps_under_load_lose_no_connection: {:?}",
        start.elapsed()
    );
}

#[test]
fn removal_swaps_under_load_only_break_connections_to_removed_backends() {
    let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let start = Instant::now();
    let o = run("swap-rm", Out::Remove);
    let n = o.records.len();
    let Answers { answered, reused } = check_answers(&o);
    // Which backends accepted each source port, less the connections that were answered:
    // what remains was accepted by a connection that then failed.
    let mut accepted_by: HashMap<u16, Vec<&'static str>> = HashMap::new();
    for (server, b) in o.tb.servers.iter().zip(&o.tb.backends) {
        for peer in server.peers() {
            accepted_by.entry(peer.port()).or_default().push(b.name);
        }
    }
    for (port, id) in &answered {
        let by = accepted_by.entry(*port).or_default();
        let i = by
            .iter()
            .position(|b| b == id)
            .unwrap_or_else(|| panic!(":{port} answered by {id}, which never accepted it"));
        by.swap_remove(i);
    }
    // Failed connections per source port: a port freed by a reset can fail again, and
    // then which of them an acceptance belongs to is unknown.
    let mut failed_on: HashMap<u16, Vec<&Record>> = HashMap::new();
    for r in &o.records {
        if let Err(GreetError {
            port: Some(port), ..
        }) = &r.result
        {
            failed_on.entry(*port).or_default().push(r);
        }
    }
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let mut unexplained = Vec::new();
    for r in &o.records {
        let Err(e) = &r.result else { continue };
        let removed = removed_in(&o.tb, &sets_in(r.g0, r.g1));
        let by: &[&str] = e
            .port
            .and_then(|p| accepted_by.get(&p))
            .map_or(&[], Vec::as_slice);
        // Explained: a backend that accepted it was removed while it was open; or no
        // backend accepted it (its SYN's backend was removed before the handshake's last
        // ACK, which then went to another backend) and one was removed meanwhile. A
        // failed connect (no port) is never explained: a SYN always finds a live backend.
        let explained = match (e.port, by) {
            (None, _) => false,
            (Some(_), []) => !removed.is_empty(),
            // Several failures on this port: each needs a removal while it was open, and
            // each backend that accepted one of them must have been removed while one
            // of them was open.
            (Some(port), by) if failed_on[&port].len() > 1 => {
                let removed_any: BTreeSet<&str> = failed_on[&port]
                    .iter()
                    .flat_map(|f| removed_in(&o.tb, &sets_in(f.g0, f.g1)))
                    .collect();
                !removed.is_empty() && by.iter().all(|b| removed_any.contains(b))
            }
            (Some(_), by) => by.iter().any(|b| removed.contains(b)),
        };
        *failures
            .entry(format!("{:?}, accepted by {by:?}", e.kind))
            .or_default() += 1;
        if !explained {
            unexplained.push(format!(
                "{}: accepted by {by:?}, generations {}..{}, removed meanwhile {removed:?}, \
                 failures on this port at generations {:?}",
                e.message,
                r.g0,
                r.g1,
                e.port.map(|p| failed_on[&p]
                    .iter()
                    .map(|f| (f.g0, f.g1))
                    .collect::<Vec<_>>())
            ));
        }
    }
    assert!(
        unexplained.is_empty(),
        "{} failures not explained by a removal: {unexplained:#?}",
        unexplained.len()
    );
    // Re-placed packets count as extra misses, so only the totals are checked here.
    let d = &o.delta;
    assert!(
        d.settled(),
        "client sent {}, lb forwarded {}, backends received {}: {d:?}",
        d.client_sent,
        d.tx,
        d.backends_received
    );
    assert_eq!(d.drop, 0, "drops: {d:?}");
    assert_eq!(d.aborted, 0, "aborted: {d:?}");
    assert_eq!(d.no_backend, 0, "no_backend: {d:?}");
    assert_eq!(d.backend_csum_errors, 0, "bad checksums: {d:?}");
    assert_eq!(d.rx, d.pass + d.tx, "rx: {d:?}");
    assert_eq!(d.conn_hit + d.conn_miss, d.tx, "{d:?}");
    assert!(d.conn_miss >= n as u64, "{d:?}");

    let failed: usize = failures.values().sum();
    let across = o.records.iter().filter(|r| r.across_an_apply_end()).count();
    assert!(across > 0, "no connection was open across an apply");
    let (median, max) = median_max(&o.latencies);
    eprintln!(
        "removal swaps: {APPLIES} applies, {n} connections in {:?} ({across} open across \
         the end of an apply, {reused} on a recurring port), {failed} failed, all explained: \
         {failures:?}; conn_miss {} for {n} connections; apply median {median:?}, max \
         {max:?}",
        o.elapsed, d.conn_miss
    );
    o.tb.teardown();
    eprintln!(
        "removal_swaps_under_load_only_break_connections_to_removed_backends: {:?}",
        start.elapsed()
    );
}
