//! The Prometheus endpoint under a real containerd: a container that reads a
//! known set of files, scraped over loopback and parsed with a Prometheus
//! text-format parser, shows its calls, its view, its container and at
//! least its FUSE lookups and opens; once removed, the view is gone and its
//! stop counted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pare_tests::images::MTIME;
use pare_tests::mounts::Scratch;
use pare_tests::node::{PareNode, import_tools_image};
use pare_tests::oci::Layer;
use pare_tests::poll::wait_for;
use pare_tests::prereq::{PARE_NODE, privileged};
use prometheus_parse::{Sample, Scrape, Value};

const IMAGE: &str = "docker.io/pare-tests/metrics:v1";
const FILES: usize = 5;

/// `GET /metrics` on `port`, parsed.
fn scrape(port: u16) -> Result<Scrape> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP response")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    ensure!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Ok(Scrape::parse(body.lines().map(|l| Ok(l.to_string())))?)
}

/// The value of `metric` with the labels `labels` (a histogram: its count);
/// `None` when there is no such sample.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches =
        |s: &&Sample| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
    scrape.samples.iter().find(matches).map(|s| match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than == f64::INFINITY)
            .map_or(0.0, |b| b.count),
        Value::Summary(_) => f64::NAN,
    })
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[test]
fn privileged_metrics_count_the_calls_views_and_file_accesses_of_a_container() -> Result<()> {
    if !privileged(
        "privileged_metrics_count_the_calls_views_and_file_accesses_of_a_container",
        PARE_NODE,
    ) {
        return Ok(());
    }
    let port = free_port()?;
    let address = format!("127.0.0.1:{port}");
    let mut node =
        PareNode::start_with_pare_args(Scratch::new()?, &["--metrics-address", &address])?;
    node.checked(|node| {
        let mut app = Layer::new(MTIME);
        app.dir("app", 0o755);
        let mut paths = Vec::new();
        for i in 0..FILES {
            app.file(&format!("app/f{i}"), format!("{i}\n"), 0o644);
            paths.push(format!("/app/f{i}"));
        }
        let built = import_tools_image(node, IMAGE, &[], &app)?;
        let chain = built.top_chain_id().context("layers")?.to_string();
        let ctr = node.ctr();
        let script = format!("cat {} > /dev/null && exec sleep 600", paths.join(" "));
        ctr.run_detached(IMAGE, "reader", "pare", &["sh", "-c", &script])?;
        // ctr names a container's snapshot after the container.
        ctr.ctr(&[
            "snapshots",
            "--snapshotter",
            "pare",
            "mounts",
            "/mnt",
            "reader",
        ])?;

        let c = chain.as_str();
        // View servers report every second: wait for the reads to show.
        let running = wait_for(Duration::from_secs(20), "the container's opens", || {
            let s = scrape(port)?;
            let opens = value(
                &s,
                "pare_fuse_request_duration_seconds",
                &[("chain", c), ("op", "open")],
            );
            Ok(opens.is_some_and(|n| n >= FILES as f64).then_some(s))
        })?;
        let lookups = value(
            &running,
            "pare_fuse_request_duration_seconds",
            &[("chain", c), ("op", "lookup")],
        );
        ensure!(
            lookups.is_some_and(|n| n >= FILES as f64),
            "at least one lookup per file read: {lookups:?}"
        );
        ensure!(value(&running, "pare_views_mounted", &[]) == Some(1.0));
        ensure!(value(&running, "pare_view_containers", &[("chain", c)]) == Some(1.0));
        ensure!(
            value(
                &running,
                "pare_view_starts_total",
                &[("outcome", "mounted")]
            ) == Some(1.0)
        );
        ensure!(
            value(&running, "pare_profile_journal_bytes", &[("chain", c)]).is_some_and(|b| b > 0.0),
            "the profile journal has the reads"
        );
        ensure!(value(&running, "pare_profile_write_errors_total", &[("chain", c)]) == Some(0.0));
        ensure!(value(&running, "pare_profile_incomplete", &[("chain", c)]) == Some(0.0));

        ctr.remove("reader")?;
        // containerd removes the snapshot in its garbage collection, soon after.
        let after = wait_for(
            Duration::from_secs(20),
            "the container's snapshot removed",
            || {
                let s = scrape(port)?;
                let removes = value(&s, "pare_rpc_duration_seconds", &[("method", "remove")]);
                Ok(removes.is_some_and(|n| n >= 1.0).then_some(s))
            },
        )?;
        for method in ["prepare", "mounts", "remove"] {
            let calls = value(&after, "pare_rpc_duration_seconds", &[("method", method)]);
            ensure!(calls.is_some_and(|n| n >= 1.0), "{method} calls: {calls:?}");
            let errors = value(&after, "pare_rpc_errors_total", &[("method", method)]);
            ensure!(errors.is_none(), "{method} errors: {errors:?}");
        }
        ensure!(value(&after, "pare_views_mounted", &[]) == Some(0.0));
        ensure!(value(&after, "pare_view_containers", &[("chain", c)]).is_none());
        ensure!(value(&after, "pare_view_stops_total", &[("outcome", "stopped")]) == Some(1.0));
        Ok(())
    })?;
    node.stop()
}
