//! containerd's own snapshotter test suite (`snapshots/testsuite`, the Go source
//! in Debian's golang-github-containerd-containerd-dev) against pare-snapshotter
//! through containerd's proxy client: every case passes, one fresh daemon each.
//!
//! The Go side is `tests/containerd-testsuite/pare_test.go`, built here with
//! Debian's Go in GOPATH mode against `/usr/share/gocode` (no network). Each
//! case runs in its own process (`-test.run TestPare/^Case$`) with its own
//! `TMPDIR`, so that a hanging case costs its timeout only, and whatever it
//! leaves behind (daemons, view servers, mounts) is found, shown and removed.

use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use pare_tests::containerd::{mounts_under, run_with_timeout};
use pare_tests::mounts::{Scratch, wait_timeout};
use pare_tests::prereq::{Need, privileged, which};
use pare_tests::snapshotter::snapshotter_bin;
use rustix::mount::UnmountFlags;
use rustix::process::{Pid, Signal};

/// Debian's Go sources (`GOPATH` entry).
const GOCODE: &str = "/usr/share/gocode";
/// The suite's source directory.
const SUITE_DIR: &str =
    "/usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite";
/// The file whose `SnapshotterSuite` lists the cases.
const SUITE_SOURCE: &str = "testsuite.go";
/// The cases of containerd 1.6's `SnapshotterSuite`, in its order. Checked
/// against the installed source, so that a case that disappears (or appears)
/// is noticed and reviewed.
const CASES: &[&str] = &[
    "Basic",
    "StatActive",
    "StatComitted",
    "TransitivityTest",
    "PreareViewFailingtest",
    "Update",
    "Remove",
    "Walk",
    "LayerFileupdate",
    "RemoveDirectoryInLowerLayer",
    "Chown",
    "DirectoryPermissionOnCommit",
    "RemoveIntermediateSnapshot",
    "DeletedFilesInChildSnapshot",
    "MoveFileFromLowerLayer",
    "Rename",
    "ViewReadonly",
    "StatInWalk",
    "CloseTwice",
    "RootPermission",
    "128LayersMount",
];
/// The only skip allowed: the suite's own, unconditional one in `checkRename`
/// (issues.go), for overlay on some kernels.
const SKIPPABLE: (&str, &str) = (
    "Rename",
    "rename test still fails on some kernels with overlay",
);
/// The Go package, as linked into the temporary GOPATH.
const GO_PACKAGE: &str = "pare/containerdtestsuite";
/// The Go test function that runs the suite.
const GO_TEST: &str = "TestPare";
/// `go test -c` (cold cache: grpc, containerd and their dependencies).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Hard limit of one case's process beyond its `-test.timeout`.
const KILL_GRACE: Duration = Duration::from_secs(30);

const NEEDS: &[Need] = &[Need::Root, Need::Fuse, Need::Overlay, Need::Command("go")];

#[test]
fn privileged_containerd_testsuite_passes_every_case() -> Result<()> {
    let name = "privileged_containerd_testsuite_passes_every_case";
    if !privileged(name, NEEDS) || !suite_installed(name) {
        return Ok(());
    }
    let cases = suite_cases()?;
    ensure!(
        cases == CASES,
        "containerd's SnapshotterSuite changed: {SUITE_DIR}/{SUITE_SOURCE} lists {cases:?}, \
         this test pins {CASES:?}; review the new cases and update CASES"
    );
    let skip_source = std::fs::read_to_string(Path::new(SUITE_DIR).join("issues.go"))?;
    ensure!(
        skip_source.contains(&format!("t.Skip({:?})", SKIPPABLE.1)),
        "checkRename's skip in {SUITE_DIR}/issues.go no longer reads {:?}: review and update SKIPPABLE",
        SKIPPABLE.1
    );

    let scratch = Scratch::new()?;
    let suite = build_suite(scratch.path())?;
    let daemon = snapshotter_bin();
    ensure!(
        daemon.is_file(),
        "{} is missing: cargo build -p pare-snapshotter",
        daemon.display()
    );

    let mut runs = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        // Short directory names: the daemon's socket path must fit in 108 bytes.
        let dir = scratch.path().join(format!("c{i:02}"));
        let run = run_case(&suite, &daemon, case, &dir)?;
        eprintln!(
            "{case:<30} {:<8} {:>6.1}s",
            run.outcome.label(),
            run.seconds
        );
        runs.push(run);
    }

    let seen = runs.iter().filter(|r| r.outcome.reported()).count();
    let mut failures = String::new();
    for run in runs.iter().filter(|r| !r.acceptable()) {
        writeln!(
            failures,
            "\n===== {} : {} =====\n{}",
            run.case,
            run.outcome.label(),
            run.details()
        )?;
    }
    let count = |o: Outcome| runs.iter().filter(|r| r.outcome == o).count();
    ensure!(
        failures.is_empty() && seen == cases.len(),
        "containerd's snapshotter suite against pare-snapshotter: of {} cases {} passed, \
         {} skipped, {} reported a result{failures}",
        cases.len(),
        count(Outcome::Pass),
        count(Outcome::Skip),
        seen,
    );
    Ok(())
}

