//! The views' state, read at each scrape: which views are mounted and how
//! many containers use each (from the view table), and what each view
//! server reported in its stats file (FUSE requests, profile counters).

use std::path::PathBuf;
use std::sync::Arc;

use pare_fs::id::ChainId;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::view_stats::{ProfileStats, ViewStats};

/// Chains with a view and their users (the view table's status).
pub type ViewSource = Arc<dyn Fn() -> Vec<(ChainId, Vec<String>)> + Send + Sync>;

/// Reads the views' state when scraped.
pub struct ViewsCollector {
    source: ViewSource,
    views_dir: PathBuf,
}

impl std::fmt::Debug for ViewsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewsCollector")
            .field("views_dir", &self.views_dir)
            .finish_non_exhaustive()
    }
}

impl ViewsCollector {
    /// Views listed by `source`, their stats files under `views_dir`.
    pub fn new(source: ViewSource, views_dir: PathBuf) -> ViewsCollector {
        ViewsCollector { source, views_dir }
    }
}

/// A view as one scrape sees it.
struct Seen {
    chain: String,
    users: usize,
    stats: Option<ViewStats>,
}

/// A per-chain profile value: name, help, type, and how to read it.
type ProfileMetric = (
    &'static str,
    &'static str,
    MetricType,
    fn(&ProfileStats) -> u64,
);

const PROFILE_METRICS: [ProfileMetric; 6] = [
    (
        "pare_profile_journal_bytes",
        "Size of the image's profile journal in bytes",
        MetricType::Gauge,
        |p| p.journal_bytes,
    ),
    (
        "pare_profile_records_written",
        "Journal records the image's view server wrote",
        MetricType::Counter,
        |p| p.records_written,
    ),
    (
        "pare_profile_records_pending",
        "Journal records held in memory until the journal takes them",
        MetricType::Gauge,
        |p| p.records_pending,
    ),
    (
        "pare_profile_write_errors",
        "Failed writes to the image's profile journal",
        MetricType::Counter,
        |p| p.write_errors,
    ),
    (
        "pare_profile_records_lost",
        "Journal records dropped for good",
        MetricType::Counter,
        |p| p.records_lost,
    ),
    (
        "pare_profile_incomplete",
        "1 when the image's profile is marked incomplete",
        MetricType::Gauge,
        |p| u64::from(p.incomplete),
    ),
];

impl Collector for ViewsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let seen: Vec<Seen> = (self.source)()
            .into_iter()
            .map(|(chain, users)| Seen {
                stats: ViewStats::read(&self.views_dir.join(chain.mount_name())),
                chain: chain.as_str().to_string(),
                users: users.len(),
            })
            .collect();

        let mounted = ConstGauge::new(seen.len() as i64);
        mounted.encode(encoder.encode_descriptor(
            "pare_views_mounted",
            "Image views this snapshotter serves",
            None,
            mounted.metric_type(),
        )?)?;

        let mut family = encoder.encode_descriptor(
            "pare_view_containers",
            "Containers using the image's view",
            None,
            MetricType::Gauge,
        )?;
        for view in &seen {
            let labels = [("chain", view.chain.as_str())];
            ConstGauge::new(view.users as i64).encode(family.encode_family(&labels)?)?;
        }

        let mut family = encoder.encode_descriptor(
            "pare_fuse_request_duration_seconds",
            "Time a view took to answer FUSE requests, by opcode (_count: the requests)",
            None,
            MetricType::Histogram,
        )?;
        for view in &seen {
            let Some(stats) = &view.stats else { continue };
            let requests = &stats.requests;
            let bounds = requests
                .bounds_seconds
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY));
            for op in &requests.ops {
                let buckets: Vec<(f64, u64)> =
                    bounds.clone().zip(op.buckets.iter().copied()).collect();
                let labels = [("chain", view.chain.as_str()), ("op", op.op.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(op.sum_seconds, op.count, &buckets, None)?;
            }
        }

        for (name, help, kind, value) in PROFILE_METRICS {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for view in &seen {
                let Some(profile) = view.stats.as_ref().and_then(|s| s.profile.as_ref()) else {
                    continue;
                };
                let labels = [("chain", view.chain.as_str())];
                let metric = family.encode_family(&labels)?;
                match kind {
                    MetricType::Counter => ConstCounter::new(value(profile)).encode(metric)?,
                    _ => ConstGauge::new(value(profile) as i64).encode(metric)?,
                }
            }
        }
        Ok(())
    }
}
