//! Test helpers: small layer tars built entry by entry.

use tar::{EntryType, Header};

/// A tar built entry by entry.
pub struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    pub fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn entry(mut self, path: &str, kind: EntryType, data: &[u8], link: Option<&str>) -> Tar {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o644);
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

    pub fn file(self, path: &str, data: &[u8]) -> Tar {
        self.entry(path, EntryType::Regular, data, None)
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