/// `-test.timeout` of one case (on expiry Go prints every goroutine's stack):
/// cases take a second or a few, `128LayersMount` (128 rounds of Prepare,
/// mount, compare, Commit) about 30 s on two cores.
fn case_timeout(case: &str) -> Duration {
    match case {
        "128LayersMount" => Duration::from_secs(300),
        _ => Duration::from_secs(60),
    }
}

/// Like [`privileged`] for the suite's source (a file, not a command).
fn suite_installed(test: &str) -> bool {
    if Path::new(SUITE_DIR).join(SUITE_SOURCE).is_file() {
        return true;
    }
    let msg = format!("{test}: {SUITE_DIR} is missing (golang-github-containerd-containerd-dev)");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("privileged test cannot run under CI=true: {msg}");
    }
    eprintln!("SKIPPED {msg}");
    false
}

/// The case names `SnapshotterSuite` runs: its `t.Run("Name", makeTest(...))` lines.
fn suite_cases() -> Result<Vec<String>> {
    let path = Path::new(SUITE_DIR).join(SUITE_SOURCE);
    let source = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let body = source
        .split_once("func SnapshotterSuite(")
        .and_then(|(_, rest)| rest.split_once("\n}\n"))
        .map(|(body, _)| body)
        .with_context(|| format!("no SnapshotterSuite in {}", path.display()))?;
    let cases: Vec<String> = body
        .lines()
        .filter_map(|line| line.trim().strip_prefix("t.Run(\""))
        .filter_map(|rest| rest.split_once("\", makeTest("))
        .map(|(name, _)| name.to_string())
        .collect();
    ensure!(
        cases.len() == body.matches("makeTest(").count(),
        "cannot read every case of SnapshotterSuite in {}",
        path.display()
    );
    Ok(cases)
}

/// `go test -c` of the Go package in a temporary GOPATH (whose `src/pare`
/// links it) followed by Debian's; the build cache lives in the target dir.
fn build_suite(scratch: &Path) -> Result<PathBuf> {
    let gopath = scratch.join("gopath");
    let link = gopath.join("src").join(GO_PACKAGE);
    std::fs::create_dir_all(link.parent().context("package path")?)?;
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("containerd-testsuite"),
        &link,
    )?;
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go-build");
    let out = scratch.join("containerd-testsuite.test");
    let gopath_env = std::env::join_paths([gopath.as_path(), Path::new(GOCODE)])?;
    let built = run_with_timeout(
        Command::new("go")
            .args(["test", "-c", "-o"])
            .arg(&out)
            .arg(GO_PACKAGE)
            .current_dir(scratch)
            .env("GOPATH", gopath_env)
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOENV", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOCACHE", &cache),
        BUILD_TIMEOUT,
    )
    .context("go test -c")?;
    ensure!(
        built.status.success(),
        "go test -c {GO_PACKAGE} failed ({}): {}{}",
        built.status,
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    Ok(out)
}

/// How one case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Pass,
    Skip,
    Fail,
    /// `-test.timeout` fired: Go printed every goroutine's stack.
    TimedOut,
    /// The process outlived its `-test.timeout` by [`KILL_GRACE`] and was killed.
    Killed,
    /// The process ended without a result line for the case.
    NoResult,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "PASS",
            Outcome::Skip => "SKIP",
            Outcome::Fail => "FAIL",
            Outcome::TimedOut => "TIMEOUT",
            Outcome::Killed => "KILLED",
            Outcome::NoResult => "NORESULT",
        }
    }

    /// True when Go printed a `--- PASS/FAIL/SKIP` line for the case.
    fn reported(&self) -> bool {
        matches!(self, Outcome::Pass | Outcome::Skip | Outcome::Fail)
    }
}

