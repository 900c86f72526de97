//! The container bench's images as OCI archives, built once and cached beside
//! the Debian rootfs: "tools" (a few host binaries, one layer) and "python"
//! (the Debian python3 rootfs in the two layers of [`crate::layers`]), each in
//! one variant per pare mode under test. A mode is set per image chain, so the
//! variants differ only by one tiny top layer (a file naming the mode): their
//! chain IDs, profiles and modes are distinct, their trees all but equal.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, ensure};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use pare_fs::id::ChainId;
use pare_fs::policy::Mode;
use pare_tests::oci::{Image, ImageConfig, Layer, host_tools_layer};
use pare_tools::oci::{diff_ids, digest_of, parse_json};
use sha2::{Digest as _, Sha256};

use crate::layers;
use pare_tests::debian;

/// Bump when an image below changes, so the cache key changes with it.
const RECIPE: &str = "v2: tools = host_tools_layer(sh, true, cat, sleep) at MTIME; \
                      python = layers::split (base, top), dev/proc/sys empty, gzip 6; \
                      each + variant layer /.pare-bench-variant = mode name, per MODES";

/// mtime of the tools layer's entries.
const MTIME: u64 = 1_700_000_000;

/// The pare modes the bench runs the images in, one image variant each
/// (overlayfs runs the learn variant).
pub const MODES: [Mode; 3] = [Mode::Learn, Mode::Audit, Mode::Enforce];

/// The bench's images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BenchImage {
    /// A few host binaries in one layer: the fixed cost of a container.
    Tools,
    /// The Debian python3 rootfs in two layers.
    Python,
}

impl BenchImage {
    /// Both.
    pub const ALL: [BenchImage; 2] = [BenchImage::Tools, BenchImage::Python];

    /// Short name, as in references and archive names.
    pub fn name(self) -> &'static str {
        match self {
            BenchImage::Tools => "tools",
            BenchImage::Python => "python",
        }
    }

    /// The reference of the variant for `mode`, e.g.
    /// `docker.io/pare/bench-python:v2-audit`.
    pub fn reference(self, mode: Mode) -> String {
        format!("docker.io/pare/bench-{}:v2-{mode}", self.name())
    }
}

/// Where the archives are: one OCI archive per image and variant, for
/// `ctr images import`.
#[derive(Debug, Clone)]
pub struct Archives {
    dir: PathBuf,
}

impl Archives {
    /// The archive of `image`'s variant for `mode` (one of [`MODES`]).
    pub fn archive(&self, image: BenchImage, mode: Mode) -> PathBuf {
        self.dir.join(format!("{}-{mode}.tar", image.name()))
    }
}

/// The archives under `<cache>/bench-containers-<hash of rootfs path and
/// recipe>/`, built in a temporary directory and renamed into place when
/// complete.
pub fn archives(rootfs: &Path) -> anyhow::Result<Archives> {
    let cache = rootfs
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/var/cache/pare-tests"));
    let key = Sha256::digest(format!("{}\n{RECIPE}", rootfs.display()));
    let hex: String = key.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let dir = cache.join(format!("bench-containers-{hex}"));
    let archives = Archives { dir: dir.clone() };
    if dir.exists() {
        return Ok(archives);
    }

    eprintln!("building the bench images in {}", dir.display());
    let tmp = cache.join(format!(
        ".tmp-bench-containers-{hex}-{}",
        std::process::id()
    ));
    let built = fs::create_dir_all(&tmp)
        .map_err(anyhow::Error::from)
        .and_then(|()| build(rootfs, &tmp));
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e.context("cannot build the bench images"));
    }
    rustix::fs::sync();
    if let Err(e) = fs::rename(&tmp, &dir) {
        let _ = fs::remove_dir_all(&tmp);
        // Another run may have renamed its copy first; then use that one.
        ensure!(
            dir.exists(),
            "cannot rename {} to {}: {e}",
            tmp.display(),
            dir.display()
        );
    }
    Ok(archives)
}

fn build(rootfs: &Path, dir: &Path) -> anyhow::Result<()> {
    let tools = Image::new()
        .layer(&host_tools_layer(MTIME, &["sh", "true", "cat", "sleep"])?)?
        .config(ImageConfig {
            cmd: vec!["true".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            ..ImageConfig::default()
        });

    let split = layers::split(rootfs)?;
    let mut python = Image::new();
    for layer_dir in [&split.base, &split.top] {
        python = python.built_layer(debian::dir_layer(layer_dir)?);
    }
    let python = python.config(ImageConfig {
        cmd: vec!["python3".into()],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        ..ImageConfig::default()
    });

    let archives = Archives {
        dir: dir.to_path_buf(),
    };
    for (image, base) in [(BenchImage::Tools, tools), (BenchImage::Python, python)] {
        for mode in MODES {
            base.clone()
                .layer(&variant_layer(mode))?
                .write_oci_archive(&image.reference(mode), &archives.archive(image, mode))?;
        }
    }
    Ok(())
}

/// The top layer of the variant for `mode`: one small file naming it.
fn variant_layer(mode: Mode) -> Layer {
    let mut layer = Layer::new(MTIME);
    layer.file(".pare-bench-variant", format!("{mode}\n"), 0o644);
    layer
}

/// The chain ID of the top layer of the single image in OCI archive
/// `archive` (the parent of its containers' snapshots).
pub fn top_chain_id(archive: &Path) -> anyhow::Result<ChainId> {
    let files = read_archive(archive)?;
    let file = |name: &str| {
        files
            .get(name)
            .with_context(|| format!("{} has no {name}", archive.display()))
    };
    let blob = |descriptor: &Descriptor| -> anyhow::Result<&Vec<u8>> {
        file(&format!("blobs/sha256/{}", digest_of(descriptor)?.hex()))
    };
    let index: ImageIndex = parse_json(file("index.json")?, "index")?;
    let entry = index.manifests().first().context("the index is empty")?;
    let manifest: ImageManifest = parse_json(blob(entry)?, "manifest")?;
    let diff_ids = diff_ids(blob(manifest.config())?)?;
    ChainId::of(&diff_ids).context("the image has no layers")
}

/// The small files of an OCI archive (index, manifests, configs), by path.
fn read_archive(archive: &Path) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    const SMALL: u64 = 1 << 20;
    let file = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut files = HashMap::new();
    for entry in tar::Archive::new(file).entries()? {
        let mut entry = entry?;
        if entry.size() > SMALL {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        files.insert(path, bytes);
    }
    Ok(files)
}
