//! Pins pare's containerd client and OCI writer against a private containerd
//! with its stock overlayfs snapshotter: reading an image and its layer
//! directories, storing a one-layer image that runs, and OCI layouts that
//! `ctr images import` accepts.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use oci_spec::image::MediaType;
use pare_fs::id::{ChainId, Digest};
use pare_tests::containerd::{Containerd, Ctr, NAMESPACE};
use pare_tests::images::MTIME;
use pare_tests::mounts::Scratch;
use pare_tests::oci::{
    BuiltImage, DEFAULT_TOOLS, Image, ImageConfig, Layer, gzip, host_tools_layer,
};
use pare_tests::prereq::{CONTAINERD, Need, privileged};
use pare_tools::containerd::{Client, ContainerdError, SourceImage};
use pare_tools::oci::{
    ANNOTATION_PROFILE, ANNOTATION_SOURCE_IMAGE, Blob, NewImage, build_image, digest_of,
    write_layout, write_layout_tar,
};

const SOURCE: &str = "docker.io/pare-tests/source:v1";
const NEW: &str = "docker.io/pare-tests/new:v1";
const FROM_LAYOUT: &str = "docker.io/pare-tests/layout:v1";
const FROM_LAYOUT_TAR: &str = "docker.io/pare-tests/layout-tar:v1";
const SNAPSHOTTER: &str = "overlayfs";
const PROFILE_DIGEST: &str =
    "sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6";
/// What the source image's default command prints.
const DEFAULT_OUTPUT: &str = "hi from /srv/app\nhello\n";

const NEEDS: &[Need] = CONTAINERD;

#[test]
fn privileged_containerd_client_reads_and_stores_images() -> Result<()> {
    if !privileged(
        "privileged_containerd_client_reads_and_stores_images",
        NEEDS,
    ) {
        return Ok(());
    }
    let scratch = Scratch::new()?;
    let containerd = Containerd::start(&scratch.path().join("containerd"), "")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(check(&containerd, scratch.path()));
    if result.is_err() {
        eprintln!("containerd log (tail):\n{}", containerd.log_tail(60));
    }
    containerd.stop()?;
    result
}

#[test]
fn connect_reports_a_missing_socket() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let err = runtime
        .block_on(Client::connect(
            Path::new("/nonexistent/containerd.sock"),
            "default",
        ))
        .expect_err("no socket");
    ensure!(matches!(err, ContainerdError::Connect { .. }), "{err:?}");
    ensure!(
        err.to_string()
            == "cannot connect to containerd at /nonexistent/containerd.sock: \
                no such socket (is containerd running?)",
        "{err}"
    );
    Ok(())
}

/// Two layers (so the view is an overlay): the host tools, then an app
/// directory; the config runs a shell in it.
fn source_image() -> Result<Image> {
    let mut app = Layer::new(MTIME);
    app.dir_all("srv/app", 0o755);
    app.file("srv/app/hello.txt", "hello\n", 0o644);
    Ok(Image::new()
        .layer(&host_tools_layer(MTIME, DEFAULT_TOOLS)?)?
        .layer(&app)?
        .config(ImageConfig {
            cmd: vec![
                "/usr/bin/sh".into(),
                "-c".into(),
                "echo $GREETING from $(pwd); cat hello.txt".into(),
            ],
            env: vec!["PATH=/usr/bin:/bin".into(), "GREETING=hi".into()],
            working_dir: Some("/srv/app".into()),
            ..ImageConfig::default()
        }))
}

async fn check(containerd: &Containerd, scratch: &Path) -> Result<()> {
    let ctr = containerd.ctr();
    let tarball = scratch.join("source.tar");
    let built = source_image()?.write_oci_archive(SOURCE, &tarball)?;
    ctr.import(&tarball, SNAPSHOTTER)?;
    let client = Client::connect(containerd.address(), NAMESPACE).await?;

    let source = client.image(SOURCE).await?;
    check_source(&source, &built)?;
    let err = client
        .image("docker.io/pare-tests/missing:v1")
        .await
        .expect_err("missing image");
    ensure!(
        err.to_string()
            == "image docker.io/pare-tests/missing:v1 not found in namespace pare-tests",
        "{err}"
    );

    let dirs = client.layer_dirs(SNAPSHOTTER, &source.top_chain_id).await?;
    check_layer_dirs(&dirs)?;
    let unknown = ChainId::from(Digest::parse(PROFILE_DIGEST)?);
    let err = client
        .layer_dirs(SNAPSHOTTER, &unknown)
        .await
        .expect_err("not unpacked");
    ensure!(
        matches!(err, ContainerdError::NotUnpacked { .. }),
        "{err:?}"
    );
    let views = String::from_utf8(
        ctr.ctr(&["snapshots", "--snapshotter", SNAPSHOTTER, "ls"])?
            .stdout,
    )?;
    ensure!(
        !views.contains("pare-compact"),
        "view left behind:\n{views}"
    );

    let image = new_image(&source, &built, &dirs[0])?;
    ensure!(
        new_image(&source, &built, &dirs[0])? == image,
        "build_image is deterministic"
    );
    check_store(&client, &ctr, &image).await?;
    check_layouts(&ctr, scratch, &image)?;
    Ok(())
}

