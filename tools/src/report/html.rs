//! The report as one self-contained HTML page: inline CSS and inline SVG
//! bar charts, no script, no external font or image, nothing fetched.

use std::fmt::Write as _;

use super::Report;
use super::hardening::Hardening;
use super::misses::{Misses, Status};
use super::text::{human_bytes, percent, status_words};

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;\
margin:2em auto;max-width:960px;color:#1f2328;padding:0 1em}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}\
code{font-family:ui-monospace,monospace;font-size:.9em;word-break:break-all}\
table{border-collapse:collapse;margin:1em 0}th,td{padding:.3em .8em;border-bottom:1px solid #d0d7de}\
th{text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\
svg text{font-size:12px;fill:#1f2328}.kept{fill:#2da44e}.removed{fill:#cf222e}\
.legend span{display:inline-block;width:.8em;height:.8em;margin:0 .3em 0 1em;vertical-align:middle}\
td.removed{color:#1a7f37}td.present,td.added{color:#cf222e}\
tr.fails td{background:#ffebe9}td.fails{color:#cf222e;font-weight:bold}";

/// Bar colours (also in [`STYLE`]).
const KEPT: &str = "#2da44e";
const REMOVED: &str = "#cf222e";

/// Width of the label column, the bar area and the value column of a chart.
const LABEL: u32 = 260;
const BARS: u32 = 460;
const VALUE: u32 = 220;
/// Height of one bar row.
const ROW: u32 = 24;

/// `text` with `& < > " '` escaped, for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to `max` characters with an ellipsis.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let head: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{head}…")
}

/// One bar row: a label and segments `(class, bytes)` laid end to end.
struct Bar<'a> {
    label: &'a str,
    segments: Vec<(&'static str, u64)>,
    value: String,
}

/// A horizontal bar chart, scaled to the longest bar.
fn chart(out: &mut String, title: &str, bars: &[Bar]) {
    let max = bars
        .iter()
        .map(|b| b.segments.iter().map(|s| s.1).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let height = ROW * bars.len() as u32 + 8;
    let width = LABEL + BARS + VALUE;
    let _ = writeln!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\">",
        escape(title)
    );
    for (i, bar) in bars.iter().enumerate() {
        let y = ROW * i as u32 + 4;
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\"><title>{}</title>{}</text>",
            LABEL - 8,
            y + 15,
            escape(bar.label),
            escape(&clip(bar.label, 38))
        );
        let mut x = f64::from(LABEL);
        for (class, bytes) in &bar.segments {
            let w = f64::from(BARS) * *bytes as f64 / max as f64;
            let fill = if *class == "kept" { KEPT } else { REMOVED };
            let _ = writeln!(
                out,
                "<rect class=\"{class}\" fill=\"{fill}\" x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" \
                 height=\"{}\"><title>{} {class}: {}</title></rect>",
                ROW - 6,
                escape(bar.label),
                human_bytes(*bytes)
            );
            x += w;
        }
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            LABEL + BARS + 8,
            y + 15,
            escape(&bar.value)
        );
    }
    out.push_str("</svg>\n");
}

/// The report as an HTML page.
pub fn html(report: &Report) -> String {
    let (o, m, r) = (&report.original, &report.minimized, &report.ratios);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>pare report: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>pare report</h1>\n<table>\n\
         <tr><th>original</th><td><code>{}</code></td><td><code>{}</code></td></tr>\n\
         <tr><th>minimized</th><td><code>{}</code></td><td><code>{}</code></td></tr>\n</table>\n",
        escape(&o.name),
        escape(&o.name),
        escape(&o.manifest_digest),
        escape(&m.name),
        escape(&m.manifest_digest),
    );
    out.push_str(
        "<h2>Summary</h2>\n<table>\n<tr><th></th><th>original</th><th>minimized</th><th>ratio</th></tr>\n",
    );
    let rows: [(&str, String, String, Option<f64>); 6] = [
        (
            "layers",
            o.layers.to_string(),
            m.layers.to_string(),
            r.layers,
        ),
        (
            "compressed",
            human_bytes(o.compressed_bytes),
            human_bytes(m.compressed_bytes),
            r.compressed_bytes,
        ),
        (
            "uncompressed",
            human_bytes(o.uncompressed_bytes),
            human_bytes(m.uncompressed_bytes),
            r.uncompressed_bytes,
        ),
        ("files", o.files.to_string(), m.files.to_string(), r.files),
        (
            "file bytes",
            human_bytes(o.bytes),
            human_bytes(m.bytes),
            r.bytes,
        ),
        (
            "packages",
            o.packages.to_string(),
            m.packages.to_string(),
            r.packages,
        ),
    ];
    for (label, a, b, ratio) in rows {
        let _ = writeln!(
            out,
            "<tr><th>{label}</th><td class=\"n\">{a}</td><td class=\"n\">{b}</td><td class=\"n\">{}</td></tr>",
            percent(ratio)
        );
    }
    let removed = &report.removed;
    let _ = writeln!(
        out,
        "</table>\n<p>Removed: {} files ({}), {} packages ({} installed).</p>",
        removed.files,
        human_bytes(removed.bytes),
        removed.packages,
        human_bytes(removed.package_bytes)
    );

    out.push_str(
        "<h2>Top directories by removed bytes</h2>\n<p class=\"legend\">\
         <span class=\"kept\" style=\"background:#2da44e\"></span>kept\
         <span class=\"removed\" style=\"background:#cf222e\"></span>removed</p>\n",
    );
    if report.top_directories.is_empty() {
        out.push_str("<p>No file was removed.</p>\n");
    } else {
        let bars: Vec<Bar> = report
            .top_directories
            .iter()
            .map(|d| Bar {
                label: &d.path,
                segments: vec![("kept", d.kept_bytes), ("removed", d.removed_bytes)],
                value: format!(
                    "{} removed, {} kept",
                    human_bytes(d.removed_bytes),
                    human_bytes(d.kept_bytes)
                ),
            })
            .collect();
        chart(&mut out, "kept and removed bytes by directory", &bars);
    }
    out.push_str("<h2>Top removed packages by installed size</h2>\n");
    if report.top_removed_packages.is_empty() {
        out.push_str("<p>No package was removed.</p>\n");
    } else {
        let bars: Vec<Bar> = report
            .top_removed_packages
            .iter()
            .map(|p| Bar {
                label: &p.name,
                segments: vec![("removed", p.installed_size_bytes)],
                value: human_bytes(p.installed_size_bytes),
            })
            .collect();
        chart(&mut out, "removed packages by installed size", &bars);
    }
    hardening(&mut out, &report.hardening);
    misses_section(&mut out, &report.misses);
    out.push_str("</body>\n</html>\n");
    out
}

/// The hardening section: its summary, a table per group with paths, the
/// packages a scanner still sees and those it no longer does.
fn hardening(out: &mut String, hardening: &Hardening) {
    let _ = writeln!(
        out,
        "<h2>Hardening</h2>\n<p>{}</p>",
        escape(&hardening.summary)
    );
    for group in hardening.groups.iter().filter(|g| !g.entries.is_empty()) {
        let _ = writeln!(
            out,
            "<h3>{}: {} of {} removed</h3>\n<table>\n<tr><th>path</th><th>status</th><th></th></tr>",
            escape(&group.label),
            group.removed,
            group.original
        );
        for entry in &group.entries {
            let (word, note) = status_words(entry.status, entry.used_by_workload);
            let _ = writeln!(
                out,
                "<tr><td><code>{}</code></td><td class=\"{word}\">{word}</td><td>{note}</td></tr>",
                escape(&entry.path)
            );
        }
        out.push_str("</table>\n");
    }
    let packages = &hardening.packages;
    if packages.original + packages.minimized > 0 {
        let _ = writeln!(
            out,
            "<h3>Packages a vulnerability scanner still sees: {} of {}</h3>",
            packages.minimized, packages.original
        );
        for (title, names) in [
            ("still seen", &packages.still_visible),
            ("no longer seen", &packages.removed_names),
        ] {
            let list: Vec<String> = names
                .iter()
                .map(|n| format!("<code>{}</code>", escape(n)))
                .collect();
            let _ = writeln!(
                out,
                "<details><summary>{title}: {}</summary><p>{}</p></details>",
                names.len(),
                list.join(" ")
            );
        }
    }
}

/// The misses section: its summary and a table of every miss, a missed
/// removed path highlighted as where the minimized image would fail.
fn misses_section(out: &mut String, section: &Misses) {
    let _ = writeln!(out, "<h2>Misses</h2>\n<p>{}</p>", escape(&section.summary));
    if section.none_recorded() {
        return;
    }
    let (o, m) = (&section.original, &section.minimized);
    let _ = writeln!(
        out,
        "<p>Original ({}): {} misses. Minimized image ({}): {} misses.</p>\n<table>\n\
         <tr><th>image</th><th>path</th><th>kind</th><th>count</th><th>containers</th>\
         <th>in the minimized image</th></tr>",
        escape(&o.mode),
        o.misses,
        escape(&m.mode),
        m.misses
    );
    for row in &section.entries {
        let (class, status) = match row.status {
            Status::Removed => (" class=\"fails\"", "removed: would fail"),
            other => ("", other.name()),
        };
        let _ = writeln!(
            out,
            "<tr{class}><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td>\
             <td>{}</td><td{class}>{status}</td></tr>",
            row.image.name(),
            escape(&row.path),
            escape(&row.kind),
            row.count,
            escape(&row.containers.join(", ")),
        );
    }
    out.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_long_labels_clipped() {
        assert_eq!(
            escape("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }

    use crate::report::misses::{Counts, Recorded, Row, Side};

    /// A misses section of `entries`, of which the first is removed.
    fn misses(entries: Vec<Row>) -> Misses {
        let recorded = |mode: &str, misses| Recorded {
            mode: mode.into(),
            files: 1,
            misses,
            source_image: None,
            lacking: 0,
        };
        Misses {
            summary: if entries.is_empty() {
                crate::report::misses::NONE_RECORDED.into()
            } else {
                "1 miss names a removed path: the minimized image would fail there".into()
            },
            original: recorded("audit", 1),
            minimized: recorded("learn", 1),
            counts: Counts {
                total: entries.len(),
                kept: entries.len().saturating_sub(1),
                removed: entries.len().min(1),
                absent: 0,
            },
            entries,
        }
    }

    #[test]
    fn without_misses_the_section_says_none_are_recorded() {
        let mut none = misses(Vec::new());
        none.original.files = 0;
        none.minimized.files = 0;
        let mut out = String::new();
        misses_section(&mut out, &none);
        assert_eq!(
            out,
            "<h2>Misses</h2>\n<p>no misses recorded: run the image in audit mode to see what \
             the profile lacks</p>\n"
        );
    }

    #[test]
    fn the_page_is_self_contained_with_two_charts_and_the_hardening() {
        use crate::report::hardening::{Entry, Group, ScannerPackages, Status};
        use crate::report::{DirectoryRow, ImageSummary, PackageRow, Ratios, Removed};
        let image = |name: &str| ImageSummary {
            name: name.into(),
            manifest_digest: "sha256:00".into(),
            layers: 1,
            compressed_bytes: 10,
            uncompressed_bytes: 20,
            files: 3,
            bytes: 30,
            packages: 2,
        };
        let report = Report {
            original: image("app:<v1>"),
            minimized: image("app:v1-pare"),
            ratios: Ratios {
                layers: Some(1.0),
                compressed_bytes: Some(1.0),
                uncompressed_bytes: None,
                files: Some(0.5),
                bytes: Some(0.25),
                packages: Some(0.5),
            },
            removed: Removed {
                files: 1,
                bytes: 2048,
                packages: 1,
                package_bytes: 4096,
            },
            top_directories: vec![DirectoryRow {
                path: "/usr/share/doc".into(),
                removed_files: 1,
                removed_bytes: 2048,
                kept_files: 1,
                kept_bytes: 1024,
            }],
            top_removed_packages: vec![PackageRow {
                name: "perl-base".into(),
                installed_size_bytes: 4096,
            }],
            hardening: Hardening {
                summary: "removed: 1 of 2 shells, 1 of 2 packages".into(),
                groups: vec![Group {
                    category: "shells".into(),
                    label: "shells".into(),
                    original: 2,
                    minimized: 1,
                    removed: 1,
                    entries: vec![
                        Entry {
                            path: "/usr/bin/<bash>".into(),
                            status: Status::Removed,
                            used_by_workload: false,
                        },
                        Entry {
                            path: "/usr/bin/sh".into(),
                            status: Status::Present,
                            used_by_workload: false,
                        },
                    ],
                }],
                packages: ScannerPackages {
                    original: 2,
                    minimized: 1,
                    removed: 1,
                    still_visible: vec!["libc6".into()],
                    removed_names: vec!["perl-base".into()],
                },
            },
            misses: misses(vec![
                Row {
                    image: Side::Original,
                    path: "/app/<b>".into(),
                    kind: "read".into(),
                    first_seen_ns: 1,
                    count: 2,
                    containers: vec!["web-1".into(), "web-2".into()],
                    status: super::Status::Removed,
                },
                Row {
                    image: Side::Minimized,
                    path: "/app/a".into(),
                    kind: "lookup".into(),
                    first_seen_ns: 2,
                    count: 1,
                    containers: Vec::new(),
                    status: super::Status::Kept,
                },
            ]),
        };
        let page = html(&report);
        assert_eq!(page.matches("<svg").count(), 2);
        assert!(page.contains("app:&lt;v1&gt;") && !page.contains("app:<v1>"));
        assert!(page.contains("perl-base") && page.contains("/usr/share/doc"));
        for needle in [
            "<h2>Hardening</h2>\n<p>removed: 1 of 2 shells, 1 of 2 packages</p>",
            "<h3>shells: 1 of 2 removed</h3>",
            "<tr><td><code>/usr/bin/&lt;bash&gt;</code></td><td class=\"removed\">removed</td><td></td></tr>",
            "<tr><td><code>/usr/bin/sh</code></td><td class=\"present\">present</td><td></td></tr>",
            "<details><summary>still seen: 1</summary><p><code>libc6</code></p></details>",
            "<details><summary>no longer seen: 1</summary><p><code>perl-base</code></p></details>",
            "<h2>Misses</h2>\n<p>1 miss names a removed path: the minimized image would fail there</p>",
            "<p>Original (audit): 1 misses. Minimized image (learn): 1 misses.</p>",
            "<tr class=\"fails\"><td>original</td><td><code>/app/&lt;b&gt;</code></td><td>read</td>\
             <td class=\"n\">2</td><td>web-1, web-2</td><td class=\"fails\">removed: would fail</td></tr>",
            "<tr><td>minimized</td><td><code>/app/a</code></td><td>lookup</td><td class=\"n\">1</td>\
             <td></td><td>kept</td></tr>",
        ] {
            assert!(page.contains(needle), "{needle}\n{page}");
        }
        assert!(
            page.contains("width=\"460.0\""),
            "the longest bar fills the area"
        );
        for banned in ["<script", "src=", "<link", "url("] {
            assert!(!page.contains(banned), "{banned}");
        }
    }
}
