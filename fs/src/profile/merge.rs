//! Merging profiles of one image (runs on several nodes, or several runs):
//! each path's earliest first access, the union of its kinds. The merge is
//! incomplete when any input is.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::Profile;
use super::journal::{self, Header};
use super::reader::Entries;

/// Why profiles could not be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No input.
    #[error("no profiles to merge")]
    Empty,
    /// Inputs name different images.
    #[error("{path} is a profile of image {found}, the others of {wanted}: refusing to merge")]
    OtherImage {
        /// The odd one out.
        path: PathBuf,
        /// Its image.
        found: String,
        /// The image of the first input that named one.
        wanted: String,
    },
    /// The output is the journal of a running recorder: replacing it would
    /// send that recorder's records into an unlinked file.
    #[error("{path} is being recorded by a running view; merge into another file")]
    Busy {
        /// The output file.
        path: PathBuf,
    },
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Merges `inputs` (path, profile). Times are taken relative to each input's
/// start; the merged profile starts at the earliest start (times too large
/// for a u64 saturate). The merge is incomplete when any input is.
pub fn merge(inputs: &[(PathBuf, Profile)]) -> Result<Profile, MergeError> {
    let Some((_, first)) = inputs.first() else {
        return Err(MergeError::Empty);
    };
    let mut image: Option<String> = None;
    for (path, p) in inputs {
        match (&image, &p.header.image) {
            (Some(wanted), Some(found)) if wanted != found => {
                return Err(MergeError::OtherImage {
                    path: path.clone(),
                    found: found.clone(),
                    wanted: wanted.clone(),
                });
            }
            (None, Some(found)) => image = Some(found.clone()),
            _ => {}
        }
    }
    let created = inputs
        .iter()
        .map(|(_, p)| p.header.created_unix_ns)
        .min()
        .unwrap_or(0);
    let mut entries = Entries::default();
    let mut absent = Entries::default();
    for (_, p) in inputs {
        let shift = p.header.created_unix_ns.saturating_sub(created);
        for e in &p.entries {
            entries.add(
                &e.path,
                e.first_access_ns.saturating_add(shift),
                &e.accesses,
            );
        }
        for e in &p.absent {
            absent.add(
                &e.path,
                e.first_access_ns.saturating_add(shift),
                &e.accesses,
            );
        }
    }
    let incomplete = inputs.iter().any(|(_, p)| p.incomplete);
    Ok(Profile {
        header: Header {
            image,
            created_unix_ns: created,
            writer: first.header.writer.clone(),
        },
        flags: if incomplete {
            journal::FLAG_INCOMPLETE
        } else {
            0
        },
        incomplete,
        entries: entries.into_sorted(),
        absent: absent.into_sorted(),
        valid_len: 0,
        torn_tail_bytes: 0,
        records: 0,
    })
}

