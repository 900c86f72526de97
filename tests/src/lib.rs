//! Shared helpers of the end-to-end tests: prerequisites of privileged tests,
//! the `pare` binary, and mounts that are always cleaned up.

pub mod prereq;
