//! One closure, two outputs: the enforced view of an image, walked inside a
//! running container under pare-snapshotter, equals the image `pare compact`
//! builds from the same profile and options, walked inside a container on the
//! stock overlayfs snapshotter: the same entries with the same type, mode
//! bits, owner, mtime, symlink target, xattrs, hardlink grouping, size and
//! content. Exempt are what a tar layer cannot carry or compaction rewrites on
//! purpose (link counts, directory sizes, atime, ctime, blocks), the
//! runtime's own mounts (`/proc`, `/sys`, `/dev`, ...) and the mtime of the
//! root, which in a running container is its upper directory's. The fixture
//! has no dpkg database, so no package metadata is exempt.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use pare_fs::mountinfo;
use pare_tests::containerd::Ctr;
use pare_tests::images::harness_image;
use pare_tests::node::PareNode;
use pare_tests::prereq::{PARE_NODE, privileged};
use pare_tests::walk::{self, Tree};

const IMAGE: &str = "docker.io/pare-tests/enforce-compact:v1";
const COMPACTED: &str = "docker.io/pare-tests/enforce-compact:v1-pare";

/// The options both `pare compact` and `pare mode ... enforce` get: one glob
/// keeps a directory the workload never opened, one drops a file it read.
const RULES: &[&str] = &["--include", "/data/opaque/*", "--exclude", "/data/keep.txt"];

/// The learn run: one name of the hardlink pair, a path through the
/// symlinked directory, the file with xattrs, the setuid file, a nested
/// directory, and `sleep`, which the compared containers run.
const WORKLOAD: &str = "cat /data/link-a /data/alias/inner.txt /data/capfile /data/keep.txt; \
    stat -c '%a' /data/suid; ls /data/real; sleep 0";

/// Where a container's runtime mounts things of its own: these mount points
/// (and anything mounted beneath the first three) are not the image's.
const RUNTIME_MOUNTS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "run",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/hostname",
];

/// The host pid of container `id`'s task, from `ctr tasks ls`.
fn task_pid(ctr: &Ctr, id: &str) -> Result<u32> {
    let listed = String::from_utf8(ctr.ctr(&["tasks", "ls"])?.stdout)?;
    listed
        .lines()
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            (fields.next() == Some(id)).then(|| fields.next()?.parse().ok())?
        })
        .with_context(|| format!("no task {id} in {listed}"))
}

/// The mount points inside container `pid`'s root other than the root
/// itself, relative to it; each must be one the runtime makes.
fn runtime_mounts(pid: u32) -> Result<BTreeSet<PathBuf>> {
    let mut points = BTreeSet::new();
    for mount in mountinfo::read_of(&pid.to_string())? {
        let rel = mount.mount_point.strip_prefix("/")?.to_path_buf();
        if rel.as_os_str().is_empty() {
            continue;
        }
        let expected = RUNTIME_MOUNTS.iter().any(|m| rel == Path::new(m))
            || ["proc", "sys", "dev"].iter().any(|m| rel.starts_with(m));
        ensure!(
            expected,
            "container {pid} has an unexpected mount on /{rel:?}"
        );
        points.insert(rel);
    }
    Ok(points)
}

/// Starts container `id` of `image` on `snapshotter` and walks its root
/// filesystem as the container sees it (through `/proc/PID/root`), leaving
/// out the runtime's mounts; the exempt fields are zeroed. Returns the tree
/// and the mount points left out.
///
/// The root directory of a writable rootfs is the container's own upper
/// directory, made when its snapshot is prepared (neither image's layers
/// hold a `./` entry): its mtime must be no older than `started`, and is
/// then zeroed; its other fields are compared.
fn walk_container(
    ctr: &Ctr,
    image: &str,
    id: &str,
    snapshotter: &str,
    started: SystemTime,
) -> Result<(Tree, BTreeSet<PathBuf>)> {
    ctr.run_detached(image, id, snapshotter, &["/usr/bin/sleep", "600"])?;
    let pid = task_pid(ctr, id)?;
    let mounts = runtime_mounts(pid)?;
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut tree = walk::walk_pruned(&root, &mounts)
        .with_context(|| format!("walking container {id} ({snapshotter})"))?;
    ensure!(
        task_pid(ctr, id)? == pid,
        "container {id} ran throughout the walk"
    );
    ctr.remove(id)?;
    let root_entry = tree.entries.get_mut(Path::new("")).context("the root")?;
    // File times come from a coarse clock, a tick behind the wall clock.
    let since = started.duration_since(UNIX_EPOCH)?.as_secs() as i64 - 1;
    ensure!(
        root_entry.mtime.0 >= since,
        "{id}: the root's mtime {:?} predates the container",
        root_entry.mtime
    );
    root_entry.mtime = (0, 0);
    for entry in tree.entries.values_mut() {
        entry.atime = (0, 0);
        entry.ctime = (0, 0);
        entry.nlink = 0;
        entry.blocks = 0;
        if entry.kind == "dir" {
            entry.size = 0;
        }
    }
    Ok((tree, mounts))
}

