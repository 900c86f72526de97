//! The misses section of a report: what the original's audit and enforce
//! runs asked for outside its allowed set, and what the minimized image was
//! asked for and lacks, each with whether the minimized image keeps the path.
//!
//! Rules:
//! - a miss's path is `kept` when the minimized image has it (as any kind of
//!   entry), `removed` when only the original has it, `absent` when neither
//!   does;
//! - a missed `removed` path is where the minimized image would fail: the
//!   section counts them and its summary says so;
//! - the misses are those [`crate::misses::gather`] finds for each image:
//!   the original's first, then the minimized image's, each in first-seen
//!   order;
//! - when neither image has misses recorded, the section says so.

use serde::Serialize;

use super::compare::ImageView;
use crate::misses::ImageMisses;

#[cfg(test)]
mod tests;

/// What the summary says when no misses are recorded for either image.
pub const NONE_RECORDED: &str =
    "no misses recorded: run the image in audit mode to see what the profile lacks";

/// Which image a miss was seen in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The image before minimization (audit, enforce).
    Original,
    /// The minimized image (its own audit and enforce, and absent names).
    Minimized,
}

impl Side {
    /// Its JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Side::Original => "original",
            Side::Minimized => "minimized",
        }
    }
}

/// Whether the minimized image has a missed path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The minimized image has it.
    Kept,
    /// Only the original has it: the minimized image would fail there.
    Removed,
    /// Neither image has it.
    Absent,
}

impl Status {
    /// Its JSON name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Kept => "kept",
            Status::Removed => "removed",
            Status::Absent => "absent",
        }
    }
}

/// What was recorded for one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Recorded {
    /// Its mode on the node (`learn`, `audit`, `enforce`, `off`).
    pub mode: String,
    /// Misses files read.
    pub files: usize,
    /// Its misses.
    pub misses: usize,
    /// For an image pare compacted: its source image's manifest digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_image: Option<String>,
    /// For an image pare compacted: names it lacks that its source has.
    pub lacking: usize,
}

/// One miss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The image it was seen in.
    pub image: Side,
    /// The image path.
    pub path: String,
    /// The kind of access (`lookup`, `read`, `exec`, `absent`, ...).
    pub kind: String,
    /// When it was first seen, ns since the epoch.
    pub first_seen_ns: u64,
    /// How often.
    pub count: u64,
    /// The containers that asked, when known.
    pub containers: Vec<String>,
    /// Whether the minimized image has the path.
    pub status: Status,
}

/// How many misses there are, by status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// All of them.
    pub total: usize,
    /// Of paths the minimized image has.
    pub kept: usize,
    /// Of paths only the original has.
    pub removed: usize,
    /// Of paths neither has.
    pub absent: usize,
}

/// The section, as `pare report --json` prints it under `misses`:
///
/// ```json
/// {"summary": "1 miss names a removed path: the minimized image would fail there",
///  "original": {"mode": "audit", "files": 1, "misses": 1, "lacking": 0},
///  "minimized": {"mode": "learn", "files": 0, "misses": 0, "lacking": 0},
///  "counts": {"total": 1, "kept": 0, "removed": 1, "absent": 0},
///  "entries": [{"image": "original", "path": "/app/b", "kind": "read",
///               "first_seen_ns": 123, "count": 2, "containers": ["web-1"],
///               "status": "removed"}]}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Misses {
    /// One line: how many misses name removed paths, or that none are
    /// recorded ([`NONE_RECORDED`]).
    pub summary: String,
    /// What was recorded for the original.
    pub original: Recorded,
    /// What was recorded for the minimized image.
    pub minimized: Recorded,
    /// Misses by status.
    pub counts: Counts,
    /// Every miss.
    pub entries: Vec<Row>,
}

impl Misses {
    /// Whether neither image has misses recorded (no misses file, no miss).
    pub fn none_recorded(&self) -> bool {
        self.original.files == 0 && self.minimized.files == 0 && self.entries.is_empty()
    }
}

/// The section for `original` and `minimized` and the misses gathered for
/// each.
pub fn section(
    original: &ImageView,
    minimized: &ImageView,
    of_original: &ImageMisses,
    of_minimized: &ImageMisses,
) -> Misses {
    let status = |path: &str| {
        if minimized.tree.get(path).is_some() {
            Status::Kept
        } else if original.tree.get(path).is_some() {
            Status::Removed
        } else {
            Status::Absent
        }
    };
    let mut entries = Vec::new();
    let mut counts = Counts::default();
    for (side, gathered) in [
        (Side::Original, of_original),
        (Side::Minimized, of_minimized),
    ] {
        for miss in &gathered.misses {
            let path = miss.path.to_string();
            let status = status(&path);
            match status {
                Status::Kept => counts.kept += 1,
                Status::Removed => counts.removed += 1,
                Status::Absent => counts.absent += 1,
            }
            let mut containers: Vec<String> = Vec::new();
            for c in miss.processes.iter().filter_map(|p| p.container.as_ref()) {
                if !containers.contains(c) {
                    containers.push(c.clone());
                }
            }
            entries.push(Row {
                image: side,
                path,
                kind: miss.kind.name().to_string(),
                first_seen_ns: miss.first_seen_ns,
                count: miss.count,
                containers,
                status,
            });
        }
    }
    counts.total = entries.len();
    let summary = if !of_original.recorded() && !of_minimized.recorded() {
        NONE_RECORDED.to_string()
    } else {
        match counts.removed {
            0 => format!("{} misses, none names a removed path", counts.total),
            1 => "1 miss names a removed path: the minimized image would fail there".to_string(),
            n => format!("{n} misses name removed paths: the minimized image would fail there"),
        }
    };
    Misses {
        summary,
        original: recorded(of_original),
        minimized: recorded(of_minimized),
        counts,
        entries,
    }
}

fn recorded(gathered: &ImageMisses) -> Recorded {
    Recorded {
        mode: gathered.mode.name().to_string(),
        files: gathered.files,
        misses: gathered.misses.len(),
        source_image: gathered.source_image.as_ref().map(ToString::to_string),
        lacking: gathered.lacking,
    }
}
