//! Tests of the hardening section on a small usrmerged image and its
//! minimized version.

use super::*;
use crate::report::testing::{Tar, image};

#[test]
fn names_and_their_versions_find_their_category() {
    let cases = [
        ("sh", Some("shells")),
        ("bash", Some("shells")),
        ("busybox", Some("shells")),
        ("bashbug", None),
        ("apt-get", Some("package_managers")),
        ("pip3", Some("package_managers")),
        ("pip3.11", Some("package_managers")),
        ("dpkg-query", Some("package_managers")),
        ("nc.openbsd", Some("network_tools")),
        ("openssl", Some("network_tools")),
        ("ssh-agent", None),
        ("python3", Some("compilers_interpreters")),
        ("python3.11", Some("compilers_interpreters")),
        ("python3.11-config", None),
        ("perl5.36.0", Some("compilers_interpreters")),
        ("gcc-12", Some("compilers_interpreters")),
        ("x86_64-linux-gnu-gcc-12", Some("compilers_interpreters")),
        ("aarch64-linux-gnu-ld.bfd", Some("compilers_interpreters")),
        ("ld-linux-x86-64.so.2", None),
        ("lua5.4", Some("compilers_interpreters")),
        ("python-", None),
        ("passwd", None),
    ];
    for (name, want) in cases {
        assert_eq!(category_of(name), want, "{name}");
    }
}

#[test]
fn each_name_belongs_to_one_category() {
    let mut seen = BTreeSet::new();
    for (_, _, names) in CATEGORIES {
        for name in names {
            assert!(seen.insert(*name), "{name} is in two categories");
        }
    }
}

const STATUS_4: &[u8] = b"Package: bash\nStatus: install ok installed\n\n\
Package: apt\nStatus: install ok installed\n\n\
Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\n\n\
Package: python3.11\nStatus: install ok installed\n";
const STATUS_2: &[u8] =
    b"Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\n\n\
Package: python3.11\nStatus: install ok installed\n";

/// A usrmerged image (`/bin -> usr/bin`) with programs of each category,
/// files that are named like programs but are none, setuid, setgid and
/// capability files, and a dpkg status of 4 packages.
fn original() -> ImageView {
    let base = Tar::new()
        .dir("usr/bin")
        .symlink("bin", "usr/bin")
        .file_mode("usr/bin/bash", b"bash", 0o755)
        .hardlink("usr/bin/rbash", "usr/bin/bash")
        .file_mode("usr/bin/dash", b"dash", 0o755)
        .symlink("usr/bin/sh", "dash")
        .file_mode("usr/bin/apt", b"apt", 0o755)
        .file_mode("usr/bin/dpkg", b"dpkg", 0o755)
        .file_mode("usr/bin/curl", b"curl", 0o755)
        .file_mode("usr/bin/nc.openbsd", b"nc", 0o755)
        .symlink("usr/local/bin/nc", "/bin/nc.openbsd")
        .symlink("usr/bin/wget", "wget2")
        .file_mode("usr/bin/x86_64-linux-gnu-gcc-12", b"gcc", 0o755)
        .symlink("usr/bin/gcc-12", "x86_64-linux-gnu-gcc-12")
        .symlink("usr/bin/gcc", "gcc-12")
        .file_mode("usr/bin/perl", b"perl", 0o755)
        .file_mode("usr/bin/python3.11", b"python", 0o755)
        .symlink("usr/bin/python3", "python3.11")
        .file("usr/lib/python3.11/os.py", b"")
        .file("usr/share/bash-completion/completions/apt", b"")
        .file("etc/logrotate.d/dpkg", b"")
        .symlink("usr/lib/python3.11/python", "os.py")
        .file_mode("usr/bin/passwd", b"passwd", 0o4755)
        .file_mode("usr/bin/su", b"su", 0o4755)
        .file_mode("usr/bin/chage", b"chage", 0o2755)
        .file_mode("usr/bin/sticky", b"", 0o1755)
        .dir_mode("var/mail", 0o2775)
        .capability("usr/bin/ping", b"ping")
        .file("var/lib/dpkg/status", STATUS_4)
        .bytes();
    let upper = Tar::new()
        .dir("usr/bin")
        .file_mode("usr/bin/zsh", b"zsh", 0o755)
        .bytes();
    let whiteout = Tar::new()
        .dir("usr/bin")
        .file("usr/bin/.wh.zsh", b"")
        .bytes();
    image("orig", vec![base, upper, whiteout])
}

