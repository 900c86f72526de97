//! Long names, long symlink targets, nanosecond and negative mtimes and
//! xattrs on the same entries: one PAX header per entry, no GNU extensions,
//! read back by tar-rs and extracted by GNU tar with every value intact.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};

use pare_fs::layers::LayerStack;
use rustix::fs::{AtFlags, CWD, Timespec, Timestamps, XattrFlags};

use super::*;
use crate::compact::closure::{Index, Selection};

/// Paths of the fixture (relative, as in the tar).
struct Names {
    long_dir: String,
    long_file: String,
    long_link: String,
    short_link: String,
    long_hardlink: String,
    latin1: Vec<u8>,
    before_1970: String,
}

fn names() -> Names {
    let long_dir = format!("app/{}", "d".repeat(120));
    Names {
        long_file: format!("{long_dir}/{}", "f".repeat(60)),
        long_link: format!("{long_dir}/{}", "l".repeat(60)),
        long_dir,
        short_link: "app/short".into(),
        long_hardlink: format!("app/{}", "h".repeat(110)),
        latin1: b"app/caf\xe9".to_vec(),
        before_1970: "app/old".into(),
    }
}

fn long_target() -> String {
    format!("../{}/end", "t".repeat(150))
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    let t = Timestamps {
        last_access: Timespec {
            tv_sec: 1_600_000_000,
            tv_nsec: 0,
        },
        last_modification: Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    };
    rustix::fs::utimensat(CWD, path, &t, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The fixture layer; `trusted.pare` goes on the long symlink when running
/// as root (no other namespace takes xattrs on a symlink).
fn fixture() -> (tempfile::TempDir, ImageTree, Vec<ImagePath>) {
    let n = names();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let at = |rel: &str| base.join(rel);
    std::fs::create_dir_all(at(&n.long_dir)).unwrap();
    std::fs::write(at(&n.long_file), "long file\n").unwrap();
    std::fs::hard_link(at(&n.long_file), at(&n.long_hardlink)).unwrap();
    symlink(long_target(), at(&n.long_link)).unwrap();
    symlink(format!("/{}", "s".repeat(200)), at(&n.short_link)).unwrap();
    std::fs::write(base.join(OsStr::from_bytes(&n.latin1)), "latin-1 name\n").unwrap();
    std::fs::write(at(&n.before_1970), "old\n").unwrap();
    let xattr = |rel: &str, name: &str, value: &[u8]| {
        rustix::fs::lsetxattr(at(rel), name, value, XattrFlags::empty()).unwrap();
    };
    xattr(&n.long_file, "user.pare", b"on a long name");
    xattr(&n.long_dir, "user.dir", b"on a long directory");
    if is_root() {
        xattr(&n.long_link, "trusted.pare", b"on a long symlink");
    }
    set_mtime(&at(&n.long_file), 1_700_000_000, 123_456_789);
    set_mtime(&at(&n.long_link), 1_700_000_001, 987_654_321);
    set_mtime(&at(&n.short_link), 1_700_000_002, 5);
    set_mtime(&at(&n.before_1970), -2, 500_000_000);
    set_mtime(&at(&n.long_dir), 1_700_000_003, 1);
    let profile = [
        n.long_link.as_bytes(),
        n.long_file.as_bytes(),
        n.short_link.as_bytes(),
        &n.latin1,
        n.before_1970.as_bytes(),
    ]
    .iter()
    .map(|rel| ImagePath::new([b"/", *rel].concat()).unwrap())
    .collect();
    let stack = LayerStack::open(vec![base]).unwrap();
    (dir, ImageTree::new(stack), profile)
}

/// The uncompressed layer tar of the fixture.
fn layer_tar(tree: &ImageTree, profile: &[ImagePath]) -> Vec<u8> {
    let index = Index::build(tree).unwrap();
    let mut sel = Selection::new(tree, &index);
    sel.keep_profiled(profile.iter()).unwrap();
    let kept = sel.into_kept();
    let (out, blob) = write(
        tree,
        &kept,
        &HashMap::new(),
        Compression::Gzip,
        Vec::new(),
        &|_| {},
    )
    .unwrap();
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(blob.as_slice())
        .read_to_end(&mut tar)
        .unwrap();
    assert_eq!(out.diff_id, pare_fs::id::Digest::sha256(&tar));
    tar
}

/// What an entry of the tar says, as tar-rs reads it.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: EntryType,
    link: Option<Vec<u8>>,
    mtime: Option<String>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn read_back(tar: &[u8]) -> Vec<(Vec<u8>, Seen)> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path_bytes().into_owned();
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let kind = entry.header().entry_type();
        let mut mtime = None;
        let mut xattrs = Vec::new();
        for record in entry.pax_extensions().unwrap().into_iter().flatten() {
            let record = record.unwrap();
            let key = record.key().unwrap().to_string();
            if key == "mtime" {
                mtime = Some(record.value().unwrap().to_string());
            } else if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                xattrs.push((name.to_string(), record.value_bytes().to_vec()));
            }
        }
        out.push((
            path,
            Seen {
                kind,
                link,
                mtime,
                xattrs,
            },
        ));
    }
    out
}

