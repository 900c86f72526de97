//! `pare report` end to end: two images imported into a private containerd
//! (a 3-layer original with whiteouts, an opaque directory, a hardlink and a
//! dpkg status of 3 packages; a 1-layer minimized image with 1 package) are
//! compared from their blobs, as JSON, text and HTML, with exact figures.

use std::process::{Command, Output};

use anyhow::{Result, ensure};
use pare_tests::containerd::Containerd;
use pare_tests::mounts::Scratch;
use pare_tests::oci::{BuiltImage, Image, Layer};
use pare_tests::prereq::{CONTAINERD, Need, pare_bin, privileged};
use serde_json::{Value, json};

const ORIGINAL: &str = "docker.io/pare-tests/report:v1";
const MINIMIZED: &str = "docker.io/pare-tests/report:v1-pare";

const NEEDS: &[Need] = CONTAINERD;

const STATUS_3: &str = "Package: app\nStatus: install ok installed\nInstalled-Size: 10\n\n\
Package: tool\nStatus: install ok installed\nInstalled-Size: 20\n\n\
Package: docs\nStatus: install ok installed\nInstalled-Size: 4\n";
const STATUS_1: &str = "Package: app\nStatus: install ok installed\nInstalled-Size: 10\n";

fn bytes(n: usize) -> Vec<u8> {
    vec![b'x'; n]
}

/// The original: 7 files (one a hardlink) after whiteouts and an opaque dir.
fn original() -> Result<Image> {
    let mut base = Layer::new(1_700_000_000);
    base.dir_all("etc", 0o755);
    base.file("etc/passwd", bytes(50), 0o644);
    base.dir_all("usr/bin", 0o755);
    base.file("usr/bin/app", bytes(1000), 0o755);
    base.hardlink("usr/bin/app-link", "usr/bin/app");
    base.dir_all("usr/share/doc/app", 0o755);
    base.file("usr/share/doc/app/copyright", bytes(300), 0o644);
    base.dir_all("usr/share/doc/tool", 0o755);
    base.file("usr/share/doc/tool/copyright", bytes(200), 0o644);
    base.dir_all("usr/lib/tool", 0o755);
    base.file("usr/lib/tool/libtool.so", bytes(5000), 0o644);
    base.dir_all("var/lib/dpkg", 0o755);
    base.file("var/lib/dpkg/status", STATUS_3, 0o644);

    let mut second = Layer::new(1_700_000_100);
    second.dir_all("usr/share/doc", 0o755);
    second.whiteout("usr/share/doc/tool");
    second.dir_all("usr/bin", 0o755);
    second.file("usr/bin/tool", bytes(700), 0o755);
    second.dir_all("etc", 0o755);
    second.file("etc/passwd", bytes(60), 0o644);

    let mut third = Layer::new(1_700_000_200);
    third.dir_all("usr/lib/tool", 0o755);
    third.opaque("usr/lib/tool");
    third.file("usr/lib/tool/libtool.so.2", bytes(4000), 0o644);

    Image::new().layer(&base)?.layer(&second)?.layer(&third)
}

/// The minimized image: 3 of the files and a status of 1 package.
fn minimized() -> Result<Image> {
    let mut layer = Layer::new(1_700_000_300);
    layer.dir_all("etc", 0o755);
    layer.file("etc/passwd", bytes(60), 0o644);
    layer.dir_all("usr/bin", 0o755);
    layer.file("usr/bin/app", bytes(1000), 0o755);
    layer.dir_all("var/lib/dpkg", 0o755);
    layer.file("var/lib/dpkg/status", STATUS_1, 0o644);
    Image::new().layer(&layer)
}

fn report(containerd: &Containerd, args: &[&str]) -> Result<Output> {
    Ok(Command::new(pare_bin())
        .arg("report")
        .arg("--address")
        .arg(containerd.address())
        .args(["--namespace", "pare-tests"])
        .args(args)
        .output()?)
}

fn summary(image: &BuiltImage, name: &str, files: u64, bytes: u64, packages: u64) -> Value {
    json!({
        "name": name,
        "manifest_digest": image.manifest_digest.as_str(),
        "layers": image.layers.len(),
        "compressed_bytes": image.layers.iter().map(|l| l.gz.len()).sum::<usize>(),
        "uncompressed_bytes": image.layers.iter().map(|l| l.tar.len()).sum::<usize>(),
        "files": files,
        "bytes": bytes,
        "packages": packages,
    })
}

