//! Lingering views: a view outlives its last container for the linger time
//! (a next container finds it mounted), goes when reaped or at shutdown, and
//! past the most lingering views goes at once.

use super::*;
use crate::views::Lingering;

#[test]
fn a_view_lingers_after_its_last_container_and_serves_the_next() {
    let e = env_with(
        Lingering {
            linger: Duration::from_secs(3600),
            max: 16,
        },
        Settling::NEVER,
    );
    let top = unpack_image(&e.snaps, "default");
    e.snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    e.snaps.remove("default/10/c1").unwrap();
    assert_eq!(e.mounter.calls(), ["mount sha256-c2 [2,1] profiled=true"]);
    let keys = e.snaps.view_keys();
    assert_eq!(keys.len(), 1, "it lingers, with no container: {keys:?}");
    assert!(keys[0].1.is_empty());
    // The next container gets the lingering view: no second mount.
    e.snaps
        .create("default/11/c2", &top, no_labels(), false)
        .unwrap();
    e.snaps.remove("default/11/c2").unwrap();
    e.snaps.reap_lingering(false);
    assert_eq!(
        e.mounter.calls(),
        ["mount sha256-c2 [2,1] profiled=true"],
        "not yet: its linger time has not passed"
    );
    // At shutdown lingering views go.
    e.snaps.shutdown();
    assert_eq!(
        e.mounter.calls(),
        ["mount sha256-c2 [2,1] profiled=true", "unmount sha256-c2"]
    );
    assert!(e.snaps.view_keys().is_empty());
    assert!(!e.root.join("views/sha256-c2").exists());
}

#[test]
fn past_the_most_lingering_views_a_view_goes_at_once_and_an_expired_one_is_reaped() {
    let none = env_with(
        Lingering {
            linger: Duration::from_secs(3600),
            max: 0,
        },
        Settling::NEVER,
    );
    let top = unpack_image(&none.snaps, "default");
    none.snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    none.snaps.remove("default/10/c1").unwrap();
    assert_eq!(
        none.mounter.calls(),
        ["mount sha256-c2 [2,1] profiled=true", "unmount sha256-c2"]
    );

    let short = env_with(
        Lingering {
            linger: Duration::from_millis(1),
            max: 16,
        },
        Settling::NEVER,
    );
    let top = unpack_image(&short.snaps, "default");
    short
        .snaps
        .create("default/10/c1", &top, no_labels(), false)
        .unwrap();
    short.snaps.remove("default/10/c1").unwrap();
    std::thread::sleep(Duration::from_millis(5));
    short.snaps.reap_lingering(false);
    assert_eq!(
        short.mounter.calls(),
        ["mount sha256-c2 [2,1] profiled=true", "unmount sha256-c2"]
    );
}
