//! Whole-system bench of pare-snapshotter: the wall time of `ctr run --rm` on
//! containerd's overlayfs snapshotter and on pare, side by side, in one
//! private containerd that has both.
//!
//! Cold runs drop the kernel caches first and start with no pare view mounted
//! (the run mounts it); warm runs repeat on a warm page cache (each still
//! mounts a view, as the image has no other container); "in use" runs have a
//! detached container of the image keep its view mounted. Before every run
//! the bench waits until containerd's garbage collection has removed the
//! previous container's snapshot, so nothing runs behind a timed run. Runs
//! are interleaved round-robin so drift hits both snapshotters alike. A
//! diagnostic row times `ctr snapshots prepare` alone, where pare mounts the
//! view.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use pare_benches::images::{self, PYTHON, TOOLS};
use pare_benches::machine::{Machine, load_average};
use pare_benches::node::{Backend, Node, Snapshotter};
use pare_benches::stats::Summary;
use pare_benches::{Interrupt, drop_caches, layers, time, workspace_root};
use pare_tests::containerd::Ctr;
use serde_json::json;

/// Time `ctr run --rm` on pare-snapshotter against containerd's overlayfs (run as root).
#[derive(Debug, Parser)]
struct Args {
    /// Cold runs per case and snapshotter (caches dropped, no view mounted).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Timed warm runs per case and snapshotter, after one warm-up run.
    #[arg(long, default_value_t = 15)]
    warm_runs: usize,
    /// The pare-snapshotter binary [default: target/release/pare-snapshotter of this workspace].
    #[arg(long)]
    snapshotter: Option<PathBuf>,
    /// Copy the logs of pare-snapshotter and containerd into this directory at the end.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// Print the results as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// What runs in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    /// `true` in the tools image: the fixed cost of a container.
    True,
    /// A Python interpreter importing a few standard modules, in the Debian image.
    Python,
    /// Not a container: `ctr snapshots prepare` of a rootfs snapshot on the
    /// python image (pare mounts the view here), to split out that cost.
    Prepare,
}

const IMPORT: &str = "import json,sqlite3,hashlib,email,http.client,decimal,asyncio";

impl Workload {
    const ALL: [Workload; 3] = [Workload::True, Workload::Python, Workload::Prepare];

    fn image(self) -> &'static str {
        match self {
            Workload::True => TOOLS,
            Workload::Python | Workload::Prepare => PYTHON,
        }
    }

    /// The timed command: `ctr run --rm` of container `id`, or `ctr
    /// snapshots prepare id parent` for [`Workload::Prepare`].
    fn command(self, node: &Node, id: &str, s: Snapshotter, parent: &str) -> Command {
        let command: &[&str] = match self {
            Workload::True => &["true"],
            Workload::Python => &["python3", "-c", IMPORT],
            Workload::Prepare => {
                let args = [
                    "snapshots",
                    "--snapshotter",
                    s.name(),
                    "prepare",
                    id,
                    parent,
                ];
                return node.ctr_command(&args);
            }
        };
        let mut args = vec!["run", "--rm", "--snapshotter", s.name(), self.image(), id];
        args.extend_from_slice(command);
        node.ctr_command(&args)
    }

    /// Removes what [`Workload::command`] left (`ctr run --rm` leaves nothing).
    fn clean(self, ctr: &Ctr, id: &str, s: Snapshotter) -> anyhow::Result<()> {
        if self == Workload::Prepare {
            ctr.ctr(&["snapshots", "--snapshotter", s.name(), "rm", id])?;
        }
        Ok(())
    }

    fn label(self) -> &'static str {
        match self {
            Workload::True => "tools: true",
            Workload::Python => "python: import",
            Workload::Prepare => "python: snapshot prepare",
        }
    }

    /// False for the diagnostic rows, which have no target.
    fn has_target(self) -> bool {
        self != Workload::Prepare
    }

    fn key(self) -> &'static str {
        match self {
            Workload::True => "true",
            Workload::Python => "python-import",
            Workload::Prepare => "python-snapshot-prepare",
        }
    }
}

/// The state a run starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    /// Kernel caches dropped, no view mounted.
    Cold,
    /// Page cache warm; the image has no other container (pare mounts its view).
    Warm,
    /// Page cache warm and another container of the image runs (its view is up).
    InUse,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Cold, Mode::Warm, Mode::InUse];

    fn label(self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Warm => "warm",
            Mode::InUse => "warm, in use",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Warm => "warm",
            Mode::InUse => "warm-in-use",
        }
    }

    /// The largest pare/overlayfs ratio of the medians we aim for.
    fn target(self) -> f64 {
        match self {
            Mode::Cold => 1.2,
            Mode::Warm | Mode::InUse => 1.05,
        }
    }
}