fn check_source(source: &SourceImage, built: &BuiltImage) -> Result<()> {
    let top = built.top_chain_id().context("layers")?;
    ensure!(source.name == SOURCE);
    ensure!(source.manifest_digest == built.manifest_digest);
    ensure!(source.manifest == built.manifest);
    ensure!(source.config_digest == built.config_digest);
    ensure!(source.config == built.config);
    ensure!(source.diff_ids == built.diff_ids(), "{:?}", source.diff_ids);
    ensure!(
        source.top_chain_id == top,
        "{} != {top}",
        source.top_chain_id
    );
    let layer_digests: Vec<Digest> = source
        .layers
        .iter()
        .map(digest_of)
        .collect::<Result<_, _>>()?;
    let built_digests: Vec<Digest> = built.layers.iter().map(|l| l.digest.clone()).collect();
    ensure!(layer_digests == built_digests, "{layer_digests:?}");
    Ok(())
}

fn check_layer_dirs(dirs: &[PathBuf]) -> Result<()> {
    ensure!(dirs.len() == 2, "two layers, topmost first: {dirs:?}");
    ensure!(dirs.iter().all(|d| d.is_dir()), "{dirs:?}");
    ensure!(dirs[0].join("srv/app/hello.txt").is_file(), "{dirs:?}");
    ensure!(!dirs[0].join("usr/bin").exists(), "{dirs:?}");
    ensure!(dirs[1].join("usr/bin/sh").exists(), "{dirs:?}");
    Ok(())
}

/// The one-layer image: the tools layer's entries copied with the tar
/// crate, plus `srv/app/hello.txt` read from the top layer directory.
fn new_image(source: &SourceImage, built: &BuiltImage, top_dir: &Path) -> Result<NewImage> {
    let mut out = tar::Builder::new(Vec::new());
    let mut tools = tar::Archive::new(&built.layers[0].tar[..]);
    for entry in tools.entries()? {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        let path = entry.path()?.into_owned();
        out.append_data(&mut header, path, &mut entry)?;
    }
    let hello = std::fs::read(top_dir.join("srv/app/hello.txt"))?;
    for (path, mode, bytes, kind) in [
        ("srv/", 0o755, &[][..], tar::EntryType::Directory),
        ("srv/app/", 0o755, &[][..], tar::EntryType::Directory),
        (
            "srv/app/hello.txt",
            0o644,
            &hello[..],
            tar::EntryType::Regular,
        ),
    ] {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_mtime(MTIME);
        header.set_size(bytes.len() as u64);
        out.append_data(&mut header, path, bytes)?;
    }
    let tar = out.into_inner()?;
    let annotations = BTreeMap::from([
        (
            ANNOTATION_SOURCE_IMAGE.to_string(),
            source.manifest_digest.to_string(),
        ),
        (ANNOTATION_PROFILE.to_string(), PROFILE_DIGEST.to_string()),
    ]);
    Ok(build_image(
        &source.config,
        Blob::new(MediaType::ImageLayerGzip, gzip(&tar)?),
        &Digest::sha256(&tar),
        &annotations,
        "pare compact docker.io/pare-tests/source:v1",
    )?)
}

