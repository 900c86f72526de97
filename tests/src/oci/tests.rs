//! Unit tests of the OCI builder: determinism, the tar entries each layer
//! feature produces, and the image layout tarball.

use std::collections::BTreeMap;
use std::io::Read;

use pare_fs::id::{ChainId, Digest};

use super::*;

/// One tar entry as read back: type flag, path, link name, mode, uid, gid,
/// mtime, device numbers, content and PAX records.
#[derive(Debug, PartialEq, Eq)]
struct ReadBack {
    kind: EntryType,
    link: Option<String>,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    device: Option<(u32, u32)>,
    content: Vec<u8>,
    pax: BTreeMap<String, Vec<u8>>,
}

fn read_back(tar: &[u8]) -> Vec<(String, ReadBack)> {
    let mut archive = tar::Archive::new(tar);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut pax = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                pax.insert(ext.key().unwrap().to_string(), ext.value_bytes().to_vec());
            }
        }
        let header = entry.header().clone();
        let path = entry.path().unwrap().to_str().unwrap().to_string();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_str().unwrap().to_string());
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        let device = match header.entry_type() {
            EntryType::Char | EntryType::Block => Some((
                header.device_major().unwrap().unwrap(),
                header.device_minor().unwrap().unwrap(),
            )),
            _ => None,
        };
        let record = ReadBack {
            kind: header.entry_type(),
            link,
            mode: header.mode().unwrap(),
            owner: (header.uid().unwrap(), header.gid().unwrap()),
            mtime: header.mtime().unwrap(),
            device,
            content,
            pax,
        };
        out.push((path, record));
    }
    out
}

fn sample() -> Layer {
    let mut layer = Layer::new(1_700_000_000);
    layer.dir("data", 0o755);
    // Added before its target: the builder must still emit the target first.
    layer.hardlink("data/a-link", "data/z-target");
    layer
        .file("data/z-target", "shared", 0o640)
        .owner(7, 8)
        .xattr("user.k", b"v");
    layer
        .file("data/suid", "#!/bin/sh\n", 0o4755)
        .owner(1000, 1001)
        .mtime(42);
    layer
        .file("data/cap", "bin", 0o755)
        .xattr("security.capability", &vfs_cap_v2(1 << 10, 0, true))
        .xattr("user.note", b"hello");
    layer.symlink("data/alias", "z-target");
    layer.char_dev("data/null", 1, 3, 0o666);
    layer.block_dev("data/loop", 7, 0, 0o660);
    layer.fifo("data/pipe", 0o600);
    layer.dir("data/sticky", 0o1777);
    layer.whiteout("data/gone");
    layer.dir("data/opaque", 0o755);
    layer.opaque("data/opaque");
    layer
}

#[test]
fn same_input_gives_same_digests() {
    let first = sample().build().unwrap();
    let second = sample().build().unwrap();
    assert_eq!(first.diff_id, second.diff_id);
    assert_eq!(first.digest, second.digest);
    assert_eq!(first.diff_id, Digest::sha256(&first.tar));
    assert_eq!(first.digest, Digest::sha256(&first.gz));
    let image = |layer: &Layer| {
        Image::new()
            .layer(layer)
            .unwrap()
            .oci_archive("docker.io/pare/test:v1")
            .unwrap()
    };
    let (a, a_tar) = image(&sample());
    let (b, b_tar) = image(&sample());
    assert_eq!(a.manifest_digest, b.manifest_digest);
    assert_eq!(a_tar, b_tar);
}

#[test]
fn gzip_header_has_no_time_and_no_name() {
    let gz = gzip(b"x").unwrap();
    // magic, deflate, flags 0, mtime 0, xfl 0, OS 255
    assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
}

