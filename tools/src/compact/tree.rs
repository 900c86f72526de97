//! Read-only access to an image's merged tree, straight from its layer
//! directories (never through a mounted view, which would record accesses).
//! Every path comes from validated [`ImagePath`]s and every open stays
//! beneath a layer directory and follows no symlink.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use pare_fs::layers::{Kind, LayerStack, Resolved, xattr};
use pare_fs::profile::ImagePath;
use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Most symlinks followed while resolving one path (as the kernel's ELOOP limit).
pub const MAX_SYMLINKS: usize = 40;

/// An image's merged tree.
pub struct ImageTree {
    stack: LayerStack,
}

/// A path resolved with symlinks followed: where it ends, and every symlink
/// met on the way (the closure must keep those too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Followed {
    /// The final path (not a symlink).
    pub path: ImagePath,
    /// Symlinks traversed, in order.
    pub links: Vec<ImagePath>,
}

impl ImageTree {
    /// The tree of `stack`.
    pub fn new(stack: LayerStack) -> ImageTree {
        ImageTree { stack }
    }

    /// What `path` is (a final symlink is not followed); `None` when absent.
    pub fn entry(&self, path: &ImagePath) -> io::Result<Option<Resolved>> {
        self.stack.resolve(path.rel())
    }

    /// Opens the regular file `path` for reading, beneath its layer directory,
    /// following no symlink.
    pub fn open(&self, path: &ImagePath) -> io::Result<File> {
        let Some(Resolved::Other { layer, meta }) = self.entry(path)? else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{path} is not a file in the image"),
            ));
        };
        if meta.kind != Kind::File {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is not a regular file"),
            ));
        }
        open_beneath(self.stack.root(layer), path.rel())
    }

    /// Content of the regular file `path`, whole: for what is parsed (package
    /// metadata, ELF objects of `--include-exec`), one file at a time. The
    /// layer writer streams contents through [`ImageTree::open`] instead.
    pub fn read(&self, path: &ImagePath) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        self.open(path)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// Target of the symlink `path`.
    pub fn read_link(&self, path: &ImagePath) -> io::Result<PathBuf> {
        match self.entry(path)? {
            Some(Resolved::Other { layer, meta }) if meta.kind == Kind::Symlink => {
                self.stack.read_link(layer, path.rel())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is not a symlink"),
            )),
        }
    }

    /// Entries of the directory `path`, with what each resolves to.
    pub fn list(&self, path: &ImagePath) -> io::Result<Vec<(OsString, Resolved)>> {
        match self.entry(path)? {
            Some(Resolved::Dir { layers, .. }) => self.stack.read_dir(path.rel(), &layers),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path} is not a directory"),
            )),
        }
    }

    /// Visible xattrs of `path` (overlay's own are hidden), sorted by name.
    pub fn xattrs(
        &self,
        path: &ImagePath,
        resolved: &Resolved,
    ) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        xattr::visible(&self.stack.host_path(resolved.top_layer(), path.rel()))
    }

    /// Every entry of the image, parents before children, names sorted.
    pub fn walk(&self) -> io::Result<Vec<(ImagePath, Resolved)>> {
        let root = ImagePath::root();
        let mut out = vec![(root.clone(), self.stack.resolve_root()?)];
        let mut i = 0;
        while i < out.len() {
            if matches!(out[i].1, Resolved::Dir { .. }) {
                let dir = out[i].0.clone();
                let mut children = self.list(&dir)?;
                children.sort_by(|a, b| a.0.cmp(&b.0));
                for (name, resolved) in children {
                    let child = dir
                        .join(&name)
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    out.push((child, resolved));
                }
            }
            i += 1;
        }
        Ok(out)
    }

    /// Resolves `path` following symlinks in every component (absolute
    /// targets are taken from the image root, never the host's). `None` when
    /// it leads nowhere (dangling, loop, or through a non-directory).
    pub fn follow(&self, path: &ImagePath) -> io::Result<Option<Followed>> {
        let mut links = Vec::new();
        let mut pending: Vec<OsString> = components(path.rel()).into_iter().rev().collect();
        let mut at = ImagePath::root();
        while let Some(name) = pending.pop() {
            if name == ".." {
                at = at.parent().unwrap_or_else(ImagePath::root);
                continue;
            }
            if name == "." || name.is_empty() {
                continue;
            }
            let Ok(next) = at.join(&name) else {
                return Ok(None);
            };
            match self.entry(&next)? {
                None => return Ok(None),
                Some(Resolved::Other { meta, .. }) if meta.kind == Kind::Symlink => {
                    if links.len() >= MAX_SYMLINKS {
                        return Ok(None);
                    }
                    let target = self.read_link(&next)?;
                    links.push(next);
                    if target.is_absolute() {
                        at = ImagePath::root();
                    }
                    pending.extend(components(&target).into_iter().rev());
                }
                Some(_) => at = next,
            }
        }
        Ok(Some(Followed { path: at, links }))
    }
}

