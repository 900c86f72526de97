//! Unit tests of the OCI writers: digests, determinism, config carry-over,
//! history and the layout.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::layout::tag_of;
use super::*;

const DIGEST_A: &str = "sha256:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb";
const DIGEST_B: &str = "sha256:3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d";
const DIGEST_C: &str = "sha256:2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6";

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
    let layer = Blob::new(MEDIA_LAYER_GZIP, b"not really gzip".to_vec());
    build_image(
        &original_config(),
        layer,
        DIGEST_C,
        &annotations(),
        "pare compact docker.io/x/app:v1",
    )
    .expect("build")
}

fn json_of(blob: &Blob) -> Value {
    serde_json::from_slice(&blob.bytes).expect("JSON")
}

#[test]
fn chain_id_follows_the_oci_rule() {
    let ids = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(chain_id(&[]), "");
    assert_eq!(chain_id(&ids(&[DIGEST_A])), DIGEST_A);
    assert_eq!(
        chain_id(&ids(&[DIGEST_A, DIGEST_B])),
        "sha256:51c0c8ace48498d6f5fee6b0592cc06f2da0f3cbe09c5a34a97dce85c3889676"
    );
    assert_eq!(
        chain_id(&ids(&[DIGEST_A, DIGEST_B, DIGEST_C])),
        "sha256:2fce7f8ce91bcf0a1428b36e1024639fdbd9469eea762dba98aa749631885106"
    );
}

#[test]
fn blob_digest_and_descriptor() {
    let blob = Blob::new(MEDIA_CONFIG, b"a".to_vec());
    assert_eq!(blob.digest, DIGEST_A);
    assert_eq!(blob.hex(), &DIGEST_A[7..]);
    assert_eq!(
        blob.descriptor(),
        json!({"mediaType": MEDIA_CONFIG, "digest": DIGEST_A, "size": 1})
    );
}

#[test]
fn check_digest_accepts_only_sha256_hex() {
    assert!(check_digest(DIGEST_A).is_ok());
    for bad in [
        "",
        "sha256:",
        "sha512:ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
        "sha256:CA978112CA1BBDCAFAC231B39A23DC4DA786EFF8147C4E72B9807785AFEE48BB",
        "sha256:../../etc/passwd",
    ] {
        assert!(check_digest(bad).is_err(), "{bad:?} accepted");
    }
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
fn build_image_marks_old_history_empty_and_adds_one_entry() {
    let config = json_of(&build().config);
    assert_eq!(
        config["history"],
        json!([
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs.tar /", "empty_layer": true},
            {"created_by": "ENV A=b", "empty_layer": true},
            {"created_by": "COPY app /app", "empty_layer": true},
            {"created_by": "pare compact docker.io/x/app:v1", "comment": image::HISTORY_COMMENT},
        ])
    );
}

#[test]
fn build_image_without_history_gets_one_entry() {
    let layer = Blob::new(MEDIA_LAYER_GZIP, Vec::new());
    let image = build_image(
        br#"{"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        layer,
        DIGEST_A,
        &BTreeMap::new(),
        "h",
    )
    .expect("build");
    assert_eq!(
        json_of(&image.config)["history"],
        json!([{"created_by": "h", "comment": image::HISTORY_COMMENT}])
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
            "mediaType": MEDIA_MANIFEST,
            "config": image.config.descriptor(),
            "layers": [image.layer.descriptor()],
            "annotations": annotations(),
        })
    );
    assert_eq!(image.manifest.media_type, MEDIA_MANIFEST);
    assert_eq!(image.config.media_type, MEDIA_CONFIG);
}

#[test]
fn build_image_rejects_bad_input() {
    let layer = || Blob::new(MEDIA_LAYER_GZIP, Vec::new());
    let none = BTreeMap::new();
    for (config, diff_id) in [
        (&b"not json"[..], DIGEST_A),
        (b"[1]", DIGEST_A),
        (br#"{"history":{}}"#, DIGEST_A),
        (br#"{"history":[1]}"#, DIGEST_A),
        (b"{}", "sha256:short"),
    ] {
        assert!(
            build_image(config, layer(), diff_id, &none, "h").is_err(),
            "{:?}",
            String::from_utf8_lossy(config)
        );
    }
}

#[test]
fn tags_of_references() {
    for (reference, tag) in [
        ("docker.io/library/app:slim", "slim"),
        ("localhost:5000/app", "latest"),
        ("localhost:5000/app:v2", "v2"),
        ("app", "latest"),
    ] {
        assert_eq!(tag_of(reference), tag, "{reference}");
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
        let path = out.join("blobs/sha256").join(blob.hex());
        assert_eq!(std::fs::read(path).expect("blob"), blob.bytes);
    }
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("index"))
            .expect("JSON");
    let mut entry = image.manifest.descriptor();
    entry["annotations"] = json!({
        ANNOTATION_IMAGE_NAME: "docker.io/x/app:slim",
        ANNOTATION_REF_NAME: "slim",
    });
    entry["platform"] = json!({"architecture": "arm64", "os": "linux", "variant": "v8"});
    assert_eq!(
        index,
        json!({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [entry]})
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
    let layer = spool.finish(MEDIA_LAYER_GZIP).expect("finish");
    let spooled = layer.path().to_path_buf();
    assert_eq!(layer.digest(), sha256_digest(&bytes));
    assert_eq!(layer.size(), bytes.len() as u64);
    assert_eq!(
        layer.descriptor(),
        json!({"mediaType": MEDIA_LAYER_GZIP, "digest": sha256_digest(&bytes), "size": 3_000_000})
    );
    let image = build_image(
        &original_config(),
        layer,
        DIGEST_C,
        &annotations(),
        "pare compact docker.io/x/app:v1",
    )
    .expect("build");
    let in_memory = build();
    assert_eq!(
        json_of(&image.manifest)["layers"][0]["digest"],
        sha256_digest(&bytes)
    );
    assert_eq!(
        image.config, in_memory.config,
        "the config does not depend on the layer"
    );

    let out = dir.path().join("layout");
    write_layout(&out, &image, "docker.io/x/app:slim").expect("layout");
    let linked = out.join("blobs/sha256").join(image.layer.hex());
    assert_eq!(std::fs::read(&linked).expect("blob"), bytes);
    assert_eq!(
        std::fs::metadata(&linked).expect("stat").ino(),
        std::fs::metadata(&spooled).expect("stat").ino(),
        "same file system: linked, not copied"
    );
    let tar_path = dir.path().join("image.tar");
    write_layout_tar(&tar_path, &image, "docker.io/x/app:slim").expect("tar");
    let mut archive = tar::Archive::new(std::fs::File::open(&tar_path).expect("open"));
    let name = format!("blobs/sha256/{}", image.layer.hex());
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
