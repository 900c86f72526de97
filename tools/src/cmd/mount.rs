//! `pare mount`: serve a profiling view of layer directories in the foreground.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pare_fs::layers::LayerStack;
use pare_fs::profile::Recorder;
use pare_fs::view::{self, ReadMode, View, ViewOptions};

/// Mount a read-only merged view of layer directories and record first accesses.
///
/// Serves in the foreground until MOUNTPOINT is unmounted or SIGINT/SIGTERM
/// arrives; then unmounts and flushes the profile.
#[derive(Debug, Args)]
pub struct MountArgs {
    /// Append first accesses to this profile journal (created if missing).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Serving threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Chain ID of the image, written into a new profile's header.
    #[arg(long)]
    image: Option<String>,
    /// Serve file reads with pread even where the kernel offers FUSE passthrough.
    #[arg(long)]
    no_passthrough: bool,
    /// How often the profile is flushed, in milliseconds.
    #[arg(long, default_value_t = 10)]
    flush_ms: u64,
    /// Layer directories separated by ':', topmost first (as overlayfs lowerdir=).
    lowerdirs: String,
    /// Where to mount the view.
    mountpoint: PathBuf,
}

pub fn run(args: MountArgs) -> anyhow::Result<()> {
    let dirs: Vec<PathBuf> = args
        .lowerdirs
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    let stack = LayerStack::open(dirs)?;
    let recorder = match &args.profile {
        Some(path) => Some(
            Recorder::open(
                path,
                args.image.clone(),
                Duration::from_millis(args.flush_ms.max(1)),
            )
            .with_context(|| format!("cannot record the profile in {}", path.display()))?,
        ),
        None => None,
    };
    let mut opts = ViewOptions::default();
    if let Some(threads) = args.threads {
        anyhow::ensure!(threads >= 1, "--threads must be at least 1");
        opts.threads = threads;
    }
    if args.no_passthrough {
        opts.read_mode = ReadMode::Pread;
    }
    let view = View::new(stack, recorder.as_ref().map(Recorder::handle));
    let mounted = view::mount(view, &args.mountpoint, &opts)?;

    let (tx, rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot install signal handlers")?;
    let signal_handle = signals.handle();
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _ = tx.send(signal);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(signal) => {
                tracing::info!(signal, "stopping: unmounting the view");
                mounted.unmount()?;
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) if mounted.is_finished() => {
                tracing::info!("the view was unmounted");
                mounted.wait()?;
                break;
            }
            Err(_) => {}
        }
    }
    signal_handle.close();
    if let Some(recorder) = recorder {
        let path = args.profile.clone().unwrap_or_default();
        let records = recorder.finish()?;
        tracing::info!(profile = %path.display(), records, "profile flushed");
    }
    Ok(())
}
