//! Access kinds and the access events the view reports.

use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// How a path was touched. The discriminants are the journal's on-disk codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum AccessKind {
    /// The name was resolved (stat, existence check, path walk).
    Lookup = 1,
    /// The directory was listed.
    Readdir = 2,
    /// The symlink target was read.
    Readlink = 3,
    /// The file was opened for reading or mapped.
    Read = 4,
    /// The file was opened for execution.
    Exec = 5,
    /// The name was looked up and does not exist in the image (learn mode;
    /// at most [`ABSENT_PER_DIRECTORY`] names per directory are journaled).
    Absent = 6,
}

/// The most absent names journaled per directory: enough for every name a
/// PATH search or a library search tries there, too few for a workload that
/// creates files by the thousand (each new name is looked up in the image
/// first) to flood the journal.
pub const ABSENT_PER_DIRECTORY: usize = 64;

impl AccessKind {
    /// Every kind, in code order.
    pub const ALL: [AccessKind; 6] = [
        AccessKind::Lookup,
        AccessKind::Readdir,
        AccessKind::Readlink,
        AccessKind::Read,
        AccessKind::Exec,
        AccessKind::Absent,
    ];

    /// The kind with on-disk code `code`.
    pub fn from_code(code: u8) -> Option<AccessKind> {
        AccessKind::ALL.into_iter().find(|k| *k as u8 == code)
    }

    /// Lower-case name used in JSON and text output.
    pub fn name(self) -> &'static str {
        match self {
            AccessKind::Lookup => "lookup",
            AccessKind::Readdir => "readdir",
            AccessKind::Readlink => "readlink",
            AccessKind::Read => "read",
            AccessKind::Exec => "exec",
            AccessKind::Absent => "absent",
        }
    }

    /// The bit of this kind in a [`KindSet`].
    pub fn bit(self) -> u8 {
        1 << (self as u8 - 1)
    }
}

impl fmt::Display for AccessKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for AccessKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A set of access kinds, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KindSet(pub u8);

impl KindSet {
    /// True when `kind` is in the set.
    pub fn contains(self, kind: AccessKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// Adds `kind`; returns true when it was not there before.
    pub fn insert(&mut self, kind: AccessKind) -> bool {
        let new = !self.contains(kind);
        self.0 |= kind.bit();
        new
    }
}

/// One access event: `path` (image-absolute, bytes) touched as `kind` at
/// `ns` nanoseconds since the profile started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Path relative to the image root, without a leading `/` (empty for the root).
    pub rel: Arc<std::path::Path>,
    /// The kind of access.
    pub kind: AccessKind,
    /// Nanoseconds since the profile started.
    pub ns: u64,
}
