//! dpkg metadata trimming: rewrite `/var/lib/dpkg/status` and keep the
//! `info/` files of only the packages the minimized image still holds, so
//! vulnerability scanners report its true inventory.
//!
//! Rules:
//! - a package is installed when the last word of its `Status` is
//!   `installed` (or `triggers-awaited`/`triggers-pending`, whose files are
//!   all unpacked and configured); other paragraphs (`config-files`,
//!   `not-installed`, half-installed...) are dropped from the new status;
//! - an installed package is kept when at least one non-directory path of its
//!   `.list` is kept. A listed path is looked up with its parent directories
//!   resolved inside the image (so `/lib/x86_64-linux-gnu/libc.so.6` listed by
//!   a package matches `/usr/lib/x86_64-linux-gnu/libc.so.6` kept in a
//!   merged-`/usr` image); a symlink counts as a file unless it leads to a
//!   directory (merged-`/usr` turns directories that packages list, `/lib`,
//!   `/bin`, into such symlinks); paths absent from the image count for nothing;
//! - the metadata kept for a kept package is its `info/<pkg>.list` and
//!   `info/<pkg>.md5sums` (what scanners read); maintainer scripts,
//!   `.conffiles` (their content is also in the status `Conffiles` field),
//!   `.triggers`, `.shlibs` and the like are not kept.

use std::io;

use pare_fs::layers::{Kind, Resolved};
use pare_fs::profile::ImagePath;

use super::tree::ImageTree;

pub mod status;
#[cfg(test)]
mod tests;

/// Where dpkg keeps its database.
pub const STATUS: &str = "/var/lib/dpkg/status";
/// Per-package files (`<pkg>.list`, `<pkg>.md5sums`, ...).
pub const INFO: &str = "/var/lib/dpkg/info";

/// Why the dpkg database could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DpkgError {
    /// A file of the database could not be read.
    #[error("reading {path} in the image: {source}")]
    Io {
        /// The file.
        path: ImagePath,
        /// What went wrong.
        source: io::Error,
    },
    /// The status file is not a sequence of `Field: value` paragraphs.
    #[error("{path}:{line}: {reason}")]
    Malformed {
        /// The status file.
        path: ImagePath,
        /// 1-based line number.
        line: usize,
        /// What is wrong there.
        reason: String,
    },
    /// A paragraph lacks a required field.
    #[error("{path}: the paragraph at line {line} has no {field} field")]
    MissingField {
        /// The status file.
        path: ImagePath,
        /// 1-based line number of the paragraph's first line.
        line: usize,
        /// The field.
        field: &'static str,
    },
    /// A `.list` file names something that is not an absolute normalized path.
    #[error("{path}:{line}: not a path: {entry:?}")]
    BadListEntry {
        /// The `.list` file.
        path: ImagePath,
        /// 1-based line number.
        line: usize,
        /// The entry.
        entry: String,
    },
}

/// One paragraph of the status file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// `Package` field.
    pub name: String,
    /// `Architecture` field, when present.
    pub arch: Option<String>,
    /// `Multi-Arch: same` (its `info/` files are named `<name>:<arch>.*`).
    pub multi_arch_same: bool,
    /// Whether the package is installed (see the module rules).
    pub installed: bool,
    /// `Installed-Size` in KiB, when present and numeric.
    pub installed_size_kib: Option<u64>,
    /// The paragraph's exact bytes followed by the blank lines after it.
    pub text: Vec<u8>,
    /// 1-based line of the paragraph in the status file.
    pub line: usize,
    /// Its `.list` file, when it has one (found by [`load`], not by the
    /// status parser).
    pub list: Option<ImagePath>,
    /// Its `.md5sums` file, when it has one.
    pub md5sums: Option<ImagePath>,
    /// Non-directory entries of the `.list` present in the image: as listed,
    /// and with parent directories resolved.
    pub files: Vec<(ImagePath, ImagePath)>,
}

impl Package {
    /// The name dpkg gives its `info/` files: `name:arch` for `Multi-Arch:
    /// same` packages, `name` otherwise.
    pub fn id(&self) -> String {
        match (&self.arch, self.multi_arch_same) {
            (Some(arch), true) => format!("{}:{arch}", self.name),
            _ => self.name.clone(),
        }
    }

    /// Installed size in bytes (`Installed-Size` is in KiB; 0 when absent).
    pub fn installed_bytes(&self) -> u64 {
        self.installed_size_kib.unwrap_or(0).saturating_mul(1024)
    }
}

/// The dpkg database of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dpkg {
    /// Bytes before the first paragraph (blank lines), kept as they are.
    prefix: Vec<u8>,
    packages: Vec<Package>,
}

/// The trimmed database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// The new status file: kept packages' paragraphs, in original order,
    /// byte-exact, each followed by the blank lines that followed it.
    pub status: Vec<u8>,
    /// Ids ([`Package::id`]) of installed packages with a kept file.
    pub kept_packages: Vec<String>,
    /// Ids of installed packages with no kept file.
    pub removed_packages: Vec<String>,
    /// Ids of paragraphs of packages not installed (dropped from the status).
    pub not_installed: Vec<String>,
    /// `info/*.list` and `info/*.md5sums` files of the kept packages, as
    /// resolved in the image. The status file itself is not listed: write
    /// [`Trimmed::status`] at [`STATUS`].
    pub metadata_paths: Vec<ImagePath>,
}

