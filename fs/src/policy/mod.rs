//! Safe rollout of a minimized image: the [`Mode`] an image runs in, the
//! frozen [`AllowedSet`] an enforced view shows, and the [`Misses`] (accesses
//! outside that set) audit and enforce journal.
//!
//! - **learn**: the view serves everything and the profile grows.
//! - **audit**: the view serves everything; every access outside the allowed
//!   set is also journaled as a miss. Containers behave exactly as in learn.
//! - **enforce**: names outside the allowed set do not exist (lookup answers
//!   `ENOENT`, uncached; listings leave them out) and every attempt is a miss.
//! - **off**: no view.
//!
//! Beside a profile at `P` live its frozen allowed set ([`allowed_path`],
//! `P.allowed`) and its misses ([`misses_path`], `P.misses`). A view in audit
//! or enforce mode gets a [`Policy`]; a [`MissesWriter`] rewrites the misses
//! file in the background. A snapshotter view in audit or enforce mode keeps
//! its own misses ([`view_misses_path`]); [`misses_files`] finds them all.
//! [`modes`] stores the mode each image runs in on a node.

mod allowed;
mod caller;
mod misses;
pub mod modes;
mod wire;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use allowed::{AllowedSet, Rules};
pub use caller::{container_of_cgroup, resolve};
pub use misses::{MAX_PROCESSES, Miss, MissProcess, Misses, MissesFile, read_misses};
pub use modes::ModeEntry;
pub use writer::{Claim, DEFAULT_FLUSH, MissesWriter, claim};

/// How an image's containers see its files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The view serves everything; the profile grows.
    #[default]
    Learn,
    /// The view serves everything; accesses outside the allowed set are misses.
    Audit,
    /// Names outside the allowed set do not exist; every attempt is a miss.
    Enforce,
    /// No view: plain overlayfs.
    Off,
}

impl Mode {
    /// Every mode.
    pub const ALL: [Mode; 4] = [Mode::Learn, Mode::Audit, Mode::Enforce, Mode::Off];

    /// Lower-case name, as in the CLI, configuration and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Learn => "learn",
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
            Mode::Off => "off",
        }
    }

    /// True for the modes that judge accesses against an allowed set (audit, enforce).
    pub fn has_policy(self) -> bool {
        matches!(self, Mode::Audit | Mode::Enforce)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Mode, PolicyError> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| PolicyError::UnknownMode(s.to_string()))
    }
}

/// Why a policy file could not be read or written, or a policy not made.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A mode name that is none of learn, audit, enforce, off.
    #[error("unknown mode {0:?}: expected learn, audit, enforce or off")]
    UnknownMode(String),
    /// A policy was asked for in a mode that has none (learn, off).
    #[error("mode {0} judges no access against an allowed set")]
    NoPolicy(Mode),
    /// The file could not be read, written or renamed into place.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is damaged, of another kind, or of an unknown version.
    #[error("{path} is not a usable {what}: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What it should have been ("allowed set", "misses file").
        what: &'static str,
        /// Why it is not.
        reason: String,
    },
    /// The misses writer thread panicked.
    #[error("misses writer for {0} panicked")]
    Panicked(PathBuf),
}

/// Where the frozen allowed set of the profile at `profile` lives: `<profile>.allowed`.
pub fn allowed_path(profile: &Path) -> PathBuf {
    beside(profile, ".allowed")
}

/// Where the misses of the profile at `profile` live: `<profile>.misses`.
pub fn misses_path(profile: &Path) -> PathBuf {
    beside(profile, ".misses")
}

/// How a view names its allowed set: the first 12 hex digits of the
/// digest of the allowed-set file it was started with.
pub fn set_id(allowed_file: &crate::id::Digest) -> &str {
    &allowed_file.hex()[..12]
}

/// Where a snapshotter view of the profile at `profile` in `mode`, judging by
/// the allowed-set file with digest `allowed_file`, keeps its misses:
/// `<profile>.<mode>-<set id>.misses`.
pub fn view_misses_path(profile: &Path, mode: Mode, allowed_file: &crate::id::Digest) -> PathBuf {
    beside(profile, &format!(".{mode}-{}.misses", set_id(allowed_file)))
}

