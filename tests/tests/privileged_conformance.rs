//! The view equals kernel overlayfs (the oracle): the fixture stack is mounted
//! both ways and the two walks must agree on every path and field, with reads
//! served by FUSE passthrough and by pread, and requests carried over
//! io_uring and over `/dev/fuse`. Expectations on known paths are also
//! checked on both mounts so that the comparison cannot pass vacuously.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use pare_fs::mountinfo;
use pare_tests::fixture::{self, CAP_NET_BIND_SERVICE_EP, DEPTH, Fixture, MANY};
use pare_tests::mounts::{Mount, PareMount, Scratch};
use pare_tests::prereq::{Need, privileged};
use pare_tests::transport::Via;
use pare_tests::walk::{self, Tree};

const NEEDS: &[Need] = &[
    Need::Root,
    Need::Fuse,
    Need::Overlay,
    Need::Command("umount"),
];

/// Overlay and pare mounts of one fixture. Fields drop in order: the mounts
/// first, then the layers' tmpfs, then the scratch directory.
struct Mounted {
    pare: PareMount,
    overlay: Mount,
    fixture: Fixture,
    scratch: Scratch,
}

impl Mounted {
    fn new(
        scratch: Scratch,
        build: impl FnOnce(&Path) -> Result<Fixture>,
        args: &[&str],
    ) -> Result<Mounted> {
        let dir = scratch.path().to_path_buf();
        let fixture = build(&dir.join("layers"))?;
        let overlay = Mount::overlay(&fixture.layers, &dir.join("overlay"))?;
        let pare = PareMount::start(
            &fixture.layers,
            &dir.join("pare"),
            args,
            &dir.join("pare.log"),
        )?;
        Ok(Mounted {
            pare,
            overlay,
            fixture,
            scratch,
        })
    }

    /// Unmounts everything, checking that `pare mount` exits with status 0;
    /// returns what it logged.
    fn finish(self) -> Result<String> {
        self.pare.finish()?;
        let log = std::fs::read_to_string(self.scratch.path().join("pare.log"))?;
        self.overlay.unmount()?;
        self.fixture.unmount()?;
        Ok(log)
    }
}

/// Fails with the first differences between the overlay and pare walks.
fn assert_same(overlay: &Tree, pare: &Tree) {
    let diff = walk::diff(("overlay", overlay), ("pare", pare), 40);
    assert!(
        diff.is_empty(),
        "the view differs from overlayfs ({} paths compared):\n{}",
        overlay.entries.len(),
        diff.join("\n")
    );
}

/// How the view is to serve file reads, and what its log says about it
/// (fs/src/view/fuse.rs). The mount-time line names the mode; in passthrough
/// mode an open that the kernel refuses to pass through is served with pread
/// from then on, and the first such refusal is logged as a warning. So a log
/// with the passthrough line and without a refusal means every open was
/// passed through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reads {
    /// The default: FUSE passthrough.
    Passthrough,
    /// `--no-passthrough`: pread through the daemon.
    Pread,
}

const LOG_PASSTHROUGH: &str = "file reads use FUSE passthrough";
const LOG_PREAD: &str = "file reads use pread (passthrough turned off)";
const LOG_NO_KERNEL_PASSTHROUGH: &str = "kernel offers no FUSE passthrough; file reads use pread";
const LOG_REFUSED: &str = "FUSE passthrough refused for a backing file";

impl Reads {
    /// `pare mount` arguments: the read mode and a log level that keeps the
    /// mount-time line whatever `RUST_LOG` says.
    fn args(self) -> &'static [&'static str] {
        match self {
            Reads::Passthrough => &["--log-level", "info"],
            Reads::Pread => &["--log-level", "info", "--no-passthrough"],
        }
    }

    /// Checks from the view's log that reads were served this way. A kernel
    /// without FUSE passthrough is a missing prerequisite (as in
    /// [`privileged`]): a failure under `CI=true`, a skipped check otherwise.
    fn check(self, test: &str, log: &str) {
        match self {
            Reads::Passthrough if log.contains(LOG_NO_KERNEL_PASSTHROUGH) => {
                let msg = format!("{test}: the kernel offers no FUSE passthrough");
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "passthrough cannot be checked under CI=true: {msg}"
                );
                eprintln!("SKIPPED the passthrough check of {msg}");
            }
            Reads::Passthrough => assert!(
                log.contains(LOG_PASSTHROUGH) && !log.contains(LOG_REFUSED),
                "reads did not all use FUSE passthrough; pare mount logged:\n{log}"
            ),
            Reads::Pread => assert!(
                log.contains(LOG_PREAD) && !log.contains(LOG_PASSTHROUGH),
                "reads did not use pread; pare mount logged:\n{log}"
            ),
        }
    }
}

