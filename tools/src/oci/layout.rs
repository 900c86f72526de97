//! The OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/*`), as a
//! directory or as the tar archive that `ctr images import` reads.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use oci_spec::image::{Descriptor, ImageIndex, MediaType};

use super::blob::{replace_with, tmp_path};
use super::{
    Blob, Content, NewImage, OciError, image_name_of, index_entry, index_json, layout_file,
    parse_json,
};

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> OciError {
    let path = path.to_path_buf();
    move |source| OciError::Io { op, path, source }
}

/// Writes `image` into the OCI image layout directory `dir`, named `ref_name`
/// (a full reference such as `docker.io/library/app:slim`).
///
/// `dir` is created when missing; a non-empty directory without `oci-layout`
/// is refused. Into an existing layout the blobs are added and `index.json`
/// keeps its other images (an entry of the same name is replaced). The index
/// entry carries `ref_name` as `io.containerd.image.name` (what `ctr images
/// import` names the image by) and its tag as
/// `org.opencontainers.image.ref.name` (what `skopeo copy oci:DIR:TAG` and
/// the OCI spec use), plus the config's platform. Files are written to a
/// temporary name and renamed; a layer in a file on the same file system is
/// hard-linked, not copied. `ctr images import` needs a tar archive of the
/// layout: see [`write_layout_tar`], or `tar -C DIR -cf OUT.tar .`.
pub fn write_layout<L: Content>(
    dir: &Path,
    image: &NewImage<L>,
    ref_name: &str,
) -> Result<(), OciError> {
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let layout_path = dir.join("oci-layout");
    if !layout_path.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(io("read", dir))?;
        if entries.next().is_some() {
            return Err(OciError::NotALayout {
                dir: dir.to_path_buf(),
            });
        }
        write_atomic(&layout_path, &layout_file()?)?;
    }
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
    for blob in blobs_of(image) {
        let path = blobs.join(blob.digest().hex());
        let present = std::fs::metadata(&path).is_ok_and(|m| m.len() == blob.size());
        if !present {
            blob.write_to(&path).map_err(io("write", &path))?;
        }
    }
    let index_path = dir.join("index.json");
    let others = match std::fs::read(&index_path) {
        Ok(bytes) => other_entries(&index_path, &bytes, ref_name)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io("read", &index_path)(e)),
    };
    write_atomic(&index_path, &image_index_json(image, ref_name, others)?)
}

/// Writes the OCI image layout of `image` named `ref_name` (as
/// [`write_layout`] lays it out) as a tar archive at `path`, ready for `ctr
/// images import`. The archive is deterministic: entries in a fixed order,
/// owned by root, with mtime 0. Blobs are streamed into it.
pub fn write_layout_tar<L: Content>(
    path: &Path,
    image: &NewImage<L>,
    ref_name: &str,
) -> Result<(), OciError> {
    let tmp = tmp_path(path);
    let file = File::create(&tmp).map_err(io("create", &tmp))?;
    let mut tar = tar::Builder::new(BufWriter::new(file));
    // The two small files, as blobs for streaming alike.
    let index = Blob::new(
        MediaType::ImageIndex,
        image_index_json(image, ref_name, Vec::new())?,
    );
    let layout = Blob::new(MediaType::LayoutHeader, layout_file()?);
    let mut entries: Vec<(String, &dyn Content)> = vec![
        ("oci-layout".into(), &layout),
        ("index.json".into(), &index),
    ];
    for blob in blobs_of(image) {
        entries.push((format!("blobs/sha256/{}", blob.digest().hex()), blob));
    }
    let result = (|| {
        for dir in ["blobs/", "blobs/sha256/"] {
            append(&mut tar, dir, tar::EntryType::Directory, 0o755, 0, &[][..])?;
        }
        for (name, blob) in &entries {
            let reader = blob.reader()?;
            append(
                &mut tar,
                name,
                tar::EntryType::Regular,
                0o644,
                blob.size(),
                reader,
            )?;
        }
        let mut out = tar.into_inner()?;
        out.flush()?;
        out.get_ref().sync_all()
    })();
    if let Err(source) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(OciError::Io {
            op: "write",
            path: tmp,
            source,
        });
    }
    std::fs::rename(&tmp, path).map_err(io("rename", &tmp))
}

fn append(
    tar: &mut tar::Builder<BufWriter<File>>,
    name: &str,
    kind: tar::EntryType,
    mode: u32,
    size: u64,
    data: impl Read,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    tar.append_data(&mut header, name, data.take(size))
}

/// The image's blobs, each once (config, layer, manifest), by digest.
fn blobs_of<L: Content>(image: &NewImage<L>) -> Vec<&dyn Content> {
    let mut blobs: Vec<&dyn Content> = vec![&image.config, &image.layer, &image.manifest];
    blobs.sort_by(|a, b| a.digest().cmp(b.digest()));
    blobs.dedup_by(|a, b| a.digest() == b.digest());
    blobs
}

/// The manifests of an existing `index.json` other than the one named `ref_name`.
fn other_entries(path: &Path, bytes: &[u8], ref_name: &str) -> Result<Vec<Descriptor>, OciError> {
    let index: ImageIndex = parse_json(bytes, "index").map_err(|e| OciError::BadIndex {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(index
        .manifests()
        .iter()
        .filter(|m| image_name_of(m) != Some(ref_name))
        .cloned()
        .collect())
}

/// `index.json`: the `others`, then `image` named `ref_name` with its platform.
fn image_index_json<L: Content>(
    image: &NewImage<L>,
    ref_name: &str,
    others: Vec<Descriptor>,
) -> Result<Vec<u8>, OciError> {
    let mut manifests = others;
    manifests.push(index_entry(image.descriptor(), ref_name, image.platform()));
    index_json(manifests)
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    replace_with(path, |tmp| {
        let mut file = File::create(tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })
    .map_err(io("write", path))
}
