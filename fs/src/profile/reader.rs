//! Reading a journal back into a profile: entries in first-access order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::journal::{self, Header, HeaderError};
use super::{AccessKind, ImagePath, KindSet, PathError};

/// One path of a profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The path in the image.
    pub path: ImagePath,
    /// Nanoseconds from the start of the profile to the first access.
    pub first_access_ns: u64,
    /// Kinds of access, in the order they first happened.
    pub accesses: Vec<AccessKind>,
}

/// A profile read from a journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The journal's header.
    pub header: Header,
    /// The header's flags as stored (see [`journal`] for the bits).
    pub flags: u16,
    /// Records were lost while the journal was written (write errors, a full
    /// disk): the writer set [`journal::FLAG_INCOMPLETE`] in the header. The
    /// entries are true accesses, but some accesses are missing.
    pub incomplete: bool,
    /// Entries in first-access order: the paths of the image touched.
    pub entries: Vec<Entry>,
    /// Names looked up that the image does not have ([`AccessKind::Absent`]),
    /// in first-access order; each entry's only access is `absent`.
    pub absent: Vec<Entry>,
    /// Length of the intact part of the journal (header and whole records).
    pub valid_len: u64,
    /// Bytes after the last intact record (a torn tail from a crash), ignored.
    pub torn_tail_bytes: u64,
    /// Number of records read.
    pub records: u64,
}

/// Why a journal could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be read.
    #[error("cannot read profile {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The header is invalid.
    #[error("{path}: {source}")]
    Header {
        /// The journal file.
        path: PathBuf,
        /// What is wrong with it.
        source: HeaderError,
    },
    /// An intact record holds an invalid path.
    #[error("{path}: record at byte {offset}: {source}")]
    BadPath {
        /// The journal file.
        path: PathBuf,
        /// Offset of the record.
        offset: usize,
        /// What is wrong with it.
        source: PathError,
    },
    /// An intact record holds an unknown access kind.
    #[error("{path}: record at byte {offset}: unknown access kind code {code}")]
    BadKind {
        /// The journal file.
        path: PathBuf,
        /// Offset of the record.
        offset: usize,
        /// The code found.
        code: u8,
    },
}

/// Entries being gathered: one per path, its kinds in the order added and
/// its earliest time.
#[derive(Default)]
pub(crate) struct Entries {
    index: HashMap<ImagePath, (usize, KindSet)>,
    list: Vec<Entry>,
}

impl Entries {
    /// Adds `kinds` of `path` at `ns`.
    pub(crate) fn add(&mut self, path: &ImagePath, ns: u64, kinds: &[AccessKind]) {
        let (i, seen) = match self.index.get_mut(path) {
            Some((i, seen)) => (*i, seen),
            None => {
                self.list.push(Entry {
                    path: path.clone(),
                    first_access_ns: ns,
                    accesses: Vec::new(),
                });
                let slot = self.index.entry(path.clone()).or_default();
                slot.0 = self.list.len() - 1;
                (slot.0, &mut slot.1)
            }
        };
        let entry = &mut self.list[i];
        entry.first_access_ns = entry.first_access_ns.min(ns);
        for kind in kinds {
            if seen.insert(*kind) {
                entry.accesses.push(*kind);
            }
        }
    }

    /// The entries in first-access order. Serving threads stamp events
    /// before the writer sees them, so the journal order can differ from
    /// time order by a few microseconds.
    pub(crate) fn into_sorted(mut self) -> Vec<Entry> {
        self.list.sort_by_key(|e| e.first_access_ns);
        self.list
    }
}

/// Reads the journal at `path`.
pub fn read(path: &Path) -> Result<Profile, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_bytes(path, &bytes)
}