/// What compaction keeps of it: python, one setuid file, the capability
/// file, a dangling `sh`, and a dpkg status trimmed to 2 packages; and a
/// node the original lacks.
fn minimized() -> ImageView {
    let layer = Tar::new()
        .dir("usr/bin")
        .symlink("bin", "usr/bin")
        .symlink("usr/bin/sh", "dash")
        .file_mode("usr/bin/python3.11", b"python", 0o755)
        .symlink("usr/bin/python3", "python3.11")
        .file_mode("usr/bin/su", b"su", 0o4755)
        .capability("usr/bin/ping", b"ping")
        .file_mode("usr/local/bin/node", b"node", 0o755)
        .file("var/lib/dpkg/status", STATUS_2)
        .bytes();
    image("min", vec![layer])
}

/// A path, its status and whether it is marked used by the workload.
type Row<'a> = (&'a str, Status, bool);

fn entries(group: &Group) -> Vec<Row<'_>> {
    group
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e.status, e.used_by_workload))
        .collect()
}

#[test]
fn programs_setid_and_capability_files_are_listed_with_their_status() {
    let hardening = compare(&original(), &minimized());
    let categories: Vec<&str> = hardening
        .groups
        .iter()
        .map(|g| g.category.as_str())
        .collect();
    assert_eq!(
        categories,
        [
            "shells",
            "package_managers",
            "network_tools",
            "compilers_interpreters",
            "setuid_setgid",
            "capabilities"
        ]
    );
    use Status::{Added, Present, Removed};
    let want: [(u64, u64, u64, Vec<Row>); 6] = [
        (
            4,
            0,
            4,
            vec![
                ("/usr/bin/bash", Removed, false),
                ("/usr/bin/dash", Removed, false),
                ("/usr/bin/rbash", Removed, false),
                ("/usr/bin/sh", Removed, false),
            ],
        ),
        (
            2,
            0,
            2,
            vec![
                ("/usr/bin/apt", Removed, false),
                ("/usr/bin/dpkg", Removed, false),
            ],
        ),
        (
            3,
            0,
            3,
            vec![
                ("/usr/bin/curl", Removed, false),
                ("/usr/bin/nc.openbsd", Removed, false),
                ("/usr/local/bin/nc", Removed, false),
            ],
        ),
        (
            6,
            3,
            4,
            vec![
                ("/usr/bin/gcc", Removed, false),
                ("/usr/bin/gcc-12", Removed, false),
                ("/usr/bin/perl", Removed, false),
                ("/usr/bin/python3", Present, true),
                ("/usr/bin/python3.11", Present, true),
                ("/usr/bin/x86_64-linux-gnu-gcc-12", Removed, false),
                ("/usr/local/bin/node", Added, true),
            ],
        ),
        (
            3,
            1,
            2,
            vec![
                ("/usr/bin/chage", Removed, false),
                ("/usr/bin/passwd", Removed, false),
                ("/usr/bin/su", Present, false),
            ],
        ),
        (1, 1, 0, vec![("/usr/bin/ping", Present, false)]),
    ];
    for (group, (original, minimized, removed, list)) in hardening.groups.iter().zip(want) {
        assert_eq!(
            (group.original, group.minimized, group.removed),
            (original, minimized, removed),
            "{}",
            group.category
        );
        assert_eq!(entries(group), list, "{}", group.category);
    }
    assert_eq!(
        hardening.packages,
        ScannerPackages {
            original: 4,
            minimized: 2,
            removed: 2,
            still_visible: vec!["libc6:amd64".into(), "python3.11".into()],
            removed_names: vec!["apt".into(), "bash".into()],
        }
    );
    assert_eq!(
        hardening.summary,
        "removed: 4 of 4 shells, 2 of 2 package managers, 3 of 3 download and network tools, \
         4 of 6 compilers and interpreters, 2 of 3 setuid/setgid files, \
         0 of 1 files with capabilities, 2 of 4 packages"
    );
}

#[test]
fn an_image_without_any_lists_nothing() {
    let empty = || image("empty", vec![Tar::new().file("etc/hostname", b"x").bytes()]);
    let hardening = compare(&empty(), &empty());
    assert!(hardening.groups.iter().all(|g| g.entries.is_empty()));
    assert_eq!(
        hardening.summary,
        "removed: nothing of the kind, neither image has any"
    );
}

#[test]
fn the_same_image_removes_nothing() {
    let hardening = compare(&original(), &original());
    let summary = "removed: 0 of 4 shells, 0 of 2 package managers, \
0 of 3 download and network tools, 0 of 6 compilers and interpreters, \
0 of 3 setuid/setgid files, 0 of 1 files with capabilities, 0 of 4 packages";
    assert_eq!(hardening.summary, summary);
    let statuses: BTreeSet<Status> = hardening
        .groups
        .iter()
        .flat_map(|g| g.entries.iter().map(|e| e.status))
        .collect();
    assert_eq!(statuses, BTreeSet::from([Status::Present]));
}
