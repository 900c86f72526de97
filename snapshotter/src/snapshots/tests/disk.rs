//! The metadata store on a full disk (privileged: needs root for a tmpfs).

use super::*;

/// Root and a tmpfs: a privileged test (fails under CI=true without them).
fn small_tmpfs(dir: &Path, size: &str) -> bool {
    let why = if !rustix::process::geteuid().is_root() {
        Some("not running as root".to_string())
    } else {
        rustix::mount::mount(
            "tmpfs",
            dir,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(
                std::ffi::CString::new(format!("size={size}"))
                    .unwrap()
                    .as_c_str(),
            ),
        )
        .err()
        .map(|e| format!("cannot mount a tmpfs: {e}"))
    };
    match why {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("privileged test cannot run under CI=true: {why}")
        }
        Some(why) => {
            eprintln!("SKIPPED privileged_metadata_store_recovers_from_a_full_disk: {why}");
            false
        }
    }
}

#[test]
fn privileged_metadata_store_recovers_from_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    if !small_tmpfs(dir.path(), "4m") {
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(self.0, rustix::mount::UnmountFlags::DETACH);
        }
    }
    let _guard = Unmount(dir.path());
    let root = dir.path().join("root");
    let mounter = FakeMounter::default();
    let snaps = open(&root, &mounter);
    let top = unpack_image(&snaps, "default");
    // Fill the disk.
    let filler = dir.path().join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![7u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
    }
    let mut failed = 0;
    for i in 0..20 {
        if snaps
            .create(
                &format!("default/{}/c{i}", 100 + i),
                &top,
                no_labels(),
                false,
            )
            .is_err()
        {
            failed += 1;
        }
    }
    assert!(failed > 0, "a full disk makes Prepare fail");
    // Space again: the same daemon works without a restart.
    std::fs::remove_file(&filler).unwrap();
    snaps
        .create("default/200/after", &top, no_labels(), false)
        .expect("the store recovered");
    assert_eq!(snaps.stat("default/200/after").unwrap().kind, Kind::Active);
    snaps.remove("default/200/after").unwrap();
    assert_eq!(snaps.stat(&top).unwrap().kind, Kind::Committed);
}
