//! Settling as the snapshot state machine does it: learn containers are
//! counted when removed, against the profile's growth; a settled image's
//! containers get a plain overlay but for the sample; growth unsettles.

use std::path::Path;
use std::sync::Arc;

use pare_fs::profile::{AccessKind, Recorder};

use super::*;
use crate::views::Lingering;

/// Appends `paths` (as lookups) to the profile of chain `sha256:c2`.
fn touch(root: &Path, paths: &[&str]) {
    let journal = profile_path(root, &chain("sha256:c2"));
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    let recorder = Recorder::open(
        &journal,
        Some(chain("sha256:c2").to_string()),
        Duration::from_millis(1),
    )
    .unwrap();
    let handle = recorder.handle();
    for path in paths {
        handle.record(&Arc::from(Path::new(path)), AccessKind::Lookup);
    }
    drop(handle);
    recorder.finish().unwrap();
}

/// Creates and removes container `name`; true when it got a view.
fn run(e: &Env, top: &str, name: &str) -> bool {
    let key = format!("default/{name}");
    let mounts = e.snaps.create(&key, top, no_labels(), false).unwrap();
    e.snaps.remove(&key).unwrap();
    lower(&mounts).contains("/views/")
}

#[test]
fn an_image_settles_after_quiet_containers_samples_and_unsettles_on_growth() {
    let e = env_with(
        Lingering::NONE,
        Settling {
            after: 2,
            every: Some(2),
        },
    );
    let top = unpack_image(&e.snaps, "default");
    touch(&e.root, &["app", "app/a"]);
    assert!(run(&e, &top, "10/grew"), "learning: a view");
    assert!(run(&e, &top, "11/quiet-1"));
    assert!(
        run(&e, &top, "12/quiet-2"),
        "the second quiet one settles it"
    );
    assert!(
        run(&e, &top, "13/sampled"),
        "the first start of the sample learns"
    );
    assert!(
        !run(&e, &top, "14/settled"),
        "a plain overlay of the layers"
    );
    // The next sampled container grows the profile: the image learns again.
    let key = "default/15/sampled-grows";
    let mounts = e.snaps.create(key, &top, no_labels(), false).unwrap();
    assert!(lower(&mounts).contains("/views/"));
    touch(&e.root, &["app/b"]);
    e.snaps.remove(key).unwrap();
    assert!(run(&e, &top, "16/learning-again"));
    assert!(run(&e, &top, "17/learning-again"));
}
