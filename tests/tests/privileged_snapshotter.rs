//! pare-snapshotter under a real containerd and runc: images imported and run
//! with `--snapshotter pare` behave exactly as with the stock overlayfs
//! snapshotter, every container of an image shares one profiling view, the
//! profile records the workload, and the daemon survives SIGKILL.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pare_fs::profile::Profile;
use pare_tests::containerd::{Containerd, Ctr};
use pare_tests::images::{harness_image, run_checks};
use pare_tests::mounts::Scratch;
use pare_tests::poll::eventually;
use pare_tests::prereq::{Need, PARE_NODE, pare_bin, privileged};
use pare_tests::snapshotter::PareSnapshotter;

const IMAGE: &str = "docker.io/pare-tests/snapshotter:v1";

const NEEDS: &[Need] = PARE_NODE;

/// How long containerd's garbage collection may take to reach the backend.
const GC: Duration = Duration::from_secs(60);
/// How long containerd may take to redial a restarted snapshotter.
const REDIAL: Duration = Duration::from_secs(60);
/// How long a journaled access may take to reach the profile (it is flushed
/// every 100 ms).
const FLUSHED: Duration = Duration::from_secs(10);

/// A private containerd with pare plugged in, the fixture image imported with
/// both pare and the stock overlayfs snapshotter.
struct Node {
    containerd: Containerd,
    pare: PareSnapshotter,
    top_chain: String,
    _scratch: Scratch,
}

impl Node {
    fn start() -> Result<Node> {
        let scratch = Scratch::new()?;
        let pare = PareSnapshotter::start(&scratch.path().join("pare"))?;
        let containerd = Containerd::start(
            &scratch.path().join("containerd"),
            &pare.containerd_config(),
        )?;
        let tarball = scratch.path().join("image.tar");
        let image = harness_image(None)?.write_oci_archive(IMAGE, &tarball)?;
        let ctr = containerd.ctr();
        ctr.import(&tarball, "pare")?;
        ctr.import(&tarball, "overlayfs")?;
        Ok(Node {
            top_chain: image
                .top_chain_id()
                .context("the image has layers")?
                .to_string(),
            containerd,
            pare,
            _scratch: scratch,
        })
    }

    fn ctr(&self) -> Ctr {
        self.containerd.ctr()
    }

