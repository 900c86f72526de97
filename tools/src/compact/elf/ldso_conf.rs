//! The image's `ld.so.conf`, as `ldconfig` reads it to build
//! `/etc/ld.so.cache`: directories, `include` globs (matched with `globset`
//! as glob(3) would), `hwcap` lines ignored.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;

use pare_fs::layers::Resolved;
use pare_fs::profile::ImagePath;

use globset::{GlobBuilder, GlobMatcher};

use super::ElfError;
use super::image::{entry, follow_str, io_err, regular_file, trim};
use crate::compact::tree::ImageTree;

/// Most nested `include`s followed in `ld.so.conf`.
const MAX_CONF_DEPTH: usize = 16;

/// Library directories named by `/etc/ld.so.conf` (following `include`s)
/// and `/etc/ld.so.conf.d/*.conf`, in order, without duplicates.
pub(super) fn conf_dirs(tree: &ImageTree) -> Result<Vec<Vec<u8>>, ElfError> {
    let root = ImagePath::root();
    let mut dirs = Vec::new();
    let mut files = HashSet::new();
    let mut confs: Vec<ImagePath> = regular_file(tree, b"/etc/ld.so.conf")?
        .map(|f| f.path)
        .into_iter()
        .collect();
    confs.extend(glob(tree, &root, b"/etc/ld.so.conf.d/*.conf")?);
    for conf in confs {
        parse_conf(tree, &conf, &mut dirs, &mut files, 0)?;
    }
    let mut seen = HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    Ok(dirs)
}

/// One `ld.so.conf` file, as `ldconfig` reads it: `#` comments, `include
/// GLOB...` (relative to the file's directory), `hwcap` lines ignored, any
/// other line a directory.
fn parse_conf(
    tree: &ImageTree,
    conf: &ImagePath,
    dirs: &mut Vec<Vec<u8>>,
    files: &mut HashSet<ImagePath>,
    depth: usize,
) -> Result<(), ElfError> {
    if depth > MAX_CONF_DEPTH || !files.insert(conf.clone()) {
        return Ok(());
    }
    let text = match tree.read(conf) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(%conf, error = %e, "skipping unreadable ld.so.conf file");
            return Ok(());
        }
    };
    let blank = |b: &u8| b.is_ascii_whitespace();
    let base = conf.parent().unwrap_or_else(ImagePath::root);
    for line in text.split(|b| *b == b'\n') {
        let line = line.split(|b| *b == b'#').next().unwrap_or_default();
        let line = trim(line, blank);
        let keyword = |k: &[u8]| line.starts_with(k) && line.get(k.len()).is_some_and(blank);
        if line.is_empty() || keyword(b"hwcap") {
            continue;
        }
        if keyword(b"include") {
            for pattern in line[7..].split(blank).filter(|p| !p.is_empty()) {
                for file in glob(tree, &base, pattern)? {
                    parse_conf(tree, &file, dirs, files, depth + 1)?;
                }
            }
        } else {
            dirs.push(line.to_vec());
        }
    }
    Ok(())
}

/// Paths matching the glob `pattern` (`*`, `?`, `[...]` in any component;
/// relative to the resolved directory `base`), in sorted order, symlinks
/// resolved. A leading `.` is matched only explicitly, as glob(3) does.
fn glob(tree: &ImageTree, base: &ImagePath, pattern: &[u8]) -> Result<Vec<ImagePath>, ElfError> {
    let shown = || String::from_utf8_lossy(pattern).into_owned();
    let mut at = vec![if pattern.starts_with(b"/") {
        ImagePath::root()
    } else {
        base.clone()
    }];
    for comp in pattern.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
        let mut next = Vec::new();
        for dir in &at {
            if !comp.iter().any(|b| b"*?[".contains(b)) {
                if let Some(f) = follow_str(tree, dir, comp)? {
                    next.push(f.path);
                }
                continue;
            }
            if !matches!(entry(tree, dir)?, Some(Resolved::Dir { .. })) {
                continue;
            }
            let mut names: Vec<_> = tree
                .list(dir)
                .map_err(io_err(shown()))?
                .into_iter()
                .map(|(name, _)| name)
                .collect();
            names.sort();
            let Some(matcher) = matcher(comp) else {
                continue;
            };
            for name in names {
                let hidden = name.as_bytes().starts_with(b".") && !comp.starts_with(b".");
                if hidden || !matcher.is_match(&name) {
                    continue;
                }
                let name = name.as_bytes();
                if let Some(f) = follow_str(tree, dir, name)? {
                    next.push(f.path);
                }
            }
        }
        at = next;
    }
    Ok(at)
}

/// The matcher of one glob component, with glob(3)'s rules (as `ldconfig`
/// calls it: no flags): `*`, `?`, `[...]`, `\\` escapes, no `{a,b}`
/// alternation. `None` (matching nothing, with a warning) when it is not
/// UTF-8 or not a valid glob.
pub(super) fn matcher(comp: &[u8]) -> Option<GlobMatcher> {
    let built = std::str::from_utf8(comp)
        .map_err(|e| e.to_string())
        .and_then(|pattern| {
            GlobBuilder::new(&without_alternation(pattern))
                .literal_separator(true)
                .backslash_escape(true)
                .allow_unclosed_class(true)
                .build()
                .map_err(|e| e.to_string())
        });
    match built {
        Ok(glob) => Some(glob.compile_matcher()),
        Err(error) => {
            let pattern = String::from_utf8_lossy(comp);
            tracing::warn!(%pattern, %error, "skipping an ld.so.conf include glob");
            None
        }
    }
}

/// `pattern` with `{` and `}` outside bracket expressions escaped, so that
/// `globset` matches them literally as glob(3) does.
fn without_alternation(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(c) = rest.chars().next() {
        let len = match c {
            '\\' => rest[1..].chars().next().map_or(1, |e| 1 + e.len_utf8()),
            '[' => class_len(rest).unwrap_or(1),
            _ => c.len_utf8(),
        };
        if matches!(c, '{' | '}') {
            out.push('\\');
        }
        out.push_str(&rest[..len]);
        rest = &rest[len..];
    }
    out
}

/// Length of the bracket expression `[...]` at the start of `s`, when it is
/// closed (a `]` right after `[`, `[!` or `[^` belongs to the set).
fn class_len(s: &str) -> Option<usize> {
    let body = s.strip_prefix('[')?;
    let skip = usize::from(body.starts_with(['!', '^']));
    let skip = skip + usize::from(body[skip..].starts_with(']'));
    body[skip..].find(']').map(|end| 1 + skip + end + 1)
}
