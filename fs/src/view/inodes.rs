//! The view's inode table: one FUSE inode per merged directory path and one per
//! underlying non-directory inode, so hardlink groups share an inode number.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use fuser::{BackingId, FileAttr, FileType, INodeNo};

use crate::layers::{Kind, Resolved};
use crate::profile::AccessKind;

/// Identity of a node: merged directories by path, everything else by the
/// underlying inode (which is what makes hardlinks one node).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum NodeKey {
    Dir(Arc<Path>),
    Inode { layer: u16, dev: u64, ino: u64 },
}

/// A cached directory listing entry.
#[derive(Clone, Debug)]
pub(crate) struct DirEntry {
    pub name: OsString,
    pub ino: INodeNo,
    pub kind: FileType,
}

/// One inode of the view.
pub(crate) struct Node {
    /// Path relative to the image root of the first name this node was found by.
    pub rel: Arc<Path>,
    /// Parent directory inode (of that first name).
    pub parent: INodeNo,
    /// Where the node lives in the layer stack.
    pub resolved: Resolved,
    /// Attributes as reported to the kernel.
    pub attr: FileAttr,
    /// Kinds of access already reported for `rel`.
    recorded: AtomicU8,
    /// Directory listing, built on first readdir.
    pub listing: OnceLock<Arc<Vec<DirEntry>>>,
    /// Visible xattrs, read on first use.
    pub xattrs: OnceLock<Vec<(OsString, Vec<u8>)>>,
    /// FUSE passthrough backing file and the number of open handles using it.
    pub backing: Mutex<Option<(BackingId, u32)>>,
}

impl Node {
    /// True the first time `kind` is claimed for this node's path.
    pub fn claim(&self, kind: AccessKind) -> bool {
        let bit = kind.bit();
        self.recorded.load(Ordering::Relaxed) & bit == 0
            && self.recorded.fetch_or(bit, Ordering::Relaxed) & bit == 0
    }

    /// True when the node is a non-directory with several names (a hardlink
    /// group), whose lookups must be recorded per name, not per node.
    pub fn has_several_names(&self) -> bool {
        !matches!(self.resolved, Resolved::Dir { .. }) && self.resolved.meta().nlink > 1
    }
}

#[derive(Default)]
struct Table {
    nodes: Vec<Arc<Node>>,
    by_key: HashMap<NodeKey, INodeNo>,
}

/// All nodes handed to the kernel. Nodes live as long as the mount: the image
/// is immutable, so a node never goes stale, and its number stays stable.
#[derive(Default)]
pub(crate) struct Inodes {
    table: RwLock<Table>,
}

impl Inodes {
    /// The node numbered `ino`.
    pub fn get(&self, ino: INodeNo) -> Option<Arc<Node>> {
        let table = self.table.read().expect("inode table lock");
        let idx = usize::try_from(ino.0.checked_sub(1)?).ok()?;
        table.nodes.get(idx).cloned()
    }

    /// The node for `resolved` found at `rel`, created on first sight.
    pub fn intern(&self, rel: &Path, parent: INodeNo, resolved: Resolved) -> Arc<Node> {
        let key = match &resolved {
            Resolved::Dir { .. } => NodeKey::Dir(Arc::from(rel)),
            Resolved::Other { layer, meta } => NodeKey::Inode {
                layer: layer.0,
                dev: meta.dev,
                ino: meta.ino,
            },
        };
        if let Some(node) = self.find(&key) {
            return node;
        }
        let mut table = self.table.write().expect("inode table lock");
        if let Some(ino) = table.by_key.get(&key) {
            return table.nodes[(ino.0 - 1) as usize].clone();
        }
        let ino = INodeNo(table.nodes.len() as u64 + 1);
        let node = Arc::new(Node {
            rel: Arc::from(rel),
            parent,
            attr: attr_of(ino, &resolved),
            resolved,
            recorded: AtomicU8::new(0),
            listing: OnceLock::new(),
            xattrs: OnceLock::new(),
            backing: Mutex::new(None),
        });
        table.nodes.push(node.clone());
        table.by_key.insert(key, ino);
        node
    }

    fn find(&self, key: &NodeKey) -> Option<Arc<Node>> {
        let table = self.table.read().expect("inode table lock");
        let ino = table.by_key.get(key)?;
        Some(table.nodes[(ino.0 - 1) as usize].clone())
    }
}

/// The FUSE type of a layer entry kind.
pub(crate) fn file_type(kind: Kind) -> FileType {
    match kind {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
    }
}

fn attr_of(ino: INodeNo, resolved: &Resolved) -> FileAttr {
    let meta = resolved.meta();
    FileAttr {
        ino,
        size: meta.size,
        blocks: meta.blocks,
        atime: meta.atime.to_system_time(),
        mtime: meta.mtime.to_system_time(),
        ctime: meta.ctime.to_system_time(),
        crtime: SystemTime::UNIX_EPOCH,
        kind: file_type(meta.kind),
        perm: meta.perm(),
        nlink: u32::try_from(resolved.nlink()).unwrap_or(u32::MAX),
        uid: meta.uid,
        gid: meta.gid,
        rdev: fuse_rdev(meta.rdev),
        blksize: u32::try_from(meta.blksize).unwrap_or(4096),
        flags: 0,
    }
}

/// Re-encodes a glibc `dev_t` the way the FUSE protocol carries it (the kernel's
/// 32-bit `new_encode_dev`).
fn fuse_rdev(dev: u64) -> u32 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_numbers_survive_the_fuse_encoding() {
        // (major, minor) pairs, including minors above 255 as for /dev/loop and nvme.
        for (major, minor) in [(1u64, 3u64), (8, 17), (259, 1), (7, 300), (0, 0)] {
            let glibc = (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12);
            let fuse = super::fuse_rdev(glibc);
            let back_major = (fuse >> 8) & 0xfff;
            let back_minor = (fuse & 0xff) | ((fuse >> 12) & 0xfff00);
            assert_eq!(
                (u64::from(back_major), u64::from(back_minor)),
                (major, minor)
            );
        }
    }
}
