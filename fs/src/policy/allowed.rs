//! The allowed set: the image paths an enforced view shows, frozen from a
//! profile by the closure `pare compact` computes, and its file format.
//!
//! The file (`<profile>.allowed`) is JSON:
//! `{"format": "pare-allowed-set", "version": 1, "profile": "sha256:…",
//! "rules": {"include": [], "exclude": [], "include_exec": []}, "paths": ["/", "/etc", …]}`
//! with paths sorted, each a string when its bytes are UTF-8 and an array of
//! bytes otherwise (image paths are bytes), so any path round-trips exactly.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::PolicyError;
use super::wire::{WirePath, write_atomically};
use crate::id::Digest;
use crate::profile::ImagePath;

const FORMAT: &str = "pare-allowed-set";
const VERSION: u32 = 1;
const WHAT: &str = "allowed set";

/// The options the set was frozen with: what `pare compact` adds to and
/// removes from the profile's closure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// Globs of image paths kept (`/etc/ssl/**`).
    pub include: Vec<String>,
    /// Globs of image paths dropped.
    pub exclude: Vec<String>,
    /// Programs kept with their ELF closure.
    pub include_exec: Vec<String>,
}

/// The image paths an enforced view shows. Every ancestor directory of a
/// path in the set is in the set, and so is the root.
#[derive(Clone, PartialEq, Eq)]
pub struct AllowedSet {
    profile: Digest,
    rules: Rules,
    /// Names allowed under each directory, keyed by the directory's path
    /// relative to the image root (`""` for the root, `usr/bin`), as the view
    /// keeps paths: a child is checked without building its path.
    children: HashMap<Box<[u8]>, HashSet<Box<[u8]>>>,
    /// Paths in the set other than the root.
    len: usize,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    version: u32,
    profile: Digest,
    rules: Rules,
    paths: Vec<WirePath>,
}

impl AllowedSet {
    /// The set of `paths` and all their ancestors, frozen from the profile
    /// with digest `profile` under `rules`.
    pub fn from_paths(
        profile: Digest,
        rules: Rules,
        paths: impl IntoIterator<Item = ImagePath>,
    ) -> AllowedSet {
        let mut set = AllowedSet {
            profile,
            rules,
            children: HashMap::new(),
            len: 0,
        };
        for path in paths {
            set.insert(path.as_bytes());
        }
        set
    }

    /// Adds `path` (absolute) and its ancestors; stops at the first ancestor
    /// already there, since its own ancestors are then too.
    fn insert(&mut self, path: &[u8]) {
        let mut rel = &path[1..];
        while !rel.is_empty() {
            let (parent, name) = split(rel);
            let names = self.children.entry(parent.into()).or_default();
            if !names.insert(name.into()) {
                return;
            }
            self.len += 1;
            rel = parent;
        }
    }

    /// The digest of the profile the set was frozen from.
    pub fn profile(&self) -> &Digest {
        &self.profile
    }

    /// The options the set was frozen with.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Paths in the set, not counting the root.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the set holds only the root.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when `path` is in the set.
    pub fn contains(&self, path: &ImagePath) -> bool {
        self.contains_rel(path.rel())
    }

    /// True when `rel`, a path relative to the image root as the view keeps
    /// it (`""` for the root), is in the set.
    pub fn contains_rel(&self, rel: &Path) -> bool {
        let rel = rel.as_os_str().as_bytes();
        if rel.is_empty() {
            return true;
        }
        let (parent, name) = split(rel);
        self.has_child(parent, name)
    }

    /// True when `name` in the directory `parent` (relative to the image
    /// root, `""` for the root) is in the set. Allocates nothing.
    pub fn contains_child(&self, parent: &Path, name: &OsStr) -> bool {
        self.has_child(parent.as_os_str().as_bytes(), name.as_bytes())
    }

    fn has_child(&self, parent: &[u8], name: &[u8]) -> bool {
        self.children
            .get(parent)
            .is_some_and(|names| names.contains(name))
    }

