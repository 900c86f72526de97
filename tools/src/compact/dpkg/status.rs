//! The dpkg status file, `/var/lib/dpkg/status`: paragraphs of `Field:
//! value` lines separated by blank lines, one [`Package`] each. Compaction
//! reads it strictly ([`parse`]: a malformed line or a paragraph without
//! `Package` or `Status` is an error naming the line); the report only counts
//! and reads it leniently ([`parse_lenient`]).

use pare_fs::profile::ImagePath;

use super::{DpkgError, Package};

/// A status file split into packages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Bytes before the first paragraph (blank lines), kept as they are.
    pub prefix: Vec<u8>,
    /// Every paragraph, in order.
    pub packages: Vec<Package>,
}

/// The status file `bytes` (read from `path`): the first malformed line or
/// paragraph without `Package` or `Status` is an error.
pub fn parse(path: &ImagePath, bytes: &[u8]) -> Result<Status, DpkgError> {
    let (prefix, paragraphs) = split(bytes);
    let mut packages = Vec::with_capacity(paragraphs.len());
    for paragraph in paragraphs {
        if let Some((line, reason)) = paragraph.malformed {
            return Err(DpkgError::Malformed {
                path: path.clone(),
                line,
                reason: reason.to_string(),
            });
        }
        let line = paragraph.line;
        let package = paragraph
            .package()
            .map_err(|field| DpkgError::MissingField {
                path: path.clone(),
                line,
                field,
            })?;
        packages.push(package);
    }
    Ok(Status { prefix, packages })
}

/// The packages of the status file `bytes`, for counting: lines that are not
/// `Field: value` are skipped, and so are paragraphs without `Package` or
/// `Status`.
pub fn parse_lenient(bytes: &[u8]) -> Vec<Package> {
    let (_, paragraphs) = split(bytes);
    paragraphs
        .into_iter()
        .filter_map(|p| p.package().ok())
        .collect()
}

/// One paragraph, its fields read.
struct Paragraph {
    /// 1-based line of its first line.
    line: usize,
    /// Its exact bytes followed by the blank lines after it.
    text: Vec<u8>,
    /// `(name, value)` of each field; continuation lines are not kept.
    fields: Vec<(String, String)>,
    /// The first line that is not `Field: value`, and why.
    malformed: Option<(usize, &'static str)>,
}

impl Paragraph {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The package this paragraph describes, or the required field it lacks.
    fn package(self) -> Result<Package, &'static str> {
        let name = self.field("Package").ok_or("Package")?;
        let status = self.field("Status").ok_or("Status")?;
        let state = status.split_whitespace().last().unwrap_or_default();
        Ok(Package {
            name: name.to_string(),
            arch: self.field("Architecture").map(str::to_string),
            multi_arch_same: self
                .field("Multi-Arch")
                .is_some_and(|v| v.eq_ignore_ascii_case("same")),
            installed: matches!(state, "installed" | "triggers-awaited" | "triggers-pending"),
            installed_size_kib: self.field("Installed-Size").and_then(|v| v.parse().ok()),
            line: self.line,
            list: None,
            md5sums: None,
            files: Vec::new(),
            text: self.text,
        })
    }

    /// Reads the fields of `text`, the paragraph without the blank lines
    /// after it; a malformed line is skipped and the first one recorded.
    fn read_fields(&mut self, text: &[u8]) {
        for (i, line) in text.split(|b| *b == b'\n').enumerate() {
            let line_no = self.line + i;
            let mut bad = |reason| {
                self.malformed.get_or_insert((line_no, reason));
            };
            if line.is_empty() {
                continue; // the final newline
            }
            if line.starts_with(b" ") || line.starts_with(b"\t") {
                if self.fields.is_empty() {
                    bad("continuation line before any field");
                }
                continue; // multi-line values are not needed here
            }
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                bad("expected `Field: value`");
                continue;
            };
            let name = String::from_utf8_lossy(&line[..colon]).into_owned();
            if name.is_empty() || name.contains(char::is_whitespace) {
                bad("expected `Field: value`");
                continue;
            }
            let value = String::from_utf8_lossy(&line[colon + 1..])
                .trim()
                .to_string();
            self.fields.push((name, value));
        }
    }
}

/// Splits `bytes` into the prefix before the first paragraph and the
/// paragraphs, each with the blank lines after it.
fn split(bytes: &[u8]) -> (Vec<u8>, Vec<Paragraph>) {
    // (start, end of text, first line) of each paragraph.
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    let mut open: Option<(usize, usize)> = None;
    let mut at = 0;
    for (i, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let blank = line.iter().all(|b| b" \t\r\n".contains(b));
        match (blank, open) {
            (true, Some((start, first))) => {
                spans.push((start, at, first));
                open = None;
            }
            (false, None) => open = Some((at, i + 1)),
            _ => {}
        }
        at += line.len();
    }
    if let Some((start, first)) = open {
        spans.push((start, bytes.len(), first));
    }
    let prefix = bytes[..spans.first().map_or(bytes.len(), |s| s.0)].to_vec();
    let paragraphs = spans
        .iter()
        .enumerate()
        .map(|(n, &(start, end, first))| {
            let chunk_end = spans.get(n + 1).map_or(bytes.len(), |s| s.0);
            let mut paragraph = Paragraph {
                line: first,
                text: bytes[start..chunk_end].to_vec(),
                fields: Vec::new(),
                malformed: None,
            };
            paragraph.read_fields(&bytes[start..end]);
            paragraph
        })
        .collect();
    (prefix, paragraphs)
}
