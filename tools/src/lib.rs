//! The `pare` tool's library: compaction of an image and its profile into a
//! minimized image (closure, tar and OCI writers, containerd client).

pub mod compact;
pub mod containerd;
pub mod oci;
pub mod report;