#[test]
fn every_entry_has_at_most_one_pax_header_and_no_gnu_extension() {
    let (_d, tree, profile) = fixture();
    let tar = layer_tar(&tree, &profile);
    let mut archive = tar::Archive::new(tar.as_slice());
    let mut previous_was_pax = false;
    let mut kinds = Vec::new();
    for entry in archive.entries().unwrap().raw(true) {
        let kind = entry.unwrap().header().entry_type();
        assert!(
            !matches!(kind, EntryType::GNULongName | EntryType::GNULongLink),
            "GNU extension {kind:?}"
        );
        let is_pax = kind == EntryType::XHeader;
        assert!(!(is_pax && previous_was_pax), "two PAX headers in a row");
        previous_was_pax = is_pax;
        kinds.push(kind);
    }
    assert!(!previous_was_pax, "a PAX header ends the archive");
    assert!(kinds.contains(&EntryType::XHeader));
}

#[test]
fn tar_rs_reads_back_long_names_targets_mtimes_and_xattrs() {
    let (_d, tree, profile) = fixture();
    let n = names();
    let entries = read_back(&layer_tar(&tree, &profile));
    let get = |path: &[u8]| -> &Seen {
        &entries
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{} not in the tar", String::from_utf8_lossy(path)))
            .1
    };
    let mut link_xattrs = Vec::new();
    if is_root() {
        link_xattrs.push(("trusted.pare".to_string(), b"on a long symlink".to_vec()));
    }
    let cases: Vec<(Vec<u8>, Seen)> = vec![
        (
            format!("{}/", n.long_dir).into_bytes(),
            Seen {
                kind: EntryType::Directory,
                link: None,
                mtime: Some("1700000003.000000001".into()),
                xattrs: vec![("user.dir".into(), b"on a long directory".to_vec())],
            },
        ),
        (
            n.long_link.clone().into_bytes(),
            Seen {
                kind: EntryType::Symlink,
                link: Some(long_target().into_bytes()),
                mtime: Some("1700000001.987654321".into()),
                xattrs: link_xattrs,
            },
        ),
        (
            n.long_file.clone().into_bytes(),
            Seen {
                kind: EntryType::Regular,
                link: None,
                mtime: Some("1700000000.123456789".into()),
                xattrs: vec![("user.pare".into(), b"on a long name".to_vec())],
            },
        ),
        (
            n.long_hardlink.clone().into_bytes(),
            Seen {
                kind: EntryType::Link,
                link: Some(n.long_file.clone().into_bytes()),
                mtime: Some("1700000000.123456789".into()),
                xattrs: vec![("user.pare".into(), b"on a long name".to_vec())],
            },
        ),
        (
            n.short_link.clone().into_bytes(),
            Seen {
                kind: EntryType::Symlink,
                link: Some(format!("/{}", "s".repeat(200)).into_bytes()),
                mtime: Some("1700000002.000000005".into()),
                xattrs: vec![],
            },
        ),
        (
            n.latin1.clone(),
            Seen {
                kind: EntryType::Regular,
                link: None,
                mtime: get(&n.latin1).mtime.clone(),
                xattrs: vec![],
            },
        ),
        (
            n.before_1970.clone().into_bytes(),
            Seen {
                kind: EntryType::Regular,
                link: None,
                mtime: Some("-1.500000000".into()),
                xattrs: vec![],
            },
        ),
    ];
    for (path, want) in &cases {
        assert_eq!(get(path), want, "{}", String::from_utf8_lossy(path));
    }
}

