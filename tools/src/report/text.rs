//! The report as plain-text tables, for a terminal.

use std::fmt::Write as _;

use super::Report;
use super::hardening::{Hardening, Status};
use super::misses::{self, Misses};

/// `bytes` in binary units with one decimal (`1.5 MiB`); plain bytes below 1 KiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A ratio as a percentage (`12.5%`), or `-` when undefined.
pub(super) fn percent(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", 100.0 * r))
}

/// Columns padded to their widest cell; the first column left-aligned, the
/// others right-aligned.
fn table(out: &mut String, rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c == 0 {
                line.push_str("  ");
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad + 3));
                line.push_str(cell);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn cells<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

/// The report as text: a summary table, then the top directories and
/// packages removed.
pub fn text(report: &Report) -> String {
    let (o, m, r) = (&report.original, &report.minimized, &report.ratios);
    let mut out = String::new();
    let _ = writeln!(out, "original:  {} ({})", o.name, o.manifest_digest);
    let _ = writeln!(out, "minimized: {} ({})", m.name, m.manifest_digest);
    let _ = writeln!(out);
    let count = |a: u64, b: u64, ratio| vec![a.to_string(), b.to_string(), percent(ratio)];
    let size = |a: u64, b: u64, ratio| vec![human_bytes(a), human_bytes(b), percent(ratio)];
    let mut rows = vec![cells(["", "original", "minimized", "ratio"])];
    for (label, mut figures) in [
        ("layers", count(o.layers, m.layers, r.layers)),
        (
            "compressed",
            size(o.compressed_bytes, m.compressed_bytes, r.compressed_bytes),
        ),
        (
            "uncompressed",
            size(
                o.uncompressed_bytes,
                m.uncompressed_bytes,
                r.uncompressed_bytes,
            ),
        ),
        ("files", count(o.files, m.files, r.files)),
        ("file bytes", size(o.bytes, m.bytes, r.bytes)),
        ("packages", count(o.packages, m.packages, r.packages)),
    ] {
        figures.insert(0, label.to_string());
        rows.push(figures);
    }
    table(&mut out, &rows);
    let removed = &report.removed;
    let _ = writeln!(
        out,
        "\nremoved: {} files ({}), {} packages ({} installed)",
        removed.files,
        human_bytes(removed.bytes),
        removed.packages,
        human_bytes(removed.package_bytes)
    );
    if !report.top_directories.is_empty() {
        let _ = writeln!(out, "\ntop directories by removed bytes:");
        let mut rows = vec![cells(["directory", "removed", "files", "kept", "files"])];
        rows.extend(report.top_directories.iter().map(|d| {
            vec![
                d.path.clone(),
                human_bytes(d.removed_bytes),
                d.removed_files.to_string(),
                human_bytes(d.kept_bytes),
                d.kept_files.to_string(),
            ]
        }));
        table(&mut out, &rows);
    }
    if !report.top_removed_packages.is_empty() {
        let _ = writeln!(out, "\ntop removed packages by installed size:");
        let mut rows = vec![cells(["package", "installed size"])];
        rows.extend(
            report
                .top_removed_packages
                .iter()
                .map(|p| vec![p.name.clone(), human_bytes(p.installed_size_bytes)]),
        );
        table(&mut out, &rows);
    }
    hardening(&mut out, &report.hardening);
    misses_section(&mut out, &report.misses);
    out
}

/// A path's status and note, as text and HTML show them.
pub(super) fn status_words(status: Status, used_by_workload: bool) -> (&'static str, &'static str) {
    let word = match status {
        Status::Present => "present",
        Status::Removed => "removed",
        Status::Added => "added",
    };
    (
        word,
        if used_by_workload {
            "used by the workload"
        } else {
            ""
        },
    )
}

