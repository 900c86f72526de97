//! Rendering: what the registry and the views' stats files come to as text.

use std::sync::Arc;
use std::time::Duration;

use pare_fs::id::ChainId;

use super::view_stats::{ProfileStats, ViewStats};
use super::*;

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

#[test]
fn views_are_read_from_the_view_table_and_their_stats_files_at_scrape_time() {
    let dir = tempfile::tempdir().unwrap();
    let chain = ChainId::from_snapshot_name("sha256:c1");
    let requests = pare_fs::view::RequestStats::default();
    let stats = ViewStats {
        pid: 1,
        requests: requests.snapshot(),
        profile: Some(ProfileStats {
            journal_bytes: 4096,
            write_errors: 3,
            incomplete: true,
            ..ProfileStats::default()
        }),
    };
    stats.write(&dir.path().join(chain.mount_name())).unwrap();
    let listed = chain.clone();
    let mut metrics = Metrics::new();
    metrics.collect_views(ViewsCollector::new(
        Arc::new(move || vec![(listed.clone(), vec!["c-1".into(), "c-2".into()])]),
        dir.path().to_path_buf(),
    ));
    let text = metrics.render();
    let c = chain.as_str();
    for want in [
        "pare_views_mounted 1".to_string(),
        format!("pare_view_containers{{chain=\"{c}\"}} 2"),
        format!("pare_profile_journal_bytes{{chain=\"{c}\"}} 4096"),
        format!("pare_profile_write_errors_total{{chain=\"{c}\"}} 3"),
        format!("pare_profile_incomplete{{chain=\"{c}\"}} 1"),
        format!("pare_fuse_request_duration_seconds_count{{chain=\"{c}\",op=\"lookup\"}} 0"),
        format!(
            "pare_fuse_request_duration_seconds_bucket{{chain=\"{c}\",op=\"open\",le=\"+Inf\"}} 0"
        ),
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "{want} missing from\n{text}"
        );
    }
}
