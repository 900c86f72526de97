//! Deterministic OCI image builder for tests: layers as tar (with whiteouts,
//! opaque dirs, hardlinks, devices and PAX `SCHILY.xattr.*` records), and images
//! as OCI layout tarballs that `ctr images import` accepts.
//!
//! The same input always gives the same bytes: entries are sorted by path,
//! every time is given by the caller, gzip headers carry mtime 0.

mod image;
mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use anyhow::{Context, Result, bail, ensure};
use flate2::{Compression, GzBuilder};
use pare_fs::id::Digest;
use tar::{EntryType, Header};

pub use image::{BuiltImage, Image, ImageConfig};
pub use tools::{DEFAULT_TOOLS, host_tools_layer};

/// A `security.capability` value: `vfs_cap_data` revision 2 (20 bytes) with
/// the given permitted and inheritable capability sets (bit n = capability n)
/// and the effective flag.
pub fn vfs_cap_v2(permitted: u64, inheritable: u64, effective: bool) -> Vec<u8> {
    const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
    let magic = VFS_CAP_REVISION_2 | u32::from(effective);
    let mut out = magic.to_le_bytes().to_vec();
    for half in [0, 32] {
        out.extend_from_slice(&((permitted >> half) as u32).to_le_bytes());
        out.extend_from_slice(&((inheritable >> half) as u32).to_le_bytes());
    }
    out
}

/// What an entry of a layer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with its content.
    File(Vec<u8>),
    /// A symbolic link with its target.
    Symlink(String),
    /// A tar hardlink to an earlier path of the same layer (relative to the root).
    Hardlink(String),
    /// A character device (major, minor).
    CharDev(u32, u32),
    /// A block device (major, minor).
    BlockDev(u32, u32),
    /// A named pipe.
    Fifo,
}

/// One entry of a layer: its path (relative, no leading `/`), kind and metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    path: String,
    kind: Kind,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    /// Sets the permission bits, setuid, setgid and sticky included (`0o4755`).
    pub fn mode(&mut self, mode: u32) -> &mut Entry {
        self.mode = mode & 0o7777;
        self
    }

    /// Sets the owner.
    pub fn owner(&mut self, uid: u64, gid: u64) -> &mut Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the modification time (seconds since the epoch).
    pub fn mtime(&mut self, mtime: u64) -> &mut Entry {
        self.mtime = mtime;
        self
    }

    /// Adds an extended attribute, written as PAX record `SCHILY.xattr.<name>`.
    pub fn xattr(&mut self, name: &str, value: &[u8]) -> &mut Entry {
        self.xattrs.insert(name.to_string(), value.to_vec());
        self
    }

    /// The path inside the layer.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What the entry is.
    pub fn kind(&self) -> &Kind {
        &self.kind
    }
}

/// A layer under construction. Entries take the layer's mtime unless set.
#[derive(Clone, Debug)]
pub struct Layer {
    mtime: u64,
    entries: Vec<Entry>,
}

/// A finished layer: tar bytes, gzip blob and their digests.
#[derive(Clone, Debug)]
pub struct BuiltLayer {
    /// The uncompressed tar.
    pub tar: Vec<u8>,
    /// The gzip blob, as stored in `blobs/sha256/`.
    pub gz: Vec<u8>,
    /// sha256 of `tar` (goes in the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of `gz` (goes in the manifest).
    pub digest: Digest,
}

impl Layer {
    /// An empty layer whose entries default to `mtime` (seconds since the epoch).
    pub fn new(mtime: u64) -> Layer {
        Layer {
            mtime,
            entries: Vec::new(),
        }
    }

    fn push(&mut self, path: &str, kind: Kind, mode: u32) -> &mut Entry {
        let path = path
            .trim_start_matches('/')
            .trim_end_matches('/')
            .to_string();
        self.entries.push(Entry {
            path,
            kind,
            mode: mode & 0o7777,
            uid: 0,
            gid: 0,
            mtime: self.mtime,
            xattrs: BTreeMap::new(),
        });
        self.entries.last_mut().expect("just pushed")
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Entry {
        self.push(path, Kind::Dir, mode)
    }

    /// Adds `path` and each of its ancestors not yet in the layer as
    /// directories with `mode`; returns the entry of `path`.
    pub fn dir_all(&mut self, path: &str, mode: u32) -> &mut Entry {
        let path = path.trim_matches('/');
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.contains(&prefix) {
                self.dir(&prefix, mode);
            }
        }
        self.entries
            .iter_mut()
            .find(|e| e.path == path)
            .expect("added above")
    }

