//! The closure of a profile: which entries of the image the minimized image
//! keeps, in the order it keeps them.
//!
//! Rules (docs/COMPACTION.md):
//! - every profiled path that exists in the image;
//! - every ancestor directory of a kept entry, with its original metadata;
//! - for a kept symlink, every symlink met while resolving it inside the
//!   image, and where it ends;
//! - every name of a kept file's hardlink group;
//! - the always-kept set ([`ALWAYS_KEPT`]) where the image has it;
//! - `--include` globs and `--include-exec` programs (with their ELF closure);
//! - minus `--exclude` globs (a directory stays while it holds kept entries).
//!
//! Order: first access, each entry preceded by its ancestors, so a reader of
//! the layer (a lazy puller, a prefetcher) meets what starts first, first.

use std::collections::{HashMap, HashSet};

use pare_fs::layers::{Kind, Resolved};
use pare_fs::profile::ImagePath;

use super::tree::ImageTree;

/// Kept whenever the image has them, used or not, and why:
pub const ALWAYS_KEPT: &[(&str, &str)] = &[
    (
        "/etc/passwd",
        "the runtime resolves the container's user in it",
    ),
    (
        "/etc/group",
        "the runtime resolves the container's groups in it",
    ),
    (
        "/etc/nsswitch.conf",
        "glibc reads it on the first user or host lookup, which a short profiling run may not reach",
    ),
    (
        "/etc/hosts",
        "a mount target for Kubernetes; a read-only rootfs cannot create it",
    ),
    (
        "/etc/hostname",
        "a mount target for Kubernetes; a read-only rootfs cannot create it",
    ),
    (
        "/etc/resolv.conf",
        "a mount target for Kubernetes; a read-only rootfs cannot create it",
    ),
    ("/proc", "mount target of every container"),
    ("/sys", "mount target of every container"),
    ("/dev", "mount target of every container"),
    ("/tmp", "scratch space programs expect (mode 1777)"),
    ("/run", "mount target and runtime directory"),
];

/// Why a path is kept; reported in dry runs and summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// In the profile.
    Profiled,
    /// Ancestor of a kept entry.
    Ancestor,
    /// On a kept symlink's resolution path.
    SymlinkTarget,
    /// Another name of a kept file.
    Hardlink,
    /// In the always-kept set.
    Always,
    /// Matched an `--include` glob.
    Included,
    /// In an `--include-exec` program's closure.
    IncludedExec,
    /// Package metadata of a kept package.
    PackageMetadata,
}

/// One kept entry.
#[derive(Clone, Debug)]
pub struct Kept {
    /// Path in the image.
    pub path: ImagePath,
    /// What it is.
    pub resolved: Resolved,
    /// Why it is kept (the first reason found).
    pub reason: Reason,
}

/// A hardlink group: one inode of one layer directory, named more than once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HardlinkGroup {
    layer: u16,
    dev: u64,
    ino: u64,
}

impl HardlinkGroup {
    /// The group `resolved` belongs to; `None` for a directory or a single name.
    pub fn of(resolved: &Resolved) -> Option<HardlinkGroup> {
        match resolved {
            Resolved::Other { layer, meta } if meta.nlink > 1 && meta.kind != Kind::Dir => {
                Some(HardlinkGroup {
                    layer: layer.0,
                    dev: meta.dev,
                    ino: meta.ino,
                })
            }
            _ => None,
        }
    }
}

/// Everything in the image, indexed once.
pub struct Index {
    entries: HashMap<ImagePath, Resolved>,
    /// Every path in walk order (parents first).
    pub order: Vec<ImagePath>,
    groups: HashMap<HardlinkGroup, Vec<ImagePath>>,
}

impl Index {
    /// Indexes every entry of `tree`.
    pub fn build(tree: &ImageTree) -> std::io::Result<Index> {
        let mut entries = HashMap::new();
        let mut order = Vec::new();
        let mut groups: HashMap<HardlinkGroup, Vec<ImagePath>> = HashMap::new();
        for (path, resolved) in tree.walk()? {
            if let Some(group) = HardlinkGroup::of(&resolved) {
                groups.entry(group).or_default().push(path.clone());
            }
            order.push(path.clone());
            entries.insert(path, resolved);
        }
        Ok(Index {
            entries,
            order,
            groups,
        })
    }

    /// What `path` is, when the image has it.
    pub fn get(&self, path: &ImagePath) -> Option<&Resolved> {
        self.entries.get(path)
    }

