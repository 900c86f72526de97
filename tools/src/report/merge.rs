//! The merged view of an image read from its layer blobs: each layer's tar
//! (decompressed by media type) applied bottom to top with OCI whiteouts, so
//! the file list and sizes are known for any image, unpacked or not.
//!
//! Rules, as containerd applies layers:
//! - `<dir>/.wh.<name>` deletes `<dir>/<name>` (and what is beneath it) of
//!   the layers below; `<dir>/.wh..wh..opq` hides everything the layers below
//!   have in `<dir>`. Whiteouts never hide entries of their own layer.
//! - An entry replaces what a lower layer has at its path; a non-directory
//!   replacing a directory hides the directory's whole subtree. A directory
//!   over a directory merges.
//! - A tar hardlink joins its target's inode: its bytes count once, and its
//!   mode and capabilities are the inode's.
//! - Paths are normalized (leading `/` and `./`, `.` components); a path with
//!   `..` is refused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read};

use oci_spec::image::MediaType;
use tar::EntryType;

mod resolve;
pub use resolve::MAX_SYMLINKS;
#[cfg(test)]
mod tests;

/// The most bytes of one captured file (the dpkg status) kept in memory.
pub const MAX_CAPTURE: u64 = 64 << 20;

/// The PAX records that carry a file's `security.capability` xattr: GNU tar
/// and Go's archive/tar write the first, bsdtar the second.
const CAPABILITY_RECORDS: [&str; 2] = [
    "SCHILY.xattr.security.capability",
    "LIBARCHIVE.xattr.security.capability",
];

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The layer's media type names no compression this reads.
    #[error("unsupported layer media type {media_type:?}")]
    MediaType {
        /// The media type.
        media_type: String,
    },
    /// Decompressing or reading the tar failed.
    #[error("reading the layer tar: {source}")]
    Io {
        /// What went wrong.
        #[from]
        source: io::Error,
    },
    /// An entry's path leaves the root.
    #[error("tar entry {path:?} is not a path inside the image")]
    BadPath {
        /// The path as found in the tar.
        path: String,
    },
    /// A hardlink points at nothing in the image.
    #[error("hardlink {path} points to {target}, which is not a file in the image")]
    Hardlink {
        /// The hardlink.
        path: String,
        /// Its target.
        target: String,
    },
    /// A file to capture is too large.
    #[error("{path} is {size} bytes, more than {MAX_CAPTURE} this reads")]
    TooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression of an OCI layer media type, or of one `oci-spec` does
    /// not know by name: Docker's (`...diff.tar.gzip`), or one with
    /// parameters (`...tar+zstd; x=y`), by its suffix (`...tar`, `...tar+gzip`,
    /// `...tar.gzip`, `...tar+zstd`).
    pub fn of_media_type(media_type: &MediaType) -> Result<Compression, MergeError> {
        match media_type {
            MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Ok(Compression::None),
            MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
                Ok(Compression::Gzip)
            }
            MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
                Ok(Compression::Zstd)
            }
            MediaType::Other(other) => Compression::of_suffix(other),
            known => Err(MergeError::MediaType {
                media_type: known.to_string(),
            }),
        }
    }

    fn of_suffix(media_type: &str) -> Result<Compression, MergeError> {
        let base = media_type.split(';').next().unwrap_or_default().trim();
        if base.ends_with("+gzip") || base.ends_with(".gzip") {
            Ok(Compression::Gzip)
        } else if base.ends_with("+zstd") || base.ends_with(".zstd") {
            Ok(Compression::Zstd)
        } else if base.ends_with(".tar") || base.ends_with("layer.v1.tar") {
            Ok(Compression::None)
        } else {
            Err(MergeError::MediaType {
                media_type: media_type.to_string(),
            })
        }
    }
}

/// What a merged path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file: its inode (shared by its hardlinks), size, mode and
    /// whether it has file capabilities.
    File {
        /// Identifies the hardlink group.
        inode: u64,
        /// Content bytes.
        size: u64,
        /// Permission bits with setuid, setgid and sticky (`0o4755`).
        mode: u32,
        /// It carries a `security.capability` xattr.
        capability: bool,
    },
    /// A symlink: its target as the tar has it.
    Symlink {
        /// The target, absolute or relative to the link's directory.
        target: String,
    },
    /// A device or fifo: no content bytes.
    Other,
}

