//! The two transports a view serves requests over, as tests run them: the
//! `pare mount` arguments that choose one, what it needs, and the check
//! from the view's log that it was used.

use crate::prereq::Need;

/// A transport a test runs a view over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// FUSE over io_uring.
    IoUring,
    /// `read(2)`/`write(2)` on `/dev/fuse`.
    DevFuse,
}

/// What the view logs at start over io_uring (fs/src/view/mount.rs).
pub const LOG_IO_URING: &str = "view serves requests over io_uring";
/// What the view logs at start over `/dev/fuse`.
pub const LOG_DEV_FUSE: &str = "view serves requests over /dev/fuse";

impl Via {
    /// `pare mount` arguments choosing this transport.
    pub fn args(self) -> [&'static str; 2] {
        match self {
            Via::IoUring => ["--transport", "io-uring"],
            Via::DevFuse => ["--transport", "dev-fuse"],
        }
    }

    /// What running over this transport needs beside the test's own needs.
    pub fn needs(self) -> &'static [Need] {
        match self {
            Via::IoUring => &[Need::FuseUring],
            Via::DevFuse => &[],
        }
    }

    /// Asserts from the view's log (at info level) that it served over this
    /// transport and not the other.
    pub fn check(self, log: &str) {
        let (this, other) = match self {
            Via::IoUring => (LOG_IO_URING, LOG_DEV_FUSE),
            Via::DevFuse => (LOG_DEV_FUSE, LOG_IO_URING),
        };
        assert!(
            log.contains(this) && !log.contains(other),
            "the view did not serve over {self:?}; it logged:\n{log}"
        );
    }
}