    /// Every name of the hardlink group of `resolved`, in walk order (empty
    /// when it has none).
    pub fn hardlinks(&self, resolved: &Resolved) -> &[ImagePath] {
        HardlinkGroup::of(resolved)
            .and_then(|group| self.groups.get(&group))
            .map_or(&[], Vec::as_slice)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when the image is empty (never: it has a root).
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The growing selection.
pub struct Selection<'a> {
    tree: &'a ImageTree,
    index: &'a Index,
    kept: Vec<Kept>,
    seen: HashSet<ImagePath>,
    /// Hardlink groups whose names are kept already: each group is walked
    /// once, so a group of n names costs O(n), not O(n²).
    groups: HashSet<HardlinkGroup>,
    /// Profiled paths the image does not have (a profile of another build).
    pub missing: Vec<ImagePath>,
}

impl<'a> Selection<'a> {
    /// An empty selection over `index`.
    pub fn new(tree: &'a ImageTree, index: &'a Index) -> Self {
        Selection {
            tree,
            index,
            kept: Vec::new(),
            seen: HashSet::new(),
            groups: HashSet::new(),
            missing: Vec::new(),
        }
    }

    /// Keeps `path` and its closure; false when the image has no such path.
    pub fn keep(&mut self, path: &ImagePath, reason: Reason) -> std::io::Result<bool> {
        if self.seen.contains(path) {
            return Ok(true);
        }
        let Some(resolved) = self.index.get(path).cloned() else {
            // A path through a symlinked directory (`/bin/sh` with `/bin ->
            // usr/bin`): keep the links on the way and where it ends.
            return match self.tree.follow(path)? {
                Some(followed) if self.index.get(&followed.path).is_some() => {
                    for link in &followed.links {
                        self.keep(link, Reason::SymlinkTarget)?;
                    }
                    self.keep(&followed.path, reason)
                }
                _ => Ok(false),
            };
        };
        for ancestor in path.ancestors() {
            if !ancestor.is_root() {
                self.push(&ancestor, Reason::Ancestor);
            }
        }
        if !path.is_root() {
            self.push(path, reason);
        }
        if resolved.meta().kind == Kind::Symlink {
            if let Some(followed) = self.tree.follow(path)? {
                for link in &followed.links {
                    self.keep(link, Reason::SymlinkTarget)?;
                }
                self.keep(&followed.path, Reason::SymlinkTarget)?;
            }
        }
        if let Some(group) = HardlinkGroup::of(&resolved) {
            if self.groups.insert(group) {
                let index = self.index;
                for other in index.hardlinks(&resolved) {
                    self.keep(other, Reason::Hardlink)?;
                }
            }
        }
        Ok(true)
    }

    fn push(&mut self, path: &ImagePath, reason: Reason) {
        if self.seen.insert(path.clone()) {
            if let Some(resolved) = self.index.get(path) {
                self.kept.push(Kept {
                    path: path.clone(),
                    resolved: resolved.clone(),
                    reason,
                });
            }
        }
    }

    /// Keeps every profiled path, in first-access order.
    pub fn keep_profiled<'p>(
        &mut self,
        paths: impl IntoIterator<Item = &'p ImagePath>,
    ) -> std::io::Result<()> {
        for path in paths {
            if !self.keep(path, Reason::Profiled)? {
                self.missing.push(path.clone());
            }
        }
        Ok(())
    }

    /// Keeps the always-kept set where the image has it.
    pub fn keep_always(&mut self) -> std::io::Result<()> {
        for (path, _) in ALWAYS_KEPT {
            let path = ImagePath::new(path.as_bytes().to_vec()).expect("valid constant");
            self.keep(&path, Reason::Always)?;
        }
        Ok(())
    }

    /// Keeps every path `matches` accepts.
    pub fn keep_matching(
        &mut self,
        matches: impl Fn(&ImagePath) -> bool,
        reason: Reason,
    ) -> std::io::Result<usize> {
        let hits: Vec<ImagePath> = self
            .index
            .order
            .iter()
            .filter(|p| matches(p))
            .cloned()
            .collect();
        for path in &hits {
            self.keep(path, reason)?;
        }
        Ok(hits.len())
    }

    /// Drops what `matches` accepts, except directories that still hold kept
    /// entries. A dropped name of a hardlink group stays dropped when another
    /// name of the group is kept later.
    pub fn drop_matching(&mut self, matches: impl Fn(&ImagePath) -> bool) -> usize {
        let needed: HashSet<ImagePath> = self
            .kept
            .iter()
            .filter(|k| !matches(&k.path))
            .flat_map(|k| k.path.ancestors())
            .collect();
        let before = self.kept.len();
        self.kept
            .retain(|k| !matches(&k.path) || needed.contains(&k.path));
        self.seen = self.kept.iter().map(|k| k.path.clone()).collect();
        before - self.kept.len()
    }

    /// True when `path` is kept.
    pub fn contains(&self, path: &ImagePath) -> bool {
        self.seen.contains(path)
    }

    /// The kept entries in order.
    pub fn into_kept(self) -> Vec<Kept> {
        self.kept
    }

    /// The kept entries so far.
    pub fn kept(&self) -> &[Kept] {
        &self.kept
    }
}

#[cfg(test)]
pub(crate) mod tests;
