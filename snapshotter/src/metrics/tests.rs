//! Rendering: what the registry and the views' stats files come to as text.

use std::sync::Arc;
use std::time::Duration;

use pare_fs::id::{ChainId, Digest};
use pare_fs::policy::{Mode, ModeEntry, Rules, set_id};

use super::view_stats::{MissesStats, ProfileStats, ViewStats};
use super::*;
use crate::views::ViewKey;

fn sample_lines(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn rpc_calls_are_timed_by_method_and_failures_counted_by_code() {
    let metrics = Metrics::new();
    let rpc = metrics.rpc();
    rpc.observe("prepare", Duration::from_millis(2), None);
    rpc.observe("prepare", Duration::from_millis(3), None);
    rpc.observe(
        "stat",
        Duration::from_millis(1),
        Some(tonic::Code::NotFound),
    );
    let text = metrics.render();
    let mut counts = sample_lines(&text, "pare_rpc_duration_seconds_count");
    counts.sort();
    assert_eq!(
        counts,
        [
            "pare_rpc_duration_seconds_count{method=\"prepare\"} 2",
            "pare_rpc_duration_seconds_count{method=\"stat\"} 1"
        ]
    );
    assert_eq!(
        sample_lines(&text, "pare_rpc_errors_total"),
        ["pare_rpc_errors_total{method=\"stat\",code=\"NotFound\"} 1"]
    );
}

/// Every sample of `text`, parsed with a Prometheus text-format parser.
fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of the one sample of `metric` with exactly `labels` (a
/// histogram: its count); `None` when there is none, a panic when several.
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use prometheus_parse::Value;
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == metric
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than == f64::INFINITY)
                .map_or(f64::NAN, |b| b.count),
            Value::Summary(_) => f64::NAN,
        })
        .collect();
    assert!(found.len() <= 1, "{metric} {labels:?}: {found:?}");
    found.first().copied()
}

fn collected(dir: &std::path::Path, views: Vec<(ViewKey, Vec<String>)>) -> String {
    let mut metrics = Metrics::new();
    metrics.collect_views(ViewsCollector::new(
        Arc::new(move || views.clone()),
        dir.join("views"),
        dir.to_path_buf(),
    ));
    metrics.render()
}

#[test]
fn views_are_read_from_the_view_table_and_their_stats_files_at_scrape_time() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainId::from_snapshot_name("sha256:c1");
    let key = ViewKey::learn(chain.clone());
    let requests = pare_fs::view::RequestStats::default();
    let stats = ViewStats {
        pid: 1,
        requests: requests.snapshot(),
        profile: Some(ProfileStats {
            journal_bytes: 4096,
            write_errors: 3,
            incomplete: true,
            entries: 9,
            ..ProfileStats::default()
        }),
        misses: None,
    };
    std::fs::create_dir(dir.path().join("views")).unwrap();
    stats
        .write(&dir.path().join("views").join(key.mount_name()))
        .unwrap();
    let text = collected(dir.path(), vec![(key, vec!["c-1".into(), "c-2".into()])]);
    let c = chain.as_str();
    let labels = format!("chain=\"{c}\",mode=\"learn\",allowed=\"\"");
    for want in [
        "pare_views_mounted 1".to_string(),
        format!("pare_view_containers{{{labels}}} 2"),
        format!("pare_profile_journal_bytes{{{labels}}} 4096"),
        format!("pare_profile_write_errors_total{{{labels}}} 3"),
        format!("pare_profile_incomplete{{{labels}}} 1"),
        format!("pare_profile_entries{{{labels}}} 9"),
        format!("pare_fuse_request_duration_seconds_count{{{labels},op=\"lookup\"}} 0"),
        format!("pare_fuse_request_duration_seconds_bucket{{{labels},op=\"open\",le=\"+Inf\"}} 0"),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "{want} missing from\n{text}"
        );
    }
    assert_eq!(sample_lines(&text, "pare_misses"), Vec::<String>::new());
    assert_eq!(sample_lines(&text, "pare_image_mode"), Vec::<String>::new());
}

