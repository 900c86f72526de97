//! Cold-start bench of a minimized image against its original: the Debian
//! web service image is profiled under pare-snapshotter and compacted (timed),
//! both images are pushed to a private local registry, and each is then
//! pulled and started from nothing, several times, interleaved.
//!
//! Every cold start gets a fresh containerd (new root: empty content store,
//! no snapshots) on the stock overlayfs snapshotter, as on the next node,
//! which needs no pare; the kernel caches are dropped before the timed part:
//! `ctr images pull` (fetch and unpack) and `ctr run --detach --net-host`
//! until the service's first `GET /health` answer.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use pare_benches::coldrun::{ColdStart, cold_start};
use pare_benches::imagesize::{ImageSize, image_size};
use pare_benches::machine::{Machine, load_average};
use pare_benches::minimize::{self, Compaction, NodePaths};
use pare_benches::node::Node;
use pare_benches::registry::Registry;
use pare_benches::scratch::Scratch;
use pare_benches::stats::Summary;
use pare_benches::{Interrupt, workspace_root};
use pare_tests::debian;
use pare_tests::prereq::which;
use serde_json::{Value, json};

/// Time pull + start of a minimized image against its original, from cold (run as root).
#[derive(Debug, Parser)]
struct Args {
    /// Cold starts per image (interleaved).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// `GET /items` requests sent to the service while it is profiled.
    #[arg(long, default_value_t = 3)]
    requests: usize,
    /// The directory of the `pare` and `pare-snapshotter` binaries [default: target/release of this workspace].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// The two images, in the order runs are interleaved and printed.
const IMAGES: [&str; 2] = ["original", "minimized"];

/// The smallest original/minimized ratio of the median total cold start we aim for.
const TARGET_SPEEDUP: f64 = 5.0;
/// The smallest original/minimized ratio of the compressed sizes we aim for.
const TARGET_SHRINK: f64 = 10.0;

/// What the set-up produced: the compaction and, per image, its registry
/// reference and size.
struct Prepared {
    compaction: Compaction,
    references: [String; 2],
    sizes: [ImageSize; 2],
    /// The original's answer to `GET /items`, which the minimized one must give too.
    items: String,
}

fn main() -> ExitCode {
    match bench(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coldstart bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: Args) -> anyhow::Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "run as root (containerd, mounts, drop_caches)"
    );
    ensure!(args.runs >= 1, "--runs must be at least 1");
    let bin_dir = args
        .bin_dir
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release"));
    for bin in ["pare", "pare-snapshotter"] {
        ensure!(
            bin_dir.join(bin).exists(),
            "{} is missing; build it with cargo build --release --workspace",
            bin_dir.join(bin).display()
        );
    }
    for tool in ["containerd", "ctr", "runc", "docker-registry"] {
        ensure!(
            which(tool).is_some(),
            "{tool} is not installed (scripts/setup.sh installs it)"
        );
    }
    let interrupt = Interrupt::install()?;
    let machine = Machine::describe(&["containerd", "runc", "docker-registry"]);
    // Dropped last: the registry's storage and every run's containerd live here.
    let scratch = Scratch::create("coldstart")?;

    eprintln!("building the Debian web service image (debootstrap on first use, cached)");
    let base = debian::dir_layer(&debian::rootfs()?)?;
    let archive = scratch.path().join("web.tar");
    debian::web_image(&base)?.write_oci_archive(debian::WEB, &archive)?;
    drop(base);
    interrupt.check()?;

    let registry = Registry::start(&scratch.path().join("registry"))?;
    let prepared = prepare(&args, &bin_dir, &archive, &registry, &interrupt)?;

