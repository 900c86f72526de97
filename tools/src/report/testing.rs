//! Test helpers: small layer tars built entry by entry, images made of
//! them, and images with no misses.

use tar::{EntryType, Header};

use super::merge::Merged;
use super::{ImageSummary, ImageView, packages};
use crate::misses::ImageMisses;

/// An image with no misses recorded.
pub fn no_misses() -> ImageMisses {
    ImageMisses {
        chain: pare_fs::id::ChainId::from_snapshot_name("sha256:00"),
        mode: pare_fs::policy::Mode::Learn,
        files: 0,
        source_image: None,
        lacking: 0,
        misses: Vec::new(),
    }
}

/// Image `name` of `layers` (bottom first) with `packages` installed.
pub fn view(name: &str, layers: Vec<Vec<u8>>, packages: &[(&str, u64)]) -> ImageView {
    let mut view = image(name, layers);
    view.packages = packages.iter().map(|(n, s)| (n.to_string(), *s)).collect();
    view.summary.packages = packages.len() as u64;
    view
}

/// Image `name` of `layers` (bottom first) with the packages of its dpkg
/// status, read as [`super::load`] reads them.
pub fn image(name: &str, layers: Vec<Vec<u8>>) -> ImageView {
    let mut tree = Merged::new(&[packages::STATUS]);
    let mut uncompressed = 0;
    for layer in &layers {
        uncompressed += tree.apply_tar(layer.as_slice()).unwrap();
    }
    let installed = tree
        .content(packages::STATUS)
        .map(packages::installed)
        .unwrap_or_default();
    ImageView {
        summary: ImageSummary {
            name: name.into(),
            manifest_digest: format!("sha256:{name}"),
            layers: layers.len() as u64,
            compressed_bytes: uncompressed / 2,
            uncompressed_bytes: uncompressed,
            files: tree.files(),
            bytes: tree.bytes(),
            packages: installed.len() as u64,
        },
        tree,
        packages: installed,
    }
}

/// A tar built entry by entry.
pub struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    pub fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn entry(self, path: &str, kind: EntryType, data: &[u8], link: Option<&str>) -> Tar {
        self.entry_mode(path, kind, data, link, 0o644)
    }

    fn entry_mode(
        mut self,
        path: &str,
        kind: EntryType,
        data: &[u8],
        link: Option<&str>,
        mode: u32,
    ) -> Tar {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        self.0.append_data(&mut header, path, data).unwrap();
        self
    }

    pub fn dir(self, path: &str) -> Tar {
        self.entry(path, EntryType::Directory, b"", None)
    }

    pub fn dir_mode(self, path: &str, mode: u32) -> Tar {
        self.entry_mode(path, EntryType::Directory, b"", None, mode)
    }

    pub fn file(self, path: &str, data: &[u8]) -> Tar {
        self.entry(path, EntryType::Regular, data, None)
    }

    /// A regular file with `mode` (`0o4755` for a setuid program).
    pub fn file_mode(self, path: &str, data: &[u8], mode: u32) -> Tar {
        self.entry_mode(path, EntryType::Regular, data, None, mode)
    }

    /// An executable file carrying a `security.capability` xattr as GNU tar
    /// writes it: a PAX record `SCHILY.xattr.security.capability` (a VFS
    /// capability v2 value granting `cap_net_raw`, effective).
    pub fn capability(mut self, path: &str, data: &[u8]) -> Tar {
        let mut value = Vec::new();
        value.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // v2, effective
        value.extend_from_slice(&(1u32 << 13).to_le_bytes()); // permitted: cap_net_raw
        value.extend_from_slice(&[0; 12]); // inheritable, then the upper words
        self.0
            .append_pax_extensions([("SCHILY.xattr.security.capability", value.as_slice())])
            .unwrap();
        self.file_mode(path, data, 0o755)
    }

    pub fn hardlink(self, path: &str, target: &str) -> Tar {
        self.entry(path, EntryType::Link, b"", Some(target))
    }

    pub fn symlink(self, path: &str, target: &str) -> Tar {
        self.entry(path, EntryType::Symlink, b"", Some(target))
    }

    pub fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}
