//! Realistic images from Debian's packages: the cached debootstrap rootfs
//! (bookworm minbase + python3, `scripts/debian-rootfs.sh`) as a base layer,
//! with an application layer on top: a small Python web service, and a
//! shell-and-coreutils batch job.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::dirtar;
use crate::oci::{BuiltLayer, Image, ImageConfig, Layer, gzip};
use pare_fs::id::Digest;

/// mtime of the application layers' entries.
pub const MTIME: u64 = 1_700_000_000;

/// Directories of the rootfs kept as empty mount targets.
const MOUNT_TARGETS: &[&str] = &["dev", "proc", "sys"];

/// The cached Debian rootfs (built by debootstrap on first use, a few minutes).
pub fn rootfs() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/debian-rootfs.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    ensure!(
        path.join("usr/bin/python3").exists(),
        "{} has no python3",
        path.display()
    );
    Ok(path)
}

/// The gzipped layer of a directory tree.
pub fn dir_layer(dir: &Path) -> Result<BuiltLayer> {
    let tar = dirtar::tar_dir(dir, MOUNT_TARGETS)?;
    let gz = gzip(&tar).with_context(|| format!("cannot gzip the layer of {}", dir.display()))?;
    Ok(BuiltLayer {
        diff_id: Digest::sha256(&tar),
        digest: Digest::sha256(&gz),
        tar,
        gz,
    })
}

/// The web service: GET /health answers `ok`; GET /items answers JSON made
/// with sqlite3, json and hashlib; anything else is a 404.
pub const SERVER_PY: &str = r#"import hashlib, json, sqlite3, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

db = sqlite3.connect(":memory:", check_same_thread=False)
db.execute("create table items (id integer primary key, name text)")
db.executemany("insert into items (name) values (?)", [(f"item-{i}",) for i in range(10)])

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            body = b"ok"
        elif self.path == "/items":
            rows = db.execute("select id, name from items order by id").fetchall()
            items = [{"id": i, "name": n, "sha": hashlib.sha256(n.encode()).hexdigest()[:12]} for i, n in rows]
            body = json.dumps({"items": items}).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"#;

/// The batch job: counts, sorts and digests a generated data set with coreutils and awk.
pub const JOB_SH: &str = r#"#!/bin/sh
set -e
seq 1 5000 | awk '{ print $1 % 7, $1 % 3 }' | sort | uniq -c | sort -rn | head -n 5
echo "lines: $(seq 1 5000 | wc -l)"
echo "digest: $(seq 1 5000 | sha256sum | cut -c1-16)"
"#;

/// Names of the demo images.
pub const WEB: &str = "docker.io/pare-demo/web:v1";
/// The batch job image.
pub const BATCH: &str = "docker.io/pare-demo/batch:v1";

/// The web service image: Debian base layer, app layer.
pub fn web_image(base: &BuiltLayer) -> Result<Image> {
    let mut app = Layer::new(MTIME);
    app.dir("app", 0o755);
    app.file("app/server.py", SERVER_PY, 0o644);
    Ok(Image::new()
        .built_layer(base.clone())
        .layer(&app)?
        .config(ImageConfig {
            cmd: vec!["python3".into(), "/app/server.py".into(), "8080".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            working_dir: Some("/app".into()),
            ..ImageConfig::default()
        }))
}

/// The batch job image: Debian base layer, job layer.
pub fn batch_image(base: &BuiltLayer) -> Result<Image> {
    let mut app = Layer::new(MTIME);
    app.dir("app", 0o755);
    app.file("app/job.sh", JOB_SH, 0o755);
    Ok(Image::new()
        .built_layer(base.clone())
        .layer(&app)?
        .config(ImageConfig {
            cmd: vec!["/app/job.sh".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            ..ImageConfig::default()
        }))
}
