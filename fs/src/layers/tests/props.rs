//! Property test of the layer stack against a model of overlayfs: random
//! small stacks of files, directories, opaque directories and whiteouts are
//! built as real layer directories, and every lookup and listing of
//! [`LayerStack`] must match the tree the model gets by unpacking the layers
//! bottom up, the way image layers are applied one over the other.
//!
//! Whiteouts (character devices 0:0) and opaque markers (`trusted.*` xattrs)
//! need root: without it the test fails under `CI=true` and is skipped
//! otherwise, as the privileged tests do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use rustix::fs::{CWD, FileType, Mode, XattrFlags};

use crate::layers::xattr::OPAQUE_XATTR;
use crate::layers::{LayerIdx, LayerStack, Resolved};

/// The names every layer draws from: few, so layers collide often.
const NAMES: [&str; 3] = ["a", "b", "c"];

/// One entry of a layer directory.
#[derive(Clone, Debug)]
enum Entry {
    File,
    Whiteout,
    Dir {
        opaque: bool,
        children: BTreeMap<&'static str, Entry>,
    },
}

/// The entries of one directory: one to three of [`NAMES`].
fn entries(
    inner: impl Strategy<Value = Entry>,
) -> impl Strategy<Value = BTreeMap<&'static str, Entry>> {
    prop::collection::btree_map(prop::sample::select(NAMES.to_vec()), inner, 1..=3)
}

/// Entries nested at most three deep below a layer's root.
fn entry() -> impl Strategy<Value = Entry> {
    let leaf = prop_oneof![
        2 => Just(Entry::File),
        1 => Just(Entry::Whiteout),
        1 => any::<bool>().prop_map(|opaque| Entry::Dir {
            opaque,
            children: BTreeMap::new()
        }),
    ];
    leaf.prop_recursive(2, 24, 3, |inner| {
        (prop::bool::weighted(0.3), entries(inner))
            .prop_map(|(opaque, children)| Entry::Dir { opaque, children })
    })
}

/// A stack of one to four layers, topmost first; a layer is its root's entries.
fn stack() -> impl Strategy<Value = Vec<BTreeMap<&'static str, Entry>>> {
    prop::collection::vec(entries(entry()), 1..=4)
}

/// Makes `entries` in the directory `dir`.
fn build(dir: &Path, entries: &BTreeMap<&'static str, Entry>) {
    for (name, entry) in entries {
        let path = dir.join(name);
        match entry {
            Entry::File => std::fs::write(&path, name).expect("file written"),
            Entry::Whiteout => rustix::fs::mknodat(
                CWD,
                &path,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .expect("whiteout made"),
            Entry::Dir { opaque, children } => {
                std::fs::create_dir(&path).expect("directory made");
                if *opaque {
                    rustix::fs::lsetxattr(&path, OPAQUE_XATTR, b"y", XattrFlags::empty())
                        .expect("opaque marker set");
                }
                build(&path, children);
            }
        }
    }
}

/// A node of the merged tree the model computes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Merged {
    File {
        layer: u16,
    },
    Dir {
        /// Layers whose directory takes part, topmost first.
        layers: Vec<u16>,
        children: BTreeMap<&'static str, Merged>,
    },
}

/// Applies layer `layer`'s directory `entries` onto the merged directory
/// `merged`: a whiteout removes the name, a file replaces it, a directory
/// merges into a directory below unless it is opaque, and replaces anything
/// else.
fn apply(
    merged: &mut BTreeMap<&'static str, Merged>,
    layer: u16,
    entries: &BTreeMap<&'static str, Entry>,
) {
    for (name, entry) in entries {
        match entry {
            Entry::Whiteout => {
                merged.remove(name);
            }
            Entry::File => {
                merged.insert(name, Merged::File { layer });
            }
            Entry::Dir { opaque, children } => {
                let below = merged.remove(name);
                let (mut layers, mut merged_children) = match below {
                    Some(Merged::Dir { layers, children }) if !opaque => (layers, children),
                    _ => (Vec::new(), BTreeMap::new()),
                };
                apply(&mut merged_children, layer, children);
                layers.insert(0, layer);
                merged.insert(
                    name,
                    Merged::Dir {
                        layers,
                        children: merged_children,
                    },
                );
            }
        }
    }
}

