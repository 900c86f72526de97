//! OCI images from built layers: config and manifest JSON, and the OCI image
//! layout tarball that `ctr images import` reads.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use super::{BuiltLayer, Digest, Layer, MEDIA_TYPE_LAYER_GZIP, chain_ids};

/// Media type of an image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";

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
    fn to_json(&self) -> Value {
        let mut config = Map::new();
        let mut put = |key: &str, value: Value| {
            config.insert(key.to_string(), value);
        };
        if let Some(user) = &self.user {
            put("User", json!(user));
        }
        if !self.exposed_ports.is_empty() {
            let ports: Map<String, Value> = self
                .exposed_ports
                .iter()
                .map(|p| (p.clone(), json!({})))
                .collect();
            put("ExposedPorts", Value::Object(ports));
        }
        if !self.env.is_empty() {
            put("Env", json!(self.env));
        }
        if !self.entrypoint.is_empty() {
            put("Entrypoint", json!(self.entrypoint));
        }
        if !self.cmd.is_empty() {
            put("Cmd", json!(self.cmd));
        }
        if let Some(dir) = &self.working_dir {
            put("WorkingDir", json!(dir));
        }
        if !self.labels.is_empty() {
            put("Labels", json!(self.labels));
        }
        if let Some(signal) = &self.stop_signal {
            put("StopSignal", json!(signal));
        }
        Value::Object(config)
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
    pub fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.diff_ids())
    }

    /// Chain ID of the top layer (keys the image's profile).
    pub fn top_chain_id(&self) -> Option<Digest> {
        self.chain_ids().pop()
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
        let diff_ids: Vec<String> = self.layers.iter().map(|l| l.diff_id.to_string()).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": self.config.to_json(),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))?;
        let config_digest = Digest::of(&config);
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| descriptor(MEDIA_TYPE_LAYER_GZIP, &l.digest, l.gz.len()))
            .collect();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": descriptor(MEDIA_TYPE_CONFIG, &config_digest, config.len()),
            "layers": layers,
        }))?;
        Ok(BuiltImage {
            layers: self.layers.clone(),
            config_digest,
            manifest_digest: Digest::of(&manifest),
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
        let tag = name
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map_or("latest", |(_, tag)| tag);
        let mut manifest = descriptor(
            MEDIA_TYPE_MANIFEST,
            &image.manifest_digest,
            image.manifest.len(),
        );
        manifest["annotations"] = json!({
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": tag,
        });
        manifest["platform"] = json!({"architecture": "amd64", "os": "linux"});
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [manifest],
        }))?;

        let mut archive = Layer::new(0);
        archive.file(
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            0o644,
        );
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

fn descriptor(media_type: &str, digest: &Digest, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest.as_str(), "size": size})
}
