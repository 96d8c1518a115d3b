//! The opt-in Prometheus endpoint (`xlb run --metrics-listen ADDR`): data-plane
//! counters per verdict and reason, per service and per backend, backend health and
//! health-check latencies, in the Prometheus text format (prometheus-client).
//!
//! Each scrape asks the daemon's main loop (the owner of all state, reached through the
//! same request channel as the control socket) for a [`Snapshot`] of the live maps and
//! the health book, copied as numbers; the text is built and encoded off the loop, so
//! a scrape of 10,000 backends delays no probe result or VRRP event by its rendering.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use http_body_util::Full;
use hyper::{body::Bytes, server::conn::http1, service::service_fn, Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    net::TcpListener,
    sync::{mpsc, Semaphore},
};

use lb_common::{FlowCounter, VipKey};

use crate::{
    balancer::Balancer,
    config::service::vip_key,
    dataplane::{addr::describe_vip, DataPlane},
    edges::control::{server::Pending, Request},
    health::{latency::ProbeLatency, Health},
    supervisor::{convergence::SyncStatus, Supervisor},
    vrrp::runtime::InstanceStatus,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CounterLabels {
    counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    service: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    instance: String,
    reason: String,
}

/// What a scrape shows, copied out of the daemon's state and the maps: numbers only,
/// so taking it is cheap and the text (tens of thousands of series with 10,000
/// backends) is built and encoded off the daemon's main loop ([`Snapshot::render`]).
pub struct Snapshot {
    global: Vec<(&'static str, u64, u64)>,
    services: Vec<(VipKey, FlowCounter)>,
    /// Per configured service: its key and its backends.
    backends: Vec<(VipKey, Vec<BackendRow>)>,
    check_restarts: u64,
    /// Backends without a configured MAC whose next hop is unresolved.
    next_hops_unresolved: u64,
    conn_table: Option<crate::dataplane::ConnTableUse>,
    sync: SyncStatus,
    probe_latency: ProbeLatency,
    vrrp: Vec<InstanceStatus>,
}

struct BackendRow {
    address: IpAddr,
    /// Data-plane counters of its id (all its services), if it has one.
    counter: Option<FlowCounter>,
    up: bool,
    weight: u32,
    /// transitions, probes, failures (checked backends only).
    health: Option<(u64, u64, u64)>,
}

/// Takes a [`Snapshot`]: on the main loop, which owns the state.
pub fn snapshot(
    sup: &Supervisor,
    balancer: &Balancer,
    dp: &dyn DataPlane,
    vrrp: &[InstanceStatus],
) -> Snapshot {
    let global = dp
        .global_stats()
        .map(|g| g.iter().map(|(n, c)| (n, c.packets, c.bytes)).collect())
        .unwrap_or_default();
    let (svc_stats, be_stats) = dp.flows().unwrap_or_default();
    let be_counters: HashMap<u32, FlowCounter> =
        be_stats.iter().map(|b| (b.id, b.counter)).collect();
    let effective = sup.effective().services;
    let backends = sup
        .config()
        .services
        .iter()
        .zip(&effective)
        .map(|(svc, eff)| {
            let key = vip_key(svc);
            // By address, so a service of N backends costs N lookups, not N² comparisons.
            let weights: HashMap<IpAddr, u32> =
                eff.backends.iter().map(|e| (e.address, e.weight)).collect();
            let rows = svc
                .backends
                .iter()
                .map(|b| {
                    let health = sup.book().get(&(key, b.address));
                    BackendRow {
                        address: b.address,
                        counter: balancer
                            .backend_id(b.address)
                            .and_then(|id| be_counters.get(&id).copied()),
                        up: !b.disabled && health.is_none_or(|h| h.health() == Health::Up),
                        weight: weights.get(&b.address).copied().unwrap_or(0),
                        health: health.map(|h| (h.transitions, h.probes, h.failures)),
                    }
                })
                .collect();
            (key, rows)
        })
        .collect();
    Snapshot {
        global,
        services: svc_stats.iter().map(|s| (s.key, s.counter)).collect(),
        backends,
        check_restarts: sup.check_restarts(),
        next_hops_unresolved: sup.next_hops().unresolved() as u64,
        conn_table: dp.conn_table().ok(),
        sync: sup.sync_status(),
        probe_latency: sup.probe_latency().clone(),
        vrrp: vrrp.to_vec(),
    }
}

impl Snapshot {
    /// The exposition text (blocking work: run it off the main loop).
    pub fn render(&self) -> String {
        let mut reg = Registry::with_prefix("xlb");
        self.register_datapath(&mut reg);
        self.register_backends(&mut reg);
        self.register_daemon(&mut reg);
        register_vrrp(&mut reg, &self.vrrp);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &reg) {
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }

    fn register_datapath(&self, reg: &mut Registry) {
        let packets = Family::<CounterLabels, Counter>::default();
        let bytes = Family::<CounterLabels, Counter>::default();
        for (name, p, b) in &self.global {
            let l = CounterLabels {
                counter: (*name).into(),
            };
            packets.get_or_create(&l).inc_by(*p);
            bytes.get_or_create(&l).inc_by(*b);
        }
        reg.register(
            "datapath_packets",
            "Packets by data-plane counter: verdicts (rx, pass, drop, tx, redirect, aborted) and reasons",
            packets,
        );
        reg.register(
            "datapath_bytes",
            "Bytes by data-plane counter (frame length as XDP saw it)",
            bytes,
        );

        let svc_packets = Family::<ServiceLabels, Counter>::default();
        let svc_bytes = Family::<ServiceLabels, Counter>::default();
        let svc_flows = Family::<ServiceLabels, Counter>::default();
        for (key, c) in &self.services {
            let l = ServiceLabels {
                service: describe_vip(key),
            };
            svc_packets.get_or_create(&l).inc_by(c.packets);
            svc_bytes.get_or_create(&l).inc_by(c.bytes);
            svc_flows.get_or_create(&l).inc_by(c.new_flows);
        }
        reg.register(
            "service_packets",
            "Packets forwarded per service",
            svc_packets,
        );
        reg.register("service_bytes", "Bytes forwarded per service", svc_bytes);
        reg.register(
            "service_new_flows",
            "New flows (connection-table misses) per service",
            svc_flows,
        );
    }

    fn register_backends(&self, reg: &mut Registry) {
        let be_packets = Family::<BackendLabels, Counter>::default();
        let be_flows = Family::<BackendLabels, Counter>::default();
        let up = Family::<BackendLabels, Gauge>::default();
        let weight = Family::<BackendLabels, Gauge>::default();
        let transitions = Family::<BackendLabels, Counter>::default();
        let probes = Family::<BackendLabels, Counter>::default();
        let failures = Family::<BackendLabels, Counter>::default();
        for (key, rows) in &self.backends {
            let service = describe_vip(key);
            for b in rows {
                let l = BackendLabels {
                    service: service.clone(),
                    backend: b.address.to_string(),
                };
                // Counters are per backend (all its services); shown under each service.
                if let Some(c) = &b.counter {
                    be_packets.get_or_create(&l).inc_by(c.packets);
                    be_flows.get_or_create(&l).inc_by(c.new_flows);
                }
                up.get_or_create(&l).set(i64::from(b.up));
                weight.get_or_create(&l).set(i64::from(b.weight));
                if let Some((t, p, f)) = b.health {
                    transitions.get_or_create(&l).inc_by(t);
                    probes.get_or_create(&l).inc_by(p);
                    failures.get_or_create(&l).inc_by(f);
                }
            }
        }
        reg.register(
            "backend_packets",
            "Packets forwarded to the backend (all its services)",
            be_packets,
        );
        reg.register(
            "backend_new_flows",
            "New flows sent to the backend (all its services)",
            be_flows,
        );
        reg.register(
            "backend_up",
            "1 if the backend is enabled and passes its check (or has none)",
            up,
        );
        reg.register(
            "backend_weight",
            "Weight the data plane uses now (0 while drained)",
            weight,
        );
        reg.register(
            "backend_transitions",
            "Health transitions (up <-> down)",
            transitions,
        );
        reg.register("backend_probes", "Health probes run", probes);
        reg.register(
            "backend_probe_failures",
            "Health probes that failed",
            failures,
        );
    }

    fn register_daemon(&self, reg: &mut Registry) {
        let restarts = Counter::<u64>::default();
        restarts.inc_by(self.check_restarts);
        reg.register(
            "check_task_restarts",
            "Health checker tasks restarted after a panic (each one is also logged)",
            restarts,
        );
        let unresolved = Gauge::<i64>::default();
        unresolved.set(i64::try_from(self.next_hops_unresolved).unwrap_or(i64::MAX));
        reg.register(
            "next_hops_unresolved",
            "Backends without a configured MAC whose next hop the kernel has not resolved: they take no new flows (xlb backends shows why)",
            unresolved,
        );
        if let Some(table) = &self.conn_table {
            let gauge = |value: u64| {
                let g = Gauge::<i64>::default();
                g.set(i64::try_from(value).unwrap_or(i64::MAX));
                g
            };
            reg.register(
                "conn_table_entries",
                "Flows the connection table holds before the least recently used are evicted",
                gauge(u64::from(table.capacity)),
            );
            reg.register(
                "conn_table_lru_per_cpu",
                "1 when the connection tables evict from one LRU list per CPU (conn_table.lru: per_cpu), 0 when from one shared list",
                gauge(u64::from(table.lru == crate::config::conn_table::LruKind::PerCpu)),
            );
            reg.register(
                "conn_table_unconfirmed_entries",
                "Flows seen once (a SYN, a first datagram) the unconfirmed table holds until their next packet confirms them",
                gauge(u64::from(table.unconfirmed_capacity)),
            );
            if let Some(bytes) = table.unconfirmed_memory_bytes {
                reg.register(
                    "conn_table_unconfirmed_memory_bytes",
                    "Kernel memory charged to the unconfirmed table",
                    gauge(bytes),
                );
            }
            if let Some(expired) = table.expired {
                let c = Counter::<u64>::default();
                c.inc_by(expired);
                reg.register(
                    "conn_table_expired",
                    "Connection entries deleted because their flow was idle beyond its timeout (conn_table.timeouts)",
                    c,
                );
            }
            if let Some(flows) = table.flows {
                reg.register(
                    "conn_table_flows",
                    "Flows in the connection table at the last count (taken every 5 s or more)",
                    gauge(flows),
                );
            }
            if let Some(bytes) = table.memory_bytes {
                reg.register(
                    "conn_table_memory_bytes",
                    "Kernel memory charged to the connection table",
                    gauge(bytes),
                );
            }
        }
        let sync = &self.sync;
        let in_sync = Gauge::<i64>::default();
        in_sync.set(i64::from(sync.in_sync));
        reg.register(
            "dataplane_in_sync",
            "1 while the data plane serves the desired state; 0 while an apply is being retried or an egress interface is missing",
            in_sync,
        );
        let apply_failures = Counter::<u64>::default();
        apply_failures.inc_by(sync.failures_total);
        reg.register(
            "dataplane_apply_failures",
            "Applies to the data plane that failed (each one is retried with backoff)",
            apply_failures,
        );
        reg.register(
            "health_check_duration_seconds",
            "Health-check latency per service and result",
            self.probe_latency.0.clone(),
        );
    }
}

fn register_vrrp(reg: &mut Registry, vrrp: &[InstanceStatus]) {
    let state = Family::<InstanceLabels, Gauge>::default();
    let priority = Family::<InstanceLabels, Gauge>::default();
    let sent = Family::<InstanceLabels, Counter>::default();
    let received = Family::<InstanceLabels, Counter>::default();
    let dropped = Family::<DropLabels, Counter>::default();
    let task_restarts = Family::<InstanceLabels, Counter>::default();
    for v in vrrp {
        let l = InstanceLabels {
            instance: v.name.clone(),
        };
        let code = match v.state.as_str() {
            "master" => 2,
            "backup" => 1,
            _ => 0,
        };
        state.get_or_create(&l).set(code);
        priority.get_or_create(&l).set(i64::from(v.priority));
        sent.get_or_create(&l).inc_by(v.adverts_sent);
        received.get_or_create(&l).inc_by(v.adverts_received);
        task_restarts.get_or_create(&l).inc_by(v.task_restarts);
        for (reason, n) in &v.invalid {
            dropped
                .get_or_create(&DropLabels {
                    instance: v.name.clone(),
                    reason: reason.clone(),
                })
                .inc_by(*n);
        }
    }
    reg.register(
        "vrrp_state",
        "VRRP state: 0 initialize, 1 backup, 2 master",
        state,
    );
    reg.register(
        "vrrp_priority",
        "Effective VRRP priority (after tracking)",
        priority,
    );
    reg.register("vrrp_adverts_sent", "VRRP adverts sent", sent);
    reg.register(
        "vrrp_task_restarts",
        "VRRP instance tasks restarted (as backup) after a panic (each one is also logged)",
        task_restarts,
    );
    reg.register(
        "vrrp_adverts_received",
        "Valid VRRP adverts received",
        received,
    );
    reg.register(
        "vrrp_adverts_dropped",
        "VRRP adverts dropped, by reason",
        dropped,
    );
}

/// Serves `GET /metrics` on `addr`, forwarding each scrape to the main loop.
pub async fn serve(addr: SocketAddr, tx: mpsc::Sender<Pending>) -> Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint {addr}"))?;
    tracing::info!(%addr, "metrics on http://{addr}/metrics");
    tokio::spawn(accept_loop(listener, tx));
    Ok(())
}

/// Connections served at once; more wait in the listen backlog until one ends. A
/// scraper needs one; the cap keeps a flood of idle clients from taking the daemon's
/// file descriptors (its health checks need them).
const MAX_CONNECTIONS: usize = 64;
/// A client gets this long to send a request's headers (on a new or kept-alive
/// connection), so idle connections give their slot back.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection, whatever it does.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// Pause after a failed accept (EMFILE and the like) instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let tx = tx.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &tx).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

async fn answer(
    req: &hyper::Request<hyper::body::Incoming>,
    tx: &mpsc::Sender<Pending>,
) -> hyper::Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        r
    };
    if req.method() != Method::GET || req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "only GET /metrics\n".into());
    }
    let (done, answer) = tokio::sync::oneshot::channel();
    if tx.send((Request::Metrics, done)).await.is_err() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match answer.await {
        Ok(r) if r.ok => reply(
            StatusCode::OK,
            r.data
                .and_then(|d| d.as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
        _ => reply(StatusCode::INTERNAL_SERVER_ERROR, "no answer\n".into()),
    }
}
