//! The opt-in Prometheus endpoint (`xlb run --metrics-listen ADDR`): data-plane
//! counters per verdict and reason, per service and per backend, backend health and
//! health-check latencies, in the Prometheus text format (prometheus-client).
//!
//! Rendered on each scrape by the daemon's main loop (the owner of all state, reached
//! through the same request channel as the control socket), from the live maps: a
//! scrape sees the counters as they are, never a cached copy.

use std::{fmt::Write as _, net::SocketAddr, sync::Arc, time::Duration};

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

use crate::{
    balancer::Balancer,
    config::service::vip_key,
    dataplane::{addr::describe_vip, DataPlane},
    edges::control::{server::Pending, Request},
    health::Health,
    supervisor::Supervisor,
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

/// The whole exposition, as of now.
pub fn render(
    sup: &Supervisor,
    balancer: &Balancer,
    dp: &dyn DataPlane,
    vrrp: &[crate::vrrp::runtime::InstanceStatus],
) -> String {
    let mut reg = Registry::with_prefix("xlb");

    let packets = Family::<CounterLabels, Counter>::default();
    let bytes = Family::<CounterLabels, Counter>::default();
    if let Ok(global) = dp.global_stats() {
        for (name, c) in global.iter() {
            let l = CounterLabels {
                counter: name.into(),
            };
            packets.get_or_create(&l).inc_by(c.packets);
            bytes.get_or_create(&l).inc_by(c.bytes);
        }
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

    let (svc_stats, be_stats) = dp.flows().unwrap_or_default();
    let svc_packets = Family::<ServiceLabels, Counter>::default();
    let svc_bytes = Family::<ServiceLabels, Counter>::default();
    let svc_flows = Family::<ServiceLabels, Counter>::default();
    for s in &svc_stats {
        let l = ServiceLabels {
            service: describe_vip(&s.key),
        };
        svc_packets.get_or_create(&l).inc_by(s.counter.packets);
        svc_bytes.get_or_create(&l).inc_by(s.counter.bytes);
        svc_flows.get_or_create(&l).inc_by(s.counter.new_flows);
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

    let be_counters: std::collections::HashMap<u32, _> =
        be_stats.iter().map(|b| (b.id, b.counter)).collect();
    let be_packets = Family::<BackendLabels, Counter>::default();
    let be_flows = Family::<BackendLabels, Counter>::default();
    let up = Family::<BackendLabels, Gauge>::default();
    let weight = Family::<BackendLabels, Gauge>::default();
    let transitions = Family::<BackendLabels, Counter>::default();
    let probes = Family::<BackendLabels, Counter>::default();
    let failures = Family::<BackendLabels, Counter>::default();
    let effective = sup.effective().services;
    for (svc, eff) in sup.config().services.iter().zip(&effective) {
        let key = vip_key(svc);
        let service = describe_vip(&key);
        // By address, so a service of N backends costs N lookups, not N² comparisons.
        let weights: std::collections::HashMap<_, _> =
            eff.backends.iter().map(|e| (e.address, e.weight)).collect();
        for b in &svc.backends {
            let l = BackendLabels {
                service: service.clone(),
                backend: b.address.to_string(),
            };
            // Counters are per backend (all its services); shown under each service.
            if let Some(c) = balancer
                .backend_id(b.address)
                .and_then(|id| be_counters.get(&id))
            {
                be_packets.get_or_create(&l).inc_by(c.packets);
                be_flows.get_or_create(&l).inc_by(c.new_flows);
            }
            let health = sup.book().get(&(key, b.address));
            let is_up = !b.disabled && health.is_none_or(|h| h.health() == Health::Up);
            up.get_or_create(&l).set(i64::from(is_up));
            let w = weights.get(&b.address).copied().unwrap_or(0);
            weight.get_or_create(&l).set(i64::from(w));
            if let Some(h) = health {
                transitions.get_or_create(&l).inc_by(h.transitions);
                probes.get_or_create(&l).inc_by(h.probes);
                failures.get_or_create(&l).inc_by(h.failures);
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
    let restarts = Counter::<u64>::default();
    restarts.inc_by(sup.check_restarts());
    reg.register(
        "check_task_restarts",
        "Health checker tasks restarted after a panic (each one is also logged)",
        restarts,
    );
    let sync = sup.sync_status();
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
        "backend_probe_failures",
        "Health probes that failed",
        failures,
    );
    reg.register(
        "health_check_duration_seconds",
        "Health-check latency per service and result",
        sup.probe_latency().0.clone(),
    );

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

    let mut out = String::new();
    if let Err(e) = encode(&mut out, &reg) {
        let _ = writeln!(out, "# encoding failed: {e}");
    }
    out
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
