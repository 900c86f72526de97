//! The view server itself (`pare-snapshotter serve-view`): mounts one image
//! view, writes its state file, reports `ready` on stdout, and serves until
//! SIGTERM or until its mount is unmounted from outside; then unmounts and
//! flushes the profile (learn) or the misses (audit, enforce). While it
//! serves, it rewrites its stats file every second for the snapshotter's
//! metrics.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pare_fs::id::{ChainId, Digest};
use pare_fs::layers::LayerStack;
use pare_fs::policy::{self, AllowedSet, Misses, MissesWriter, Mode, Policy, PolicyError};
use pare_fs::profile::{Recorder, RecorderError, RecorderStats};
use pare_fs::view::{self, ReadMode, RequestStats, Stopped, View, ViewOptions};

use super::{ProcessId, ServerState, StateFileError};
use crate::metrics::view_stats::{self, MissesStats, ProfileStats, ViewStats};

/// Arguments of `serve-view` (given by the snapshotter, not by people).
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// Where to mount the view.
    #[arg(long)]
    pub mountpoint: PathBuf,
    /// The image chain served.
    #[arg(long, value_parser = chain_arg)]
    pub image: ChainId,
    /// Layer directories, topmost first.
    #[arg(long = "layer", required = true)]
    pub layers: Vec<PathBuf>,
    /// Profile journal; none: accesses are not recorded.
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// learn, audit or enforce.
    #[arg(long, default_value_t = Mode::Learn)]
    pub mode: Mode,
    /// The allowed-set file audit and enforce judge by.
    #[arg(long, requires_all = ["allowed_digest", "misses"])]
    pub allowed: Option<PathBuf>,
    /// The digest the allowed-set file must have (the view's identity).
    #[arg(long, value_parser = digest_arg)]
    pub allowed_digest: Option<Digest>,
    /// Where misses go (audit, enforce).
    #[arg(long)]
    pub misses: Option<PathBuf>,
    /// Serving threads.
    #[arg(long, default_value_t = pare_fs::view::default_threads())]
    pub threads: usize,
    /// Serve reads with pread instead of FUSE passthrough.
    #[arg(long)]
    pub no_passthrough: bool,
    /// How requests travel between the kernel and the view.
    #[arg(long, default_value_t = pare_fs::view::Transport::Auto)]
    pub transport: pare_fs::view::Transport,
    /// Write the stats file every second (the snapshotter serves metrics).
    #[arg(long)]
    pub stats: bool,
    /// Profile flush interval in ms.
    #[arg(long, default_value_t = 10)]
    pub flush_ms: u64,
    /// Log filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// JSON logs.
    #[arg(long)]
    pub log_json: bool,
}