    /// Every path in the set, the root included, sorted.
    pub fn paths(&self) -> Vec<ImagePath> {
        let mut out = vec![ImagePath::root()];
        for (parent, names) in &self.children {
            for name in names {
                let mut bytes = Vec::with_capacity(parent.len() + name.len() + 2);
                bytes.push(b'/');
                bytes.extend_from_slice(parent);
                if !parent.is_empty() {
                    bytes.push(b'/');
                }
                bytes.extend_from_slice(name);
                out.push(ImagePath::new(bytes).expect("built from valid paths"));
            }
        }
        out.sort();
        out
    }

    /// Writes the set to `path` atomically (a reader sees the old file or the new one).
    pub fn write(&self, path: &Path) -> Result<(), PolicyError> {
        let file = File {
            format: FORMAT.into(),
            version: VERSION,
            profile: self.profile.clone(),
            rules: self.rules.clone(),
            paths: self.paths().into_iter().map(WirePath).collect(),
        };
        let mut bytes = serde_json::to_vec(&file).expect("an allowed set serializes");
        bytes.push(b'\n');
        write_atomically(path, &bytes).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads the set written to `path` by [`AllowedSet::write`].
    /// [`PolicyError::Damaged`] when the file is not one (damaged, another
    /// kind of file, an unknown version).
    pub fn read(path: &Path) -> Result<AllowedSet, PolicyError> {
        AllowedSet::read_identified(path).map(|(set, _)| set)
    }

    /// Like [`AllowedSet::read`], with the digest of the bytes read: the
    /// identity of this frozen set (a set frozen again is another file).
    pub fn read_identified(path: &Path) -> Result<(AllowedSet, Digest), PolicyError> {
        let bytes = std::fs::read(path).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let set = AllowedSet::parse(path, &bytes)?;
        Ok((set, Digest::sha256(&bytes)))
    }

    /// Checks that `bytes` (read from `path`) are a readable allowed-set
    /// file, without building the set: the snapshotter's cheap check at
    /// Prepare, before a view server parses the whole set.
    pub fn check(path: &Path, bytes: &[u8]) -> Result<(), PolicyError> {
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
            #[allow(dead_code)]
            profile: serde::de::IgnoredAny,
            #[allow(dead_code)]
            rules: serde::de::IgnoredAny,
            #[allow(dead_code)]
            paths: serde::de::IgnoredAny,
        }
        let damaged = |reason: String| PolicyError::Damaged {
            path: path.to_path_buf(),
            what: WHAT,
            reason,
        };
        let head: Head = serde_json::from_slice(bytes).map_err(|e| damaged(e.to_string()))?;
        if head.format != FORMAT {
            return Err(damaged(format!("it is not a {FORMAT} file")));
        }
        if head.version != VERSION {
            return Err(damaged(format!(
                "version {} (this pare reads version {VERSION})",
                head.version
            )));
        }
        Ok(())
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<AllowedSet, PolicyError> {
        let damaged = |reason: String| PolicyError::Damaged {
            path: path.to_path_buf(),
            what: WHAT,
            reason,
        };
        let file: File = serde_json::from_slice(bytes).map_err(|e| {
            // A file of another kind fails on its fields before its format is seen.
            match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(v) if v.get("format").and_then(|f| f.as_str()) != Some(FORMAT) => {
                    damaged(format!("it is not a {FORMAT} file"))
                }
                _ => damaged(e.to_string()),
            }
        })?;
        if file.format != FORMAT {
            return Err(damaged(format!("it is not a {FORMAT} file")));
        }
        if file.version != VERSION {
            return Err(damaged(format!(
                "version {} (this pare reads version {VERSION})",
                file.version
            )));
        }
        Ok(AllowedSet::from_paths(
            file.profile,
            file.rules,
            file.paths.into_iter().map(|p| p.0),
        ))
    }
}

impl fmt::Debug for AllowedSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllowedSet")
            .field("profile", &self.profile)
            .field("rules", &self.rules)
            .field("len", &self.len)
            .finish()
    }
}