/// Reads a journal from memory; `path` only names it in errors.
pub fn read_bytes(path: &Path, bytes: &[u8]) -> Result<Profile, ReadError> {
    let decoded = journal::decode_header(bytes).map_err(|source| ReadError::Header {
        path: path.to_path_buf(),
        source,
    })?;
    let start = decoded.len;
    let (raw, end) = journal::split_records(bytes, start);
    let mut entries = Entries::default();
    let mut absent = Entries::default();
    for record in &raw {
        let image_path =
            ImagePath::new(record.path.to_vec()).map_err(|source| ReadError::BadPath {
                path: path.to_path_buf(),
                offset: record.offset,
                source,
            })?;
        let kind = AccessKind::from_code(record.kind).ok_or(ReadError::BadKind {
            path: path.to_path_buf(),
            offset: record.offset,
            code: record.kind,
        })?;
        let list = if kind == AccessKind::Absent {
            &mut absent
        } else {
            &mut entries
        };
        list.add(&image_path, record.ns, std::slice::from_ref(&kind));
    }
    Ok(Profile {
        header: decoded.header,
        flags: decoded.flags,
        incomplete: decoded.flags & journal::FLAG_INCOMPLETE != 0,
        entries: entries.into_sorted(),
        absent: absent.into_sorted(),
        valid_len: end as u64,
        torn_tail_bytes: (bytes.len() - end) as u64,
        records: raw.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::journal::{encode_header, encode_record};

    fn journal(records: &[(u64, u8, &[u8])]) -> Vec<u8> {
        journal_with(0, 0, records)
    }

    fn journal_with(created: u64, flags: u16, records: &[(u64, u8, &[u8])]) -> Vec<u8> {
        let mut bytes = encode_header(
            &Header {
                image: None,
                created_unix_ns: created,
                writer: "test".into(),
            },
            flags,
        );
        for (ns, kind, path) in records {
            encode_record(&mut bytes, *ns, *kind, path);
        }
        bytes
    }

    #[test]
    fn entries_are_in_first_access_order_with_kinds_in_their_order() {
        let bytes = journal(&[
            (10, 1, b"/usr"),
            (20, 1, b"/usr/bin/env"),
            (15, 2, b"/usr"),
            (30, 5, b"/usr/bin/env"),
            (31, 1, b"/usr/bin/env"),
            (12, 1, b"/etc"),
        ]);
        let profile = read_bytes(Path::new("t"), &bytes).unwrap();
        let got: Vec<_> = profile
            .entries
            .iter()
            .map(|e| (e.path.to_string(), e.first_access_ns, e.accesses.clone()))
            .collect();
        use AccessKind::*;
        assert_eq!(
            got,
            vec![
                ("/usr".into(), 10, vec![Lookup, Readdir]),
                ("/etc".into(), 12, vec![Lookup]),
                ("/usr/bin/env".into(), 20, vec![Lookup, Exec]),
            ]
        );
        assert_eq!(profile.torn_tail_bytes, 0);
    }

    #[test]
    fn torn_tail_is_ignored_and_counted() {
        let mut bytes = journal(&[(1, 1, b"/a"), (2, 1, b"/b")]);
        bytes.truncate(bytes.len() - 3);
        let profile = read_bytes(Path::new("t"), &bytes).unwrap();
        assert_eq!(profile.entries.len(), 1);
        assert_eq!(profile.torn_tail_bytes, 8 + 9 + 2 - 3);
    }

    #[test]
    fn hostile_records_are_refused() {
        let cases: [(&[u8], u8, &str); 4] = [
            (b"/etc/../../root", 1, "not normalized"),
            (b"/etc/\0x", 1, "NUL"),
            (b"relative", 1, "not absolute"),
            (b"/etc", 99, "unknown access kind code 99"),
        ];
        for (path, kind, want) in cases {
            let err = read_bytes(Path::new("t"), &journal(&[(1, kind, path)])).unwrap_err();
            assert!(err.to_string().contains(want), "{err}");
        }
    }

    #[test]
    fn the_incomplete_flag_is_read_and_other_bits_are_ignored() {
        let cases: [(u16, bool); 4] = [
            (0, false),
            (journal::FLAG_INCOMPLETE, true),
            (0x8000, false),
            (0x8000 | journal::FLAG_INCOMPLETE, true),
        ];
        for (flags, incomplete) in cases {
            let profile =
                read_bytes(Path::new("t"), &journal_with(0, flags, &[(1, 1, b"/a")])).unwrap();
            assert_eq!((profile.flags, profile.incomplete), (flags, incomplete));
            assert_eq!(profile.entries.len(), 1);
        }
    }

    #[test]
    fn hostile_timestamps_are_read_without_overflow() {
        let bytes = journal_with(
            u64::MAX,
            0,
            &[(u64::MAX, 1, b"/a"), (u64::MAX, 4, b"/a"), (0, 1, b"/b")],
        );
        let profile = read_bytes(Path::new("t"), &bytes).unwrap();
        let got: Vec<_> = profile
            .entries
            .iter()
            .map(|e| (e.path.to_string(), e.first_access_ns))
            .collect();
        assert_eq!(got, vec![("/b".into(), 0), ("/a".into(), u64::MAX)]);
        assert_eq!(profile.header.created_unix_ns, u64::MAX);
    }
}

#[cfg(test)]
mod props;
