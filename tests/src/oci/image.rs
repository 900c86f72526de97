//! OCI images from built layers: config and manifest JSON, and the OCI image
//! layout tarball that `ctr images import` reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use oci_spec::image::{
    Arch, Config, ImageConfiguration, ImageManifestBuilder, MediaType, Os, RootFs,
};
use pare_fs::id::{ChainId, Digest};
use pare_tools::oci::{
    canonical_json, descriptor, index_entry, index_json, layout_file, platform_of,
};

use super::{BuiltLayer, Layer};

/// The runtime part of an image config (`config` in the OCI config JSON).
/// Empty fields are left out of the JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User` (`name`, `uid`, `uid:gid`).
    pub user: Option<String>,
    /// `Labels`.
    pub labels: BTreeMap<String, String>,
    /// `ExposedPorts`, as `80/tcp`.
    pub exposed_ports: BTreeSet<String>,
    /// `StopSignal`, as `SIGTERM`.
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    fn to_spec(&self) -> Config {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let mut config = Config::default();
        config.set_user(self.user.clone());
        config.set_exposed_ports(
            (!self.exposed_ports.is_empty()).then(|| self.exposed_ports.iter().cloned().collect()),
        );
        config.set_env(list(&self.env));
        config.set_entrypoint(list(&self.entrypoint));
        config.set_cmd(list(&self.cmd));
        config.set_working_dir(self.working_dir.clone());
        config.set_labels(
            (!self.labels.is_empty()).then(|| self.labels.clone().into_iter().collect()),
        );
        config.set_stop_signal(self.stop_signal.clone());
        config
    }
}

/// An image under construction: layers bottom first, and a config.
#[derive(Clone, Debug, Default)]
pub struct Image {
    layers: Vec<BuiltLayer>,
    config: ImageConfig,
}

/// A finished image: its blobs and digests.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// The layers, bottom first.
    pub layers: Vec<BuiltLayer>,
    /// The config JSON.
    pub config: Vec<u8>,
    /// Digest of `config`.
    pub config_digest: Digest,
    /// The manifest JSON.
    pub manifest: Vec<u8>,
    /// Digest of `manifest` (what `ctr images ls` shows).
    pub manifest_digest: Digest,
}

impl BuiltImage {
    /// The layers' diff IDs, bottom first.
    pub fn diff_ids(&self) -> Vec<Digest> {
        self.layers.iter().map(|l| l.diff_id.clone()).collect()
    }

    /// The layers' chain IDs, bottom first.
    pub fn chain_ids(&self) -> Vec<ChainId> {
        ChainId::all_of(&self.diff_ids())
    }

    /// Chain ID of the top layer (keys the image's profile).
    pub fn top_chain_id(&self) -> Option<ChainId> {
        ChainId::of(&self.diff_ids())
    }
}

impl Image {
    /// An image with no layers and an empty config.
    pub fn new() -> Image {
        Image::default()
    }

    /// Adds a layer on top.
    pub fn layer(mut self, layer: &Layer) -> Result<Image> {
        self.layers.push(layer.build()?);
        Ok(self)
    }

    /// Adds an already built layer on top.
    pub fn built_layer(mut self, layer: BuiltLayer) -> Image {
        self.layers.push(layer);
        self
    }

    /// Sets the config.
    pub fn config(mut self, config: ImageConfig) -> Image {
        self.config = config;
        self
    }

    /// Builds config and manifest (no `created` time, no history: deterministic).
    pub fn build(&self) -> Result<BuiltImage> {
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(self.layers.iter().map(|l| l.diff_id.to_string()).collect());
        let mut config = ImageConfiguration::default();
        config.set_architecture(Arch::Amd64);
        config.set_os(Os::Linux);
        config.set_config(Some(self.config.to_spec()));
        config.set_rootfs(rootfs);
        let config = canonical_json(&config, "the image config")?;
        let config_digest = Digest::sha256(&config);
        let layers = self
            .layers
            .iter()
            .map(|l| descriptor(MediaType::ImageLayerGzip, &l.digest, l.gz.len() as u64))
            .collect::<Vec<_>>();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(
                MediaType::ImageConfig,
                &config_digest,
                config.len() as u64,
            ))
            .layers(layers)
            .build()?;
        let manifest = canonical_json(&manifest, "the image manifest")?;
        Ok(BuiltImage {
            layers: self.layers.clone(),
            config_digest,
            manifest_digest: Digest::sha256(&manifest),
            config,
            manifest,
        })
    }

    /// Writes an OCI image layout tarball naming the image `name` (a full
    /// reference such as `docker.io/pare/test:v1`): `index.json` carries it as
    /// `io.containerd.image.name` (what `ctr images import` uses) and its tag as
    /// `org.opencontainers.image.ref.name`.
    pub fn write_oci_archive(&self, name: &str, out: &Path) -> Result<BuiltImage> {
        let tar = self.oci_archive(name)?;
        std::fs::write(out, &tar.1).with_context(|| format!("write {}", out.display()))?;
        Ok(tar.0)
    }

    /// The OCI image layout tarball (see [`Image::write_oci_archive`]) and the image.
    pub fn oci_archive(&self, name: &str) -> Result<(BuiltImage, Vec<u8>)> {
        let image = self.build()?;
        let manifest = descriptor(
            MediaType::ImageManifest,
            &image.manifest_digest,
            image.manifest.len() as u64,
        );
        let entry = index_entry(manifest, name, platform_of(&image.config));
        let index = index_json(vec![entry])?;

        let mut archive = Layer::new(0);
        archive.file("oci-layout", layout_file()?, 0o644);
        archive.file("index.json", index, 0o644);
        archive.dir_all("blobs/sha256", 0o755);
        let mut blobs: BTreeMap<&Digest, &[u8]> = BTreeMap::new();
        blobs.insert(&image.config_digest, &image.config);
        blobs.insert(&image.manifest_digest, &image.manifest);
        for layer in &image.layers {
            blobs.insert(&layer.digest, &layer.gz);
        }
        for (digest, bytes) in blobs {
            archive.file(&format!("blobs/sha256/{}", digest.hex()), bytes, 0o644);
        }
        let tar = archive.tar()?;
        Ok((image, tar))
    }
}
