//! A base layer made of host binaries, so that test containers can run
//! something: the binaries with the shared libraries `ldd` lists, in Debian's
//! merged-`/usr` layout, plus the files and mount targets a container expects.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Layer;
use crate::prereq::which;

/// Host commands a test image usually needs.
pub const DEFAULT_TOOLS: &[&str] = &[
    "sh",
    "ls",
    "cat",
    "echo",
    "id",
    "stat",
    "sha256sum",
    "find",
    "true",
    "false",
    "sleep",
    "readlink",
    "mkdir",
    "touch",
    "rm",
    "wc",
    "head",
];

/// Top-level symlinks of Debian 12's merged `/usr`.
const MERGED_USR: &[(&str, &str)] = &[
    ("bin", "usr/bin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
    ("sbin", "usr/sbin"),
];

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// A base layer with the host's `tools` (looked up on `PATH`), their shared
/// libraries and the dynamic loader, every entry owned by root and dated
/// `mtime`; plus `/etc/{passwd,group,hostname,resolv.conf,hosts}`, `/tmp`
/// (1777), `/root` (0700) and the mount targets `/proc`, `/sys`, `/dev`, `/run`.
pub fn host_tools_layer(mtime: u64, tools: &[&str]) -> Result<Layer> {
    let mut layer = Layer::new(mtime);
    for (link, target) in MERGED_USR {
        layer.dir_all(target, 0o755);
        layer.symlink(link, target);
    }
    for dir in ["proc", "sys", "dev", "run", "etc", "var"] {
        layer.dir(dir, 0o755);
    }
    layer.dir("tmp", 0o1777);
    layer.dir("root", 0o700);
    layer.file("etc/passwd", PASSWD, 0o644);
    layer.file("etc/group", GROUP, 0o644);
    for empty in ["etc/hostname", "etc/resolv.conf", "etc/hosts"] {
        layer.file(empty, Vec::new(), 0o644);
    }
    for tool in tools {
        let path = which(tool).with_context(|| format!("{tool} is not installed on the host"))?;
        copy(&mut layer, &path)?;
        for lib in shared_libraries(&path)? {
            copy(&mut layer, &lib)?;
        }
    }
    Ok(layer)
}

/// Copies host file `path` into the layer at the same place (its directories
/// resolved: `/bin/sh` lands in `usr/bin/sh`), following a symlink chain and
/// copying each link and the final file.
fn copy(layer: &mut Layer, path: &Path) -> Result<()> {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            bail!("cannot copy {} into a layer", path.display());
        };
        let parent = std::fs::canonicalize(parent)
            .with_context(|| format!("resolve {}", parent.display()))?;
        let host = parent.join(name);
        let inside = host
            .strip_prefix("/")
            .expect("canonical paths are absolute");
        let inside = inside.to_str().context("non-UTF-8 host path")?;
        if layer.contains(inside) {
            return Ok(());
        }
        if let Some(dir) = Path::new(inside).parent().and_then(Path::to_str) {
            if !dir.is_empty() {
                layer.dir_all(dir, 0o755);
            }
        }
        let meta =
            std::fs::symlink_metadata(&host).with_context(|| format!("stat {}", host.display()))?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&host)?;
            layer.symlink(inside, target.to_str().context("non-UTF-8 link")?);
            path = parent.join(target);
            continue;
        }
        let content = std::fs::read(&host).with_context(|| format!("read {}", host.display()))?;
        layer.file(inside, content, meta.permissions().mode());
        return Ok(());
    }
    bail!("too many symlinks at {}", path.display())
}

/// The shared libraries and loader `ldd` lists for `binary` (none when static).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable") || out.stderr.is_empty() {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}
