//! Profiles: which paths of an image a workload touched, how, and when first.
//!
//! The view sends one [`Access`] per path and kind the first time it sees it
//! ([`Recorder`]); a writer thread appends them to the journal file
//! ([`journal`] describes the format) and [`read`] turns a journal back into a
//! [`Profile`] with entries in first-access order.
//!
//! Nothing is lost silently: records the journal would not take are counted
//! ([`RecorderStats`]) and mark the profile incomplete ([`Profile::incomplete`]);
//! a live journal is locked against a second recorder and against `merge`;
//! an unusable journal is set aside ([`set_aside`]), never deleted.

mod access;
mod aside;
pub mod journal;
mod lock;
pub mod merge;
mod path;
mod reader;
mod recorder;
pub mod settle;
mod writer;

pub use access::{ABSENT_PER_DIRECTORY, Access, AccessKind, KindSet};
pub use aside::set_aside;
pub use lock::is_recording;
pub(crate) use lock::try_lock;
pub use path::{ImagePath, PathError};
pub use reader::{Entry, Profile, ReadError, read, read_bytes};
pub use recorder::{Recorder, RecorderError, RecorderHandle};
pub use writer::RecorderStats;
