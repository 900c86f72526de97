//! Identities of image content: [`Digest`] (a sha256 content address) and
//! [`ChainId`] (a layer stack), shared by the snapshotter and the tools so the
//! two are never mixed up with each other or with other strings; and where an
//! image's profile lives ([`profile_path`]).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// A sha256 content digest: `sha256:` and 64 lowercase hex digits, so it is
/// safe as a file name component and comparable as a string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

/// Why a string is not a [`Digest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a sha256 digest (sha256: and 64 lowercase hex digits)")]
pub struct DigestError(pub String);

impl Digest {
    /// The digest of `bytes`.
    pub fn sha256(bytes: &[u8]) -> Digest {
        Digest::from_hash(&Sha256::digest(bytes))
    }

    /// The digest with hash value `hash` (32 bytes of a finished sha256).
    pub fn from_hash(hash: &[u8]) -> Digest {
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in hash {
            s.push_str(&format!("{b:02x}"));
        }
        Digest(s)
    }

    /// Validates `s` as a digest.
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        let ok = s.strip_prefix("sha256:").is_some_and(|hex| {
            hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(Digest(s.to_string()))
        } else {
            Err(DigestError(s.to_string()))
        }
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Digest, DigestError> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The identity of a layer stack: the name of the committed snapshot at its
/// top. containerd's unpacker names it by the OCI chain ID ([`ChainId::of`]);
/// other clients of the snapshotter may choose any name, so a chain ID read
/// from the snapshotter is not required to be a digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChainId(String);

impl ChainId {
    /// The chain ID of a stack of layers given their diff IDs bottom first
    /// (OCI rule: `ChainID(L0) = DiffID(L0)`, `ChainID(Ln) =
    /// sha256(ChainID(Ln-1) + " " + DiffID(Ln))`); `None` for no layers.
    pub fn of(diff_ids: &[Digest]) -> Option<ChainId> {
        let (first, rest) = diff_ids.split_first()?;
        let top = rest.iter().fold(first.clone(), |chain, diff_id| {
            Digest::sha256(format!("{chain} {diff_id}").as_bytes())
        });
        Some(ChainId(top.0))
    }

    /// The chain IDs of every prefix of a stack, bottom first.
    pub fn all_of(diff_ids: &[Digest]) -> Vec<ChainId> {
        (1..=diff_ids.len())
            .filter_map(|n| ChainId::of(&diff_ids[..n]))
            .collect()
    }

    /// The chain named by a committed snapshot (any name a client chose).
    pub fn from_snapshot_name(name: impl Into<String>) -> ChainId {
        ChainId(name.into())
    }

    /// The name as containerd knows it (`sha256:ab…` when unpacked by it).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The chain as a file name: the name itself with anything unusual in a
    /// file name replaced by `_` (`sha256:ab…` stays as it is), and never
    /// `.` or `..`.
    pub fn file_name(&self) -> String {
        let name: String = self
            .0
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == ':' || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.bytes().all(|b| b == b'.') {
            // "", "." and ".." name no file of their own.
            format!("_{name}")
        } else {
            name
        }
    }

    /// The chain as a mountpoint name: like [`ChainId::file_name`] without
    /// `:`, which overlayfs would take as a `lowerdir=` separator
    /// (`sha256-ab…`).
    pub fn mount_name(&self) -> String {
        self.file_name().replace(':', "-")
    }
}

impl From<Digest> for ChainId {
    fn from(d: Digest) -> ChainId {
        ChainId(d.0)
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The directory of profiles under a snapshotter root.
pub fn profiles_dir(root: &Path) -> PathBuf {
    root.join("profiles")
}

/// The profile journal of `chain` under a snapshotter root
/// (`<root>/profiles/sha256:ab…`): the one place both the snapshotter and
/// the CLI find it.
pub fn profile_path(root: &Path, chain: &ChainId) -> PathBuf {
    profiles_dir(root).join(chain.file_name())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    #[test]
    fn digests_are_sha256_and_64_lowercase_hex_digits() {
        let hex = "a".repeat(64);
        for (s, ok) in [
            (format!("sha256:{hex}"), true),
            (format!("sha256:{}", "A".repeat(64)), false),
            (format!("sha256:{}", &hex[1..]), false),
            (format!("sha256:{hex}0"), false),
            (format!("sha512:{hex}"), false),
            (format!("sha256:{}/..", &hex[3..]), false),
            (String::new(), false),
        ] {
            assert_eq!(Digest::parse(&s).is_ok(), ok, "{s}");
        }
    }

    #[test]
    fn digest_of_bytes_is_their_sha256() {
        assert_eq!(
            Digest::sha256(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::sha256(b"").hex().len(), 64);
    }

    #[test]
    fn digests_deserialize_only_when_valid() {
        let good: Digest = serde_json::from_str(&format!("\"{}\"", d('b'))).unwrap();
        assert_eq!(good, d('b'));
        assert!(serde_json::from_str::<Digest>("\"sha256:x\"").is_err());
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let (a, b, c) = (d('a'), d('b'), d('c'));
        assert_eq!(ChainId::of(&[]), None);
        assert_eq!(
            ChainId::of(std::slice::from_ref(&a)).unwrap().as_str(),
            a.as_str()
        );
        let ab = Digest::sha256(format!("{a} {b}").as_bytes());
        let abc = Digest::sha256(format!("{ab} {c}").as_bytes());
        assert_eq!(
            ChainId::of(&[a.clone(), b.clone()]),
            Some(ab.clone().into())
        );
        assert_eq!(
            ChainId::of(&[a.clone(), b.clone(), c.clone()]),
            Some(abc.clone().into())
        );
        assert_eq!(
            ChainId::all_of(&[a.clone(), b, c]),
            vec![a.into(), ab.into(), abc.into()]
        );
    }

    #[test]
    fn chain_names_become_file_and_mount_names() {
        let digest = d('f');
        for (name, file, mount) in [
            (
                digest.as_str(),
                digest.as_str().to_string(),
                format!("sha256-{}", digest.hex()),
            ),
            (
                "default/3/layer",
                "default_3_layer".into(),
                "default_3_layer".into(),
            ),
            ("a b,c", "a_b_c".into(), "a_b_c".into()),
            ("..", "_..".into(), "_..".into()),
            ("", "_".into(), "_".into()),
        ] {
            let chain = ChainId::from_snapshot_name(name);
            assert_eq!(chain.file_name(), file, "{name}");
            assert_eq!(chain.mount_name(), mount, "{name}");
        }
        assert_eq!(
            profile_path(Path::new("/var/lib/pare"), &digest.clone().into()),
            Path::new("/var/lib/pare/profiles").join(digest.as_str())
        );
    }
}
