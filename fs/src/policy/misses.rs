//! Misses: accesses outside an image's allowed set, kept in memory by path
//! and kind with when they were first seen, how often, and who asked; and
//! the JSON file they are written to (`<profile>.misses`).
//!
//! The file is `{"version": 1, "image": "…", "mode": "audit", "misses": [{"path":
//! "/usr/bin/ls", "kind": "exec", "first_seen_ns": 123, "count": 2, "processes":
//! [{"pid": 42, "command": "sh -c ls", "container": "web-1"}]}]}`, misses in
//! first-seen order, `first_seen_ns` in nanoseconds since the Unix epoch,
//! paths as in the allowed set (strings, or byte arrays when not UTF-8).

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::wire::{self, write_atomically};
use super::{Mode, PolicyError};
use crate::profile::{AccessKind, ImagePath};

/// Distinct processes kept per miss.
pub const MAX_PROCESSES: usize = 8;

/// Distinct request pids (threads) per miss whose process is looked up in
/// `/proc`; later ones are only counted.
const MAX_ASKERS: usize = 64;

const VERSION: u32 = 1;
const WHAT: &str = "misses file";

/// A process that caused a miss.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissProcess {
    /// Process id (in the view server's pid namespace).
    pub pid: u32,
    /// Command line, arguments separated by spaces.
    pub command: String,
    /// Container id, when the process's cgroup path shows one.
    pub container: Option<String>,
}

/// One path accessed as one kind outside the allowed set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Miss {
    /// The image path.
    #[serde(with = "wire::path")]
    pub path: ImagePath,
    /// How it was accessed.
    #[serde(with = "wire::kind")]
    pub kind: AccessKind,
    /// When it was first seen, in nanoseconds since the Unix epoch.
    pub first_seen_ns: u64,
    /// How many times the view saw it.
    pub count: u64,
    /// The first [`MAX_PROCESSES`] distinct processes that asked.
    pub processes: Vec<MissProcess>,
}

/// The misses of one image: what the misses file holds and `pare misses --json` prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissesFile {
    /// The image (its chain id), when the view knows it.
    pub image: Option<String>,
    /// The mode the misses were seen in.
    pub mode: Mode,
    /// Misses in first-seen order.
    pub misses: Vec<Miss>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    file: MissesFile,
}

impl MissesFile {
    /// Writes the file to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<(), PolicyError> {
        let on_disk = OnDisk {
            version: VERSION,
            file: self.clone(),
        };
        let mut bytes = serde_json::to_vec(&on_disk).expect("misses serialize");
        bytes.push(b'\n');
        write_atomically(path, &bytes).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Reads the misses file at `path`. [`PolicyError::Damaged`] when it is not one.
pub fn read_misses(path: &Path) -> Result<MissesFile, PolicyError> {
    let bytes = std::fs::read(path).map_err(|source| PolicyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let damaged = |reason: String| PolicyError::Damaged {
        path: path.to_path_buf(),
        what: WHAT,
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(v) => {
            return Err(damaged(format!(
                "version {v} (this pare reads version {VERSION})"
            )));
        }
        None => return Err(damaged("it has no version: not a misses file".into())),
    }
    let on_disk: OnDisk = serde_json::from_value(value).map_err(|e| damaged(e.to_string()))?;
    Ok(on_disk.file)
}

/// One miss and the request pids already looked up for it.
struct Entry {
    miss: Miss,
    askers: Vec<u32>,
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    /// Entry index by path (relative, as the view keeps it) and kind code - 1.
    index: HashMap<Box<[u8]>, [Option<usize>; AccessKind::ALL.len()]>,
}

impl State {
    fn find(&mut self, rel: &[u8], kind: AccessKind) -> Option<&mut Entry> {
        let i = self.index.get(rel)?[kind as usize - 1]?;
        Some(&mut self.entries[i])
    }

    /// The entry of `rel` and `kind`, made when missing; true when new.
    fn find_or_insert(&mut self, rel: &[u8], kind: AccessKind, now: u64) -> (&mut Entry, bool) {
        let slots = self.index.entry(rel.into()).or_default();
        let (i, new) = match slots[kind as usize - 1] {
            Some(i) => (i, false),
            None => {
                let i = self.entries.len();
                slots[kind as usize - 1] = Some(i);
                let mut path = Vec::with_capacity(rel.len() + 1);
                path.push(b'/');
                path.extend_from_slice(rel);
                let path = ImagePath::new(path).expect("the view's paths are valid");
                self.entries.push(Entry {
                    miss: Miss {
                        path,
                        kind,
                        first_seen_ns: now,
                        count: 0,
                        processes: Vec::new(),
                    },
                    askers: Vec::new(),
                });
                (i, true)
            }
        };
        (&mut self.entries[i], new)
    }
}

impl Entry {
    /// True when `pid`'s process should still be looked up for this miss.
    fn wants(&self, pid: u32) -> bool {
        pid != 0
            && self.miss.processes.len() < MAX_PROCESSES
            && self.askers.len() < MAX_ASKERS
            && !self.askers.contains(&pid)
    }

    fn add(&mut self, pid: u32, process: MissProcess) {
        if !self.wants(pid) {
            return;
        }
        self.askers.push(pid);
        if !self.miss.processes.iter().any(|p| p.pid == process.pid) {
            self.miss.processes.push(process);
        }
    }
}

/// The misses of one view, shared by its serving threads and the
/// [`super::MissesWriter`] that persists them.
pub struct Misses {
    image: Option<String>,
    mode: Mode,
    state: Mutex<State>,
    /// Bumped at every change, so the writer knows when to write.
    changes: AtomicU64,
    /// Who asked, by request pid (`/proc` in production, a fake in tests).
    resolver: fn(u32) -> MissProcess,
}

impl std::fmt::Debug for Misses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Misses")
            .field("image", &self.image)
            .field("mode", &self.mode)
            .field("changes", &self.changes())
            .finish()
    }
}

