//! Unit tests of the OCI writers: digests, determinism, config carry-over,
//! history and the layout.

use std::collections::BTreeMap;

use oci_spec::image::{ANNOTATION_REF_NAME, MediaType};
use pare_fs::id::Digest;
use serde_json::{Value, json};

use super::*;

const DIGEST_A: &str = "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";
const DIGEST_B: &str = "sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d";
const DIGEST_C: &str = "sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6";

fn digest(s: &str) -> Digest {
    Digest::parse(s).expect("digest")
}

fn original_config() -> Vec<u8> {
    // Key order as Docker writes it (not sorted), and a `created` time.
    br#"{"architecture":"arm64","variant":"v8","os":"linux","created":"2024-01-02T03:04:05Z",
        "config":{"User":"1000:1000","ExposedPorts":{"8080/tcp":{}},"Env":["PATH=/usr/bin","A=b"],
        "Entrypoint":["/app"],"Cmd":["--serve"],"WorkingDir":"/srv","Volumes":{"/data":{}},
        "Labels":{"org.example":"x"},"StopSignal":"SIGINT"},
        "rootfs":{"type":"layers","diff_ids":["sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
                                            "sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"]},
        "history":[{"created":"2024-01-01T00:00:00Z","created_by":"ADD rootfs.tar /"},
                   {"created_by":"ENV A=b","empty_layer":true},
                   {"created_by":"COPY app /app"}]}"#
        .to_vec()
}

fn annotations() -> BTreeMap<String, String> {
    BTreeMap::from([
        (ANNOTATION_SOURCE_IMAGE.to_string(), DIGEST_A.to_string()),
        (ANNOTATION_PROFILE.to_string(), DIGEST_B.to_string()),
    ])
}

fn build() -> NewImage {
    let layer = Blob::new(MediaType::ImageLayerGzip, b"not really gzip".to_vec());
    build_image(
        &original_config(),
        layer,
        &digest(DIGEST_C),
        &annotations(),
        "pare compact docker.io/x/app:v1",
    )
    .expect("build")
}

fn json_of(blob: &Blob) -> Value {
    serde_json::from_slice(&blob.bytes).expect("JSON")
}

fn to_json(value: impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("JSON")
}

#[test]
fn blob_digest_and_descriptor() {
    let blob = Blob::new(MediaType::ImageConfig, b"a".to_vec());
    assert_eq!(blob.digest.as_str(), DIGEST_A);
    assert_eq!(
        to_json(blob.descriptor()),
        json!({"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST_A, "size": 1})
    );
}

#[test]
fn build_image_is_deterministic() {
    let (a, b) = (build(), build());
    assert_eq!(a, b);
    // Keys are sorted whatever the order of the original.
    let text = String::from_utf8(a.config.bytes.clone()).expect("UTF-8");
    assert!(
        text.starts_with(r#"{"architecture":"arm64","config":{"Cmd":"#),
        "{text}"
    );
}

#[test]
fn build_image_carries_the_config_over() {
    let image = build();
    let original: Value = serde_json::from_slice(&original_config()).expect("JSON");
    let config = json_of(&image.config);
    assert_eq!(config["config"], original["config"]);
    for key in ["architecture", "variant", "os", "created"] {
        assert_eq!(config[key], original[key], "{key}");
    }
    assert_eq!(
        config["rootfs"],
        json!({"type": "layers", "diff_ids": [DIGEST_C]})
    );
}

#[test]
fn build_image_keeps_every_config_field_it_does_not_change_exactly() {
    // Docker's fields that the OCI config model has no place for, and fields
    // no model knows, at the top and in `config`.
    let original = json!({
        "architecture": "amd64",
        "os": "linux",
        "docker_version": "24.0.7",
        "x-unknown-top": {"nested": [1, 2.5, null, "s"], "empty": {}},
        "config": {
            "Cmd": ["/app"],
            "Healthcheck": {
                "Test": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
                "Interval": 30_000_000_000u64,
                "Timeout": 3_000_000_000u64,
                "Retries": 3,
            },
            "Shell": ["/bin/bash", "-c"],
            "OnBuild": ["RUN echo built"],
            "ArgsEscaped": true,
            "X-Unknown-Config": {"keep": ["me", 1]},
        },
        "rootfs": {"type": "layers", "diff_ids": [DIGEST_A, DIGEST_B]},
        "history": [{"created_by": "ADD rootfs.tar /"}],
    });
    let image = build_image(
        &serde_json::to_vec(&original).expect("JSON"),
        Blob::new(MediaType::ImageLayerGzip, Vec::new()),
        &digest(DIGEST_C),
        &BTreeMap::new(),
        "h",
    )
    .expect("build");
    let mut config = json_of(&image.config);
    let object = config.as_object_mut().expect("object");
    assert_eq!(
        object.remove("rootfs"),
        Some(json!({"type": "layers", "diff_ids": [DIGEST_C]}))
    );
    assert_eq!(
        object.remove("history"),
        Some(json!([
            {"created_by": "ADD rootfs.tar /", "empty_layer": true},
            {"created_by": "h", "comment": HISTORY_COMMENT},
        ]))
    );
    let mut untouched = original;
    let untouched = untouched.as_object_mut().expect("object");
    untouched.remove("rootfs");
    untouched.remove("history");
    assert_eq!(object, untouched);
}

#[test]
fn build_image_marks_old_history_empty_and_adds_one_entry() {
    let config = json_of(&build().config);
    assert_eq!(
        config["history"],
        json!([
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs.tar /", "empty_layer": true},
            {"created_by": "ENV A=b", "empty_layer": true},
            {"created_by": "COPY app /app", "empty_layer": true},
            {"created_by": "pare compact docker.io/x/app:v1", "comment": HISTORY_COMMENT},
        ])
    );
}

#[test]
fn build_image_without_history_gets_one_entry() {
    let layer = Blob::new(MediaType::ImageLayerGzip, Vec::new());
    let image = build_image(
        br#"{"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        layer,
        &digest(DIGEST_A),
        &BTreeMap::new(),
        "h",
    )
    .expect("build");
    assert_eq!(
        json_of(&image.config)["history"],
        json!([{"created_by": "h", "comment": HISTORY_COMMENT}])
    );
    assert!(json_of(&image.manifest).get("annotations").is_none());
}

#[test]
fn manifest_lists_config_layer_and_annotations() {
    let image = build();
    assert_eq!(
        json_of(&image.manifest),
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": image.config.digest.as_str(),
                "size": image.config.bytes.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": image.layer.digest.as_str(),
                "size": image.layer.bytes.len(),
            }],
            "annotations": annotations(),
        })
    );
    assert_eq!(image.manifest.media_type, MediaType::ImageManifest);
    assert_eq!(image.config.media_type, MediaType::ImageConfig);
}

