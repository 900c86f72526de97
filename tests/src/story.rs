//! The whole pare story on realistic images, as `make demo` runs it and a
//! test runs it shortened: a private containerd with pare-snapshotter, a
//! Python web service and a batch job built from Debian's packages, each run
//! under pare with a real workload, compacted, and run again minimized on the
//! stock overlayfs snapshotter with the same results.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use pare_tools::compact::CompactSummary;

use crate::containerd::{Containerd, Ctr};
use crate::debian;
use crate::prereq::pare_bin;
use crate::snapshotter::PareSnapshotter;

/// How much of the story to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where containerd, pare-snapshotter and the images live (removed after).
    pub workdir: PathBuf,
    /// HTTP requests sent to the web service per run.
    pub requests: usize,
    /// Cold starts measured per image (0: no timing).
    pub cold_runs: usize,
    /// Write the HTML report of the web image here.
    pub html: Option<PathBuf>,
}

/// What one application showed.
#[derive(Clone, Debug)]
pub struct AppResult {
    /// Image name.
    pub image: String,
    /// Minimized image name.
    pub minimized: String,
    /// What `pare compact --json` made.
    pub summary: CompactSummary,
    /// The workload's results, original and minimized (equal).
    pub output: String,
    /// Median cold start to ready, ms: original, minimized.
    pub cold_start_ms: Option<(f64, f64)>,
}

/// Prints a step of the story.
pub fn step(text: &str) {
    eprintln!("\n\x1b[1m==> {text}\x1b[0m");
}

/// Runs the story; everything started is stopped and removed at the end.
pub fn run(opts: &Options) -> Result<Vec<AppResult>> {
    step("building the images from Debian's packages (debootstrap, cached)");
    let rootfs = debian::rootfs()?;
    let base = debian::dir_layer(&rootfs)?;
    std::fs::create_dir_all(&opts.workdir)?;
    let web_tar = opts.workdir.join("web.tar");
    let batch_tar = opts.workdir.join("batch.tar");
    debian::web_image(&base)?.write_oci_archive(debian::WEB, &web_tar)?;
    debian::batch_image(&base)?.write_oci_archive(debian::BATCH, &batch_tar)?;

    step("starting a private containerd with pare-snapshotter plugged in");
    let pare = PareSnapshotter::start(&opts.workdir.join("pare"))?;
    let containerd =
        Containerd::start(&opts.workdir.join("containerd"), &pare.containerd_config())?;
    let ctr = containerd.ctr();
    for tar in [&web_tar, &batch_tar] {
        ctr.import(tar, "pare")?;
        ctr.import(tar, "overlayfs")?;
    }
    let node = Node {
        containerd: &containerd,
        pare: &pare,
        ctr: &ctr,
    };
    let results = vec![web(&node, opts)?, batch(&node)?];
    if let Some(html) = &opts.html {
        step(&format!(
            "writing the HTML report of {} to {}",
            debian::WEB,
            html.display()
        ));
        node.pare_cmd(&[
            "report",
            "--html",
            html.to_str().context("path")?,
            &results[0].image,
            &results[0].minimized,
        ])?;
    }
    drop(containerd);
    pare.stop()?;
    Ok(results)
}

struct Node<'a> {
    containerd: &'a Containerd,
    pare: &'a PareSnapshotter,
    ctr: &'a Ctr,
}

impl Node<'_> {
    fn pare_cmd(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new(pare_bin());
        cmd.arg(args[0])
            .arg("--address")
            .arg(self.containerd.address())
            .args(["--namespace", "pare-tests"]);
        if args[0] == "compact" {
            cmd.arg("--root").arg(self.pare.root());
        }
        let out = cmd.args(&args[1..]).output()?;
        ensure!(
            out.status.success(),
            "pare {}: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    fn compact(&self, image: &str) -> Result<(String, CompactSummary)> {
        step(&format!("pare compact {image}"));
        let summary = compact_summary(&self.pare_cmd(&["compact", "--json", image])?)?;
        eprintln!("{summary}");
        Ok((summary.image.clone(), summary))
    }
}

