//! `pare compact` end to end: an image runs under pare-snapshotter, is
//! compacted, and the minimized image runs the same workload with the stock
//! overlayfs snapshotter, holding only the workload's closure with every kept
//! entry's metadata intact. Compaction is deterministic, and the OCI layout
//! output imports with `ctr`. Long names and symlink targets (PAX records)
//! go through containerd's own unpacker intact.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use pare_fs::id::Digest;
use pare_tests::containerd::{Containerd, Ctr};
use pare_tests::images::harness_image;
use pare_tests::mounts::Scratch;
use pare_tests::prereq::{Need, PARE_NODE, pare_bin, privileged};
use pare_tests::snapshotter::PareSnapshotter;
use pare_tools::compact::CompactSummary;

const IMAGE: &str = "docker.io/pare-tests/compact:v1";
const MINIMIZED: &str = "docker.io/pare-tests/compact:v1-pare";

const NEEDS: &[Need] = PARE_NODE;

/// The workload: reads, a symlinked dir, special bits and xattrs.
const WORKLOAD: &str = "cat /data/keep.txt /data/alias/inner.txt /data/opaque/upper1; \
    stat -c '%n %a %u:%g %Y %h' /data/suid /data/owned /data/link-a; \
    getfattr --absolute-names -e hex -n security.capability /data/capfile";

/// Every entry as `find` prints it (directories without size and link count,
/// which depend on the file system holding them), sorted.
const WALK: &str = "find / -xdev -mindepth 1 \\( -path /proc -o -path /sys -o -path /dev -o -path /run \\) -prune \
    -o \\( -type d -printf '%p %y %m %U:%G %T@\\n' \\) -o -printf '%p %y %m %U:%G %s %T@ %n %l\\n'";

/// `pare compact --json` of IMAGE with `extra` options: what it made.
fn compact(node: &Node, extra: &[&str]) -> Result<CompactSummary> {
    let out = Command::new(pare_bin())
        .arg("compact")
        .arg("--json")
        .arg("--address")
        .arg(node.containerd.address())
        .args(["--namespace", "pare-tests", "--root"])
        .arg(node.pare.root())
        .args(extra)
        .arg(IMAGE)
        .output()?;
    ensure!(
        out.status.success(),
        "pare compact failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "pare compact --json printed {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The summary `pare compact --json` printed names what containerd stores:
/// the image record's manifest, the manifest's config and layer, the layer
/// blob (compressed: `ctr content get` finds it by the summary's layer
/// digest) and its tar (uncompressed: the config's diff id), with the sizes
/// and counts the summary gives.
fn check_summary_against_store(ctr: &Ctr, summary: &CompactSummary) -> Result<()> {
    ensure!(summary.source == IMAGE && summary.image == MINIMIZED && summary.oci_layout.is_none());
    let content = |digest: &Digest| -> Result<Vec<u8>> {
        let bytes = ctr.ctr(&["content", "get", digest.as_str()])?.stdout;
        ensure!(
            Digest::sha256(&bytes) == *digest,
            "ctr content get {digest} gives other bytes"
        );
        Ok(bytes)
    };
    let listed = ctr.ctr(&["images", "ls"])?.stdout;
    let record = String::from_utf8(listed)?
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(MINIMIZED)).then(|| f.nth(1).map(String::from))?
        })
        .context("ctr images ls lists the minimized image")?;
    ensure!(
        record == summary.manifest_digest.as_str(),
        "the image record points at {record}, the summary names {}",
        summary.manifest_digest
    );
    let manifest: serde_json::Value = serde_json::from_slice(&content(&summary.manifest_digest)?)?;
    ensure!(manifest["config"]["digest"] == summary.config_digest.as_str());
    ensure!(manifest["layers"][0]["digest"] == summary.layer_digest.as_str());
    ensure!(manifest["layers"][0]["mediaType"] == summary.layer_media_type.as_str());
    ensure!(manifest["layers"][0]["size"] == summary.layer_compressed_bytes);
    let config: serde_json::Value = serde_json::from_slice(&content(&summary.config_digest)?)?;
    ensure!(config["rootfs"]["diff_ids"] == serde_json::json!([summary.layer_diff_id]));

    let blob = content(&summary.layer_digest)?;
    ensure!(
        blob.len() as u64 == summary.layer_compressed_bytes,
        "layer blob of {} bytes, summary says {}",
        blob.len(),
        summary.layer_compressed_bytes
    );
    let mut tar_bytes = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&blob[..]), &mut tar_bytes)?;
    ensure!(tar_bytes.len() as u64 == summary.layer_uncompressed_bytes);
    ensure!(Digest::sha256(&tar_bytes) == summary.layer_diff_id);
    let (mut files, mut bytes) = (0, 0);
    for entry in tar::Archive::new(&tar_bytes[..]).entries()? {
        let header = entry?.header().clone();
        match header.entry_type() {
            tar::EntryType::Directory => {}
            tar::EntryType::Regular => {
                files += 1;
                bytes += header.size()?;
            }
            _ => files += 1,
        }
    }
    ensure!(
        summary.files.kept == files && summary.file_bytes.kept == bytes,
        "the layer holds {files} files of {bytes} bytes, the summary says {:?} and {:?}",
        summary.files,
        summary.file_bytes
    );
    ensure!(summary.files.total > summary.files.kept);
    ensure!(summary.file_bytes.total > summary.file_bytes.kept);
    ensure!(
        summary.packages.is_none(),
        "the image has no dpkg database, yet the summary counts packages: {:?}",
        summary.packages
    );
    Ok(())
}

