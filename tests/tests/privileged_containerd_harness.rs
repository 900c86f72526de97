//! Proves the containerd harness and the OCI builder with containerd's stock
//! overlayfs snapshotter (no pare involved): a 3-layer image built by the
//! tests imports, unpacks and runs, and containers see exactly what the
//! layers say.

use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::time::{Duration, Instant};

use pare_tests::containerd::{Containerd, Ctr, mounts_under, shims_of};
use pare_tests::mounts::Scratch;
use pare_tests::oci::{DEFAULT_TOOLS, Image, ImageConfig, Layer, host_tools_layer, vfs_cap_v2};
use pare_tests::prereq::{Need, privileged};

const IMAGE: &str = "docker.io/pare-tests/harness:v1";
/// The same layers, with `User` set in the config.
const IMAGE_AS_USER: &str = "docker.io/pare-tests/harness:user";
const SNAPSHOTTER: &str = "overlayfs";
const MTIME: u64 = 1_700_000_000;
/// CAP_NET_BIND_SERVICE.
const CAP_NET_BIND_SERVICE: u64 = 1 << 10;

/// Layer 2: files, a hardlink pair, setuid, a file capability, a symlinked dir.
fn files_layer() -> Layer {
    let mut layer = Layer::new(MTIME);
    layer.dir("data", 0o755);
    layer.file("data/keep.txt", "keep\n", 0o644);
    layer.file("data/gone.txt", "gone\n", 0o644);
    layer.file("data/link-a", "shared\n", 0o644);
    layer.hardlink("data/link-b", "data/link-a");
    layer.file("data/suid", "#!/bin/sh\n", 0o4755);
    layer.dir("data/sticky", 0o1777);
    layer
        .file("data/capfile", "cap\n", 0o755)
        .xattr(
            "security.capability",
            &vfs_cap_v2(CAP_NET_BIND_SERVICE, 0, true),
        )
        .xattr("user.pare", b"hello");
    layer.dir("data/real", 0o755);
    layer.file("data/real/inner.txt", "inner\n", 0o644);
    layer.symlink("data/alias", "real");
    layer.dir("data/opaque", 0o755);
    layer.file("data/opaque/lower1", "lower1\n", 0o644);
    layer.file("data/opaque/lower2", "lower2\n", 0o644);
    layer.fifo("data/pipe", 0o600);
    layer.char_dev("data/null", 1, 3, 0o666);
    layer.file("data/owned", "owned\n", 0o640).owner(1000, 1001);
    layer
}

/// Layer 3: whites out `data/gone.txt`, makes `data/opaque` opaque.
fn changes_layer() -> Layer {
    let mut layer = Layer::new(MTIME + 1);
    layer.dir("data", 0o755);
    layer.whiteout("data/gone.txt");
    layer.dir("data/opaque", 0o755);
    layer.opaque("data/opaque");
    layer.file("data/opaque/upper1", "upper1\n", 0o644);
    layer
}

fn harness_image(user: Option<&str>) -> Result<Image> {
    let mut tools = DEFAULT_TOOLS.to_vec();
    tools.push("getfattr");
    Ok(Image::new()
        .layer(&host_tools_layer(MTIME, &tools)?)?
        .layer(&files_layer())?
        .layer(&changes_layer())?
        .config(ImageConfig {
            cmd: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo $GREETING from $(pwd) as $(id -u):$(id -g)".into(),
            ],
            env: vec!["PATH=/usr/bin:/bin".into(), "GREETING=hello".into()],
            working_dir: Some("/data".into()),
            user: user.map(String::from),
            ..ImageConfig::default()
        }))
}

/// Runs `cmd` in a fresh container `id` and returns its stdout.
fn run(ctr: &Ctr, id: &str, cmd: &[&str]) -> Result<String> {
    ctr.run(IMAGE, id, SNAPSHOTTER, cmd)
}

