//! Misses: aggregation by path and kind, the bound on processes, `/proc`
//! read once per asker, and the file round trip.

use std::cell::Cell;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::*;

thread_local! {
    /// How often the fake resolver was asked on this test's thread.
    static RESOLVED: Cell<usize> = const { Cell::new(0) };
}

/// A fake `/proc`: thread `t` belongs to process `t / 10`, in container `c<t/10>`.
fn fake(tid: u32) -> MissProcess {
    RESOLVED.set(RESOLVED.get() + 1);
    MissProcess {
        pid: tid / 10,
        command: format!("cmd {}", tid / 10),
        container: Some(format!("c{}", tid / 10)),
    }
}

fn misses() -> Misses {
    Misses::with_resolver(Some("sha256:img".into()), Mode::Audit, fake)
}

/// (path, kind, count, pids) of every miss, in order.
fn summary(m: &Misses) -> Vec<(String, AccessKind, u64, Vec<u32>)> {
    m.snapshot()
        .misses
        .into_iter()
        .map(|x| {
            let pids = x.processes.iter().map(|p| p.pid).collect();
            (x.path.to_string(), x.kind, x.count, pids)
        })
        .collect()
}

#[test]
fn misses_aggregate_by_path_and_kind_in_first_seen_order() {
    let m = misses();
    m.record(Path::new("usr/bin/ls"), AccessKind::Lookup, 420);
    m.record(Path::new("etc/shadow"), AccessKind::Read, 420);
    m.record(Path::new("usr/bin/ls"), AccessKind::Exec, 420);
    m.record(Path::new("usr/bin/ls"), AccessKind::Lookup, 430);
    m.record(Path::new("usr/bin/ls"), AccessKind::Lookup, 420);
    assert_eq!(
        summary(&m),
        vec![
            ("/usr/bin/ls".into(), AccessKind::Lookup, 3, vec![42, 43]),
            ("/etc/shadow".into(), AccessKind::Read, 1, vec![42]),
            ("/usr/bin/ls".into(), AccessKind::Exec, 1, vec![42]),
        ]
    );
    let snap = m.snapshot();
    assert_eq!(snap.image.as_deref(), Some("sha256:img"));
    assert_eq!(snap.mode, Mode::Audit);
    assert_eq!(
        snap.misses[0].processes[1],
        MissProcess {
            pid: 43,
            command: "cmd 43".into(),
            container: Some("c43".into()),
        }
    );
    let first = &snap.misses[0];
    assert!(first.first_seen_ns <= snap.misses[1].first_seen_ns);
    assert!(first.first_seen_ns > 1_600_000_000_000_000_000, "epoch ns");
}

#[test]
fn threads_of_one_process_are_one_process_and_proc_is_read_once_per_thread() {
    let m = misses();
    let before = RESOLVED.get();
    for _ in 0..3 {
        for tid in [500, 501, 502] {
            m.record(Path::new("opt/x"), AccessKind::Read, tid);
        }
    }
    assert_eq!(RESOLVED.get() - before, 3, "each thread looked up once");
    assert_eq!(
        summary(&m),
        vec![("/opt/x".into(), AccessKind::Read, 9, vec![50])]
    );
}

#[test]
fn at_most_eight_processes_are_kept_and_every_access_counts() {
    let m = misses();
    for process in 1..=20u32 {
        m.record(Path::new("bin/sh"), AccessKind::Exec, process * 10);
    }
    let got = summary(&m);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].2, 20);
    assert_eq!(got[0].3, (1..=8).collect::<Vec<u32>>());
    assert_eq!(MAX_PROCESSES, 8);
}

#[test]
fn an_unknown_pid_is_counted_without_a_process() {
    let m = misses();
    m.record(Path::new("etc/motd"), AccessKind::Lookup, 0);
    m.record(Path::new("etc/motd"), AccessKind::Lookup, 0);
    assert_eq!(
        summary(&m),
        vec![("/etc/motd".into(), AccessKind::Lookup, 2, vec![])]
    );
}

#[test]
fn every_access_is_a_change() {
    let m = misses();
    assert_eq!(m.changes(), 0);
    m.record(Path::new("a"), AccessKind::Lookup, 10);
    m.record(Path::new("a"), AccessKind::Lookup, 10);
    assert_eq!(m.changes(), 2);
}

#[test]
fn the_file_round_trips_in_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.misses");
    let m = misses();
    m.record(Path::new("usr/bin/ls"), AccessKind::Exec, 420);
    m.record(Path::new("usr/bin/ls"), AccessKind::Exec, 420);
    let odd = std::ffi::OsStr::from_bytes(b"data/caf\xe9");
    m.record(Path::new(odd), AccessKind::Lookup, 0);
    m.snapshot().write(&file).unwrap();

    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let first_seen = json["misses"][0]["first_seen_ns"].clone();
    assert_eq!(
        json,
        serde_json::json!({
            "version": 1,
            "image": "sha256:img",
            "mode": "audit",
            "misses": [
                {"path": "/usr/bin/ls", "kind": "exec", "first_seen_ns": first_seen, "count": 2,
                 "processes": [{"pid": 42, "command": "cmd 42", "container": "c42"}]},
                {"path": [47, 100, 97, 116, 97, 47, 99, 97, 102, 233], "kind": "lookup",
                 "first_seen_ns": json["misses"][1]["first_seen_ns"].clone(), "count": 1,
                 "processes": []}
            ]
        })
    );
    assert_eq!(read_misses(&file).unwrap(), m.snapshot());
}

#[test]
fn misses_continue_from_an_earlier_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.misses");
    let earlier = misses();
    earlier.record(Path::new("bin/ls"), AccessKind::Exec, 420);
    earlier.snapshot().write(&file).unwrap();

    let m = Misses::continue_from(&file, Some("sha256:img".into()), Mode::Audit).unwrap();
    assert_eq!(m.changes(), 0, "nothing new to write");
    // The main thread of process 42 (its tid is its pid): known, only counted.
    m.record(Path::new("bin/ls"), AccessKind::Exec, 42);
    let snap = m.snapshot();
    assert_eq!(snap.misses.len(), 1);
    assert_eq!(snap.misses[0].count, 2);
    assert_eq!(snap.misses[0].processes.len(), 1);

    let fresh = Misses::continue_from(&dir.path().join("none"), None, Mode::Enforce).unwrap();
    assert!(fresh.snapshot().misses.is_empty());
}

#[test]
fn damaged_misses_files_give_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.misses");
    let cases = [
        ("{\"version\": 1, \"image\": null", "EOF while parsing"),
        ("{\"image\": null, \"entries\": []}", "it has no version"),
        (
            "{\"version\": 2, \"image\": null, \"mode\": \"audit\", \"misses\": []}",
            "version 2 (this pare reads version 1)",
        ),
        (
            "{\"version\": 1, \"image\": null, \"mode\": \"audit\", \"misses\": [{\"path\": \"/a\", \"kind\": \"poke\", \"first_seen_ns\": 1, \"count\": 1, \"processes\": []}]}",
            "unknown access kind \"poke\"",
        ),
    ];
    for (content, reason) in cases {
        std::fs::write(&file, content).unwrap();
        let err = read_misses(&file).unwrap_err();
        assert!(
            matches!(
                &err,
                PolicyError::Damaged {
                    what: "misses file",
                    ..
                }
            ),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(reason), "{content}: {text}");
        let err = Misses::continue_from(&file, None, Mode::Audit).unwrap_err();
        assert!(matches!(err, PolicyError::Damaged { .. }), "{err}");
    }
}