/// Splits a non-empty relative path into its parent (`""` at the top) and last name.
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(cut) => (&rel[..cut], &rel[cut + 1..]),
        None => (&[], rel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(bytes: &[u8]) -> ImagePath {
        ImagePath::new(bytes.to_vec()).unwrap()
    }

    fn set(paths: &[&[u8]]) -> AllowedSet {
        AllowedSet::from_paths(
            Digest::sha256(b"profile"),
            Rules {
                include: vec!["/etc/ssl/**".into()],
                exclude: vec!["/usr/share/doc/**".into()],
                include_exec: vec!["/bin/sh".into()],
            },
            paths.iter().map(|p| path(p)),
        )
    }

    #[test]
    fn ancestors_are_added() {
        let set = set(&[b"/usr/bin/ls", b"/etc/hosts"]);
        let shown: Vec<String> = set.paths().iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["/", "/etc", "/etc/hosts", "/usr", "/usr/bin", "/usr/bin/ls"]
        );
        assert_eq!(set.len(), 5);
        assert!(set.contains(&path(b"/usr/bin")));
        assert!(!set.contains(&path(b"/usr/bin/cat")));
        assert!(!set.contains(&path(b"/usr/lib")));
    }

    #[test]
    fn children_are_checked_by_parent_and_name() {
        let set = set(&[b"/usr/bin/ls"]);
        let cases = [
            ("", "usr", true),
            ("", "bin", false),
            ("usr", "bin", true),
            ("usr/bin", "ls", true),
            ("usr/bin", "cat", false),
            ("usr/lib", "ls", false),
        ];
        for (parent, name, want) in cases {
            assert_eq!(
                set.contains_child(Path::new(parent), OsStr::new(name)),
                want,
                "{parent}/{name}"
            );
        }
        assert!(set.contains_rel(Path::new("")));
        assert!(set.contains_rel(Path::new("usr/bin/ls")));
        assert!(set.contains(&ImagePath::root()));
    }

    #[test]
    fn the_file_round_trips_exactly_with_non_utf8_names() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("profile.allowed");
        let original = set(&[b"/data/caf\xe9", b"/etc/hosts", "/ü/x".as_bytes()]);
        original.write(&file).unwrap();
        let back = AllowedSet::read(&file).unwrap();
        assert_eq!(back, original);
        let (again, digest) = AllowedSet::read_identified(&file).unwrap();
        assert_eq!(again, original);
        assert_eq!(digest, Digest::sha256(&std::fs::read(&file).unwrap()));
        assert!(back.contains(&path(b"/data/caf\xe9")));
        assert!(!back.contains(&path(b"/data/caf\xc3\xa9")));
        assert_eq!(back.profile(), &Digest::sha256(b"profile"));
        assert_eq!(back.rules().include_exec, vec!["/bin/sh".to_string()]);
    }

    #[test]
    fn damaged_or_foreign_files_give_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("profile.allowed");
        set(&[b"/etc/hosts"]).write(&file).unwrap();
        let good = std::fs::read_to_string(&file).unwrap();
        let cases = [
            (good[..good.len() / 2].to_string(), "EOF while parsing"),
            ("PAREPROF\x01".to_string(), "expected value"),
            (
                r#"{"image": null, "entries": []}"#.to_string(),
                "it is not a pare-allowed-set file",
            ),
            (
                good.replace("\"version\":1", "\"version\":9"),
                "version 9 (this pare reads version 1)",
            ),
            (
                good.replace("\"/etc/hosts\"", "\"/etc/../hosts\""),
                "not normalized",
            ),
        ];
        AllowedSet::check(&file, good.as_bytes()).unwrap();
        for (content, reason) in cases {
            std::fs::write(&file, &content).unwrap();
            // The cheap check refuses all but a bad path, which only the
            // whole parse finds.
            let checked = AllowedSet::check(&file, content.as_bytes());
            assert_eq!(checked.is_ok(), reason == "not normalized", "{content:?}");
            let err = AllowedSet::read(&file).unwrap_err();
            let PolicyError::Damaged { path, what, .. } = &err else {
                panic!("{content:?}: {err}");
            };
            assert_eq!((path.as_path(), *what), (file.as_path(), "allowed set"));
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("{} is not a usable allowed set: ", file.display())),
                "{text}"
            );
            assert!(text.contains(reason), "{content:?}: {text}");
        }
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let err = AllowedSet::read(Path::new("/nonexistent/p.allowed")).unwrap_err();
        assert!(
            matches!(&err, PolicyError::Io { path, source }
                if path == Path::new("/nonexistent/p.allowed")
                    && source.kind() == std::io::ErrorKind::NotFound),
            "{err}"
        );
    }
}
