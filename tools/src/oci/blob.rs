//! Content-addressed blobs: small ones held in memory ([`Blob`]: configs,
//! manifests) and large ones spooled to a temporary file ([`FileBlob`]: the
//! layer), both read through [`Content`] so that no writer needs a whole
//! layer in memory.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use oci_spec::image::{Descriptor, MediaType};
use pare_fs::id::Digest;
use sha2::{Digest as _, Sha256};

/// Bytes of the write buffer of a [`Spool`].
const SPOOL_BUFFER: usize = 256 << 10;

/// A blob's bytes with their media type and sha256 digest, wherever they are.
pub trait Content {
    /// Media type, e.g. [`MediaType::ImageLayerGzip`].
    fn media_type(&self) -> &MediaType;

    /// The digest of the bytes.
    fn digest(&self) -> &Digest;

    /// Number of bytes.
    fn size(&self) -> u64;

    /// The bytes from the start, streamed (owned, so a writer on another
    /// task can hold it).
    fn reader(&self) -> io::Result<Box<dyn Read + Send>>;

    /// Puts the bytes at `path`: a temporary name beside it, synced, then
    /// renamed over it.
    fn write_to(&self, path: &Path) -> io::Result<()> {
        let mut reader = self.reader()?;
        replace_with(path, |tmp| {
            let mut file = File::create(tmp)?;
            io::copy(&mut reader, &mut file)?;
            file.sync_all()
        })
    }

    /// Its OCI descriptor: media type, digest and size.
    fn descriptor(&self) -> Descriptor {
        super::descriptor(self.media_type().clone(), self.digest(), self.size())
    }
}

/// A blob held in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Media type, e.g. [`MediaType::ImageConfig`].
    pub media_type: MediaType,
    /// The digest of `bytes`.
    pub digest: Digest,
    /// The content.
    pub bytes: Vec<u8>,
}

impl Blob {
    /// A blob of `bytes` with its digest computed.
    pub fn new(media_type: MediaType, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type,
            digest: Digest::sha256(&bytes),
            bytes,
        }
    }

    /// Its OCI descriptor: media type, digest and size.
    pub fn descriptor(&self) -> Descriptor {
        Content::descriptor(self)
    }
}

impl Content for Blob {
    fn media_type(&self) -> &MediaType {
        &self.media_type
    }

    fn digest(&self) -> &Digest {
        &self.digest
    }

    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn reader(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.bytes.clone())))
    }

    fn write_to(&self, path: &Path) -> io::Result<()> {
        replace_with(path, |tmp| {
            let mut file = File::create(tmp)?;
            file.write_all(&self.bytes)?;
            file.sync_all()
        })
    }
}

/// A blob in a temporary file, removed when the blob is dropped.
#[derive(Debug)]
pub struct FileBlob {
    media_type: MediaType,
    digest: Digest,
    size: u64,
    path: tempfile::TempPath,
}

impl FileBlob {
    /// Where the bytes are (until the blob is dropped).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Content for FileBlob {
    fn media_type(&self) -> &MediaType {
        &self.media_type
    }

    fn digest(&self) -> &Digest {
        &self.digest
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn reader(&self) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(&self.path)?))
    }

    /// A hard link when `path` is on the same file system (no copy), a
    /// streamed copy otherwise.
    fn write_to(&self, path: &Path) -> io::Result<()> {
        replace_with(path, |tmp| {
            if std::fs::hard_link(&self.path, tmp).is_err() {
                std::fs::copy(&self.path, tmp)?;
            }
            let file = File::open(tmp)?;
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            file.sync_all()
        })
    }
}

/// A writer spooling a blob into a new temporary file while hashing it.
pub struct Spool {
    file: BufWriter<File>,
    path: tempfile::TempPath,
    hash: Sha256,
    size: u64,
}

impl Spool {
    /// A spool in a new temporary file in `dir` (removed unless it becomes a
    /// [`FileBlob`] that is kept).
    pub fn new_in(dir: &Path) -> io::Result<Spool> {
        let (file, path) = tempfile::Builder::new()
            .prefix(".pare-blob-")
            .tempfile_in(dir)?
            .into_parts();
        Ok(Spool {
            file: BufWriter::with_capacity(SPOOL_BUFFER, file),
            path,
            hash: Sha256::new(),
            size: 0,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the file and names what was written a blob of `media_type`.
    pub fn finish(self, media_type: MediaType) -> io::Result<FileBlob> {
        self.file.into_inner().map_err(|e| e.into_error())?;
        Ok(FileBlob {
            media_type,
            digest: Digest::from_hash(&self.hash.finalize()),
            size: self.size,
            path: self.path,
        })
    }
}

impl Write for Spool {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A temporary name beside `path`: `<name>.tmp-<pid>`.
pub(super) fn tmp_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Runs `fill` on a temporary name beside `path` and renames it over `path`;
/// the temporary name is removed when `fill` fails.
pub(super) fn replace_with(
    path: &Path,
    fill: impl FnOnce(&Path) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = tmp_path(path);
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = fill(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
}
