//! The minimized image's single layer: a tar of the kept entries in their
//! order, with owners, modes, nanosecond mtimes, xattrs (PAX `SCHILY.xattr.*`,
//! as containerd applies them), device numbers and hardlinks, compressed with
//! gzip or zstd and streamed to a writer (a file: the layer is never held in
//! memory). Deterministic: the same entries give the same bytes.
//!
//! Each entry is a ustar header preceded, when it needs one, by exactly one
//! PAX extended header carrying every key it needs (`path`, `linkpath`,
//! `mtime` with nanoseconds, `uid`, `gid`, `size`, `SCHILY.xattr.*`): no GNU
//! long-name or long-link entries, which some readers refuse next to PAX.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use oci_spec::image::MediaType;
use pare_fs::id::Digest;
use pare_fs::layers::Kind;
use pare_fs::profile::ImagePath;
use sha2::{Digest as _, Sha256};
use tar::{EntryType, Header};

use super::closure::{HardlinkGroup, Kept};
use super::tree::ImageTree;

/// Layer compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// gzip (every OCI tool reads it).
    Gzip,
    /// zstd (smaller and faster to decompress; containerd 1.5+).
    Zstd,
}

impl Compression {
    /// OCI media type of a layer with this compression.
    pub fn media_type(self) -> MediaType {
        match self {
            Compression::Gzip => MediaType::ImageLayerGzip,
            Compression::Zstd => MediaType::ImageLayerZstd,
        }
    }
}

/// Bytes of file content copied at a time.
const COPY_BUFFER: usize = 256 << 10;
/// Longest name or link target a ustar header holds.
const USTAR_NAME_MAX: usize = 100;
/// Largest value of the 8-byte octal fields (uid, gid).
const USTAR_ID_MAX: u64 = 0o7_777_777;
/// Largest value of the 12-byte octal fields (size, mtime).
const USTAR_NUM_MAX: u64 = 0o77_777_777_777;

/// A written layer (the compressed bytes went to the writer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerOut {
    /// `sha256:` of the uncompressed tar (the diff ID).
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
    /// Entries written.
    pub entries: u64,
    /// Bytes of file content written.
    pub content_bytes: u64,
}

