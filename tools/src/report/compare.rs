//! The figures of a report: both images' totals, their ratios, and what was
//! removed, by directory and by package.
//!
//! Definitions:
//! - *files* are the non-directories of the merged tree (one per name);
//!   *bytes* is their content, each hardlink group counted once;
//! - a file is *removed* when its path is not a non-directory of the
//!   minimized image; a hardlink group's bytes are removed when none of its
//!   names remains, and are counted in the directory of its first name;
//! - directories are grouped by the first three components of a file's
//!   parent under `/usr` (`/usr/lib/python3.11`, `/usr/share/doc`) and the
//!   first two elsewhere (`/etc/ssl`, `/var/lib`); files at the root count
//!   for `/`;
//! - a package is removed when it is installed in the original and not in
//!   the minimized image; its size is its `Installed-Size`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::hardening::{self, Hardening};
use super::merge::{Merged, Node};
use super::misses::{self, Misses};
use crate::misses::ImageMisses;

/// How many directories and packages the report lists.
pub const TOP: usize = 15;

/// An image read for the report.
#[derive(Debug)]
pub struct ImageView {
    /// Its figures.
    pub summary: ImageSummary,
    /// Its merged tree.
    pub tree: Merged,
    /// Installed packages by id, with their size in bytes.
    pub packages: BTreeMap<String, u64>,
}

/// The figures of one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageSummary {
    /// The image name.
    pub name: String,
    /// Digest of its manifest.
    pub manifest_digest: String,
    /// Number of layers.
    pub layers: u64,
    /// Sum of the layer blob sizes.
    pub compressed_bytes: u64,
    /// Sum of the layer tar sizes.
    pub uncompressed_bytes: u64,
    /// Non-directories of the merged tree.
    pub files: u64,
    /// Bytes of file content in the merged tree (hardlinks once).
    pub bytes: u64,
    /// Installed dpkg packages (0 without a dpkg database).
    pub packages: u64,
}

/// Minimized / original for each figure; `None` (JSON `null`) when the
/// original's figure is 0.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratios {
    /// Of [`ImageSummary::layers`].
    pub layers: Option<f64>,
    /// Of [`ImageSummary::compressed_bytes`].
    pub compressed_bytes: Option<f64>,
    /// Of [`ImageSummary::uncompressed_bytes`].
    pub uncompressed_bytes: Option<f64>,
    /// Of [`ImageSummary::files`].
    pub files: Option<f64>,
    /// Of [`ImageSummary::bytes`].
    pub bytes: Option<f64>,
    /// Of [`ImageSummary::packages`].
    pub packages: Option<f64>,
}

/// Totals of what the minimized image no longer has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Removed {
    /// Removed files.
    pub files: u64,
    /// Their bytes (hardlink groups once, when no name remains).
    pub bytes: u64,
    /// Removed packages.
    pub packages: u64,
    /// Sum of the removed packages' installed sizes.
    pub package_bytes: u64,
}

/// One directory group of the original image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirectoryRow {
    /// The group (`/usr/share/doc`).
    pub path: String,
    /// Files of the original removed there.
    pub removed_files: u64,
    /// Their bytes.
    pub removed_bytes: u64,
    /// Files of the minimized image there.
    pub kept_files: u64,
    /// Their bytes.
    pub kept_bytes: u64,
}

/// One removed package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackageRow {
    /// Its id (`name`, or `name:arch` for `Multi-Arch: same`).
    pub name: String,
    /// Its `Installed-Size` in bytes.
    pub installed_size_bytes: u64,
}

/// The comparison of an image and its minimized version, as `pare report
/// --json` prints it:
///
/// ```json
/// {
///   "original":  {"name": "…", "manifest_digest": "sha256:…", "layers": 3,
///                 "compressed_bytes": 0, "uncompressed_bytes": 0,
///                 "files": 0, "bytes": 0, "packages": 0},
///   "minimized": { …the same fields… },
///   "ratios":    {"layers": 0.33, "compressed_bytes": 0.1, "uncompressed_bytes": 0.1,
///                 "files": 0.1, "bytes": 0.1, "packages": null},
///   "removed":   {"files": 0, "bytes": 0, "packages": 0, "package_bytes": 0},
///   "top_directories": [{"path": "/usr/share/doc", "removed_files": 0,
///                        "removed_bytes": 0, "kept_files": 0, "kept_bytes": 0}],
///   "top_removed_packages": [{"name": "perl-base", "installed_size_bytes": 0}],
///   "hardening": {
///     "summary": "removed: 2 of 2 shells, …",
///     "groups": [{"category": "shells", "label": "shells", "original": 2,
///                 "minimized": 0, "removed": 2,
///                 "entries": [{"path": "/usr/bin/bash", "status": "removed",
///                              "used_by_workload": false}]}],
///     "packages": {"original": 3, "minimized": 1, "removed": 2,
///                  "still_visible": ["app"], "removed_names": ["docs", "tool"]}
///   },
///   "misses": {
///     "summary": "1 miss names a removed path: the minimized image would fail there",
///     "original": {"mode": "audit", "files": 1, "misses": 1, "lacking": 0},
///     "minimized": {"mode": "learn", "files": 0, "misses": 0, "lacking": 0},
///     "counts": {"total": 1, "kept": 0, "removed": 1, "absent": 0},
///     "entries": [{"image": "original", "path": "/app/b", "kind": "read",
///                  "first_seen_ns": 123, "count": 2, "containers": ["web-1"],
///                  "status": "removed"}]
///   }
/// }
/// ```
///
/// Ratios are minimized / original (`null` when the original's figure is
/// 0); the lists hold at most [`TOP`] rows, largest removed bytes first
/// (ties by name). `hardening` is described in [`hardening`] and `misses`
/// in [`misses`]; their lists are complete.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The image before.
    pub original: ImageSummary,
    /// The image after.
    pub minimized: ImageSummary,
    /// Minimized / original.
    pub ratios: Ratios,
    /// What is gone.
    pub removed: Removed,
    /// Directory groups by removed bytes.
    pub top_directories: Vec<DirectoryRow>,
    /// Removed packages by installed size.
    pub top_removed_packages: Vec<PackageRow>,
    /// What an attacker reaches for, before and after.
    pub hardening: Hardening,
    /// What each image was asked for outside its allowed set, and whether
    /// the minimized image keeps it.
    pub misses: Misses,
}

