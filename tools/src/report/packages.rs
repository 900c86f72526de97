//! Installed packages from a dpkg `status` file: each paragraph whose
//! `Status` ends in `installed` (or `triggers-awaited`/`triggers-pending`,
//! as compaction counts them), with its `Installed-Size` in bytes.
//!
//! The report only counts, so it reads the file with compaction's parser in
//! its lenient mode ([`parse_lenient`]): lines that are not `Field:
//! value` and paragraphs without `Package` or `Status` are skipped rather than
//! refused, and a missing or non-numeric `Installed-Size` counts as 0.

use std::collections::BTreeMap;

use crate::compact::dpkg::status::parse_lenient;

pub use crate::compact::dpkg::STATUS;

/// Installed packages by id (`name`, or `name:arch` for `Multi-Arch: same`)
/// with their installed size in bytes.
pub fn installed(status: &[u8]) -> BTreeMap<String, u64> {
    parse_lenient(status)
        .into_iter()
        .filter(|p| p.installed && !p.name.is_empty())
        .map(|p| (p.id(), p.installed_bytes()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_packages_and_their_sizes() {
        let status = "Package: libc6\nStatus: install ok installed\nInstalled-Size: 12\n\
Architecture: amd64\nMulti-Arch: same\nDescription: C\n more text: here\n\n\n\
Package: coreutils\nstatus: install ok installed\nInstalled-Size: 7\n\n\
Package: old\nStatus: deinstall ok config-files\nInstalled-Size: 5\n\n\
Package: trig\nStatus: install ok triggers-pending\n\n\
Status: install ok installed\nInstalled-Size: 1\n\n\
Package: nosize\nStatus: install ok installed\nInstalled-Size: many";
        let got: Vec<(String, u64)> = installed(status.as_bytes()).into_iter().collect();
        let want = [
            ("coreutils", 7 * 1024),
            ("libc6:amd64", 12 * 1024),
            ("nosize", 0),
            ("trig", 0),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(n, s)| (n.to_string(), *s)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn malformed_lines_are_skipped_not_their_paragraph() {
        let status = " before any field\nPackage: a\nno colon\nStatus: install ok installed\n\
Bad Name: x\nInstalled-Size: 3\n";
        let got: Vec<(String, u64)> = installed(status.as_bytes()).into_iter().collect();
        assert_eq!(got, [("a".to_string(), 3 * 1024)]);
    }

    #[test]
    fn garbage_gives_no_packages() {
        assert!(installed(b"\xff\xfe\0 not a status file\n:::\n").is_empty());
        assert!(installed(b"").is_empty());
    }
}
