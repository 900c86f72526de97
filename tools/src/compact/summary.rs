//! What a compaction made: the minimized image's digests and sizes and what
//! it kept of the original, as `pare compact --json` prints it.

use std::fmt;
use std::path::PathBuf;

use pare_fs::id::Digest;
use serde::{Deserialize, Serialize};

/// How much of the original image the minimized one keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptOf {
    /// In the minimized image.
    pub kept: u64,
    /// In the original image.
    pub total: u64,
}

impl KeptOf {
    /// `kept` as a percentage of `total` (0 of 0 is 0 %).
    pub fn percent(&self) -> f64 {
        100.0 * self.kept as f64 / self.total.max(1) as f64
    }
}

/// The result of [`super::compact`] (the JSON of `pare compact --json`; the
/// README documents its fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompactSummary {
    /// The image compacted, as named.
    pub source: String,
    /// The minimized image's name: in containerd, or its reference in the
    /// OCI layout.
    pub image: String,
    /// The OCI image layout written, when not stored in containerd.
    pub oci_layout: Option<PathBuf>,
    /// The profile journal it was compacted with.
    pub profile: PathBuf,
    /// Digest of the image manifest.
    pub manifest_digest: Digest,
    /// Digest of the image config.
    pub config_digest: Digest,
    /// Digest of the compressed layer blob (the one the content store and
    /// `blobs/sha256/` hold).
    pub layer_digest: Digest,
    /// Digest of the uncompressed layer tar (the config's `rootfs.diff_ids`).
    pub layer_diff_id: Digest,
    /// Media type of the layer (its compression).
    pub layer_media_type: String,
    /// Size of the compressed layer blob.
    pub layer_compressed_bytes: u64,
    /// Size of the uncompressed layer tar.
    pub layer_uncompressed_bytes: u64,
    /// Entries other than directories.
    pub files: KeptOf,
    /// Bytes of regular files (each hardlinked inode once).
    pub file_bytes: KeptOf,
    /// Installed dpkg packages; `None` when the image has no dpkg database.
    pub packages: Option<KeptOf>,
    /// Wall time of the whole compaction, in seconds.
    pub duration_seconds: f64,
}

/// The one line `pare compact` prints: what was kept, the layer blob's
/// digest (what the content store holds) beside its diff id, the manifest.
impl fmt::Display for CompactSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.oci_layout {
            Some(dir) => write!(f, "OCI layout {} ({})", dir.display(), self.image)?,
            None => f.write_str(&self.image)?,
        }
        let packages = self.packages.map_or((0, 0), |p| (p.kept, p.total));
        write!(
            f,
            ": {} of {} files, {} of {} bytes ({:.1}%), {} of {} packages; layer {} (diff id {}), {} bytes compressed; manifest {}; {:.1} s",
            self.files.kept,
            self.files.total,
            self.file_bytes.kept,
            self.file_bytes.total,
            self.file_bytes.percent(),
            packages.0,
            packages.1,
            self.layer_digest,
            self.layer_diff_id,
            self.layer_compressed_bytes,
            self.manifest_digest,
            self.duration_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn summary() -> CompactSummary {
        CompactSummary {
            source: "app:v1".into(),
            image: "app:v1-pare".into(),
            oci_layout: None,
            profile: "/var/lib/pare/profiles/sha256:x".into(),
            manifest_digest: digest('a'),
            config_digest: digest('b'),
            layer_digest: digest('c'),
            layer_diff_id: digest('d'),
            layer_media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            layer_compressed_bytes: 10,
            layer_uncompressed_bytes: 20,
            files: KeptOf { kept: 1, total: 2 },
            file_bytes: KeptOf { kept: 3, total: 4 },
            packages: None,
            duration_seconds: 2.24,
        }
    }

    #[test]
    fn the_json_names_every_field_and_reads_back() {
        let summary = summary();
        let json = serde_json::to_value(&summary).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "config_digest",
                "duration_seconds",
                "file_bytes",
                "files",
                "image",
                "layer_compressed_bytes",
                "layer_diff_id",
                "layer_digest",
                "layer_media_type",
                "layer_uncompressed_bytes",
                "manifest_digest",
                "oci_layout",
                "packages",
                "profile",
                "source",
            ]
        );
        assert_eq!(json["layer_digest"], digest('c').as_str());
        assert_eq!(json["files"], serde_json::json!({"kept": 1, "total": 2}));
        assert_eq!(json["packages"], serde_json::Value::Null);
        let back: CompactSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn the_summary_line_names_the_layer_blob_and_its_diff_id() {
        let mut s = summary();
        s.files = KeptOf {
            kept: 218,
            total: 7422,
        };
        s.file_bytes = KeptOf {
            kept: 21981111,
            total: 252813196,
        };
        s.packages = Some(KeptOf {
            kept: 14,
            total: 110,
        });
        let (a, c, d) = (digest('a'), digest('c'), digest('d'));
        assert_eq!(
            s.to_string(),
            format!(
                "app:v1-pare: 218 of 7422 files, 21981111 of 252813196 bytes (8.7%), 14 of 110 packages; \
                 layer {c} (diff id {d}), 10 bytes compressed; manifest {a}; 2.2 s"
            )
        );
        s.oci_layout = Some("/tmp/out".into());
        s.packages = None;
        let line = s.to_string();
        assert!(
            line.starts_with(
                "OCI layout /tmp/out (app:v1-pare): 218 of 7422 files, 21981111 of 252813196 bytes (8.7%), 0 of 0 packages; "
            ),
            "{line}"
        );
    }

    #[test]
    fn percentages_of_nothing_are_zero() {
        assert_eq!(KeptOf { kept: 0, total: 0 }.percent(), 0.0);
        assert_eq!(KeptOf { kept: 1, total: 4 }.percent(), 25.0);
    }
}