struct Node {
    containerd: Containerd,
    pare: PareSnapshotter,
    scratch: Scratch,
}

fn walk(ctr: &Ctr, image: &str, id: &str) -> Result<BTreeMap<String, String>> {
    let out = ctr.run(image, id, "overlayfs", &["sh", "-c", WALK])?;
    Ok(out
        .lines()
        .map(|l| (l.split(' ').next().unwrap_or("").to_string(), l.to_string()))
        .collect())
}

#[test]
fn privileged_compacted_image_runs_the_workload_and_holds_only_its_closure() -> Result<()> {
    if !privileged(
        "privileged_compacted_image_runs_the_workload_and_holds_only_its_closure",
        NEEDS,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let pare = PareSnapshotter::start(&scratch.path().join("pare"))?;
    let containerd = Containerd::start(
        &scratch.path().join("containerd"),
        &pare.containerd_config(),
    )?;
    let node = Node {
        containerd,
        pare,
        scratch,
    };
    let result = check(&node);
    if result.is_err() {
        eprintln!("pare-snapshotter log:\n{}", node.pare.log_text());
    }
    result
}

fn check(node: &Node) -> Result<()> {
    let ctr = node.containerd.ctr();
    let tarball = node.scratch.path().join("image.tar");
    harness_image(None)?.write_oci_archive(IMAGE, &tarball)?;
    ctr.import(&tarball, "pare")?;
    ctr.import(&tarball, "overlayfs")?;
    let expected = ctr.run(IMAGE, "profile-run", "pare", &["sh", "-c", WORKLOAD])?;
    ensure!(
        expected.contains("keep\ninner\nupper1\n"),
        "workload output: {expected}"
    );

    // The profile tools find the image's profile on this node.
    let pare = |args: &[&str]| -> Result<String> {
        let out = Command::new(pare_bin()).args(args).output()?;
        ensure!(
            out.status.success(),
            "pare {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    };
    let root = node.pare.root().to_str().context("root path")?.to_string();
    let address = node
        .containerd
        .address()
        .to_str()
        .context("socket path")?
        .to_string();
    let shown: serde_json::Value = serde_json::from_str(&pare(&[
        "profile",
        "show",
        "--json",
        "--root",
        &root,
        "--address",
        &address,
        "--namespace",
        "pare-tests",
        IMAGE,
    ])?)?;
    let chain = shown["image"]
        .as_str()
        .context("the profile names its chain")?
        .to_string();
    ensure!(
        shown["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["path"] == "/data/keep.txt"))
    );
    let listed = pare(&["profile", "list", "--json", "--root", &root])?;
    ensure!(
        listed.contains(&chain),
        "profile list names {chain}: {listed}"
    );
    let file = pare_fs::id::profile_path(
        node.pare.root(),
        &pare_fs::id::ChainId::from_snapshot_name(chain.clone()),
    );
    let merged = node.scratch.path().join("merged.profile");
    pare(&[
        "profile",
        "merge",
        "-o",
        merged.to_str().unwrap(),
        file.to_str().unwrap(),
        file.to_str().unwrap(),
    ])?;
    let merged_json: serde_json::Value = serde_json::from_str(&pare(&[
        "profile",
        "show",
        "--json",
        merged.to_str().unwrap(),
    ])?)?;
    ensure!(
        merged_json["entries"] == shown["entries"],
        "merging a profile with itself changes nothing"
    );

    let summary = compact(node, &[])?;
    ensure!(
        summary.profile == file,
        "compacted with {:?}",
        summary.profile
    );
    check_summary_against_store(&ctr, &summary)?;
    let again = compact(node, &[])?;
    ensure!(
        again.manifest_digest == summary.manifest_digest,
        "compacting twice gives one digest:\n{summary:?}\n{again:?}"
    );

    // The minimized image, on the stock snapshotter, runs the workload identically.
    let minimized = ctr.run(
        MINIMIZED,
        "minimized-run",
        "overlayfs",
        &["sh", "-c", WORKLOAD],
    )?;
    ensure!(
        minimized == expected,
        "minimized output {minimized:?}, original {expected:?}"
    );

    // It holds the closure only: never-used tools and files are gone.
    let probe = |paths: &[&str]| -> Result<Vec<String>> {
        let script = format!(
            "for p in {}; do test -e $p -o -h $p && echo $p; done; true",
            paths.join(" ")
        );
        let out = ctr.run(MINIMIZED, "probe", "overlayfs", &["sh", "-c", &script])?;
        Ok(out.lines().map(String::from).collect())
    };
    let unused = [
        "/usr/bin/ls",
        "/usr/bin/sleep",
        "/usr/bin/wc",
        "/usr/bin/find",
        "/data/gone.txt",
        "/data/pipe",
        "/data/null",
        "/data/opaque/lower1",
    ];
    ensure!(
        probe(&unused)?.is_empty(),
        "never-used entries kept: {:?}",
        probe(&unused)?
    );
    let used = [
        "/data/keep.txt",
        "/data/real/inner.txt",
        "/data/alias",
        "/data/opaque/upper1",
        "/usr/bin/getfattr",
        "/usr/bin/cat",
        "/etc/passwd",
        "/tmp",
    ];
    ensure!(
        probe(&used)? == used,
        "used entries kept: {:?}",
        probe(&used)?
    );

    // Every kept entry's metadata equals the original's: walked with find,
    // which `--include-exec` keeps on purpose, with its ELF closure.
    let walkable = "docker.io/pare-tests/compact:walk";
    compact(
        node,
        &["--include-exec", "/usr/bin/find", "--tag", walkable],
    )?;
    let original = walk(&ctr, IMAGE, "walk-original")?;
    let small = walk(&ctr, walkable, "walk-minimized")?;
    for (path, line) in &small {
        let orig = original
            .get(path)
            .with_context(|| format!("{path} is not in the original image"))?;
        ensure!(
            orig == line,
            "metadata differs:\noriginal:  {orig}\nminimized: {line}"
        );
    }
    ensure!(!small.contains_key("/usr/bin/ls") && small.contains_key("/usr/bin/find"));

    // A profile of another image is refused, with one clear line.
    let foreign = node.scratch.path().join("foreign.profile");
    pare_fs::profile::Recorder::open(
        &foreign,
        Some("sha256:0000".into()),
        std::time::Duration::from_millis(10),
    )?
    .finish()?;
    let err = compact(
        node,
        &["--profile", foreign.to_str().unwrap(), "--tag", "x:y"],
    )
    .unwrap_err();
    ensure!(
        format!("{err:#}").contains("is a profile of image chain sha256:0000"),
        "refusal message: {err:#}"
    );

    // The OCI layout output imports with ctr and runs the same.
    let layout = node.scratch.path().join("layout");
    let written = compact(
        node,
        &[
            "--oci-layout",
            layout.to_str().unwrap(),
            "--tag",
            "docker.io/pare-tests/compact:layout",
        ],
    )?;
    ensure!(
        written.oci_layout.as_deref() == Some(layout.as_path())
            && written.image == "docker.io/pare-tests/compact:layout"
            && written.layer_digest == summary.layer_digest,
        "the layout's summary: {written:?}"
    );
    let blob = layout.join("blobs/sha256").join(written.layer_digest.hex());
    ensure!(std::fs::metadata(&blob)?.len() == written.layer_compressed_bytes);
    let tar = node.scratch.path().join("layout.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()?;
    ensure!(status.success(), "tar of the layout");
    ctr.import(&tar, "overlayfs")?;
    let from_layout = ctr.run(
        "docker.io/pare-tests/compact:layout",
        "layout-run",
        "overlayfs",
        &["sh", "-c", WORKLOAD],
    )?;
    ensure!(
        from_layout == expected,
        "layout image output {from_layout:?}"
    );
    Ok(())
}

/// Names of the long-name image (relative to the image root).
struct LongNames {
    dir: String,
    link: String,
    file: String,
    short_link: String,
    hardlink: String,
}

fn long_names() -> LongNames {
    let dir = format!("srv/{}", "d".repeat(110));
    LongNames {
        link: format!("{dir}/{}", "l".repeat(50)),
        file: format!("{dir}/{}", "f".repeat(50)),
        dir,
        short_link: "srv/short".into(),
        hardlink: format!("srv/{}", "h".repeat(110)),
    }
}

fn long_link_target() -> String {
    format!("../{}/end", "t".repeat(150))
}

fn short_link_target() -> String {
    format!("/{}", "s".repeat(200))
}

/// Nanosecond mtimes set on the unpacked source layer (the fixture builder
/// writes whole seconds): path, seconds, nanoseconds.
fn long_name_times(n: &LongNames) -> Vec<(String, i64, i64)> {
    vec![
        (n.dir.clone(), 1_700_000_010, 111_111_111),
        (n.link.clone(), 1_700_000_011, 222_222_222),
        (n.file.clone(), 1_700_000_012, 333_333_333),
        (n.short_link.clone(), 1_700_000_013, 444_444_444),
    ]
}

/// A symlink whose target is over 100 bytes, at a path over 100 bytes, with
/// an xattr and a nanosecond mtime, goes through compaction and containerd's
/// own unpacker (stock overlayfs snapshotter) intact; so do a long file name
/// with xattrs, a long hardlink name and a long directory.
#[test]
fn privileged_long_names_and_symlink_targets_survive_containerds_unpacker() -> Result<()> {
    if !privileged(
        "privileged_long_names_and_symlink_targets_survive_containerds_unpacker",
        pare_tests::prereq::CONTAINERD,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let containerd = Containerd::start(&scratch.path().join("containerd"), "")?;
    let result = check_long_names(&containerd, &scratch);
    if result.is_err() {
        eprintln!("containerd log:\n{}", containerd.log_tail(40));
    }
    result
}

fn check_long_names(containerd: &Containerd, scratch: &Scratch) -> Result<()> {
    use pare_tests::containerd::{CONTAINERD_TIMEOUT, CTR_TIMEOUT, run_with_timeout};
    use std::os::unix::fs::MetadataExt;
    const SOURCE: &str = "docker.io/pare-tests/long-names:v1";
    const TARGET: &str = "docker.io/pare-tests/long-names:v1-pare";
    let n = long_names();
    let ctr = containerd.ctr();
    let mut layer = pare_tests::oci::Layer::new(1_700_000_000);
    layer.dir("srv", 0o755);
    layer
        .dir(&n.dir, 0o755)
        .xattr("user.dir", b"on a long directory");
    // A symlink takes only trusted.* and security.* xattrs, and containerd
    // applies no trusted.* from an archive.
    layer
        .symlink(&n.link, &long_link_target())
        .xattr("security.pare", b"on a long symlink");
    layer
        .file(&n.file, "long\n", 0o644)
        .xattr("user.pare", b"on a long file");
    layer.symlink(&n.short_link, &short_link_target());
    layer.hardlink(&n.hardlink, &n.file);
    let tarball = scratch.path().join("long-names.tar");
    let built = pare_tests::oci::Image::new()
        .layer(&layer)?
        .write_oci_archive(SOURCE, &tarball)?;
    ctr.import(&tarball, "overlayfs")?;
    let chain = built.top_chain_id().context("one layer")?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The unpacked source layer's directory, as pare compact finds it.
    let source_dirs = runtime.block_on(async {
        tokio::time::timeout(CONTAINERD_TIMEOUT, async {
            pare_tools::containerd::Client::connect(
                containerd.address(),
                pare_tests::containerd::NAMESPACE,
            )
            .await?
            .layer_dirs("overlayfs", &chain)
            .await
        })
        .await
    })??;
    let source = &source_dirs[0];
    for (path, sec, nsec) in long_name_times(&n) {
        let times = rustix::fs::Timestamps {
            last_access: rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: 0,
            },
            last_modification: rustix::fs::Timespec {
                tv_sec: sec,
                tv_nsec: nsec,
            },
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            source.join(&path),
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )?;
    }

    let profile = scratch.path().join("long-names.profile");
    let profiled = [&n.link, &n.file, &n.short_link].map(|p| format!("/{p}"));
    pare_tests::large::write_profile(&profile, chain.as_str(), profiled.iter())?;
    let out = run_with_timeout(
        Command::new(pare_bin())
            .arg("compact")
            .arg("--address")
            .arg(containerd.address())
            .args(["--namespace", "pare-tests", "--snapshotter", "overlayfs"])
            .arg("--profile")
            .arg(&profile)
            .args(["--tag", TARGET, SOURCE]),
        CTR_TIMEOUT,
    )?;
    ensure!(
        out.status.success(),
        "pare compact failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // containerd unpacks the minimized image with its own tar reader.
    let mounted = containerd.dir().join("long-names");
    std::fs::create_dir(&mounted)?;
    let target = mounted.to_str().context("UTF-8 path")?;
    ctr.ctr(&[
        "images",
        "mount",
        "--snapshotter",
        "overlayfs",
        TARGET,
        target,
    ])?;
    let checked = (|| -> Result<()> {
        let read_link = |rel: &str| std::fs::read_link(mounted.join(rel));
        ensure!(read_link(&n.link)?.to_str() == Some(long_link_target().as_str()));
        ensure!(read_link(&n.short_link)?.to_str() == Some(short_link_target().as_str()));
        for (path, sec, nsec) in long_name_times(&n) {
            let meta = std::fs::symlink_metadata(mounted.join(&path))?;
            ensure!(
                (meta.mtime(), meta.mtime_nsec()) == (sec, nsec),
                "{path}: mtime {}.{:09}, expected {sec}.{nsec:09}",
                meta.mtime(),
                meta.mtime_nsec()
            );
        }
        let xattr = |rel: &str, name: &str| -> Result<Vec<u8>> {
            let mut buf = vec![0u8; 256];
            let len = rustix::fs::lgetxattr(mounted.join(rel), name, &mut buf[..])
                .with_context(|| format!("{name} of {rel}"))?;
            buf.truncate(len);
            Ok(buf)
        };
        ensure!(xattr(&n.link, "security.pare")? == b"on a long symlink");
        ensure!(xattr(&n.file, "user.pare")? == b"on a long file");
        ensure!(xattr(&n.dir, "user.dir")? == b"on a long directory");
        let (file, hardlink) = (
            std::fs::metadata(mounted.join(&n.file))?,
            std::fs::metadata(mounted.join(&n.hardlink))?,
        );
        ensure!(
            file.ino() == hardlink.ino(),
            "the long hardlink shares the long file's inode"
        );
        ensure!(std::fs::read(mounted.join(&n.hardlink))? == b"long\n");
        Ok(())
    })();
    ctr.ctr(&["images", "unmount", target])?;
    checked
}