    fn logs(&self) -> String {
        format!(
            "--- containerd (tail) ---\n{}\n--- pare-snapshotter (tail) ---\n{}",
            self.containerd.log_tail(40),
            tail(&self.pare.log_text(), 60)
        )
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `f`; on failure adds both daemons' logs to the error.
fn with_logs(node: &Node, f: impl FnOnce(&Node) -> Result<()>) -> Result<()> {
    f(node).map_err(|e| e.context(node.logs()))
}

/// Every entry of the rootfs as a container sees it (type, mode, owner, size,
/// mtime, link count, symlink target), the content hash of every file, and the
/// xattrs of the fixture's files.
/// The runtime's own mounts (/proc, /sys, /dev, /run) are left out; lines are
/// sorted by the test, listing order is not part of the contract.
const WALK: &str = "find / -xdev -mindepth 1 \\( -path /proc -o -path /sys -o -path /dev -o -path /run \\) -prune \
    -o -printf '%p %y %m %U:%G %s %T@ %n %l\\n'; \
    find / -xdev -type f -exec sha256sum {} +; \
    getfattr -R -h -d -m - -e hex --absolute-names /data /usr/bin 2>/dev/null";

fn sorted_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines
}

#[test]
fn privileged_containers_run_on_the_pare_view_like_on_overlayfs() -> Result<()> {
    if !privileged(
        "privileged_containers_run_on_the_pare_view_like_on_overlayfs",
        NEEDS,
    ) {
        return Ok(());
    }
    let node = Node::start()?;
    with_logs(&node, |node| {
        let ctr = node.ctr();
        // Behaviour: the fixture checks, including isolation of writes.
        run_checks(&ctr, IMAGE, "pare", "pare")?;

        // The profile of the image: the checks' files are there, untouched ones not.
        let profile = node.pare.root().join("profiles").join(&node.top_chain);
        let out = std::process::Command::new(pare_bin())
            .args(["profile", "show", "--json"])
            .arg(&profile)
            .output()?;
        ensure!(
            out.status.success(),
            "pare profile show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ensure!(
            json["image"] == node.top_chain.as_str(),
            "profile header names the chain: {}",
            json["image"]
        );
        let kinds = |path: &str| -> Vec<String> {
            json["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["path"] == path)
                .map(|e| {
                    e["accesses"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|k| k.as_str().unwrap().to_string())
                        .collect()
                })
                .unwrap_or_default()
        };
        ensure!(
            kinds("/data/keep.txt").contains(&"read".to_string()),
            "keep.txt read"
        );
        ensure!(
            kinds("/usr/bin/getfattr").contains(&"exec".to_string()),
            "getfattr exec"
        );
        ensure!(
            kinds("/data/alias").contains(&"readlink".to_string()),
            "alias readlink"
        );
        for untouched in [
            "/usr/bin/sleep",
            "/usr/bin/wc",
            "/data/gone.txt",
            "/data/new.txt",
        ] {
            ensure!(
                kinds(untouched).is_empty(),
                "{untouched} is in the profile but was never used"
            );
        }

        // The rootfs walked inside a container equals the stock overlayfs one.
        let on_pare = ctr.run(IMAGE, "walk-pare", "pare", &["sh", "-c", WALK])?;
        let on_overlay = ctr.run(IMAGE, "walk-overlay", "overlayfs", &["sh", "-c", WALK])?;
        let (on_pare, on_overlay) = (sorted_lines(&on_pare), sorted_lines(&on_overlay));
        ensure!(
            on_pare.len() > 50,
            "the walk saw the rootfs:\n{}",
            on_pare.join("\n")
        );
        if on_pare != on_overlay {
            let diff: Vec<String> = on_overlay
                .iter()
                .zip(on_pare.iter())
                .filter(|(a, b)| a != b)
                .take(20)
                .map(|(a, b)| format!("overlayfs: {a}\npare:      {b}"))
                .collect();
            anyhow::bail!("rootfs differs from overlayfs:\n{}", diff.join("\n"));
        }
        Ok(())
    })
}

#[test]
fn privileged_twenty_concurrent_containers_share_one_view() -> Result<()> {
    if !privileged(
        "privileged_twenty_concurrent_containers_share_one_view",
        NEEDS,
    ) {
        return Ok(());
    }
    let node = Node::start()?;
    with_logs(&node, |node| {
        let ids: Vec<String> = (0..20).map(|i| format!("many-{i}")).collect();
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = ids
                .iter()
                .map(|id| {
                    let ctr = node.ctr();
                    s.spawn(move || ctr.run_detached(IMAGE, id, "pare", &["sleep", "300"]))
                })
                .collect();
            for h in handles {
                h.join()
                    .expect("thread")
                    .context("a concurrent container failed to start")?;
            }
            Ok(())
        })?;
        let tasks = String::from_utf8(node.ctr().ctr(&["tasks", "ls"])?.stdout)?;
        let running = tasks.lines().filter(|l| l.contains("RUNNING")).count();
        ensure!(running == 20, "20 tasks running:\n{tasks}");
        let views = node.pare.mounted_views();
        ensure!(views.len() == 1, "one view for one image: {views:?}");

        for id in &ids {
            node.ctr().remove(id)?;
        }
        // containerd removes backend snapshots in its garbage collection.
        eventually(
            GC,
            "the view to be unmounted after its last container",
            || Ok(node.pare.mounted_views().is_empty()),
        )?;

        // Cleanup frees directories no snapshot references.
        let orphan = node.pare.root().join("snapshots").join("999999");
        std::fs::create_dir_all(orphan.join("fs"))?;
        node.ctr().run(IMAGE, "trigger-gc", "pare", &["true"])?;
        eventually(GC, "Cleanup to remove an orphaned snapshot dir", || {
            Ok(!orphan.exists())
        })
    })
}

#[test]
fn privileged_sigkill_between_runs_loses_nothing_committed() -> Result<()> {
    if !privileged(
        "privileged_sigkill_between_runs_loses_nothing_committed",
        NEEDS,
    ) {
        return Ok(());
    }
    let mut node = Node::start()?;
    let first = node
        .ctr()
        .run(IMAGE, "before", "pare", &["cat", "/data/keep.txt"]);
    ensure!(
        first.as_deref().ok() == Some("keep\n"),
        "first run: {first:?}\n{}",
        node.logs()
    );
    node.pare.kill()?;
    node.pare.restart()?;
    with_logs(&node, |node| {
        // containerd's gRPC client redials the restarted socket with backoff:
        // until it has, calls fail as unavailable (and nothing else may fail).
        let mut again = String::new();
        let mut attempt = 0;
        eventually(
            REDIAL,
            "containerd to reach the restarted snapshotter",
            || {
                attempt += 1;
                let id = format!("after-{attempt}");
                match node
                    .ctr()
                    .run(IMAGE, &id, "pare", &["cat", "/data/keep.txt"])
                {
                    Ok(out) => {
                        again = out;
                        Ok(true)
                    }
                    Err(e) if format!("{e:#}").contains("unavailable") => Ok(false),
                    Err(e) => Err(e),
                }
            },
        )?;
        ensure!(
            again == "keep\n",
            "the image runs again without re-import: {again:?}"
        );
        run_checks(&node.ctr(), IMAGE, "pare", "after-restart")?;
        let root: &Path = node.pare.root();
        ensure!(root.join("metadata.db").exists());
        Ok(())
    })?;
    node.pare.stop()
}

