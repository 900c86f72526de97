//! Walking a mounted tree without following symlinks into one record per path
//! (everything `lstat`, `readlink`, `llistxattr` and the content show), and
//! comparing two walks field by field.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Largest xattr name list and value (`XATTR_LIST_MAX`, `XATTR_SIZE_MAX`).
const XATTR_MAX: usize = 65_536;

/// What one path of a tree shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `file`, `dir`, `symlink`, `fifo`, `socket`, `char` or `block`.
    pub kind: &'static str,
    /// Full `st_mode` (type and all mode bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `st_size`.
    pub size: u64,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, i64),
    /// Modification time.
    pub mtime: (i64, i64),
    /// Status change time.
    pub ctime: (i64, i64),
    /// Device number of a device node.
    pub rdev: u64,
    /// Link count.
    pub nlink: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    /// Symlink target.
    pub link: Option<OsString>,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(OsString, Vec<u8>)>,
    /// SHA-256 (hex) of a regular file's content.
    pub sha256: Option<String>,
    /// `st_ino`: not compared, only used to derive hardlink groups.
    pub ino: u64,
}

impl Entry {
    /// The compared fields, named and printable.
    fn fields(&self) -> Vec<(&'static str, String)> {
        let time = |(s, ns): (i64, i64)| format!("{s}.{ns:09}");
        let xattrs: Vec<String> = self
            .xattrs
            .iter()
            .map(|(n, v)| format!("{}={}", n.to_string_lossy(), v.escape_ascii()))
            .collect();
        vec![
            ("type", self.kind.to_string()),
            ("mode", format!("{:o}", self.mode)),
            ("uid", self.uid.to_string()),
            ("gid", self.gid.to_string()),
            ("size", self.size.to_string()),
            ("atime", time(self.atime)),
            ("mtime", time(self.mtime)),
            ("ctime", time(self.ctime)),
            (
                "rdev",
                format!(
                    "{}:{}",
                    rustix::fs::major(self.rdev),
                    rustix::fs::minor(self.rdev)
                ),
            ),
            ("nlink", self.nlink.to_string()),
            ("blocks", self.blocks.to_string()),
            ("symlink", format!("{:?}", self.link)),
            ("xattrs", format!("[{}]", xattrs.join(", "))),
            ("sha256", format!("{:?}", self.sha256)),
        ]
    }
}

/// Every path of a tree (the root is the empty path).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// Records by path relative to the root.
    pub entries: BTreeMap<PathBuf, Entry>,
}

impl Tree {
    /// The record of `rel`, if the path exists.
    pub fn get(&self, rel: &str) -> Option<&Entry> {
        self.entries.get(Path::new(rel))
    }

    /// Names directly inside directory `rel`.
    pub fn children(&self, rel: &str) -> BTreeSet<OsString> {
        let dir = Path::new(rel);
        self.entries
            .keys()
            .filter(|p| p.parent() == Some(dir) && p.as_os_str() != dir.as_os_str())
            .filter_map(|p| p.file_name().map(OsString::from))
            .collect()
    }

    /// Non-directory paths partitioned by `st_ino`: the groups of two or more names.
    pub fn hardlink_groups(&self) -> BTreeSet<BTreeSet<PathBuf>> {
        let mut by_ino: BTreeMap<u64, BTreeSet<PathBuf>> = BTreeMap::new();
        for (path, entry) in self.entries.iter().filter(|(_, e)| e.kind != "dir") {
            by_ino.entry(entry.ino).or_default().insert(path.clone());
        }
        by_ino.into_values().filter(|g| g.len() > 1).collect()
    }
}

/// Walks the tree under `root` without following symlinks.
pub fn walk(root: &Path) -> Result<Tree> {
    walk_pruned(root, &BTreeSet::new())
}

/// Like [`walk`], leaving out the paths in `prune` (relative to `root`) and
/// everything beneath them: mount points that are not part of the tree.
pub fn walk_pruned(root: &Path, prune: &BTreeSet<PathBuf>) -> Result<Tree> {
    let mut tree = Tree::default();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        if prune.contains(&rel) {
            continue;
        }
        let entry =
            record(&root.join(&rel)).with_context(|| format!("{}", root.join(&rel).display()))?;
        if entry.kind == "dir" {
            for child in fs::read_dir(root.join(&rel))? {
                pending.push(rel.join(child?.file_name()));
            }
        }
        tree.entries.insert(rel, entry);
    }
    Ok(tree)
}

