//! Exec closure for `pare compact --include-exec PATH`: the program, the
//! symlinks met on the way, its ELF interpreter and every shared library the
//! image's dynamic loader would map, found the way glibc's `ld.so` finds them;
//! for a `#!` script, the closure of its interpreter.
//!
//! A `DT_NEEDED` name without `/` is looked up as `_dl_map_object` does:
//! 1. an object already loaded under that name or soname (the interpreter too);
//! 2. unless the requesting object has `DT_RUNPATH`: the `DT_RPATH` of the
//!    requester, then of the object that loaded it, and so on up to the program
//!    (an object with `DT_RUNPATH` has no effective `DT_RPATH`);
//! 3. the requester's `DT_RUNPATH`;
//! 4. unless the requester is `DF_1_NODEFLIB`: the directories named by the
//!    image's `/etc/ld.so.conf` (with its `include` globs) and by
//!    `/etc/ld.so.conf.d/*.conf` (what `ldconfig` puts in `/etc/ld.so.cache`),
//!    then the default directories (multiarch, `/lib`, `/usr/lib`, and
//!    `/lib64`, `/usr/lib64` for 64-bit objects).
//!
//! `$ORIGIN`, `$PLATFORM` and `$LIB` are expanded in search paths. Candidates
//! of another ELF class, byte order or machine are skipped, as `ld.so` does.
//! When the search reached step 4 and the image has `/etc/ld.so.cache`, the
//! cache joins the closure (`ld.so` reads it at every such start).
//! Not modelled: the environment (`LD_LIBRARY_PATH`, `LD_PRELOAD`),
//! `glibc-hwcaps` subdirectories (`ld.so` falls back to the base directory,
//! which is kept) and libraries opened with `dlopen`.

use std::collections::HashSet;
use std::fmt;
use std::io;

use pare_fs::layers::Kind;
use pare_fs::profile::ImagePath;

use super::tree::{Followed, ImageTree};
use image::{entry, follow_str, head, regular_file};

mod image;
mod ldso_conf;
mod object;
mod search;
mod shebang;
#[cfg(test)]
mod tests;

pub use shebang::MAX_SCRIPT_DEPTH;

/// What a program needs to be executed, in discovery order, without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecClosure {
    /// Symlinks met and files reached: program, interpreter, libraries.
    pub paths: Vec<ImagePath>,
    /// Dependencies that could not be found in the image.
    pub unresolved: Vec<Unresolved>,
}

/// A dependency (library, ELF interpreter or `#!` interpreter) missing from the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// The name or path asked for (`libssl.so.3`, `/lib64/ld-linux-x86-64.so.2`).
    pub name: String,
    /// The object or script that asked for it.
    pub needed_by: ImagePath,
}

impl fmt::Display for Unresolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (needed by {})", self.name, self.needed_by)
    }
}

/// Why an exec closure could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The program is absent or a dangling or looping symlink.
    #[error("{path} is not in the image (or is a dangling symlink)")]
    NotFound {
        /// The path asked for.
        path: ImagePath,
    },
    /// The program resolves to something other than a regular file.
    #[error("{path} is not a regular file")]
    NotAFile {
        /// Where the path led.
        path: ImagePath,
    },
    /// A file starts like an ELF object but cannot be parsed as one.
    #[error("{path}: malformed ELF: {reason}")]
    Malformed {
        /// The file.
        path: ImagePath,
        /// What the parser said.
        reason: String,
    },
    /// Too many `#!` interpreters chained.
    #[error("{path}: more than {MAX_SCRIPT_DEPTH} nested #! interpreters")]
    TooDeep {
        /// The script where the chain became too long.
        path: ImagePath,
    },
    /// The image could not be read.
    #[error("reading {path} in the image: {source}")]
    Io {
        /// The path being read.
        path: String,
        /// What went wrong.
        source: io::Error,
    },
    /// Some dependencies are missing; the closure of everything else is kept
    /// here, so a caller may downgrade this to a warning.
    #[error("cannot find {}", list(&.0.unresolved))]
    Unresolved(Box<ExecClosure>),
}

fn list(unresolved: &[Unresolved]) -> String {
    let shown: Vec<String> = unresolved.iter().map(Unresolved::to_string).collect();
    shown.join(", ")
}

/// Everything needed to exec `path` inside the image; a missing dependency is
/// an error ([`ElfError::Unresolved`], which carries the rest of the closure).
pub fn exec_closure(tree: &ImageTree, path: &ImagePath) -> Result<Vec<ImagePath>, ElfError> {
    let closure = exec_closure_lenient(tree, path)?;
    if closure.unresolved.is_empty() {
        Ok(closure.paths)
    } else {
        Err(ElfError::Unresolved(Box::new(closure)))
    }
}

/// As [`exec_closure`], but missing dependencies are listed instead of failing.
pub fn exec_closure_lenient(tree: &ImageTree, path: &ImagePath) -> Result<ExecClosure, ElfError> {
    let mut walk = Walk {
        tree,
        closure: ExecClosure::default(),
        seen: HashSet::new(),
        programs: HashSet::new(),
        conf: None,
        cache_used: false,
    };
    let followed = follow_str(tree, &ImagePath::root(), path.as_bytes())?
        .ok_or_else(|| ElfError::NotFound { path: path.clone() })?;
    walk.exec(followed, 0)?;
    if walk.cache_used {
        if let Some(cache) = regular_file(tree, b"/etc/ld.so.cache")? {
            walk.add(&cache);
        }
    }
    Ok(walk.closure)
}

struct Walk<'t> {
    tree: &'t ImageTree,
    closure: ExecClosure,
    seen: HashSet<ImagePath>,
    /// Programs (resolved) whose closure was taken, against `#!` cycles.
    programs: HashSet<ImagePath>,
    conf: Option<Vec<Vec<u8>>>,
    cache_used: bool,
}

impl Walk<'_> {
    fn add(&mut self, followed: &Followed) {
        for p in followed.links.iter().chain([&followed.path]) {
            if self.seen.insert(p.clone()) {
                self.closure.paths.push(p.clone());
            }
        }
    }

    fn unresolved(&mut self, name: &[u8], needed_by: &ImagePath) {
        self.closure.unresolved.push(Unresolved {
            name: String::from_utf8_lossy(name).into_owned(),
            needed_by: needed_by.clone(),
        });
    }

    /// Adds the closure of the program `followed` leads to.
    fn exec(&mut self, followed: Followed, depth: usize) -> Result<(), ElfError> {
        let path = followed.path.clone();
        match entry(self.tree, &path)? {
            Some(r) if r.meta().kind == Kind::File => {}
            _ => return Err(ElfError::NotAFile { path }),
        }
        self.add(&followed);
        if !self.programs.insert(path.clone()) {
            return Ok(());
        }
        let head = head(self.tree, &path, 256)?;
        if head.starts_with(b"\x7fELF") {
            self.program(&path)
        } else if let Some(line) = head.strip_prefix(b"#!") {
            self.script(&path, line, depth)
        } else {
            Ok(())
        }
    }
}