fn conformance(test: &str, reads: Reads, via: Via) -> Result<()> {
    if !privileged(test, NEEDS) || !privileged(test, via.needs()) {
        return Ok(());
    }
    let mut args = reads.args().to_vec();
    args.extend(via.args());
    let mounted = Mounted::new(Scratch::new()?, fixture::conformance_stack, &args)?;
    let (ovl_root, pare_root) = (mounted.overlay.path(), mounted.pare.path());

    let overlay = walk::walk(ovl_root)?;
    let pare = walk::walk(pare_root)?;
    let mut failures = expectations("overlay", &overlay, &mounted.fixture);
    failures.extend(expectations("pare", &pare, &mounted.fixture));
    for (name, root) in [("overlay", ovl_root), ("pare", pare_root)] {
        failures.extend(following(name, root));
    }
    let diff = walk::diff(("overlay", &overlay), ("pare", &pare), 40);
    assert!(
        failures.is_empty() && diff.is_empty(),
        "expectations failed:\n{}\n\nthe view differs from overlayfs ({} paths compared):\n{}",
        failures.join("\n"),
        overlay.entries.len(),
        diff.join("\n")
    );
    assert_eq!(
        walk::fs_stats(ovl_root)?,
        walk::fs_stats(pare_root)?,
        "statvfs: overlay vs pare"
    );

    // A second walk of the view answers from the kernel's caches: still the same.
    assert_same(&overlay, &walk::walk(pare_root)?);
    let log = mounted.finish()?;
    reads.check(test, &log);
    via.check(&log);
    Ok(())
}

#[test]
fn privileged_view_equals_overlayfs() -> Result<()> {
    conformance(
        "privileged_view_equals_overlayfs",
        Reads::Passthrough,
        Via::IoUring,
    )
}

#[test]
fn privileged_view_equals_overlayfs_without_passthrough() -> Result<()> {
    conformance(
        "privileged_view_equals_overlayfs_without_passthrough",
        Reads::Pread,
        Via::IoUring,
    )
}

#[test]
fn privileged_view_equals_overlayfs_over_dev_fuse() -> Result<()> {
    conformance(
        "privileged_view_equals_overlayfs_over_dev_fuse",
        Reads::Passthrough,
        Via::DevFuse,
    )
}

#[test]
fn privileged_view_equals_overlayfs_without_passthrough_over_dev_fuse() -> Result<()> {
    conformance(
        "privileged_view_equals_overlayfs_without_passthrough_over_dev_fuse",
        Reads::Pread,
        Via::DevFuse,
    )
}

#[test]
fn privileged_view_mount_type_is_fuse_pare() -> Result<()> {
    if !privileged("privileged_view_mount_type_is_fuse_pare", NEEDS) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let layer = scratch.path().join("layer");
    std::fs::create_dir(&layer)?;
    let pare = PareMount::start(
        &[layer],
        &scratch.path().join("pare"),
        &[],
        &scratch.path().join("pare.log"),
    )?;
    let found = mountinfo::mount_at(pare.path()).map(|m| (m.fs_type, m.source));
    pare.finish()?;
    let expected = ("fuse.pare".to_string(), "pare".to_string());
    assert_eq!(
        found,
        Some(expected),
        "mountinfo (fstype, source) of a view"
    );
    Ok(())
}

#[test]
fn privileged_huge_directory_lists_and_stats_all_entries() -> Result<()> {
    if !privileged(
        "privileged_huge_directory_lists_and_stats_all_entries",
        NEEDS,
    ) {
        return Ok(());
    }
    const ENTRIES: usize = 100_000;
    let build = |dir: &Path| fixture::huge_dir_stack(dir, ENTRIES);
    let mounted = Mounted::new(Scratch::new()?, build, &[])?;
    let huge = mounted.pare.path().join("huge");

    let started = Instant::now();
    let names: Vec<_> = std::fs::read_dir(&huge)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names.len(), ENTRIES, "entries listed in huge/ through pare");
    for name in &names {
        let meta = std::fs::symlink_metadata(huge.join(name))?;
        ensure!(
            meta.is_file(),
            "huge/{} is not a regular file",
            name.to_string_lossy()
        );
    }
    eprintln!(
        "listed and stat'ed {ENTRIES} entries through pare in {:?}",
        started.elapsed()
    );

    let overlay = walk::walk(mounted.overlay.path())?;
    let pare = walk::walk(mounted.pare.path())?;
    assert_eq!(
        overlay.children("huge"),
        pare.children("huge"),
        "names in huge/"
    );
    assert_eq!(pare.children("huge").len(), ENTRIES);
    assert_same(&overlay, &pare);
    mounted.finish()?;
    Ok(())
}