#[test]
fn privileged_report_compares_two_images_from_their_blobs() -> Result<()> {
    if !privileged(
        "privileged_report_compares_two_images_from_their_blobs",
        NEEDS,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let containerd = Containerd::start(&scratch.path().join("containerd"), "")?;
    let ctr = containerd.ctr();
    let original_tar = scratch.path().join("original.tar");
    let minimized_tar = scratch.path().join("minimized.tar");
    let orig = original()?.write_oci_archive(ORIGINAL, &original_tar)?;
    let min = minimized()?.write_oci_archive(MINIMIZED, &minimized_tar)?;
    ctr.import(&original_tar, "overlayfs")?;
    ctr.import(&minimized_tar, "overlayfs")?;

    let html_path = scratch.path().join("report.html");
    let html_arg = html_path.to_str().expect("UTF-8 scratch path");
    let out = report(
        &containerd,
        &["--json", "--html", html_arg, ORIGINAL, MINIMIZED],
    )?;
    ensure!(
        out.status.success(),
        "pare report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout)?;

    let orig_bytes = 60 + 1000 + 700 + 300 + 4000 + STATUS_3.len() as u64;
    let min_bytes = 60 + 1000 + STATUS_1.len() as u64;
    assert_eq!(got["original"], summary(&orig, ORIGINAL, 7, orig_bytes, 3));
    assert_eq!(got["minimized"], summary(&min, MINIMIZED, 3, min_bytes, 1));
    assert_eq!(got["ratios"]["layers"], json!(1.0 / 3.0));
    assert_eq!(got["ratios"]["files"], json!(3.0 / 7.0));
    assert_eq!(
        got["ratios"]["bytes"],
        json!(min_bytes as f64 / orig_bytes as f64)
    );
    assert_eq!(
        got["removed"],
        json!({"files": 4, "bytes": 5000, "packages": 2, "package_bytes": 24 * 1024})
    );
    let dir = |path: &str, rf: u64, rb: u64, kf: u64, kb: u64| json!({"path": path, "removed_files": rf, "removed_bytes": rb, "kept_files": kf, "kept_bytes": kb});
    assert_eq!(
        got["top_directories"],
        json!([
            dir("/usr/lib/tool", 1, 4000, 0, 0),
            // app-link is gone but app keeps the hardlinked bytes.
            dir("/usr/bin", 2, 700, 1, 1000),
            dir("/usr/share/doc", 1, 300, 0, 0),
        ])
    );
    assert_eq!(
        got["top_removed_packages"],
        json!([
            {"name": "tool", "installed_size_bytes": 20 * 1024},
            {"name": "docs", "installed_size_bytes": 4 * 1024},
        ])
    );

    let page = std::fs::read_to_string(&html_path)?;
    for needle in [
        "<svg",
        ORIGINAL,
        MINIMIZED,
        orig.manifest_digest.as_str(),
        "/usr/lib/tool",
    ] {
        ensure!(page.contains(needle), "the page lacks {needle:?}");
    }
    for banned in ["<script", "src=", "<link", "url(", "@import"] {
        ensure!(
            !page.contains(banned),
            "the page has {banned:?}: it must load nothing"
        );
    }

    let text = report(&containerd, &[ORIGINAL, MINIMIZED])?;
    ensure!(text.status.success());
    let text = String::from_utf8(text.stdout)?;
    ensure!(
        text.contains("removed: 4 files (4.9 KiB), 2 packages (24.0 KiB installed)"),
        "text report:\n{text}"
    );
    Ok(())
}

#[test]
fn privileged_report_of_a_missing_image_is_one_error_line() -> Result<()> {
    if !privileged(
        "privileged_report_of_a_missing_image_is_one_error_line",
        NEEDS,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let containerd = Containerd::start(&scratch.path().join("containerd"), "")?;
    let min = scratch.path().join("minimized.tar");
    minimized()?.write_oci_archive(MINIMIZED, &min)?;
    containerd.ctr().import(&min, "overlayfs")?;
    let out = report(&containerd, &["docker.io/pare-tests/absent:v1", MINIMIZED])?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(!out.status.success(), "a missing image must fail");
    ensure!(
        stderr.starts_with("pare: ") && stderr.trim_end().lines().count() == 1,
        "stderr: {stderr}"
    );
    ensure!(
        stderr.contains("docker.io/pare-tests/absent:v1 not found"),
        "stderr: {stderr}"
    );
    Ok(())
}
