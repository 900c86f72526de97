//! Whole-system bench of pare-snapshotter: the wall time of `ctr run --rm` on
//! containerd's overlayfs snapshotter and on pare, side by side, in one
//! private containerd that has both; pare in each of learn, audit and enforce
//! mode, on variants of the images that differ only by a tiny top layer (a
//! mode is set per image chain), profiled in learn by one untimed run each
//! before their modes are set; and a second pare-snapshotter on which the
//! images are settled (two untimed runs each settle them there), so its
//! containers get a plain overlay.
//!
//! Cold runs drop the kernel caches first and start with no pare view mounted
//! (the run mounts it); warm runs repeat on a warm page cache (each still
//! mounts a view, as the image has no other container); "in use" runs have a
//! detached container of the image keep its view mounted. Before every run
//! the bench waits until containerd's garbage collection has removed the
//! previous container's snapshot, so nothing runs behind a timed run. Runs
//! are interleaved round-robin so drift hits every column alike. A
//! diagnostic row times `ctr snapshots prepare` alone, where pare mounts the
//! view.

mod cases;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use clap::Parser;
use pare_benches::images::{self, Archives, BenchImage, MODES};
use pare_benches::machine::Machine;
use pare_benches::node::{Backend, Node, Snapshotter};
use pare_benches::stats::Summary;
use pare_benches::{Interrupt, drop_caches, layers, time, workspace_root};
use pare_fs::policy::Mode;

use cases::{Column, State, Workload, cases, mounted_column};
use report::{Ratio, print_table, to_json};

/// Time `ctr run --rm` on pare-snapshotter against containerd's overlayfs (run as root).
#[derive(Debug, Parser)]
struct Args {
    /// Cold runs per case and column (caches dropped, no view mounted).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Timed warm runs per case and column, after one warm-up run.
    #[arg(long, default_value_t = 15)]
    warm_runs: usize,
    /// The pare-snapshotter binary [default: target/release/pare-snapshotter of this workspace].
    #[arg(long)]
    snapshotter: Option<PathBuf>,
    /// The pare CLI (sets the modes) [default: target/release/pare of this workspace].
    #[arg(long)]
    pare: Option<PathBuf>,
    /// Copy the logs of pare-snapshotter and containerd into this directory at the end.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// How long containerd's garbage collection may take to clean up after a run.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

type Case = (Workload, State, Column);

/// The running bench: the node, the samples, and the views pare mounted per
/// state and column.
struct Bench {
    node: Node,
    interrupt: Interrupt,
    baseline: Backend,
    /// The pare CLI.
    pare: PathBuf,
    /// Parents of the prepared snapshots: the top chain ID of the python
    /// variant each column runs.
    python_chains: BTreeMap<Column, String>,
    runs: usize,
    samples: BTreeMap<Case, Vec<Duration>>,
    /// What each workload printed in its first run; every run prints the same.
    outputs: BTreeMap<Workload, String>,
    view_mounts: BTreeMap<(State, Column), usize>,
    /// Misses journaled after all runs, per image and judged column.
    misses: BTreeMap<(BenchImage, Column), usize>,
    /// Views the settling snapshotter mounted while its images learned,
    /// before they settled (none may follow).
    settled_views: usize,
}

impl Bench {
    /// One timed command, from spawn to exit, recorded when `record`; fails
    /// when it fails or prints other than the workload's first run did.
    fn run(&mut self, case: Case, record: bool) -> anyhow::Result<()> {
        let (w, state, column) = case;
        self.interrupt.check()?;
        self.node
            .settle(self.baseline, SETTLE_TIMEOUT)
            .context("containerd did not clean up after the previous container")?;
        if state == State::Cold {
            drop_caches()?;
        }
        self.runs += 1;
        let id = format!("bench-{}", self.runs);
        let mut command = w.command(&self.node, &id, column, &self.python_chains[&column]);
        let (elapsed, output) = time(&mut command)
            .with_context(|| format!("{} {} on {}", w.label(), state.label(), column.label()))?;
        w.clean(&self.node.ctr(), &id, column)?;
        let first = self.outputs.entry(w).or_insert_with(|| output.clone());
        ensure!(
            *first == output,
            "{} {} on {} printed {output:?}, the first run {first:?}",
            w.label(),
            state.label(),
            column.label()
        );
        if record {
            self.samples.entry(case).or_default().push(elapsed);
        }
        Ok(())
    }

    /// Profiles every pare variant in learn (the default) with one untimed
    /// run of its workload and one of `sleep 0` (the in-use phase's pin),
    /// then sets the audit and enforce variants to their modes: `pare mode`
    /// freezes each allowed set from that profile.
    fn profile(&mut self) -> anyhow::Result<()> {
        let ctr = self.node.ctr();
        for column in Column::PARE {
            for w in Workload::CONTAINERS {
                eprintln!("profiling {} in learn", w.image().reference(column.mode()));
                self.run((w, State::Warm, column), false)?;
                self.node.settle(self.baseline, SETTLE_TIMEOUT)?;
                let id = format!("profile-pin-{}-{}", w.key(), column.key());
                ctr.run(
                    &w.image().reference(column.mode()),
                    &id,
                    "pare",
                    &["sleep", "0"],
                )?;
                self.node.settle(self.baseline, SETTLE_TIMEOUT)?;
            }
        }
        for column in [Column::Audit, Column::Enforce] {
            for image in BenchImage::ALL {
                let reference = image.reference(column.mode());
                let said = self
                    .node
                    .pare(&self.pare, &["mode", &reference, column.mode().name()])?;
                eprintln!("{}", said.trim());
            }
        }
        self.settle_images()
    }