/// Writes `profile` as a journal at `path`, atomically (temporary file,
/// fsync, rename). Refuses ([`MergeError::Busy`]) while a recorder holds
/// the journal at `path`, and holds that lock itself until the rename so that
/// no recorder starts on the file being replaced.
pub fn write(profile: &Profile, path: &Path) -> Result<(), MergeError> {
    let err = |source| MergeError::Write {
        path: path.to_path_buf(),
        source,
    };
    let _held = match super::lock::lock_existing(path) {
        Ok(held) => held,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            return Err(MergeError::Busy {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(err(e)),
    };
    let flags = if profile.incomplete {
        profile.flags | journal::FLAG_INCOMPLETE
    } else {
        profile.flags & !journal::FLAG_INCOMPLETE
    };
    let mut bytes = journal::encode_header(&profile.header, flags);
    for e in profile.entries.iter().chain(&profile.absent) {
        // One record per kind, all at the entry's first access: kinds keep their order.
        for k in &e.accesses {
            journal::encode_record(&mut bytes, e.first_access_ns, *k as u8, e.path.as_bytes());
        }
    }
    let tmp = path.with_extension("pare-tmp");
    let mut file = std::fs::File::create(&tmp).map_err(err)?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::AccessKind::*;
    use crate::profile::{AccessKind, read_bytes};

    fn profile(
        image: Option<&str>,
        created: u64,
        entries: &[(&str, u64, &[AccessKind])],
    ) -> Profile {
        profile_with(image, created, 0, entries)
    }

    fn profile_with(
        image: Option<&str>,
        created: u64,
        flags: u16,
        entries: &[(&str, u64, &[AccessKind])],
    ) -> Profile {
        let mut bytes = journal::encode_header(
            &Header {
                image: image.map(String::from),
                created_unix_ns: created,
                writer: "t".into(),
            },
            flags,
        );
        for (path, ns, kinds) in entries {
            for k in *kinds {
                journal::encode_record(&mut bytes, *ns, *k as u8, path.as_bytes());
            }
        }
        read_bytes(Path::new("t"), &bytes).unwrap()
    }

    #[test]
    fn earliest_first_access_and_union_of_kinds() {
        let a = profile(
            Some("sha256:x"),
            1_000,
            &[
                ("/bin/sh", 10, &[Lookup, Exec]),
                ("/etc/passwd", 20, &[Read]),
            ],
        );
        let b = profile(
            Some("sha256:x"),
            1_005,
            &[("/etc/passwd", 1, &[Lookup]), ("/bin/sh", 50, &[Read])],
        );
        let merged = merge(&[("a".into(), a), ("b".into(), b)]).unwrap();
        let got: Vec<_> = merged
            .entries
            .iter()
            .map(|e| (e.path.to_string(), e.first_access_ns, e.accesses.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/etc/passwd".into(), 6, vec![Read, Lookup]),
                ("/bin/sh".into(), 10, vec![Lookup, Exec, Read]),
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m");
        write(&merged, &out).unwrap();
        let back = crate::profile::read(&out).unwrap();
        assert_eq!(back.entries, merged.entries);
        assert_eq!(back.header.image.as_deref(), Some("sha256:x"));
    }

    #[test]
    fn absent_names_merge_apart_from_the_entries_and_survive_a_write() {
        let a = profile(
            Some("sha256:x"),
            0,
            &[("/bin/sh", 10, &[Lookup]), ("/bin/ls", 20, &[Absent])],
        );
        let b = profile(
            Some("sha256:x"),
            0,
            &[("/bin/ls", 5, &[Absent]), ("/bin/cat", 30, &[Absent])],
        );
        let merged = merge(&[("a".into(), a), ("b".into(), b)]).unwrap();
        let absent: Vec<_> = merged
            .absent
            .iter()
            .map(|e| (e.path.to_string(), e.first_access_ns))
            .collect();
        assert_eq!(absent, [("/bin/ls".into(), 5), ("/bin/cat".into(), 30)]);
        assert_eq!(merged.entries.len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m");
        write(&merged, &out).unwrap();
        let back = crate::profile::read(&out).unwrap();
        assert_eq!(back.entries, merged.entries);
        assert_eq!(back.absent, merged.absent);
    }

    #[test]
    fn profiles_of_different_images_are_refused() {
        let a = profile(Some("sha256:x"), 0, &[]);
        let b = profile(None, 0, &[]);
        let c = profile(Some("sha256:y"), 0, &[]);
        let err = merge(&[("a".into(), a), ("b".into(), b), ("c".into(), c)]).unwrap_err();
        assert!(matches!(err, MergeError::OtherImage { .. }), "{err}");
        assert!(matches!(merge(&[]), Err(MergeError::Empty)));
    }

    #[test]
    fn a_merge_is_incomplete_when_any_input_is_and_the_flag_is_written() {
        let complete = || profile(Some("sha256:x"), 0, &[("/a", 1, &[Lookup])]);
        let incomplete = || {
            profile_with(
                Some("sha256:x"),
                0,
                journal::FLAG_INCOMPLETE,
                &[("/b", 2, &[Read])],
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m");
        let cases = [
            (vec![complete(), complete()], false),
            (vec![complete(), incomplete()], true),
            (vec![incomplete(), complete()], true),
            (vec![incomplete()], true),
        ];
        for (inputs, want) in cases {
            let inputs: Vec<(PathBuf, Profile)> =
                inputs.into_iter().map(|p| ("in".into(), p)).collect();
            let merged = merge(&inputs).unwrap();
            assert_eq!(merged.incomplete, want);
            write(&merged, &out).unwrap();
            let back = crate::profile::read(&out).unwrap();
            assert_eq!((back.incomplete, back.flags), (want, u16::from(want)));
        }
    }

    #[test]
    fn hostile_timestamps_saturate_instead_of_overflowing() {
        let a = profile(Some("sha256:x"), 0, &[("/a", u64::MAX, &[Lookup])]);
        let b = profile(
            Some("sha256:x"),
            u64::MAX,
            &[("/b", u64::MAX, &[Lookup]), ("/a", 5, &[Read])],
        );
        let merged = merge(&[("a".into(), a), ("b".into(), b)]).unwrap();
        let got: Vec<_> = merged
            .entries
            .iter()
            .map(|e| (e.path.to_string(), e.first_access_ns))
            .collect();
        assert_eq!(got, vec![("/a".into(), u64::MAX), ("/b".into(), u64::MAX)]);
        assert_eq!(merged.header.created_unix_ns, 0);
    }

    #[test]
    fn writing_over_a_live_journal_is_refused_and_leaves_it_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live");
        let rec = crate::profile::Recorder::open(
            &live,
            Some("sha256:x".into()),
            std::time::Duration::from_millis(1),
        )
        .unwrap();
        let before = std::fs::read(&live).unwrap();
        let merged = merge(&[("a".into(), profile(Some("sha256:x"), 0, &[]))]).unwrap();
        let err = write(&merged, &live).unwrap_err();
        assert!(matches!(err, MergeError::Busy { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "{} is being recorded by a running view; merge into another file",
                live.display()
            )
        );
        assert_eq!(std::fs::read(&live).unwrap(), before);
        assert!(!live.with_extension("pare-tmp").exists());
        rec.finish().unwrap();
        write(&merged, &live).unwrap();
    }
}