/// The merged tree of the layers applied so far.
#[derive(Debug, Default)]
pub struct Merged {
    /// Every path (relative, no leading `/`) and what it is.
    nodes: BTreeMap<String, Node>,
    /// Paths whose content is kept (relative).
    capture: BTreeSet<String>,
    /// Captured contents by inode.
    contents: HashMap<u64, Vec<u8>>,
    next_inode: u64,
}

/// One entry of a layer, read ahead of applying it.
struct Pending {
    path: String,
    node: Node,
    link: Option<String>,
}

impl Merged {
    /// An empty tree that keeps the content of `capture` (absolute paths).
    pub fn new(capture: &[&str]) -> Merged {
        Merged {
            capture: capture
                .iter()
                .map(|p| p.trim_start_matches('/').to_string())
                .collect(),
            ..Merged::default()
        }
    }

    /// Applies the layer blob `blob`, compressed as `compression`, on top;
    /// returns its uncompressed (tar) size.
    pub fn apply_blob(&mut self, blob: &[u8], compression: Compression) -> Result<u64, MergeError> {
        match compression {
            Compression::None => self.apply_tar(blob),
            Compression::Gzip => self.apply_tar(flate2::read::MultiGzDecoder::new(blob)),
            Compression::Zstd => self.apply_tar(zstd::stream::read::Decoder::new(blob)?),
        }
    }

