//! Tests of the report figures on two small images.

use super::*;
use crate::report::testing::{Tar, no_misses, view};

#[test]
fn directories_are_grouped_deeper_under_usr() {
    let cases = [
        ("/usr/lib/python3.11/os.py", "/usr/lib/python3.11"),
        ("/usr/lib/python3.11/json/decoder.py", "/usr/lib/python3.11"),
        ("/usr/share/doc/bash/copyright", "/usr/share/doc"),
        ("/usr/bin/python3", "/usr/bin"),
        ("/etc/ssl/certs/ca.pem", "/etc/ssl"),
        ("/etc/passwd", "/etc"),
        ("/var/lib/dpkg/status", "/var/lib"),
        ("/entrypoint.sh", "/"),
    ];
    for (path, want) in cases {
        assert_eq!(group(path), want, "{path}");
    }
}

#[test]
fn removed_files_bytes_and_packages_are_counted_and_ranked() {
    let original = view(
        "orig",
        vec![
            Tar::new()
                .file("usr/bin/app", b"0123456789")
                .hardlink("usr/bin/app2", "usr/bin/app")
                .file("usr/share/doc/a/copyright", &[0; 300])
                .file("usr/share/doc/b/copyright", &[0; 200])
                .file("usr/lib/x/big", &[0; 1000])
                .file("etc/conf", b"abc")
                .symlink("etc/link", "conf")
                .bytes(),
        ],
        &[("app", 2048), ("docs", 4096), ("big", 4096), ("tiny", 0)],
    );
    let minimized = view(
        "min",
        vec![
            Tar::new()
                .file("usr/bin/app2", b"0123456789")
                .file("etc/conf", b"ab")
                .bytes(),
        ],
        &[("app", 2048)],
    );
    let report = compare(&original, &minimized, &no_misses(), &no_misses());
    assert_eq!(report.ratios.layers, Some(1.0));
    assert_eq!(report.ratios.files, Some(2.0 / 7.0));
    assert_eq!(report.ratios.bytes, Some(12.0 / 1513.0));
    assert_eq!(report.ratios.packages, Some(0.25));
    assert_eq!(
        report.removed,
        Removed {
            files: 5,
            bytes: 1500,
            packages: 3,
            package_bytes: 8192,
        }
    );
    let dirs: Vec<(&str, u64, u64, u64, u64)> = report
        .top_directories
        .iter()
        .map(|r| {
            let (p, rf, rb) = (r.path.as_str(), r.removed_files, r.removed_bytes);
            (p, rf, rb, r.kept_files, r.kept_bytes)
        })
        .collect();
    assert_eq!(
        dirs,
        [
            ("/usr/lib/x", 1, 1000, 0, 0),
            ("/usr/share/doc", 2, 500, 0, 0),
            ("/etc", 1, 0, 1, 2),
            // The hardlink group survives through app2: no bytes removed.
            ("/usr/bin", 1, 0, 1, 10),
        ]
    );
    let packages: Vec<(&str, u64)> = report
        .top_removed_packages
        .iter()
        .map(|p| (p.name.as_str(), p.installed_size_bytes))
        .collect();
    assert_eq!(packages, [("big", 4096), ("docs", 4096), ("tiny", 0)]);
}

#[test]
fn empty_originals_give_null_ratios_and_lists_are_capped() {
    let empty = view("empty", vec![], &[]);
    let report = compare(&empty, &empty, &no_misses(), &no_misses());
    assert_eq!(report.ratios.bytes, None);
    assert!(report.top_directories.is_empty());

    let mut many = Tar::new();
    for i in 0..40 {
        many = many.file(&format!("opt/d{i:02}/f"), b"x");
    }
    let packages: Vec<(String, u64)> = (0..40).map(|i| (format!("p{i:02}"), i)).collect();
    let packages: Vec<(&str, u64)> = packages.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let original = view("many", vec![many.bytes()], &packages);
    let report = compare(&original, &empty, &no_misses(), &no_misses());
    assert_eq!(report.top_directories.len(), TOP);
    assert_eq!(report.top_removed_packages.len(), TOP);
    assert_eq!(report.top_removed_packages[0].name, "p39");
    assert_eq!(report.removed.files, 40);
}
