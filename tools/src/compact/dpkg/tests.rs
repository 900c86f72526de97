//! Tests of dpkg trimming on a small synthetic database in a one-layer image.

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use pare_fs::layers::LayerStack;

use super::*;

fn p(s: &str) -> ImagePath {
    ImagePath::new(s.as_bytes().to_vec()).unwrap()
}

struct Image {
    _dir: tempfile::TempDir,
    layer: PathBuf,
}

impl Image {
    fn new() -> Image {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        std::fs::create_dir(&layer).unwrap();
        Image { _dir: dir, layer }
    }

    fn file(&self, path: &str, content: &str) -> &Image {
        let at = self.layer.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::write(at, content).unwrap();
        self
    }

    fn dir(&self, path: &str) -> &Image {
        std::fs::create_dir_all(self.layer.join(path.trim_start_matches('/'))).unwrap();
        self
    }

    fn link(&self, path: &str, target: &str) -> &Image {
        symlink(target, self.layer.join(path.trim_start_matches('/'))).unwrap();
        self
    }

    fn tree(&self) -> ImageTree {
        ImageTree::new(LayerStack::open(vec![self.layer.clone()]).unwrap())
    }
}

const LIBC: &str = "Package: libc6\nStatus: install ok installed\nPriority: optional\n\
Installed-Size: 12000\nArchitecture: amd64\nMulti-Arch: same\nDescription: GNU C Library\n \
shared libraries\n .\n more\n\n";
/// Followed by two blank lines, which must survive.
const COREUTILS: &str = "Package: coreutils\nEssential: yes\nstatus: install ok installed\n\
Architecture: amd64\nInstalled-Size: 7000\n\n\n";
const DOCS: &str = "Package: docs-only\nStatus: install ok installed\nArchitecture: all\n\
Installed-Size: 10\n\n";
const OLD: &str = "Package: old-conf\nStatus: deinstall ok config-files\nArchitecture: amd64\n\n";
const BASE: &str = "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\n\
Installed-Size: 400\n\n";
const DASH: &str = "Package: dash\nStatus: install ok installed\nArchitecture: amd64\n\
Installed-Size: 200\n";

/// A merged-/usr image whose packages list pre-merge paths.
fn image() -> Image {
    let img = Image::new();
    let info = "/var/lib/dpkg/info";
    img.file(
        "/var/lib/dpkg/status",
        &[LIBC, COREUTILS, DOCS, OLD, BASE, DASH].concat(),
    )
    .dir("/usr/share/doc/docs-only")
    .link("/lib", "usr/lib")
    .link("/bin", "usr/bin")
    .file("/usr/lib/x86_64-linux-gnu/libc.so.6", "libc")
    .file("/usr/bin/ls", "ls")
    .file("/usr/bin/cat", "cat")
    .file("/usr/bin/dash", "dash")
    .link("/usr/bin/sh", "dash")
    .file("/etc/os-release", "debian")
    .file(
        &format!("{info}/libc6:amd64.list"),
        "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n/usr/share/doc/libc6/copyright\n",
    )
    .file(&format!("{info}/libc6:amd64.md5sums"), "x  lib/x86_64-linux-gnu/libc.so.6\n")
    .file(&format!("{info}/libc6.list"), "/stale/pre-multiarch/list\n")
    .file(&format!("{info}/coreutils.list"), "/.\n/bin\n/bin/ls\n/bin/cat\n")
    .file(&format!("{info}/coreutils.md5sums"), "x  bin/ls\n")
    .file(&format!("{info}/coreutils.conffiles"), "")
    .file(
        &format!("{info}/docs-only.list"),
        "/.\n/usr\n/usr/share\n/usr/share/doc\n/usr/share/doc/docs-only\n",
    )
    .file(&format!("{info}/docs-only.md5sums"), "")
    .file(&format!("{info}/base-files.list"), "/.\n/etc\n/etc/os-release\n/lib\n/bin\n")
    .file(&format!("{info}/dash.list"), "/.\n/usr/bin/dash\n/usr/bin/sh\n");
    img
}