/// Why a view server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The layers could not be opened.
    #[error("cannot read the layers: {0}")]
    Layers(#[from] pare_fs::layers::LayerError),
    /// The profile could not be opened.
    #[error(transparent)]
    Profile(#[from] pare_fs::profile::RecorderError),
    /// The view could not be mounted.
    #[error(transparent)]
    Mount(#[from] pare_fs::view::ViewError),
    /// This process or its mount is not in `/proc`: no state file can say
    /// who serves the view.
    #[error("cannot find this process or its mount in /proc")]
    Unidentified,
    /// The state file could not be written.
    #[error(transparent)]
    State(#[from] StateFileError),
    /// The allowed set or the misses could not be read, or the mode needs them.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The allowed-set file is not the one the view was asked for (frozen
    /// again meanwhile).
    #[error("{} changed: its digest is {found}, not {wanted}", path.display())]
    AllowedChanged {
        /// The allowed-set file.
        path: PathBuf,
        /// The digest asked for.
        wanted: Digest,
        /// The digest found.
        found: Digest,
    },
    /// Audit or enforce without `--allowed`.
    #[error("--mode {0} needs --allowed, --allowed-digest and --misses")]
    NoAllowedSet(Mode),
}

fn digest_arg(s: &str) -> Result<Digest, String> {
    Digest::parse(s).map_err(|e| e.to_string())
}

/// `--image`: any committed snapshot name.
fn chain_arg(name: &str) -> Result<ChainId, std::convert::Infallible> {
    Ok(ChainId::from_snapshot_name(name))
}

/// How long serving may take to end after an unmount before the server
/// treats the view as used elsewhere. Serving ends within milliseconds of an
/// unmount unless something still holds the file system: an overlay (which
/// keeps a private clone of its lower mounts, so the unmount itself succeeds)
/// or a mount in another namespace.
const UNMOUNT_WAIT: Duration = Duration::from_millis(200);

/// How long a new view waits for a journal still held by a view going away.
const BUSY_WAIT: Duration = Duration::from_secs(3);

/// Runs a view server. Before the mount is ready, errors are reported on
/// stdout as `error <reason>` so the snapshotter can say why.
pub fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let result = start(&args);
    let mut stdout = std::io::stdout();
    let (mounted, mut recorder, state, requests, judging) = match result {
        Ok(started) => {
            let _ = writeln!(stdout, "ready").and_then(|()| stdout.flush());
            started
        }
        Err(e) => {
            let _ = writeln!(stdout, "error {e}").and_then(|()| stdout.flush());
            return Err(e);
        }
    };
    let term = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(signal, term.clone());
    }
    // Ignored: a closing terminal must not stop a view containers depend on.
    let _ = signal_hook::flag::register(
        signal_hook::consts::SIGHUP,
        Arc::new(AtomicBool::new(false)),
    );
    let mut reported = RecorderStats::default();
    let mut stats_due = Instant::now();
    let mut misses_counted = MissesCounted::default();
    while !term.load(Ordering::Relaxed) && !mounted.is_finished() {
        if args.stats && Instant::now() >= stats_due {
            let misses = judging.as_ref().map(|j| misses_counted.of(&j.misses));
            write_stats(&args, &state, &requests, recorder.as_ref(), misses);
            stats_due = Instant::now() + view_stats::INTERVAL;
        }
        std::thread::sleep(Duration::from_millis(50));
        if let Some(recorder) = &recorder {
            let stats = recorder.stats();
            if stats.write_errors != reported.write_errors
                || stats.records_lost != reported.records_lost
            {
                tracing::warn!(
                    image = %args.image,
                    write_errors = stats.write_errors,
                    records_lost = stats.records_lost,
                    records_pending = stats.records_pending,
                    incomplete = stats.incomplete,
                    "profile writes are failing"
                );
                reported = stats;
            }
        }
    }
    let served = if mounted.is_finished() {
        tracing::info!(mountpoint = %args.mountpoint.display(), "view unmounted from outside");
        mounted.wait()
    } else {
        match mounted.stop(UNMOUNT_WAIT) {
            Stopped::Unmounted(result) => result,
            Stopped::StillServing(still) => {
                tracing::info!(
                    mountpoint = %args.mountpoint.display(),
                    "view detached while still in use elsewhere; serving until its last user goes"
                );
                // The image's next view may start now: it gets the journal
                // and the mountpoint.
                state.remove_if_mine();
                if let Some(recorder) = recorder.take() {
                    report(&args.image, recorder.close());
                }
                still.wait()
            }
        }
    };
    if let Some(recorder) = recorder {
        report(&args.image, recorder.finish());
    }
    ViewStats::remove_if_mine(&state.mountpoint, state.process.pid);
    if let Some(judging) = judging {
        match judging.writer.stop() {
            Ok(()) => tracing::info!(image = %args.image, mode = %args.mode, "misses flushed"),
            Err(e) => tracing::error!(image = %args.image, error = %e, "misses flush failed"),
        }
    }
    // The state file stays until the snapshotter has seen this process exit
    // (it tells a detached view from a stopped one by it).
    if let Err(e) = served {
        tracing::warn!(error = %e, "serving ended with an error");
    }
    tracing::info!(image = %args.image, "view server stopped");
    Ok(())
}

/// The misses' counts as of their last change: they are copied out only
/// when they changed since.
#[derive(Default)]
struct MissesCounted {
    changes: Option<u64>,
    stats: MissesStats,
}

impl MissesCounted {
    fn of(&mut self, misses: &Misses) -> MissesStats {
        let changes = misses.changes();
        if self.changes != Some(changes) {
            self.stats = MissesStats::new(&misses.snapshot());
            self.changes = Some(changes);
        }
        self.stats
    }
}

/// Rewrites the stats file; a failure is logged and the view serves on.
fn write_stats(
    args: &ServeArgs,
    state: &ServerState,
    requests: &RequestStats,
    recorder: Option<&Recorder>,
    misses: Option<MissesStats>,
) {
    let stats = ViewStats {
        pid: state.process.pid,
        requests: requests.snapshot(),
        profile: recorder.map(|r| ProfileStats::new(r.stats(), r.path())),
        misses,
    };
    if let Err(e) = stats.write(&state.mountpoint) {
        tracing::debug!(image = %args.image, error = %e, "cannot write the view's stats file");
    }
}

fn report(image: &ChainId, finished: Result<u64, RecorderError>) {
    match finished {
        Ok(records) => tracing::info!(%image, records, "profile flushed"),
        Err(e) => tracing::error!(%image, error = %e, "profile flush failed"),
    }
}

/// Opens the image's journal. A corrupt or foreign one is set aside (kept)
/// and a new one started; one still held by a view that is going away is
/// waited for, briefly.
fn open_profile(path: &std::path::Path, args: &ServeArgs) -> Result<Recorder, ServeError> {
    let flush = Duration::from_millis(args.flush_ms.max(1));
    let deadline = std::time::Instant::now() + BUSY_WAIT;
    loop {
        match Recorder::open_or_set_aside(path, Some(args.image.to_string()), flush) {
            Ok((recorder, aside)) => {
                if let Some(aside) = aside {
                    tracing::warn!(image = %args.image, set_aside = %aside.display(), "the image's profile was unreadable; it was set aside and a new one started");
                }
                return Ok(recorder);
            }
            Err(RecorderError::Busy { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What an audit or enforce view keeps of its policy while it serves: the
/// misses (counted in the stats file) and their writer.
struct Judging {
    misses: Arc<Misses>,
    writer: MissesWriter,
}

/// The policy of an audit or enforce view and what it keeps of it; none in
/// learn mode.
fn policy_of(args: &ServeArgs) -> Result<Option<(Policy, Judging)>, ServeError> {
    if !args.mode.has_policy() {
        return Ok(None);
    }
    let (Some(path), Some(wanted), Some(misses_file)) =
        (&args.allowed, &args.allowed_digest, &args.misses)
    else {
        return Err(ServeError::NoAllowedSet(args.mode));
    };
    let (allowed, found) = AllowedSet::read_identified(path)?;
    if &found != wanted {
        return Err(ServeError::AllowedChanged {
            path: path.clone(),
            wanted: wanted.clone(),
            found,
        });
    }
    // Another server of this view may still serve a running container
    // (detached, in use): the claim gives this one a file of its own then.
    let claim = policy::claim(misses_file)?;
    let misses_file = claim.path().to_path_buf();
    let misses = Arc::new(Misses::continue_from(
        &misses_file,
        Some(args.image.to_string()),
        args.mode,
    )?);
    let writer = MissesWriter::start(misses.clone(), claim, policy::DEFAULT_FLUSH)?;
    tracing::info!(image = %args.image, mode = %args.mode, paths = allowed.len(), misses = %misses_file.display(), "judging accesses against the allowed set");
    Ok(Some((
        Policy::new(args.mode, Arc::new(allowed), misses.clone())?,
        Judging { misses, writer },
    )))
}

/// A serving view: its mount, recorder, state file, request counters and
/// misses.
type Started = (
    view::MountedView,
    Option<Recorder>,
    ServerState,
    Arc<RequestStats>,
    Option<Judging>,
);

fn start(args: &ServeArgs) -> Result<Started, ServeError> {
    let stack = LayerStack::open(args.layers.clone())?;
    let judged = policy_of(args)?;
    let recorder = match &args.profile {
        Some(path) => Some(open_profile(path, args)?),
        None => None,
    };
    let mut options = ViewOptions {
        threads: args.threads.max(1),
        transport: args.transport,
        ..ViewOptions::default()
    };
    if args.no_passthrough {
        options.read_mode = ReadMode::Pread;
    }
    let (policy, judging) = judged.unzip();
    options.policy = policy;
    let view = View::new(stack, recorder.as_ref().map(Recorder::handle));
    let requests = view.requests();
    let mounted = view::mount(view, &args.mountpoint, &options)?;
    let state = match (ProcessId::current(), mounted.connection()) {
        (Some(process), Some(connection)) => ServerState {
            process,
            connection,
            chain: args.image.clone(),
            mountpoint: mounted.mountpoint().to_path_buf(),
            mode: args.mode,
            allowed: args
                .allowed_digest
                .clone()
                .filter(|_| args.mode.has_policy()),
        },
        _ => {
            let _ = mounted.unmount();
            return Err(ServeError::Unidentified);
        }
    };
    if let Err(e) = state.write() {
        let _ = mounted.unmount();
        return Err(e.into());
    }
    tracing::info!(image = %args.image, mountpoint = %args.mountpoint.display(), pid = state.process.pid, "view serving");
    Ok((mounted, recorder, state, requests, judging))
}
