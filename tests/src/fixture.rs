//! Fixture layer stacks for conformance tests, written overlay-style on a
//! fresh `noatime` tmpfs (reads through overlayfs never move an atime).
//!
//! [`conformance_stack`] holds three layers, `l1` (topmost) `l2` `l3`, and
//! every case the view must get right (visible paths, after merging):
//!
//! | path | case |
//! | --- | --- |
//! | `/` , `merged/`, `merged/sub/`, `deep/d00/…/d39/` | directories merged from all 3 layers |
//! | `merged/gone` (file), `merged/gonedir/` (dir), `only3_gone/`, `many/e00000..e00099` | whited out |
//! | `orphan` | a whiteout with nothing below it |
//! | `opaque/` | opaque in l2: l3's `lower_only` and `sub/x` hidden, l1's `from1` merged |
//! | `opaque_top/` | opaque in l1, with a `trusted.note` xattr: l2's `lower` hidden |
//! | `flip` file/dir/file, `flop` dir/file/dir, `wo_then_dir` dir/whiteout/dir | replaced "and back" (l3/l2/l1) |
//! | `file_to_dir`, `dir_to_file` | replaced once |
//! | `hl/a`, `hl/b`, `hl/sub/c` | one hardlink group of 3 names |
//! | `hl/s1` (+ shadowed `hl/s2`) | hardlink whose other name is replaced in l2 |
//! | `links/*` | relative, absolute, dangling, chained, directory, loop, 4000-byte targets |
//! | `dev/*` | fifo, socket, char 1:3, block 7:300, char 511:70000 |
//! | `modes/*` | 000, 4755, 1777, 2711, 2775, 6755; owners 1234:5678 and 65534 |
//! | `xattrs/*`, `bin/capbin` | user.*, trusted.* on dir and symlink, security.capability v2 |
//! | `big/*` | 32 MiB random, 64 MiB sparse, empty |
//! | `names/*` | unicode, spaces, newline, 255-byte names |
//! | `many/` | 10,000 visible entries from l3 and l1 |
//! | `only1/`, `only2/`, `only3/` | directories present in one layer |

use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::{Digest, Sha256};

use crate::layer::{Device, Layer};
use crate::mounts::Mount;

/// `security.capability` for `cap_net_bind_service+ep` (vfs_cap_data v2).
pub const CAP_NET_BIND_SERVICE_EP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // magic_etc: VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
    0x00, 0x04, 0x00, 0x00, // permitted (low): 1 << CAP_NET_BIND_SERVICE (10)
    0x00, 0x00, 0x00, 0x00, // inheritable (low)
    0x00, 0x00, 0x00, 0x00, // permitted (high)
    0x00, 0x00, 0x00, 0x00, // inheritable (high)
];

/// Visible entries of `many/`.
pub const MANY: usize = 10_000;

/// Depth of the `deep/` chain.
pub const DEPTH: usize = 40;

/// A layer stack on its own tmpfs, unmounted when dropped.
#[derive(Debug)]
pub struct Fixture {
    /// Layer directories, topmost first (the order of `lowerdir=`).
    pub layers: Vec<PathBuf>,
    /// SHA-256 (hex) of `big/large.bin`, computed while writing it.
    pub large_sha256: String,
    tmpfs: Mount,
}

impl Fixture {
    /// Mounts a `noatime` tmpfs on `dir` and creates `names` as layer dirs in it.
    fn layers(dir: &Path, names: &[&str]) -> Result<(Mount, Vec<Layer>)> {
        let tmpfs = Mount::tmpfs(dir)?;
        let layers = names
            .iter()
            .map(|n| Layer::new(&tmpfs.path().join(n)))
            .collect::<Result<_>>()?;
        Ok((tmpfs, layers))
    }

    /// Unmounts the tmpfs (dropping does it lazily).
    pub fn unmount(self) -> Result<()> {
        self.tmpfs.unmount()
    }
}

/// Writes the three-layer conformance stack on a tmpfs mounted on `dir`.
pub fn conformance_stack(dir: &Path) -> Result<Fixture> {
    let (tmpfs, layers) = Fixture::layers(dir, &["l1", "l2", "l3"])?;
    let [l1, l2, l3] = &layers[..] else {
        unreachable!()
    };
    let large_sha256 = bottom(l3)?;
    middle(l2)?;
    top(l1)?;
    let mut clock = 0;
    for layer in [l3, l2, l1] {
        layer.set_times(&mut clock)?;
    }
    Ok(Fixture {
        layers: layers.iter().map(|l| l.root().to_path_buf()).collect(),
        large_sha256,
        tmpfs,
    })
}

