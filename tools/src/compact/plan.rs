//! The compaction plan: the closure of a profile under the user's rules, the
//! trimmed package database, and the before/after counts.

use std::collections::{HashMap, HashSet};

use globset::{GlobBuilder, GlobMatcher};
use pare_fs::layers::{Kind, Resolved};
use pare_fs::profile::ImagePath;

use super::closure::{Index, Kept, Reason, Selection};
use super::dpkg::{self, DpkgError};
use super::elf::{self, ElfError};
use super::tree::ImageTree;

/// What the user adds to and removes from the profile's closure: the same
/// options an allowed set is frozen with.
pub use pare_fs::policy::Rules;

/// Files, bytes and packages of an image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Entries other than directories.
    pub files: u64,
    /// Bytes of regular files (each hardlinked inode once).
    pub bytes: u64,
    /// Installed dpkg packages (0 without dpkg).
    pub packages: u64,
}

/// The result of planning.
pub struct Plan {
    /// What the layer holds, in order.
    pub kept: Vec<Kept>,
    /// Files whose content is replaced (the trimmed dpkg status).
    pub contents: HashMap<ImagePath, Vec<u8>>,
    /// Profiled paths the image does not have.
    pub missing: Vec<ImagePath>,
    /// `--include-exec` dependencies not found in the image.
    pub unresolved: Vec<String>,
    /// Counts of the original image.
    pub before: Counts,
    /// Counts of the minimized image.
    pub after: Counts,
    /// Packages removed (dpkg images).
    pub removed_packages: Vec<String>,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// Reading the image failed.
    #[error("reading the image: {0}")]
    Io(#[from] std::io::Error),
    /// A glob is invalid.
    #[error("invalid glob {glob:?}: {source}")]
    Glob {
        /// The glob.
        glob: String,
        /// Why.
        source: globset::Error,
    },
    /// An `--include-exec` path is invalid or not in the image.
    #[error("--include-exec {path}: {why}")]
    IncludeExec {
        /// The path given.
        path: String,
        /// Why.
        why: String,
    },
    /// The ELF closure failed.
    #[error(transparent)]
    Elf(#[from] ElfError),
    /// The dpkg database is malformed.
    #[error(transparent)]
    Dpkg(#[from] DpkgError),
}

fn matcher(glob: &str) -> Result<GlobMatcher, PlanError> {
    GlobBuilder::new(glob)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|source| PlanError::Glob {
            glob: glob.to_string(),
            source,
        })
}

fn matches_any(matchers: &[GlobMatcher], path: &ImagePath) -> bool {
    let text = path.to_string();
    matchers.iter().any(|m| m.is_match(&text))
}

/// Counts files, bytes and packages of `entries`.
fn count<'a>(
    entries: impl Iterator<Item = (&'a ImagePath, &'a Resolved)>,
    packages: u64,
) -> Counts {
    let mut counts = Counts {
        packages,
        ..Counts::default()
    };
    let mut inodes = HashSet::new();
    for (_, resolved) in entries {
        let meta = resolved.meta();
        if meta.kind == Kind::Dir {
            continue;
        }
        counts.files += 1;
        if meta.kind == Kind::File && inodes.insert((resolved.top_layer(), meta.dev, meta.ino)) {
            counts.bytes += meta.size;
        }
    }
    counts
}

/// Plans the minimized image of `tree` for the profiled `paths` (first-access order).
pub fn plan(
    tree: &ImageTree,
    index: &Index,
    paths: &[ImagePath],
    rules: &Rules,
) -> Result<Plan, PlanError> {
    let mut sel = Selection::new(tree, index);
    sel.keep_profiled(paths.iter())?;
    sel.keep_always()?;
    let include: Vec<GlobMatcher> = rules
        .include
        .iter()
        .map(|g| matcher(g))
        .collect::<Result<_, _>>()?;
    if !include.is_empty() {
        sel.keep_matching(|p| matches_any(&include, p), Reason::Included)?;
    }
    let mut unresolved = Vec::new();
    for program in &rules.include_exec {
        let path =
            ImagePath::new(program.as_bytes().to_vec()).map_err(|e| PlanError::IncludeExec {
                path: program.clone(),
                why: e.to_string(),
            })?;
        let closure = elf::exec_closure_lenient(tree, &path)?;
        for p in &closure.paths {
            sel.keep(p, Reason::IncludedExec)?;
        }
        unresolved.extend(closure.unresolved.iter().map(|u| u.to_string()));
    }
    let exclude: Vec<GlobMatcher> = rules
        .exclude
        .iter()
        .map(|g| matcher(g))
        .collect::<Result<_, _>>()?;
    if !exclude.is_empty() {
        sel.drop_matching(|p| matches_any(&exclude, p));
    }

    let mut contents = HashMap::new();
    let mut removed_packages = Vec::new();
    let (packages_before, packages_after) = match dpkg::load(tree)? {
        None => (0, 0),
        Some(db) => {
            let trimmed = db.trim(&|p| sel.contains(p));
            let status = ImagePath::new(dpkg::STATUS.as_bytes().to_vec()).expect("valid constant");
            sel.keep(&status, Reason::PackageMetadata)?;
            for p in &trimmed.metadata_paths {
                sel.keep(p, Reason::PackageMetadata)?;
            }
            contents.insert(status, trimmed.status.clone());
            removed_packages = trimmed.removed_packages.clone();
            let kept = trimmed.kept_packages.len() as u64;
            (kept + trimmed.removed_packages.len() as u64, kept)
        }
    };
    let missing = sel.missing.clone();
    let kept = sel.into_kept();
    let before = count(
        index
            .order
            .iter()
            .filter_map(|p| index.get(p).map(|r| (p, r))),
        packages_before,
    );
    let mut after = count(kept.iter().map(|k| (&k.path, &k.resolved)), packages_after);
    for (path, bytes) in &contents {
        if let Some(k) = kept.iter().find(|k| &k.path == path) {
            after.bytes = after.bytes - k.resolved.meta().size + bytes.len() as u64;
        }
    }
    Ok(Plan {
        kept,
        contents,
        missing,
        unresolved,
        before,
        after,
        removed_packages,
    })
}
