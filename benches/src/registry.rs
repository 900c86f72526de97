//! A private image registry for the cold-start bench: Debian's
//! `docker-registry` (the Docker registry v2 server) on 127.0.0.1 at a free
//! port, plain HTTP, no auth, its storage and log in a directory of the
//! bench; stopped on drop. The system's own service is never touched.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use pare_tests::mounts::wait_timeout;
use pare_tests::prereq::which;
use pare_tests::story::get;
use rustix::process::{Pid, Signal};

/// How long the registry may take to answer `GET /v2/`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `docker-registry serve` child.
pub struct Registry {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Registry {
    /// Writes `dir/config.yml` (storage in `dir/storage`, listening on
    /// 127.0.0.1 at a free port), starts the registry with its log in
    /// `dir/registry.log` and waits until `GET /v2/` answers 200.
    pub fn start(dir: &Path) -> anyhow::Result<Registry> {
        let bin = which("docker-registry").context(
            "docker-registry is not installed (scripts/setup.sh installs Debian's package)",
        )?;
        let storage = dir.join("storage");
        fs::create_dir_all(&storage)?;
        let port = free_port()?;
        let config = dir.join("config.yml");
        fs::write(&config, config_yml(&storage, port))?;
        let log = dir.join("registry.log");
        let log_file = File::create(&log)?;
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot spawn {}", bin.display()))?;
        let mut registry = Registry { child, port, log };
        registry.wait_ready()?;
        Ok(registry)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if matches!(get(self.port, "/v2/"), Ok((200, _))) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("docker-registry exited with {status}: {}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer within {READY_TIMEOUT:?}: {}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`, the registry host of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(pid) = Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        if !matches!(
            wait_timeout(&mut self.child, Duration::from_secs(10)),
            Ok(Some(_))
        ) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The registry's configuration: filesystem storage, plain HTTP on
/// 127.0.0.1, no auth section (so no auth), access log off.
fn config_yml(storage: &Path, port: u16) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n",
        storage.display()
    )
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a port")?;
    Ok(listener.local_addr()?.port())
}
