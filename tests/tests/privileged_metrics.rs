//! The Prometheus endpoint under a real containerd: a container that reads a
//! known set of files, scraped over loopback and parsed with a Prometheus
//! text-format parser, shows its calls, its view, its container, at least
//! its FUSE lookups and opens, and as many profile entries as the profile
//! holds; with the image set to audit, a second container that reads a file
//! outside the allowed set a known number of times gets a view of its own
//! beside the learn view, whose misses count those reads; once removed, the
//! views are gone and their stops counted.

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
/// Reads of the file outside the allowed set in audit mode.
const SECRET_READS: usize = 3;

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

/// The labels of the one sample of `metric` whose labels include `labels`.
fn labels_of(
    scrape: &Scrape,
    metric: &str,
    labels: &[(&str, &str)],
) -> Result<Vec<(String, String)>> {
    let found: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    ensure!(found.len() == 1, "one {metric} {labels:?}: {found:?}");
    let mut all: Vec<(String, String)> = found[0]
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    all.sort();
    Ok(all)
}

/// The entries of IMAGE's profile, as `pare profile show --json` counts them.
fn profile_entries(node: &PareNode) -> Result<usize> {
    let json: serde_json::Value =
        serde_json::from_str(&node.pare(&["profile", "show", "--json", IMAGE])?)?;
    Ok(json["entries"].as_array().context("entries")?.len())
}