/// Every misses file of the profile at `profile`: `<profile>.misses` and
/// each view's `<profile>.<mode>-<set id>.misses`, sorted by name. Files set
/// aside (`.accepted-…`) and temporaries are not misses files.
pub fn misses_files(profile: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let (Some(dir), Some(name)) = (profile.parent(), profile.file_name()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{}.", name.to_string_lossy());
    let read_dir = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PolicyError::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut out: Vec<PathBuf> = read_dir
        .flatten()
        .filter(|e| {
            let file = e.file_name();
            let file = file.to_string_lossy();
            file.strip_prefix(&prefix).is_some_and(|rest| {
                rest.ends_with("misses") && (rest == "misses" || rest.ends_with(".misses"))
            })
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

fn beside(profile: &Path, suffix: &str) -> PathBuf {
    let mut name = profile.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// What a view in audit or enforce mode judges accesses by, and where misses go.
#[derive(Clone, Debug)]
pub struct Policy {
    mode: Mode,
    allowed: Arc<AllowedSet>,
    misses: Arc<Misses>,
}

impl Policy {
    /// A policy for `mode` (audit or enforce; [`PolicyError::NoPolicy`]
    /// otherwise): accesses outside `allowed` go to `misses`.
    pub fn new(
        mode: Mode,
        allowed: Arc<AllowedSet>,
        misses: Arc<Misses>,
    ) -> Result<Policy, PolicyError> {
        if !mode.has_policy() {
            return Err(PolicyError::NoPolicy(mode));
        }
        Ok(Policy {
            mode,
            allowed,
            misses,
        })
    }

    /// Audit or enforce.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// True in enforce mode: names outside the allowed set are hidden.
    pub fn hides(&self) -> bool {
        self.mode == Mode::Enforce
    }

    /// The paths the view allows.
    pub fn allowed(&self) -> &AllowedSet {
        &self.allowed
    }

    /// Where misses go.
    pub fn misses(&self) -> &Misses {
        &self.misses
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_print_and_serialize_in_lower_case() {
        for (mode, name) in [
            (Mode::Learn, "learn"),
            (Mode::Audit, "audit"),
            (Mode::Enforce, "enforce"),
            (Mode::Off, "off"),
        ] {
            assert_eq!(name.parse::<Mode>().unwrap(), mode);
            assert_eq!(mode.to_string(), name);
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{name}\""));
            let back: Mode = serde_json::from_str(&format!("\"{name}\"")).unwrap();
            assert_eq!(back, mode);
        }
        let err = "Enforce".parse::<Mode>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown mode \"Enforce\": expected learn, audit, enforce or off"
        );
    }

    #[test]
    fn policy_files_live_beside_the_profile() {
        let profile = Path::new("/var/lib/pare/profiles/sha256-ab");
        assert_eq!(
            allowed_path(profile),
            Path::new("/var/lib/pare/profiles/sha256-ab.allowed")
        );
        assert_eq!(
            misses_path(profile),
            Path::new("/var/lib/pare/profiles/sha256-ab.misses")
        );
    }

    #[test]
    fn every_misses_file_of_a_profile_is_found_and_others_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("sha256:ab");
        assert!(misses_files(&profile).unwrap().is_empty());
        let set = crate::id::Digest::sha256(b"set");
        let view = view_misses_path(&profile, Mode::Enforce, &set);
        assert_eq!(
            view.file_name().unwrap().to_string_lossy(),
            format!("sha256:ab.enforce-{}.misses", &set.hex()[..12])
        );
        for name in [
            "sha256:ab",
            "sha256:ab.allowed",
            "sha256:ab.misses.accepted-17",
            "sha256:ab.misses.tmp-3",
            "sha256:abc.misses",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        std::fs::write(misses_path(&profile), b"").unwrap();
        std::fs::write(&view, b"").unwrap();
        let found = misses_files(&profile).unwrap();
        assert_eq!(found, vec![view, misses_path(&profile)]);
    }

    #[test]
    fn only_audit_and_enforce_take_a_policy() {
        let allowed = Arc::new(AllowedSet::from_paths(
            crate::id::Digest::sha256(b""),
            Rules::default(),
            [],
        ));
        for mode in Mode::ALL {
            let misses = Arc::new(Misses::new(None, mode));
            let policy = Policy::new(mode, allowed.clone(), misses);
            assert_eq!(policy.is_ok(), mode.has_policy(), "{mode}");
        }
    }
}
