//! The `pare` tool's library: compaction of an image and its profile into a
//! minimized image ([`compact::compact`]: closure, tar and OCI writers,
//! containerd client), and the report comparing two images.

pub mod compact;
pub mod containerd;
pub mod misses;
pub mod oci;
pub mod report;
