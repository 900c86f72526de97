//! What an attacker reaches for after code execution, in the original and the
//! minimized image: shells, package managers, download and network tools,
//! compilers and interpreters, setuid/setgid files, files with capabilities,
//! and the packages a vulnerability scanner still sees.
//!
//! Rules:
//! - a *program* is a regular file with an execute bit, or a symlink that
//!   leads (every link followed inside the image) to one, in any directory,
//!   whose name is one of [`CATEGORIES`]' names, optionally with a version
//!   (`python3.11`, `gcc-12`, `perl5.36.0`) and a target prefix
//!   (`x86_64-linux-gnu-gcc-12`). The tree is walked without following
//!   symlinked directories, so with `/bin -> usr/bin` a program is listed once,
//!   at its `/usr/bin` path; a dangling link is no program;
//! - *setuid/setgid files* are regular files with mode bit `0o4000` or
//!   `0o2000`; *files with capabilities* are regular files with a
//!   `security.capability` xattr;
//! - a path is `present` when the minimized image has it as the same kind of
//!   entry, `removed` when only the original has it, `added` when only the
//!   minimized image has it; a compiler or interpreter still present is
//!   marked `used_by_workload` (the profile, or an `--include`, kept it);
//! - the packages a scanner sees are those installed in each image's dpkg
//!   status (compaction trims it to the packages it keeps files of).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::compare::ImageView;
use super::merge::{Merged, Node};

#[cfg(test)]
mod tests;

/// The program categories, their JSON names, labels and program names.
pub const CATEGORIES: [(&str, &str, &[&str]); 4] = [
    ("shells", "shells", SHELLS),
    ("package_managers", "package managers", PACKAGE_MANAGERS),
    ("network_tools", "download and network tools", NETWORK_TOOLS),
    (
        "compilers_interpreters",
        "compilers and interpreters",
        COMPILERS_INTERPRETERS,
    ),
];

const SHELLS: &[&str] = &[
    "sh", "bash", "rbash", "dash", "zsh", "ash", "ksh", "ksh93", "mksh", "pdksh", "csh", "tcsh",
    "fish", "yash", "pwsh", "busybox",
];

const PACKAGE_MANAGERS: &[&str] = &[
    "apt",
    "apt-get",
    "apt-cache",
    "apt-key",
    "apt-mark",
    "aptitude",
    "dpkg",
    "dpkg-deb",
    "dpkg-query",
    "dpkg-divert",
    "dpkg-split",
    "rpm",
    "rpm2cpio",
    "yum",
    "dnf",
    "microdnf",
    "zypper",
    "apk",
    "pacman",
    "pip",
    "pipx",
    "easy_install",
    "conda",
    "npm",
    "npx",
    "pnpm",
    "yarn",
    "gem",
    "bundle",
    "cargo",
    "rustup",
    "composer",
    "cpan",
    "cpanm",
    "luarocks",
];

const NETWORK_TOOLS: &[&str] = &[
    "curl",
    "wget",
    "wget2",
    "nc",
    "nc.openbsd",
    "nc.traditional",
    "netcat",
    "ncat",
    "socat",
    "telnet",
    "ftp",
    "tftp",
    "lftp",
    "ssh",
    "scp",
    "sftp",
    "rsync",
    "openssl",
    "gnutls-cli",
    "nmap",
    "aria2c",
];

const COMPILERS_INTERPRETERS: &[&str] = &[
    "gcc", "cc", "g++", "c++", "cpp", "clang", "clang++", "tcc", "ld", "ld.bfd", "ld.gold",
    "ld.lld", "as", "make", "cmake", "rustc", "go", "gccgo", "java", "javac", "jshell", "perl",
    "python", "pypy", "ruby", "irb", "node", "nodejs", "deno", "bun", "php", "lua", "luajit",
    "tclsh", "wish", "expect", "awk", "gawk", "mawk", "Rscript", "julia", "erl", "guile",
];

/// The category (its JSON name) of a file name, if it names a program of one.
pub fn category_of(name: &str) -> Option<&'static str> {
    let bare = strip_target(name);
    CATEGORIES
        .iter()
        .find(|(_, _, names)| names.iter().any(|n| named(name, n) || named(bare, n)))
        .map(|(category, _, _)| *category)
}

/// `name` without a target-triplet prefix (`x86_64-linux-gnu-gcc-12` →
/// `gcc-12`); `name` itself when it has none.
fn strip_target(name: &str) -> &str {
    let Some(at) = name.find("-linux-") else {
        return name;
    };
    let rest = &name[at + "-linux-".len()..];
    rest.split_once('-').map_or(name, |(_, program)| program)
}

/// Whether `name` is `program` or `program` with a version: digits and dots,
/// after an optional `-` or `.` (`python3.11`, `gcc-12`, `lua5.4`).
fn named(name: &str, program: &str) -> bool {
    let Some(version) = name.strip_prefix(program) else {
        return false;
    };
    let version = version.strip_prefix(['-', '.']).unwrap_or(version);
    name == program
        || (version.starts_with(|c: char| c.is_ascii_digit())
            && version.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Whether a path is in both images, or in one only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In the original and the minimized image.
    Present,
    /// In the original only.
    Removed,
    /// In the minimized image only.
    Added,
}

/// One path of a [`Group`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The absolute path.
    pub path: String,
    /// In both images, or which one.
    pub status: Status,
    /// A compiler or interpreter the minimized image still has.
    pub used_by_workload: bool,
}

