//! Installed packages from a dpkg `status` file: each paragraph whose
//! `Status` ends in `installed` (or `triggers-awaited`/`triggers-pending`,
//! as compaction counts them), with its `Installed-Size` in bytes.
//!
//! The report only counts: paragraphs without `Package` or `Status` are
//! skipped rather than refused, and a missing or non-numeric
//! `Installed-Size` counts as 0.

use std::collections::BTreeMap;

/// Where dpkg keeps its database.
pub const STATUS: &str = "/var/lib/dpkg/status";

/// Installed packages by id (`name`, or `name:arch` for `Multi-Arch: same`)
/// with their installed size in bytes.
pub fn installed(status: &[u8]) -> BTreeMap<String, u64> {
    let text = String::from_utf8_lossy(status);
    let mut out = BTreeMap::new();
    let mut paragraph: Vec<(&str, &str)> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let Some((id, size)) = package(&paragraph) {
                out.insert(id, size);
            }
            paragraph.clear();
        } else if !line.starts_with([' ', '\t']) {
            if let Some((name, value)) = line.split_once(':') {
                paragraph.push((name.trim(), value.trim()));
            }
        }
    }
    out
}

fn package(fields: &[(&str, &str)]) -> Option<(String, u64)> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    };
    let name = field("Package").filter(|n| !n.is_empty())?;
    let state = field("Status")?.split_whitespace().last()?;
    if !matches!(state, "installed" | "triggers-awaited" | "triggers-pending") {
        return None;
    }
    let kib: u64 = field("Installed-Size")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let id = match (field("Architecture"), field("Multi-Arch")) {
        (Some(arch), Some(ma)) if ma.eq_ignore_ascii_case("same") => format!("{name}:{arch}"),
        _ => name.to_string(),
    };
    Some((id, kib.saturating_mul(1024)))
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
    fn garbage_gives_no_packages() {
        assert!(installed(b"\xff\xfe\0 not a status file\n:::\n").is_empty());
        assert!(installed(b"").is_empty());
    }
}
