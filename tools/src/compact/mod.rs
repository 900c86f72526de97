//! Compaction: from an image's layers and its profile to a one-layer image
//! holding only what the workload uses ([`compact`] does all of it).

pub mod allowed;
pub mod closure;
pub mod dpkg;
pub mod elf;
pub mod lacking;
pub mod layer;
pub mod plan;
mod run;
mod source;
mod summary;
pub mod tree;

pub use run::{CompactError, CompactRequest, Progress, compact, default_tag, profile_of};
pub use summary::{CompactSummary, KeptOf};