/// How long containerd's garbage collection may take to clean up after a run.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

type Case = (Workload, Mode, Snapshotter);

/// The running bench: the node, the samples, and the views pare mounted per mode.
struct Bench {
    node: Node,
    interrupt: Interrupt,
    baseline: Backend,
    /// Parent of the prepared snapshots: the python image's top chain ID.
    python_chain: String,
    runs: usize,
    samples: BTreeMap<Case, Vec<Duration>>,
    view_mounts: BTreeMap<Mode, usize>,
}

impl Bench {
    /// One `ctr run --rm`, timed from spawn to exit, recorded when `record`.
    fn run(&mut self, case: Case, record: bool) -> anyhow::Result<()> {
        let (w, mode, s) = case;
        self.interrupt.check()?;
        self.node
            .settle(self.baseline, SETTLE_TIMEOUT)
            .context("containerd did not clean up after the previous container")?;
        if mode == Mode::Cold {
            drop_caches()?;
        }
        self.runs += 1;
        let id = format!("bench-{}", self.runs);
        let mut command = w.command(&self.node, &id, s, &self.python_chain);
        let (elapsed, _) = time(&mut command)
            .with_context(|| format!("{} {} on {}", w.label(), mode.label(), s.name()))?;
        w.clean(&self.node.ctr(), &id, s)?;
        if record {
            self.samples.entry(case).or_default().push(elapsed);
        }
        Ok(())
    }

    /// Runs `mode` for every workload and snapshotter: `warm_up` untimed runs
    /// each, then `runs` timed rounds; counts the views pare mounted.
    fn phase(&mut self, mode: Mode, warm_up: usize, runs: usize) -> anyhow::Result<()> {
        let mounted_before = self.view_mounts_so_far();
        for _ in 0..warm_up {
            for case in cases(mode) {
                self.run(case, false)?;
            }
        }
        for n in 1..=runs {
            eprintln!("{} run {n}/{runs}", mode.label());
            for case in cases(mode) {
                self.run(case, true)?;
            }
        }
        self.node.settle(self.baseline, SETTLE_TIMEOUT)?;
        let mounted = self.view_mounts_so_far() - mounted_before;
        self.view_mounts.insert(mode, mounted);
        Ok(())
    }

    /// The in-use phase: one detached container per image and snapshotter
    /// keeps the image's view mounted during the runs.
    fn in_use_phase(&mut self, runs: usize) -> anyhow::Result<()> {
        let idle = self.baseline;
        let ctr = self.node.ctr();
        let mut pins = Vec::new();
        for w in [Workload::True, Workload::Python] {
            for s in Snapshotter::ALL {
                let id = format!("pin-{}-{}", w.key(), s.name());
                ctr.run_detached(w.image(), &id, s.name(), &["sleep", "infinity"])?;
                pins.push(id);
            }
        }
        self.baseline = self.node.backend();
        let result = self.phase(Mode::InUse, 1, runs);
        for id in &pins {
            ctr.remove(id)?;
        }
        self.baseline = idle;
        result?;
        self.node.settle(idle, SETTLE_TIMEOUT)
    }

    fn view_mounts_so_far(&self) -> usize {
        let log = self.node.pare_log();
        // pare-fs and the snapshotter each log a "view mounted" line; the
        // snapshotter's names the chain and whether it is profiled.
        log.lines()
            .filter(|l| l.contains("view mounted") && l.contains("profiled"))
            .count()
    }

    fn summary(&self, case: Case) -> Option<Summary> {
        self.samples.get(&case).map(|s| Summary::of(s))
    }

    /// pare's median over overlayfs's.
    fn ratio(&self, w: Workload, mode: Mode) -> Option<f64> {
        let pare = self.summary((w, mode, Snapshotter::Pare))?;
        Some(pare.median / self.summary((w, mode, Snapshotter::Overlayfs))?.median)
    }
}

