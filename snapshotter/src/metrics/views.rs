//! The views' state, read at each scrape: which views are mounted and how
//! many containers use each (from the view table), what each view server
//! reported in its stats file (FUSE requests, profile counters, misses), and
//! each image's mode (from the modes store). A view is labelled by its key:
//! `chain`, `mode` and `allowed` (the allowed set's id, empty in learn mode),
//! so the views of one image in different modes or sets are told apart.

use std::path::PathBuf;
use std::sync::Arc;

use pare_fs::policy::{modes, set_id};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::view_stats::{MissesStats, ProfileStats, ViewStats};
use crate::views::ViewKey;

/// Each view and its users (the view table's keys).
pub type ViewSource = Arc<dyn Fn() -> Vec<(ViewKey, Vec<String>)> + Send + Sync>;

/// Reads the views' state when scraped.
pub struct ViewsCollector {
    source: ViewSource,
    views_dir: PathBuf,
    root: PathBuf,
}

impl std::fmt::Debug for ViewsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewsCollector")
            .field("views_dir", &self.views_dir)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl ViewsCollector {
    /// Views listed by `source`, their stats files under `views_dir`, the
    /// images' modes in the modes store under `root`.
    pub fn new(source: ViewSource, views_dir: PathBuf, root: PathBuf) -> ViewsCollector {
        ViewsCollector {
            source,
            views_dir,
            root,
        }
    }
}

/// A view as one scrape sees it.
struct Seen {
    chain: String,
    mode: &'static str,
    allowed: String,
    users: usize,
    stats: Option<ViewStats>,
}

impl Seen {
    fn new(key: &ViewKey, users: usize, views_dir: &std::path::Path) -> Seen {
        Seen {
            chain: key.chain.as_str().to_string(),
            mode: key.mode.name(),
            allowed: key.allowed.as_ref().map_or("", set_id).to_string(),
            users,
            stats: ViewStats::read(&views_dir.join(key.mount_name())),
        }
    }

    /// The view's labels: its key.
    fn labels(&self) -> [(&'static str, &str); 3] {
        [
            ("chain", self.chain.as_str()),
            ("mode", self.mode),
            ("allowed", self.allowed.as_str()),
        ]
    }
}

/// A per-view value of a stats file section `T`: name, help, type, and how
/// to read it.
type SectionMetric<T> = (&'static str, &'static str, MetricType, fn(&T) -> u64);

const PROFILE_METRICS: [SectionMetric<ProfileStats>; 7] = [
    (
        "pare_profile_entries",
        "Distinct paths the image's profile holds (touched other than as absent)",
        MetricType::Gauge,
        |p| p.entries,
    ),
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

const MISSES_METRICS: [SectionMetric<MissesStats>; 2] = [
    (
        "pare_misses",
        "Distinct misses (path and kind of access outside the allowed set) of an audit or enforce view",
        MetricType::Gauge,
        |m| m.misses,
    ),
    (
        "pare_miss_accesses",
        "Accesses outside the allowed set an audit or enforce view counted",
        MetricType::Counter,
        |m| m.accesses,
    ),
];

impl ViewsCollector {
    /// `pare_image_mode`: 1 for each image's mode set in the modes store.
    fn encode_modes(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let entries = match modes::list(&self.root) {
            Ok((entries, errors)) => {
                for e in errors {
                    tracing::debug!(error = %e, "metrics skip an unreadable mode entry");
                }
                entries
            }
            Err(e) => {
                tracing::debug!(error = %e, "metrics cannot list the modes");
                Vec::new()
            }
        };
        let mut family = encoder.encode_descriptor(
            "pare_image_mode",
            "1 for the mode set for the image (pare mode); images without one are not listed",
            None,
            MetricType::Gauge,
        )?;
        for entry in &entries {
            let labels = [("chain", entry.chain.as_str()), ("mode", entry.mode.name())];
            ConstGauge::new(1).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Collector for ViewsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let seen: Vec<Seen> = (self.source)()
            .iter()
            .map(|(key, users)| Seen::new(key, users.len(), &self.views_dir))
            .collect();
        self.encode_modes(&mut encoder)?;

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
            ConstGauge::new(view.users as i64).encode(family.encode_family(&view.labels())?)?;
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
                let [chain, mode, allowed] = view.labels();
                let labels = [chain, mode, allowed, ("op", op.op.as_str())];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(op.sum_seconds, op.count, &buckets, None)?;
            }
        }

        encode_section(&mut encoder, &seen, &PROFILE_METRICS, |s| {
            s.profile.as_ref()
        })?;
        encode_section(&mut encoder, &seen, &MISSES_METRICS, |s| s.misses.as_ref())
    }
}

/// The `metrics` of each view whose stats file has the section `section`
/// picks (views without it are not listed).
fn encode_section<T>(
    encoder: &mut DescriptorEncoder,
    seen: &[Seen],
    metrics: &[SectionMetric<T>],
    section: fn(&ViewStats) -> Option<&T>,
) -> Result<(), std::fmt::Error> {
    for (name, help, kind, value) in metrics {
        let mut family = encoder.encode_descriptor(name, help, None, *kind)?;
        for view in seen {
            let Some(stats) = view.stats.as_ref().and_then(section) else {
                continue;
            };
            let labels = view.labels();
            let metric = family.encode_family(&labels)?;
            match kind {
                MetricType::Counter => ConstCounter::new(value(stats)).encode(metric)?,
                _ => ConstGauge::new(value(stats) as i64).encode(metric)?,
            }
        }
    }
    Ok(())
}
