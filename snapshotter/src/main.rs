//! `pare-snapshotter`: serves containerd's Snapshots API on a unix socket.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use pare_snapshotter::config::{Config, LogFormat};
use pare_snapshotter::metrics::{CountingMounter, Metrics, ViewsCollector};
use pare_snapshotter::service::Service;
use pare_snapshotter::snapshots::Snapshots;
use pare_snapshotter::viewproc::serve::{self, ServeArgs};
use pare_snapshotter::viewproc::{ProcessMounter, ServerConfig};
use pare_snapshotter::views::Views;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tracing_subscriber::EnvFilter;

/// How long a graceful stop waits for clients to let go of the socket.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// containerd proxy snapshotter that runs every container on pare's profiling view.
#[derive(Debug, Parser)]
#[command(name = "pare-snapshotter", version, about)]
struct Args {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// State directory (overrides the config file).
    #[arg(long)]
    root: Option<PathBuf>,
    /// Unix socket to serve on (overrides the config file).
    #[arg(long)]
    address: Option<PathBuf>,
    /// Log filter (overrides the config file).
    #[arg(long)]
    log_level: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (overrides the config
    /// file; off unless given in one of them).
    #[arg(long, value_name = "ADDR")]
    metrics_address: Option<SocketAddr>,
    /// Learn containers in a row without a new first access before an image
    /// settles (overrides `profile.settle_after`; 0: never).
    #[arg(long, value_name = "N")]
    settle_after: Option<u64>,
    /// Fraction of a settled image's containers that still learn (overrides
    /// `profile.sample_rate`).
    #[arg(long, value_name = "FRACTION")]
    sample_rate: Option<f64>,
    /// How long a view stays mounted after its last container, in seconds
    /// (overrides `view.linger_seconds`; 0: it goes with it).
    #[arg(long, value_name = "SECONDS")]
    linger_seconds: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Serves one image view (started by the snapshotter itself).
    #[command(hide = true)]
    ServeView(ServeArgs),
}

fn main() {
    let args = Args::parse();
    if let Some(Command::ServeView(serve_args)) = args.command {
        let config = Config {
            log_level: serve_args.log_level.clone(),
            log_format: if serve_args.log_json {
                LogFormat::Json
            } else {
                LogFormat::Text
            },
            ..Config::default()
        };
        init_logging(&config);
        if let Err(err) = serve::serve(serve_args) {
            tracing::error!(error = %err, "view server failed");
            std::process::exit(1);
        }
        return;
    }
    if let Err(err) = run(args) {
        let text: Vec<String> = err.chain().map(|c| c.to_string()).collect();
        eprintln!("pare-snapshotter: {}", text.join(": "));
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let mut config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(root) = args.root {
        config.root = root;
    }
    if let Some(address) = args.address {
        config.address = address;
    }
    if let Some(level) = args.log_level {
        config.log_level = level;
    }
    if let Some(address) = args.metrics_address {
        config.metrics_address = Some(address);
    }
    if let Some(n) = args.settle_after {
        config.profile.settle_after = n;
    }
    if let Some(rate) = args.sample_rate {
        config.profile.sample_rate = rate;
    }
    if let Some(seconds) = args.linger_seconds {
        config.view.linger_seconds = seconds;
    }
    config.validate()?;
    init_logging(&config);
    anyhow::ensure!(
        rustix::process::geteuid().is_root(),
        "pare-snapshotter must run as root (it mounts FUSE views)"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let metrics_address = config.metrics_address;
    runtime.block_on(serve(config, metrics_address))
}

fn init_logging(config: &Config) {
    // fuser reports replies to requests the kernel already dropped (a killed
    // container's interrupted reads) as errors; they are expected here.
    // `log_level = "...,fuser=debug"` shows them again.
    let filter = EnvFilter::try_new(format!("fuser=off,{}", config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info,fuser=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(config: Config, metrics_address: Option<SocketAddr>) -> Result<()> {
    std::fs::create_dir_all(&config.root)
        .with_context(|| format!("cannot create {}", config.root.display()))?;
    // View servers name their mountpoints canonically; so does the daemon.
    let root = std::fs::canonicalize(&config.root)
        .with_context(|| format!("cannot resolve {}", config.root.display()))?;
    let rule_config = config.clone();
    let mut metrics = Metrics::new();
    let mounter = ProcessMounter::new(ServerConfig {
        program: PathBuf::from("/proc/self/exe"),
        threads: config.view.threads,
        passthrough: config.view.passthrough,
        transport: config.view.transport,
        flush: Duration::from_millis(config.profile.flush_interval_ms),
        log_level: config.log_level.clone(),
        log_json: config.log_format == LogFormat::Json,
        start_timeout: Duration::from_millis(config.view.start_timeout_ms),
        stop_timeout: Duration::from_millis(config.view.stop_timeout_ms),
        stats: metrics_address.is_some(),
    });
    let wait_limit =
        Duration::from_millis(config.view.start_timeout_ms + config.view.stop_timeout_ms);
    let mounter = CountingMounter::new(mounter, metrics.view_events());
    let views = Views::new(mounter, root.clone(), wait_limit).with_lingering(config.lingering());
    let views_dir = views.views_dir().to_path_buf();
    let open_root = root.clone();
    let settling = config.settling();
    let snapshots = tokio::task::spawn_blocking(move || {
        Snapshots::open(
            &open_root,
            views,
            Box::new(move |ns: &str| rule_config.mode_of(ns)),
        )
        .map(|s| s.with_settling(settling))
    })
    .await?
    .with_context(|| format!("cannot open the snapshot store in {}", root.display()))?;
    let snapshots = Arc::new(snapshots);

    let metrics_listener = match metrics_address {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot serve metrics on {address}"))?,
        ),
        None => None,
    };
    let listener = bind(&config)?;
    tracing::info!(address = %config.address.display(), root = %root.display(), views = snapshots.view_status().len(), "serving");
    if let Err(e) = pare_snapshotter::notify::ready() {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    let service = match metrics_listener {
        Some(listener) => {
            let source = snapshots.clone();
            metrics.collect_views(ViewsCollector::new(
                Arc::new(move || source.view_keys()),
                views_dir,
                root.clone(),
            ));
            let metrics = Arc::new(metrics);
            let rpc = metrics.rpc();
            tracing::info!(address = %listener.local_addr()?, "serving metrics");
            tokio::spawn(pare_snapshotter::metrics::http::serve(listener, metrics));
            Service::with_metrics(snapshots.clone(), rpc)
        }
        None => Service::new(snapshots.clone()),
    };
    if !config.lingering().linger.is_zero() {
        // Views past their linger time go within a second.
        let reaped = snapshots.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let reaped = reaped.clone();
                let _ = tokio::task::spawn_blocking(move || reaped.reap_lingering(false)).await;
            }
        });
    }
    let service = containerd_snapshots::server(Arc::new(service));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot handle SIGTERM")?;
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        }
        let _ = pare_snapshotter::notify::stopping();
        let _ = stopping_tx.send(());
    };
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown);
    tokio::pin!(server);
    // A graceful stop waits for clients to close their connections; one
    // that never does (a hung peer) must not keep the daemon from stopping.
    let grace = async {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = &mut server => served.context("gRPC server failed")?,
        () = grace => tracing::warn!(grace = ?SHUTDOWN_GRACE, "clients still connected after the grace period; stopping anyway"),
    }
    let _ = std::fs::remove_file(&config.address);
    tokio::task::spawn_blocking(move || snapshots.shutdown()).await?;
    tracing::info!("stopped; views keep serving their containers");
    Ok(())
}

/// Binds the socket with the configured mode and group; replaces a stale socket.
fn bind(config: &Config) -> Result<UnixListener> {
    let address = &config.address;
    if let Some(dir) = address.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if address.exists() {
        if std::os::unix::net::UnixStream::connect(address).is_ok() {
            anyhow::bail!("{} is in use by another process", address.display());
        }
        std::fs::remove_file(address)
            .with_context(|| format!("cannot remove stale socket {}", address.display()))?;
    }
    let listener = UnixListener::bind(address)
        .with_context(|| format!("cannot listen on {}", address.display()))?;
    let mode = config.socket_mode_bits()?;
    std::fs::set_permissions(address, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", address.display()))?;
    if let Some(group) = &config.socket_group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(address, None, Some(gid))
            .with_context(|| format!("cannot chown {} to group {group}", address.display()))?;
    }
    Ok(listener)
}

fn group_id(group: &str) -> Result<u32> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").context("cannot read /etc/group")?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(name, _)| *name == group)
        .and_then(|(_, gid)| gid.parse().ok())
        .with_context(|| format!("socket_group {group:?} is not a group of this machine"))
}
