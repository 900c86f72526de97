//! Image paths as journaled: absolute, normalized, no NUL, no `.` or `..`.

use std::fmt;
use std::path::Path;

use serde::{Serialize, Serializer};

/// A validated absolute path inside an image (`/`, `/usr/bin/env`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImagePath(Vec<u8>);

/// Why bytes are not a valid image path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// Does not start with `/`.
    #[error("path {0:?} is not absolute")]
    NotAbsolute(String),
    /// Contains a NUL byte.
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    /// Contains an empty, `.` or `..` component, or a trailing `/`.
    #[error("path {0:?} is not normalized (empty, '.' or '..' component)")]
    NotNormalized(String),
}

impl ImagePath {
    /// Validates `bytes` as an image path.
    pub fn new(bytes: Vec<u8>) -> Result<ImagePath, PathError> {
        let shown = || String::from_utf8_lossy(&bytes).into_owned();
        if bytes.first() != Some(&b'/') {
            return Err(PathError::NotAbsolute(shown()));
        }
        if bytes.contains(&0) {
            return Err(PathError::Nul(shown()));
        }
        if bytes.len() > 1
            && bytes[1..]
                .split(|b| *b == b'/')
                .any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            return Err(PathError::NotNormalized(shown()));
        }
        Ok(ImagePath(bytes))
    }

    /// The image path of `rel`, a path relative to the image root as the view keeps it.
    pub fn from_rel(rel: &Path) -> ImagePath {
        use std::os::unix::ffi::OsStrExt;
        let rel = rel.as_os_str().as_bytes();
        let mut bytes = Vec::with_capacity(rel.len() + 1);
        bytes.push(b'/');
        bytes.extend_from_slice(rel);
        ImagePath(bytes)
    }

    /// The root, `/`.
    pub fn root() -> ImagePath {
        ImagePath(b"/".to_vec())
    }

    /// `self/name`. `name` must be one plain component (no `/`, not `.`/`..`).
    pub fn join(&self, name: &std::ffi::OsStr) -> Result<ImagePath, PathError> {
        use std::os::unix::ffi::OsStrExt;
        let mut bytes = self.0.clone();
        if bytes.len() > 1 {
            bytes.push(b'/');
        }
        bytes.extend_from_slice(name.as_bytes());
        if name.as_bytes().contains(&b'/') {
            return Err(PathError::NotNormalized(
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        ImagePath::new(bytes)
    }

    /// The parent directory; `None` for the root.
    pub fn parent(&self) -> Option<ImagePath> {
        if self.0.len() <= 1 {
            return None;
        }
        let cut = self.0.iter().rposition(|b| *b == b'/').expect("absolute");
        Some(ImagePath(if cut == 0 {
            b"/".to_vec()
        } else {
            self.0[..cut].to_vec()
        }))
    }

    /// Every ancestor from the root down, without `self`.
    pub fn ancestors(&self) -> Vec<ImagePath> {
        let mut out = Vec::new();
        let mut at = self.parent();
        while let Some(p) = at {
            at = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.0.len() == 1
    }

    /// Raw bytes, starting with `/`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// As a relative path (no leading `/`), for joining under a layer directory.
    pub fn rel(&self) -> &Path {
        use std::os::unix::ffi::OsStrExt;
        Path::new(std::ffi::OsStr::from_bytes(&self.0[1..]))
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl Serialize for ImagePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normalized_absolute_paths() {
        for ok in ["/", "/usr", "/usr/bin/python3", "/a b/ü"] {
            assert!(ImagePath::new(ok.into()).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_hostile_paths() {
        type Want = fn(String) -> PathError;
        let cases: [(&[u8], Want); 7] = [
            (b"usr/bin", PathError::NotAbsolute),
            (b"", PathError::NotAbsolute),
            (b"/usr/\0bin", PathError::Nul),
            (b"/usr/../etc", PathError::NotNormalized),
            (b"/./etc", PathError::NotNormalized),
            (b"/usr//bin", PathError::NotNormalized),
            (b"/usr/", PathError::NotNormalized),
        ];
        for (bytes, want) in cases {
            let err = ImagePath::new(bytes.to_vec()).unwrap_err();
            assert_eq!(err, want(String::from_utf8_lossy(bytes).into_owned()));
        }
    }

    #[test]
    fn join_parent_and_ancestors() {
        let root = ImagePath::root();
        let usr = root.join(std::ffi::OsStr::new("usr")).unwrap();
        let bin = usr.join(std::ffi::OsStr::new("bin")).unwrap();
        assert_eq!(bin.to_string(), "/usr/bin");
        assert_eq!(bin.parent(), Some(usr.clone()));
        assert_eq!(usr.parent(), Some(root.clone()));
        assert_eq!(root.parent(), None);
        assert_eq!(bin.ancestors(), vec![root.clone(), usr]);
        assert!(root.join(std::ffi::OsStr::new("..")).is_err());
        assert!(root.join(std::ffi::OsStr::new("a/b")).is_err());
    }

    #[test]
    fn from_rel_adds_the_leading_slash() {
        assert_eq!(ImagePath::from_rel(Path::new("")).as_bytes(), b"/");
        assert_eq!(
            ImagePath::from_rel(Path::new("usr/lib")).as_bytes(),
            b"/usr/lib"
        );
    }
}
