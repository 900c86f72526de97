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

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

use goblin::elf::header::{
    EM_386, EM_AARCH64, EM_ARM, EM_LOONGARCH, EM_MIPS, EM_PPC, EM_PPC64, EM_RISCV, EM_S390,
    EM_X86_64,
};
use pare_fs::layers::{Kind, Resolved};
use pare_fs::profile::ImagePath;

use super::tree::{Followed, ImageTree};

#[cfg(test)]
mod tests;

/// Most `#!` interpreters chained before exec fails (the kernel allows 4 rewrites).
pub const MAX_SCRIPT_DEPTH: usize = 5;

/// Most nested `include`s followed in `ld.so.conf`.
const MAX_CONF_DEPTH: usize = 16;

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

/// ELF identity: objects of another class, byte order or machine never mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Abi {
    class: u8,
    data: u8,
    machine: u16,
}

/// One loaded object, as `ld.so` keeps it for later searches.
struct Object {
    path: ImagePath,
    /// Effective `DT_RPATH` directories, expanded (empty when it has `DT_RUNPATH`).
    rpath: Vec<Vec<u8>>,
    /// `DT_RUNPATH` directories, expanded.
    runpath: Option<Vec<Vec<u8>>>,
    nodeflib: bool,
    needed: Vec<String>,
    soname: Option<String>,
    interpreter: Option<String>,
    /// Index of the object whose `DT_NEEDED` loaded this one.
    loader: Option<usize>,
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

