//! Profiles: which paths of an image a workload touched, how, and when first.
//!
//! The view sends one [`Access`] per path and kind the first time it sees it
//! ([`Recorder`]); a writer thread appends them to the journal file
//! ([`journal`] describes the format) and [`read`] turns a journal back into a
//! [`Profile`] with entries in first-access order.

mod access;
pub mod journal;
pub mod merge;
mod path;
mod reader;
mod writer;

pub use access::{Access, AccessKind, KindSet};
pub use path::{ImagePath, PathError};
pub use reader::{Entry, Profile, ReadError, read, read_bytes};
pub use writer::{Recorder, RecorderError, RecorderHandle};
