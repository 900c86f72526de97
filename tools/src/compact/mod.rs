//! Compaction: from an image's layers and its profile to a one-layer image
//! holding only what the workload uses.

pub mod closure;
pub mod dpkg;
pub mod elf;
pub mod layer;
pub mod plan;
pub mod tree;