    /// True when the layer already has an entry at `path`.
    pub fn contains(&self, path: &str) -> bool {
        let path = path.trim_matches('/');
        self.entries.iter().any(|e| e.path == path)
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, content: impl Into<Vec<u8>>, mode: u32) -> &mut Entry {
        self.push(path, Kind::File(content.into()), mode)
    }

    /// Adds a symbolic link to `target` (kept verbatim, relative or absolute).
    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Entry {
        self.push(path, Kind::Symlink(target.to_string()), 0o777)
    }

    /// Adds a hardlink to `target`, another path of this layer. The tar entry
    /// carries the target's mode, owner, mtime and xattrs (a hardlink has no
    /// metadata of its own), whatever is set on the returned entry.
    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Entry {
        let target = target.trim_start_matches('/').to_string();
        self.push(path, Kind::Hardlink(target), 0)
    }

    /// Adds a character device.
    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> &mut Entry {
        self.push(path, Kind::CharDev(major, minor), mode)
    }

    /// Adds a block device.
    pub fn block_dev(&mut self, path: &str, major: u32, minor: u32, mode: u32) -> &mut Entry {
        self.push(path, Kind::BlockDev(major, minor), mode)
    }

    /// Adds a named pipe.
    pub fn fifo(&mut self, path: &str, mode: u32) -> &mut Entry {
        self.push(path, Kind::Fifo, mode)
    }

    /// Whites out `path` of the layers below: an empty `.wh.<name>` file in
    /// the same directory.
    pub fn whiteout(&mut self, path: &str) -> &mut Entry {
        let path = path.trim_matches('/');
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let marker = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&marker, Vec::new(), 0o644)
    }

    /// Makes directory `dir` opaque (hides what the layers below have in it):
    /// an empty `<dir>/.wh..wh..opq` file. Add the directory itself too.
    pub fn opaque(&mut self, dir: &str) -> &mut Entry {
        let dir = dir.trim_matches('/');
        self.file(&format!("{dir}/.wh..wh..opq"), Vec::new(), 0o644)
    }

    /// The entries as added.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entries sorted by path, each hardlink moved right after its target
    /// when the target sorts later.
    fn ordered(&self) -> Result<Vec<&Entry>> {
        let mut sorted: Vec<&Entry> = self.entries.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        let mut seen = BTreeSet::new();
        for entry in &sorted {
            ensure!(!entry.path.is_empty(), "layer entry with an empty path");
            ensure!(
                !entry
                    .path
                    .split('/')
                    .any(|c| c == ".." || c == "." || c.is_empty()),
                "layer entry path {:?} is not normalized",
                entry.path
            );
            ensure!(
                seen.insert(entry.path.as_str()),
                "layer has two entries at {:?}",
                entry.path
            );
        }
        let mut out = Vec::with_capacity(sorted.len());
        let mut emitted = BTreeSet::new();
        let mut pending: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
        for entry in sorted {
            match &entry.kind {
                Kind::Hardlink(target) if !emitted.contains(target.as_str()) => {
                    ensure!(
                        seen.contains(target.as_str()),
                        "hardlink {:?} points to {target:?}, which is not in the layer",
                        entry.path
                    );
                    pending.entry(target.as_str()).or_default().push(entry);
                }
                _ => {
                    let mut queue = vec![entry];
                    while let Some(e) = queue.pop() {
                        emitted.insert(e.path.as_str());
                        out.push(e);
                        queue.extend(pending.remove(e.path.as_str()).unwrap_or_default());
                    }
                }
            }
        }
        if let Some((target, links)) = pending.into_iter().next() {
            bail!(
                "hardlink {:?} points to {target:?}, which is not a regular entry",
                links[0].path
            );
        }
        Ok(out)
    }

    /// The uncompressed tar (ustar headers, PAX records for xattrs and long names).
    pub fn tar(&self) -> Result<Vec<u8>> {
        let ordered = self.ordered()?;
        let by_path: BTreeMap<&str, &Entry> = ordered.iter().map(|e| (e.path(), *e)).collect();
        let mut builder = tar::Builder::new(Vec::new());
        for entry in ordered {
            // A hardlink entry carries its target's metadata, as Go's
            // archive/tar writes it: containerd applies the header's mode and
            // owner to the shared inode.
            let meta = match &entry.kind {
                Kind::Hardlink(target) => by_path[target.as_str()],
                _ => entry,
            };
            append(&mut builder, entry, meta)
                .with_context(|| format!("tar entry {}", entry.path))?;
        }
        Ok(builder.into_inner()?)
    }

    /// Builds the tar and its gzip blob with their digests.
    pub fn build(&self) -> Result<BuiltLayer> {
        let tar = self.tar()?;
        let gz = gzip(&tar)?;
        Ok(BuiltLayer {
            diff_id: Digest::sha256(&tar),
            digest: Digest::sha256(&gz),
            tar,
            gz,
        })
    }
}