/// Why the layer could not be written.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Reading an entry of the image failed.
    #[error("{path}: {source}")]
    Read {
        /// The image path.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Writing or compressing failed.
    #[error("writing the layer: {0}")]
    Write(#[from] io::Error),
}

/// Hashes what goes through it (the uncompressed tar) on its way to `inner`.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

impl<W: Write> Encoder<W> {
    fn new(compression: Compression, out: W) -> io::Result<Encoder<W>> {
        Ok(match compression {
            // No name, no time, fixed OS byte: the same tar gives the same blob.
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(out, flate2::Compression::new(6)),
            ),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(out, 9)?),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// Writes `kept` (in order) as a compressed layer into `out`, and gives `out`
/// back. `contents` replaces the content of some files (trimmed package
/// metadata). `progress` gets the number of content bytes written so far.
/// File content is copied through one bounded buffer.
pub fn write<W: Write>(
    tree: &ImageTree,
    kept: &[Kept],
    contents: &HashMap<ImagePath, Vec<u8>>,
    compression: Compression,
    out: W,
    progress: &dyn Fn(u64),
) -> Result<(LayerOut, W), LayerError> {
    let hashing = Hashing {
        inner: Encoder::new(compression, out)?,
        hash: Sha256::new(),
        size: 0,
    };
    let mut builder = tar::Builder::new(hashing);
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut first_name: HashMap<HardlinkGroup, Vec<u8>> = HashMap::new();
    let mut out_entries = 0u64;
    let mut content_bytes = 0u64;
    for k in kept {
        let read_err = |source| LayerError::Read {
            path: k.path.to_string(),
            source,
        };
        let raw_name = &k.path.as_bytes()[1..];
        let meta = *k.resolved.meta();
        if meta.kind == Kind::Socket {
            continue; // tar has no sockets; they are made at run time
        }
        let mut entry = EntryHeader::new(meta.mode & 0o7777);
        entry.set_owner(meta.uid, meta.gid);
        entry.set_mtime(meta.mtime.sec, meta.mtime.nsec);
        let group = HardlinkGroup::of(&k.resolved);
        let link_to = group.and_then(|g| first_name.get(&g));
        let mut name = raw_name.to_vec();
        if meta.kind == Kind::Dir {
            name.push(b'/');
        }
        entry.set_name(&name);
        entry.set_xattrs(tree.xattrs(&k.path, &k.resolved).map_err(read_err)?);
        if let Some(target) = link_to {
            entry.set_kind(EntryType::Link);
            entry.set_link(target);
            entry.append(&mut builder, io::empty())?;
            out_entries += 1;
            continue;
        }
        match meta.kind {
            Kind::Dir => {
                entry.set_kind(EntryType::Directory);
                entry.append(&mut builder, io::empty())?;
            }
            Kind::File => {
                entry.set_kind(EntryType::Regular);
                match contents.get(&k.path) {
                    Some(bytes) => {
                        entry.set_size(bytes.len() as u64);
                        entry.append(&mut builder, bytes.as_slice())?;
                        content_bytes += bytes.len() as u64;
                    }
                    None => {
                        let file = tree.open(&k.path).map_err(read_err)?;
                        entry.set_size(meta.size);
                        entry.append(&mut builder, io::empty())?;
                        copy_exact(file, meta.size, builder.get_mut(), &mut buffer).map_err(
                            |e| match e {
                                Copy::Read(e) => read_err(e),
                                Copy::Write(e) => LayerError::Write(e),
                            },
                        )?;
                        content_bytes += meta.size;
                    }
                }
                progress(content_bytes);
            }
            Kind::Symlink => {
                entry.set_kind(EntryType::Symlink);
                let target = tree.read_link(&k.path).map_err(read_err)?;
                entry.set_link(target.as_os_str().as_bytes());
                entry.append(&mut builder, io::empty())?;
            }
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                entry.set_kind(match meta.kind {
                    Kind::CharDevice => EntryType::Char,
                    Kind::BlockDevice => EntryType::Block,
                    _ => EntryType::Fifo,
                });
                let (major, minor) = (rustix::fs::major(meta.rdev), rustix::fs::minor(meta.rdev));
                entry.header.set_device_major(major)?;
                entry.header.set_device_minor(minor)?;
                entry.append(&mut builder, io::empty())?;
            }
            Kind::Socket => unreachable!("skipped above"),
        }
        if let Some(g) = group {
            first_name.insert(g, name);
        }
        out_entries += 1;
    }
    let hashing = builder.into_inner()?;
    let diff_id = Digest::from_hash(&hashing.hash.finalize());
    let out = hashing.inner.finish()?;
    Ok((
        LayerOut {
            diff_id,
            tar_size: hashing.size,
            entries: out_entries,
            content_bytes,
        },
        out,
    ))
}

/// One entry's ustar header and the PAX records it needs, in a fixed order.
struct EntryHeader {
    header: Header,
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    mtime: Option<String>,
    uid: Option<u64>,
    gid: Option<u64>,
    size: Option<u64>,
    xattrs: Vec<(std::ffi::OsString, Vec<u8>)>,
}

impl EntryHeader {
    fn new(mode: u32) -> EntryHeader {
        let mut header = Header::new_ustar();
        header.set_mode(mode);
        header.set_size(0);
        EntryHeader {
            header,
            path: None,
            linkpath: None,
            mtime: None,
            uid: None,
            gid: None,
            size: None,
            xattrs: Vec::new(),
        }
    }

    fn set_kind(&mut self, kind: EntryType) {
        self.header.set_entry_type(kind);
    }

    /// The ustar name field holds names of up to 100 bytes as they are;
    /// a longer name goes in PAX `path` (the field keeps its first 100 bytes).
    fn set_name(&mut self, name: &[u8]) {
        let field = &mut self.header.as_old_mut().name;
        copy_truncated(field, name);
        if name.len() > USTAR_NAME_MAX {
            self.path = Some(name.to_vec());
        }
    }

    /// As [`EntryHeader::set_name`], for a symlink's target or a hardlink's first name.
    fn set_link(&mut self, target: &[u8]) {
        let field = &mut self.header.as_old_mut().linkname;
        copy_truncated(field, target);
        if target.len() > USTAR_NAME_MAX {
            self.linkpath = Some(target.to_vec());
        }
    }

    fn set_owner(&mut self, uid: u32, gid: u32) {
        let (uid, gid) = (u64::from(uid), u64::from(gid));
        self.header
            .set_uid(if uid > USTAR_ID_MAX { 0 } else { uid });
        self.header
            .set_gid(if gid > USTAR_ID_MAX { 0 } else { gid });
        self.uid = (uid > USTAR_ID_MAX).then_some(uid);
        self.gid = (gid > USTAR_ID_MAX).then_some(gid);
    }

    /// Whole seconds in the header; PAX `mtime` when there are nanoseconds
    /// or the seconds do not fit (before 1970, or past the octal field).
    fn set_mtime(&mut self, sec: i64, nsec: u32) {
        let fits = u64::try_from(sec).is_ok_and(|s| s <= USTAR_NUM_MAX);
        self.header.set_mtime(if fits { sec as u64 } else { 0 });
        if nsec != 0 || !fits {
            self.mtime = Some(pax_time(sec, nsec));
        }
    }

    fn set_size(&mut self, size: u64) {
        self.header
            .set_size(if size > USTAR_NUM_MAX { 0 } else { size });
        self.size = (size > USTAR_NUM_MAX).then_some(size);
    }

    fn set_xattrs(&mut self, xattrs: Vec<(std::ffi::OsString, Vec<u8>)>) {
        self.xattrs = xattrs;
    }

    /// The PAX records, in a fixed order (xattrs sorted by name).
    fn pax(&self) -> Vec<(String, Vec<u8>)> {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let binary = [&self.path, &self.linkpath]
            .into_iter()
            .flatten()
            .any(|v| std::str::from_utf8(v).is_err());
        if binary {
            // Values are bytes, not UTF-8 (GNU tar honours it; others ignore it).
            pax.push(("hdrcharset".into(), b"BINARY".to_vec()));
        }
        if let Some(path) = &self.path {
            pax.push(("path".into(), path.clone()));
        }
        if let Some(linkpath) = &self.linkpath {
            pax.push(("linkpath".into(), linkpath.clone()));
        }
        if let Some(mtime) = &self.mtime {
            pax.push(("mtime".into(), mtime.clone().into_bytes()));
        }
        for (key, value) in [("uid", self.uid), ("gid", self.gid), ("size", self.size)] {
            if let Some(value) = value {
                pax.push((key.into(), value.to_string().into_bytes()));
            }
        }
        for (key, value) in &self.xattrs {
            pax.push((
                format!("SCHILY.xattr.{}", key.to_string_lossy()),
                value.clone(),
            ));
        }
        pax
    }

    /// Appends the PAX header (when any record is needed), the ustar header
    /// and `data` (padded to a block).
    fn append<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        data: impl Read,
    ) -> io::Result<()> {
        let pax = self.pax();
        if !pax.is_empty() {
            builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
        }
        self.header.set_cksum();
        builder.append(&self.header, data)
    }
}

/// Copies the first `field.len()` bytes of `value` into `field`, NUL-padded.
fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field.fill(0);
    field[..n].copy_from_slice(&value[..n]);
}

