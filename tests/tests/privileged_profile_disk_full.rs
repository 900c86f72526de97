//! A profile journal on a full disk: the view keeps serving, the write errors
//! are logged with their counters, records that do not fit in memory are
//! counted as lost and the profile is marked incomplete; space freed in time
//! lets the records kept in memory land, and the profile stays complete.

use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use pare_fs::profile;
use pare_tests::mounts::{PareMount, Scratch};
use pare_tests::prereq::{Need, pare_bin, privileged};
use rustix::mount::{MountFlags, UnmountFlags};

const NEEDS: &[Need] = &[Need::Root, Need::Fuse];

/// How long any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(30);

/// A small tmpfs for the journal, detached on drop.
struct SmallTmpfs {
    path: PathBuf,
}

impl SmallTmpfs {
    fn mount(path: &Path, size: &str) -> Result<SmallTmpfs> {
        std::fs::create_dir_all(path)?;
        let data = CString::new(format!("size={size},mode=0700"))?;
        rustix::mount::mount("tmpfs", path, "tmpfs", MountFlags::NOATIME, data.as_c_str())
            .with_context(|| format!("mount -t tmpfs -o size={size} {}", path.display()))?;
        Ok(SmallTmpfs {
            path: path.to_path_buf(),
        })
    }

    /// Fills the file system with `filler` until it is full.
    fn fill(&self, filler: &Path) -> Result<()> {
        let mut file = std::fs::File::create(filler)?;
        let chunk = vec![0xa5u8; 64 * 1024];
        for _ in 0..1024 {
            if let Err(e) = file.write_all(&chunk) {
                ensure!(
                    e.raw_os_error() == Some(libc::ENOSPC),
                    "filling {}: {e}",
                    self.path.display()
                );
                // Whatever is left is smaller than a page: nothing more fits.
                let one = std::fs::write(self.path.join("probe"), vec![0u8; 4096]);
                ensure!(one.is_err(), "the tmpfs still takes a page after filling");
                return Ok(());
            }
        }
        bail!("{} never filled up", self.path.display())
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.path, UnmountFlags::DETACH);
    }
}

/// Runs `f` on another thread and fails the test when it does not finish
/// within [`STEP`] (a hung FUSE request; the guards then detach the view,
/// which ends the request).
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(STEP)
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP:?}"))
}

/// Polls `cond` until it holds, failing after [`STEP`] with `what` and `detail()`.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool, detail: impl Fn() -> String) {
    let deadline = Instant::now() + STEP;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what} within {STEP:?}: {}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Four nested directories with 200-byte names: a file's image path is about
/// a kilobyte, so its records fill memory fast.
fn long_dir() -> PathBuf {
    ["a", "b", "c", "d"]
        .iter()
        .map(|c| c.repeat(200))
        .collect::<PathBuf>()
}

fn file_name(i: usize) -> String {
    format!("{i:05}-{}", "f".repeat(194))
}

/// A layer with `files` files under [`long_dir`].
fn layer(root: &Path, files: usize) -> Result<PathBuf> {
    let layer = root.join("layer");
    let dir = layer.join(long_dir());
    std::fs::create_dir_all(&dir)?;
    for i in 0..files {
        std::fs::write(dir.join(file_name(i)), format!("content {i}"))?;
    }
    Ok(layer)
}

/// Reads files `0..n` through the view, checking their contents.
fn read_files(mnt: &Path, n: usize) {
    let dir = mnt.join(long_dir());
    within("reading the files through the view", move || {
        for i in 0..n {
            let got = std::fs::read_to_string(dir.join(file_name(i)))
                .unwrap_or_else(|e| panic!("reading file {i} through the view: {e}"));
            assert_eq!(got, format!("content {i}"));
        }
    });
}

