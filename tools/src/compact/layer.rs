//! The minimized image's single layer: a tar of the kept entries in their
//! order, with owners, modes, nanosecond mtimes, xattrs (PAX `SCHILY.xattr.*`,
//! as containerd applies them), device numbers and hardlinks, compressed with
//! gzip or zstd. Deterministic: the same entries give the same bytes.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;

use pare_fs::layers::{Kind, Resolved};
use pare_fs::profile::ImagePath;
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::closure::Kept;
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
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// A written layer.
pub struct LayerOut {
    /// Compressed bytes (the blob).
    pub blob: Vec<u8>,
    /// `sha256:` of the uncompressed tar (the diff ID).
    pub diff_id: String,
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

enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl Write for Encoder {
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

impl Encoder {
    fn new(compression: Compression) -> io::Result<Encoder> {
        Ok(match compression {
            // No name, no time, fixed OS byte: the same tar gives the same blob.
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(Vec::new(), flate2::Compression::new(6)),
            ),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(Vec::new(), 9)?),
        })
    }

    fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// Writes `kept` (in order) as a compressed layer. `contents` replaces the
/// content of some files (trimmed package metadata). `progress` gets the
/// number of content bytes written so far.
pub fn write(
    tree: &ImageTree,
    kept: &[Kept],
    contents: &HashMap<ImagePath, Vec<u8>>,
    compression: Compression,
    progress: &dyn Fn(u64),
) -> Result<LayerOut, LayerError> {
    let hashing = Hashing {
        inner: Encoder::new(compression)?,
        hash: Sha256::new(),
        size: 0,
    };
    let mut builder = tar::Builder::new(hashing);
    builder.mode(tar::HeaderMode::Complete);
    let mut first_name: HashMap<(u16, u64, u64), String> = HashMap::new();
    let mut out_entries = 0u64;
    let mut content_bytes = 0u64;
    for k in kept {
        let read_err = |source| LayerError::Read {
            path: k.path.to_string(),
            source,
        };
        let name = String::from_utf8_lossy(&k.path.as_bytes()[1..]).into_owned();
        let raw_name = &k.path.as_bytes()[1..];
        let meta = *k.resolved.meta();
        if meta.kind == Kind::Socket {
            continue; // tar has no sockets; they are made at run time
        }
        let mut header = Header::new_ustar();
        header.set_mode(meta.mode & 0o7777);
        header.set_uid(u64::from(meta.uid));
        header.set_gid(u64::from(meta.gid));
        header.set_mtime(meta.mtime.sec.max(0) as u64);
        header.set_size(0);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if meta.mtime.nsec != 0 {
            pax.push((
                "mtime".into(),
                format!("{}.{:09}", meta.mtime.sec, meta.mtime.nsec).into_bytes(),
            ));
        }
        for (key, value) in tree.xattrs(&k.path, &k.resolved).map_err(read_err)? {
            pax.push((format!("SCHILY.xattr.{}", key.to_string_lossy()), value));
        }
        if raw_name.len() > 100 || std::str::from_utf8(raw_name).is_err() {
            pax.push(("path".into(), raw_name.to_vec()));
        }
        let group = match &k.resolved {
            Resolved::Other { layer, meta } if meta.nlink > 1 && meta.kind != Kind::Dir => {
                Some((layer.0, meta.dev, meta.ino))
            }
            _ => None,
        };
        if let Some(target) = group.and_then(|g| first_name.get(&g)) {
            header.set_entry_type(EntryType::Link);
            if target.len() > 100 {
                pax.push(("linkpath".into(), target.as_bytes().to_vec()));
            }
            append_pax(&mut builder, &pax)?;
            builder.append_link(&mut header, &name, target)?;
            out_entries += 1;
            continue;
        }
        append_pax(&mut builder, &pax)?;
        match meta.kind {
            Kind::Dir => {
                header.set_entry_type(EntryType::Directory);
                builder.append_data(&mut header, format!("{name}/"), io::empty())?;
            }
            Kind::File => {
                header.set_entry_type(EntryType::Regular);
                match contents.get(&k.path) {
                    Some(bytes) => {
                        header.set_size(bytes.len() as u64);
                        content_bytes += bytes.len() as u64;
                        builder.append_data(&mut header, &name, bytes.as_slice())?;
                    }
                    None => {
                        let file = tree.open(&k.path).map_err(read_err)?;
                        header.set_size(meta.size);
                        content_bytes += meta.size;
                        builder.append_data(&mut header, &name, io::Read::take(file, meta.size))?;
                    }
                }
                progress(content_bytes);
            }
            Kind::Symlink => {
                header.set_entry_type(EntryType::Symlink);
                let target = tree.read_link(&k.path).map_err(read_err)?;
                let bytes = target.as_os_str().as_bytes();
                if bytes.len() > 100 {
                    append_pax(&mut builder, &[("linkpath".into(), bytes.to_vec())])?;
                }
                builder.append_link(&mut header, &name, &target)?;
            }
            Kind::CharDevice | Kind::BlockDevice | Kind::Fifo => {
                header.set_entry_type(match meta.kind {
                    Kind::CharDevice => EntryType::Char,
                    Kind::BlockDevice => EntryType::Block,
                    _ => EntryType::Fifo,
                });
                let (major, minor) = (rustix::fs::major(meta.rdev), rustix::fs::minor(meta.rdev));
                header.set_device_major(major)?;
                header.set_device_minor(minor)?;
                builder.append_data(&mut header, &name, io::empty())?;
            }
            Kind::Socket => unreachable!("skipped above"),
        }
        if let Some(g) = group {
            first_name.insert(g, name.clone());
        }
        out_entries += 1;
    }
    let hashing = builder.into_inner()?;
    let diff_id = format!("sha256:{:x}", hashing.hash.finalize());
    Ok(LayerOut {
        blob: hashing.inner.finish()?,
        diff_id,
        tar_size: hashing.size,
        entries: out_entries,
        content_bytes,
    })
}

fn append_pax<W: Write>(
    builder: &mut tar::Builder<W>,
    pax: &[(String, Vec<u8>)],
) -> io::Result<()> {
    if pax.is_empty() {
        return Ok(());
    }
    builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
}

#[cfg(test)]
mod tests;
