//! Property tests of the journal reader: any bytes read without a panic, and
//! a journal written by the recorder's writer, then cut or damaged anywhere,
//! reads back as the records written before the damage: none invented, none
//! reordered.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;

use crate::profile::journal::{self, Header};
use crate::profile::writer::{Limits, Opened, Writer};
use crate::profile::{Access, AccessKind, ReadError, read_bytes};

/// A record as journaled: ns, kind code, image path.
type Record = (u64, u8, Vec<u8>);

/// A path component: any bytes but `/` and NUL, never `.` or `..`.
fn component() -> impl Strategy<Value = Vec<u8>> {
    let byte = any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0);
    prop::collection::vec(byte, 1..5).prop_filter("not . or ..", |c| {
        c.as_slice() != b"." && c.as_slice() != b".."
    })
}

/// An access to a path of up to three components (none: the root). Few
/// distinct first components, so paths and kinds repeat.
fn access() -> impl Strategy<Value = Access> {
    let first = prop::sample::select(vec![b"usr".to_vec(), b"etc".to_vec(), vec![0xff, b'x']]);
    let rest = prop::collection::vec(component(), 0..3);
    let path = prop::option::weighted(0.9, (first, rest));
    (
        path,
        prop::sample::select(AccessKind::ALL.to_vec()),
        any::<u64>(),
    )
        .prop_map(|(path, kind, ns)| {
            let rel = match path {
                None => Vec::new(),
                Some((first, rest)) => std::iter::once(first)
                    .chain(rest)
                    .collect::<Vec<_>>()
                    .join(&b'/'),
            };
            // The root always exists: it is never absent.
            let kind = if rel.is_empty() && kind == AccessKind::Absent {
                AccessKind::Lookup
            } else {
                kind
            };
            Access {
                rel: Arc::from(Path::new(OsStr::from_bytes(&rel))),
                kind,
                ns,
            }
        })
}

fn header() -> impl Strategy<Value = (Header, u16)> {
    let image = prop::option::of("sha256:[0-9a-f]{0,8}");
    (image, any::<u64>(), "[ -~]{0,12}", any::<u16>()).prop_map(
        |(image, created, writer, flags)| {
            let header = Header {
                image,
                created_unix_ns: created,
                writer,
            };
            (header, flags)
        },
    )
}

/// Runs the recorder's writer over `accesses` into a fresh journal file.
fn write_journal(header: &Header, flags: u16, accesses: &[Access]) -> Vec<u8> {
    let mut file = tempfile::tempfile().expect("a temp file");
    let head = journal::encode_header(header, flags);
    std::io::Write::write_all(&mut file, &head).expect("header written");
    let (tx, rx) = crossbeam_channel::unbounded();
    let opened = Opened {
        sink: file.try_clone().expect("a second descriptor"),
        path: "props".into(),
        len: head.len() as u64,
        flags,
        seen: HashMap::new(),
    };
    let limits = Limits {
        max_pending: 1 << 20,
        retry_every: Duration::from_secs(1),
    };
    let writer = Writer::new(opened, rx, Duration::ZERO, limits);
    for access in accesses {
        tx.send(access.clone()).expect("the writer listens");
    }
    drop(tx);
    let written = writer.run().expect("every record written");
    let mut bytes = Vec::new();
    std::io::Seek::rewind(&mut file).expect("rewound");
    std::io::Read::read_to_end(&mut file, &mut bytes).expect("journal read back");
    assert_eq!(written as usize, records_of(accesses).len());
    bytes
}

/// What the writer must journal for `accesses`: the first access of each
/// path and kind, in order.
fn records_of(accesses: &[Access]) -> Vec<Record> {
    let mut seen = HashSet::new();
    accesses
        .iter()
        .filter(|a| seen.insert((a.rel.clone(), a.kind)))
        .map(|a| {
            let mut path = b"/".to_vec();
            path.extend_from_slice(a.rel.as_os_str().as_bytes());
            (a.ns, a.kind as u8, path)
        })
        .collect()
}

/// What is done to a journal after it was written.
#[derive(Clone, Debug)]
enum Damage {
    /// Cut the file at this point.
    Cut(Index),
    /// XOR the byte at this point with a non-zero mask.
    Flip(Index, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Cut),
        (any::<Index>(), 1..=u8::MAX).prop_map(|(at, mask)| Damage::Flip(at, mask)),
    ]
}