/// IMAGE's misses as `pare misses --json` lists them: (path, kind, count).
fn listed_misses(node: &PareNode) -> Result<Vec<(String, String, u64)>> {
    let json: serde_json::Value = serde_json::from_str(&node.pare(&["misses", "--json", IMAGE])?)?;
    let mut out = Vec::new();
    for m in json["misses"].as_array().context("misses")? {
        out.push((
            m["path"].as_str().context("path")?.to_string(),
            m["kind"].as_str().context("kind")?.to_string(),
            m["count"].as_u64().context("count")?,
        ));
    }
    out.sort();
    Ok(out)
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
        app.file("app/secret", "not in the profile\n", 0o644);
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
        let learn = [("chain", c), ("mode", "learn"), ("allowed", "")];
        let with = |labels: &[(&'static str, &'static str)]| -> Vec<(&str, &str)> {
            learn.iter().chain(labels).copied().collect()
        };
        // View servers report every second: wait for the reads to show.
        let running = wait_for(Duration::from_secs(20), "the container's opens", || {
            let s = scrape(port)?;
            let opens = value(
                &s,
                "pare_fuse_request_duration_seconds",
                &with(&[("op", "open")]),
            );
            Ok(opens.is_some_and(|n| n >= FILES as f64).then_some(s))
        })?;
        let lookups = value(
            &running,
            "pare_fuse_request_duration_seconds",
            &with(&[("op", "lookup")]),
        );
        ensure!(
            lookups.is_some_and(|n| n >= FILES as f64),
            "at least one lookup per file read: {lookups:?}"
        );
        ensure!(value(&running, "pare_views_mounted", &[]) == Some(1.0));
        ensure!(value(&running, "pare_view_containers", &learn) == Some(1.0));
        ensure!(
            value(&running, "pare_image_mode", &[("chain", c)]).is_none(),
            "no mode was set for the image"
        );
        ensure!(
            value(
                &running,
                "pare_view_starts_total",
                &[("outcome", "mounted")]
            ) == Some(1.0)
        );
        ensure!(
            value(&running, "pare_profile_journal_bytes", &learn).is_some_and(|b| b > 0.0),
            "the profile journal has the reads"
        );
        ensure!(value(&running, "pare_profile_write_errors_total", &learn) == Some(0.0));
        ensure!(value(&running, "pare_profile_incomplete", &learn) == Some(0.0));
        // Entries: as many as the profile holds once the writer flushed them.
        let entries = wait_for(
            Duration::from_secs(20),
            "profile entries as pare profile show counts them",
            || {
                let metric = value(&scrape(port)?, "pare_profile_entries", &learn);
                let shown = profile_entries(node)?;
                Ok((metric == Some(shown as f64)).then_some(shown))
            },
        )?;
        ensure!(
            entries > FILES,
            "the reads and the tools: {entries} entries"
        );

        // Audit: a view of its own for the next container, beside the learn view.
        node.pare(&["mode", IMAGE, "audit"])?;
        let s = scrape(port)?;
        ensure!(value(&s, "pare_image_mode", &[("chain", c), ("mode", "audit")]) == Some(1.0));
        ensure!(labels_of(&s, "pare_image_mode", &[("chain", c)])?.len() == 2);
        let reads = ["cat /app/secret > /dev/null"; SECRET_READS].join(" && ");
        let script = format!("{reads} && exec sleep 600");
        ctr.run_detached(IMAGE, "auditor", "pare", &["sh", "-c", &script])?;
        let want_read = (
            "/app/secret".to_string(),
            "read".to_string(),
            SECRET_READS as u64,
        );
        let (audited, listed) = wait_for(
            Duration::from_secs(30),
            "the reads outside the allowed set counted as misses",
            || {
                let listed = listed_misses(node)?;
                if !listed.contains(&want_read) {
                    return Ok(None);
                }
                let s = scrape(port)?;
                let accesses: u64 = listed.iter().map(|(_, _, n)| n).sum();
                let counted = value(
                    &s,
                    "pare_miss_accesses_total",
                    &[("chain", c), ("mode", "audit")],
                );
                Ok((counted == Some(accesses as f64)).then_some((s, listed)))
            },
        )?;
        // The read misses and the lookup of the name; nothing else is new.
        let kinds: Vec<(&str, &str)> = listed
            .iter()
            .map(|(p, k, _)| (p.as_str(), k.as_str()))
            .collect();
        ensure!(
            kinds == [("/app/secret", "lookup"), ("/app/secret", "read")],
            "{listed:?}"
        );
        let audit_labels = labels_of(&audited, "pare_misses", &[("chain", c), ("mode", "audit")])?;
        let allowed = audit_labels
            .iter()
            .find(|(k, _)| k == "allowed")
            .map(|(_, v)| v.clone())
            .context("allowed label")?;
        ensure!(
            allowed.len() == 12 && allowed.bytes().all(|b| b.is_ascii_hexdigit()),
            "the allowed set's id: {allowed:?}"
        );
        let audit = [
            ("chain", c),
            ("mode", "audit"),
            ("allowed", allowed.as_str()),
        ];
        ensure!(value(&audited, "pare_misses", &audit) == Some(2.0));
        ensure!(
            value(&audited, "pare_miss_accesses_total", &audit)
                .is_some_and(|n| n >= SECRET_READS as f64 + 1.0),
            "{SECRET_READS} reads and at least one lookup"
        );
        ensure!(value(&audited, "pare_misses", &learn).is_none());
        ensure!(value(&audited, "pare_profile_entries", &audit).is_none());
        ensure!(value(&audited, "pare_views_mounted", &[]) == Some(2.0));
        ensure!(value(&audited, "pare_view_containers", &learn) == Some(1.0));
        ensure!(value(&audited, "pare_view_containers", &audit) == Some(1.0));
        ensure!(
            value(
                &audited,
                "pare_fuse_request_duration_seconds",
                &[audit[0], audit[1], audit[2], ("op", "open")]
            )
            .is_some_and(|n| n >= SECRET_READS as f64),
            "the audit view's own opens"
        );
        ctr.remove("auditor")?;

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
        let after = wait_for(Duration::from_secs(20), "both views stopped", || {
            let s = scrape(port)?;
            Ok((value(&s, "pare_views_mounted", &[]) == Some(0.0)).then_some(s))
        })?;
        ensure!(value(&after, "pare_view_containers", &[("chain", c)]).is_none());
        ensure!(value(&after, "pare_misses", &[("chain", c)]).is_none());
        ensure!(value(&after, "pare_view_starts_total", &[("outcome", "mounted")]) == Some(2.0));
        ensure!(value(&after, "pare_view_stops_total", &[("outcome", "stopped")]) == Some(2.0));
        Ok(())
    })?;
    node.stop()
}
