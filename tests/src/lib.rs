//! Shared helpers of the end-to-end tests: prerequisites of privileged tests,
//! the `pare` binary, fixture layer stacks, tree walks and mounts that are
//! always cleaned up.

pub mod containerd;
pub mod debian;
pub mod dirtar;
pub mod fixture;
pub mod images;
pub mod large;
pub mod layer;
pub mod mounts;
pub mod node;
pub mod oci;
pub mod poll;
pub mod prereq;
pub mod snapshotter;
pub mod story;
pub mod transport;
pub mod walk;
