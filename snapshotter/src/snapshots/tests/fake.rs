//! A fake view mounter: records what it is asked, fails any operation on
//! demand, holds any operation until released, and remembers which views
//! serve (across a restart of the daemon, as real view servers do).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::viewproc::StateFileError;
use crate::views::{MountError, StopOutcome, ViewMounter, ViewSpec};

/// An operation of the mounter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Mount,
    Adopt,
    IsServing,
    Stop,
}

#[derive(Default)]
struct Gate {
    held: HashSet<Op>,
    waiting: HashMap<Op, usize>,
}

#[derive(Clone, Default)]
pub struct FakeMounter {
    calls: Arc<Mutex<Vec<String>>>,
    failing: Arc<Mutex<HashSet<Op>>>,
    serving: Arc<Mutex<HashSet<PathBuf>>>,
    gate: Arc<(Mutex<Gate>, Condvar)>,
}

/// How long a test lets anything wait on the fake before it fails.
const LIMIT: Duration = Duration::from_secs(10);

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

impl FakeMounter {
    /// What the mounter was asked so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Makes exactly the operations in `ops` fail from now on.
    pub fn fail(&self, ops: &[Op]) {
        *self.failing.lock().unwrap() = ops.iter().copied().collect();
    }

    /// Holds `op` (its callers wait) until called again with `on` false.
    pub fn hold(&self, op: Op, on: bool) {
        let (gate, changed) = &*self.gate;
        let mut gate = gate.lock().unwrap();
        if on {
            gate.held.insert(op);
        } else {
            gate.held.remove(&op);
        }
        changed.notify_all();
    }

    /// Waits until a caller is held in `op`.
    pub fn wait_for_held(&self, op: Op) {
        let (gate, changed) = &*self.gate;
        let guard = gate.lock().unwrap();
        let (_guard, timeout) = changed
            .wait_timeout_while(guard, LIMIT, |g| {
                g.waiting.get(&op).copied().unwrap_or(0) == 0
            })
            .unwrap();
        assert!(!timeout.timed_out(), "nothing called {op:?}");
    }

    /// Lets `op` through once it is not held; false when it is to fail.
    fn pass(&self, op: Op) -> bool {
        let (gate, changed) = &*self.gate;
        let mut guard = gate.lock().unwrap();
        *guard.waiting.entry(op).or_default() += 1;
        changed.notify_all();
        let (mut guard, timeout) = changed
            .wait_timeout_while(guard, LIMIT, |g| g.held.contains(&op))
            .unwrap();
        *guard.waiting.get_mut(&op).unwrap() -= 1;
        assert!(!timeout.timed_out(), "a held {op:?} was never released");
        !self.failing.lock().unwrap().contains(&op)
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl ViewMounter for FakeMounter {
    type Handle = PathBuf;

    fn mount(&self, spec: &ViewSpec) -> Result<PathBuf, MountError> {
        if !self.pass(Op::Mount) {
            self.record(format!("failed mount {}", name(&spec.mountpoint)));
            return Err(MountError::Refused(
                "mounting FUSE failed: No such device".into(),
            ));
        }
        let ids: Vec<String> = spec
            .layers
            .iter()
            .map(|l| name(l.parent().unwrap()))
            .collect();
        let mut call = format!(
            "mount {} [{}] profiled={}",
            name(&spec.mountpoint),
            ids.join(","),
            spec.profile.is_some()
        );
        if let (Some(allowed), Some(misses)) = (&spec.allowed, &spec.misses) {
            call += &format!(" allowed={} misses={}", name(allowed), name(misses));
        }
        self.record(call);
        self.serving.lock().unwrap().insert(spec.mountpoint.clone());
        Ok(spec.mountpoint.clone())
    }

    fn adopt(&self, spec: &ViewSpec) -> Result<Option<PathBuf>, MountError> {
        if !self.pass(Op::Adopt) {
            self.record(format!("failed adopt {}", name(&spec.mountpoint)));
            return Err(MountError::State(StateFileError::Read {
                path: crate::viewproc::state_path(&spec.mountpoint),
                source: std::io::ErrorKind::PermissionDenied.into(),
            }));
        }
        let serving = self.serving.lock().unwrap().contains(&spec.mountpoint);
        Ok(serving.then(|| {
            self.record(format!("adopt {}", name(&spec.mountpoint)));
            spec.mountpoint.clone()
        }))
    }

    /// Answers as things were when asked, also when held; a failing check
    /// answers that the server is gone.
    fn is_serving(&self, handle: &PathBuf) -> bool {
        let answer = !self.failing.lock().unwrap().contains(&Op::IsServing)
            && self.serving.lock().unwrap().contains(handle);
        self.pass(Op::IsServing);
        answer
    }

    fn stop(&self, handle: &PathBuf) -> Result<StopOutcome, MountError> {
        if !self.pass(Op::Stop) {
            self.record(format!("failed unmount {}", name(handle)));
            return Err(MountError::Detach {
                path: handle.clone(),
                source: std::io::Error::from_raw_os_error(libc::EBUSY),
            });
        }
        self.serving.lock().unwrap().remove(handle);
        self.record(format!("unmount {}", name(handle)));
        Ok(StopOutcome::Stopped)
    }
}
