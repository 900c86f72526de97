//! Unit tests of the overlay lookup rules (no root needed: whiteouts and opaque
//! directories are fed to the merge rule as probes).

use std::path::Path;

use super::*;

mod props;

fn meta(kind: Kind, ino: u64) -> Meta {
    Meta::for_test(kind, 0o755, ino, 1)
}

/// Short names for probes: `-` absent, `w` whiteout, `f` file, `d` dir, `o` opaque dir.
fn probes(spec: &str) -> Vec<Probe> {
    spec.chars()
        .enumerate()
        .map(|(i, c)| match c {
            '-' => Probe::Absent,
            'w' => Probe::Whiteout,
            'f' => Probe::NonDir(meta(Kind::File, i as u64)),
            'd' => Probe::Dir {
                meta: meta(Kind::Dir, i as u64),
                opaque: false,
            },
            'o' => Probe::Dir {
                meta: meta(Kind::Dir, i as u64),
                opaque: true,
            },
            _ => panic!("bad probe {c}"),
        })
        .collect()
}

/// What the merge gives, in the same short notation: `none`, `file@L` or `dir@L,L..`.
fn outcome(spec: &str) -> (String, Vec<usize>) {
    let probes = probes(spec);
    let layers: Vec<LayerIdx> = (0..probes.len() as u16).map(LayerIdx).collect();
    let mut asked = Vec::new();
    let got = merge(&layers, |l| {
        asked.push(usize::from(l.0));
        Ok(probes[usize::from(l.0)].clone())
    })
    .unwrap();
    let text = match got {
        None => "none".to_string(),
        Some(Resolved::Other { layer, .. }) => format!("file@{}", layer.0),
        Some(Resolved::Dir { layers, meta }) => {
            assert_eq!(
                meta.ino,
                u64::from(layers[0].0),
                "metadata comes from the top dir"
            );
            let l: Vec<String> = layers.iter().map(|l| l.0.to_string()).collect();
            format!("dir@{}", l.join(","))
        }
    };
    (text, asked)
}

#[test]
fn merge_follows_overlayfs_rules() {
    let cases = [
        // (layers top..bottom, result, layers probed)
        ("---", "none", vec![0, 1, 2]),
        ("f--", "file@0", vec![0]),
        ("-f-", "file@1", vec![0, 1]),
        ("ff-", "file@0", vec![0]),
        ("w-f", "none", vec![0]),    // whiteout hides the lower file
        ("-wd", "none", vec![0, 1]), // whiteout hides the lower dir
        ("ddd", "dir@0,1,2", vec![0, 1, 2]),
        ("d-d", "dir@0,2", vec![0, 1, 2]),
        ("od-", "dir@0", vec![0]), // opaque stops the merge
        ("dod", "dir@0,1", vec![0, 1]),
        ("dwd", "dir@0", vec![0, 1]), // whiteout below a dir stops the merge
        ("dfd", "dir@0", vec![0, 1]), // a file below a dir stops the merge
        ("fdd", "file@0", vec![0]),   // a file replaces lower dirs
        ("ddf", "dir@0,1", vec![0, 1, 2]), // a file ends a merge, dirs above it stay
        ("-df", "dir@1", vec![0, 1, 2]), // dir over file: file ignored
    ];
    for (spec, want, want_asked) in cases {
        let (got, asked) = outcome(spec);
        assert_eq!(got, want, "layers {spec}");
        assert_eq!(asked, want_asked, "layers probed for {spec}");
    }
}

#[test]
fn merged_directories_report_one_link() {
    let m = meta(Kind::Dir, 0);
    let merged = Resolved::Dir {
        layers: vec![LayerIdx(0), LayerIdx(1)],
        meta: Meta { nlink: 5, ..m },
    };
    let single = Resolved::Dir {
        layers: vec![LayerIdx(1)],
        meta: Meta { nlink: 5, ..m },
    };
    assert_eq!(merged.nlink(), 1);
    assert_eq!(single.nlink(), 5);
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

#[test]
fn resolves_and_lists_real_layer_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let (top, bottom) = (tmp.path().join("top"), tmp.path().join("bottom"));
    write(&bottom, "etc/passwd", "old");
    write(&bottom, "etc/group", "g");
    write(&bottom, "opt/tool/bin", "x");
    write(&top, "etc/passwd", "new");
    write(&top, "etc/hosts", "h");
    write(&top, "opt", "file replaces dir");
    std::os::unix::fs::symlink("etc/hosts", top.join("hosts")).unwrap();

    let stack = LayerStack::open(vec![top.clone(), bottom.clone()]).unwrap();
    let passwd = stack.resolve(Path::new("etc/passwd")).unwrap().unwrap();
    assert_eq!(passwd.top_layer(), LayerIdx(0));
    assert_eq!(passwd.meta().size, 3);
    assert!(stack.resolve(Path::new("opt/tool/bin")).unwrap().is_none());
    assert_eq!(
        stack
            .resolve(Path::new("opt"))
            .unwrap()
            .unwrap()
            .meta()
            .kind,
        Kind::File
    );
    let link = stack.resolve(Path::new("hosts")).unwrap().unwrap();
    assert_eq!(link.meta().kind, Kind::Symlink);
    assert_eq!(
        stack
            .read_link(link.top_layer(), Path::new("hosts"))
            .unwrap(),
        Path::new("etc/hosts")
    );

    let Resolved::Dir { layers, .. } = stack.resolve(Path::new("etc")).unwrap().unwrap() else {
        panic!("etc is a directory");
    };
    assert_eq!(layers, vec![LayerIdx(0), LayerIdx(1)]);
    let mut names: Vec<_> = stack
        .read_dir(Path::new("etc"), &layers)
        .unwrap()
        .into_iter()
        .map(|(n, r)| (n.into_string().unwrap(), r.top_layer().0))
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            ("group".into(), 1),
            ("hosts".into(), 0),
            ("passwd".into(), 0)
        ]
    );
}

#[test]
fn opening_a_stack_checks_every_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "").unwrap();
    assert!(matches!(LayerStack::open(vec![]), Err(LayerError::Empty)));
    assert!(
        matches!(LayerStack::open(vec![file.clone()]), Err(LayerError::NotADirectory(p)) if p == file)
    );
    let missing = tmp.path().join("missing");
    let err = LayerStack::open(vec![tmp.path().to_path_buf(), missing.clone()]).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}
