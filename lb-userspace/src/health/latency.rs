//! Health-check latency per service and result, observed on every probe and exposed by
//! the metrics endpoint (a prometheus-client histogram family, so observing is cheap
//! and the exposition format is the library's).

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, histogram::Histogram},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub service: String,
    pub result: String,
}

/// Health-check latency per service and result, observed on every probe.
#[derive(Clone)]
pub struct ProbeLatency(pub Family<ProbeLabels, Histogram>);

impl Default for ProbeLatency {
    fn default() -> Self {
        ProbeLatency(Family::new_with_constructor(|| {
            // 1 ms .. ~4 s: loopback answers to timeouts.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 13,
            ))
        }))
    }
}

impl std::fmt::Debug for ProbeLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProbeLatency")
    }
}
