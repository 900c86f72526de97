//! pare-fs: the layer stack of an image, the profiling FUSE view over it, and the
//! profile journal that view writes.
//!
//! - [`layers`] resolves paths across overlay-style layer directories exactly as
//!   kernel overlayfs does for the same `lowerdir=` (whiteouts, opaque dirs).
//! - [`view`] serves that merged tree read-only through FUSE and reports the
//!   first access of every kind to every path.
//! - [`profile`] journals those accesses (append-only, crash tolerant) and reads
//!   journals back.
//! - [`policy`] judges accesses against an image's frozen allowed set (audit
//!   and enforce modes) and keeps the misses.
//! - [`id`] names image content: digests, chain IDs, profile paths.
//! - [`mountinfo`] reads the mount table (the one parser of it).
//! - [`atomic`] replaces small state files whole.

pub mod atomic;
pub mod id;
pub mod layers;
pub mod mountinfo;
pub mod policy;
pub mod profile;
pub mod view;