/// The cases of one round of `mode`, in run order.
fn cases(mode: Mode) -> impl Iterator<Item = Case> {
    Workload::ALL
        .into_iter()
        .flat_map(move |w| Snapshotter::ALL.into_iter().map(move |s| (w, mode, s)))
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
    let bin = args
        .snapshotter
        .clone()
        .unwrap_or_else(|| workspace_root().join("target/release/pare-snapshotter"));
    ensure!(
        bin.exists(),
        "{} is missing; build it with cargo build --release --workspace",
        bin.display()
    );
    let machine = Machine::describe(&["containerd", "runc"]);
    let archives = images::archives(&layers::debian_rootfs()?)?;
    let python_chain = images::top_chain_id(&archives.python)?.to_string();

    let node = Node::start(&bin)?;
    for s in Snapshotter::ALL {
        for archive in [&archives.tools, &archives.python] {
            interrupt.check()?;
            eprintln!("importing {} for {}", archive.display(), s.name());
            node.ctr().import(archive, s.name())?;
        }
    }
    // Let the imports' garbage settle before taking the idle state.
    std::thread::sleep(Duration::from_secs(1));
    let mut bench = Bench {
        baseline: node.backend(),
        python_chain,
        node,
        interrupt,
        runs: 0,
        samples: BTreeMap::new(),
        view_mounts: BTreeMap::new(),
    };
    bench.phase(Mode::Cold, 0, args.runs)?;
    bench.phase(Mode::Warm, 1, args.warm_runs)?;
    bench.in_use_phase(args.warm_runs)?;
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

fn print_table(args: &Args, machine: &Machine, bench: &Bench) {
    println!("pare container bench, {}", machine.summary());
    println!(
        "{} cold runs, {} warm runs per case and snapshotter; ctr run --rm wall time",
        args.runs, args.warm_runs
    );
    println!();
    print!("{:<38}", "seconds: median (min)");
    for s in Snapshotter::ALL {
        print!("{:>18}", s.name());
    }
    println!("{:>30}", "pare/overlayfs");
    for w in Workload::ALL {
        for mode in Mode::ALL {
            print!("{:<38}", format!("{}, {}", w.label(), mode.label()));
            for s in Snapshotter::ALL {
                let cell = bench
                    .summary((w, mode, s))
                    .map(|s| format!("{:.3} ({:.3})", s.median, s.min));
                print!("{:>18}", cell.unwrap_or_default());
            }
            let verdict = bench.ratio(w, mode).map(|r| match w.has_target() {
                true if r <= mode.target() => format!("{r:.3} (<= {}: met)", mode.target()),
                true => format!("{r:.3} (<= {}: MISSED)", mode.target()),
                false => format!("{r:.3} (diagnostic)"),
            });
            println!("{:>30}", verdict.unwrap_or_default());
        }
    }
    println!();
    let mounts: Vec<String> = Mode::ALL
        .iter()
        .map(|m| format!("{}: {}", m.label(), bench.view_mounts.get(m).unwrap_or(&0)))
        .collect();
    println!("pare views mounted per phase: {}", mounts.join("; "));
    println!("load average at the end: {}", load_average());
}

fn to_json(args: &Args, machine: &Machine, bench: &Bench) -> serde_json::Value {
    let mut cases = Vec::new();
    for w in Workload::ALL {
        for mode in Mode::ALL {
            let snapshotters: serde_json::Map<_, _> = Snapshotter::ALL
                .iter()
                .filter_map(|&s| {
                    let summary = bench.summary((w, mode, s))?;
                    let samples: Vec<f64> = bench.samples[&(w, mode, s)]
                        .iter()
                        .map(Duration::as_secs_f64)
                        .collect();
                    let value = json!({
                        "median_s": summary.median,
                        "min_s": summary.min,
                        "samples_s": samples,
                    });
                    Some((s.name().to_string(), value))
                })
                .collect();
            cases.push(json!({
                "workload": w.key(),
                "mode": mode.key(),
                "snapshotters": snapshotters,
                "pare_vs_overlayfs": bench.ratio(w, mode),
                "target_pare_vs_overlayfs": w.has_target().then_some(mode.target()),
            }));
        }
    }
    let view_mounts: serde_json::Map<_, _> = bench
        .view_mounts
        .iter()
        .map(|(m, n)| (m.key().to_string(), json!(n)))
        .collect();
    json!({
        "bench": "containers",
        "machine": machine.to_json(),
        "runs": args.runs,
        "warm_runs": args.warm_runs,
        "cases": cases,
        "pare_view_mounts": view_mounts,
        "load_average_at_end": load_average(),
    })
}