/// Applies `damage`; returns the first byte offset it touched (the length
/// after a cut), or `None` when it left the bytes as they were.
fn apply(bytes: &mut Vec<u8>, damage: &[Damage]) -> Option<usize> {
    let mut first: Option<usize> = None;
    for d in damage {
        let at = match d {
            Damage::Cut(at) => {
                let at = at.index(bytes.len() + 1);
                bytes.truncate(at);
                at
            }
            Damage::Flip(_, _) if bytes.is_empty() => continue,
            Damage::Flip(at, mask) => {
                let at = at.index(bytes.len());
                bytes[at] ^= mask;
                at
            }
        };
        first = Some(first.map_or(at, |f| f.min(at)));
    }
    first
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_bytes_read_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = read_bytes(Path::new("p"), &bytes);
    }

    #[test]
    fn any_bytes_after_a_header_read_without_a_panic(
        (header, flags) in header(),
        tail in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = journal::encode_header(&header, flags);
        let start = bytes.len();
        bytes.extend_from_slice(&tail);
        let profile = read_bytes(Path::new("p"), &bytes);
        if let Ok(profile) = profile {
            prop_assert!(profile.valid_len as usize >= start);
            prop_assert_eq!(profile.valid_len + profile.torn_tail_bytes, bytes.len() as u64);
        }
    }

    #[test]
    fn a_damaged_journal_reads_as_the_records_written_before_the_damage(
        (header, flags) in header(),
        accesses in prop::collection::vec(access(), 0..24),
        damage in prop::collection::vec(damage(), 0..3),
    ) {
        let written = records_of(&accesses);
        let clean = write_journal(&header, flags, &accesses);
        let header_len = journal::encode_header(&header, flags).len();
        // Where each record ends in the clean journal.
        let mut ends = Vec::with_capacity(written.len());
        let mut at = header_len;
        for (_, _, path) in &written {
            at += journal::RECORD_PREFIX_LEN + journal::PAYLOAD_FIXED_LEN + path.len();
            ends.push(at);
        }
        prop_assert_eq!(ends.last().copied().unwrap_or(header_len), clean.len());

        let mut bytes = clean.clone();
        let first_damage = apply(&mut bytes, &damage);
        let read = read_bytes(Path::new("p"), &bytes);

        let decoded = journal::decode_header(&bytes);
        let Ok(decoded) = decoded else {
            // Only a damaged header is refused, and as a header error.
            prop_assert!(first_damage.is_some_and(|at| at < header_len));
            let refused_header = matches!(read, Err(ReadError::Header { .. }));
            prop_assert!(refused_header, "{:?}", read);
            return Ok(());
        };
        // Every record read was written, in the order written.
        let (raw, end) = journal::split_records(&bytes, decoded.len);
        let got: Vec<Record> = raw.iter().map(|r| (r.ns, r.kind, r.path.to_vec())).collect();
        prop_assert!(got.len() <= written.len());
        prop_assert_eq!(&got[..], &written[..got.len()]);
        if first_damage.is_none_or(|at| at >= header_len) {
            // An intact header: exactly the records that end before the damage.
            prop_assert_eq!(&decoded.header, &header);
            let whole = match first_damage {
                None => written.len(),
                Some(at) => ends.iter().filter(|end| **end <= at).count(),
            };
            prop_assert_eq!(got.len(), whole);
        }

        // The profile is the one of the clean journal cut after those records.
        let profile = read.expect("a journal with a readable header reads");
        let cut_at = if got.is_empty() { header_len } else { ends[got.len() - 1] };
        let want = read_bytes(Path::new("p"), &clean[..cut_at]).expect("a clean prefix reads");
        prop_assert_eq!(profile.records, got.len() as u64);
        prop_assert_eq!(&profile.entries, &want.entries);
        prop_assert_eq!(&profile.absent, &want.absent);
        prop_assert_eq!(profile.valid_len, end as u64);
        prop_assert_eq!(profile.torn_tail_bytes, (bytes.len() - end) as u64);
    }
}

/// The writer's journal reads back as the accesses it was given: each path
/// once, with its kinds in first-access order and its earliest time.
#[test]
fn a_written_journal_reads_back_every_first_access() {
    let config = ProptestConfig::with_cases(64);
    proptest!(config, |((header, flags) in header(), accesses in prop::collection::vec(access(), 0..24))| {
        let bytes = write_journal(&header, flags, &accesses);
        let profile = read_bytes(Path::new("p"), &bytes).expect("a clean journal reads");
        prop_assert_eq!(&profile.header, &header);
        prop_assert_eq!(profile.flags, flags);
        prop_assert_eq!(profile.torn_tail_bytes, 0);
        let written = records_of(&accesses);
        prop_assert_eq!(profile.records, written.len() as u64);
        // Absent names are a list of their own; every other kind makes the entries.
        type Want = Vec<(Vec<u8>, u64, Vec<AccessKind>)>;
        let (mut want, mut want_absent): (Want, Want) = (Vec::new(), Vec::new());
        for (ns, kind, path) in &written {
            let kind = AccessKind::from_code(*kind).expect("a written kind");
            let list = if kind == AccessKind::Absent { &mut want_absent } else { &mut want };
            match list.iter_mut().find(|(p, _, _)| p == path) {
                Some((_, first, kinds)) => {
                    *first = (*first).min(*ns);
                    kinds.push(kind);
                }
                None => list.push((path.clone(), *ns, vec![kind])),
            }
        }
        want.sort_by_key(|(_, first, _)| *first);
        want_absent.sort_by_key(|(_, first, _)| *first);
        let shown = |entries: &[crate::profile::Entry]| -> Want {
            entries
                .iter()
                .map(|e| (e.path.as_bytes().to_vec(), e.first_access_ns, e.accesses.clone()))
                .collect()
        };
        prop_assert_eq!(shown(&profile.absent), want_absent);
        let got = shown(&profile.entries);
        prop_assert_eq!(got, want);
    });
}
