//! Layer tars of directories on disk: every entry in sorted order with its
//! metadata, hardlinks kept as tar links, as `ctr images import` unpacks them.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tar::{Builder, EntryType, Header, HeaderMode};

/// The uncompressed tar of the contents of `dir` (paths relative to it), in
/// sorted order, with modes, owners, mtimes, symlink targets and device
/// numbers. A file with several names is stored once and its other names as
/// hardlinks to the first. The contents of the directories in `keep_empty`
/// (paths relative to `dir`, such as `dev`) are left out: they stay empty
/// mount targets.
pub fn tar_dir(dir: &Path, keep_empty: &[&str]) -> anyhow::Result<Vec<u8>> {
    let mut walk = Walk {
        builder: Builder::new(Vec::new()),
        root: dir,
        keep_empty: keep_empty.iter().map(PathBuf::from).collect(),
        first_names: HashMap::new(),
    };
    walk.builder.mode(HeaderMode::Complete);
    walk.builder.follow_symlinks(false);
    walk.children(Path::new(""))
        .with_context(|| format!("cannot tar {}", dir.display()))?;
    Ok(walk.builder.into_inner()?)
}

struct Walk<'a> {
    builder: Builder<Vec<u8>>,
    root: &'a Path,
    keep_empty: Vec<PathBuf>,
    /// The first name seen of each multiply linked file, by (device, inode).
    first_names: HashMap<(u64, u64), PathBuf>,
}

impl Walk<'_> {
    fn children(&mut self, rel: &Path) -> anyhow::Result<()> {
        let dir = self.root.join(rel);
        let mut names = fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()?;
        names.sort();
        for name in names {
            let rel = rel.join(name);
            let path = self.root.join(&rel);
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("cannot stat {}", path.display()))?;
            if meta.is_file() && meta.nlink() > 1 {
                if let Some(first) = self.first_names.get(&(meta.dev(), meta.ino())) {
                    let mut header = Header::new_gnu();
                    header.set_metadata_in_mode(&meta, HeaderMode::Complete);
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    self.builder.append_link(&mut header, &rel, first)?;
                    continue;
                }
                self.first_names
                    .insert((meta.dev(), meta.ino()), rel.clone());
            }
            self.builder
                .append_path_with_name(&path, &rel)
                .with_context(|| format!("cannot add {}", path.display()))?;
            if meta.is_dir() && !self.keep_empty.contains(&rel) {
                self.children(&rel)?;
            }
        }
        Ok(())
    }
}
