//! `/proc/<pid>/mountinfo`: the one parser of the mount table, with the
//! kernel's octal escapes (`\040` for a space) undone.

use std::path::{Path, PathBuf};

/// One line of mountinfo (see proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Unique id of the mount.
    pub mount_id: u64,
    /// Id of the parent mount.
    pub parent_id: u64,
    /// Major device number of the file system (`st_dev`).
    pub major: u32,
    /// Minor device number; for FUSE, the connection number under
    /// `/sys/fs/fuse/connections/`.
    pub minor: u32,
    /// Root of the mount within its file system.
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`ro,nosuid,nodev,relatime`).
    pub options: String,
    /// File system type (`overlay`, `fuse.pare`).
    pub fs_type: String,
    /// Mount source.
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

impl MountEntry {
    /// True when the per-mount options contain `option` (`nosuid`, `ro`).
    pub fn has_option(&self, option: &str) -> bool {
        self.options.split(',').any(|o| o == option)
    }
}

/// The mount table of this process's mount namespace.
pub fn read() -> std::io::Result<Vec<MountEntry>> {
    read_of("self")
}

/// The mount table seen by process `pid` (`"self"` or a number).
pub fn read_of(pid: &str) -> std::io::Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    Ok(parse(&text))
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (head, tail) = line.split_once(" - ")?;
    let mut f = head.split(' ');
    let mount_id = f.next()?.parse().ok()?;
    let parent_id = f.next()?.parse().ok()?;
    let (major, minor) = f.next()?.split_once(':')?;
    let root = unescape(f.next()?);
    let mount_point = unescape(f.next()?);
    let options = f.next()?.to_string();
    let mut t = tail.split(' ');
    let fs_type = unescape(t.next()?);
    let source = unescape(t.next().unwrap_or(""));
    let super_options = t.next().unwrap_or("").to_string();
    Some(MountEntry {
        mount_id,
        parent_id,
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: PathBuf::from(root),
        mount_point: PathBuf::from(mount_point),
        options,
        fs_type,
        source,
        super_options,
    })
}

/// Mount points of this mount namespace (empty when mountinfo is unreadable).
pub fn mount_points() -> Vec<PathBuf> {
    read()
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

/// The topmost mount on `path` (canonical), if any.
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    read()
        .unwrap_or_default()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
}

/// Mounts at or beneath `dir`, deepest first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> Vec<MountEntry> {
    let mut out: Vec<MountEntry> = read()
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .collect();
    out.sort_by(|a, b| b.mount_point.cmp(&a.mount_point));
    out
}

/// Undoes the octal escapes (`\040` for space) of mountinfo fields.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_optional_fields_and_escapes() {
        let text = "\
36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw,errors=continue
712 29 0:63 / /var/lib/pare/views/sha256-ab ro,nosuid,nodev,relatime - fuse.pare pare ro,user_id=0
garbage line
";
        let got = parse(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].mount_point, PathBuf::from("/mnt/a b"));
        assert_eq!((got[0].major, got[0].minor), (98, 0));
        assert_eq!(got[0].fs_type, "ext3");
        assert_eq!(got[1].fs_type, "fuse.pare");
        assert_eq!(got[1].minor, 63);
        assert!(got[1].has_option("nosuid") && got[1].has_option("nodev"));
        assert!(!got[0].has_option("nosuid"));
        assert_eq!(got[1].super_options, "ro,user_id=0");
    }

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b\134c"), "/mnt/a b\\c");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape(r"/short\04"), r"/short\04");
    }
}
