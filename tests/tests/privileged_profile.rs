//! The profile a view records: a scripted set of accesses gives exactly the
//! expected journal, and SIGKILL mid-run leaves a readable journal.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pare_fs::profile::{self, AccessKind};
use pare_tests::mounts::PareMount;
use pare_tests::poll::eventually;
use pare_tests::prereq::{Need, pare_bin, privileged};
use pare_tests::transport::Via;

const NEEDS: &[Need] = &[Need::Root, Need::Fuse];

/// How long a journaled access may take to reach the file (it is flushed
/// every 100 ms).
const FLUSHED: Duration = Duration::from_secs(10);

fn image(root: &Path) -> (PathBuf, PathBuf) {
    let (top, base) = (root.join("top"), root.join("base"));
    for dir in ["etc", "bin", "data/sub"] {
        std::fs::create_dir_all(base.join(dir)).unwrap();
    }
    std::fs::create_dir_all(top.join("etc")).unwrap();
    std::fs::write(base.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(top.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(base.join("data/a"), "a").unwrap();
    std::fs::write(base.join("unused"), "never touched").unwrap();
    let script = top.join("bin/hello.sh");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(&script, "#!/bin/sh\necho hello\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("etc/passwd", top.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/hosts", top.join("abs-link")).unwrap();
    (top, base)
}

fn start(top: &Path, base: &Path, mnt: &Path, journal: &Path, via: Via) -> PareMount {
    let journal = journal.to_str().unwrap();
    let log = mnt.with_extension("log");
    let mut args = vec!["--profile", journal, "--log-level", "info"];
    args.extend(via.args());
    PareMount::start(&[top.to_path_buf(), base.to_path_buf()], mnt, &args, &log).unwrap()
}

fn entries(profile: &Path) -> Vec<(String, Vec<AccessKind>)> {
    profile::read(profile)
        .unwrap()
        .entries
        .into_iter()
        .map(|e| (e.path.to_string(), e.accesses))
        .collect()
}

#[test]
fn privileged_scripted_accesses_give_exactly_the_expected_journal() {
    scripted_accesses(
        "privileged_scripted_accesses_give_exactly_the_expected_journal",
        Via::IoUring,
    );
}

#[test]
fn privileged_scripted_accesses_give_exactly_the_expected_journal_over_dev_fuse() {
    scripted_accesses(
        "privileged_scripted_accesses_give_exactly_the_expected_journal_over_dev_fuse",
        Via::DevFuse,
    );
}

fn scripted_accesses(test: &str, via: Via) {
    if !privileged(test, NEEDS) || !privileged(test, via.needs()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (top, base) = image(tmp.path());
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let journal = tmp.path().join("profile");
    let view = start(&top, &base, &mnt, &journal, via);

    std::fs::metadata(mnt.join("etc/passwd")).unwrap(); // stat: lookups along the path
    std::fs::read(mnt.join("etc/passwd")).unwrap(); // read
    std::fs::read(mnt.join("etc/passwd")).unwrap(); // repeated: nothing new
    std::fs::metadata(mnt.join("etc/passwd")).unwrap(); // repeated: nothing new
    assert_eq!(
        std::fs::read_link(mnt.join("link")).unwrap(),
        Path::new("etc/passwd")
    );
    std::fs::read(mnt.join("link")).unwrap(); // through a symlink to a file already read
    assert!(std::fs::metadata(mnt.join("missing")).is_err()); // absent: not journaled
    let out = Command::new(mnt.join("bin/hello.sh")).output().unwrap(); // exec, then sh reads it
    assert_eq!(out.stdout, b"hello\n");
    // (a std DirEntry keeps its directory open: count, don't keep them)
    assert_eq!(std::fs::read_dir(mnt.join("data")).unwrap().count(), 2);
    view.finish().unwrap();
    via.check(&std::fs::read_to_string(mnt.with_extension("log")).unwrap());

    use AccessKind::*;
    let want: Vec<(String, Vec<AccessKind>)> = vec![
        ("/etc".into(), vec![Lookup]),
        ("/etc/passwd".into(), vec![Lookup, Read]),
        ("/link".into(), vec![Lookup, Readlink]),
        ("/bin".into(), vec![Lookup]),
        ("/bin/hello.sh".into(), vec![Lookup, Exec, Read]),
        ("/data".into(), vec![Lookup, Readdir]),
    ];
    assert_eq!(entries(&journal), want);

    // The JSON of `pare profile show --json` carries the same, in the same order.
    let out = Command::new(pare_bin())
        .args(["profile", "show", "--json"])
        .arg(&journal)
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["image"], serde_json::Value::Null);
    let paths: Vec<&str> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        want.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>()
    );
    assert_eq!(
        json["entries"][4]["accesses"],
        serde_json::json!(["lookup", "exec", "read"])
    );
    assert!(json["entries"][0]["first_access_ns"].as_u64().unwrap() > 0);
}

#[test]
fn privileged_sigkill_mid_run_leaves_a_readable_journal() {
    sigkill_mid_run(
        "privileged_sigkill_mid_run_leaves_a_readable_journal",
        Via::IoUring,
    );
}

#[test]
fn privileged_sigkill_mid_run_leaves_a_readable_journal_over_dev_fuse() {
    sigkill_mid_run(
        "privileged_sigkill_mid_run_leaves_a_readable_journal_over_dev_fuse",
        Via::DevFuse,
    );
}

fn sigkill_mid_run(test: &str, via: Via) {
    if !privileged(test, NEEDS) || !privileged(test, via.needs()) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (top, base) = image(tmp.path());
    let many = base.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..20_000 {
        std::fs::write(many.join(format!("f{i}")), "x").unwrap();
    }
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let journal = tmp.path().join("profile");
    let view = start(&top, &base, &mnt, &journal, via);

    // An access journaled before the kill must survive it (the recorder
    // flushes every 100 ms): wait until it is on disk.
    std::fs::read(mnt.join("etc/passwd")).unwrap();
    let passwd = (
        "/etc/passwd".to_string(),
        vec![AccessKind::Lookup, AccessKind::Read],
    );
    eventually(FLUSHED, "the read of /etc/passwd in the journal", || {
        Ok(entries(&journal).contains(&passwd))
    })
    .unwrap();

    // Keep the view busy journaling while it is killed: stat the files round
    // and round until the daemon is gone, and kill it once its accesses are
    // reaching the journal.
    let busy_dir = mnt.join("many");
    let busy = std::thread::spawn(move || {
        let mut i = 0;
        while std::fs::metadata(busy_dir.join(format!("f{}", i % 20_000))).is_ok() {
            i += 1;
        }
    });
    eventually(FLUSHED, "accesses beneath /many in the journal", || {
        Ok(entries(&journal)
            .iter()
            .any(|(p, _)| p.starts_with("/many/")))
    })
    .unwrap();
    assert!(!busy.is_finished(), "the view failed while busy");
    view.kill().unwrap();
    let _ = Command::new("umount").arg("-l").arg(&mnt).status();
    busy.join().unwrap();

    let out = Command::new(pare_bin())
        .args(["profile", "show", "--json"])
        .arg(&journal)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "profile unreadable after SIGKILL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = entries(&journal);
    assert!(got.contains(&passwd), "/etc/passwd read lost: {got:?}");
    let busy_entries = got.iter().filter(|(p, _)| p.starts_with("/many/")).count();
    assert!(
        busy_entries > 0,
        "accesses journaled during the busy run were lost"
    );
}
