//! Reads served by the view itself: layer files opened read-only and kept
//! by file handle until the kernel releases them, read with `pread`.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use fuser::FileHandle;

/// Opens a layer file for reading, keeping the layer's atimes as the image
/// has them when allowed (`O_NOATIME` needs the file's owner or root).
pub(crate) fn open_layer_file(path: &Path) -> std::io::Result<File> {
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)
    };
    match open(libc::O_NOATIME | libc::O_NOFOLLOW) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(libc::O_NOFOLLOW),
        other => other,
    }
}

/// The files open for `pread`, by file handle (handle 0 is passthrough's).
pub(crate) struct PreadFiles {
    files: RwLock<HashMap<u64, Arc<File>>>,
    next: AtomicU64,
}

impl PreadFiles {
    /// No files open yet.
    pub fn new() -> PreadFiles {
        PreadFiles {
            files: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    /// Opens the layer file at `path` under a new handle.
    pub fn open(&self, path: &Path) -> std::io::Result<FileHandle> {
        open_layer_file(path).map(|file| self.insert(file))
    }

    /// Keeps `file` under a new handle.
    fn insert(&self, file: File) -> FileHandle {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.files
            .write()
            .expect("pread files lock")
            .insert(fh, Arc::new(file));
        FileHandle(fh)
    }

    /// The file under `fh`.
    pub fn get(&self, fh: FileHandle) -> Option<Arc<File>> {
        self.files
            .read()
            .expect("pread files lock")
            .get(&fh.0)
            .cloned()
    }

    /// Lets go of the file under `fh` (closed once no read uses it).
    pub fn remove(&self, fh: FileHandle) {
        let file = self.files.write().expect("pread files lock").remove(&fh.0);
        drop(file);
    }
}

/// Reads up to `size` bytes at `offset`, fewer only at the end of the file.
pub(crate) fn read_at(file: &File, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}