async fn check_store(client: &Client, ctr: &Ctr, image: &NewImage) -> Result<()> {
    client.store_image(NEW, image).await?;
    // Again: every blob is present now and the image exists (update path).
    client.store_image(NEW, image).await?;
    let images = String::from_utf8(ctr.ctr(&["images", "ls"])?.stdout)?;
    ensure!(
        images
            .lines()
            .any(|l| l.starts_with(NEW) && l.contains(image.manifest.digest.as_str())),
        "{NEW} with {} not listed:\n{images}",
        image.manifest.digest
    );
    let leases = String::from_utf8(ctr.ctr(&["leases", "ls"])?.stdout)?;
    ensure!(
        !leases.contains("pare-compact"),
        "lease left behind:\n{leases}"
    );

    // Storing again restores the manifest's gc.ref labels when they are gone.
    let gc_labels = [
        "containerd.io/gc.ref.content.config",
        "containerd.io/gc.ref.content.l.0",
    ];
    let manifest_line = |ctr: &Ctr| -> Result<String> {
        let list = String::from_utf8(ctr.ctr(&["content", "ls"])?.stdout)?;
        list.lines()
            .find(|l| l.starts_with(image.manifest.digest.as_str()))
            .map(String::from)
            .context("manifest not in `ctr content ls`")
    };
    let expected = [
        format!("{}={}", gc_labels[0], image.config.digest),
        format!("{}={}", gc_labels[1], image.layer.digest),
    ];
    let labelled = |line: &str| expected.iter().all(|label| line.contains(label.as_str()));
    let line = manifest_line(ctr)?;
    ensure!(labelled(&line), "{line}");
    let cleared: Vec<String> = gc_labels.iter().map(|l| format!("{l}=")).collect();
    let mut args = vec!["content", "label", image.manifest.digest.as_str()];
    args.extend(cleared.iter().map(String::as_str));
    ctr.ctr(&args)?;
    ensure!(
        !manifest_line(ctr)?.contains(gc_labels[0]),
        "labels not cleared"
    );
    client.store_image(NEW, image).await?;
    let line = manifest_line(ctr)?;
    ensure!(labelled(&line), "labels not restored: {line}");

    // A synchronous garbage collection keeps config and layer: the manifest's
    // gc.ref labels tie them to the image.
    ctr.ctr(&["images", "tag", SOURCE, "docker.io/pare-tests/tmp:v1"])?;
    ctr.ctr(&["images", "rm", "--sync", "docker.io/pare-tests/tmp:v1"])?;
    for blob in [&image.manifest, &image.config, &image.layer] {
        let bytes = client.read_blob(&blob.digest).await?;
        ensure!(bytes == blob.bytes, "blob {} differs", blob.digest);
    }

    let out = ctr.run(
        NEW,
        "new-echo",
        SNAPSHOTTER,
        &["/usr/bin/sh", "-c", "echo ok"],
    )?;
    ensure!(out == "ok\n", "printed {out:?}");
    let out = ctr.run(NEW, "new-default", SNAPSHOTTER, &[])?;
    ensure!(
        out == DEFAULT_OUTPUT,
        "Cmd, Env and WorkingDir carry over: printed {out:?}"
    );
    let stored = client.image(NEW).await?;
    ensure!(stored.config == image.config.bytes);
    ensure!(stored.diff_ids.len() == 1);
    let dirs = client.layer_dirs(SNAPSHOTTER, &stored.top_chain_id).await?;
    ensure!(
        dirs.len() == 1 && dirs[0].join("usr/bin/sh").exists(),
        "{dirs:?}"
    );
    Ok(())
}

fn check_layouts(ctr: &Ctr, scratch: &Path, image: &NewImage) -> Result<()> {
    let layout = scratch.join("layout");
    write_layout(&layout, image, FROM_LAYOUT)?;
    let tarball = scratch.join("layout.tar");
    let mut archive = tar::Builder::new(std::fs::File::create(&tarball)?);
    archive.append_dir_all(".", &layout)?;
    archive.into_inner()?;
    ctr.import(&tarball, SNAPSHOTTER)?;
    let out = ctr.run(
        FROM_LAYOUT,
        "layout-echo",
        SNAPSHOTTER,
        &["/usr/bin/sh", "-c", "echo ok"],
    )?;
    ensure!(out == "ok\n", "printed {out:?}");

    let direct = scratch.join("layout-direct.tar");
    write_layout_tar(&direct, image, FROM_LAYOUT_TAR)?;
    let mut names = Vec::new();
    for entry in tar::Archive::new(std::fs::File::open(&direct)?).entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name == "index.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text)?;
            ensure!(text.contains(FROM_LAYOUT_TAR), "{text}");
        }
        names.push(name);
    }
    ensure!(names.contains(&"oci-layout".to_string()), "{names:?}");
    ctr.import(&direct, SNAPSHOTTER)?;
    let out = ctr.run(FROM_LAYOUT_TAR, "layout-tar-default", SNAPSHOTTER, &[])?;
    ensure!(out == DEFAULT_OUTPUT, "printed {out:?}");
    let images = String::from_utf8(ctr.ctr(&["images", "ls"])?.stdout)?;
    for name in [FROM_LAYOUT, FROM_LAYOUT_TAR] {
        ensure!(
            images
                .lines()
                .any(|l| l.starts_with(name) && l.contains(image.manifest.digest.as_str())),
            "{name} with {} not listed:\n{images}",
            image.manifest.digest
        );
    }
    Ok(())
}
