//! `#!` scripts: the interpreter line split as the kernel splits it, and the
//! program named by `#!/usr/bin/env NAME`.

use pare_fs::profile::ImagePath;

use super::image::{join, regular_file, trim};
use super::{ElfError, Walk};
use crate::compact::tree::Followed;

/// Most `#!` interpreters chained before exec fails (the kernel allows 4 rewrites).
pub const MAX_SCRIPT_DEPTH: usize = 5;

/// Directories searched for the program named by `#!/usr/bin/env NAME`
/// (the image's `PATH` is not known here; this is the usual default).
const ENV_PATH: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

impl Walk<'_> {
    /// `#!INTERP [ARG]`: as the kernel splits it (spaces and tabs only).
    pub(super) fn script(
        &mut self,
        path: &ImagePath,
        line: &[u8],
        depth: usize,
    ) -> Result<(), ElfError> {
        if depth + 1 >= MAX_SCRIPT_DEPTH {
            return Err(ElfError::TooDeep { path: path.clone() });
        }
        let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
        let blank = |b: &u8| *b == b' ' || *b == b'\t';
        let line = trim(line, blank);
        let end = line.iter().position(blank).unwrap_or(line.len());
        let (interp, arg) = (&line[..end], trim(&line[end..], blank));
        if interp.is_empty() {
            return Ok(()); // the kernel refuses it; nothing more to keep
        }
        let Some(found) = regular_file(self.tree, interp)? else {
            self.unresolved(interp, path);
            return Ok(());
        };
        let is_env = found.path.as_bytes().ends_with(b"/env");
        self.exec(found, depth + 1)?;
        if is_env && !arg.is_empty() && !arg.starts_with(b"-") {
            let found = if arg.contains(&b'/') {
                regular_file(self.tree, arg)?
            } else {
                self.first_file(ENV_PATH.iter().map(|d| join(d.as_bytes(), arg)))?
            };
            match found {
                Some(f) => self.exec(f, depth + 1)?,
                None => self.unresolved(arg, path),
            }
        }
        Ok(())
    }

    fn first_file(
        &self,
        candidates: impl Iterator<Item = Vec<u8>>,
    ) -> Result<Option<Followed>, ElfError> {
        for c in candidates {
            if let Some(f) = regular_file(self.tree, &c)? {
                return Ok(Some(f));
            }
        }
        Ok(None)
    }
}