/// The merged root: every layer unpacked over the ones below it.
fn model(layers: &[BTreeMap<&'static str, Entry>]) -> Merged {
    let mut root = BTreeMap::new();
    for (i, entries) in layers.iter().enumerate().rev() {
        apply(&mut root, i as u16, entries);
    }
    Merged::Dir {
        layers: (0..layers.len() as u16).collect(),
        children: root,
    }
}

/// What a path is, children left out: what lookups are compared by.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    File { layer: u16 },
    Dir { layers: Vec<u16> },
}

impl Merged {
    fn shape(&self) -> Shape {
        match self {
            Merged::File { layer } => Shape::File { layer: *layer },
            Merged::Dir { layers, .. } => Shape::Dir {
                layers: layers.clone(),
            },
        }
    }
}

fn shape_of(resolved: &Resolved) -> Shape {
    match resolved {
        Resolved::Other { layer, .. } => Shape::File { layer: layer.0 },
        Resolved::Dir { layers, .. } => Shape::Dir {
            layers: layers.iter().map(|l| l.0).collect(),
        },
    }
}

/// Every path of up to `depth` names from [`NAMES`].
fn paths(depth: usize) -> Vec<PathBuf> {
    let mut all = vec![PathBuf::new()];
    let mut level = vec![PathBuf::new()];
    for _ in 0..depth {
        level = level
            .iter()
            .flat_map(|p| NAMES.iter().map(move |n| p.join(n)))
            .collect();
        all.extend(level.iter().cloned());
    }
    all
}

/// The model's node at `rel`, if the merged tree has one.
fn find<'a>(root: &'a Merged, rel: &Path) -> Option<&'a Merged> {
    rel.components().try_fold(root, |node, c| match node {
        Merged::Dir { children, .. } => children.get(c.as_os_str().to_str()?),
        Merged::File { .. } => None,
    })
}

/// True when whiteouts and opaque markers can be made; fails under `CI=true`
/// when they cannot (a green CI never hides a skipped test).
fn can_make_whiteouts() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the layer stack property test needs root (whiteouts, trusted xattrs)"
    );
    eprintln!("skipped: the layer stack property test needs root");
    false
}

#[test]
fn the_stack_resolves_and_lists_what_overlayfs_would_show() {
    if !can_make_whiteouts() {
        return;
    }
    let config = ProptestConfig::with_cases(128);
    proptest!(config, |(layers in stack())| {
        let tmp = tempfile::tempdir().expect("a temp dir");
        let dirs: Vec<PathBuf> = (0..layers.len()).map(|i| tmp.path().join(format!("l{i}"))).collect();
        for (dir, entries) in dirs.iter().zip(&layers) {
            std::fs::create_dir(dir).expect("layer directory made");
            build(dir, entries);
        }
        let stack = LayerStack::open(dirs).expect("the stack opens");
        let want_root = model(&layers);

        for rel in paths(4) {
            let got = stack.resolve(&rel).expect("resolves");
            let want = find(&want_root, &rel);
            prop_assert_eq!(got.as_ref().map(shape_of), want.map(Merged::shape), "at {:?}", rel);

            let Some(Merged::Dir { layers, children }) = want else {
                continue;
            };
            let layers: Vec<LayerIdx> = layers.iter().copied().map(LayerIdx).collect();
            let mut listed: Vec<(String, Shape)> = stack
                .read_dir(&rel, &layers)
                .expect("lists")
                .into_iter()
                .map(|(name, r)| (name.into_string().expect("a model name"), shape_of(&r)))
                .collect();
            listed.sort_by(|a, b| a.0.cmp(&b.0));
            let want_listed: Vec<(String, Shape)> = children
                .iter()
                .map(|(name, node)| (name.to_string(), node.shape()))
                .collect();
            prop_assert_eq!(listed, want_listed, "listing of {:?}", rel);
        }
    });
}
