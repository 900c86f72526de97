//! Closure rules on a small real tree (plain directories; no root needed).

use std::os::unix::fs::symlink;

use pare_fs::layers::LayerStack;

use super::*;

fn p(s: &str) -> ImagePath {
    ImagePath::new(s.as_bytes().to_vec()).unwrap()
}

fn image() -> (tempfile::TempDir, ImageTree) {
    let dir = tempfile::tempdir().unwrap();
    let (top, base) = (dir.path().join("top"), dir.path().join("base"));
    for d in [
        "usr/bin",
        "usr/lib/x86_64-linux-gnu",
        "etc",
        "app/data",
        "tmp",
        "proc",
    ] {
        std::fs::create_dir_all(base.join(d)).unwrap();
    }
    std::fs::create_dir_all(top.join("app")).unwrap();
    let w = |path: &str, body: &str| std::fs::write(base.join(path), body).unwrap();
    w("usr/bin/python3.11", "py");
    w("usr/bin/ls", "ls");
    w("usr/lib/x86_64-linux-gnu/libc.so.6", "libc");
    w("etc/passwd", "root:x:0:0::/:/bin/sh\n");
    w("etc/group", "root:x:0:\n");
    w("etc/unused.conf", "x");
    w("app/data/a.txt", "a");
    w("app/data/b.txt", "b");
    std::fs::hard_link(
        base.join("app/data/a.txt"),
        base.join("app/data/a-again.txt"),
    )
    .unwrap();
    symlink("usr/lib", base.join("lib")).unwrap();
    symlink("usr/bin", base.join("bin")).unwrap();
    symlink("python3.11", base.join("usr/bin/python3")).unwrap();
    std::fs::write(top.join("app/main.py"), "print()").unwrap();
    let stack = LayerStack::open(vec![top, base]).unwrap();
    (dir, ImageTree::new(stack))
}

fn kept(sel: &Selection<'_>) -> Vec<(String, Reason)> {
    sel.kept()
        .iter()
        .map(|k| (k.path.to_string(), k.reason))
        .collect()
}

#[test]
fn profiled_paths_bring_ancestors_symlink_targets_and_hardlinks_in_order() {
    let (_d, tree) = image();
    let index = Index::build(&tree).unwrap();
    let mut sel = Selection::new(&tree, &index);
    let profile = [
        p("/bin/python3"),
        p("/app/main.py"),
        p("/app/data/a.txt"),
        p("/no/such/file"),
    ];
    sel.keep_profiled(profile.iter()).unwrap();
    use Reason::*;
    let want: Vec<(String, Reason)> = [
        ("/bin", SymlinkTarget),
        ("/usr", Ancestor),
        ("/usr/bin", SymlinkTarget),
        ("/usr/bin/python3", SymlinkTarget),
        ("/usr/bin/python3.11", SymlinkTarget),
        ("/app", Ancestor),
        ("/app/main.py", Profiled),
        ("/app/data", Ancestor),
        ("/app/data/a.txt", Profiled),
        ("/app/data/a-again.txt", Hardlink),
    ]
    .iter()
    .map(|(s, r)| (s.to_string(), *r))
    .collect();
    assert_eq!(kept(&sel), want);
    assert_eq!(sel.missing, vec![p("/no/such/file")]);
}

#[test]
fn always_kept_include_and_exclude() {
    let (_d, tree) = image();
    let index = Index::build(&tree).unwrap();
    let mut sel = Selection::new(&tree, &index);
    sel.keep_always().unwrap();
    let always: Vec<String> = kept(&sel).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        always,
        vec!["/etc", "/etc/passwd", "/etc/group", "/proc", "/tmp"]
    );

    let n = sel
        .keep_matching(
            |p| p.to_string().starts_with("/app/data/"),
            Reason::Included,
        )
        .unwrap();
    assert_eq!(n, 3);
    assert!(sel.contains(&p("/app/data/b.txt")));
    let dropped = sel.drop_matching(|p| p.to_string().starts_with("/app"));
    assert_eq!(dropped, 5, "/app, /app/data and its three files");
    assert!(!sel.contains(&p("/app")));

    // A directory matched by an exclude stays while it holds kept entries.
    sel.keep(&p("/usr/bin/ls"), Reason::Profiled).unwrap();
    sel.drop_matching(|p| p.to_string() == "/usr/bin");
    assert!(sel.contains(&p("/usr/bin")) && sel.contains(&p("/usr/bin/ls")));
}

/// Names of the hardlink group of [`hardlink_group`].
pub(crate) const GROUP: usize = 20_000;

/// A tree whose `/links/n00000` .. `/links/n<names - 1>` are one file of
/// 4,000 bytes under `names` names, spread over four directories.
pub(crate) fn hardlink_group(names: usize) -> (tempfile::TempDir, ImageTree, Vec<ImagePath>) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    let path = |i: usize| format!("links/d{}/n{i:05}", i % 4);
    for d in 0..4 {
        std::fs::create_dir_all(base.join(format!("links/d{d}"))).unwrap();
    }
    std::fs::write(base.join(path(0)), vec![7u8; 4000]).unwrap();
    for i in 1..names {
        std::fs::hard_link(base.join(path(0)), base.join(path(i))).unwrap();
    }
    let all = (0..names).map(|i| p(&format!("/{}", path(i)))).collect();
    let stack = LayerStack::open(vec![base]).unwrap();
    (dir, ImageTree::new(stack), all)
}

#[test]
fn a_hardlink_group_of_20000_names_is_kept_whole_once() {
    let (_d, tree, names) = hardlink_group(GROUP);
    let index = Index::build(&tree).unwrap();
    assert_eq!(index.hardlinks(index.get(&names[0]).unwrap()).len(), GROUP);
    let mut sel = Selection::new(&tree, &index);
    // Profiled: one name in the middle, then another name of the same group.
    let profiled = [names[12_345].clone(), names[7].clone()];
    sel.keep_profiled(profiled.iter()).unwrap();
    let kept = kept(&sel);
    assert_eq!(
        kept.len(),
        GROUP + 5,
        "/links, its 4 directories, every name"
    );
    assert_eq!(
        kept[..3],
        [
            ("/links".to_string(), Reason::Ancestor),
            ("/links/d1".to_string(), Reason::Ancestor),
            (names[12_345].to_string(), Reason::Profiled),
        ]
    );
    let files: HashSet<&str> = kept
        .iter()
        .filter(|(path, _)| path.contains("/n"))
        .map(|(path, _)| path.as_str())
        .collect();
    assert_eq!(files.len(), GROUP);
    assert!(
        kept.iter()
            .filter(|(path, _)| path.contains("/n") && *path != names[12_345].to_string())
            .all(|(_, reason)| *reason == Reason::Hardlink),
        "the other names are kept as hardlinks (the second profiled name too: it came first as one)"
    );
}