/// Gzip with a fixed header (no name, mtime 0, OS "unknown") and level 6.
pub fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::new(6));
    encoder.write_all(bytes)?;
    Ok(encoder.finish()?)
}

/// Longest name or link name a ustar header holds without a PAX record.
const USTAR_NAME_MAX: usize = 100;

/// Appends `entry` with the mode, owner, mtime and xattrs of `meta` (the
/// entry itself, or a hardlink's target).
fn append(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry, meta: &Entry) -> Result<()> {
    let mut header = Header::new_ustar();
    header.set_mode(meta.mode);
    header.set_uid(meta.uid);
    header.set_gid(meta.gid);
    header.set_mtime(meta.mtime);
    header.set_size(0);
    let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
    let path = match entry.kind {
        Kind::Dir => format!("{}/", entry.path),
        _ => entry.path.clone(),
    };
    if path.len() > USTAR_NAME_MAX {
        pax.push(("path".into(), path.clone().into_bytes()));
    }
    let mut data: &[u8] = &[];
    let mut link: Option<&str> = None;
    match &entry.kind {
        Kind::Dir => header.set_entry_type(EntryType::Directory),
        Kind::File(content) => {
            header.set_entry_type(EntryType::Regular);
            header.set_size(content.len() as u64);
            data = content;
        }
        Kind::Symlink(target) => {
            header.set_entry_type(EntryType::Symlink);
            link = Some(target);
        }
        Kind::Hardlink(target) => {
            header.set_entry_type(EntryType::Link);
            link = Some(target);
        }
        Kind::CharDev(major, minor) | Kind::BlockDev(major, minor) => {
            header.set_entry_type(if matches!(entry.kind, Kind::CharDev(..)) {
                EntryType::Char
            } else {
                EntryType::Block
            });
            header.set_device_major(*major)?;
            header.set_device_minor(*minor)?;
        }
        Kind::Fifo => header.set_entry_type(EntryType::Fifo),
    }
    if let Some(target) = link {
        if target.len() > USTAR_NAME_MAX {
            pax.push(("linkpath".into(), target.as_bytes().to_vec()));
        } else {
            header.set_link_name(target)?;
        }
    }
    for (name, value) in &meta.xattrs {
        pax.push((format!("SCHILY.xattr.{name}"), value.clone()));
    }
    if !pax.is_empty() {
        builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    set_name(&mut header, &path)?;
    header.set_cksum();
    builder.append(&header, data)?;
    Ok(())
}

/// Sets the ustar name (split into prefix and name when needed); a path too
/// long for that is truncated, its PAX `path` record carries it whole.
fn set_name(header: &mut Header, path: &str) -> Result<()> {
    if path.len() <= USTAR_NAME_MAX || header.set_path(path).is_err() {
        let ustar = header.as_ustar_mut().expect("ustar header");
        let bytes = path.as_bytes();
        let n = bytes.len().min(ustar.name.len());
        ustar.name = [0; 100];
        ustar.name[..n].copy_from_slice(&bytes[..n]);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