#[test]
fn build_image_rejects_bad_input() {
    let layer = || Blob::new(MediaType::ImageLayerGzip, Vec::new());
    let none = BTreeMap::new();
    for config in [
        &b"not json"[..],
        b"[1]",
        br#"{"history":{}}"#,
        br#"{"history":[1]}"#,
    ] {
        assert!(
            build_image(config, layer(), &digest(DIGEST_A), &none, "h").is_err(),
            "{:?}",
            String::from_utf8_lossy(config)
        );
    }
}

#[test]
fn write_layout_writes_blobs_and_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("layout");
    let image = build();
    write_layout(&out, &image, "docker.io/x/app:slim").expect("layout");
    assert_eq!(
        std::fs::read(out.join("oci-layout")).expect("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    for blob in [&image.config, &image.layer, &image.manifest] {
        let path = out.join("blobs/sha256").join(blob.digest.hex());
        assert_eq!(std::fs::read(path).expect("blob"), blob.bytes);
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("index"))
            .expect("JSON");
    let entry = json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": image.manifest.digest.as_str(),
        "size": image.manifest.bytes.len(),
        "annotations": {
            ANNOTATION_IMAGE_NAME: "docker.io/x/app:slim",
            ANNOTATION_REF_NAME: "slim",
        },
        "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
    });
    assert_eq!(
        index,
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry],
        })
    );

    // Writing again under another name keeps the first; the same name replaces.
    write_layout(&out, &image, "docker.io/x/app:other").expect("second");
    write_layout(&out, &image, "docker.io/x/app:slim").expect("third");
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("index"))
            .expect("JSON");
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            m["annotations"][ANNOTATION_IMAGE_NAME]
                .as_str()
                .expect("name")
        })
        .collect();
    assert_eq!(names, ["docker.io/x/app:other", "docker.io/x/app:slim"]);
}

