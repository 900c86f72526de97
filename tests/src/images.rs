//! The fixture image shared by the containerd tests (three layers: host tools;
//! files, links, special bits and xattrs; whiteouts and an opaque dir) and the
//! checks every snapshotter must pass when running it.

use anyhow::{Context, Result, ensure};

use crate::containerd::Ctr;
use crate::oci::{DEFAULT_TOOLS, Image, ImageConfig, Layer, host_tools_layer, vfs_cap_v2};

/// mtime of the fixture's entries.
pub const MTIME: u64 = 1_700_000_000;
/// CAP_NET_BIND_SERVICE.
const CAP_NET_BIND_SERVICE: u64 = 1 << 10;

/// Layer 2: files, a hardlink pair, setuid, a file capability, a symlinked dir.
pub fn files_layer() -> Layer {
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
pub fn changes_layer() -> Layer {
    let mut layer = Layer::new(MTIME + 1);
    layer.dir("data", 0o755);
    layer.whiteout("data/gone.txt");
    layer.dir("data/opaque", 0o755);
    layer.opaque("data/opaque");
    layer.file("data/opaque/upper1", "upper1\n", 0o644);
    layer
}

/// The fixture image; `user` sets the config's User.
pub fn harness_image(user: Option<&str>) -> Result<Image> {
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

/// Runs the fixture checks against `image` (unpacked with `snapshotter`) in
/// fresh containers named `<prefix>-<n>`: every behaviour a rootfs of the
/// fixture must show, with exact output.
pub fn run_checks(ctr: &Ctr, image: &str, snapshotter: &str, prefix: &str) -> Result<()> {
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
        let stdout = ctr
            .run(image, &format!("{prefix}-{i}"), snapshotter, cmd)
            .context(*behaviour)?;
        ensure!(
            stdout == *expected,
            "{behaviour}: {cmd:?} printed {stdout:?}, expected {expected:?}"
        );
    }
    Ok(())
}
