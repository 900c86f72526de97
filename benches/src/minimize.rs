//! The minimized image of the cold-start bench: the web service run under
//! pare-snapshotter with a few HTTP requests (its profile), then `pare
//! compact`, timed, with the figures of its summary line.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use pare_tests::containerd::NAMESPACE;
use pare_tests::story::get;

use crate::node::Node;
use crate::registry::free_port;
use crate::time;

/// The figures of `pare compact`'s summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Files kept.
    pub files_kept: u64,
    /// Files in the original image.
    pub files_total: u64,
    /// File bytes kept.
    pub bytes_kept: u64,
    /// File bytes in the original image.
    pub bytes_total: u64,
    /// The minimized layer, compressed.
    pub compressed: u64,
}

impl Summary {
    /// Parses `NAME: A of B files, X of Y bytes (P%), ...; layer D (N bytes compressed); ...`.
    pub fn parse(line: &str) -> Option<Summary> {
        let (head, tail) = line.split_once(" files, ")?;
        let (files_kept, files_total) = a_of_b(head.split_whitespace().rev().take(3))?;
        let (bytes_kept, bytes_total) = a_of_b(
            tail.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev(),
        )?;
        let before = &line[..line.find(" bytes compressed)")?];
        let compressed = before.rsplit('(').next()?.parse().ok()?;
        Some(Summary {
            files_kept,
            files_total,
            bytes_kept,
            bytes_total,
            compressed,
        })
    }
}

/// `B of A`, read backwards, as (A, B).
fn a_of_b<'a>(mut rev: impl Iterator<Item = &'a str>) -> Option<(u64, u64)> {
    let b = rev.next()?.parse().ok()?;
    (rev.next()? == "of").then_some(())?;
    let a = rev.next()?.parse().ok()?;
    Some((a, b))
}

/// A finished `pare compact`.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// The minimized image's name in containerd.
    pub image: String,
    /// Wall time of the `pare compact` command.
    pub wall: Duration,
    /// Its summary line.
    pub line: String,
    /// The figures of the line.
    pub summary: Summary,
}

/// containerd's socket and pare-snapshotter's root, as `pare compact` needs them.
pub struct NodePaths {
    /// containerd's socket.
    pub address: PathBuf,
    /// pare-snapshotter's `--root` (where `profiles/` is).
    pub pare_root: PathBuf,
}

impl NodePaths {
    /// The paths of `node`.
    pub fn of(node: &Node) -> NodePaths {
        NodePaths {
            address: node.address().to_path_buf(),
            pare_root: node.pare_root().to_path_buf(),
        }
    }
}

/// Runs the web service of `image` under pare (host network), waits for it,
/// sends `GET /health`, `requests` × `GET /items` and a `GET /missing`,
/// removes the container, and returns the last `/items` answer.
pub fn profile_web(node: &Node, image: &str, requests: usize) -> anyhow::Result<String> {
    let ctr = node.ctr();
    let port = free_port()?;
    let id = "web-profile";
    ctr.run_detached_host_net(
        image,
        id,
        "pare",
        &["python3", "/app/server.py", &port.to_string()],
    )?;
    let answers = (|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(get(port, "/health"), Ok((200, ref body)) if body == "ok") {
            if Instant::now() > deadline {
                bail!("{image} did not answer GET /health under pare within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut items = String::new();
        for _ in 0..requests.max(1) {
            let (status, body) = get(port, "/items")?;
            ensure!(status == 200, "GET /items answered {status}");
            items = body;
        }
        let (status, _) = get(port, "/missing")?;
        ensure!(status == 404, "GET /missing answered {status}");
        Ok(items)
    })();
    ctr.remove(id)?;
    answers
}

/// `pare compact` of `image` on the node, timed.
pub fn compact(pare: &Path, paths: &NodePaths, image: &str) -> anyhow::Result<Compaction> {
    let mut cmd = Command::new(pare);
    cmd.arg("compact")
        .arg("--address")
        .arg(&paths.address)
        .args(["--namespace", NAMESPACE])
        .arg("--root")
        .arg(&paths.pare_root)
        .arg(image);
    let (wall, stdout) = time(&mut cmd).with_context(|| format!("pare compact {image}"))?;
    let line = stdout.lines().last().unwrap_or_default().to_string();
    let summary = Summary::parse(&line)
        .with_context(|| format!("cannot read pare compact's summary line: {line:?}"))?;
    let name = line
        .split_once(": ")
        .map(|(name, _)| name.to_string())
        .context("no image name in the summary line")?;
    Ok(Compaction {
        image: name,
        wall,
        line,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_figures_of_the_summary_line() {
        let line = "docker.io/pare-demo/web:v1-pare: 812 of 6729 files, 21003344 of 190123456 bytes (11.0%), 9 of 98 packages; layer sha256:ab (7654321 bytes compressed); manifest sha256:cd; 2.3 s";
        assert_eq!(
            Summary::parse(line),
            Some(Summary {
                files_kept: 812,
                files_total: 6729,
                bytes_kept: 21_003_344,
                bytes_total: 190_123_456,
                compressed: 7_654_321,
            })
        );
    }

    #[test]
    fn refuses_a_line_without_the_figures() {
        assert_eq!(Summary::parse("error: no profile"), None);
    }
}