/// Compares `original` and `minimized`, with the misses recorded for each.
pub fn compare(
    original: &ImageView,
    minimized: &ImageView,
    of_original: &ImageMisses,
    of_minimized: &ImageMisses,
) -> Report {
    let (o, m) = (&original.summary, &minimized.summary);
    let ratio = |a: u64, b: u64| (b != 0).then(|| a as f64 / b as f64);
    let ratios = Ratios {
        layers: ratio(m.layers, o.layers),
        compressed_bytes: ratio(m.compressed_bytes, o.compressed_bytes),
        uncompressed_bytes: ratio(m.uncompressed_bytes, o.uncompressed_bytes),
        files: ratio(m.files, o.files),
        bytes: ratio(m.bytes, o.bytes),
        packages: ratio(m.packages, o.packages),
    };

    let kept = |path: &str| matches!(minimized.tree.get(path), Some(n) if *n != Node::Dir);
    let mut rows: BTreeMap<String, DirectoryRow> = BTreeMap::new();
    let mut removed = Removed {
        files: 0,
        bytes: 0,
        packages: 0,
        package_bytes: 0,
    };
    // Each hardlink group: its first name, and whether any name is kept.
    let mut groups: BTreeMap<u64, (String, u64, bool)> = BTreeMap::new();
    for (path, node) in original.tree.entries() {
        if *node == Node::Dir {
            continue;
        }
        let is_kept = kept(&path);
        if !is_kept {
            removed.files += 1;
            row(&mut rows, &path).removed_files += 1;
        }
        if let Node::File { inode, size, .. } = *node {
            let group = groups.entry(inode).or_insert((path, size, false));
            group.2 |= is_kept;
        }
    }
    for (first, size, any_kept) in groups.into_values() {
        if !any_kept {
            removed.bytes += size;
            row(&mut rows, &first).removed_bytes += size;
        }
    }
    let mut seen = BTreeSet::new();
    for (path, node) in minimized.tree.entries() {
        if *node == Node::Dir {
            continue;
        }
        let size = match *node {
            Node::File { inode, size, .. } if seen.insert(inode) => size,
            _ => 0,
        };
        let row = row(&mut rows, &path);
        row.kept_files += 1;
        row.kept_bytes += size;
    }
    let mut top_directories: Vec<DirectoryRow> =
        rows.into_values().filter(|r| r.removed_files > 0).collect();
    top_directories.sort_by(|a, b| {
        (b.removed_bytes, b.removed_files)
            .cmp(&(a.removed_bytes, a.removed_files))
            .then_with(|| a.path.cmp(&b.path))
    });
    top_directories.truncate(TOP);

    let mut packages: Vec<PackageRow> = original
        .packages
        .iter()
        .filter(|(id, _)| !minimized.packages.contains_key(*id))
        .map(|(id, size)| PackageRow {
            name: id.clone(),
            installed_size_bytes: *size,
        })
        .collect();
    removed.packages = packages.len() as u64;
    removed.package_bytes = packages.iter().map(|p| p.installed_size_bytes).sum();
    packages.sort_by(|a, b| {
        b.installed_size_bytes
            .cmp(&a.installed_size_bytes)
            .then_with(|| a.name.cmp(&b.name))
    });
    packages.truncate(TOP);

    Report {
        original: o.clone(),
        minimized: m.clone(),
        ratios,
        removed,
        top_directories,
        top_removed_packages: packages,
        hardening: hardening::compare(original, minimized),
        misses: misses::section(original, minimized, of_original, of_minimized),
    }
}

/// The row of the directory group of `path`.
fn row<'a>(rows: &'a mut BTreeMap<String, DirectoryRow>, path: &str) -> &'a mut DirectoryRow {
    let key = group(path);
    rows.entry(key.clone()).or_insert_with(|| DirectoryRow {
        path: key,
        removed_files: 0,
        removed_bytes: 0,
        kept_files: 0,
        kept_bytes: 0,
    })
}

/// The directory group of a file (see the module rules).
pub fn group(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let parent = &parts[..parts.len().saturating_sub(1)];
    let depth = if parent.first() == Some(&"usr") { 3 } else { 2 };
    format!("/{}", parent[..parent.len().min(depth)].join("/"))
}

#[cfg(test)]
mod tests;