/// Opens `rel` for reading beneath the directory `root`. The kernel checks
/// the whole path at the moment of the open, whatever was resolved before:
/// a symlink anywhere on the way (even one swapped in for a file or a
/// directory since) is refused with `ELOOP`, and a `..` or absolute path
/// leaving `root` with `EXDEV`.
pub(crate) fn open_beneath(root: &Path, rel: &Path) -> io::Result<File> {
    let root: OwnedFd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd = rustix::fs::openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    Ok(File::from(fd))
}

fn components(path: &Path) -> Vec<OsString> {
    use std::path::Component;
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, ImageTree) {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        let base = dir.path().join("base");
        for d in ["usr/lib/x86_64-linux-gnu", "usr/bin", "etc"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(base.join("usr/lib/x86_64-linux-gnu/libc.so.6"), "libc").unwrap();
        symlink("usr/lib", base.join("lib")).unwrap();
        symlink("/usr/bin", top.join("bin")).unwrap();
        std::fs::write(base.join("usr/bin/python3.11"), "py").unwrap();
        symlink("python3.11", base.join("usr/bin/python3")).unwrap();
        symlink("../../etc/../etc/passwd", base.join("usr/bin/escape")).unwrap();
        symlink("/../../../../etc/shadow", top.join("up")).unwrap();
        std::fs::write(base.join("etc/passwd"), "root").unwrap();
        symlink("loop2", top.join("loop1")).unwrap();
        symlink("loop1", top.join("loop2")).unwrap();
        let stack = LayerStack::open(vec![top, base]).unwrap();
        (dir, ImageTree::new(stack))
    }

    fn p(s: &str) -> ImagePath {
        ImagePath::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn follow_resolves_symlink_chains_inside_the_image() {
        let (_d, t) = tree();
        let f = t
            .follow(&p("/lib/x86_64-linux-gnu/libc.so.6"))
            .unwrap()
            .unwrap();
        assert_eq!(f.path, p("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert_eq!(f.links, vec![p("/lib")]);
        let f = t.follow(&p("/bin/python3")).unwrap().unwrap();
        assert_eq!(f.path, p("/usr/bin/python3.11"));
        assert_eq!(f.links, vec![p("/bin"), p("/usr/bin/python3")]);
        let f = t.follow(&p("/usr/bin/escape")).unwrap().unwrap();
        assert_eq!(f.path, p("/etc/passwd"), "`..` stops at the image root");
        assert_eq!(
            t.follow(&p("/up")).unwrap(),
            None,
            "the host's /etc/shadow is never reached"
        );
        assert_eq!(t.follow(&p("/loop1")).unwrap(), None);
    }

    #[test]
    fn reads_stay_beneath_the_layers_and_refuse_symlinks() {
        let (_d, t) = tree();
        assert_eq!(t.read(&p("/etc/passwd")).unwrap(), b"root");
        assert!(t.read(&p("/bin")).is_err(), "a symlink is not read through");
        assert!(
            t.read(&p("/lib/x86_64-linux-gnu/libc.so.6")).is_err(),
            "nor a path through one"
        );
        let all: Vec<String> = t
            .walk()
            .unwrap()
            .into_iter()
            .map(|(p, _)| p.to_string())
            .collect();
        assert!(all.contains(&"/usr/bin/python3".to_string()));
        assert_eq!(all[0], "/");
    }

    /// A layer directory beside a file outside it, as the image was planned:
    /// `usr/bin/tool` and `etc/passwd` regular files.
    fn planned() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        for d in ["usr/bin", "etc", "data"] {
            std::fs::create_dir_all(layer.join(d)).unwrap();
        }
        std::fs::write(layer.join("usr/bin/tool"), "tool").unwrap();
        std::fs::write(layer.join("etc/passwd"), "image passwd").unwrap();
        std::fs::write(layer.join("data/file"), "data").unwrap();
        std::fs::write(dir.path().join("outside"), "host secret").unwrap();
        (dir, layer)
    }

    /// Replaces the file or directory `rel` of `layer` by a symlink to `target`.
    fn swap(layer: &Path, rel: &str, target: &str) {
        let at = layer.join(rel);
        if at.is_dir() {
            std::fs::remove_dir_all(&at).unwrap();
        } else {
            std::fs::remove_file(&at).unwrap();
        }
        symlink(target, at).unwrap();
    }

    #[test]
    fn open_beneath_refuses_symlinks_and_escapes_the_kernel_meets() {
        let (_d, layer) = planned();
        let read = |rel: &str| -> Result<String, i32> {
            let mut out = String::new();
            match open_beneath(&layer, Path::new(rel)) {
                Ok(mut f) => {
                    std::io::Read::read_to_string(&mut f, &mut out).unwrap();
                    Ok(out)
                }
                Err(e) => Err(e.raw_os_error().expect("an OS error")),
            }
        };
        assert_eq!(read("usr/bin/tool"), Ok("tool".into()));
        let planned = ImageTree::new(LayerStack::open(vec![layer.clone()]).unwrap());
        for path in ["/usr/bin/tool", "/etc/passwd", "/data/file"] {
            let kind = planned.entry(&p(path)).unwrap().map(|r| r.meta().kind);
            assert_eq!(kind, Some(Kind::File), "{path} as planned");
        }
        // What the layers held when the image was planned, swapped since.
        swap(&layer, "usr/bin/tool", "/etc/passwd");
        swap(&layer, "etc/passwd", "../usr/bin/tool2");
        std::fs::write(layer.join("usr/bin/tool2"), "tool2").unwrap();
        swap(&layer, "data", "/etc");
        std::fs::create_dir_all(layer.join("lib/real")).unwrap();
        std::fs::write(layer.join("lib/real/libc.so"), "libc").unwrap();
        symlink("real", layer.join("lib/alias")).unwrap();
        let (eloop, exdev) = (libc::ELOOP, libc::EXDEV);
        for (rel, want, why) in [
            (
                "usr/bin/tool",
                eloop,
                "a file swapped for an absolute symlink to the host's /etc/passwd",
            ),
            (
                "etc/passwd",
                eloop,
                "a file swapped for a relative symlink inside the layer",
            ),
            (
                "data/passwd",
                eloop,
                "a directory swapped for a symlink to the host's /etc",
            ),
            (
                "lib/alias/libc.so",
                eloop,
                "an intermediate symlink staying inside the layer",
            ),
            ("../outside", exdev, "a `..` component leaving the layer"),
            (
                "usr/../../outside",
                exdev,
                "a `..` component leaving it from below",
            ),
            ("/etc/passwd", exdev, "an absolute path"),
        ] {
            // Only the error is shown: a failure must not print host files.
            assert_eq!(read(rel).err(), Some(want), "{rel}: {why}");
        }
        assert_eq!(read("usr/bin/tool2"), Ok("tool2".into()));
        assert_eq!(
            read("usr/bin/../bin/tool2"),
            Ok("tool2".into()),
            "`..` within the layer"
        );
        assert_eq!(read("lib/real/libc.so"), Ok("libc".into()));
    }
}