#[test]
fn entries_come_sorted_with_hardlinks_after_their_target() {
    // Directories are named with a trailing slash, as Go's archive/tar does.
    let tar = sample().tar().unwrap();
    let paths: Vec<String> = read_back(&tar).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        [
            "data/",
            "data/.wh.gone",
            "data/alias",
            "data/cap",
            "data/loop",
            "data/null",
            "data/opaque/",
            "data/opaque/.wh..wh..opq",
            "data/pipe",
            "data/sticky/",
            "data/suid",
            "data/z-target",
            "data/a-link",
        ]
    );
}

#[test]
fn each_entry_kind_reads_back_exactly() {
    let tar = sample().tar().unwrap();
    let entries: BTreeMap<String, ReadBack> = read_back(&tar).into_iter().collect();
    let plain = |kind, mode| ReadBack {
        kind,
        link: None,
        mode,
        owner: (0, 0),
        mtime: 1_700_000_000,
        device: None,
        content: Vec::new(),
        pax: BTreeMap::new(),
    };
    let cases: Vec<(&str, ReadBack)> = vec![
        ("data/", plain(EntryType::Directory, 0o755)),
        ("data/sticky/", plain(EntryType::Directory, 0o1777)),
        ("data/.wh.gone", plain(EntryType::Regular, 0o644)),
        ("data/opaque/.wh..wh..opq", plain(EntryType::Regular, 0o644)),
        (
            "data/suid",
            ReadBack {
                owner: (1000, 1001),
                mtime: 42,
                content: b"#!/bin/sh\n".to_vec(),
                ..plain(EntryType::Regular, 0o4755)
            },
        ),
        (
            "data/cap",
            ReadBack {
                content: b"bin".to_vec(),
                pax: BTreeMap::from([
                    (
                        "SCHILY.xattr.security.capability".to_string(),
                        vec![1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    ),
                    ("SCHILY.xattr.user.note".to_string(), b"hello".to_vec()),
                ]),
                ..plain(EntryType::Regular, 0o755)
            },
        ),
        (
            "data/a-link",
            ReadBack {
                link: Some("data/z-target".into()),
                owner: (7, 8),
                pax: BTreeMap::from([("SCHILY.xattr.user.k".to_string(), b"v".to_vec())]),
                ..plain(EntryType::Link, 0o640)
            },
        ),
        (
            "data/alias",
            ReadBack {
                link: Some("z-target".into()),
                ..plain(EntryType::Symlink, 0o777)
            },
        ),
        (
            "data/null",
            ReadBack {
                device: Some((1, 3)),
                ..plain(EntryType::Char, 0o666)
            },
        ),
        (
            "data/loop",
            ReadBack {
                device: Some((7, 0)),
                ..plain(EntryType::Block, 0o660)
            },
        ),
        ("data/pipe", plain(EntryType::Fifo, 0o600)),
    ];
    for (path, expected) in cases {
        assert_eq!(entries.get(path), Some(&expected), "{path}");
    }
}

#[test]
fn long_paths_and_link_targets_travel_in_pax_records() {
    let long = format!("d/{}", "x".repeat(200));
    let target = format!("/{}", "t".repeat(150));
    let mut layer = Layer::new(0);
    layer.dir("d", 0o755);
    layer.symlink(&long, &target);
    let entries = read_back(&layer.tar().unwrap());
    assert_eq!(entries[1].0, long);
    assert_eq!(entries[1].1.link.as_deref(), Some(target.as_str()));
}

/// Fills a layer with something invalid.
type Fill = fn(&mut Layer);

#[test]
fn invalid_layers_are_refused() {
    let cases: [(&str, Fill); 3] = [
        ("two entries at", |l| {
            l.file("a", "1", 0o644);
            l.file("a", "2", 0o644);
        }),
        ("not in the layer", |l| {
            l.hardlink("a", "b");
        }),
        ("not normalized", |l| {
            l.file("a/../b", "", 0o644);
        }),
    ];
    for (expected, fill) in cases {
        let mut layer = Layer::new(0);
        fill(&mut layer);
        let err = layer.build().unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

#[test]
fn oci_archive_holds_layout_index_and_every_blob() {
    let mut top = Layer::new(0);
    top.file("hello", "world", 0o644);
    let (image, tar) = Image::new()
        .layer(&sample())
        .unwrap()
        .layer(&top)
        .unwrap()
        .config(ImageConfig {
            cmd: vec!["/bin/sh".into()],
            exposed_ports: ["80/tcp".to_string()].into(),
            ..ImageConfig::default()
        })
        .oci_archive("docker.io/pare/test:v1")
        .unwrap();
    let files: BTreeMap<String, Vec<u8>> = read_back(&tar)
        .into_iter()
        .map(|(path, e)| (path, e.content))
        .collect();
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let manifest = &index["manifests"][0];
    assert_eq!(manifest["digest"], image.manifest_digest.as_str());
    assert_eq!(
        manifest["annotations"]["io.containerd.image.name"],
        "docker.io/pare/test:v1"
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.ref.name"],
        "v1"
    );
    let config: serde_json::Value = serde_json::from_slice(&image.config).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][1],
        image.layers[1].diff_id.as_str()
    );
    assert_eq!(
        config["config"]["ExposedPorts"],
        serde_json::json!({"80/tcp": {}})
    );
    assert_eq!(config["architecture"], "amd64");
    for digest in [&image.manifest_digest, &image.config_digest]
        .into_iter()
        .chain(image.layers.iter().map(|l| &l.digest))
    {
        let blob = &files[&format!("blobs/sha256/{}", digest.hex())];
        assert_eq!(&Digest::sha256(blob), digest);
    }
    // Bottom first: the bottom chain is the bottom layer's diff ID.
    let chains = image.chain_ids();
    assert_eq!(chains.len(), 2);
    assert_eq!(chains[0], ChainId::from(image.layers[0].diff_id.clone()));
    assert_eq!(image.top_chain_id().as_ref(), chains.last());
}

#[test]
fn host_tools_layer_holds_each_symlink_target_and_the_loader() {
    let layer = host_tools_layer(0, &["sh", "ls"]).unwrap();
    let entries: BTreeMap<&str, &Kind> = layer
        .entries()
        .iter()
        .map(|e| (e.path(), e.kind()))
        .collect();
    assert_eq!(entries["bin"], &Kind::Symlink("usr/bin".into()));
    assert_eq!(entries["tmp"], &Kind::Dir);
    for (path, kind) in &entries {
        let Kind::Symlink(target) = kind else {
            continue;
        };
        let resolved = match target.strip_prefix('/') {
            Some(absolute) => absolute.to_string(),
            None => match path.rsplit_once('/') {
                Some((dir, _)) => format!("{dir}/{target}"),
                None => target.clone(),
            },
        };
        // Top-level merged-/usr links resolve to directories; the others
        // (sh -> dash, libfoo.so.1 -> libfoo.so.1.2, the loader) to what the
        // layer copied, ultimately a regular file.
        let resolved = std::path::Path::new(&resolved).components().fold(
            std::path::PathBuf::new(),
            |mut acc, c| {
                match c {
                    std::path::Component::ParentDir => {
                        acc.pop();
                    }
                    std::path::Component::Normal(n) => acc.push(n),
                    _ => {}
                }
                acc
            },
        );
        let mut resolved = resolved.to_str().unwrap().to_string();
        // Through a top-level merged-/usr link: lib/x -> usr/lib/x.
        if let Some((first, rest)) = resolved.split_once('/') {
            if let Some(Kind::Symlink(top)) = entries.get(first) {
                resolved = format!("{top}/{rest}");
            }
        }
        let resolved = resolved.as_str();
        assert!(
            entries.contains_key(resolved),
            "{path} -> {target}: {resolved} missing"
        );
    }
    let loader = entries
        .keys()
        .find(|p| p.starts_with("usr/lib") && p.contains("ld-linux"))
        .expect("the dynamic loader is copied");
    assert!(matches!(entries[loader], Kind::File(_) | Kind::Symlink(_)));
    assert!(layer.build().is_ok());
}