/// The record of one path.
pub fn record(path: &Path) -> Result<Entry> {
    let meta = fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    let kind = match () {
        _ if ft.is_file() => "file",
        _ if ft.is_dir() => "dir",
        _ if ft.is_symlink() => "symlink",
        _ if ft.is_fifo() => "fifo",
        _ if ft.is_socket() => "socket",
        _ if ft.is_char_device() => "char",
        _ if ft.is_block_device() => "block",
        _ => "unknown",
    };
    Ok(Entry {
        kind,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        atime: (meta.atime(), meta.atime_nsec()),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
        rdev: meta.rdev(),
        nlink: meta.nlink(),
        blocks: meta.blocks(),
        link: ft
            .is_symlink()
            .then(|| fs::read_link(path))
            .transpose()?
            .map(PathBuf::into_os_string),
        xattrs: xattrs(path)?,
        sha256: ft.is_file().then(|| sha256(path)).transpose()?,
        ino: meta.ino(),
    })
}

/// Sorted (name, value) xattrs of `path`, not following a symlink.
pub fn xattrs(path: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let mut names = vec![0u8; XATTR_MAX];
    let len = match rustix::fs::llistxattr(path, &mut names[..]) {
        Ok(len) => len,
        Err(e) if e == rustix::io::Errno::NOTSUP => 0,
        Err(e) => return Err(e).context("llistxattr"),
    };
    let mut out = Vec::new();
    let mut value = vec![0u8; XATTR_MAX];
    for name in names[..len].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = OsString::from_vec(name.to_vec());
        let n = rustix::fs::lgetxattr(path, name.as_os_str(), &mut value[..])
            .with_context(|| format!("lgetxattr {}", name.to_string_lossy()))?;
        out.push((name, value[..n].to_vec()));
    }
    out.sort();
    Ok(out)
}

fn sha256(path: &Path) -> Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Differences between two walks, at most `limit` lines: paths present in one
/// only, then per path every field that differs, then hardlink groups.
pub fn diff(left: (&str, &Tree), right: (&str, &Tree), limit: usize) -> Vec<String> {
    let ((ln, l), (rn, r)) = (left, right);
    let show = |p: &Path| format!("/{}", p.as_os_str().as_bytes().escape_ascii());
    let mut out = Vec::new();
    for path in l.entries.keys().filter(|p| !r.entries.contains_key(*p)) {
        out.push(format!("{}: only on {ln}", show(path)));
    }
    for path in r.entries.keys().filter(|p| !l.entries.contains_key(*p)) {
        out.push(format!("{}: only on {rn}", show(path)));
    }
    for (path, le) in &l.entries {
        let Some(re) = r.entries.get(path) else {
            continue;
        };
        for ((field, lv), (_, rv)) in le.fields().into_iter().zip(re.fields()) {
            if lv != rv {
                out.push(format!("{}: {field}: {ln}={lv} {rn}={rv}", show(path)));
            }
        }
    }
    let (lg, rg) = (l.hardlink_groups(), r.hardlink_groups());
    for group in lg.symmetric_difference(&rg) {
        let side = if lg.contains(group) { ln } else { rn };
        let names: Vec<String> = group.iter().map(|p| show(p)).collect();
        out.push(format!(
            "hardlink group only on {side}: {}",
            names.join(" ")
        ));
    }
    let total = out.len();
    out.truncate(limit);
    if total > limit {
        out.push(format!("... and {} more differences", total - limit));
    }
    out
}

/// The `statvfs` fields that must agree between two mounts of the same layers
/// (free counts drift and are not compared).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FsStats {
    /// `f_bsize`.
    pub bsize: u64,
    /// `f_blocks`.
    pub blocks: u64,
    /// `f_files`.
    pub files: u64,
    /// `f_namemax`.
    pub namemax: u64,
}

/// `statvfs` of the mount holding `path`.
pub fn fs_stats(path: &Path) -> Result<FsStats> {
    let st = rustix::fs::statvfs(path).with_context(|| format!("statvfs {}", path.display()))?;
    Ok(FsStats {
        bsize: st.f_bsize,
        blocks: st.f_blocks,
        files: st.f_files,
        namemax: st.f_namemax,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_path_field_and_both_values() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "a").unwrap();
        fs::write(dir.path().join("b"), "b").unwrap();
        fs::hard_link(dir.path().join("a"), dir.path().join("a2")).unwrap();
        let left = walk(dir.path()).unwrap();
        assert!(diff(("l", &left), ("r", &left), 10).is_empty());
        assert_eq!(left.hardlink_groups().len(), 1);

        let mut right = left.clone();
        right.entries.get_mut(Path::new("b")).unwrap().uid = 42;
        right.entries.remove(Path::new("a2"));
        let lines = diff(("l", &left), ("r", &right), 10);
        assert_eq!(
            lines,
            [
                "/a2: only on l".to_string(),
                format!("/b: uid: l={} r=42", left.get("b").unwrap().uid),
                "hardlink group only on l: /a /a2".to_string(),
            ]
        );
        assert_eq!(
            diff(("l", &left), ("r", &right), 1).len(),
            2,
            "truncated, with a count"
        );
    }
}
