//! The layer stack: overlay-style layer directories resolved into one merged tree,
//! with the lookup rules of kernel overlayfs for a read-only `lowerdir=` stack.
//!
//! Rules (topmost layer first):
//! - the first layer holding a name decides what it is;
//! - a whiteout (character device 0:0) hides the name and everything below it;
//! - a non-directory hides everything below it;
//! - a directory merges with directories of the same name below it, until a
//!   layer's directory is opaque (`trusted.overlay.opaque=y`) or a lower layer
//!   holds a whiteout or a non-directory there;
//! - the root directory always merges every layer.

mod meta;
pub mod xattr;

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

pub use meta::{Kind, Meta, Timespec};

/// Index of a layer in its stack; 0 is the topmost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerIdx(pub u16);

/// Errors opening a layer stack.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// No layer directories were given.
    #[error("no layer directories given")]
    Empty,
    /// More layers than the view supports.
    #[error("{0} layers given; at most {max} are supported", max = u16::MAX)]
    TooMany(usize),
    /// A layer directory could not be examined.
    #[error("layer directory {path}: {source}")]
    Io {
        /// The layer directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// A layer path exists but is not a directory.
    #[error("layer directory {0} is not a directory")]
    NotADirectory(PathBuf),
}

/// What a path in the merged tree is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A directory, merged from `layers` (topmost first, at least one).
    Dir {
        /// The layers whose directory takes part, topmost first.
        layers: Vec<LayerIdx>,
        /// Metadata of the topmost of them.
        meta: Meta,
    },
    /// Any other entry, taken whole from one layer.
    Other {
        /// The layer holding it.
        layer: LayerIdx,
        /// Its metadata.
        meta: Meta,
    },
}

impl Resolved {
    /// Metadata of the entry (the topmost directory for merged directories).
    pub fn meta(&self) -> &Meta {
        match self {
            Resolved::Dir { meta, .. } | Resolved::Other { meta, .. } => meta,
        }
    }

    /// The layer whose entry provides metadata, content and xattrs.
    pub fn top_layer(&self) -> LayerIdx {
        match self {
            Resolved::Dir { layers, .. } => layers[0],
            Resolved::Other { layer, .. } => *layer,
        }
    }

    /// Link count as overlayfs reports it: 1 for a directory merged from several
    /// layers, the underlying count otherwise.
    pub fn nlink(&self) -> u64 {
        match self {
            Resolved::Dir { layers, .. } if layers.len() > 1 => 1,
            _ => self.meta().nlink,
        }
    }
}

/// An ordered stack of layer directories, topmost first.
#[derive(Clone, Debug)]
pub struct LayerStack {
    roots: Vec<PathBuf>,
}

impl LayerStack {
    /// Opens a stack from layer directories, topmost first (the order of `lowerdir=`).
    pub fn open(dirs: Vec<PathBuf>) -> Result<LayerStack, LayerError> {
        if dirs.is_empty() {
            return Err(LayerError::Empty);
        }
        if dirs.len() > usize::from(u16::MAX) {
            return Err(LayerError::TooMany(dirs.len()));
        }
        let mut roots = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let meta = std::fs::metadata(&dir).map_err(|source| LayerError::Io {
                path: dir.clone(),
                source,
            })?;
            if !meta.is_dir() {
                return Err(LayerError::NotADirectory(dir));
            }
            let root = std::fs::canonicalize(&dir).map_err(|source| LayerError::Io {
                path: dir.clone(),
                source,
            })?;
            roots.push(root);
        }
        Ok(LayerStack { roots })
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// True when the stack has no layers (never, once opened).
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The directory of layer `idx`.
    pub fn root(&self, idx: LayerIdx) -> &Path {
        &self.roots[usize::from(idx.0)]
    }