/// The walk holds what the workload and the options keep, so that equality
/// means something.
fn check_non_trivial(side: &str, tree: &Tree) -> Result<()> {
    let has = |rel: &str| tree.get(rel).is_some();
    ensure!(
        tree.entries.len() >= 20,
        "{side}: only {} entries",
        tree.entries.len()
    );
    for rel in [
        "usr/bin/sh",
        "usr/bin/cat",
        "usr/bin/sleep",
        "data/link-a",
        "data/real/inner.txt",
        "data/opaque/upper1",
    ] {
        ensure!(has(rel), "{side}: /{rel} is kept");
    }
    for rel in [
        "data/keep.txt",
        "data/gone.txt",
        "data/opaque/lower1",
        "usr/bin/find",
    ] {
        ensure!(!has(rel), "{side}: /{rel} is not kept");
    }
    let pair: BTreeSet<PathBuf> = ["data/link-a", "data/link-b"].map(PathBuf::from).into();
    ensure!(
        tree.hardlink_groups().contains(&pair),
        "{side}: the hardlink pair, of which the workload read one name: {:?}",
        tree.hardlink_groups()
    );
    let alias = tree.get("data/alias").context("the symlinked dir")?;
    ensure!(
        alias.kind == "symlink" && alias.link.as_deref() == Some("real".as_ref()),
        "{side}: /data/alias is {alias:?}"
    );
    let cap = tree.get("data/capfile").context("the xattr file")?;
    ensure!(
        cap.xattrs
            .iter()
            .any(|(n, v)| n == "security.capability" && !v.is_empty())
            && cap
                .xattrs
                .iter()
                .any(|(n, v)| n == "user.pare" && v == b"hello"),
        "{side}: /data/capfile xattrs {:?}",
        cap.xattrs
    );
    let suid = tree.get("data/suid").context("the setuid file")?;
    ensure!(
        suid.mode & 0o7777 == 0o4755,
        "{side}: /data/suid mode {:o}",
        suid.mode
    );
    ensure!(
        tree.get("var/lib/dpkg").is_none(),
        "{side}: the fixture has no dpkg database, so nothing is exempt as package metadata"
    );
    Ok(())
}

#[test]
fn privileged_enforced_view_equals_compacted_image() -> Result<()> {
    if !privileged("privileged_enforced_view_equals_compacted_image", PARE_NODE) {
        return Ok(());
    }
    let mut node = PareNode::start()?;
    node.checked(|node| {
        let ctr = node.ctr();
        let tarball = node.scratch.path().join("image.tar");
        harness_image(None)?.write_oci_archive(IMAGE, &tarball)?;
        ctr.import(&tarball, "pare")?;

        let out = ctr.run(IMAGE, "learn", "pare", &["sh", "-c", WORKLOAD])?;
        ensure!(
            out == "shared\ninner\ncap\nkeep\n4755\ninner.txt\n",
            "learn run: {out:?}"
        );

        let mut compact = vec!["compact", "--tag", COMPACTED];
        compact.extend_from_slice(RULES);
        compact.push(IMAGE);
        node.pare(&compact)?;
        let mut enforce = vec!["mode", IMAGE, "enforce"];
        enforce.extend_from_slice(RULES);
        node.pare(&enforce)?;

        let started = SystemTime::now();
        let (enforced, enforced_mounts) = walk_container(&ctr, IMAGE, "enforced", "pare", started)?;
        let (compacted, compacted_mounts) =
            walk_container(&ctr, COMPACTED, "compacted", "overlayfs", started)?;
        ensure!(
            enforced_mounts == compacted_mounts,
            "runtime mounts differ: enforced {enforced_mounts:?}, compacted {compacted_mounts:?}"
        );
        check_non_trivial("enforced", &enforced)?;
        check_non_trivial("compacted", &compacted)?;

        let diff = walk::diff(("enforced", &enforced), ("compacted", &compacted), 60);
        ensure!(
            diff.is_empty(),
            "the enforced view and the compacted image differ:\n{}",
            diff.join("\n")
        );
        Ok(())
    })?;
    node.stop()
}
