//! Whole-system bench of the view: a Debian rootfs in two layers served by kernel
//! overlayfs, fuse-overlayfs and `pare mount` (requests over io_uring and over
//! `/dev/fuse`), timed side by side.
//!
//! Cold runs get a fresh mount and dropped kernel caches each; warm runs share one
//! mount per file system after a warm-up run. Runs are interleaved round-robin
//! across the four mounts so drift on a noisy machine hits all of them alike.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::{Parser, ValueEnum};
use pare_benches::mounts::{Kind, Mount, PareCommand};
use pare_benches::stats::Summary;
use pare_benches::{Interrupt, drop_caches, layers, time, workspace_root};
use serde_json::json;

/// Time pare's view against kernel overlayfs and fuse-overlayfs (run as root).
#[derive(Debug, Parser)]
struct Args {
    /// Cold runs per workload and mount (each on a fresh mount, caches dropped).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Timed warm runs per mount, after one warm-up run.
    #[arg(long, default_value_t = 20)]
    warm_runs: usize,
    /// The pare binary [default: target/release/pare of this workspace].
    #[arg(long)]
    pare: Option<PathBuf>,
    /// An extra argument for `pare mount`, repeatable: --pare-arg=--no-passthrough.
    #[arg(long = "pare-arg", allow_hyphen_values = true)]
    pare_args: Vec<String>,
    /// Run only this workload, repeatable [default: all].
    #[arg(long, value_enum)]
    only: Vec<Workload>,
    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// What runs against each mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
enum Workload {
    /// `python3 -c 'import ...'` in a chroot, fresh mount and caches.
    ImportCold,
    /// The same import on a warmed mount.
    ImportWarm,
    /// `find / -xdev` in a chroot, printing size, mode, numeric owner and mtime of
    /// every entry (a stat of each; no user-name lookups, which would reopen
    /// /etc/passwd per entry and measure opens, already covered by the read).
    FindCold,
    /// `tar cf - . | wc -c` in the mount: every byte of every file.
    ReadCold,
}

const IMPORT: &str = "import json,sqlite3,hashlib,email,http.client,decimal,asyncio";

impl Workload {
    const ALL: [Workload; 4] = [
        Self::ImportCold,
        Self::ImportWarm,
        Self::FindCold,
        Self::ReadCold,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::ImportCold => "python import, cold",
            Self::ImportWarm => "python import, warm",
            Self::FindCold => "find + stat all, cold",
            Self::ReadCold => "read all bytes, cold",
        }
    }

    fn key(self) -> String {
        self.to_possible_value()
            .expect("no skipped variants")
            .get_name()
            .to_string()
    }

    /// The largest pare/overlayfs ratio of the median we aim for while
    /// learning.
    fn target(self) -> f64 {
        match self {
            Self::ImportCold | Self::ImportWarm => 1.1,
            Self::FindCold => 2.0,
            Self::ReadCold => 1.3,
        }
    }

    fn command(self, root: &Path) -> Command {
        let root = root.display();
        let script = match self {
            Self::ImportCold | Self::ImportWarm => format!("chroot '{root}' python3 -c '{IMPORT}'"),
            Self::FindCold => {
                format!("chroot '{root}' find / -xdev -printf '%s %m %U %G %T@\\n' | wc -l")
            }
            Self::ReadCold => format!("cd '{root}' && tar cf - . | wc -c"),
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        cmd
    }
}

/// Samples and outputs per workload and mount.
#[derive(Default)]
struct Results {
    samples: BTreeMap<(Workload, &'static str), Vec<Duration>>,
    outputs: BTreeMap<(Workload, &'static str), String>,
    pare_reads: Option<&'static str>,
}

impl Results {
    fn record(&mut self, w: Workload, kind: Kind, (elapsed, output): (Duration, String)) {
        self.samples
            .entry((w, kind.name()))
            .or_default()
            .push(elapsed);
        self.outputs.insert((w, kind.name()), output);
    }

    /// Notes how pare served reads, and checks that a pare mount served
    /// over the transport its kind names.
    fn note_pare_log(&mut self, kind: Kind, log: &str) -> anyhow::Result<()> {
        if let Some(transport) = kind.transport() {
            let line = match transport {
                "io-uring" => "view serves requests over io_uring",
                _ => "view serves requests over /dev/fuse",
            };
            ensure!(
                log.contains(line),
                "{} did not serve over {transport}; it logged:\n{log}",
                kind.name()
            );
        }
        if log.is_empty() || self.pare_reads.is_some() {
            return Ok(());
        }
        self.pare_reads = Some(if log.contains("passthrough refused") {
            "FUSE passthrough, pread for some files"
        } else if log.contains("file reads use FUSE passthrough") {
            "FUSE passthrough"
        } else if log.contains("file reads use pread") {
            "pread"
        } else {
            "unknown (no such line in the pare log)"
        });
        Ok(())
    }

    fn summary(&self, w: Workload, kind: Kind) -> Option<Summary> {
        self.samples.get(&(w, kind.name())).map(|s| Summary::of(s))
    }

    /// One mount's median over another's.
    fn ratio(&self, w: Workload, kind: Kind, other: Kind) -> Option<f64> {
        Some(self.summary(w, kind)?.median / self.summary(w, other)?.median)
    }
}

/// A scratch directory with one mount point per kind; removed without ever
/// recursing, so a mount left behind is never deleted through.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("pare-bench-view-{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let work = WorkDir(dir);
        for kind in Kind::ALL {
            fs::create_dir(work.mountpoint(kind))?;
        }
        Ok(work)
    }

