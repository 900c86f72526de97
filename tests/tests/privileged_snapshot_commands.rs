//! `ctr snapshots` on pare answers as on the stock overlayfs snapshotter:
//! the same calls on both give the same kinds, parents, labels and usage of
//! every snapshot, the same mount types and the same refusals.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pare_tests::containerd::{Ctr, run_with_timeout};
use pare_tests::images::harness_image;
use pare_tests::node::PareNode;
use pare_tests::prereq::{PARE_NODE, privileged};

const IMAGE: &str = "docker.io/pare-tests/snapshots:v1";

/// One snapshot as `ctr snapshots info` and `usage -b` report it: what
/// overlayfs and pare must agree on. Left out: `Created` and `Updated`
/// (clock times of each snapshotter's own calls); the value of the label
/// [`GC_ROOT`] is a clock time too and is kept as [`CLOCK_TIME`].
#[derive(Debug, PartialEq, Eq)]
struct SnapshotInfo {
    kind: String,
    parent: String,
    labels: BTreeMap<String, String>,
    size: u64,
    inodes: u64,
}

/// The label ctr puts on a snapshot it creates, with the time of creation as
/// its value (containerd's garbage collector keeps it).
const GC_ROOT: &str = "containerd.io/gc.root";
/// What the value of [`GC_ROOT`] is compared as.
const CLOCK_TIME: &str = "<clock time>";

/// `ctr snapshots --snapshotter S ...`.
fn snapshots(ctr: &Ctr, snapshotter: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["snapshots", "--snapshotter", snapshotter];
    all.extend_from_slice(args);
    Ok(String::from_utf8(ctr.ctr(&all)?.stdout)?)
}

/// Every snapshot of `snapshotter`, by key, from `ls`, `info` (JSON) and
/// `usage -b`.
fn all_snapshots(ctr: &Ctr, snapshotter: &str) -> Result<BTreeMap<String, SnapshotInfo>> {
    let list = snapshots(ctr, snapshotter, &["ls"])?;
    let mut out = BTreeMap::new();
    // KEY PARENT KIND, under a header.
    for key in list
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
    {
        let text = snapshots(ctr, snapshotter, &["info", key])?;
        let info: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{snapshotter} info {key}: {text}"))?;
        ensure!(
            info["Name"] == key,
            "{snapshotter} info {key} names {}",
            info["Name"]
        );
        let field = |name: &str| info[name].as_str().unwrap_or_default().to_string();
        let mut labels: BTreeMap<String, String> = match &info["Labels"] {
            serde_json::Value::Null => BTreeMap::new(),
            labels => serde_json::from_value(labels.clone())
                .with_context(|| format!("{snapshotter} info {key} labels: {labels}"))?,
        };
        if let Some(time) = labels.get_mut(GC_ROOT) {
            ensure!(
                time.len() == "2006-01-02T15:04:05Z".len() && time.ends_with('Z'),
                "{snapshotter} info {key}: {GC_ROOT}={time} is not a UTC time"
            );
            *time = CLOCK_TIME.to_string();
        }
        // KEY SIZE INODES, under a header.
        let usage = snapshots(ctr, snapshotter, &["usage", "-b", key])?;
        let row: Vec<&str> = usage
            .lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        let [name, size, inodes] = row[..] else {
            anyhow::bail!("{snapshotter} usage -b {key}: {usage}");
        };
        ensure!(name == key, "{snapshotter} usage -b {key}: {usage}");
        out.insert(
            key.to_string(),
            SnapshotInfo {
                kind: field("Kind"),
                parent: field("Parent"),
                labels,
                size: size.parse().with_context(|| format!("size in {usage}"))?,
                inodes: inodes
                    .parse()
                    .with_context(|| format!("inodes in {usage}"))?,
            },
        );
    }
    Ok(out)
}