impl Misses {
    /// No misses yet, of `image` (its chain id, if known) in `mode`.
    pub fn new(image: Option<String>, mode: Mode) -> Misses {
        Misses::with_resolver(image, mode, super::resolve)
    }

    pub(super) fn with_resolver(
        image: Option<String>,
        mode: Mode,
        resolver: fn(u32) -> MissProcess,
    ) -> Misses {
        Misses {
            image,
            mode,
            state: Mutex::new(State::default()),
            changes: AtomicU64::new(0),
            resolver,
        }
    }

    /// The misses in the file at `path` (of an earlier run), continued; none
    /// when there is no file. The image and mode are the ones given.
    pub fn continue_from(
        path: &Path,
        image: Option<String>,
        mode: Mode,
    ) -> Result<Misses, PolicyError> {
        let misses = Misses::new(image, mode);
        let earlier = match read_misses(path) {
            Ok(file) => file,
            Err(PolicyError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(misses);
            }
            Err(e) => return Err(e),
        };
        {
            let mut state = misses.lock();
            for miss in earlier.misses {
                let rel = &miss.path.as_bytes()[1..];
                let (entry, _) = state.find_or_insert(rel, miss.kind, miss.first_seen_ns);
                entry.askers = miss.processes.iter().map(|p| p.pid).collect();
                entry.miss = miss;
            }
        }
        if earlier.image != misses.image || earlier.mode != misses.mode {
            misses.changes.store(1, Ordering::Relaxed);
        }
        Ok(misses)
    }

    /// The mode the misses are seen in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Counts an access of `rel` (relative to the image root, as the view
    /// keeps paths) as `kind` by the thread `pid` (0: unknown). `/proc` is
    /// read only for a pid not seen before for this path and kind, never with
    /// the lock held; a new path and kind is logged once.
    pub fn record(&self, rel: &Path, kind: AccessKind, pid: u32) {
        let rel = rel.as_os_str().as_bytes();
        let now = now_ns();
        {
            // Seen before from this asker (or no room for more): only counted.
            let mut state = self.lock();
            if let Some(entry) = state.find(rel, kind).filter(|e| !e.wants(pid)) {
                entry.miss.count += 1;
                self.changes.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // A new miss or a new asker: who it is, read without the lock.
        let process = (pid != 0).then(|| (self.resolver)(pid));
        let container = process.as_ref().and_then(|p| p.container.clone());
        let new = {
            let mut state = self.lock();
            let (entry, new) = state.find_or_insert(rel, kind, now);
            entry.miss.count += 1;
            if let Some(process) = process {
                entry.add(pid, process);
            }
            new
        };
        self.changes.fetch_add(1, Ordering::Relaxed);
        if new {
            self.log_new(rel, kind, container.as_deref());
        }
    }

    fn log_new(&self, rel: &[u8], kind: AccessKind, container: Option<&str>) {
        tracing::info!(
            image = self.image.as_deref().unwrap_or(""),
            path = %format_args!("/{}", String::from_utf8_lossy(rel)),
            kind = kind.name(),
            container = container.unwrap_or(""),
            mode = self.mode.name(),
            "miss: access outside the allowed set"
        );
    }

    /// How many changes were made so far (grows with every access counted).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// A copy of the misses as they are now.
    pub fn snapshot(&self) -> MissesFile {
        let state = self.lock();
        MissesFile {
            image: self.image.clone(),
            mode: self.mode,
            misses: state.entries.iter().map(|e| e.miss.clone()).collect(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