    let mut samples: [Vec<ColdStart>; 2] = [Vec::new(), Vec::new()];
    for run in 1..=args.runs {
        for (i, name) in IMAGES.iter().enumerate() {
            interrupt.check()?;
            let dir = scratch.path().join(format!("cold-{run}-{name}"));
            let sample = cold_start(&dir, &prepared.references[i], &interrupt)?;
            ensure!(
                sample.items == prepared.items,
                "the {name} image answers GET /items differently: {:?}",
                sample.items
            );
            eprintln!(
                "run {run}/{}: {name}: pull {:.2} s (fetch {:.2} s), ready {:.2} s",
                args.runs,
                sample.pull.as_secs_f64(),
                sample.fetch.as_secs_f64(),
                sample.ready.as_secs_f64()
            );
            samples[i].push(sample);
        }
    }
    drop(registry);

    let report = Report {
        args: &args,
        machine: &machine,
        prepared: &prepared,
        samples: &samples,
    };
    if args.json {
        println!("{:#}", report.to_json());
    } else {
        report.print();
    }
    Ok(())
}

/// Profiles and compacts the image on a pare node, measures both images and
/// pushes them to `registry`; the node is gone when this returns.
fn prepare(
    args: &Args,
    bin_dir: &Path,
    archive: &Path,
    registry: &Registry,
    interrupt: &Interrupt,
) -> anyhow::Result<Prepared> {
    eprintln!("profiling {} under pare-snapshotter", debian::WEB);
    let node = Node::start(&bin_dir.join("pare-snapshotter"))?;
    let ctr = node.ctr();
    ctr.import(archive, "pare")?;
    let idle = node.backend();
    let items = minimize::profile_web(&node, debian::WEB, args.requests)?;
    // The view is unmounted (and the profile flushed) with its last container.
    node.settle(idle, Duration::from_secs(60))
        .context("pare did not release the image's view")?;
    interrupt.check()?;

    eprintln!("pare compact {}", debian::WEB);
    let paths = NodePaths::of(&node);
    let compaction = minimize::compact(&bin_dir.join("pare"), &paths, debian::WEB)?;
    eprintln!("{}", compaction.summary);
    let locals = [debian::WEB.to_string(), compaction.image.clone()];
    let sizes = [image_size(&ctr, &locals[0])?, image_size(&ctr, &locals[1])?];

    let references = [
        format!("{}/pare/web:v1", registry.host()),
        format!("{}/pare/web:v1-pare", registry.host()),
    ];
    for (local, remote) in locals.iter().zip(&references) {
        interrupt.check()?;
        eprintln!("pushing {local} as {remote}");
        ctr.ctr(&["images", "push", "--plain-http", remote, local])?;
    }
    Ok(Prepared {
        compaction,
        references,
        sizes,
        items,
    })
}

/// The results, printed as a table or as JSON.
struct Report<'a> {
    args: &'a Args,
    machine: &'a Machine,
    prepared: &'a Prepared,
    samples: &'a [Vec<ColdStart>; 2],
}

/// One timed part of a cold start.
type Part = fn(&ColdStart) -> Duration;

/// The timed parts of a cold start, in table order: label, JSON key, part.
const PARTS: [(&str, &str, Part); 5] = [
    ("pull + unpack", "pull", |s| s.pull),
    ("  of which fetch", "fetch", |s| s.fetch),
    ("  of which unpack", "unpack", ColdStart::unpack),
    ("start to ready", "ready", |s| s.ready),
    ("total", "total", ColdStart::total),
];