/// `pare profile show --json FILE`, parsed.
fn show_json(journal: &Path) -> Result<serde_json::Value> {
    let out = Command::new(pare_bin())
        .args(["profile", "show", "--json"])
        .arg(journal)
        .output()?;
    ensure!(
        out.status.success(),
        "pare profile show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Records the view journals for reading files `0..n`: a lookup of each
/// directory, a lookup and a read of each file.
fn records_for(n: usize) -> u64 {
    4 + 2 * n as u64
}

/// `text` without ANSI colour sequences (the log may be coloured).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The log of `view`, uncoloured.
fn log(view: &PareMount) -> String {
    plain(&view.log_text())
}

/// N in "is incomplete: N records were lost" in `text`.
fn lost_in(text: &str) -> Option<u64> {
    let after = text.split("is incomplete: ").nth(1)?;
    after.split(' ').next()?.parse().ok()
}

struct Setup {
    // Fields drop in this order: the tmpfs, then the scratch dir holding it.
    tmpfs: SmallTmpfs,
    scratch: Scratch,
    mnt: PathBuf,
    journal: PathBuf,
    filler: PathBuf,
}

fn setup(files: usize) -> Result<(Setup, PareMount)> {
    let scratch = Scratch::new()?;
    let layer = layer(scratch.path(), files)?;
    let tmpfs = SmallTmpfs::mount(&scratch.path().join("profiles"), "1m")?;
    let journal = tmpfs.path.join("p");
    let filler = tmpfs.path.join("filler");
    let mnt = scratch.path().join("mnt");
    let view = PareMount::start(
        &[layer],
        &mnt,
        &["--profile", journal.to_str().unwrap(), "--flush-ms", "10"],
        &scratch.path().join("mount.log"),
    )?;
    let mnt = view.path().to_path_buf();
    ensure!(
        profile::read(&journal)?.records == 0,
        "the journal starts empty"
    );
    tmpfs.fill(&filler)?;
    let setup = Setup {
        scratch,
        tmpfs,
        mnt,
        journal,
        filler,
    };
    Ok((setup, view))
}

#[test]
fn privileged_a_full_disk_loses_records_loudly_and_marks_the_profile_incomplete() -> Result<()> {
    if !privileged(
        "privileged_a_full_disk_loses_records_loudly_and_marks_the_profile_incomplete",
        NEEDS,
    ) {
        return Ok(());
    }
    // 5000 files, two records of about 1 KiB each: more than the 8 MiB the
    // writer keeps in memory.
    const FILES: usize = 5000;
    let (s, view) = setup(FILES)?;

    read_files(&s.mnt, FILES);
    wait_until(
        "the view logs the failed writes with their counters",
        || {
            let text = log(&view);
            text.contains("cannot write to the profile journal") && text.contains("write_errors=1 ")
        },
        || log(&view),
    );
    wait_until(
        "the journal is marked incomplete while the view runs",
        || profile::read(&s.journal).is_ok_and(|p| p.incomplete),
        || log(&view),
    );
    let text = log(&view);
    ensure!(
        text.contains("dropping records") && text.contains("the profile is marked incomplete"),
        "the log says records are dropped and the profile marked: {text}"
    );

    // The disk is still full at unmount: the last attempt fails too, and
    // `pare mount` says the profile is incomplete with a non-zero exit.
    let err = plain(&format!("{:#}", view.finish().unwrap_err()));
    ensure!(
        err.contains("pare mount exited with exit status: 1")
            && err.contains(&format!(
                "pare: profile {} is incomplete: ",
                s.journal.display()
            ))
            && err.contains("(marked in its header)"),
        "pare mount reports the loss: {err}"
    );
    let lost = lost_in(&err).with_context(|| format!("the number of records lost in: {err}"))?;

    let json = show_json(&s.journal)?;
    ensure!(json["incomplete"] == true, "show --json: {json}");
    // Every record is either in the journal or counted as lost.
    let journaled = profile::read(&s.journal)?.records;
    assert_eq!(journaled + lost, records_for(FILES), "lost {lost}");
    assert!(lost > 0);
    drop(s.tmpfs);
    drop(s.scratch);
    Ok(())
}

#[test]
fn privileged_space_freed_in_time_lets_the_kept_records_land_unmarked() -> Result<()> {
    if !privileged(
        "privileged_space_freed_in_time_lets_the_kept_records_land_unmarked",
        NEEDS,
    ) {
        return Ok(());
    }
    // 200 files: about 400 KiB of records, well within memory and within the
    // tmpfs once the filler is gone.
    const FILES: usize = 200;
    let (s, view) = setup(FILES)?;

    read_files(&s.mnt, FILES);
    wait_until(
        "the view logs a failed write",
        || log(&view).contains("cannot write to the profile journal"),
        || log(&view),
    );
    let before = profile::read(&s.journal)?;
    ensure!(
        !before.incomplete && before.records < records_for(FILES),
        "records wait in memory: {} journaled, incomplete {}",
        before.records,
        before.incomplete
    );

    std::fs::remove_file(&s.filler)?;
    wait_until(
        "the records kept in memory land once there is space",
        || profile::read(&s.journal).is_ok_and(|p| p.records == records_for(FILES)),
        || log(&view),
    );
    ensure!(
        log(&view).contains("profile journal writes work again"),
        "the recovery is logged: {}",
        log(&view)
    );
    view.finish()?;

    let json = show_json(&s.journal)?;
    ensure!(json["incomplete"] == false, "show --json: {json}");
    let paths: Vec<&str> = json["entries"]
        .as_array()
        .context("entries")?
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    let dir = Path::new("/").join(long_dir());
    for i in 0..FILES {
        let want = dir.join(file_name(i));
        ensure!(
            paths.contains(&want.to_str().unwrap()),
            "{} is in the profile",
            want.display()
        );
    }
    assert_eq!(paths.len(), 4 + FILES);
    drop(s.tmpfs);
    drop(s.scratch);
    Ok(())
}