/// The mounts `ctr snapshots mounts TARGET KEY` prints, one
/// `mount -t TYPE SOURCE TARGET -o OPTIONS` line each, as (type, source,
/// options).
fn snapshot_mounts(
    ctr: &Ctr,
    snapshotter: &str,
    target: &Path,
    key: &str,
) -> Result<Vec<(String, String, Vec<String>)>> {
    let target = target.to_str().context("non-UTF-8 target")?;
    let text = snapshots(ctr, snapshotter, &["mounts", target, key])?;
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            match f[..] {
                ["mount", "-t", kind, source, t, "-o", options] if t == target => Ok((
                    kind.to_string(),
                    source.to_string(),
                    options.split(',').map(String::from).collect(),
                )),
                _ => anyhow::bail!("{snapshotter} mounts {key}: unexpected line {line:?}"),
            }
        })
        .collect()
}

/// The file system types of the mounts of `key` (sources and options name
/// each snapshotter's own directories: they differ).
fn mount_types_of(ctr: &Ctr, snapshotter: &str, key: &str) -> Result<Vec<String>> {
    let mounts = snapshot_mounts(ctr, snapshotter, Path::new("/mnt"), key)?;
    Ok(mounts.into_iter().map(|(kind, _, _)| kind).collect())
}

/// Mounts what `ctr snapshots mounts` says for `key` on `target` (with
/// mount(8), as the printed command line would), runs `write` in it and
/// unmounts. A mount left behind by a failure is beneath containerd's
/// directory, which its guard cleans up.
fn write_through_mounts(
    ctr: &Ctr,
    snapshotter: &str,
    target: &Path,
    key: &str,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    std::fs::create_dir_all(target)?;
    let mounts = snapshot_mounts(ctr, snapshotter, target, key)?;
    let [(kind, source, options)] = &mounts[..] else {
        anyhow::bail!("{snapshotter} {key}: one mount expected, got {mounts:?}");
    };
    let run = |cmd: &mut std::process::Command| -> Result<()> {
        let out = run_with_timeout(cmd, Duration::from_secs(30))?;
        ensure!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(std::process::Command::new("mount")
        .args(["-t", kind, source])
        .arg(target)
        .args(["-o", &options.join(",")]))?;
    write(target)?;
    run(std::process::Command::new("umount").arg(target))
}

/// The same `ctr snapshots` calls on pare and on overlayfs give the same
/// kinds, parents, labels and usage for every snapshot, the same mount types
/// and the same errors. Usage is `du` of each snapshot's own directory
/// (blocks, each inode once); both roots are in one scratch directory on one
/// file system, so the same files take the same blocks. Where they
/// legitimately differ, nothing is compared: creation and update times, the
/// value of [`GC_ROOT`] (a time), and mount sources and options (paths of
/// each snapshotter's directories, and pare's view as the lower layer).
#[test]
fn privileged_snapshots_commands_behave_as_with_overlayfs() -> Result<()> {
    if !privileged(
        "privileged_snapshots_commands_behave_as_with_overlayfs",
        PARE_NODE,
    ) {
        return Ok(());
    }
    let mut node = PareNode::start()?;
    let tarball = node.scratch.path().join("image.tar");
    let image = harness_image(None)?.write_oci_archive(IMAGE, &tarball)?;
    let top = image.top_chain_id().context("layers")?.to_string();
    let top = top.as_str();
    node.checked(|node| {
        let ctr = node.ctr();
        ctr.import(&tarball, "overlayfs")?;
        ctr.import(&tarball, "pare")?;
        let mut seen: BTreeMap<&str, Vec<BTreeMap<String, SnapshotInfo>>> = BTreeMap::new();
        let mut mount_types = BTreeMap::new();
        for snapshotter in ["overlayfs", "pare"] {
            let states = seen.entry(snapshotter).or_default();
            let cmd = |args: &[&str]| snapshots(&ctr, snapshotter, args);
            // The imported image.
            states.push(all_snapshots(&ctr, snapshotter)?);
            cmd(&["label", top, "test.pare/label=yes"])?;
            cmd(&["prepare", "scratch-active", top])?;
            // Writes through the active snapshot's mounts land in its usage.
            let target = node.containerd.dir().join(format!("mnt-{snapshotter}"));
            write_through_mounts(&ctr, snapshotter, &target, "scratch-active", |root| {
                std::fs::create_dir(root.join("scratch"))?;
                std::fs::write(root.join("scratch/blob"), vec![7u8; 100 * 1024])?;
                std::fs::hard_link(root.join("scratch/blob"), root.join("scratch/link"))?;
                std::os::unix::fs::symlink("blob", root.join("scratch/sym"))?;
                Ok(())
            })?;
            states.push(all_snapshots(&ctr, snapshotter)?);
            let active_types = mount_types_of(&ctr, snapshotter, "scratch-active")?;
            cmd(&["commit", "scratch-committed", "scratch-active"])?;
            cmd(&["view", "scratch-view", "scratch-committed"])?;
            states.push(all_snapshots(&ctr, snapshotter)?);
            mount_types.insert(
                snapshotter,
                [
                    active_types,
                    mount_types_of(&ctr, snapshotter, "scratch-view")?,
                ],
            );
            for (key, why) in [
                (top, "a parent with children"),
                ("scratch-committed", "a parent with children"),
                ("missing", "a missing snapshot"),
            ] {
                ensure!(
                    cmd(&["rm", key]).is_err(),
                    "{snapshotter}: {why} ({key}) cannot be removed"
                );
            }
            cmd(&["rm", "scratch-view"])?;
            cmd(&["rm", "scratch-committed"])?;
            states.push(all_snapshots(&ctr, snapshotter)?);
        }
        let (overlay, pare) = (&seen["overlayfs"], &seen["pare"]);
        for (step, (o, p)) in [
            "imported",
            "prepared and written",
            "committed and viewed",
            "removed",
        ]
        .iter()
        .zip(overlay.iter().zip(pare))
        {
            ensure!(
                o.keys().eq(p.keys()),
                "{step}: snapshot keys differ:\noverlayfs: {:?}\npare:      {:?}",
                o.keys(),
                p.keys()
            );
            for (key, o) in o {
                let p = &p[key];
                ensure!(
                    o == p,
                    "{step}: {key} differs:\noverlayfs: {o:?}\npare:      {p:?}"
                );
            }
        }
        ensure!(
            mount_types["overlayfs"] == mount_types["pare"],
            "mount types of scratch-active and scratch-view: {mount_types:?}"
        );
        // The steps did what they say (the comparison above cannot pass vacuously).
        let [imported, written, committed, removed] = &overlay[..] else {
            anyhow::bail!("four states");
        };
        ensure!(
            imported[top].kind == "Committed"
                && !imported[top].labels.contains_key("test.pare/label")
        );
        ensure!(
            written[top]
                .labels
                .get("test.pare/label")
                .map(String::as_str)
                == Some("yes")
        );
        let active = &written["scratch-active"];
        ensure!(
            active.kind == "Active" && active.parent == top,
            "{active:?}"
        );
        ensure!(
            active.size >= 100 * 1024 && active.inodes == 4,
            "scratch-active usage: {active:?}"
        );
        let (c, v) = (&committed["scratch-committed"], &committed["scratch-view"]);
        ensure!(c.kind == "Committed" && c.parent == top, "{c:?}");
        ensure!(
            (c.size, c.inodes) == (active.size, active.inodes),
            "usage kept at commit: {c:?}"
        );
        ensure!(v.kind == "View" && v.parent == "scratch-committed", "{v:?}");
        ensure!(
            (v.size, v.inodes) == (0, 0),
            "a view holds nothing of its own: {v:?}"
        );
        ensure!(
            !committed.contains_key("scratch-active"),
            "commit removes the active key"
        );
        ensure!(
            removed.keys().eq(imported.keys()),
            "back to the imported snapshots"
        );
        Ok(())
    })?;
    node.stop()
}
