//! The connection table sized at start-up (issue 16 item 1): `conn_table.entries` (or
//! `xlb run --conn-table-entries`) sizes the kernel map, `xlb status` and the metrics
//! show its size, memory and fill, and a restart over pins of another size resizes the
//! table with its entries, so established flows keep their backends.
//!
//! The DSR lab of `testbed::lab` driven by the real daemon.

use std::{net::TcpStream, time::Duration};

use aya::maps::MapInfo;
use testbed::{
    dataplane::wait_until,
    lab::{finish, hold, http_get_in, sample, Lab, Traffic},
};

/// Writes the lab's config with these weights and a `conn_table` of `entries`.
fn write_config(lab: &Lab, weights: &[u32], entries: u32) {
    write_table(lab, weights, serde_json::json!({ "entries": entries }));
}

/// Writes the lab's config with these weights and this `conn_table` section.
fn write_table(lab: &Lab, weights: &[u32], table: serde_json::Value) {
    lab.write_config(weights);
    let path = lab.config.path();
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    config["conn_table"] = table;
    std::fs::write(path, serde_json::to_vec(&config).unwrap()).unwrap();
}

/// The size of the connection table pinned by the lab's daemon, as the kernel has it.
fn pinned_entries(lab: &Lab) -> u32 {
    MapInfo::from_pin(lab.pins.path().join(lb_common::maps::CONNS))
        .expect("XLB_CONNS is pinned")
        .max_entries()
}

fn status_table(lab: &Lab) -> serde_json::Value {
    lab.view("status")["conn_table"].clone()
}

#[test]
fn the_configured_size_is_the_kernel_tables_and_its_fill_is_shown() {
    let mut lab = Lab::new("ct-size");
    write_config(&lab, &[1, 1, 1], 4096);
    lab.start_peer();
    lab.start_xlb(&["--metrics-listen", "127.0.0.1:9643"]);
    assert_eq!(pinned_entries(&lab), 4096);
    let table = status_table(&lab);
    assert_eq!(table["entries"], 4096, "{table}");
    // The unconfirmed table: a quarter of the connection table by default.
    assert_eq!(table["unconfirmed_entries"], 1024, "{table}");
    assert!(table["memory_bytes"].as_u64().unwrap_or(0) > 0, "{table}");

    // 120 connections make 120 entries (nothing expires them yet), counted within a
    // few seconds.
    let traffic = Traffic::start(&lab.client, lab.vip());
    assert!(traffic.progressed(120, Duration::from_secs(20)));
    let attempts = traffic.stop();
    assert!(
        wait_until(Duration::from_secs(15), || {
            status_table(&lab)["flows"].as_u64().unwrap_or(0) >= attempts.len() as u64
        }),
        "{} connections, status shows {}",
        attempts.len(),
        status_table(&lab)
    );
    let (_, metrics) = http_get_in(&lab.lb, "127.0.0.1:9643", "/metrics");
    assert_eq!(sample(&metrics, "xlb_conn_table_entries"), Some(4096.0));
    assert_eq!(
        sample(&metrics, "xlb_conn_table_unconfirmed_entries"),
        Some(1024.0)
    );
    let flows = sample(&metrics, "xlb_conn_table_flows").unwrap_or(0.0);
    assert!(flows >= attempts.len() as f64, "{flows}");
    assert!(sample(&metrics, "xlb_conn_table_memory_bytes").unwrap_or(0.0) > 0.0);
    let text = lab.view("status");
    assert!(text["conn_table"]["configured_entries"].is_null(), "{text}");
}

#[test]
fn a_restart_with_another_size_carries_established_flows_over() {
    let mut lab = Lab::new("ct-resize");
    write_config(&lab, &[1, 1, 1], 4096);
    lab.start_peer();
    let first = lab.start_xlb(&[]);
    let vip = lab.vip();
    let wanted = ["be1".to_owned(), "be2".to_owned(), "be3".to_owned()];
    let held: Vec<(String, TcpStream)> = lab.client.run(move || hold(vip, &wanted));

    // The daemon dies (the pinned program keeps forwarding); the next one starts with
    // a bigger table and be3 at weight 0: its held connection now lives only by its
    // entry (Maglev sends nothing new to be3), so it survives only if the entries
    // moved into the new table.
    lab.daemons[first].kill();
    write_config(&lab, &[1, 1, 0], 8192);
    lab.start_xlb(&[]);
    assert_eq!(pinned_entries(&lab), 8192);
    assert!(
        lab.wait_log(&["connection table resized"], 1, Duration::from_secs(10)),
        "{}",
        lab.log.read()
    );
    let line = lab.log_lines(&["connection table resized"]).remove(0);
    assert!(
        line.contains("from=4096") && line.contains("to=8192"),
        "{line}"
    );
    assert_eq!(status_table(&lab)["entries"], 8192);
    // Nothing is left set aside in the pin directory.
    assert!(!lab
        .pins
        .path()
        .join(format!("{}_RESIZING", lb_common::maps::CONNS))
        .exists());

    for (id, s) in held {
        lab.client
            .run(move || finish(s))
            .unwrap_or_else(|e| panic!("connection to {id} broke across the resize: {e}"));
    }

    // And a start with the flag overrides the config; it shrinks the table again.
    let last = lab.daemons.len() - 1;
    lab.daemons[last].kill();
    lab.start_xlb(&["--conn-table-entries", "2048"]);
    assert_eq!(pinned_entries(&lab), 2048);
    let table = status_table(&lab);
    assert_eq!(table["entries"], 2048, "{table}");
    // The config says 8192 and the flag wins: nothing is pending for the next start.
    assert!(table["configured_entries"].is_null(), "{table}");
}

