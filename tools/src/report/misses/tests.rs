//! Tests of the misses section: each miss's status in the minimized image,
//! the counts, and the summary.

use pare_fs::id::Digest;
use pare_fs::policy::{Miss, MissProcess, Mode};
use pare_fs::profile::{AccessKind, ImagePath};

use super::*;
use crate::report::testing::{Tar, image, no_misses};

fn miss(path: &str, kind: AccessKind, first: u64, count: u64, containers: &[&str]) -> Miss {
    Miss {
        path: ImagePath::new(path.as_bytes().to_vec()).unwrap(),
        kind,
        first_seen_ns: first,
        count,
        processes: containers
            .iter()
            .enumerate()
            .map(|(pid, c)| MissProcess {
                pid: pid as u32 + 1,
                command: "sh".into(),
                container: Some(c.to_string()),
            })
            .collect(),
    }
}

/// A row as the tests compare it: image, path, kind, count, containers,
/// status.
type Shown<'a> = (Side, &'a str, &'a str, u64, Vec<&'a str>, Status);

fn views() -> (ImageView, ImageView) {
    let original = Tar::new()
        .dir("app")
        .file("app/a", b"a")
        .file("app/b", b"b")
        .dir("app/lib")
        .bytes();
    let minimized = Tar::new().dir("app").file("app/a", b"a").bytes();
    (image("o", vec![original]), image("m", vec![minimized]))
}

#[test]
fn each_miss_says_whether_the_minimized_image_keeps_its_path() {
    let (original, minimized) = views();
    let of_original = ImageMisses {
        mode: Mode::Audit,
        files: 2,
        misses: vec![
            miss(
                "/app/b",
                AccessKind::Read,
                5,
                3,
                &["web-1", "web-1", "web-2"],
            ),
            miss("/app/a", AccessKind::Lookup, 7, 1, &[]),
            miss("/app/lib", AccessKind::Readdir, 8, 1, &["web-1"]),
            miss("/app/never", AccessKind::Lookup, 9, 2, &["web-1"]),
        ],
        ..no_misses()
    };
    let of_minimized = ImageMisses {
        source_image: Some(Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap()),
        lacking: 1,
        misses: vec![miss("/app/b", AccessKind::Absent, 4, 1, &[])],
        ..no_misses()
    };
    let section = section(&original, &minimized, &of_original, &of_minimized);
    let shown: Vec<Shown> = section
        .entries
        .iter()
        .map(|r| {
            (
                r.image,
                r.path.as_str(),
                r.kind.as_str(),
                r.count,
                r.containers.iter().map(String::as_str).collect(),
                r.status,
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            (
                Side::Original,
                "/app/b",
                "read",
                3,
                vec!["web-1", "web-2"],
                Status::Removed
            ),
            (Side::Original, "/app/a", "lookup", 1, vec![], Status::Kept),
            (
                Side::Original,
                "/app/lib",
                "readdir",
                1,
                vec!["web-1"],
                Status::Removed
            ),
            (
                Side::Original,
                "/app/never",
                "lookup",
                2,
                vec!["web-1"],
                Status::Absent
            ),
            (
                Side::Minimized,
                "/app/b",
                "absent",
                1,
                vec![],
                Status::Removed
            ),
        ]
    );
    assert_eq!(
        section.counts,
        Counts {
            total: 5,
            kept: 1,
            removed: 3,
            absent: 1
        }
    );
    assert_eq!(
        section.summary,
        "3 misses name removed paths: the minimized image would fail there"
    );
    assert_eq!(
        (
            section.original.mode.as_str(),
            section.original.files,
            section.original.misses
        ),
        ("audit", 2, 4)
    );
    assert_eq!(section.minimized.lacking, 1);
    assert_eq!(
        section.minimized.source_image.as_deref(),
        Some(format!("sha256:{}", "ab".repeat(32)).as_str())
    );
}

#[test]
fn the_summary_names_none_recorded_one_removed_or_none_removed() {
    let (original, minimized) = views();
    let with = |files, misses| ImageMisses {
        files,
        misses,
        ..no_misses()
    };
    let cases = [
        (with(0, vec![]), NONE_RECORDED),
        (with(1, vec![]), "0 misses, none names a removed path"),
        (
            with(1, vec![miss("/app/a", AccessKind::Read, 1, 1, &[])]),
            "1 misses, none names a removed path",
        ),
        (
            with(1, vec![miss("/app/b", AccessKind::Read, 1, 1, &[])]),
            "1 miss names a removed path: the minimized image would fail there",
        ),
    ];
    for (of_original, want) in cases {
        let section = section(&original, &minimized, &of_original, &no_misses());
        assert_eq!(section.summary, want, "{:?}", of_original.misses);
    }
}

#[test]
fn the_json_has_a_list_and_counts() {
    let (original, minimized) = views();
    let of_original = ImageMisses {
        mode: Mode::Enforce,
        files: 1,
        misses: vec![miss("/app/b", AccessKind::Exec, 5, 2, &["web-1"])],
        ..no_misses()
    };
    let section = section(&original, &minimized, &of_original, &no_misses());
    assert_eq!(
        serde_json::to_value(&section).unwrap(),
        serde_json::json!({
            "summary": "1 miss names a removed path: the minimized image would fail there",
            "original": {"mode": "enforce", "files": 1, "misses": 1, "lacking": 0},
            "minimized": {"mode": "learn", "files": 0, "misses": 0, "lacking": 0},
            "counts": {"total": 1, "kept": 0, "removed": 1, "absent": 0},
            "entries": [{"image": "original", "path": "/app/b", "kind": "exec",
                         "first_seen_ns": 5, "count": 2, "containers": ["web-1"],
                         "status": "removed"}],
        })
    );
}
