//! The minimized image of the cold-start bench: the web service run under
//! pare-snapshotter with a few HTTP requests (its profile), then `pare
//! compact --json`, timed, with what it made.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use pare_tests::containerd::NAMESPACE;
use pare_tests::story::get;
use pare_tools::compact::CompactSummary;

use crate::node::Node;
use crate::registry::free_port;
use crate::time;

/// A finished `pare compact`.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// The minimized image's name in containerd.
    pub image: String,
    /// Wall time of the `pare compact` command.
    pub wall: Duration,
    /// What it printed with `--json`.
    pub summary: CompactSummary,
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
    cmd.args(["compact", "--json"])
        .arg("--address")
        .arg(&paths.address)
        .args(["--namespace", NAMESPACE])
        .arg("--root")
        .arg(&paths.pare_root)
        .arg(image);
    let (wall, stdout) = time(&mut cmd).with_context(|| format!("pare compact {image}"))?;
    let summary = pare_tests::story::compact_summary(&stdout)?;
    Ok(Compaction {
        image: summary.image.clone(),
        wall,
        summary,
    })
}
