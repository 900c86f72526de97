//! Large generated images, written without holding them in memory: one
//! uncompressed layer of incompressible files (deterministic pseudo-random
//! bytes) under `/data`, as an OCI archive for `ctr images import`; a profile
//! touching every file; the peak resident memory of a child process; and a
//! byte-for-byte check of a tree against the generated files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use oci_spec::image::MediaType;
use pare_fs::profile::{AccessKind, Recorder};
use pare_tools::oci::{Content, Spool, build_image, write_layout_tar};

use crate::containerd::run_watched;

/// mtime of the generated entries.
const MTIME: u64 = 1_700_000_000;

/// A generated image written as an OCI archive.
#[derive(Clone, Debug)]
pub struct LargeImage {
    /// The archive for `ctr images import`.
    pub archive: PathBuf,
    /// Its layer's diff ID (also the chain ID: it has one layer).
    pub diff_id: String,
    /// Every file, in layer order.
    pub files: Vec<GeneratedFile>,
    /// Bytes of file content.
    pub content_bytes: u64,
}

/// A generated file: its image path and how to make its content again.
#[derive(Clone, Debug)]
pub struct GeneratedFile {
    /// Image path, `/data/f0000.bin`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    seed: u64,
}

impl GeneratedFile {
    /// Its content, generated again.
    pub fn content(&self) -> impl Read + use<> {
        Noise::new(self.seed, self.size)
    }
}

/// Deterministic incompressible bytes (xorshift64*), `len` of them.
struct Noise {
    state: u64,
    left: u64,
    word: [u8; 8],
    at: usize,
}

impl Noise {
    /// `seed` must not be 0 (xorshift's one fixed point).
    fn new(seed: u64, len: u64) -> Noise {
        Noise {
            state: seed,
            left: len,
            word: [0; 8],
            at: 8,
        }
    }
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut i = 0;
        while i < n {
            if self.at == 8 {
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                self.word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                self.at = 0;
            }
            let take = (8 - self.at).min(n - i);
            buf[i..i + take].copy_from_slice(&self.word[self.at..self.at + take]);
            self.at += take;
            i += take;
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes image `name` with `files` files of `file_size` bytes each under
/// `/data` into `dir/<archive>.tar` (the layer is spooled in `dir` first).
pub fn write_large_image(
    dir: &Path,
    name: &str,
    files: usize,
    file_size: u64,
) -> Result<LargeImage> {
    let mut tar = tar::Builder::new(Spool::new_in(dir)?);
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o755);
    header.set_mtime(MTIME);
    header.set_size(0);
    tar.append_data(&mut header, "data/", std::io::empty())?;
    let mut generated = Vec::with_capacity(files);
    for i in 0..files {
        let file = GeneratedFile {
            path: format!("/data/f{i:04}.bin"),
            size: file_size,
            // Distinct and non-zero: (i + 1) times an odd constant.
            seed: (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        };
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_mtime(MTIME);
        header.set_size(file.size);
        tar.append_data(&mut header, &file.path[1..], file.content())?;
        generated.push(file);
    }
    let layer = tar.into_inner()?.finish(MediaType::ImageLayer)?;
    let diff_id = layer.digest().clone();
    let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["/data"]}}"#;
    let image = build_image(
        config,
        layer,
        &diff_id,
        &BTreeMap::new(),
        "pare-tests: a large generated image",
    )?;
    let archive = dir.join(format!("large-{files}x{file_size}.tar"));
    write_layout_tar(&archive, &image, name)?;
    Ok(LargeImage {
        archive,
        diff_id: diff_id.to_string(),
        files: generated,
        content_bytes: files as u64 * file_size,
    })
}

/// Writes a profile of image chain `chain_id` at `path` that reads every path
/// of `paths` (image paths, `/data/f0000.bin`), in order.
pub fn write_profile<'a>(
    path: &Path,
    chain_id: &str,
    paths: impl IntoIterator<Item = &'a String>,
) -> Result<()> {
    let recorder = Recorder::open(path, Some(chain_id.to_string()), Duration::from_millis(10))?;
    let handle = recorder.handle();
    for image_path in paths {
        let rel: Arc<Path> = Arc::from(Path::new(image_path.trim_start_matches('/')));
        handle.record(&rel, AccessKind::Read);
    }
    drop(handle);
    recorder.finish()?;
    Ok(())
}

/// What a child did: its output, how long it ran and its peak resident set.
#[derive(Debug)]
pub struct Measured {
    /// Exit status, stdout and stderr.
    pub output: Output,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
    /// Highest `VmHWM` seen in `/proc/<pid>/status` (polled every
    /// [`crate::poll::POLL_INTERVAL`]), in KiB.
    pub peak_rss_kib: u64,
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Runs `cmd` (stdout and stderr into temporary files), polling its peak
/// resident set size until it exits; killed after `timeout`.
pub fn run_measured(cmd: &mut Command, timeout: Duration) -> Result<Measured> {
    let mut peak = 0;
    let (output, elapsed) = run_watched(cmd, timeout, |pid| {
        if let Some(hwm) = vm_hwm_kib(pid) {
            peak = peak.max(hwm);
        }
    })?;
    Ok(Measured {
        output,
        elapsed,
        peak_rss_kib: peak,
    })
}

/// Checks that the regular files beneath `root` (a mounted image) are
/// exactly `files`, each byte for byte.
pub fn check_files(root: &Path, files: &[GeneratedFile]) -> Result<()> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root.join("data"))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            found.push(format!("/data/{}", entry.file_name().to_string_lossy()));
        }
    }
    found.sort();
    let want: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    ensure!(found == want, "files {found:?}, expected {want:?}");
    let (mut got, mut expected) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    for file in files {
        let path = root.join(&file.path[1..]);
        let mut reader =
            BufReader::new(File::open(&path).with_context(|| format!("open {}", path.display()))?);
        let mut content = file.content();
        let mut at = 0u64;
        loop {
            let n = content.read(&mut expected)?;
            let m = read_full(&mut reader, &mut got[..n.max(1)])?;
            ensure!(
                m == n && got[..n] == expected[..n],
                "{} differs from its generated content at or after byte {at}",
                file.path
            );
            if n == 0 {
                break;
            }
            at += n as u64;
        }
    }
    Ok(())
}

/// Reads until `buf` is full or the end; returns how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
