//! The snapshotter's Prometheus metrics (`--metrics-address`): gRPC latency
//! and errors counted as calls end, view starts and stops counted by the
//! mounter, and the views' state, FUSE requests and profile counters read
//! when scraped. Rendered with `prometheus-client` in the Prometheus text
//! format; [`http`] serves it.

mod counting;
pub mod http;
pub mod view_stats;
mod views;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use counting::CountingMounter;
pub use views::{ViewSource, ViewsCollector};

/// Labels of a gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

/// Labels of a failed gRPC call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    method: &'static str,
    code: String,
}

/// Labels of a view start or stop.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn rpc_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: a Prepare that starts a view takes a few hundred ms.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// What the gRPC service counts.
#[derive(Clone, Debug)]
pub struct RpcMetrics {
    duration: HistogramFamily<MethodLabels>,
    errors: Family<ErrorLabels, Counter>,
}

impl RpcMetrics {
    /// Counts a call of `method` that took `took` and failed with `code`, if it did.
    pub fn observe(&self, method: &'static str, took: Duration, code: Option<tonic::Code>) {
        self.duration
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
        if let Some(code) = code {
            self.errors
                .get_or_create(&ErrorLabels {
                    method,
                    code: format!("{code:?}"),
                })
                .inc();
        }
    }
}

/// What the view mounter counts.
#[derive(Clone, Debug, Default)]
pub struct ViewEvents {
    starts: Family<OutcomeLabels, Counter>,
    stops: Family<OutcomeLabels, Counter>,
}

impl ViewEvents {
    fn start(&self, outcome: &'static str) {
        self.starts.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    fn stop(&self, outcome: &'static str) {
        self.stops.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}

/// The registry of every metric the snapshotter serves.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpc: Arc<RpcMetrics>,
    view_events: ViewEvents,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with the gRPC and view event metrics; add the views'
    /// state with [`Metrics::collect_views`].
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let rpc = RpcMetrics {
            duration: HistogramFamily::new_with_constructor(rpc_histogram),
            errors: Family::default(),
        };
        registry.register(
            "pare_rpc_duration_seconds",
            "Time to answer a containerd Snapshots call, by method",
            rpc.duration.clone(),
        );
        registry.register(
            "pare_rpc_errors",
            "containerd Snapshots calls that failed, by method and gRPC code",
            rpc.errors.clone(),
        );
        let view_events = ViewEvents::default();
        registry.register(
            "pare_view_starts",
            "View starts, by outcome (mounted, adopted, failed)",
            view_events.starts.clone(),
        );
        registry.register(
            "pare_view_stops",
            "View stops, by outcome (stopped, detached, aborted, failed)",
            view_events.stops.clone(),
        );
        Metrics {
            registry,
            rpc: Arc::new(rpc),
            view_events,
        }
    }

    /// What the gRPC service counts into.
    pub fn rpc(&self) -> Arc<RpcMetrics> {
        self.rpc.clone()
    }

    /// What the view mounter counts into.
    pub fn view_events(&self) -> ViewEvents {
        self.view_events.clone()
    }

    /// Adds the views' state, read from `source` at each scrape.
    pub fn collect_views(&mut self, collector: ViewsCollector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// Every metric in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would be a bug
        // in a collector, and leaves a partial page.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::warn!(error = %e, "cannot render the metrics");
        }
        out
    }
}

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests;