fn web(node: &Node<'_>, opts: &Options) -> Result<AppResult> {
    step(&format!(
        "running {} under pare: start, then {} HTTP requests",
        debian::WEB,
        opts.requests
    ));
    let original = serve(node.ctr, debian::WEB, "pare", "web-profile", opts.requests)?;
    eprintln!(
        "ready after {:.0} ms; /items answered {} bytes",
        original.0,
        original.1.len()
    );
    let (minimized, summary) = node.compact(debian::WEB)?;
    step(&format!(
        "running {minimized} on the stock overlayfs snapshotter"
    ));
    let small = serve(
        node.ctr,
        &minimized,
        "overlayfs",
        "web-minimized",
        opts.requests,
    )?;
    ensure!(
        small.1 == original.1,
        "the minimized web service answers differently:\n{}\n{}",
        small.1,
        original.1
    );
    eprintln!("same answers; ready after {:.0} ms", small.0);
    let cold = cold_starts(node.ctr, &[debian::WEB, &minimized], opts.cold_runs)?;
    Ok(AppResult {
        image: debian::WEB.into(),
        minimized,
        summary,
        output: original.1,
        cold_start_ms: cold,
    })
}

fn batch(node: &Node<'_>) -> Result<AppResult> {
    step(&format!("running {} under pare", debian::BATCH));
    let original = node.ctr.run(debian::BATCH, "batch-profile", "pare", &[])?;
    eprint!("{original}");
    let (minimized, summary) = node.compact(debian::BATCH)?;
    step(&format!(
        "running {minimized} on the stock overlayfs snapshotter"
    ));
    let small = node
        .ctr
        .run(&minimized, "batch-minimized", "overlayfs", &[])?;
    ensure!(
        small == original,
        "the minimized batch job prints differently:\n{small}\n{original}"
    );
    eprintln!("same output");
    Ok(AppResult {
        image: debian::BATCH.into(),
        minimized,
        summary,
        output: original,
        cold_start_ms: None,
    })
}

/// Starts the web service in container `id`, waits for /health, sends the
/// requests; returns (ms to ready, the answers) and removes the container.
fn serve(
    ctr: &Ctr,
    image: &str,
    snapshotter: &str,
    id: &str,
    requests: usize,
) -> Result<(f64, String)> {
    let port = free_port()?;
    let started = Instant::now();
    ctr.run_detached_host_net(
        image,
        id,
        snapshotter,
        &["python3", "/app/server.py", &port.to_string()],
    )?;
    let result = (|| -> Result<(f64, String)> {
        let ready = wait_ready(port, Duration::from_secs(60))?;
        let ready_ms = (ready - started).as_secs_f64() * 1e3;
        let mut answers = String::new();
        for _ in 0..requests.max(1) {
            let (status, body) = get(port, "/items")?;
            ensure!(status == 200, "/items answered {status}");
            answers = body;
        }
        let (missing, _) = get(port, "/missing")?;
        ensure!(missing == 404, "/missing answered {missing}");
        Ok((ready_ms, format!("{answers}\n/missing: {missing}")))
    })();
    ctr.remove(id)?;
    result
}

fn cold_starts(ctr: &Ctr, images: &[&str], runs: usize) -> Result<Option<(f64, f64)>> {
    if runs == 0 {
        return Ok(None);
    }
    step(&format!(
        "cold starts on overlayfs, caches dropped, {runs} runs each, interleaved"
    ));
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); images.len()];
    for run in 0..runs {
        for (i, image) in images.iter().enumerate() {
            drop_caches()?;
            let (ms, _) = serve(ctr, image, "overlayfs", &format!("cold-{i}-{run}"), 1)?;
            times[i].push(ms);
        }
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    eprintln!(
        "median start to first response: {:.0} ms original, {:.0} ms minimized",
        medians[0], medians[1]
    );
    Ok(Some((medians[0], medians[1])))
}

/// What `pare compact --json` printed.
pub fn compact_summary(stdout: &str) -> Result<CompactSummary> {
    serde_json::from_str(stdout).with_context(|| format!("pare compact --json printed {stdout:?}"))
}

/// Median of `xs` (sorted in place).
pub fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn drop_caches() -> Result<()> {
    rustix::fs::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("cannot drop caches (needs root)")
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_ready(port: u16, timeout: Duration) -> Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((200, body)) = get(port, "/health") {
            if body == "ok" {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            bail!("the web service on port {port} did not answer /health within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1: (status, body).
pub fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Where a story runs by default.
pub fn default_workdir() -> PathBuf {
    std::env::temp_dir().join(format!("pare-demo-{}", std::process::id()))
}

/// Removes the work dir unless something is still mounted beneath it.
pub fn cleanup(workdir: &Path) {
    if !pare_fs::mountinfo::mounts_under(workdir).is_empty() {
        eprintln!(
            "keeping {}: something is still mounted beneath it",
            workdir.display()
        );
        return;
    }
    let _ = std::fs::remove_dir_all(workdir);
}