/// What runc and containerd themselves touch in a rootfs before and around the
/// workload (the root, mount targets, and the account files read to resolve
/// the user), as observed with runc 1.1 and containerd 1.6; documented in
/// docs/PROFILE.md.
const RUNTIME_PATHS: &[&str] = &[
    "/",
    "/dev",
    "/proc",
    "/sys",
    "/run",
    "/etc",
    "/etc/passwd",
    "/etc/group",
    "/tmp",
];

#[test]
fn privileged_profile_lists_what_the_workload_touched() -> Result<()> {
    if !privileged("privileged_profile_lists_what_the_workload_touched", NEEDS) {
        return Ok(());
    }
    use pare_tests::images::MTIME;
    use pare_tests::oci::{DEFAULT_TOOLS, Image, Layer, host_tools_layer};
    let scratch = Scratch::new()?;
    let pare = PareSnapshotter::start(&scratch.path().join("pare"))?;
    let containerd = Containerd::start(
        &scratch.path().join("containerd"),
        &pare.containerd_config(),
    )?;
    let mut app = Layer::new(MTIME);
    app.dir("app", 0o755);
    app.file("app/run.sh", "#!/bin/sh\ncat /app/data.txt\n", 0o755);
    app.file("app/data.txt", "data\n", 0o644);
    app.file("app/unused.txt", "never read\n", 0o644);
    let tarball = scratch.path().join("app.tar");
    let image = Image::new()
        .layer(&host_tools_layer(MTIME, DEFAULT_TOOLS)?)?
        .layer(&app)?
        .write_oci_archive("docker.io/pare-tests/app:v1", &tarball)?;
    let ctr = containerd.ctr();
    ctr.import(&tarball, "pare")?;
    let out = ctr.run(
        "docker.io/pare-tests/app:v1",
        "app",
        "pare",
        &["/app/run.sh"],
    )?;
    ensure!(out == "data\n", "workload output {out:?}");
    let chain = image.top_chain_id().context("layers")?.to_string();
    // The workload: the script (exec by the kernel, read by sh), its shell
    // and the shell's loader and libraries, cat and its file.
    let sh = std::fs::canonicalize("/bin/sh")?;
    let shell = format!("/usr/bin/{}", sh.file_name().unwrap().to_string_lossy());
    let expected: &[(&str, &[&str])] = &[
        ("/app", &["lookup"]),
        ("/app/run.sh", &["lookup", "exec", "read"]),
        ("/app/data.txt", &["lookup", "read"]),
        ("/usr/bin/cat", &["lookup", "exec"]),
        (shell.as_str(), &["lookup", "exec"]),
    ];
    let kinds = |profile: &Profile, p: &str| -> Vec<&'static str> {
        profile
            .entries
            .iter()
            .find(|e| e.path.to_string() == p)
            .map(|e| e.accesses.iter().map(|k| k.name()).collect())
            .unwrap_or_default()
    };
    let covered = |profile: &Profile| {
        expected.iter().all(|(path, want)| {
            let got = kinds(profile, path);
            want.iter().all(|k| got.contains(k))
        })
    };
    // The journal is flushed every 100 ms (the view may still be mounted):
    // wait until the workload's accesses are in it.
    let profile_path = pare.root().join("profiles").join(&chain);
    let mut profile = pare_fs::profile::read(&profile_path)?;
    let waited = eventually(FLUSHED, "the workload's accesses in the profile", || {
        profile = pare_fs::profile::read(&profile_path)?;
        Ok(covered(&profile))
    });
    let paths: Vec<String> = profile.entries.iter().map(|e| e.path.to_string()).collect();
    if let Err(e) = waited {
        let missing: Vec<String> = expected
            .iter()
            .map(|(path, want)| {
                format!(
                    "{path}: {:?}, expected at least {want:?}",
                    kinds(&profile, path)
                )
            })
            .collect();
        anyhow::bail!("{e:#}:\n{}\nprofile:\n{paths:#?}", missing.join("\n"));
    }
    // Nothing outside the workload's closure and the runtime's own paths.
    // The loader and libraries, and the directories of the shell's PATH search.
    let libs = |p: &str| {
        p.starts_with("/lib")
            || p.starts_with("/usr/lib")
            || [
                "/bin",
                "/usr",
                "/usr/bin",
                "/usr/sbin",
                "/sbin",
                "/usr/bin/sh",
            ]
            .contains(&p)
    };
    let unexpected: Vec<&String> = paths
        .iter()
        .filter(|p| !expected.iter().any(|(e, _)| e == p))
        .filter(|p| !RUNTIME_PATHS.contains(&p.as_str()) && !libs(p))
        .collect();
    ensure!(
        unexpected.is_empty(),
        "paths the workload never used: {unexpected:?}"
    );
    ensure!(
        kinds(&profile, "/app/unused.txt").is_empty() && kinds(&profile, "/usr/bin/ls").is_empty()
    );
    containerd.stop()?;
    pare.stop()
}