    /// `#!INTERP [ARG]`: as the kernel splits it (spaces and tabs only).
    fn script(&mut self, path: &ImagePath, line: &[u8], depth: usize) -> Result<(), ElfError> {
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

    /// An ELF program: its interpreter, then its libraries breadth first.
    fn program(&mut self, path: &ImagePath) -> Result<(), ElfError> {
        let bytes = read(self.tree, path)?;
        let abi = abi(&bytes).ok_or_else(|| malformed(path, "truncated ELF header"))?;
        // The program's $ORIGIN is its real directory (/proc/self/exe).
        let origin = parent_bytes(path.as_bytes());
        let mut objects = vec![parse_object(path, &bytes, origin, abi, None)?];
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut by_path: HashMap<ImagePath, usize> = HashMap::from([(path.clone(), 0)]);
        if let Some(s) = &objects[0].soname {
            by_name.insert(s.clone(), 0);
        }
        if let Some(interp) = objects[0].interpreter.clone() {
            match regular_file(self.tree, interp.as_bytes())? {
                Some(f) => {
                    self.add(&f);
                    self.load(&f, parent_bytes(interp.as_bytes()), 0, abi, &mut objects)?;
                    let i = objects.len() - 1;
                    by_path.entry(f.path).or_insert(i);
                    if let Some(s) = objects[i].soname.clone() {
                        by_name.entry(s).or_insert(i);
                    }
                }
                None => self.unresolved(interp.as_bytes(), path),
            }
        }
        let mut at = 0;
        while at < objects.len() {
            for name in objects[at].needed.clone() {
                if by_name.contains_key(&name) {
                    continue;
                }
                let Some((found, origin)) = self.find(&objects, at, &name, abi)? else {
                    let needed_by = objects[at].path.clone();
                    self.unresolved(name.as_bytes(), &needed_by);
                    continue;
                };
                self.add(&found);
                if let Some(&i) = by_path.get(&found.path) {
                    by_name.insert(name, i);
                    continue;
                }
                self.load(&found, &origin, at, abi, &mut objects)?;
                let i = objects.len() - 1;
                by_path.insert(found.path, i);
                by_name.insert(name, i);
                if let Some(s) = objects[i].soname.clone() {
                    by_name.entry(s).or_insert(i);
                }
            }
            at += 1;
        }
        Ok(())
    }

    fn load(
        &self,
        found: &Followed,
        origin: &[u8],
        loader: usize,
        abi: Abi,
        objects: &mut Vec<Object>,
    ) -> Result<(), ElfError> {
        let bytes = read(self.tree, &found.path)?;
        tracing::debug!(object = %found.path, "loaded");
        objects.push(parse_object(
            &found.path,
            &bytes,
            origin,
            abi,
            Some(loader),
        )?);
        Ok(())
    }

    /// Where `ld.so` finds `name` for `objects[at]`, with the directory it
    /// was found in as searched (the library's `$ORIGIN`).
    fn find(
        &mut self,
        objects: &[Object],
        at: usize,
        name: &str,
        abi: Abi,
    ) -> Result<Option<(Followed, Vec<u8>)>, ElfError> {
        if name.contains('/') {
            let origin = parent_bytes(name.as_bytes()).to_vec();
            return Ok(candidate(self.tree, name.as_bytes(), abi)?.map(|f| (f, origin)));
        }
        let req = &objects[at];
        let mut dirs: Vec<Vec<u8>> = Vec::new();
        if req.runpath.is_none() {
            let mut chain = Some(at);
            let mut reached_program = false;
            while let Some(i) = chain {
                dirs.extend(objects[i].rpath.iter().cloned());
                reached_program |= i == 0;
                chain = objects[i].loader;
            }
            if !reached_program {
                dirs.extend(objects[0].rpath.iter().cloned());
            }
        }
        dirs.extend(req.runpath.iter().flatten().cloned());
        if let Some(found) = self.search(&dirs, name, abi)? {
            return Ok(Some(found));
        }
        if req.nodeflib {
            return Ok(None);
        }
        if self.conf.is_none() {
            self.conf = Some(conf_dirs(self.tree)?);
        }
        self.cache_used = true;
        let mut dirs = self.conf.clone().unwrap_or_default();
        dirs.extend(default_dirs(abi));
        self.search(&dirs, name, abi)
    }

    fn search(
        &self,
        dirs: &[Vec<u8>],
        name: &str,
        abi: Abi,
    ) -> Result<Option<(Followed, Vec<u8>)>, ElfError> {
        for dir in dirs {
            if let Some(f) = candidate(self.tree, &join(dir, name.as_bytes()), abi)? {
                return Ok(Some((f, dir.clone())));
            }
        }
        Ok(None)
    }
}

fn io_err(path: impl fmt::Display) -> impl FnOnce(io::Error) -> ElfError {
    move |source| ElfError::Io {
        path: path.to_string(),
        source,
    }
}

fn malformed(path: &ImagePath, reason: impl fmt::Display) -> ElfError {
    ElfError::Malformed {
        path: path.clone(),
        reason: reason.to_string(),
    }
}

fn entry(tree: &ImageTree, path: &ImagePath) -> Result<Option<Resolved>, ElfError> {
    tree.entry(path).map_err(io_err(path))
}

fn read(tree: &ImageTree, path: &ImagePath) -> Result<Vec<u8>, ElfError> {
    tree.read(path).map_err(io_err(path))
}

/// The first `len` bytes (fewer for a shorter file).
fn head(tree: &ImageTree, path: &ImagePath, len: u64) -> Result<Vec<u8>, ElfError> {
    let mut out = Vec::new();
    tree.open(path)
        .and_then(|f| f.take(len).read_to_end(&mut out))
        .map_err(io_err(path))?;
    Ok(out)
}

/// Resolves `path` (absolute, or relative to the resolved directory `base`;
/// `.`, `..` and repeated `/` allowed) with every symlink followed inside the
/// image. `None` when it leads nowhere.
fn follow_str(
    tree: &ImageTree,
    base: &ImagePath,
    path: &[u8],
) -> Result<Option<Followed>, ElfError> {
    let shown = || String::from_utf8_lossy(path).into_owned();
    let mut at = if path.starts_with(b"/") {
        ImagePath::root()
    } else {
        base.clone()
    };
    let mut links = Vec::new();
    for comp in path.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => at = at.parent().unwrap_or_else(ImagePath::root),
            name => {
                let Ok(next) = at.join(OsStr::from_bytes(name)) else {
                    return Ok(None);
                };
                match tree.follow(&next).map_err(io_err(shown()))? {
                    None => return Ok(None),
                    Some(f) => {
                        links.extend(f.links);
                        at = f.path;
                    }
                }
            }
        }
    }
    Ok(Some(Followed { path: at, links }))
}

/// `path` resolved from the image root, when it ends at a regular file.
fn regular_file(tree: &ImageTree, path: &[u8]) -> Result<Option<Followed>, ElfError> {
    let Some(f) = follow_str(tree, &ImagePath::root(), path)? else {
        return Ok(None);
    };
    Ok(match entry(tree, &f.path)? {
        Some(r) if r.meta().kind == Kind::File => Some(f),
        _ => None,
    })
}