impl Report<'_> {
    fn summary(&self, image: usize, part: Part) -> Summary {
        let durations: Vec<Duration> = self.samples[image].iter().map(part).collect();
        Summary::of(&durations)
    }

    /// original/minimized of the median total.
    fn speedup(&self) -> f64 {
        let total = PARTS[4].2;
        self.summary(0, total).median / self.summary(1, total).median
    }

    /// original/minimized of the compressed sizes.
    fn shrink(&self) -> f64 {
        let [original, minimized] = &self.prepared.sizes;
        original.compressed as f64 / minimized.compressed as f64
    }

    /// Original file bytes compacted per second of `pare compact` wall time.
    fn throughput(&self) -> f64 {
        let c = &self.prepared.compaction;
        c.summary.file_bytes.total as f64 / c.wall.as_secs_f64()
    }

    fn print(&self) {
        let p = self.prepared;
        let c = &p.compaction;
        let mb = |b: u64| b as f64 / 1e6;
        println!("pare cold-start bench, {}", self.machine.summary());
        println!(
            "{} cold starts per image, interleaved; each on a fresh containerd (overlayfs), caches dropped",
            self.args.runs
        );
        println!();
        println!(
            "pare compact: {:.2} s wall, {:.1} MB/s of original file bytes; kept {} of {} files, {:.1} of {:.1} MB",
            c.wall.as_secs_f64(),
            mb(self.throughput() as u64),
            c.summary.files.kept,
            c.summary.files.total,
            mb(c.summary.file_bytes.kept),
            mb(c.summary.file_bytes.total),
        );
        println!();
        println!(
            "{:<24}{:>18}{:>18}{:>20}",
            "", "original", "minimized", "minimized/original"
        );
        let [o, m] = &p.sizes;
        let row = |label: &str, a: f64, b: f64| {
            println!("{label:<24}{a:>18.1}{b:>18.1}{:>20.3}", b / a);
        };
        row("layers", o.layers as f64, m.layers as f64);
        row("compressed, MB", mb(o.compressed), mb(m.compressed));
        row("uncompressed, MB", mb(o.uncompressed), mb(m.uncompressed));
        println!("seconds: median (min)");
        for (label, _, part) in PARTS {
            let (a, b) = (self.summary(0, part), self.summary(1, part));
            println!(
                "{label:<24}{:>18}{:>18}{:>20.3}",
                format!("{:.3} ({:.3})", a.median, a.min),
                format!("{:.3} ({:.3})", b.median, b.min),
                b.median / a.median
            );
        }
        println!();
        let verdict = |met: bool| if met { "met" } else { "MISSED" };
        println!(
            "cold start, original/minimized total: {:.2}x (target >= {TARGET_SPEEDUP}: {})",
            self.speedup(),
            verdict(self.speedup() >= TARGET_SPEEDUP)
        );
        println!(
            "compressed size, original/minimized: {:.2}x (target >= {TARGET_SHRINK}: {})",
            self.shrink(),
            verdict(self.shrink() >= TARGET_SHRINK)
        );
        println!("load average at the end: {}", load_average());
    }

    fn to_json(&self) -> Value {
        let p = self.prepared;
        let c = &p.compaction;
        let images: serde_json::Map<String, Value> = IMAGES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut image = json!({
                    "reference": p.references[i],
                    "layers": p.sizes[i].layers,
                    "compressed_bytes": p.sizes[i].compressed,
                    "uncompressed_bytes": p.sizes[i].uncompressed,
                });
                for (_, key, part) in PARTS {
                    let s = self.summary(i, part);
                    let samples: Vec<f64> = self.samples[i]
                        .iter()
                        .map(|x| part(x).as_secs_f64())
                        .collect();
                    image[format!("{key}_s")] =
                        json!({"median": s.median, "min": s.min, "samples": samples});
                }
                (name.to_string(), image)
            })
            .collect();
        json!({
            "bench": "coldstart",
            "machine": self.machine.to_json(),
            "runs": self.args.runs,
            "compaction": {
                "wall_s": c.wall.as_secs_f64(),
                "original_file_bytes_per_s": self.throughput(),
                "files_kept": c.summary.files.kept,
                "files_total": c.summary.files.total,
                "file_bytes_kept": c.summary.file_bytes.kept,
                "file_bytes_total": c.summary.file_bytes.total,
                "layer_compressed_bytes": c.summary.layer_compressed_bytes,
                "summary": c.summary.to_string(),
            },
            "images": images,
            "total_speedup_original_over_minimized": self.speedup(),
            "compressed_shrink_original_over_minimized": self.shrink(),
            "targets": {
                "total_speedup_at_least": TARGET_SPEEDUP,
                "compressed_shrink_at_least": TARGET_SHRINK,
                "speedup_met": self.speedup() >= TARGET_SPEEDUP,
                "shrink_met": self.shrink() >= TARGET_SHRINK,
            },
            "load_average_at_end": load_average(),
        })
    }
}