/// Reads the image's dpkg database; `None` when it has no status file.
pub fn load(tree: &ImageTree) -> Result<Option<Dpkg>, DpkgError> {
    let status = path(STATUS);
    let Some(resolved) = regular_file(tree, &status)? else {
        return Ok(None);
    };
    let bytes = tree.read(&resolved).map_err(io_err(&resolved))?;
    let status::Status {
        prefix,
        mut packages,
    } = status::parse(&resolved, &bytes)?;
    for pkg in &mut packages {
        let stems = match (&pkg.arch, pkg.multi_arch_same) {
            (Some(arch), true) => [format!("{}:{arch}", pkg.name), pkg.name.clone()],
            (Some(arch), false) => [pkg.name.clone(), format!("{}:{arch}", pkg.name)],
            (None, _) => [pkg.name.clone(), pkg.name.clone()],
        };
        pkg.list = info_file(tree, &stems, "list")?;
        pkg.md5sums = info_file(tree, &stems, "md5sums")?;
        if let Some(list) = &pkg.list {
            pkg.files = list_files(tree, list)?;
        }
    }
    Ok(Some(Dpkg { prefix, packages }))
}

impl Dpkg {
    /// Every paragraph of the status file, in order.
    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    /// Installed size in bytes (from `Installed-Size`, in KiB; 0 when
    /// absent) of each installed package, by id, in status order.
    pub fn sizes(&self) -> Vec<(String, u64)> {
        self.packages
            .iter()
            .filter(|p| p.installed)
            .map(|p| (p.id(), p.installed_bytes()))
            .collect()
    }

    /// The database for an image keeping only the paths `kept` accepts.
    pub fn trim(&self, kept: &dyn Fn(&ImagePath) -> bool) -> Trimmed {
        let mut out = Trimmed {
            status: self.prefix.clone(),
            ..Trimmed::default()
        };
        for pkg in &self.packages {
            if !pkg.installed {
                out.not_installed.push(pkg.id());
            } else if pkg.files.iter().any(|(l, r)| kept(r) || kept(l)) {
                out.status.extend_from_slice(&pkg.text);
                out.kept_packages.push(pkg.id());
                out.metadata_paths
                    .extend(pkg.list.iter().chain(&pkg.md5sums).cloned());
            } else {
                out.removed_packages.push(pkg.id());
            }
        }
        out
    }
}

/// An image path from one of this module's constants (all valid).
fn path(s: &str) -> ImagePath {
    ImagePath::new(s.as_bytes().to_vec()).unwrap_or_else(|_| ImagePath::root())
}

fn io_err(path: &ImagePath) -> impl FnOnce(io::Error) -> DpkgError + '_ {
    move |source| DpkgError::Io {
        path: path.clone(),
        source,
    }
}

/// `path` with symlinks followed, when it is a regular file.
fn regular_file(tree: &ImageTree, path: &ImagePath) -> Result<Option<ImagePath>, DpkgError> {
    let Some(f) = tree.follow(path).map_err(io_err(path))? else {
        return Ok(None);
    };
    Ok(match tree.entry(&f.path).map_err(io_err(path))? {
        Some(r) if r.meta().kind == Kind::File => Some(f.path),
        _ => None,
    })
}

fn info_file(
    tree: &ImageTree,
    stems: &[String],
    ext: &str,
) -> Result<Option<ImagePath>, DpkgError> {
    for stem in stems {
        let Ok(p) = ImagePath::new(format!("{INFO}/{stem}.{ext}").into_bytes()) else {
            continue; // a name with `/` cannot have an info file
        };
        if let Some(found) = regular_file(tree, &p)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Non-directory entries of a `.list` file present in the image.
fn list_files(
    tree: &ImageTree,
    list: &ImagePath,
) -> Result<Vec<(ImagePath, ImagePath)>, DpkgError> {
    let bytes = tree.read(list).map_err(io_err(list))?;
    let mut files = Vec::new();
    for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() || line == b"/." {
            continue;
        }
        let listed = ImagePath::new(line.to_vec()).map_err(|_| DpkgError::BadListEntry {
            path: list.clone(),
            line: i + 1,
            entry: String::from_utf8_lossy(line).into_owned(),
        })?;
        if let Some(real) = resolve_parent(tree, &listed)? {
            files.push((listed, real));
        }
    }
    Ok(files)
}

/// `listed` with its parent directories resolved, when it is in the image
/// and neither a directory nor a symlink to one.
fn resolve_parent(tree: &ImageTree, listed: &ImagePath) -> Result<Option<ImagePath>, DpkgError> {
    let (Some(parent), Some(name)) = (listed.parent(), listed.rel().file_name()) else {
        return Ok(None);
    };
    let Some(dir) = tree.follow(&parent).map_err(io_err(listed))? else {
        return Ok(None);
    };
    let Ok(real) = dir.path.join(name) else {
        return Ok(None);
    };
    let is_dir = |r: Option<Resolved>| matches!(r, Some(Resolved::Dir { .. }));
    match tree.entry(&real).map_err(io_err(listed))? {
        None => Ok(None),
        Some(Resolved::Dir { .. }) => Ok(None),
        Some(Resolved::Other { meta, .. }) if meta.kind == Kind::Symlink => {
            let target = tree.follow(&real).map_err(io_err(listed))?;
            let points_to_dir = match target {
                Some(f) => is_dir(tree.entry(&f.path).map_err(io_err(listed))?),
                None => false,
            };
            Ok((!points_to_dir).then_some(real))
        }
        Some(_) => Ok(Some(real)),
    }
}
