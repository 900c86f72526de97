//! Bench of a pare-snapshotter restart: the time from starting the daemon
//! again to the first answered Snapshots RPC (a `Stat` on its socket), with no
//! view and with `--views` views of running containers to adopt, after a
//! SIGTERM and after a SIGKILL. Runs alternate between the cases; medians are
//! printed side by side.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use containerd_client::services::v1::snapshots::StatSnapshotRequest;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::tonic::Code;
use pare_benches::stats::Summary;
use pare_benches::workspace_root;
use pare_tests::containerd::Containerd;
use pare_tests::images::MTIME;
use pare_tests::oci::{DEFAULT_TOOLS, Image, Layer, host_tools_layer};
use pare_tests::snapshotter::PareSnapshotter;

/// Time from a pare-snapshotter restart to its first answered RPC (run as root).
#[derive(Debug, Parser)]
struct Args {
    /// Restarts per case.
    #[arg(long, default_value_t = 9)]
    runs: usize,
    /// Views (images with a running container) to adopt.
    #[arg(long, default_value_t = 20)]
    views: usize,
    /// The pare-snapshotter binary [default: target/release/pare-snapshotter of this workspace].
    #[arg(long)]
    snapshotter: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("restart bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Restarts the daemon and times it until a Stat RPC is answered.
fn time_restart(
    pare: &mut PareSnapshotter,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    pare.restart()?;
    let socket = pare.socket().to_path_buf();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(channel) = containerd_client::connect(&socket).await {
                let mut client = SnapshotsClient::new(channel);
                let answer = client
                    .stat(StatSnapshotRequest {
                        snapshotter: "pare".into(),
                        key: "no-such-snapshot".into(),
                    })
                    .await;
                match answer {
                    Err(status) if status.code() == Code::NotFound => return Ok(start.elapsed()),
                    other => anyhow::bail!("unexpected answer to Stat: {other:?}"),
                }
            }
            ensure!(Instant::now() < deadline, "no answer within 60 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
}

fn run(args: Args) -> anyhow::Result<()> {
    ensure!(rustix::process::geteuid().is_root(), "run as root");
    let bin = args
        .snapshotter
        .unwrap_or_else(|| workspace_root().join("target/release/pare-snapshotter"));
    ensure!(
        bin.exists(),
        "{} is missing (cargo build --release)",
        bin.display()
    );
    let scratch = tempfile_dir()?;
    let mut pare = PareSnapshotter::start_with(&scratch.join("pare"), &bin)?;
    let containerd = Containerd::start(&scratch.join("containerd"), &pare.containerd_config())?;
    let ctr = containerd.ctr();
    let tools = host_tools_layer(MTIME, DEFAULT_TOOLS)?;
    for i in 0..args.views {
        let mut app = Layer::new(MTIME);
        app.dir("app", 0o755);
        app.file("app/id", format!("{i}\n"), 0o644);
        let tarball = scratch.join(format!("image-{i}.tar"));
        Image::new()
            .layer(&tools)?
            .layer(&app)?
            .write_oci_archive(&format!("docker.io/pare-bench/restart-{i}:v1"), &tarball)?;
        ctr.import(&tarball, "pare")?;
    }
    // Connections close in the background after each measurement, as
    // containerd's do.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for views in [0, args.views] {
        for i in 0..views {
            // containerd redials the restarted daemon with backoff: until it
            // has, calls fail as unavailable.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match ctr.run_detached(
                    &format!("docker.io/pare-bench/restart-{i}:v1"),
                    &format!("sleeper-{i}"),
                    "pare",
                    &["sleep", "100000"],
                ) {
                    Ok(()) => break,
                    Err(e)
                        if format!("{e:#}").contains("unavailable")
                            && Instant::now() < deadline =>
                    {
                        let _ = ctr.ctr(&["containers", "delete", &format!("sleeper-{i}")]);
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        ensure!(
            pare.mounted_views().len() == views,
            "{views} views mounted, found {}",
            pare.mounted_views().len()
        );
        let (mut term, mut kill) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            pare.terminate()?;
            term.push(time_restart(&mut pare, &rt)?);
            pare.kill()?;
            kill.push(time_restart(&mut pare, &rt)?);
        }
        ensure!(
            pare.mounted_views().len() == views && pare.view_servers().len() == views,
            "every view was adopted, none remounted"
        );
        rows.push((views, Summary::of(&term), Summary::of(&kill)));
        for i in 0..views {
            ctr.remove(&format!("sleeper-{i}"))?;
        }
    }
    println!(
        "restart to first answered RPC, ms (median of {} runs, min in brackets)",
        args.runs
    );
    println!(
        "{:>6}  {:>18}  {:>18}",
        "views", "after SIGTERM", "after SIGKILL"
    );
    let ms = |s: &Summary| format!("{:.1} ({:.1})", s.median * 1e3, s.min * 1e3);
    for (views, term, kill) in &rows {
        println!("{views:>6}  {:>18}  {:>18}", ms(term), ms(kill));
    }
    containerd.stop()?;
    pare.stop()?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = Path::new("/var/tmp").join(format!("pare-bench-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
