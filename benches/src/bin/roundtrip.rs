//! Micro-bench of the view's round trips: the time of one LOOKUP (the first
//! stat of a name) and of one OPEN (an open and close of a file) through
//! `pare mount` over io_uring and over `/dev/fuse`, with kernel overlayfs as
//! the floor (no daemon at all), side by side in one run.
//!
//! Every round stats names never looked up before on each mount (so each
//! stat is one LOOKUP), then opens and closes one file as often; rounds
//! alternate the mounts so drift hits all alike. Reported: the median over
//! rounds of the mean time per operation, and the io-uring/dev-fuse ratio.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use pare_benches::mounts::{Kind, Mount, PareCommand};
use pare_benches::stats::Summary;
use pare_benches::{Interrupt, workspace_root};
use serde_json::json;

/// Time single LOOKUP and OPEN round trips of the view, over both transports.
#[derive(Debug, Parser)]
struct Args {
    /// Rounds (each on every mount).
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// Operations of each kind per round and mount.
    #[arg(long, default_value_t = 2000)]
    ops: usize,
    /// The pare binary [default: target/release/pare of this workspace].
    #[arg(long)]
    pare: Option<PathBuf>,
    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

const KINDS: [Kind; 3] = [Kind::Overlayfs, Kind::Pare, Kind::PareDevFuse];

fn main() -> ExitCode {
    match bench(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("roundtrip bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A scratch directory under /var/tmp (a disk, as layers are), removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        for kind in KINDS {
            let _ = fs::remove_dir(self.0.join(kind.name()));
        }
        let _ = fs::remove_dir_all(self.0.join("layer"));
        let _ = fs::remove_dir(self.0.join("base"));
        for entry in fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let _ = fs::remove_file(entry.path());
        }
        let _ = fs::remove_dir(&self.0);
    }
}

fn bench(args: Args) -> anyhow::Result<()> {
    ensure!(rustix::process::geteuid().is_root(), "run as root (mounts)");
    ensure!(
        args.rounds >= 1 && args.ops >= 1,
        "--rounds and --ops must be at least 1"
    );
    pare_fs::view::uring_offered().map_err(anyhow::Error::msg)?;
    let interrupt = Interrupt::install()?;
    let pare = PareCommand {
        binary: args
            .pare
            .clone()
            .unwrap_or_else(|| workspace_root().join("target/release/pare")),
        args: vec!["--log-level".into(), "info".into()],
    };
    ensure!(
        pare.binary.exists(),
        "{} is missing; build it with cargo build --release -p pare",
        pare.binary.display()
    );
    let scratch = Scratch(PathBuf::from(format!(
        "/var/tmp/pare-bench-roundtrip-{}",
        std::process::id()
    )));
    let layer = scratch.0.join("layer");
    let names = args.rounds * args.ops;
    fs::create_dir_all(layer.join("many"))
        .with_context(|| format!("cannot create {}", layer.display()))?;
    for i in 0..names {
        fs::write(layer.join("many").join(format!("f{i}")), b"")?;
    }
    fs::write(layer.join("file"), vec![7u8; 4096])?;

    // Read-only overlayfs wants two lower layers: an empty one below.
    let base = scratch.0.join("base");
    fs::create_dir_all(&base)?;
    let lowerdirs = format!("{}:{}", layer.display(), base.display());
    let mut mounts = Vec::new();
    for kind in KINDS {
        let dir = scratch.0.join(kind.name());
        fs::create_dir_all(&dir)?;
        mounts.push((kind, Mount::new(kind, &lowerdirs, &dir, &scratch.0, &pare)?));
    }

    let mut lookups: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
    let mut opens: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
    for round in 0..args.rounds {
        eprintln!("round {}/{}", round + 1, args.rounds);
        for (i, (_, m)) in mounts.iter().enumerate() {
            interrupt.check()?;
            let first = round * args.ops;
            lookups[i].push(per_op(args.ops, || {
                (first..first + args.ops)
                    .try_for_each(|n| stat(&m.dir().join("many").join(format!("f{n}"))))
            })?);
            let file = m.dir().join("file");
            opens[i].push(per_op(args.ops, || {
                (0..args.ops).try_for_each(|_| fs::File::open(&file).map(drop))
            })?);
        }
    }
    for (kind, m) in mounts {
        let log = m.unmount()?;
        if let Some(transport) = kind.transport() {
            let line = if transport == "io-uring" {
                "view serves requests over io_uring"
            } else {
                "view serves requests over /dev/fuse"
            };
            ensure!(
                log.contains(line),
                "{} did not serve over {transport}:\n{log}",
                kind.name()
            );
        }
    }

    let us = |samples: &[Duration]| Summary::of(samples).median * 1e6;
    let rows: Vec<(&str, [f64; 3])> = vec![
        (
            "LOOKUP (first stat of a name)",
            std::array::from_fn(|i| us(&lookups[i])),
        ),
        (
            "OPEN (open + close)",
            std::array::from_fn(|i| us(&opens[i])),
        ),
    ];
    if args.json {
        let out: Vec<_> = rows
            .iter()
            .map(|(label, v)| {
                json!({
                    "op": label,
                    "overlayfs_us": v[0],
                    "io_uring_us": v[1],
                    "dev_fuse_us": v[2],
                    "io_uring_vs_dev_fuse": v[1] / v[2],
                })
            })
            .collect();
        println!(
            "{:#}",
            json!({"bench": "roundtrip", "rounds": args.rounds, "ops": args.ops, "results": out})
        );
        return Ok(());
    }
    println!(
        "pare round-trip bench: {} rounds x {} operations per mount; µs per operation, median over rounds",
        args.rounds, args.ops
    );
    println!(
        "{:<32}{:>12}{:>12}{:>12}{:>20}",
        "", "overlayfs", "io-uring", "dev-fuse", "io-uring/dev-fuse"
    );
    for (label, v) in rows {
        println!(
            "{label:<32}{:>12.2}{:>12.2}{:>12.2}{:>20.2}",
            v[0],
            v[1],
            v[2],
            v[1] / v[2]
        );
    }
    Ok(())
}

fn stat(path: &Path) -> std::io::Result<()> {
    fs::symlink_metadata(path).map(drop)
}

/// Runs `f`, which does `ops` operations, and returns the mean time of one.
fn per_op(ops: usize, f: impl FnOnce() -> std::io::Result<()>) -> anyhow::Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed() / ops as u32)
}