/// The paths of one kind, with counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Group {
    /// Its JSON name (`shells`, `setuid_setgid`).
    pub category: String,
    /// Its name in prose (`package managers`).
    pub label: String,
    /// Paths in the original.
    pub original: u64,
    /// Paths in the minimized image.
    pub minimized: u64,
    /// Paths of the original the minimized image lacks.
    pub removed: u64,
    /// Every path, sorted.
    pub entries: Vec<Entry>,
}

/// The dpkg packages a vulnerability scanner sees in each image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScannerPackages {
    /// Installed in the original.
    pub original: u64,
    /// Installed in the minimized image.
    pub minimized: u64,
    /// Installed in the original, not in the minimized image.
    pub removed: u64,
    /// The minimized image's installed packages, sorted.
    pub still_visible: Vec<String>,
    /// The removed ones, sorted.
    pub removed_names: Vec<String>,
}

/// The hardening section of a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hardening {
    /// One line: `removed: 3 of 3 shells, …`.
    pub summary: String,
    /// The four program categories, then `setuid_setgid` and `capabilities`.
    pub groups: Vec<Group>,
    /// What a scanner reading the dpkg status sees.
    pub packages: ScannerPackages,
}

/// Every program path of `tree` by category.
fn programs(tree: &Merged) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut found: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for (path, node) in tree.entries() {
        if !matches!(node, Node::File { .. } | Node::Symlink { .. }) {
            continue;
        }
        let name = path.rsplit('/').next().unwrap_or_default();
        let Some(category) = category_of(name) else {
            continue;
        };
        let executable = matches!(
            tree.resolve(&path),
            Some((_, Node::File { mode, .. })) if mode & 0o111 != 0
        );
        if executable {
            found.entry(category).or_default().insert(path);
        }
    }
    found
}

/// The regular files of `tree` that `pick` selects.
fn files(tree: &Merged, pick: impl Fn(u32, bool) -> bool) -> BTreeSet<String> {
    tree.entries()
        .filter_map(|(path, node)| match node {
            Node::File {
                mode, capability, ..
            } if pick(*mode, *capability) => Some(path),
            _ => None,
        })
        .collect()
}

/// The group `category` of the paths found in each image.
fn group(
    category: &str,
    label: &str,
    original: &BTreeSet<String>,
    minimized: &BTreeSet<String>,
) -> Group {
    let used = category == "compilers_interpreters";
    let entries: Vec<Entry> = original
        .union(minimized)
        .map(|path| {
            let status = match (original.contains(path), minimized.contains(path)) {
                (true, true) => Status::Present,
                (true, false) => Status::Removed,
                _ => Status::Added,
            };
            Entry {
                path: path.clone(),
                status,
                used_by_workload: used && status != Status::Removed,
            }
        })
        .collect();
    Group {
        category: category.to_string(),
        label: label.to_string(),
        original: original.len() as u64,
        minimized: minimized.len() as u64,
        removed: original.difference(minimized).count() as u64,
        entries,
    }
}

/// Compares `original` and `minimized` on what an attacker reaches for.
pub fn compare(original: &ImageView, minimized: &ImageView) -> Hardening {
    let (o, m) = (programs(&original.tree), programs(&minimized.tree));
    let none = BTreeSet::new();
    let mut groups: Vec<Group> = CATEGORIES
        .iter()
        .map(|(category, label, _)| {
            group(
                category,
                label,
                o.get(category).unwrap_or(&none),
                m.get(category).unwrap_or(&none),
            )
        })
        .collect();
    let setid = |mode: u32, _| mode & 0o6000 != 0;
    groups.push(group(
        "setuid_setgid",
        "setuid/setgid files",
        &files(&original.tree, setid),
        &files(&minimized.tree, setid),
    ));
    let capable = |_, capability: bool| capability;
    groups.push(group(
        "capabilities",
        "files with capabilities",
        &files(&original.tree, capable),
        &files(&minimized.tree, capable),
    ));

    let removed_names: Vec<String> = original
        .packages
        .keys()
        .filter(|id| !minimized.packages.contains_key(*id))
        .cloned()
        .collect();
    let packages = ScannerPackages {
        original: original.packages.len() as u64,
        minimized: minimized.packages.len() as u64,
        removed: removed_names.len() as u64,
        still_visible: minimized.packages.keys().cloned().collect(),
        removed_names,
    };
    Hardening {
        summary: summary(&groups, &packages),
        groups,
        packages,
    }
}

/// `removed: 3 of 3 shells, …, 2 of 3 packages`: each group and the
/// packages, when either image has any.
fn summary(groups: &[Group], packages: &ScannerPackages) -> String {
    let mut parts: Vec<String> = groups
        .iter()
        .filter(|g| g.original + g.minimized > 0)
        .map(|g| format!("{} of {} {}", g.removed, g.original, g.label))
        .collect();
    if packages.original + packages.minimized > 0 {
        parts.push(format!(
            "{} of {} packages",
            packages.removed, packages.original
        ));
    }
    if parts.is_empty() {
        "removed: nothing of the kind, neither image has any".to_string()
    } else {
        format!("removed: {}", parts.join(", "))
    }
}
