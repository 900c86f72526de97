//! A view mounter that counts what its inner mounter's starts and stops
//! came to, for `pare_view_starts_total` and `pare_view_stops_total`.

use crate::views::{MountError, StopOutcome, ViewMounter, ViewSpec};

use super::ViewEvents;

/// Wraps a [`ViewMounter`], counting starts and stops by outcome.
pub struct CountingMounter<M> {
    inner: M,
    events: ViewEvents,
}

impl<M> CountingMounter<M> {
    /// Counts `inner`'s starts and stops into `events`.
    pub fn new(inner: M, events: ViewEvents) -> Self {
        CountingMounter { inner, events }
    }
}

impl<M: ViewMounter> ViewMounter for CountingMounter<M> {
    type Handle = M::Handle;

    fn mount(&self, spec: &ViewSpec) -> Result<M::Handle, MountError> {
        let mounted = self.inner.mount(spec);
        self.events
            .start(if mounted.is_ok() { "mounted" } else { "failed" });
        mounted
    }

    fn adopt(&self, spec: &ViewSpec) -> Result<Option<M::Handle>, MountError> {
        let adopted = self.inner.adopt(spec);
        if matches!(adopted, Ok(Some(_))) {
            self.events.start("adopted");
        }
        adopted
    }

    fn is_serving(&self, handle: &M::Handle) -> bool {
        self.inner.is_serving(handle)
    }

    fn stop(&self, handle: &M::Handle) -> Result<StopOutcome, MountError> {
        let stopped = self.inner.stop(handle);
        self.events.stop(match &stopped {
            Ok(StopOutcome::Stopped) => "stopped",
            Ok(StopOutcome::Detached) => "detached",
            Ok(StopOutcome::Aborted) => "aborted",
            Err(_) => "failed",
        });
        stopped
    }
}