    /// Applies an uncompressed tar stream on top; returns its size in bytes.
    pub fn apply_tar(&mut self, tar: impl Read) -> Result<u64, MergeError> {
        let mut counted = Counted { inner: tar, n: 0 };
        let mut whiteouts: Vec<String> = Vec::new();
        let mut opaque: Vec<String> = Vec::new();
        let mut entries: Vec<Pending> = Vec::new();
        {
            let mut archive = tar::Archive::new(&mut counted);
            for entry in archive.entries()? {
                let mut entry = entry?;
                let raw = entry.path_bytes().into_owned();
                let raw = String::from_utf8_lossy(&raw).into_owned();
                let path = normalize(&raw).ok_or(MergeError::BadPath { path: raw.clone() })?;
                if path.is_empty() {
                    continue;
                }
                let (dir, name) = split(&path);
                if name == ".wh..wh..opq" {
                    opaque.push(dir.to_string());
                    continue;
                }
                if let Some(hidden) = name.strip_prefix(".wh.") {
                    whiteouts.push(join(dir, hidden));
                    continue;
                }
                let kind = entry.header().entry_type();
                let mut link = None;
                let node = match kind {
                    EntryType::Directory => Node::Dir,
                    EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                        let size = entry.size();
                        let mode = entry.header().mode()?;
                        let capability = has_capability(&mut entry)?;
                        let inode = self.inode();
                        if self.capture.contains(&path) {
                            if size > MAX_CAPTURE {
                                return Err(MergeError::TooLarge { path, size });
                            }
                            let mut bytes = Vec::with_capacity(size as usize);
                            entry.read_to_end(&mut bytes)?;
                            self.contents.insert(inode, bytes);
                        }
                        Node::File {
                            inode,
                            size,
                            mode,
                            capability,
                        }
                    }
                    EntryType::Link => {
                        let target = entry
                            .link_name_bytes()
                            .map(|t| String::from_utf8_lossy(&t).into_owned())
                            .unwrap_or_default();
                        let normalized = normalize(&target).filter(|t| !t.is_empty());
                        link = Some(normalized.ok_or(MergeError::BadPath { path: target })?);
                        Node::Other
                    }
                    EntryType::Symlink => Node::Symlink {
                        target: entry
                            .link_name_bytes()
                            .map(|t| String::from_utf8_lossy(&t).into_owned())
                            .unwrap_or_default(),
                    },
                    EntryType::Char | EntryType::Block | EntryType::Fifo => Node::Other,
                    _ => continue, // PAX and GNU records are consumed by the tar crate
                };
                entries.push(Pending { path, node, link });
            }
        }
        io::copy(&mut counted, &mut io::sink())?;
        // Whiteouts hide lower layers only: apply them before the layer's entries.
        for dir in opaque {
            self.remove_beneath(&dir);
        }
        for path in whiteouts {
            self.remove(&path);
        }
        for pending in entries {
            self.put(pending)?;
        }
        Ok(counted.n)
    }

    fn inode(&mut self) -> u64 {
        self.next_inode += 1;
        self.next_inode
    }

    fn put(&mut self, pending: Pending) -> Result<(), MergeError> {
        let Pending {
            path,
            mut node,
            link,
        } = pending;
        if let Some(target) = link {
            node = match self.nodes.get(&target) {
                Some(Node::Dir) | None => {
                    return Err(MergeError::Hardlink {
                        path: format!("/{path}"),
                        target: format!("/{target}"),
                    });
                }
                Some(found) => found.clone(),
            };
        }
        // An entry's ancestors are directories.
        let mut at = 0;
        while let Some(slash) = path[at..].find('/') {
            let parent = &path[..at + slash];
            if self.nodes.get(parent) != Some(&Node::Dir) {
                self.remove(parent);
                self.nodes.insert(parent.to_string(), Node::Dir);
            }
            at += slash + 1;
        }
        match (self.nodes.get(&path), &node) {
            (Some(Node::Dir), Node::Dir) => {}
            (Some(_), _) => {
                self.remove(&path);
                self.nodes.insert(path, node);
            }
            (None, _) => {
                self.nodes.insert(path, node);
            }
        }
        Ok(())
    }

    /// Removes `path` and everything beneath it.
    fn remove(&mut self, path: &str) {
        self.nodes.remove(path);
        self.remove_beneath(path);
    }

    /// Removes everything beneath directory `dir` ("" is the root).
    fn remove_beneath(&mut self, dir: &str) {
        let doomed: Vec<String> = self.beneath(dir).map(|(p, _)| p.clone()).collect();
        for path in doomed {
            self.nodes.remove(&path);
        }
    }

    fn beneath<'a>(&'a self, dir: &str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.nodes
            .range(prefix.clone()..)
            .take_while(move |(p, _)| p.starts_with(&prefix))
    }

    /// Every path (absolute) and what it is, sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = (String, &Node)> + '_ {
        self.nodes.iter().map(|(p, n)| (format!("/{p}"), n))
    }

    /// What is at `path` (absolute), the last component not followed.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path.trim_start_matches('/'))
    }

    /// The content of `path` (absolute), when it is a regular file captured
    /// through [`Merged::new`].
    pub fn content(&self, path: &str) -> Option<&[u8]> {
        match self.get(path)? {
            Node::File { inode, .. } => self.contents.get(inode).map(Vec::as_slice),
            _ => None,
        }
    }

    /// Non-directories (hardlinks counted once per name).
    pub fn files(&self) -> u64 {
        self.nodes.values().filter(|n| **n != Node::Dir).count() as u64
    }

    /// Bytes of file content, each hardlink group counted once.
    pub fn bytes(&self) -> u64 {
        let mut seen = BTreeSet::new();
        self.nodes
            .values()
            .filter_map(|n| match n {
                Node::File { inode, size, .. } if seen.insert(*inode) => Some(*size),
                _ => None,
            })
            .sum()
    }
}

/// Whether a tar entry carries a `security.capability` xattr.
fn has_capability<R: Read>(entry: &mut tar::Entry<R>) -> io::Result<bool> {
    let Some(records) = entry.pax_extensions()? else {
        return Ok(false);
    };
    for record in records {
        if let Ok(key) = record?.key()
            && CAPABILITY_RECORDS.contains(&key)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `raw` as a relative path without `.` components; `None` when it has `..`.
fn normalize(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// (parent, name) of a relative path; the root's children have parent "".
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// A reader that counts the bytes read through it.
struct Counted<R> {
    inner: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}