/// A PAX time: seconds and nanoseconds as one decimal number.
fn pax_time(sec: i64, nsec: u32) -> String {
    match (nsec, sec) {
        (0, _) => sec.to_string(),
        (_, 0..) => format!("{sec}.{nsec:09}"),
        // sec + nsec/1e9 is negative: the whole part rounds towards zero.
        (_, ..=-2) => format!("{}.{:09}", sec + 1, 1_000_000_000 - nsec),
        (_, -1) => format!("-0.{:09}", 1_000_000_000 - nsec),
    }
}

/// What failed while copying a file into the layer.
enum Copy {
    Read(io::Error),
    Write(io::Error),
}

/// Copies exactly `size` bytes of `file` to `out` through `buffer`, then the
/// zeros that pad them to a tar block. A file shorter than `size` is an
/// error (its header already announced `size`); bytes past it are ignored.
fn copy_exact(
    mut file: impl Read,
    size: u64,
    out: &mut impl Write,
    buffer: &mut [u8],
) -> Result<(), Copy> {
    let mut left = size;
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buffer[..want]) {
            Ok(0) => {
                return Err(Copy::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the file ended {left} bytes before its size of {size}"),
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        out.write_all(&buffer[..n]).map_err(Copy::Write)?;
        left -= n as u64;
    }
    let pad = (512 - size % 512) % 512;
    out.write_all(&[0u8; 512][..pad as usize])
        .map_err(Copy::Write)
}

#[cfg(test)]
mod interop;
#[cfg(test)]
mod tests;
