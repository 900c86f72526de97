//! ELF objects as `ld.so` loads them: their identity (class, byte order,
//! machine), their dynamic section, and the breadth-first walk of a program's
//! interpreter and `DT_NEEDED` libraries.

use std::collections::HashMap;

use pare_fs::profile::ImagePath;

use super::image::{malformed, parent_bytes, read, regular_file};
use super::search::expand;
use super::{ElfError, Walk};
use crate::compact::tree::Followed;

/// ELF identity: objects of another class, byte order or machine never mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Abi {
    pub(super) class: u8,
    pub(super) data: u8,
    pub(super) machine: u16,
}

/// One loaded object, as `ld.so` keeps it for later searches.
pub(super) struct Object {
    pub(super) path: ImagePath,
    /// Effective `DT_RPATH` directories, expanded (empty when it has `DT_RUNPATH`).
    pub(super) rpath: Vec<Vec<u8>>,
    /// `DT_RUNPATH` directories, expanded.
    pub(super) runpath: Option<Vec<Vec<u8>>>,
    pub(super) nodeflib: bool,
    pub(super) needed: Vec<String>,
    pub(super) soname: Option<String>,
    pub(super) interpreter: Option<String>,
    /// Index of the object whose `DT_NEEDED` loaded this one.
    pub(super) loader: Option<usize>,
}

impl Walk<'_> {
    /// An ELF program: its interpreter, then its libraries breadth first.
    pub(super) fn program(&mut self, path: &ImagePath) -> Result<(), ElfError> {
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
}

/// Class, byte order and machine from an ELF header; `None` when not ELF.
pub(super) fn abi(bytes: &[u8]) -> Option<Abi> {
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

pub(super) fn parse_object(
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
