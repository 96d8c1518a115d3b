//! `xlb stats`: every counter from the pinned maps, and its rate over an interval.

use anyhow::{Context as _, Result};
use lb_common::Stat;
use lb_userspace::{
    dataplane::{
        addr::{describe_vip, ip_from_words},
        aya::stats,
    },
    edges::control::views,
};

/// One reading of every counter in the pins.
struct Snapshot {
    global: stats::GlobalStats,
    services: Vec<stats::ServiceStats>,
    backends: Vec<stats::BackendStats>,
}

fn snapshot(pin_dir: &std::path::Path) -> Result<Snapshot> {
    let map = stats::open_pinned(pin_dir).with_context(|| {
        format!(
            "opening the pinned stats map in {} (is `xlb run` running?)",
            pin_dir.display()
        )
    })?;
    let global = stats::read_global(&map).context("reading counters")?;
    let (services, backends) =
        stats::read_pinned_flows(pin_dir).context("reading per-service counters")?;
    Ok(Snapshot {
        global,
        services,
        backends,
    })
}

/// `xlb stats`: every counter, and its rate over `interval` (0: no rates).
pub(crate) fn print_stats(pin_dir: &std::path::Path, json: bool, interval: f64) -> Result<()> {
    let first = snapshot(pin_dir)?;
    let (now, secs) = if interval > 0.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(interval));
        (snapshot(pin_dir)?, interval)
    } else {
        (
            Snapshot {
                global: first.global,
                services: first.services.clone(),
                backends: first.backends.clone(),
            },
            0.0,
        )
    };
    let rate = |new: u64, old: u64| {
        if secs > 0.0 {
            new.saturating_sub(old) as f64 / secs
        } else {
            0.0
        }
    };
    let service_before = |id: u32| {
        first
            .services
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.counter)
            .unwrap_or_default()
    };
    let backend_before = |id: u32| {
        first
            .backends
            .iter()
            .find(|b| b.id == id)
            .map(|b| b.counter)
            .unwrap_or_default()
    };
    if json {
        let flows = |c: &lb_common::FlowCounter, old: &lb_common::FlowCounter| {
            serde_json::json!({
                "packets": c.packets, "bytes": c.bytes, "new_flows": c.new_flows,
                "packets_per_s": rate(c.packets, old.packets),
                "bits_per_s": rate(c.bytes, old.bytes) * 8.0,
                "new_flows_per_s": rate(c.new_flows, old.new_flows),
            })
        };
        let global: serde_json::Map<String, serde_json::Value> = Stat::ALL
            .iter()
            .map(|&stat| {
                let (c, old) = (now.global.get(stat), first.global.get(stat));
                (
                    stat.name().to_owned(),
                    serde_json::json!({
                        "packets": c.packets, "bytes": c.bytes,
                        "packets_per_s": rate(c.packets, old.packets),
                    }),
                )
            })
            .collect();
        let out = serde_json::json!({
            "interval_s": secs,
            "global": global,
            "services": now.services.iter().map(|s| serde_json::json!({
                "id": s.id, "service": describe_vip(&s.key),
                "counters": flows(&s.counter, &service_before(s.id)),
            })).collect::<Vec<_>>(),
            "backends": now.backends.iter().map(|b| serde_json::json!({
                "id": b.id,
                "address": ip_from_words(b.backend.addr, b.backend.family),
                "counters": flows(&b.counter, &backend_before(b.id)),
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let per_s = |v: f64| format!("{v:.0}");
    let rows: Vec<Vec<String>> = Stat::ALL
        .iter()
        .map(|&stat| {
            let (c, old) = (now.global.get(stat), first.global.get(stat));
            vec![
                stat.name().to_owned(),
                c.packets.to_string(),
                c.bytes.to_string(),
                per_s(rate(c.packets, old.packets)),
            ]
        })
        .collect();
    print!(
        "{}",
        views::table(&["COUNTER", "PACKETS", "BYTES", "PKT/S"], &rows)
    );
    let flow_row = |name: String, c: lb_common::FlowCounter, old: lb_common::FlowCounter| {
        vec![
            name,
            c.packets.to_string(),
            c.bytes.to_string(),
            c.new_flows.to_string(),
            per_s(rate(c.packets, old.packets)),
            per_s(rate(c.bytes, old.bytes) * 8.0),
            per_s(rate(c.new_flows, old.new_flows)),
        ]
    };
    let header = ["PACKETS", "BYTES", "NEW FLOWS", "PKT/S", "BIT/S", "FLOWS/S"];
    let rows: Vec<Vec<String>> = now
        .services
        .iter()
        .map(|s| flow_row(describe_vip(&s.key), s.counter, service_before(s.id)))
        .collect();
    println!();
    print!(
        "{}",
        views::table(&[&["SERVICE"][..], &header[..]].concat(), &rows)
    );
    let rows: Vec<Vec<String>> = now
        .backends
        .iter()
        .map(|b| {
            let addr = ip_from_words(b.backend.addr, b.backend.family)
                .map_or_else(|| "?".into(), |a| a.to_string());
            flow_row(addr, b.counter, backend_before(b.id))
        })
        .collect();
    println!();
    print!(
        "{}",
        views::table(&[&["BACKEND"][..], &header[..]].concat(), &rows)
    );
    if secs > 0.0 {
        println!(
            "
(rates over {secs} s)"
        );
    }
    Ok(())
}