    fn mountpoint(&self, kind: Kind) -> PathBuf {
        self.0.join(kind.name())
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        for entry in fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                fs::remove_dir(&path)
            } else {
                fs::remove_file(&path)
            };
        }
        if let Err(e) = fs::remove_dir(&self.0) {
            eprintln!("warning: cannot remove {}: {e}", self.0.display());
        }
    }
}

fn main() -> ExitCode {
    match bench(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("view bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: Args) -> anyhow::Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "run as root (mounts, chroot, drop_caches)"
    );
    ensure!(
        args.runs >= 1 && args.warm_runs >= 1,
        "--runs and --warm-runs must be at least 1"
    );
    let interrupt = Interrupt::install()?;
    let pare = PareCommand {
        binary: args
            .pare
            .clone()
            .unwrap_or_else(|| workspace_root().join("target/release/pare")),
        args: args.pare_args.clone(),
    };
    ensure!(
        pare.binary.exists(),
        "{} is missing; build it with cargo build --release -p pare",
        pare.binary.display()
    );
    let selected: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| args.only.is_empty() || args.only.contains(w))
        .collect();

    let rootfs = layers::debian_rootfs()?;
    let layers = layers::split(&rootfs)?;
    let lowerdirs = layers.lowerdirs();
    let work = WorkDir::create()?;
    let mount = |kind| Mount::new(kind, &lowerdirs, &work.mountpoint(kind), &work.0, &pare);
    let mut results = Results::default();

    let cold: Vec<Workload> = selected
        .iter()
        .copied()
        .filter(|&w| w != Workload::ImportWarm)
        .collect();
    for run in 1..=args.runs {
        for &w in &cold {
            eprintln!("cold run {run}/{}: {}", args.runs, w.label());
            for kind in Kind::ALL {
                interrupt.check()?;
                let m = mount(kind)?;
                drop_caches()?;
                let sample = time(&mut w.command(m.dir()))?;
                results.note_pare_log(kind, &m.unmount()?)?;
                results.record(w, kind, sample);
            }
        }
    }

    if selected.contains(&Workload::ImportWarm) {
        eprintln!("warm: {} runs per mount", args.warm_runs);
        let w = Workload::ImportWarm;
        let mounts = Kind::ALL
            .into_iter()
            .map(|kind| Ok((kind, mount(kind)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        for (_, m) in &mounts {
            time(&mut w.command(m.dir()))?;
        }
        for _ in 0..args.warm_runs {
            for (kind, m) in &mounts {
                interrupt.check()?;
                results.record(w, *kind, time(&mut w.command(m.dir()))?);
            }
        }
        for (kind, m) in mounts {
            results.note_pare_log(kind, &m.unmount()?)?;
        }
    }

    check_outputs(&results, &selected);
    let machine = machine();
    if args.json {
        println!("{:#}", to_json(&args, &machine, &results, &selected));
    } else {
        print_table(&args, &machine, &results, &selected);
    }
    Ok(())
}

/// Warns when the mounts disagree on the file count or byte count.
fn check_outputs(results: &Results, selected: &[Workload]) {
    for &w in selected
        .iter()
        .filter(|&&w| matches!(w, Workload::FindCold | Workload::ReadCold))
    {
        let outputs: Vec<String> = Kind::ALL
            .iter()
            .map(|k| {
                results
                    .outputs
                    .get(&(w, k.name()))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        if outputs.iter().any(|o| *o != outputs[0]) {
            eprintln!(
                "warning: {} output differs between mounts: {outputs:?}",
                w.label()
            );
        }
    }
}

struct Machine {
    kernel: String,
    cpus: usize,
    date: String,
}

fn machine() -> Machine {
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output();
    Machine {
        kernel: rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        date: date
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
    }
}

fn print_table(args: &Args, machine: &Machine, results: &Results, selected: &[Workload]) {
    println!(
        "pare view bench, {}: kernel {}, {} CPUs, {} cold runs, {} warm runs, pare mount {}",
        machine.date,
        machine.kernel,
        machine.cpus,
        args.runs,
        args.warm_runs,
        args.pare_args.join(" ")
    );
    println!(
        "pare file reads: {}",
        results.pare_reads.unwrap_or("unknown")
    );
    println!();
    print!("{:<24}", "seconds: median (min)");
    for kind in Kind::ALL {
        print!("{:>18}", kind.name());
    }
    println!();
    for &w in selected {
        print!("{:<24}", w.label());
        for kind in Kind::ALL {
            let cell = results
                .summary(w, kind)
                .map(|s| format!("{:.3} ({:.3})", s.median, s.min));
            print!("{:>18}", cell.unwrap_or_default());
        }
        println!();
    }
    println!();
    println!(
        "{:<24}{:>24}{:>24}{:>24}{:>24}{:>18}",
        "ratios of medians",
        "io-uring/overlayfs",
        "io-uring/fuse-ovl",
        "dev-fuse/overlayfs",
        "dev-fuse/fuse-ovl",
        "io-uring/dev-fuse"
    );
    let verdict = |ratio: f64, target: f64, strict: bool| {
        let met = ratio < target || (!strict && ratio == target);
        let op = if strict { "<" } else { "<=" };
        let met = if met { "met" } else { "MISSED" };
        format!("{ratio:.2} ({op} {target}: {met})")
    };
    for &w in selected {
        print!("{:<24}", w.label());
        for kind in Kind::PARE {
            let vs_ovl = results
                .ratio(w, kind, Kind::Overlayfs)
                .map(|r| verdict(r, w.target(), false));
            let vs_fovl = results
                .ratio(w, kind, Kind::FuseOverlayfs)
                .map(|r| verdict(r, 1.0, true));
            print!(
                "{:>24}{:>24}",
                vs_ovl.unwrap_or_default(),
                vs_fovl.unwrap_or_default()
            );
        }
        let transports = results
            .ratio(w, Kind::Pare, Kind::PareDevFuse)
            .map(|r| format!("{r:.2}"));
        println!("{:>18}", transports.unwrap_or_default());
    }
}

fn to_json(
    args: &Args,
    machine: &Machine,
    results: &Results,
    selected: &[Workload],
) -> serde_json::Value {
    let workloads: Vec<_> = selected
        .iter()
        .map(|&w| {
            let mounts: serde_json::Map<_, _> = Kind::ALL
                .iter()
                .filter_map(|&k| {
                    let s = results.summary(w, k)?;
                    let samples: Vec<f64> = results.samples[&(w, k.name())].iter().map(Duration::as_secs_f64).collect();
                    Some((k.name().to_string(), json!({"median_s": s.median, "min_s": s.min, "samples_s": samples})))
                })
                .collect();
            let pare: serde_json::Map<_, _> = Kind::PARE
                .iter()
                .map(|&k| {
                    let vs_ovl = results.ratio(w, k, Kind::Overlayfs);
                    let vs_fovl = results.ratio(w, k, Kind::FuseOverlayfs);
                    let met = vs_ovl.is_some_and(|r| r <= w.target()) && vs_fovl.is_some_and(|r| r < 1.0);
                    (
                        k.transport().expect("a pare kind").to_string(),
                        json!({"vs_overlayfs": vs_ovl, "vs_fuse_overlayfs": vs_fovl, "targets_met": met}),
                    )
                })
                .collect();
            json!({
                "workload": w.key(),
                "label": w.label(),
                "mounts": mounts,
                "target_pare_vs_overlayfs": w.target(),
                "pare": pare,
                "io_uring_vs_dev_fuse": results.ratio(w, Kind::Pare, Kind::PareDevFuse),
            })
        })
        .collect();
    json!({
        "bench": "view",
        "date": machine.date,
        "kernel": machine.kernel,
        "cpus": machine.cpus,
        "cold_runs": args.runs,
        "warm_runs": args.warm_runs,
        "pare_args": args.pare_args,
        "pare_reads": results.pare_reads,
        "workloads": workloads,
    })
}