/// One case's process and what it left.
struct CaseRun {
    case: String,
    outcome: Outcome,
    seconds: f64,
    /// Go's output (stdout and stderr interleaved).
    output: String,
    /// The daemon's log (from `PARE_LOG_DIR`).
    daemon_log: String,
    /// Processes and mounts left under the case's directory, with stacks.
    leftovers: String,
}

impl CaseRun {
    fn acceptable(&self) -> bool {
        let skip_ok = self.case == SKIPPABLE.0 && self.output.contains(SKIPPABLE.1);
        self.leftovers.is_empty()
            && (self.outcome == Outcome::Pass || (self.outcome == Outcome::Skip && skip_ok))
    }

    fn details(&self) -> String {
        let mut out = format!(
            "--- go test output ---\n{}\n",
            go_output_digest(&self.output)
        );
        let _ = write!(
            out,
            "--- pare-snapshotter log (tail) ---\n{}\n",
            tail(&self.daemon_log, 40)
        );
        if !self.leftovers.is_empty() {
            let _ = write!(
                out,
                "--- left behind (now killed and detached) ---\n{}",
                self.leftovers
            );
        }
        out
    }
}

/// Runs one case in `dir` (its `TMPDIR`, daemon logs and output) and cleans
/// up whatever it leaves there.
fn run_case(suite: &Path, daemon: &Path, case: &str, dir: &Path) -> Result<CaseRun> {
    let tmp = dir.join("tmp");
    let logs = dir.join("logs");
    std::fs::create_dir_all(&tmp)?;
    std::fs::create_dir_all(&logs)?;
    let output_path = dir.join("output.txt");
    let output = File::create(&output_path)?;
    let start = Instant::now();
    let mut child = Command::new(suite)
        .arg(format!("-test.run=^{GO_TEST}$/^{case}$"))
        .args(["-test.v", "-test.count=1"])
        .arg(format!("-test.timeout={}s", case_timeout(case).as_secs()))
        .current_dir(dir)
        .env("PARE_SNAPSHOTTER", daemon)
        .env("PARE_LOG_DIR", &logs)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()
        .with_context(|| format!("cannot run {}", suite.display()))?;
    let status = wait_timeout(&mut child, case_timeout(case) + KILL_GRACE)?;
    let seconds = start.elapsed().as_secs_f64();
    // Stacks first (while a hung daemon still hangs), then the kill.
    let mut leftovers = String::new();
    if status.is_none() {
        leftovers.push_str(&stacks_of(&processes_naming(dir)));
        let _ = child.kill();
        let _ = child.wait();
    }
    let output = std::fs::read_to_string(&output_path).unwrap_or_default();
    let outcome = match (status, result_of(&output, case)) {
        (None, _) => Outcome::Killed,
        (Some(_), Some(outcome)) => outcome,
        (Some(_), None) if output.contains("panic: test timed out after") => Outcome::TimedOut,
        (Some(_), None) => Outcome::NoResult,
    };
    if status.is_some() {
        leftovers.push_str(&stacks_of(&processes_naming(dir)));
    }
    leftovers.push_str(&clean_up(dir));
    Ok(CaseRun {
        case: case.to_string(),
        outcome,
        seconds,
        output,
        daemon_log: read_logs(&logs),
        leftovers,
    })
}

/// The `--- PASS/FAIL/SKIP: TestPare/<case>` verdict in Go's `-test.v` output.
fn result_of(output: &str, case: &str) -> Option<Outcome> {
    let name = format!("{GO_TEST}/{case}");
    output.lines().find_map(|line| {
        let (verdict, rest) = line.trim_start().strip_prefix("--- ")?.split_once(": ")?;
        (rest.split_whitespace().next() == Some(name.as_str())).then_some(())?;
        match verdict {
            "PASS" => Some(Outcome::Pass),
            "SKIP" => Some(Outcome::Skip),
            "FAIL" => Some(Outcome::Fail),
            _ => None,
        }
    })
}

