//! `pare report` end to end: two images imported into a private containerd
//! (a 3-layer usrmerged original with whiteouts, an opaque directory, a
//! hardlink, a shell, a package manager, a download tool, an interpreter, a
//! setuid file, a file with capabilities and a dpkg status of 3 packages; a
//! 1-layer minimized image that keeps the interpreter, the capability file
//! and 1 package) are compared from their blobs, as JSON, text and HTML, with
//! exact figures and the exact hardening section. On a pare node, an audit
//! run of an image that touches a path its minimized image does not keep
//! shows in the report's misses section as a removed path, flagged.

use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pare_tests::containerd::Containerd;
use pare_tests::mounts::Scratch;
use pare_tests::node::{PareNode, app_layer, import_tools_image};
use pare_tests::oci::{BuiltImage, Image, Layer, vfs_cap_v2};
use pare_tests::poll::wait_for;
use pare_tests::prereq::{CONTAINERD, Need, PARE_NODE, pare_bin, privileged};
use serde_json::{Value, json};

const ORIGINAL: &str = "docker.io/pare-tests/report:v1";
const MINIMIZED: &str = "docker.io/pare-tests/report:v1-pare";

const NEEDS: &[Need] = CONTAINERD;

const HARDENING_SUMMARY: &str = "removed: 2 of 2 shells, 1 of 1 package managers, \
1 of 1 download and network tools, 0 of 2 compilers and interpreters, \
1 of 1 setuid/setgid files, 0 of 1 files with capabilities, 2 of 3 packages";

const STATUS_3: &str = "Package: app\nStatus: install ok installed\nInstalled-Size: 10\n\n\
Package: tool\nStatus: install ok installed\nInstalled-Size: 20\n\n\
Package: docs\nStatus: install ok installed\nInstalled-Size: 4\n";
const STATUS_1: &str = "Package: app\nStatus: install ok installed\nInstalled-Size: 10\n";

/// `cap_net_raw`, the capability of `ping`.
const CAP_NET_RAW: u64 = 1 << 13;

fn bytes(n: usize) -> Vec<u8> {
    vec![b'x'; n]
}

/// What an attacker reaches for, in `layer`'s usrmerged `/usr/bin` (`/bin ->
/// usr/bin`): with `all`, a shell and its `sh` link, apt, curl, python3.11
/// and its `python3` link, setuid passwd and ping with `cap_net_raw`
/// (60 bytes in 6 files and 3 links); without, what the workload kept:
/// python and ping (20 bytes in 2 files and 2 links).
fn attack_surface(layer: &mut Layer, all: bool) {
    layer.symlink("bin", "usr/bin");
    layer.file("usr/bin/python3.11", bytes(10), 0o755);
    layer.symlink("usr/bin/python3", "python3.11");
    layer
        .file("usr/bin/ping", bytes(10), 0o755)
        .xattr("security.capability", &vfs_cap_v2(CAP_NET_RAW, 0, true));
    if all {
        layer.file("usr/bin/bash", bytes(10), 0o755);
        layer.symlink("usr/bin/sh", "bash");
        layer.file("usr/bin/apt", bytes(10), 0o755);
        layer.file("usr/bin/curl", bytes(10), 0o755);
        layer.file("usr/bin/passwd", bytes(10), 0o4755);
    }
}