    /// Runs each workload twice on the settling snapshotter, which settles
    /// its images (the first run grows the profile, the second does not:
    /// one container without growth), and checks that they are.
    fn settle_images(&mut self) -> anyhow::Result<()> {
        for w in Workload::CONTAINERS {
            eprintln!(
                "settling {} on pare-settled",
                w.image().reference(Mode::Learn)
            );
            for _ in 0..2 {
                self.run((w, State::Warm, Column::Settled), false)?;
                self.node.settle(self.baseline, SETTLE_TIMEOUT)?;
            }
        }
        self.node.settle(self.baseline, SETTLE_TIMEOUT)?;
        // The count is written as the snapshot goes: poll briefly.
        let root = self.node.settled_root().to_path_buf();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = std::process::Command::new(&self.pare)
                .args(["profile", "list", "--json", "--root"])
                .arg(&root)
                .output()?;
            ensure!(out.status.success(), "pare profile list failed: {out:?}");
            let listed: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            let profiles = listed
                .as_array()
                .context("pare profile list --json: no array")?;
            let settled = profiles.iter().filter(|p| p["state"] == "settled").count();
            if settled == Workload::CONTAINERS.len() && profiles.len() == settled {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "the images did not settle on pare-settled: {listed}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.settled_views = self.settled_view_mounts();
        Ok(())
    }

    /// Views the settling snapshotter has mounted so far (from its log).
    fn settled_view_mounts(&self) -> usize {
        self.node
            .settled_log()
            .lines()
            .filter(|l| l.contains("view mounted") && l.contains("profiled"))
            .count()
    }

    /// Runs `state` for every workload and column: `warm_up` untimed runs
    /// each, then `runs` timed rounds; counts the views pare mounted.
    fn phase(&mut self, state: State, warm_up: usize, runs: usize) -> anyhow::Result<()> {
        let mounted_before = self.view_mounts_so_far();
        for _ in 0..warm_up {
            for case in cases(state) {
                self.run(case, false)?;
            }
        }
        for n in 1..=runs {
            eprintln!("{} run {n}/{runs}", state.label());
            for case in cases(state) {
                self.run(case, true)?;
            }
        }
        self.node.settle(self.baseline, SETTLE_TIMEOUT)?;
        let mounted = self.view_mounts_so_far();
        for column in Column::PARE {
            let n = mounted.get(&column).unwrap_or(&0) - mounted_before.get(&column).unwrap_or(&0);
            self.view_mounts.insert((state, column), n);
        }
        Ok(())
    }

    /// The in-use phase: one detached container per image and column keeps
    /// the image's view mounted during the runs.
    fn in_use_phase(&mut self, runs: usize) -> anyhow::Result<()> {
        let idle = self.baseline;
        let ctr = self.node.ctr();
        let mut pins = Vec::new();
        for w in Workload::CONTAINERS {
            for column in Column::ALL {
                let id = format!("pin-{}-{}", w.key(), column.key());
                let image = w.image().reference(column.mode());
                let snapshotter = column.snapshotter().name();
                ctr.run_detached(&image, &id, snapshotter, &["sleep", "infinity"])?;
                pins.push(id);
            }
        }
        self.baseline = self.node.backend();
        let result = self.phase(State::InUse, 1, runs);
        for id in &pins {
            ctr.remove(id)?;
        }
        self.baseline = idle;
        result?;
        self.node.settle(idle, SETTLE_TIMEOUT)
    }

    /// The views pare mounted so far, per column (from its log).
    fn view_mounts_so_far(&self) -> BTreeMap<Column, usize> {
        let log = self.node.pare_log();
        // pare-fs and the snapshotter each log a "view mounted" line; the
        // snapshotter's names whether it is profiled.
        let mut counts = BTreeMap::new();
        for line in log.lines() {
            if !(line.contains("view mounted") && line.contains("profiled")) {
                continue;
            }
            if let Some(column) = mounted_column(line) {
                *counts.entry(column).or_default() += 1;
            }
        }
        counts
    }

    /// Counts what `pare misses` lists for the audit and enforce variants.
    fn count_misses(&mut self) -> anyhow::Result<()> {
        for image in BenchImage::ALL {
            for column in [Column::Audit, Column::Enforce] {
                let reference = image.reference(column.mode());
                let out = self
                    .node
                    .pare(&self.pare, &["misses", "--json", &reference])?;
                let listed: serde_json::Value = serde_json::from_str(&out)
                    .with_context(|| format!("pare misses --json {reference} printed {out}"))?;
                let Some(misses) = listed["misses"].as_array() else {
                    bail!("pare misses --json {reference} printed no misses array: {out}");
                };
                self.misses.insert((image, column), misses.len());
            }
        }
        Ok(())
    }

    fn summary(&self, case: Case) -> Option<Summary> {
        self.samples.get(&case).map(|s| Summary::of(s))
    }

    /// `column`'s median over `base`'s.
    fn ratio(&self, w: Workload, state: State, column: Column, base: Column) -> Option<f64> {
        let median = self.summary((w, state, column))?.median;
        Some(median / self.summary((w, state, base))?.median)
    }

    /// The ratios reported per row, with their targets: pare/overlayfs,
    /// audit/learn, enforce/learn, settled/overlayfs.
    fn ratios(&self, w: Workload, state: State) -> [Ratio; 4] {
        let judged = state.judged_target().filter(|_| w.has_target());
        [
            Ratio {
                key: "pare_vs_overlayfs",
                heading: "pare/overlayfs",
                value: self.ratio(w, state, Column::Learn, Column::Overlayfs),
                target: w.has_target().then_some(state.target()),
            },
            Ratio {
                key: "audit_vs_learn",
                heading: "audit/learn",
                value: self.ratio(w, state, Column::Audit, Column::Learn),
                target: judged,
            },
            Ratio {
                key: "enforce_vs_learn",
                heading: "enforce/learn",
                value: self.ratio(w, state, Column::Enforce, Column::Learn),
                target: judged,
            },
            Ratio {
                key: "settled_vs_overlayfs",
                heading: "settled/overlayfs",
                value: self.ratio(w, state, Column::Settled, Column::Overlayfs),
                target: w.has_target().then_some(state.settled_target()),
            },
        ]
    }
}

fn main() -> ExitCode {
    match bench(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("containers bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `path`, or `target/release/<name>` of this workspace; it must exist.
fn release_bin(path: Option<&Path>, name: &str) -> anyhow::Result<PathBuf> {
    let bin = path.map_or_else(
        || workspace_root().join("target/release").join(name),
        Path::to_path_buf,
    );
    ensure!(
        bin.exists(),
        "{} is missing; build it with cargo build --release --workspace",
        bin.display()
    );
    Ok(bin)
}

/// Imports every variant for pare, and the learn variant (the one
/// overlayfs runs) for overlayfs too.
fn import(node: &Node, archives: &Archives, interrupt: &Interrupt) -> anyhow::Result<()> {
    for image in BenchImage::ALL {
        for mode in MODES {
            let archive = archives.archive(image, mode);
            for s in Snapshotter::ALL {
                if s != Snapshotter::Pare && mode != Mode::Learn {
                    continue;
                }
                interrupt.check()?;
                eprintln!("importing {} for {}", archive.display(), s.name());
                node.ctr().import(&archive, s.name())?;
            }
        }
    }
    Ok(())
}

fn bench(args: Args) -> anyhow::Result<()> {
    ensure!(
        rustix::process::geteuid().is_root(),
        "run as root (containerd, mounts, drop_caches)"
    );
    ensure!(
        args.runs >= 1 && args.warm_runs >= 1,
        "--runs and --warm-runs must be at least 1"
    );
    let interrupt = Interrupt::install()?;
    let bin = release_bin(args.snapshotter.as_deref(), "pare-snapshotter")?;
    let pare = release_bin(args.pare.as_deref(), "pare")?;
    let machine = Machine::describe(&["containerd", "runc"]);
    let archives = images::archives(&layers::debian_rootfs()?)?;
    let mut python_chains = BTreeMap::new();
    for column in Column::ALL {
        let archive = archives.archive(BenchImage::Python, column.mode());
        python_chains.insert(column, images::top_chain_id(&archive)?.to_string());
    }

    let node = Node::start(&bin)?;
    import(&node, &archives, &interrupt)?;
    // Let the imports' garbage settle before taking the idle state.
    std::thread::sleep(Duration::from_secs(1));
    let mut bench = Bench {
        baseline: node.backend(),
        pare,
        python_chains,
        node,
        interrupt,
        runs: 0,
        samples: BTreeMap::new(),
        outputs: BTreeMap::new(),
        view_mounts: BTreeMap::new(),
        misses: BTreeMap::new(),
        settled_views: 0,
    };
    bench.profile()?;
    bench.phase(State::Cold, 0, args.runs)?;
    bench.phase(State::Warm, 1, args.warm_runs)?;
    bench.in_use_phase(args.warm_runs)?;
    bench.count_misses()?;
    let settled_views = bench.settled_view_mounts();
    ensure!(
        settled_views == bench.settled_views,
        "pare-settled mounted {} views after its images settled",
        settled_views - bench.settled_views
    );
    if let Some(dir) = &args.keep_logs {
        bench.node.save_logs(dir)?;
    }

    if args.json {
        println!("{:#}", to_json(&args, &machine, &bench));
    } else {
        print_table(&args, &machine, &bench);
    }
    Ok(())
}