    /// Host path of `rel` (relative to the image root) inside layer `idx`.
    pub fn host_path(&self, idx: LayerIdx, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.root(idx).to_path_buf()
        } else {
            self.root(idx).join(rel)
        }
    }

    /// The merged root directory: every layer takes part.
    pub fn resolve_root(&self) -> io::Result<Resolved> {
        let meta = Meta::lstat(self.root(LayerIdx(0)))?;
        let layers = (0..self.roots.len() as u16).map(LayerIdx).collect();
        Ok(Resolved::Dir { layers, meta })
    }

    /// Resolves `name` inside the merged directory `rel` made of `parent_layers`.
    /// `Ok(None)` when the name does not exist in the merged tree.
    pub fn lookup(
        &self,
        rel: &Path,
        parent_layers: &[LayerIdx],
        name: &OsStr,
    ) -> io::Result<Option<Resolved>> {
        let child = rel.join(name);
        merge(parent_layers, |layer| {
            let path = self.host_path(layer, &child);
            let meta = match Meta::lstat(&path) {
                Ok(meta) => meta,
                Err(e) if is_absent(&e) => return Ok(Probe::Absent),
                Err(e) => return Err(e),
            };
            Ok(if meta.is_whiteout() {
                Probe::Whiteout
            } else if meta.kind != Kind::Dir {
                Probe::NonDir(meta)
            } else {
                let opaque = xattr::is_opaque(&path)?;
                Probe::Dir { meta, opaque }
            })
        })
    }

    /// Resolves an image path like `usr/bin/env` (relative, `/`-separated) from the root.
    pub fn resolve(&self, rel: &Path) -> io::Result<Option<Resolved>> {
        let mut current = self.resolve_root()?;
        let mut at = PathBuf::new();
        for component in rel.components() {
            let std::path::Component::Normal(name) = component else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not a plain relative path", rel.display()),
                ));
            };
            let Resolved::Dir { layers, .. } = &current else {
                return Ok(None);
            };
            match self.lookup(&at, layers, name)? {
                Some(next) => current = next,
                None => return Ok(None),
            }
            at.push(name);
        }
        Ok(Some(current))
    }

    /// Names visible in the merged directory `rel` made of `layers`, each with
    /// what it resolves to, in first-seen order (topmost layer's entries first).
    pub fn read_dir(
        &self,
        rel: &Path,
        layers: &[LayerIdx],
    ) -> io::Result<Vec<(OsString, Resolved)>> {
        let mut seen = std::collections::HashSet::new();
        let mut names = Vec::new();
        for &layer in layers {
            let dir = self.host_path(layer, rel);
            for entry in std::fs::read_dir(&dir)? {
                let name = entry?.file_name();
                if seen.insert(name.clone()) {
                    names.push(name);
                }
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(resolved) = self.lookup(rel, layers, &name)? {
                out.push((name, resolved));
            }
        }
        Ok(out)
    }

    /// Target of the symlink `rel` in layer `layer`.
    pub fn read_link(&self, layer: LayerIdx, rel: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(self.host_path(layer, rel))
    }
}

/// What one layer holds at a name, as far as merging is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// Nothing there.
    Absent,
    /// A whiteout.
    Whiteout,
    /// A file, symlink, device, fifo or socket.
    NonDir(Meta),
    /// A directory, possibly opaque.
    Dir {
        /// Its metadata.
        meta: Meta,
        /// True when marked `trusted.overlay.opaque=y`.
        opaque: bool,
    },
}

/// The overlayfs merge rule over the layers of a parent directory, topmost first.
/// `probe` is asked layer by layer and only as far as the rule needs.
pub(crate) fn merge(
    parent_layers: &[LayerIdx],
    mut probe: impl FnMut(LayerIdx) -> io::Result<Probe>,
) -> io::Result<Option<Resolved>> {
    let mut dirs: Vec<LayerIdx> = Vec::new();
    let mut top_meta = None;
    for &layer in parent_layers {
        match probe(layer)? {
            Probe::Absent => continue,
            Probe::Whiteout => break,
            Probe::NonDir(meta) if dirs.is_empty() => {
                return Ok(Some(Resolved::Other { layer, meta }));
            }
            Probe::NonDir(_) => break,
            Probe::Dir { meta, opaque } => {
                dirs.push(layer);
                top_meta.get_or_insert(meta);
                if opaque {
                    break;
                }
            }
        }
    }
    Ok(top_meta.map(|meta| Resolved::Dir { layers: dirs, meta }))
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ENAMETOOLONG)
    )
}

#[cfg(test)]
mod tests;