/// Go's output without the suite's listing of its directory on failure
/// (`helpers.go` lines) and, after a timeout, without the goroutine dump
/// except the goroutines that run the suite (they show the blocked call).
fn go_output_digest(output: &str) -> String {
    let (head, dump) = output.split_once("\ngoroutine ").unwrap_or((output, ""));
    let kept: Vec<&str> = head
        .lines()
        .filter(|l| !l.trim_start().starts_with("helpers.go:"))
        .collect();
    let mut out = tail(&kept.join("\n"), 60);
    if dump.is_empty() {
        return out;
    }
    for goroutine in format!("goroutine {dump}").split("\n\n") {
        if goroutine.contains("snapshots/testsuite.") {
            out.push_str("\n\n");
            out.push_str(goroutine);
        }
    }
    out
}

/// Every daemon log of the case, each under its file name.
fn read_logs(dir: &Path) -> String {
    let mut out = String::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path()))
        .collect();
    paths.sort();
    for path in paths {
        let _ = writeln!(out, "[{}]", path.display());
        out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
    }
    out
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Pids of the processes (but this one) with an argument that is `dir` or
/// names a path beneath it (`--opt=DIR/x`, `DIR/a:DIR/b` included).
fn processes_naming(dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let dir = dir.as_os_str().as_bytes();
    let beneath = [dir, b"/"].concat();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|arg| {
                arg == dir || arg.windows(beneath.len()).any(|w| w == beneath.as_slice())
            })
        })
        .collect()
}

/// For each process: its command line, every thread's kernel stack, and the
/// user-space backtrace of its threads in pare code (`gdb`, when installed):
/// of each such thread its innermost frames and its frames in pare.
fn stacks_of(pids: &[i32]) -> String {
    let mut out = String::new();
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let _ = writeln!(out, "pid {pid}: {}", cmdline.trim());
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten();
        for task in tasks.filter_map(|t| t.ok()) {
            let path = task.path();
            let read = |f: &str| std::fs::read_to_string(path.join(f)).unwrap_or_default();
            // "[<0>] fuse_dev_do_read+0xaa4/0xb00" lines, innermost first.
            let stack = read("stack");
            let frames: Vec<&str> = stack
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1)?.split('+').next())
                .collect();
            let _ = writeln!(
                out,
                "  task {} ({}): {}",
                task.file_name().to_string_lossy(),
                read("comm").trim(),
                frames.join(" < ")
            );
        }
        if which("gdb").is_some() {
            let bt = run_with_timeout(
                Command::new("gdb").args([
                    "-p",
                    &pid.to_string(),
                    "-batch",
                    "-ex",
                    "thread apply all bt",
                ]),
                Duration::from_secs(60),
            );
            if let Ok(bt) = bt {
                let text = String::from_utf8_lossy(&bt.stdout);
                for thread in text.split("\nThread ").filter(|t| t.contains("pare_")) {
                    let mut lines = thread.lines();
                    let _ = writeln!(out, "  gdb: Thread {}", lines.next().unwrap_or_default());
                    let frames = lines.filter(|l| l.starts_with('#'));
                    for (i, frame) in frames.enumerate() {
                        // "#7  0x55.. in pare_fs::view::...", or "#8  pare_..." when inlined.
                        let (_, rest) = frame.split_once(' ').unwrap_or_default();
                        let function = rest
                            .split_once(" in ")
                            .map_or(rest.trim_start(), |(_, f)| f);
                        if i < 4 || function.starts_with("pare_") {
                            let _ = writeln!(out, "    {}", shorten(frame, 240));
                        }
                    }
                }
            }
        }
    }
    out
}

/// `line` cut to at most `max` characters.
fn shorten(line: &str, max: usize) -> String {
    match line.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

/// SIGKILLs the processes naming `dir` and detaches every mount beneath it;
/// describes what was still mounted.
fn clean_up(dir: &Path) -> String {
    for pid in processes_naming(dir) {
        if let Some(pid) = Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
        }
    }
    let mounts = mounts_under(dir);
    for _ in 0..10 {
        let now = mounts_under(dir);
        if now.is_empty() {
            break;
        }
        for mount in &now {
            let _ = rustix::mount::unmount(mount, UnmountFlags::DETACH);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_naming(dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    mounts
        .iter()
        .map(|m| format!("mounted: {}\n", m.display()))
        .collect()
}