#[test]
fn write_layout_keeps_other_entries_of_an_existing_index_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let other = json!({
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "digest": DIGEST_A,
        "size": 7,
        "annotations": {ANNOTATION_IMAGE_NAME: "docker.io/x/other:v1", "org.example": "x"},
        "platform": {"architecture": "amd64", "os": "windows", "os.version": "10.0.17763.1"},
    });
    let index = json!({"schemaVersion": 2, "manifests": [other]});
    std::fs::write(
        dir.path().join("oci-layout"),
        layout_file().expect("layout"),
    )
    .expect("write");
    std::fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&index).expect("JSON"),
    )
    .expect("write");
    write_layout(dir.path(), &build(), "docker.io/x/app:slim").expect("layout");
    let written: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).expect("index"))
            .expect("JSON");
    assert_eq!(written["manifests"][0], other);
    assert_eq!(
        written["manifests"][1]["digest"],
        build().manifest.digest.as_str()
    );

    std::fs::write(dir.path().join("index.json"), b"{\"manifests\": 1}").expect("write");
    let err = write_layout(dir.path(), &build(), "app").expect_err("refused");
    assert!(matches!(err, OciError::BadIndex { .. }), "{err}");
}

#[test]
fn write_layout_refuses_a_foreign_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("precious"), b"x").expect("write");
    let err = write_layout(dir.path(), &build(), "app").expect_err("refused");
    assert!(matches!(err, OciError::NotALayout { .. }), "{err}");
    assert!(!dir.path().join("index.json").exists());
}

#[test]
fn write_layout_tar_matches_the_directory_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = build();
    let tar_path = dir.path().join("image.tar");
    write_layout_tar(&tar_path, &image, "docker.io/x/app:slim").expect("tar");
    let first = std::fs::read(&tar_path).expect("read");
    write_layout_tar(&tar_path, &image, "docker.io/x/app:slim").expect("tar again");
    assert_eq!(
        std::fs::read(&tar_path).expect("read"),
        first,
        "deterministic"
    );

    let layout = dir.path().join("layout");
    write_layout(&layout, &image, "docker.io/x/app:slim").expect("layout");
    let mut archive = tar::Archive::new(&first[..]);
    let mut files = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        if entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read entry");
            assert_eq!(
                bytes,
                std::fs::read(layout.join(&path)).expect("file"),
                "{path}"
            );
            files.push(path);
        }
    }
    assert_eq!(files.len(), 5, "{files:?}");
}

#[test]
fn a_spooled_layer_is_hashed_linked_into_the_layout_and_removed_with_its_blob() {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut spool = Spool::new_in(dir.path()).expect("spool");
    for chunk in bytes.chunks(4096) {
        spool.write_all(chunk).expect("write");
    }
    assert_eq!(spool.size(), bytes.len() as u64);
    let layer = spool.finish(MediaType::ImageLayerGzip).expect("finish");
    let spooled = layer.path().to_path_buf();
    assert_eq!(layer.digest(), &Digest::sha256(&bytes));
    assert_eq!(layer.size(), bytes.len() as u64);
    assert_eq!(
        to_json(layer.descriptor()),
        json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": Digest::sha256(&bytes).as_str(),
            "size": 3_000_000,
        })
    );
    let image = build_image(
        &original_config(),
        layer,
        &digest(DIGEST_C),
        &annotations(),
        "pare compact docker.io/x/app:v1",
    )
    .expect("build");
    let in_memory = build();
    assert_eq!(
        json_of(&image.manifest)["layers"][0]["digest"],
        Digest::sha256(&bytes).as_str()
    );
    assert_eq!(
        image.config, in_memory.config,
        "the config does not depend on the layer"
    );

    let out = dir.path().join("layout");
    write_layout(&out, &image, "docker.io/x/app:slim").expect("layout");
    let linked = out.join("blobs/sha256").join(image.layer.digest().hex());
    assert_eq!(std::fs::read(&linked).expect("blob"), bytes);
    assert_eq!(
        std::fs::metadata(&linked).expect("stat").ino(),
        std::fs::metadata(&spooled).expect("stat").ino(),
        "same file system: linked, not copied"
    );
    let tar_path = dir.path().join("image.tar");
    write_layout_tar(&tar_path, &image, "docker.io/x/app:slim").expect("tar");
    let mut archive = tar::Archive::new(std::fs::File::open(&tar_path).expect("open"));
    let name = format!("blobs/sha256/{}", image.layer.digest().hex());
    let mut found = false;
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").to_string_lossy() == name {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut got).expect("read");
            assert_eq!(got, bytes);
            found = true;
        }
    }
    assert!(found, "{name} in the layout tar");

    drop(image);
    assert!(!spooled.exists(), "the spooled file goes with its blob");
    assert_eq!(
        std::fs::read(&linked).expect("blob"),
        bytes,
        "the layout keeps it"
    );
}

#[test]
fn a_spool_that_is_never_finished_leaves_nothing() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spool = Spool::new_in(dir.path()).expect("spool");
    spool.write_all(b"half a layer").expect("write");
    drop(spool);
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);
}
