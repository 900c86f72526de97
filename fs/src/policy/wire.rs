//! How policy files spell what they hold: image paths exactly (a string when
//! the bytes are UTF-8, an array of bytes otherwise), access kinds by name,
//! and atomic rewrites ([`crate::atomic`]).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::profile::{AccessKind, ImagePath};

/// An image path as policy files write it: exact for any bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct WirePath(pub ImagePath);

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Bytes(Vec<u8>),
}

impl Serialize for WirePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0.as_bytes()) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(self.0.as_bytes()),
        }
    }
}

impl<'de> Deserialize<'de> for WirePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<WirePath, D::Error> {
        let bytes = match Repr::deserialize(d)? {
            Repr::Text(text) => text.into_bytes(),
            Repr::Bytes(bytes) => bytes,
        };
        ImagePath::new(bytes)
            .map(WirePath)
            .map_err(D::Error::custom)
    }
}

/// `#[serde(with)]` for a single [`ImagePath`] field.
pub(super) mod path {
    use super::*;

    pub fn serialize<S: Serializer>(path: &ImagePath, s: S) -> Result<S::Ok, S::Error> {
        WirePath(path.clone()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ImagePath, D::Error> {
        WirePath::deserialize(d).map(|p| p.0)
    }
}

/// `#[serde(with)]` for an [`AccessKind`] field, by its lower-case name.
pub(super) mod kind {
    use super::*;

    pub fn serialize<S: Serializer>(kind: &AccessKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AccessKind, D::Error> {
        let name = String::deserialize(d)?;
        AccessKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| D::Error::custom(format!("unknown access kind {name:?}")))
    }
}

pub(super) use crate::atomic::write_atomically;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_strings_when_utf8_and_byte_arrays_otherwise() {
        let cases: [(&[u8], &str); 3] = [
            (b"/usr/bin/ls", "\"/usr/bin/ls\""),
            ("/ü".as_bytes(), "\"/ü\""),
            (b"/a\xff", "[47,97,255]"),
        ];
        for (bytes, json) in cases {
            let path = WirePath(ImagePath::new(bytes.to_vec()).unwrap());
            assert_eq!(serde_json::to_string(&path).unwrap(), json);
            let back: WirePath = serde_json::from_str(json).unwrap();
            assert_eq!(back, path);
        }
    }

    #[test]
    fn invalid_paths_are_refused_on_reading() {
        for json in ["\"relative\"", "\"/a/../b\"", "[47,0]", "7"] {
            assert!(serde_json::from_str::<WirePath>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn an_atomic_write_replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "old").unwrap();
        write_atomically(&file, b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    }
}
