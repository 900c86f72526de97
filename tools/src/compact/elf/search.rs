//! Where `ld.so` finds a `DT_NEEDED` name: `DT_RPATH` up the loader chain,
//! `DT_RUNPATH`, the image's `ld.so.conf` directories and the built-in
//! defaults, with `$ORIGIN`, `$PLATFORM` and `$LIB` expanded; a candidate of
//! another ABI is skipped.

use goblin::elf::header::{
    EM_386, EM_AARCH64, EM_ARM, EM_LOONGARCH, EM_MIPS, EM_PPC, EM_PPC64, EM_RISCV, EM_S390,
    EM_X86_64,
};

use super::image::{head, join, parent_bytes, regular_file};
use super::ldso_conf::conf_dirs;
use super::object::{Abi, Object, abi};
use super::{ElfError, Walk};
use crate::compact::tree::{Followed, ImageTree};

impl Walk<'_> {
    /// Where `ld.so` finds `name` for `objects[at]`, with the directory it
    /// was found in as searched (the library's `$ORIGIN`).
    pub(super) fn find(
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

/// A library candidate `ld.so` would accept: a regular ELF file of `abi`.
pub(super) fn candidate(
    tree: &ImageTree,
    path: &[u8],
    want: Abi,
) -> Result<Option<Followed>, ElfError> {
    let Some(f) = regular_file(tree, path)? else {
        return Ok(None);
    };
    let got = abi(&head(tree, &f.path, 64)?);
    Ok((got == Some(want)).then_some(f))
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
pub(super) fn expand(dir: &[u8], origin: &[u8], abi: Abi) -> Vec<Vec<u8>> {
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
