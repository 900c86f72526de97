//! `pare mount`: serve a profiling view of layer directories in the foreground.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pare_fs::layers::LayerStack;
use pare_fs::policy::{self, AllowedSet, Misses, MissesWriter, Mode, Policy};
use pare_fs::profile::Recorder;
use pare_fs::view::{self, ReadMode, Transport, View, ViewOptions};

/// Mount a read-only merged view of layer directories and record first accesses.
///
/// Serves in the foreground until MOUNTPOINT is unmounted or SIGINT/SIGTERM
/// arrives; then unmounts and flushes the profile and the misses.
///
/// In audit mode the view serves everything and journals each access outside
/// the allowed set as a miss; in enforce mode names outside it do not exist
/// (and each attempt is a miss). The profile is recorded in every mode.
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
    /// How requests travel between the kernel and the view: io-uring (FUSE
    /// over io_uring, Linux 6.14+ with the fuse module's enable_uring on),
    /// dev-fuse, or auto (io-uring when the kernel offers it).
    #[arg(long, default_value_t = Transport::Auto)]
    transport: Transport,
    /// How often the profile is flushed, in milliseconds.
    #[arg(long, default_value_t = 10)]
    flush_ms: u64,
    /// learn, audit or enforce.
    #[arg(long, default_value_t = Mode::Learn)]
    mode: Mode,
    /// The frozen allowed set audit and enforce judge by [default: <profile>.allowed].
    #[arg(long)]
    allowed: Option<PathBuf>,
    /// Where audit and enforce keep misses [default: <profile>.misses].
    #[arg(long)]
    misses: Option<PathBuf>,
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
    let policy = policy_of(&args)?;
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
    opts.transport = args.transport;
    let mut misses_writer = None;
    if let Some((policy, misses, claim)) = policy {
        let path = claim.path().to_path_buf();
        let writer = MissesWriter::start(misses, claim, policy::DEFAULT_FLUSH)
            .with_context(|| format!("cannot keep misses in {}", path.display()))?;
        misses_writer = Some(writer);
        opts.policy = Some(policy);
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
    // Both are flushed even when one of them fails.
    let misses_flushed = misses_writer.map(|writer| {
        let path = writer.path().to_path_buf();
        writer.stop()?;
        tracing::info!(misses = %path.display(), "misses flushed");
        anyhow::Ok(())
    });
    if let Some(recorder) = recorder {
        let path = args.profile.clone().unwrap_or_default();
        let records = recorder.finish()?;
        tracing::info!(profile = %path.display(), records, "profile flushed");
    }
    misses_flushed.transpose()?;
    Ok(())
}

/// The policy of `--mode` (none in learn mode), its misses, and the file they go to.
fn policy_of(args: &MountArgs) -> anyhow::Result<Option<(Policy, Arc<Misses>, policy::Claim)>> {
    match args.mode {
        Mode::Learn => {
            anyhow::ensure!(
                args.allowed.is_none() && args.misses.is_none(),
                "--allowed and --misses go with --mode audit or enforce"
            );
            return Ok(None);
        }
        Mode::Off => anyhow::bail!("--mode off serves no view: mount the layers with overlayfs"),
        Mode::Audit | Mode::Enforce => {}
    }
    let beside_profile = |what: &str, file: fn(&Path) -> PathBuf| {
        args.profile
            .as_deref()
            .map(file)
            .with_context(|| format!("--mode {} needs --{what} FILE (or --profile)", args.mode))
    };
    let allowed_file = match &args.allowed {
        Some(file) => file.clone(),
        None => beside_profile("allowed", policy::allowed_path)?,
    };
    let misses_file = match &args.misses {
        Some(file) => file.clone(),
        None => beside_profile("misses", policy::misses_path)?,
    };
    let allowed = AllowedSet::read(&allowed_file).context("cannot read the allowed set")?;
    let claim = policy::claim(&misses_file)
        .with_context(|| format!("cannot keep misses in {}", misses_file.display()))?;
    let misses_file = claim.path().to_path_buf();
    let misses = Misses::continue_from(&misses_file, args.image.clone(), args.mode)
        .context("cannot continue the misses")?;
    let misses = Arc::new(misses);
    tracing::info!(
        mode = %args.mode,
        allowed = %allowed_file.display(),
        paths = allowed.len(),
        misses = %misses_file.display(),
        "judging accesses against the allowed set"
    );
    let policy = Policy::new(args.mode, Arc::new(allowed), misses.clone())?;
    Ok(Some((policy, misses, claim)))
}