/// Runs GNU tar with `args`; panics with its stderr when it fails.
fn gnu_tar(args: &[&OsStr]) {
    let out = std::process::Command::new("tar")
        .args(args)
        .output()
        .expect("GNU tar is installed");
    assert!(
        out.status.success(),
        "tar {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // GNU tar says so of a time before 1970, and sets it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("implausibly old time stamp"))
        .collect();
    assert!(warnings.is_empty(), "tar {args:?} warned: {stderr}");
}

#[test]
fn gnu_tar_extracts_long_names_targets_mtimes_and_xattrs() {
    let (dir, tree, profile) = fixture();
    let n = names();
    let tar_path = dir.path().join("layer.tar");
    std::fs::write(&tar_path, layer_tar(&tree, &profile)).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    gnu_tar(&[
        "--xattrs".as_ref(),
        "--xattrs-include=*".as_ref(),
        "-xpf".as_ref(),
        tar_path.as_os_str(),
        "-C".as_ref(),
        out.as_os_str(),
    ]);
    let base = dir.path().join("base");
    let both = |rel: &[u8]| -> (PathBuf, PathBuf) {
        let rel = Path::new(OsStr::from_bytes(rel));
        (base.join(rel), out.join(rel))
    };
    for rel in [&n.long_link, &n.short_link] {
        let (orig, got) = both(rel.as_bytes());
        assert_eq!(
            std::fs::read_link(&got).unwrap(),
            std::fs::read_link(&orig).unwrap(),
            "{rel}"
        );
    }
    for rel in [
        n.long_file.as_bytes(),
        n.long_hardlink.as_bytes(),
        &n.latin1,
        n.before_1970.as_bytes(),
    ] {
        let (orig, got) = both(rel);
        assert_eq!(std::fs::read(&got).unwrap(), std::fs::read(&orig).unwrap());
    }
    let (file, hardlink) = (
        both(n.long_file.as_bytes()).1,
        both(n.long_hardlink.as_bytes()).1,
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().ino(),
        std::fs::metadata(&hardlink).unwrap().ino(),
        "the long hardlink names the long file"
    );
    // Times, to the nanosecond (a symlink's too), and before 1970.
    for rel in [
        n.long_file.as_bytes(),
        n.long_link.as_bytes(),
        n.short_link.as_bytes(),
        n.before_1970.as_bytes(),
    ] {
        let (orig, got) = both(rel);
        let (o, g) = (
            std::fs::symlink_metadata(&orig).unwrap(),
            std::fs::symlink_metadata(&got).unwrap(),
        );
        assert_eq!(
            (g.mtime(), g.mtime_nsec()),
            (o.mtime(), o.mtime_nsec()),
            "{}",
            String::from_utf8_lossy(rel)
        );
    }
    let xattr = |path: &Path, name: &str| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256];
        let len = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
        buf.truncate(len);
        Some(buf)
    };
    assert_eq!(
        xattr(&file, "user.pare").as_deref(),
        Some(&b"on a long name"[..])
    );
    assert_eq!(
        xattr(&both(n.long_dir.as_bytes()).1, "user.dir").as_deref(),
        Some(&b"on a long directory"[..])
    );
    if is_root() {
        assert_eq!(
            xattr(&both(n.long_link.as_bytes()).1, "trusted.pare").as_deref(),
            Some(&b"on a long symlink"[..])
        );
    }
}