/// The original: 16 files (one a hardlink) after whiteouts and an opaque dir.
fn original() -> Result<Image> {
    let mut base = Layer::new(1_700_000_000);
    base.dir_all("etc", 0o755);
    base.file("etc/passwd", bytes(50), 0o644);
    base.dir_all("usr/bin", 0o755);
    base.file("usr/bin/app", bytes(1000), 0o755);
    attack_surface(&mut base, true);
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

/// The minimized image: 7 of the files and a status of 1 package.
fn minimized() -> Result<Image> {
    let mut layer = Layer::new(1_700_000_300);
    layer.dir_all("etc", 0o755);
    layer.file("etc/passwd", bytes(60), 0o644);
    layer.dir_all("usr/bin", 0o755);
    layer.file("usr/bin/app", bytes(1000), 0o755);
    attack_surface(&mut layer, false);
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

    let orig_bytes = 60 + 1000 + 700 + 300 + 4000 + 60 + STATUS_3.len() as u64;
    let min_bytes = 60 + 1000 + 20 + STATUS_1.len() as u64;
    assert_eq!(got["original"], summary(&orig, ORIGINAL, 16, orig_bytes, 3));
    assert_eq!(got["minimized"], summary(&min, MINIMIZED, 7, min_bytes, 1));
    assert_eq!(got["ratios"]["layers"], json!(1.0 / 3.0));
    assert_eq!(got["ratios"]["files"], json!(7.0 / 16.0));
    assert_eq!(
        got["ratios"]["bytes"],
        json!(min_bytes as f64 / orig_bytes as f64)
    );
    assert_eq!(
        got["removed"],
        json!({"files": 9, "bytes": 5040, "packages": 2, "package_bytes": 24 * 1024})
    );
    let dir = |path: &str, rf: u64, rb: u64, kf: u64, kb: u64| json!({"path": path, "removed_files": rf, "removed_bytes": rb, "kept_files": kf, "kept_bytes": kb});
    assert_eq!(
        got["top_directories"],
        json!([
            dir("/usr/lib/tool", 1, 4000, 0, 0),
            // app-link is gone but app keeps the hardlinked bytes.
            dir("/usr/bin", 7, 740, 4, 1020),
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

    let entry = |path: &str, status: &str, used_by_workload: bool| json!({"path": path, "status": status, "used_by_workload": used_by_workload});
    let group = |category: &str, label: &str, counts: [u64; 3], entries: Vec<Value>| json!({"category": category, "label": label, "original": counts[0], "minimized": counts[1], "removed": counts[2], "entries": entries});
    assert_eq!(
        got["hardening"],
        json!({
            "summary": HARDENING_SUMMARY,
            "groups": [
                group("shells", "shells", [2, 0, 2], vec![
                    entry("/usr/bin/bash", "removed", false),
                    entry("/usr/bin/sh", "removed", false),
                ]),
                group("package_managers", "package managers", [1, 0, 1], vec![
                    entry("/usr/bin/apt", "removed", false),
                ]),
                group("network_tools", "download and network tools", [1, 0, 1], vec![
                    entry("/usr/bin/curl", "removed", false),
                ]),
                group("compilers_interpreters", "compilers and interpreters", [2, 2, 0], vec![
                    entry("/usr/bin/python3", "present", true),
                    entry("/usr/bin/python3.11", "present", true),
                ]),
                group("setuid_setgid", "setuid/setgid files", [1, 0, 1], vec![
                    entry("/usr/bin/passwd", "removed", false),
                ]),
                group("capabilities", "files with capabilities", [1, 1, 0], vec![
                    entry("/usr/bin/ping", "present", false),
                ]),
            ],
            "packages": {
                "original": 3,
                "minimized": 1,
                "removed": 2,
                "still_visible": ["app"],
                "removed_names": ["docs", "tool"],
            },
        })
    );

    let page = std::fs::read_to_string(&html_path)?;
    let hardening_heading = format!("<h2>Hardening</h2>\n<p>{HARDENING_SUMMARY}</p>");
    for needle in [
        "<svg",
        ORIGINAL,
        MINIMIZED,
        orig.manifest_digest.as_str(),
        "/usr/lib/tool",
        &hardening_heading,
        "<tr><td><code>/usr/bin/passwd</code></td><td class=\"removed\">removed</td><td></td></tr>",
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
    for line in [
        "removed: 9 files (4.9 KiB), 2 packages (24.0 KiB installed)".to_string(),
        format!("hardening: {HARDENING_SUMMARY}"),
        "  present  /usr/bin/python3.11  used by the workload".to_string(),
        "packages a vulnerability scanner still sees: 1 of 3 (2 removed)".to_string(),
    ] {
        ensure!(
            text.lines().any(|l| l == line),
            "text report lacks {line:?}:\n{text}"
        );
    }
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

#[test]
fn privileged_report_flags_misses_of_removed_paths() -> Result<()> {
    if !privileged("privileged_report_flags_misses_of_removed_paths", PARE_NODE) {
        return Ok(());
    }
    const IMAGE: &str = "docker.io/pare-tests/report-misses:v1";
    const SLIM: &str = "docker.io/pare-tests/report-misses:v1-pare";
    let mut node = PareNode::start()?;
    node.checked(|node| {
        let app = app_layer(&["a", "b"]);
        import_tools_image(node, IMAGE, &[], &app)?;
        let ctr = node.ctr();

        // learn /app/a only; the minimized image keeps it and not /app/b.
        let out = ctr.run(IMAGE, "learn-1", "pare", &["cat", "/app/a"])?;
        ensure!(out == "a\n", "{out:?}");
        node.pare(&["compact", "--tag", SLIM, IMAGE])?;

        // Nothing ran in audit yet: the section says so.
        let text = node.pare(&["report", IMAGE, SLIM])?;
        ensure!(
            text.lines().any(|l| l
                == "misses: no misses recorded: run the image in audit mode to see what the profile lacks"),
            "{text}"
        );

        // audit: /app/b is outside the allowed set, and the minimized image
        // does not have it.
        node.pare(&["mode", IMAGE, "audit"])?;
        let out = ctr.run(IMAGE, "audit-1", "pare", &["cat", "/app/a", "/app/b"])?;
        ensure!(out == "a\nb\n", "audit serves everything: {out:?}");
        let report = wait_for(Duration::from_secs(20), "the miss of /app/b in the report", || {
            let report: Value = serde_json::from_str(&node.pare(&["report", "--json", IMAGE, SLIM])?)?;
            let has_b = report["misses"]["entries"]
                .as_array()
                .is_some_and(|all| all.iter().any(|m| m["path"] == "/app/b" && m["kind"] == "read"));
            Ok(has_b.then_some(report))
        })?;
        let misses = &report["misses"];
        let entries = misses["entries"].as_array().context("entries")?;
        let b = entries
            .iter()
            .find(|m| m["path"] == "/app/b" && m["kind"] == "read")
            .context("the miss of /app/b")?;
        ensure!(
            b["image"] == "original"
                && b["status"] == "removed"
                && b["containers"] == json!(["audit-1"])
                && b["count"].as_u64().is_some_and(|c| c >= 1),
            "the miss of /app/b: {b}"
        );
        ensure!(
            !entries.iter().any(|m| m["path"] == "/app/a"),
            "/app/a is allowed: {misses}"
        );
        let removed = entries.iter().filter(|m| m["status"] == "removed").count();
        ensure!(
            misses["counts"]["removed"] == removed && misses["counts"]["total"] == entries.len(),
            "counts agree with the list: {misses}"
        );
        ensure!(
            misses["original"]["mode"] == "audit"
                && misses["original"]["files"].as_u64().is_some_and(|f| f >= 1),
            "{misses}"
        );
        let summary = if removed == 1 {
            "1 miss names a removed path: the minimized image would fail there".to_string()
        } else {
            format!("{removed} misses name removed paths: the minimized image would fail there")
        };
        ensure!(misses["summary"] == summary.as_str(), "{misses}");

        let text = node.pare(&["report", IMAGE, SLIM])?;
        ensure!(
            text.lines().any(|l| l.starts_with("! original  read ")
                && l.contains(" removed  /app/b  audit-1")),
            "the text flags /app/b:\n{text}"
        );
        ensure!(text.lines().any(|l| l == summary), "{text}");
        Ok(())
    })?;
    node.stop()
}