/// A library candidate `ld.so` would accept: a regular ELF file of `abi`.
fn candidate(tree: &ImageTree, path: &[u8], want: Abi) -> Result<Option<Followed>, ElfError> {
    let Some(f) = regular_file(tree, path)? else {
        return Ok(None);
    };
    let got = abi(&head(tree, &f.path, 64)?);
    Ok((got == Some(want)).then_some(f))
}

/// Class, byte order and machine from an ELF header; `None` when not ELF.
fn abi(bytes: &[u8]) -> Option<Abi> {
    if bytes.len() < 20 || !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    let raw = [bytes[18], bytes[19]];
    let machine = match bytes[5] {
        1 => u16::from_le_bytes(raw),
        2 => u16::from_be_bytes(raw),
        _ => return None,
    };
    Some(Abi {
        class: bytes[4],
        data: bytes[5],
        machine,
    })
}

fn parse_object(
    path: &ImagePath,
    bytes: &[u8],
    origin: &[u8],
    abi: Abi,
    loader: Option<usize>,
) -> Result<Object, ElfError> {
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| malformed(path, e))?;
    let dirs = |lists: &[&str]| -> Vec<Vec<u8>> {
        lists
            .iter()
            .flat_map(|l| l.split(':'))
            .filter(|d| !d.is_empty())
            .flat_map(|d| expand(d.as_bytes(), origin, abi))
            .collect()
    };
    let runpath = (!elf.runpaths.is_empty()).then(|| dirs(&elf.runpaths));
    let rpath = if runpath.is_some() {
        Vec::new()
    } else {
        dirs(&elf.rpaths)
    };
    let nodeflib = elf
        .dynamic
        .as_ref()
        .is_some_and(|d| d.info.flags_1 & goblin::elf::dynamic::DF_1_NODEFLIB != 0);
    Ok(Object {
        path: path.clone(),
        rpath,
        runpath,
        nodeflib,
        needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
        soname: elf.soname.map(str::to_string),
        interpreter: elf.interpreter.map(str::to_string),
        loader,
    })
}

/// Debian's multiarch triplet for `abi`.
fn triplet(abi: Abi) -> Option<&'static str> {
    let (c64, le) = (abi.class == 2, abi.data == 1);
    Some(match abi.machine {
        EM_X86_64 if c64 => "x86_64-linux-gnu",
        EM_X86_64 => "x86_64-linux-gnux32",
        EM_386 => "i386-linux-gnu",
        EM_AARCH64 if le => "aarch64-linux-gnu",
        EM_ARM if le => "arm-linux-gnueabihf",
        EM_PPC64 if le => "powerpc64le-linux-gnu",
        EM_PPC64 => "powerpc64-linux-gnu",
        EM_PPC => "powerpc-linux-gnu",
        EM_S390 if c64 => "s390x-linux-gnu",
        EM_RISCV if c64 => "riscv64-linux-gnu",
        EM_LOONGARCH if c64 => "loongarch64-linux-gnu",
        EM_MIPS if c64 && le => "mips64el-linux-gnuabi64",
        EM_MIPS if le => "mipsel-linux-gnu",
        _ => return None,
    })
}

/// The loader's built-in directories, searched last.
fn default_dirs(abi: Abi) -> Vec<Vec<u8>> {
    let mut dirs: Vec<Vec<u8>> = Vec::new();
    if let Some(t) = triplet(abi) {
        dirs.push(format!("/lib/{t}").into_bytes());
        dirs.push(format!("/usr/lib/{t}").into_bytes());
    }
    dirs.extend([b"/lib".to_vec(), b"/usr/lib".to_vec()]);
    if abi.class == 2 {
        dirs.extend([b"/lib64".to_vec(), b"/usr/lib64".to_vec()]);
    }
    dirs
}