/// The hardening section: its summary, each group's paths, the packages a
/// scanner still sees.
fn hardening(out: &mut String, hardening: &Hardening) {
    let _ = writeln!(
        out,
        "
hardening: {}",
        hardening.summary
    );
    for group in hardening.groups.iter().filter(|g| !g.entries.is_empty()) {
        let _ = writeln!(
            out,
            "
{}: {} of {} removed",
            group.label, group.removed, group.original
        );
        for entry in &group.entries {
            let (word, note) = status_words(entry.status, entry.used_by_workload);
            let line = format!("  {word:<8} {}  {note}", entry.path);
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    let packages = &hardening.packages;
    if packages.original + packages.minimized > 0 {
        let _ = writeln!(
            out,
            "
packages a vulnerability scanner still sees: {} of {} ({} removed)",
            packages.minimized, packages.original, packages.removed
        );
        for name in &packages.still_visible {
            let _ = writeln!(out, "  {name}");
        }
    }
}

/// What marks a miss of a removed path, in text.
pub const REMOVED_MARK: &str = "!";

/// The misses section: what was recorded for each image, one line per miss
/// (a removed path marked with [`REMOVED_MARK`]), then the summary.
fn misses_section(out: &mut String, section: &Misses) {
    if section.none_recorded() {
        let _ = writeln!(out, "\nmisses: {}", section.summary);
        return;
    }
    let (o, m) = (&section.original, &section.minimized);
    let _ = writeln!(
        out,
        "\nmisses: {} of the original ({}), {} of the minimized image ({})",
        o.misses, o.mode, m.misses, m.mode
    );
    for row in &section.entries {
        let mark = if row.status == misses::Status::Removed {
            REMOVED_MARK
        } else {
            " "
        };
        let line = format!(
            "{mark} {:<9} {:<8} {:>6}x  {:<7}  {}  {}",
            row.image.name(),
            row.kind,
            row.count,
            row.status.name(),
            row.path,
            row.containers.join(",")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let _ = writeln!(out, "{}", section.summary);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (5 << 20, "5.0 MiB"),
            (u64::MAX, "16.0 EiB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(human_bytes(bytes), want);
        }
        assert_eq!(percent(None), "-");
        assert_eq!(percent(Some(0.125)), "12.5%");
    }

    #[test]
    fn the_hardening_lists_each_path_and_the_packages_still_seen() {
        use crate::report::hardening::{Entry, Group, ScannerPackages};
        let entry = |path: &str, status, used_by_workload| Entry {
            path: path.into(),
            status,
            used_by_workload,
        };
        let group = |category: &str, label: &str, removed, entries: Vec<Entry>| Group {
            category: category.into(),
            label: label.into(),
            original: entries.iter().filter(|e| e.status != Status::Added).count() as u64,
            minimized: entries
                .iter()
                .filter(|e| e.status != Status::Removed)
                .count() as u64,
            removed,
            entries,
        };
        let hardening_section = Hardening {
            summary: "removed: 1 of 1 shells, 1 of 2 compilers and interpreters, 1 of 2 packages"
                .into(),
            groups: vec![
                group(
                    "shells",
                    "shells",
                    1,
                    vec![entry("/usr/bin/bash", Status::Removed, false)],
                ),
                group("capabilities", "files with capabilities", 0, vec![]),
                group(
                    "compilers_interpreters",
                    "compilers and interpreters",
                    1,
                    vec![
                        entry("/usr/bin/perl", Status::Removed, false),
                        entry("/usr/bin/python3", Status::Present, true),
                        entry("/usr/local/bin/node", Status::Added, true),
                    ],
                ),
            ],
            packages: ScannerPackages {
                original: 2,
                minimized: 1,
                removed: 1,
                still_visible: vec!["libc6".into()],
                removed_names: vec!["perl".into()],
            },
        };
        let mut out = String::new();
        hardening(&mut out, &hardening_section);
        let want = "
hardening: removed: 1 of 1 shells, 1 of 2 compilers and interpreters, 1 of 2 packages

shells: 1 of 1 removed
  removed  /usr/bin/bash

compilers and interpreters: 1 of 2 removed
  removed  /usr/bin/perl
  present  /usr/bin/python3  used by the workload
  added    /usr/local/bin/node  used by the workload

packages a vulnerability scanner still sees: 1 of 2 (1 removed)
  libc6
";
        assert_eq!(out, want);
    }

    #[test]
    fn the_misses_flag_removed_paths_and_say_when_none_are_recorded() {
        use crate::report::misses::{Counts, Recorded, Row, Side, Status};
        let recorded = |mode: &str, misses| Recorded {
            mode: mode.into(),
            files: misses,
            misses,
            source_image: None,
            lacking: 0,
        };
        let row = |path: &str, kind: &str, count, containers: &[&str], status| Row {
            image: Side::Original,
            path: path.into(),
            kind: kind.into(),
            first_seen_ns: 1,
            count,
            containers: containers.iter().map(|c| c.to_string()).collect(),
            status,
        };
        let section = Misses {
            summary: "1 miss names a removed path: the minimized image would fail there".into(),
            original: recorded("audit", 2),
            minimized: recorded("learn", 0),
            counts: Counts {
                total: 2,
                kept: 1,
                removed: 1,
                absent: 0,
            },
            entries: vec![
                row("/app/b", "read", 2, &["web-1", "web-2"], Status::Removed),
                row("/app/a", "lookup", 1, &[], Status::Kept),
            ],
        };
        let mut out = String::new();
        misses_section(&mut out, &section);
        let want = "
misses: 2 of the original (audit), 0 of the minimized image (learn)
! original  read          2x  removed  /app/b  web-1,web-2
  original  lookup        1x  kept     /app/a
1 miss names a removed path: the minimized image would fail there
";
        assert_eq!(out, want);

        let none = Misses {
            summary: misses::NONE_RECORDED.into(),
            original: recorded("learn", 0),
            minimized: recorded("learn", 0),
            entries: Vec::new(),
            ..section
        };
        let mut out = String::new();
        misses_section(&mut out, &none);
        assert_eq!(
            out,
            "\nmisses: no misses recorded: run the image in audit mode to see what the profile lacks\n"
        );
    }
}