#[test]
fn trim_keeps_exactly_the_packages_with_a_kept_file() {
    let img = image();
    let dpkg = load(&img.tree()).unwrap().unwrap();
    let kept: BTreeSet<ImagePath> = [
        "/",
        "/lib",
        "/bin",
        "/usr",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/bin",
        "/usr/bin/ls",
        "/usr/bin/sh",
        "/usr/share/doc/docs-only",
    ]
    .into_iter()
    .map(p)
    .collect();
    let trimmed = dpkg.trim(&|path| kept.contains(path));
    let info = |f: &str| p(&format!("/var/lib/dpkg/info/{f}"));
    assert_eq!(
        trimmed,
        Trimmed {
            status: [LIBC, COREUTILS, DASH].concat().into_bytes(),
            kept_packages: vec!["libc6:amd64".into(), "coreutils".into(), "dash".into()],
            removed_packages: vec!["docs-only".into(), "base-files".into()],
            not_installed: vec!["old-conf".into()],
            metadata_paths: vec![
                info("libc6:amd64.list"),
                info("libc6:amd64.md5sums"),
                info("coreutils.list"),
                info("coreutils.md5sums"),
                info("dash.list"),
            ],
        }
    );
}

#[test]
fn trimming_everything_or_nothing() {
    let img = image();
    let dpkg = load(&img.tree()).unwrap().unwrap();
    let none = dpkg.trim(&|_| false);
    assert_eq!(none.status, b"");
    assert!(none.kept_packages.is_empty());
    assert!(none.metadata_paths.is_empty());
    let all = dpkg.trim(&|_| true);
    assert_eq!(
        all.status,
        [LIBC, COREUTILS, BASE, DASH].concat().into_bytes(),
        "only installed packages with a non-directory path in the image stay"
    );
}

#[test]
fn sizes_are_installed_sizes_in_bytes() {
    let img = image();
    let dpkg = load(&img.tree()).unwrap().unwrap();
    assert_eq!(
        dpkg.sizes(),
        [
            ("libc6:amd64", 12000 * 1024),
            ("coreutils", 7000 * 1024),
            ("docs-only", 10 * 1024),
            ("base-files", 400 * 1024),
            ("dash", 200 * 1024),
        ]
        .map(|(n, s)| (n.to_string(), s))
    );
}

#[test]
fn an_image_without_dpkg_has_no_database() {
    let img = Image::new();
    img.file("/etc/os-release", "distroless");
    assert_eq!(load(&img.tree()).unwrap(), None);
}

#[test]
fn malformed_databases_name_the_line() {
    let status = "/var/lib/dpkg/status";
    for (text, want) in [
        (
            "Package: a\nStatus: install ok installed\n\nStatus: install ok installed\nArchitecture: all\n",
            "/var/lib/dpkg/status: the paragraph at line 4 has no Package field",
        ),
        (
            "\n\nPackage: a\n",
            "/var/lib/dpkg/status: the paragraph at line 3 has no Status field",
        ),
        (
            "Package: a\nStatus: install ok installed\nno colon here\n",
            "/var/lib/dpkg/status:3: expected `Field: value`",
        ),
        (
            " leading continuation\n",
            "/var/lib/dpkg/status:1: continuation line before any field",
        ),
    ] {
        let img = Image::new();
        img.file(status, text);
        let got = load(&img.tree()).unwrap_err().to_string();
        assert_eq!(got, want, "{text:?}");
    }
    let img = Image::new();
    img.file(status, "Package: a\nStatus: install ok installed\n")
        .file("/var/lib/dpkg/info/a.list", "/.\n/usr/../etc\n");
    assert_eq!(
        load(&img.tree()).unwrap_err().to_string(),
        "/var/lib/dpkg/info/a.list:2: not a path: \"/usr/../etc\""
    );
}