/// Expectations on known paths of the conformance stack, independent of the oracle.
fn expectations(mount: &str, tree: &Tree, fixture: &Fixture) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(format!("{mount}: {what}"));
        }
    };
    let absent = [
        "merged/gone",
        "merged/gonedir",
        "merged/gonedir/child",
        "only3_gone",
        "only3_gone/child",
        "orphan",
        "opaque/lower_only",
        "opaque/sub/x",
        "opaque_top/lower",
        "flip/child2",
        "flop/l3child",
        "wo_then_dir/l3child",
        "dir_to_file/child",
        "many/e00000",
        "many/e00099",
    ];
    for path in absent {
        check(
            tree.get(path).is_none(),
            format!("{path} is visible but should be hidden"),
        );
    }
    let deep = |leaf: &str| {
        let dirs: Vec<String> = (0..DEPTH).map(|i| format!("d{i:02}")).collect();
        format!("deep/{}/{leaf}", dirs.join("/"))
    };
    let present = [
        ("merged/from1", "file"),
        ("merged/from2", "file"),
        ("merged/from3", "file"),
        ("merged/sub/from1", "file"),
        ("merged/sub/from3", "file"),
        ("opaque/upper_only", "file"),
        ("opaque/from1", "file"),
        ("opaque/sub/y", "file"),
        ("opaque_top/upper", "file"),
        ("flip", "file"),
        ("flop/l1child", "file"),
        ("wo_then_dir/l1child", "file"),
        ("file_to_dir/child", "file"),
        ("dir_to_file", "file"),
        ("only1/a/b/file", "file"),
        ("only2/file", "file"),
        ("only3/sub/file", "file"),
        (&deep("leaf1"), "file"),
        (&deep("leaf3"), "file"),
        ("dev/fifo", "fifo"),
        ("dev/socket", "socket"),
        ("dev/null", "char"),
        ("dev/loop300", "block"),
        ("links/loop_a", "symlink"),
        ("names/ünïcødé-日本語-🦀", "file"),
        ("names/new\nline", "file"),
        (&format!("names/{}", "n".repeat(255)), "file"),
        (&format!("names/{}x", "é".repeat(127)), "file"),
    ];
    for (path, kind) in present {
        let got = tree.get(path).map(|e| e.kind);
        check(
            got == Some(kind),
            format!("{path:?}: expected a {kind}, found {got:?}"),
        );
    }
    let field = |path: &str, f: fn(&walk::Entry) -> u64| tree.get(path).map(f);
    for dir in ["", "merged", "merged/sub", "opaque", "deep/d00/d01"] {
        check(
            field(dir, |e| e.nlink) == Some(1),
            format!("merged dir /{dir}: nlink != 1"),
        );
    }
    check(
        field("only3", |e| e.nlink) == Some(3),
        "only3 (one layer, one subdir): nlink != 3".into(),
    );
    check(
        field("flop", |e| e.nlink) == Some(2),
        "flop (not merged): nlink != 2".into(),
    );
    let merged = tree.get("merged");
    check(
        merged.map(|e| (e.mode & 0o7777, e.uid, e.gid)) == Some((0o751, 1234, 5678)),
        format!("merged/ takes l1's mode and owner: {merged:?}"),
    );

    let group = ["hl/a", "hl/b", "hl/sub/c"];
    let inos: Vec<_> = group.iter().map(|p| field(p, |e| e.ino)).collect();
    check(
        inos[0].is_some() && inos.iter().all(|i| *i == inos[0]),
        format!("hl/a, hl/b, hl/sub/c st_ino {inos:?}"),
    );
    check(
        group.iter().all(|p| field(p, |e| e.nlink) == Some(3)),
        "hl group: nlink != 3".into(),
    );
    let groups = tree.hardlink_groups();
    check(
        groups.len() == 1,
        format!("expected one hardlink group, found {groups:?}"),
    );
    check(
        field("hl/s1", |e| e.nlink) == Some(2),
        "hl/s1 keeps its lower nlink 2".into(),
    );
    check(
        field("hl/s1", |e| e.ino) != field("hl/s2", |e| e.ino),
        "hl/s2 is l2's file, not s1's inode".into(),
    );

    check(
        tree.children("many").len() == MANY,
        format!("many/ lists {} entries", tree.children("many").len()),
    );
    let rdev = |p: &str| {
        tree.get(p)
            .map(|e| (rustix::fs::major(e.rdev), rustix::fs::minor(e.rdev)))
    };
    check(
        rdev("dev/null") == Some((1, 3)),
        format!("dev/null rdev {:?}", rdev("dev/null")),
    );
    check(
        rdev("dev/loop300") == Some((7, 300)),
        format!("dev/loop300 rdev {:?}", rdev("dev/loop300")),
    );
    check(
        rdev("dev/bigminor") == Some((511, 70_000)),
        format!("dev/bigminor rdev {:?}", rdev("dev/bigminor")),
    );
    for (path, mode) in [
        ("modes/m000", 0o000),
        ("modes/m4755", 0o4755),
        ("modes/m1777", 0o1777),
        ("modes/m2711", 0o2711),
        ("modes/m2775", 0o2775),
        ("modes/m6755", 0o6755),
        ("modes/d000", 0o000),
    ] {
        let got = field(path, |e| u64::from(e.mode & 0o7777));
        check(
            got == Some(mode),
            format!(
                "{path}: mode {:?} != {mode:o}",
                got.map(|m| format!("{m:o}"))
            ),
        );
    }
    let owner = |p: &str| tree.get(p).map(|e| (e.uid, e.gid));
    check(
        owner("modes/owned") == Some((1234, 5678)),
        "modes/owned owner".into(),
    );
    check(
        owner("modes/nobody") == Some((65534, 65534)),
        "modes/nobody owner".into(),
    );
    check(
        owner("modes/link") == Some((1234, 5678)),
        "modes/link (symlink) owner".into(),
    );

    let xattr = |p: &str, n: &str| {
        let entry = tree.get(p)?;
        entry
            .xattrs
            .iter()
            .find(|(k, _)| k == OsStr::new(n))
            .map(|(_, v)| v.clone())
    };
    let cap = xattr("bin/capbin", "security.capability");
    check(
        cap.as_deref() == Some(&CAP_NET_BIND_SERVICE_EP[..]),
        format!("bin/capbin capability {cap:?}"),
    );
    check(
        xattr("xattrs/file", "user.empty") == Some(vec![]),
        "xattrs/file user.empty".into(),
    );
    check(
        xattr("xattrs/dir", "trusted.note").is_some(),
        "xattrs/dir trusted.note".into(),
    );
    check(
        xattr("xattrs/link", "trusted.note").is_some(),
        "xattrs/link trusted.note".into(),
    );
    let opaque_top = tree.get("opaque_top").map(|e| &e.xattrs);
    let note = (
        OsString::from("trusted.note"),
        b"opaque dir with a visible xattr".to_vec(),
    );
    check(
        opaque_top == Some(&vec![note]),
        format!("opaque_top xattrs {opaque_top:?}"),
    );
    check(
        tree.get("xattrs/shadowed")
            .is_some_and(|e| e.xattrs.is_empty()),
        "xattrs/shadowed has l3's xattr".into(),
    );
    for (path, entry) in &tree.entries {
        let private = entry
            .xattrs
            .iter()
            .find(|(n, _)| n.as_encoded_bytes().starts_with(b"trusted.overlay."));
        check(
            private.is_none(),
            format!(
                "/{}: overlay-private xattr {private:?} visible",
                path.display()
            ),
        );
    }

    let large = tree.get("big/large.bin");
    check(
        large.and_then(|e| e.sha256.as_ref()) == Some(&fixture.large_sha256),
        "big/large.bin content".into(),
    );
    check(
        field("big/large.bin", |e| e.size) == Some(32 << 20),
        "big/large.bin size".into(),
    );
    check(
        field("big/sparse.bin", |e| e.size) == Some(64 << 20),
        "big/sparse.bin size".into(),
    );
    check(
        field("big/sparse.bin", |e| e.blocks).is_some_and(|b| b < 1024),
        "big/sparse.bin is not sparse".into(),
    );
    check(
        field("big/empty", |e| e.size) == Some(0),
        "big/empty size".into(),
    );
    let link = |p: &str| tree.get(p).and_then(|e| e.link.clone());
    check(
        link("links/rel").as_deref() == Some(OsStr::new("../merged/from3")),
        "links/rel target".into(),
    );
    check(
        link("links/long").map(|l| l.len()) == Some(4000),
        "links/long target length".into(),
    );
    let from1 = tree.get("merged/from1");
    check(
        from1.is_some_and(|e| e.atime.1 != 0 && e.mtime.1 != 0),
        format!("merged/from1 times {from1:?}"),
    );
    failures
}

/// Expectations when symlinks are followed through the mount at `root`.
fn following(mount: &str, root: &Path) -> Vec<String> {
    let mut failures = Vec::new();
    match std::fs::metadata(root.join("links/loop_a")) {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {}
        other => failures.push(format!(
            "{mount}: stat links/loop_a: expected ELOOP, got {other:?}"
        )),
    }
    match std::fs::read(root.join("links/chain1")) {
        Ok(content) if content == b"3" => {}
        other => failures.push(format!("{mount}: read links/chain1: {other:?}")),
    }
    match std::fs::read_dir(root.join("links/dirlink")).map(Iterator::count) {
        Ok(5) => {}
        other => failures.push(format!(
            "{mount}: entries of links/dirlink (merged/): {other:?}"
        )),
    }
    match std::fs::metadata(root.join("links/dangling")) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        other => failures.push(format!(
            "{mount}: stat links/dangling: expected ENOENT, got {other:?}"
        )),
    }
    failures
}
