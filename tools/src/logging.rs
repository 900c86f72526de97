//! The one place that sets up logging: `tracing` to stderr, filtered by
//! `--log-level` or `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// fuser logs expected events (an unmount from outside) as warnings; keep its errors only.
const DEFAULT_FILTER: &str = "info,fuser=error";

/// Installs the stderr subscriber.
pub fn init(level: Option<&str>) {
    let filter = match level {
        Some(level) => EnvFilter::new(level),
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
