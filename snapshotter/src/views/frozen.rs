//! The allowed set a judged view (audit, enforce) was started with, kept
//! beside its mountpoint as `views/<mount name>.allowed` while the view
//! lives. Prepare reads the image's frozen set once and keys the view by the
//! digest of those bytes; the view server reads this copy, never the
//! image's current set, which `pare mode` may freeze anew at any time.

use std::path::{Path, PathBuf};

use pare_fs::id::Digest;

use super::{MountError, ViewSpec};

/// The copy of the allowed set of the view mounted at `mountpoint`.
pub fn copy_path(mountpoint: &Path) -> PathBuf {
    let mut name = mountpoint.as_os_str().to_owned();
    name.push(".allowed");
    PathBuf::from(name)
}

/// Makes sure the copy `spec.allowed` holds the set with digest
/// `spec.key.allowed`: an existing copy stays (it is written only with such
/// bytes; the server checks the digest again); else it is written from
/// `bytes` (what Prepare read), else from `current` (the image's set now, for
/// a view restored after a restart) when that still has the digest.
pub fn ensure(spec: &ViewSpec, bytes: Option<&[u8]>, current: &Path) -> Result<(), MountError> {
    let (Some(copy), Some(wanted)) = (&spec.allowed, &spec.key.allowed) else {
        return Ok(());
    };
    if copy.exists() {
        return Ok(());
    }
    let read;
    let bytes = match bytes {
        Some(bytes) => bytes,
        None => {
            read = std::fs::read(current).map_err(|source| MountError::Allowed {
                path: current.to_path_buf(),
                reason: source.to_string(),
            })?;
            &read
        }
    };
    let found = Digest::sha256(bytes);
    if &found != wanted {
        return Err(MountError::Allowed {
            path: current.to_path_buf(),
            reason: format!(
                "the view judges by the allowed set {wanted}, but the image's set is now {found} (frozen again since)"
            ),
        });
    }
    pare_fs::atomic::write_atomically(copy, bytes).map_err(|source| MountError::Allowed {
        path: copy.clone(),
        reason: source.to_string(),
    })
}

/// Removes the copy of the view mounted at `mountpoint`, if any.
pub fn remove(mountpoint: &Path) {
    match std::fs::remove_file(copy_path(mountpoint)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(mountpoint = %mountpoint.display(), error = %e, "cannot remove the view's copy of its allowed set")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::ViewKey;
    use pare_fs::id::ChainId;
    use pare_fs::policy::Mode;

    fn spec(dir: &Path, set: &[u8]) -> ViewSpec {
        let chain = ChainId::of(&[Digest::sha256(b"layer")]).unwrap();
        let key = ViewKey::judged(chain, Mode::Enforce, Digest::sha256(set));
        let mountpoint = dir.join(key.mount_name());
        ViewSpec {
            key,
            layers: Vec::new(),
            allowed: Some(copy_path(&mountpoint)),
            misses: None,
            profile: None,
            mountpoint,
        }
    }

    #[test]
    fn the_copy_holds_the_bytes_prepare_read_whatever_the_image_has_now() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("current.allowed");
        std::fs::write(&current, b"frozen again").unwrap();
        let spec = spec(dir.path(), b"first set");
        ensure(&spec, Some(b"first set"), &current).unwrap();
        let copy = spec.allowed.as_ref().unwrap();
        assert_eq!(std::fs::read(copy).unwrap(), b"first set");
        // A second start of the same view keeps it.
        ensure(&spec, None, &current).unwrap();
        assert_eq!(std::fs::read(copy).unwrap(), b"first set");
        remove(&spec.mountpoint);
        assert!(!copy.exists());
        remove(&spec.mountpoint);
    }

    #[test]
    fn a_restored_view_takes_the_current_set_only_when_it_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let current = dir.path().join("current.allowed");
        let spec = spec(dir.path(), b"first set");
        std::fs::write(&current, b"frozen again").unwrap();
        let err = ensure(&spec, None, &current).unwrap_err();
        assert!(err.to_string().contains("frozen again since"), "{err}");
        assert!(!spec.allowed.as_ref().unwrap().exists());
        std::fs::write(&current, b"first set").unwrap();
        ensure(&spec, None, &current).unwrap();
        assert_eq!(
            std::fs::read(spec.allowed.as_ref().unwrap()).unwrap(),
            b"first set"
        );
    }

    #[test]
    fn bytes_of_another_set_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), b"first set");
        let err = ensure(&spec, Some(b"other"), &dir.path().join("none")).unwrap_err();
        assert!(matches!(err, MountError::Allowed { .. }), "{err}");
    }
}