/// Expands the dynamic string tokens of one search directory. `$LIB` has no
/// single value across distributions, so it yields one directory per guess.
fn expand(dir: &[u8], origin: &[u8], abi: Abi) -> Vec<Vec<u8>> {
    let platform: Option<&[u8]> = match abi.machine {
        EM_X86_64 => Some(b"x86_64"),
        EM_386 => Some(b"i686"),
        EM_AARCH64 => Some(b"aarch64"),
        _ => None,
    };
    let mut libs: Vec<Vec<u8>> = triplet(abi)
        .map(|t| format!("lib/{t}").into_bytes())
        .into_iter()
        .collect();
    if abi.class == 2 {
        libs.push(b"lib64".to_vec());
    }
    libs.push(b"lib".to_vec());
    let mut outs = vec![Vec::new()];
    let mut i = 0;
    while i < dir.len() {
        let token = [&b"ORIGIN"[..], b"PLATFORM", b"LIB"]
            .into_iter()
            .find_map(|t| dst_len(&dir[i..], t).map(|len| (t, len)));
        let values: Vec<&[u8]> = match token {
            Some((b"ORIGIN", _)) => vec![origin],
            Some((b"PLATFORM", _)) => platform.into_iter().collect(),
            Some(_) => libs.iter().map(Vec::as_slice).collect(),
            None => vec![],
        };
        match token {
            Some((_, len)) if !values.is_empty() => {
                outs = outs
                    .iter()
                    .flat_map(|o| values.iter().map(move |v| [o.as_slice(), v].concat()))
                    .collect();
                i += len;
            }
            _ => {
                outs.iter_mut().for_each(|o| o.push(dir[i]));
                i += 1;
            }
        }
    }
    outs
}

/// Length of `$NAME` or `${NAME}` at the start of `s`, as `ld.so` reads it
/// (the bare form must not run into more name characters).
fn dst_len(s: &[u8], name: &[u8]) -> Option<usize> {
    let rest = s.strip_prefix(b"$")?;
    if let Some(r) = rest.strip_prefix(b"{") {
        let r = r.strip_prefix(name)?;
        return r.starts_with(b"}").then_some(name.len() + 3);
    }
    let r = rest.strip_prefix(name)?;
    let more = r
        .first()
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
    (!more).then_some(name.len() + 1)
}

/// Library directories named by `/etc/ld.so.conf` (following `include`s)
/// and `/etc/ld.so.conf.d/*.conf`, in order, without duplicates.
fn conf_dirs(tree: &ImageTree) -> Result<Vec<Vec<u8>>, ElfError> {
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
            for name in names {
                let name = name.as_bytes();
                if (name.starts_with(b".") && !comp.starts_with(b".")) || !fnmatch(comp, name) {
                    continue;
                }
                if let Some(f) = follow_str(tree, dir, name)? {
                    next.push(f.path);
                }
            }
        }
        at = next;
    }
    Ok(at)
}

/// fnmatch(3) without flags: `*`, `?`, `[a-z]`, `[!x]`, `[^x]`, `\` escapes.
fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < name.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, s));
                p += 1;
                continue;
            }
            Some(b'?') => Some(1),
            Some(b'[') => match class(&pattern[p..], name[s]) {
                Some((hit, len)) => hit.then_some(len),
                None => (name[s] == b'[').then_some(1),
            },
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == name[s]).then_some(2),
            Some(c) => (*c == name[s]).then_some(1),
            None => None,
        };
        match (step, star) {
            (Some(len), _) => {
                p += len;
                s += 1;
            }
            (None, Some((sp, ss))) => {
                p = sp + 1;
                s = ss + 1;
                star = Some((sp, ss + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

/// A bracket expression at the start of `pattern`: whether `c` matches and
/// its length; `None` when unterminated (then `[` is literal).
fn class(pattern: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(1), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let (mut hit, mut first) = (false, true);
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            return Some((hit != negate, i + 1));
        }
        first = false;
        match (pattern.get(i + 1), pattern.get(i + 2)) {
            (Some(b'-'), Some(&hi)) if hi != b']' => {
                hit |= (lo..=hi).contains(&c);
                i += 3;
            }
            _ => {
                hit |= lo == c;
                i += 1;
            }
        }
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    [dir, b"/", name].concat()
}

/// Everything before the last `/` (`/` itself for a top-level path).
fn parent_bytes(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(0) => b"/",
        Some(i) => &path[..i],
        None => b".",
    }
}

fn trim(s: &[u8], blank: impl Fn(&u8) -> bool) -> &[u8] {
    let start = s.iter().position(|b| !blank(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !blank(b)).map_or(start, |e| e + 1);
    &s[start..end]
}