#[test]
fn privileged_containerd_harness_runs_a_built_image_on_overlayfs() -> Result<()> {
    if !privileged(
        "privileged_containerd_harness_runs_a_built_image_on_overlayfs",
        NEEDS,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let containerd = Containerd::start(&scratch.path().join("containerd"), "")?;
    let result = check(&containerd, &scratch);
    if result.is_err() {
        eprintln!("containerd log (tail):\n{}", containerd.log_tail(60));
    }
    containerd.stop()?;
    result
}

/// Needs of every test here.
const NEEDS: &[Need] = &[
    Need::Root,
    Need::Overlay,
    Need::Command("containerd"),
    Need::Command("ctr"),
    Need::Command("runc"),
    Need::Command("getfattr"),
];

fn check(containerd: &Containerd, scratch: &Scratch) -> Result<()> {
    let ctr = containerd.ctr();
    let tarball = scratch.path().join("image.tar");
    let image = harness_image(None)?.write_oci_archive(IMAGE, &tarball)?;
    ctr.import(&tarball, SNAPSHOTTER)?;
    let as_user = harness_image(Some("1000:1001"))?.write_oci_archive(IMAGE_AS_USER, &tarball)?;
    ctr.import(&tarball, SNAPSHOTTER)?;
    ensure!(as_user.chain_ids() == image.chain_ids());
    let stdout = ctr.run(IMAGE_AS_USER, "harness-user", SNAPSHOTTER, &[])?;
    ensure!(
        stdout == "hello from /data as 1000:1001\n",
        "the image config gives cmd, env, workdir and user: printed {stdout:?}"
    );

    // The unpacker names committed layers by the chain IDs we compute.
    let snapshots = ctr.ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"])?;
    let snapshots = String::from_utf8(snapshots.stdout)?;
    for chain_id in image.chain_ids() {
        ensure!(
            snapshots.contains(&format!("{chain_id} ")),
            "no committed snapshot {chain_id} in:\n{snapshots}"
        );
    }
    let images = String::from_utf8(ctr.ctr(&["images", "ls"])?.stdout)?;
    ensure!(
        images.contains(IMAGE) && images.contains(image.manifest_digest.as_str()),
        "{IMAGE} with {} not listed:\n{images}",
        image.manifest_digest
    );

    let cases: &[(&str, &[&str], &str)] = &[
        (
            "without User in the config, the container runs as root",
            &[],
            "hello from /data as 0:0\n",
        ),
        (
            "the whiteout hides gone.txt and leaves no marker",
            &["ls", "-a", "/data"],
            ".\n..\nalias\ncapfile\nkeep.txt\nlink-a\nlink-b\nnull\nopaque\nowned\npipe\nreal\nsticky\nsuid\n",
        ),
        (
            "the opaque dir has only the upper layer's content",
            &["ls", "-a", "/data/opaque"],
            ".\n..\nupper1\n",
        ),
        (
            "hardlinks share an inode",
            &[
                "sh",
                "-c",
                "[ $(stat -c %i /data/link-a) = $(stat -c %i /data/link-b) ] && stat -c %h /data/link-b",
            ],
            "2\n",
        ),
        (
            "mode bits, owners and times",
            &[
                "stat",
                "-c",
                "%n %a %u:%g %Y",
                "/data/suid",
                "/data/sticky",
                "/data/owned",
                "/data/link-b",
                "/data/opaque",
            ],
            "/data/suid 4755 0:0 1700000000\n/data/sticky 1777 0:0 1700000000\n\
             /data/owned 640 1000:1001 1700000000\n/data/link-b 644 0:0 1700000000\n\
             /data/opaque 755 0:0 1700000001\n",
        ),
        (
            "the file capability and user xattr are applied",
            &[
                "getfattr",
                "--absolute-names",
                "-e",
                "hex",
                "-n",
                "security.capability",
                "/data/capfile",
            ],
            "# file: /data/capfile\nsecurity.capability=0x0100000200040000000000000000000000000000\n\n",
        ),
        (
            "user xattrs are applied",
            &[
                "getfattr",
                "--only-values",
                "-n",
                "user.pare",
                "/data/capfile",
            ],
            "hello",
        ),
        (
            "symlinked dir resolves",
            &[
                "sh",
                "-c",
                "readlink /data/alias && cat /data/alias/inner.txt",
            ],
            "real\ninner\n",
        ),
        (
            "fifo and char device",
            &["stat", "-c", "%F %t:%T", "/data/pipe", "/data/null"],
            "fifo 0:0\ncharacter special file 1:3\n",
        ),
        (
            "container writes land in its own upper dir",
            &[
                "sh",
                "-c",
                "echo scratch > /data/new.txt && echo changed > /data/keep.txt && cat /data/new.txt /data/keep.txt",
            ],
            "scratch\nchanged\n",
        ),
        (
            "a write of one container is invisible in the next",
            &[
                "sh",
                "-c",
                "test -e /data/new.txt && echo present || echo absent; cat /data/keep.txt",
            ],
            "absent\nkeep\n",
        ),
    ];
    for (i, (behaviour, cmd, expected)) in cases.iter().enumerate() {
        let stdout = run(&ctr, &format!("harness-{i}"), cmd).context(*behaviour)?;
        ensure!(
            stdout == *expected,
            "{behaviour}: {cmd:?} printed {stdout:?}, expected {expected:?}"
        );
    }
    Ok(())
}

#[test]
fn privileged_containerd_harness_drop_leaves_no_container_shim_or_mount() -> Result<()> {
    if !privileged(
        "privileged_containerd_harness_drop_leaves_no_container_shim_or_mount",
        NEEDS,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let containerd = Containerd::start(&scratch.path().join("containerd"), "")?;
    let ctr = containerd.ctr();
    let tarball = scratch.path().join("image.tar");
    Image::new()
        .layer(&host_tools_layer(MTIME, DEFAULT_TOOLS)?)?
        .write_oci_archive(IMAGE, &tarball)?;
    ctr.import(&tarball, SNAPSHOTTER)?;
    ctr.run_detached(IMAGE, "removed", SNAPSHOTTER, &["sleep", "1000"])?;
    ctr.remove("removed")?;
    let containers = String::from_utf8(ctr.ctr(&["containers", "ls", "-q"])?.stdout)?;
    ensure!(containers.is_empty(), "Ctr::remove left {containers:?}");
    ctr.run_detached(IMAGE, "sleeper", SNAPSHOTTER, &["sleep", "1000"])?;

    let tasks = String::from_utf8(ctr.ctr(&["tasks", "ls"])?.stdout)?;
    let pid: i32 = tasks
        .lines()
        .find_map(|l| l.strip_prefix("sleeper "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no running sleeper task in:\n{tasks}"))?;
    let address = containerd.address().to_path_buf();
    let dir = containerd.dir().to_path_buf();
    let containerd_pid = containerd.pid().context("containerd runs")?;
    ensure!(!shims_of(&address).is_empty(), "no shim serves the sleeper");
    ensure!(
        !mounts_under(&dir).is_empty(),
        "the sleeper's rootfs is not mounted under {}",
        dir.display()
    );

    drop(containerd);
    ensure!(shims_of(&address).is_empty(), "shims survived the drop");
    ensure!(
        mounts_under(&dir).is_empty(),
        "mounts survived: {:?}",
        mounts_under(&dir)
    );
    for pid in [pid, containerd_pid as i32] {
        ensure!(gone(pid), "process {pid} survived the drop");
    }
    Ok(())
}

/// True once process `pid` has exited (zombies are reaped by init soon after).
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if !Path::new(&format!("/proc/{pid}")).exists() || state == Some("Z") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