/// Writes a two-layer stack whose `huge/` directory holds `entries` names:
/// one (`from_lower`) from the lower layer, the rest from the upper one.
pub fn huge_dir_stack(dir: &Path, entries: usize) -> Result<Fixture> {
    let (tmpfs, layers) = Fixture::layers(dir, &["upper", "lower"])?;
    layers[1].file("huge/from_lower", b"lower")?;
    layers[0].dir("huge")?;
    for i in 1..entries {
        std::fs::File::create(layers[0].root().join(format!("huge/entry-{i:06}")))?;
    }
    Ok(Fixture {
        layers: layers.iter().map(|l| l.root().to_path_buf()).collect(),
        large_sha256: String::new(),
        tmpfs,
    })
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn pseudo_random(len: usize, mut state: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn deep_path(leaf: &str) -> String {
    let dirs: Vec<String> = (0..DEPTH).map(|i| format!("d{i:02}")).collect();
    format!("deep/{}/{leaf}", dirs.join("/"))
}

/// l3: the base everything else overrides. Returns the large file's digest.
fn bottom(l: &Layer) -> Result<String> {
    l.file("merged/from3", b"3")?
        .file("merged/shared", b"shared from l3")?;
    l.file("merged/gone", b"whited out in l2")?
        .file("merged/gonedir/child", b"x")?;
    l.file("merged/sub/from3", b"3")?.chmod("merged", 0o755)?;
    l.file("only3_gone/child", b"whited out in l2")?;
    l.file("opaque/lower_only", b"hidden by l2")?
        .file("opaque/sub/x", b"hidden")?;
    l.file("flip", b"file in l3")?
        .file("flop/l3child", b"hidden by l2's file")?;
    l.file("wo_then_dir/l3child", b"hidden by l2's whiteout")?;
    l.file("file_to_dir", b"file in l3")?
        .file("dir_to_file/child", b"hidden by l1")?;
    l.file("hl/a", b"three names")?
        .hardlink("hl/b", "hl/a")?
        .hardlink("hl/sub/c", "hl/a")?;
    l.file("hl/s1", b"one name shadowed")?
        .hardlink("hl/s2", "hl/s1")?;
    l.file("only3/sub/file", b"only in l3")?
        .file(&deep_path("leaf3"), b"deep")?;
    l.file("xattrs/shadowed", b"xattr hidden by l1's file")?;
    l.xattr("xattrs/shadowed", "user.lower", b"gone")?;
    l.dir("many")?;
    for i in 0..6_100 {
        std::fs::File::create(l.root().join(format!("many/e{i:05}")))?;
    }
    let large = pseudo_random(32 << 20, 0x9e37_79b9_7f4a_7c15);
    l.file("big/large.bin", &large)?;
    Ok(format!("{:x}", Sha256::digest(&large)))
}

/// l2: whiteouts, an opaque directory, special files, modes, owners, links.
fn middle(l: &Layer) -> Result<()> {
    l.file("merged/from2", b"2")?
        .whiteout("merged/gone")?
        .file("merged/sub/from2", b"2")?;
    l.whiteout("only3_gone")?;
    l.opaque("opaque")?
        .file("opaque/upper_only", b"l2")?
        .file("opaque/sub/y", b"l2")?;
    l.file("opaque_top/lower", b"hidden by l1's opaque dir")?;
    l.file("flip/child2", b"dir in l2")?
        .file("flop", b"file in l2")?
        .whiteout("wo_then_dir")?;
    l.file("file_to_dir/child", b"dir in l2")?;
    l.file("hl/s2", b"replaces one name of a hardlink pair")?;
    l.file("only2/file", b"only in l2")?
        .file(&deep_path("leaf2"), b"deep")?;
    for i in 0..100 {
        l.whiteout(&format!("many/e{i:05}"))?;
    }

    l.symlink("links/rel", "../merged/from3")?
        .symlink("links/abs", "/etc/hostname")?;
    l.symlink("links/dangling", "does/not/exist")?
        .symlink("links/dirlink", "../merged")?;
    l.symlink("links/chain1", "chain2")?
        .symlink("links/chain2", "chain3")?;
    l.symlink("links/chain3", "rel")?;
    l.symlink("links/loop_a", "loop_b")?
        .symlink("links/loop_b", "loop_a")?;
    l.symlink("links/long", &"x/".repeat(2000))?;

    l.fifo("dev/fifo")?
        .socket("dev/socket")?
        .chmod("dev/socket", 0o755)?;
    l.device("dev/null", Device::Char, 1, 3)?
        .chmod("dev/null", 0o666)?;
    l.device("dev/loop300", Device::Block, 7, 300)?;
    l.device("dev/bigminor", Device::Char, 511, 70_000)?;

    l.file("modes/m000", b"")?.chmod("modes/m000", 0o000)?;
    l.file("modes/m4755", b"#!/bin/sh\n")?
        .chmod("modes/m4755", 0o4755)?;
    l.dir("modes/m1777")?.chmod("modes/m1777", 0o1777)?;
    l.file("modes/m2711", b"")?.chmod("modes/m2711", 0o2711)?;
    l.dir("modes/m2775")?
        .chown("modes/m2775", 1234, 5678)?
        .chmod("modes/m2775", 0o2775)?;
    l.file("modes/m6755", b"")?
        .chown("modes/m6755", 65534, 65534)?
        .chmod("modes/m6755", 0o6755)?;
    l.dir("modes/d000")?.chmod("modes/d000", 0o000)?;
    l.file("modes/owned", b"")?
        .chown("modes/owned", 1234, 5678)?;
    l.dir("modes/nobody")?.chown("modes/nobody", 65534, 65534)?;
    l.symlink("modes/link", "owned")?
        .chown("modes/link", 1234, 5678)?;
    l.chown("modes", 1234, 5678)?.chmod("modes", 0o750)?;
    l.dir("merged")?
        .chown("merged", 65534, 65534)?
        .chmod("merged", 0o700)?;

    l.file("bin/capbin", b"\x7fELF not really")?
        .chmod("bin/capbin", 0o755)?;
    l.xattr(
        "bin/capbin",
        "security.capability",
        &CAP_NET_BIND_SERVICE_EP,
    )?;
    Ok(())
}

/// l1: the topmost layer.
fn top(l: &Layer) -> Result<()> {
    l.file("merged/from1", b"1")?
        .file("merged/shared", b"shared from l1")?;
    l.whiteout("merged/gonedir")?
        .file("merged/sub/from1", b"1")?;
    l.dir("merged")?
        .chown("merged", 1234, 5678)?
        .chmod("merged", 0o751)?;
    l.whiteout("orphan")?;
    l.file("opaque/from1", b"l1")?
        .opaque("opaque_top")?
        .file("opaque_top/upper", b"l1")?;
    l.xattr(
        "opaque_top",
        "trusted.note",
        b"opaque dir with a visible xattr",
    )?;
    l.file("flip", b"file again in l1")?
        .file("flop/l1child", b"dir again in l1")?;
    l.file("wo_then_dir/l1child", b"dir again in l1")?
        .file("dir_to_file", b"file in l1")?;
    l.file("only1/a/b/file", b"only in l1")?
        .file(&deep_path("leaf1"), b"deep")?;
    l.dir("many")?;
    for i in 6_100..MANY + 100 {
        std::fs::File::create(l.root().join(format!("many/e{i:05}")))?;
    }

    l.file("xattrs/file", b"x")?
        .xattr("xattrs/file", "user.mime", b"text/plain")?;
    l.xattr("xattrs/file", "user.empty", b"")?
        .xattr("xattrs/file", "user.bin", &[0, 1, 2, 255])?;
    l.xattr("xattrs/file", "user.big", &pseudo_random(4000, 7))?;
    l.dir("xattrs/dir")?
        .xattr("xattrs/dir", "trusted.note", b"on a directory")?;
    l.xattr("xattrs/dir", "user.dir", b"user xattr on a directory")?;
    l.symlink("xattrs/link", "file")?
        .xattr("xattrs/link", "trusted.note", b"on a symlink")?;
    l.file("xattrs/shadowed", b"no xattrs")?;

    l.sparse(
        "big/sparse.bin",
        64 << 20,
        &[
            (0, b"head"),
            (16 << 20, &[7; 8192]),
            ((64 << 20) - 4, b"tail"),
        ],
    )?;
    l.file("big/empty", b"")?;

    l.file("names/ünïcødé-日本語-🦀", b"unicode")?
        .file("names/with space", b"")?;
    l.file("names/ leading", b"")?
        .file("names/trailing ", b"")?;
    l.file("names/new\nline", b"")?
        .file("names/back\\slash", b"")?;
    l.file(&format!("names/{}", "n".repeat(255)), b"255 bytes")?;
    l.file(
        &format!("names/{}x", "é".repeat(127)),
        b"255 bytes of UTF-8",
    )?;
    Ok(())
}
