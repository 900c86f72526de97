//! The exec closure of the host's own `/bin/ls` and of a `#!/bin/sh` script,
//! copied with every symlink on the way into a one-layer image, is exactly
//! what the host's `ldd` says they load (plus the symlinks met and
//! `/etc/ld.so.cache`).

use std::collections::BTreeSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use pare_fs::layers::LayerStack;
use pare_fs::profile::ImagePath;
use pare_tests::prereq::{Need, privileged};
use pare_tools::compact::elf::exec_closure;
use pare_tools::compact::tree::ImageTree;

const NEEDS: &[Need] = &[Need::Command("ldd")];

/// Copies the host path `path` into `layer` at the same place, recreating
/// every symlink met on the way; returns the image paths of those symlinks
/// and of the file reached.
fn mirror(layer: &Path, path: &Path) -> Result<Vec<String>> {
    let mut met = Vec::new();
    let mut pending: Vec<PathBuf> = path
        .iter()
        .filter(|c| *c != "/")
        .map(PathBuf::from)
        .collect();
    pending.reverse();
    let mut at = PathBuf::from("/");
    while let Some(name) = pending.pop() {
        if name == Path::new("..") {
            at.pop();
            continue;
        }
        let next = at.join(&name);
        let inside = layer.join(next.strip_prefix("/")?);
        let meta = std::fs::symlink_metadata(&next).with_context(|| next.display().to_string())?;
        if meta.is_symlink() {
            let target = std::fs::read_link(&next)?;
            if std::fs::symlink_metadata(&inside).is_err() {
                symlink(&target, &inside)?;
            }
            met.push(next.display().to_string());
            if target.is_absolute() {
                at = PathBuf::from("/");
            }
            let mut parts: Vec<PathBuf> = target
                .iter()
                .filter(|c| *c != "/")
                .map(PathBuf::from)
                .collect();
            parts.reverse();
            pending.extend(parts);
        } else if meta.is_dir() {
            std::fs::create_dir_all(&inside)?;
            at = next;
        } else {
            std::fs::copy(&next, &inside)?;
            met.push(next.display().to_string());
            at = next;
        }
    }
    Ok(met)
}

/// The paths `ldd` says `exe` loads (interpreter included, vDSO excluded).
fn ldd(exe: &str) -> Result<Vec<String>> {
    let out = std::process::Command::new("ldd").arg(exe).output()?;
    ensure!(out.status.success(), "ldd {exe}: {}", out.status);
    let text = String::from_utf8(out.stdout)?;
    let mut paths = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest.split(" (").next(),
            None => line.split(" (").next(),
        };
        match path {
            Some(path) if path.starts_with('/') => paths.push(path.to_string()),
            _ if line.starts_with("linux-vdso") || line.starts_with("linux-gate") => {}
            _ => bail!("ldd {exe}: unexpected line {line:?}"),
        }
    }
    ensure!(!paths.is_empty(), "ldd {exe} names no library");
    Ok(paths)
}

fn image_path(s: &str) -> ImagePath {
    ImagePath::new(s.as_bytes().to_vec()).expect("an absolute path")
}

#[test]
fn host_binaries_closure_matches_ldd() -> Result<()> {
    if !privileged("host_binaries_closure_matches_ldd", NEEDS) {
        return Ok(());
    }
    let (ls, sh) = (ldd("/bin/ls")?, ldd("/bin/sh")?);
    let dir = tempfile::tempdir()?;
    let layer = dir.path().join("layer");
    std::fs::create_dir(&layer)?;
    // Each program's paths, the first one the program's own first path.
    let expect = |exe: &str, loaded: &[String]| -> Result<Vec<String>> {
        let mut paths = mirror(&layer, Path::new(exe))?;
        for path in loaded {
            paths.extend(mirror(&layer, Path::new(path))?);
        }
        Ok(paths)
    };
    let want_ls = expect("/bin/ls", &ls)?;
    let want_script = [vec!["/app/run.sh".to_string()], expect("/bin/sh", &sh)?].concat();
    // ld.so.cache lists what ld.so.conf names; here, the directories ldd used.
    let mut dirs: Vec<&str> = Vec::new();
    for path in ls.iter().chain(&sh) {
        let dir = Path::new(path)
            .parent()
            .and_then(Path::to_str)
            .context("a library directory")?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for (path, content) in [
        (
            "etc/ld.so.conf",
            "include /etc/ld.so.conf.d/*.conf\n".to_string(),
        ),
        ("etc/ld.so.conf.d/libs.conf", dirs.join("\n")),
        ("app/run.sh", "#!/bin/sh\necho hi\n".to_string()),
    ] {
        let at = layer.join(path);
        std::fs::create_dir_all(at.parent().context("a parent")?)?;
        std::fs::write(at, content)?;
    }
    let tree = ImageTree::new(LayerStack::open(vec![layer.clone()])?);
    for (exe, want) in [("/bin/ls", want_ls), ("/app/run.sh", want_script)] {
        let got = exec_closure(&tree, &image_path(exe))?;
        let unique: BTreeSet<String> = got.iter().map(ImagePath::to_string).collect();
        assert_eq!(unique.len(), got.len(), "{exe}: duplicates in {got:?}");
        assert_eq!(unique, want.iter().cloned().collect(), "{exe}");
        assert_eq!(
            got[0],
            image_path(&want[0]),
            "{exe}: the program comes first"
        );
    }
    Ok(())
}