/// `conn_table.timeouts` with the real daemon: the lab's connections are closed by the
/// client (FIN), so their entries expire after `tcp_closing_s` and the daemon's walk
/// deletes them: the fill falls back to zero and the metric counts them.
#[test]
fn closed_connections_leave_the_table_after_the_closing_timeout() {
    let mut lab = Lab::new("ct-expire");
    let timeouts = serde_json::json!({ "tcp_idle_s": 3600, "tcp_closing_s": 1, "udp_idle_s": 300 });
    write_table(
        &lab,
        &[1, 1, 1],
        serde_json::json!({ "entries": 4096, "timeouts": timeouts }),
    );
    lab.start_peer();
    lab.start_xlb(&["--metrics-listen", "127.0.0.1:9644"]);
    let traffic = Traffic::start(&lab.client, lab.vip());
    assert!(traffic.progressed(100, Duration::from_secs(20)));
    let attempts = traffic.stop();
    assert!(testbed::lab::failures(&attempts).is_empty());
    // A walk every 5 s: the first one at least 2 ticks (≈ 2.1 s) after the last close
    // sees every entry expired and deletes it, and counts the table empty.
    let expired = || status_table(&lab)["expired"].as_u64().unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(20), || expired()
            >= attempts.len() as u64),
        "{} closed connections, status shows {}",
        attempts.len(),
        status_table(&lab)
    );
    assert_eq!(status_table(&lab)["flows"], 0, "{}", status_table(&lab));
    let (_, metrics) = http_get_in(&lab.lb, "127.0.0.1:9644", "/metrics");
    let counted = sample(&metrics, "xlb_conn_table_expired_total").unwrap_or(0.0);
    assert!(counted >= attempts.len() as f64, "{counted}");
}

#[test]
fn a_restart_with_the_other_lru_kind_carries_established_flows_over() {
    use lb_userspace::config::conn_table::LruKind;
    let kind = |lab: &Lab| {
        LruKind::of_flags(
            MapInfo::from_pin(lab.pins.path().join(lb_common::maps::CONNS))
                .expect("XLB_CONNS is pinned")
                .map_flags(),
        )
    };
    let mut lab = Lab::new("ct-lru");
    write_config(&lab, &[1, 1, 1], 4096);
    lab.start_peer();
    let first = lab.start_xlb(&["--metrics-listen", "127.0.0.1:9645"]);
    assert_eq!(kind(&lab), LruKind::Shared, "the default");
    assert_eq!(status_table(&lab)["lru"], "shared");
    let vip = lab.vip();
    let wanted = ["be1".to_owned(), "be2".to_owned(), "be3".to_owned()];
    let held: Vec<(String, TcpStream)> = lab.client.run(move || hold(vip, &wanted));

    // As in the resize above: be3 at weight 0, so its held connection lives only by
    // its entry, which must move into the per-CPU table.
    lab.daemons[first].kill();
    write_config(&lab, &[1, 1, 0], 4096);
    lab.start_xlb(&[
        "--conn-table-lru",
        "per_cpu",
        "--metrics-listen",
        "127.0.0.1:9645",
    ]);
    assert_eq!(kind(&lab), LruKind::PerCpu);
    assert_eq!(pinned_entries(&lab), 4096);
    assert!(
        lab.wait_log(&["connection table resized"], 1, Duration::from_secs(10)),
        "{}",
        lab.log.read()
    );
    let line = lab.log_lines(&["connection table resized"]).remove(0);
    assert!(
        line.contains("from_lru=\"shared\"") || line.contains("from_lru=shared"),
        "{line}"
    );
    assert_eq!(status_table(&lab)["lru"], "per_cpu");
    let (_, metrics) = http_get_in(&lab.lb, "127.0.0.1:9645", "/metrics");
    assert_eq!(sample(&metrics, "xlb_conn_table_lru_per_cpu"), Some(1.0));
    for (id, s) in held {
        lab.client
            .run(move || finish(s))
            .unwrap_or_else(|e| panic!("connection to {id} broke across the change: {e}"));
    }
}