#[test]
fn views_of_one_image_in_two_modes_are_told_apart_with_their_own_stats_and_the_mode_set() {
    let dir = tempfile::tempdir().unwrap();
    let views_dir = dir.path().join("views");
    std::fs::create_dir(&views_dir).unwrap();
    let chain = ChainId::from_snapshot_name("sha256:c1");
    let set = Digest::sha256(b"allowed set");
    let learn = ViewKey::learn(chain.clone());
    let audit = ViewKey::judged(chain.clone(), Mode::Audit, set.clone());
    let enforce = ViewKey::judged(chain.clone(), Mode::Enforce, Digest::sha256(b"older set"));
    let requests = pare_fs::view::RequestStats::default().snapshot();
    ViewStats {
        pid: 1,
        requests: requests.clone(),
        profile: Some(ProfileStats {
            entries: 12,
            ..ProfileStats::default()
        }),
        misses: None,
    }
    .write(&views_dir.join(learn.mount_name()))
    .unwrap();
    ViewStats {
        pid: 2,
        requests,
        profile: None,
        misses: Some(MissesStats {
            misses: 2,
            accesses: 7,
        }),
    }
    .write(&views_dir.join(audit.mount_name()))
    .unwrap();
    // The enforce view has written no stats yet: listed, without stats.
    ModeEntry::now("app:1", chain.clone(), Mode::Audit, Rules::default())
        .write(dir.path())
        .unwrap();
    let other = ChainId::from_snapshot_name("sha256:c2");
    ModeEntry::now("other:1", other.clone(), Mode::Off, Rules::default())
        .write(dir.path())
        .unwrap();

    let text = collected(
        dir.path(),
        vec![
            (learn, vec!["c-1".into()]),
            (audit, vec!["c-2".into(), "c-3".into()]),
            (enforce, vec!["c-4".into()]),
        ],
    );
    let scrape = parse(&text);
    let c = chain.as_str();
    let id = set_id(&set);
    let learn = [("chain", c), ("mode", "learn"), ("allowed", "")];
    let audit = [("chain", c), ("mode", "audit"), ("allowed", id)];
    let enforce_id = set_id(&Digest::sha256(b"older set")).to_string();
    let enforce = [
        ("chain", c),
        ("mode", "enforce"),
        ("allowed", enforce_id.as_str()),
    ];
    assert_eq!(value(&scrape, "pare_views_mounted", &[]), Some(3.0));
    for (labels, users) in [(&learn, 1.0), (&audit, 2.0), (&enforce, 1.0)] {
        assert_eq!(
            value(&scrape, "pare_view_containers", labels),
            Some(users),
            "{labels:?}\n{text}"
        );
    }
    assert_eq!(value(&scrape, "pare_profile_entries", &learn), Some(12.0));
    assert_eq!(value(&scrape, "pare_profile_entries", &audit), None);
    assert_eq!(value(&scrape, "pare_misses", &audit), Some(2.0));
    assert_eq!(
        value(&scrape, "pare_miss_accesses_total", &audit),
        Some(7.0)
    );
    assert_eq!(value(&scrape, "pare_misses", &learn), None);
    assert_eq!(value(&scrape, "pare_misses", &enforce), None);
    assert_eq!(
        value(
            &scrape,
            "pare_fuse_request_duration_seconds",
            &[audit[0], audit[1], audit[2], ("op", "lookup")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &scrape,
            "pare_image_mode",
            &[("chain", c), ("mode", "audit")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &scrape,
            "pare_image_mode",
            &[("chain", other.as_str()), ("mode", "off")]
        ),
        Some(1.0)
    );
    assert_eq!(sample_lines(&text, "pare_image_mode").len(), 2, "{text}");
    // No two samples share a name and label set.
    let mut keys: Vec<String> = scrape
        .samples
        .iter()
        .map(|s| {
            format!("{} {:?}", s.metric, {
                let mut l: Vec<_> = s.labels.iter().collect();
                l.sort();
                l
            })
        })
        .collect();
    let all = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), all, "{text}");
}
