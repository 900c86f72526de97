//! How the kernel and a view exchange requests: `read(2)`/`write(2)` on
//! `/dev/fuse`, or FUSE over io_uring (Linux 6.14+, while the host's
//! `fuse.enable_uring` module parameter is on).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where the kernel's switch for FUSE over io_uring is.
pub const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether `auto` picks io_uring when the kernel offers it: the transport
/// bench (docs/BENCHMARKS.md) decides, with the view's round trips measured
/// on both side by side.
pub const AUTO_USES_IO_URING: bool = true;

/// What the error says when io_uring is required and the kernel said no at
/// INIT.
pub(crate) const NOT_OFFERED: &str = "the kernel did not offer FUSE over io_uring at INIT";

/// The transport of a view's requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// io_uring when the kernel offers it (and [`AUTO_USES_IO_URING`]),
    /// `/dev/fuse` otherwise.
    #[default]
    Auto,
    /// FUSE over io_uring; mounting fails when the kernel does not offer it.
    IoUring,
    /// `read(2)` and `write(2)` on `/dev/fuse`.
    DevFuse,
}

impl Transport {
    /// The names the command line and the config take.
    pub const NAMES: [&'static str; 3] = ["auto", "io-uring", "dev-fuse"];
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Auto => "auto",
            Transport::IoUring => "io-uring",
            Transport::DevFuse => "dev-fuse",
        })
    }
}

impl FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Transport, String> {
        match s {
            "auto" => Ok(Transport::Auto),
            "io-uring" => Ok(Transport::IoUring),
            "dev-fuse" => Ok(Transport::DevFuse),
            other => Err(format!(
                "unknown transport {other:?}: one of {}",
                Transport::NAMES.join(", ")
            )),
        }
    }
}

/// Whether this kernel offers FUSE over io_uring now: `Err` says why not.
pub fn uring_offered() -> Result<(), String> {
    match std::fs::read_to_string(ENABLE_URING) {
        Ok(v) if v.trim() == "Y" => Ok(()),
        Ok(_) => Err(format!(
            "FUSE over io_uring is switched off on this host: `echo Y > {ENABLE_URING}` turns it on"
        )),
        Err(_) => Err(format!(
            "this kernel has no FUSE over io_uring ({ENABLE_URING} is missing; Linux 6.14+ with CONFIG_FUSE_IO_URING)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::Transport;

    #[test]
    fn transports_read_back_what_they_print() {
        for name in Transport::NAMES {
            let t: Transport = name.parse().expect("a known name");
            assert_eq!(t.to_string(), name);
        }
        let err = "uring".parse::<Transport>().expect_err("unknown");
        assert!(err.contains("auto, io-uring, dev-fuse"), "{err}");
        assert_eq!(Transport::default(), Transport::Auto);
    }
}
