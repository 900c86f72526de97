//! Subcommands, one file each.

mod compact;
mod misses;
mod mode;
mod mount;
mod profile;
mod report;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// pare makes container images minimal by watching what they actually use.
#[derive(Debug, Parser)]
#[command(name = "pare", version, about)]
pub struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing filter).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Mount(mount::MountArgs),
    Compact(compact::CompactArgs),
    Report(report::ReportArgs),
    Mode(mode::ModeArgs),
    Misses(misses::MissesArgs),
    #[command(subcommand)]
    Profile(profile::ProfileCommand),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Mount(args) => mount::run(args),
        Command::Compact(args) => compact::run(args),
        Command::Report(args) => report::run(args),
        Command::Mode(args) => mode::run(args),
        Command::Misses(args) => misses::run(args),
        Command::Profile(cmd) => profile::run(cmd),
    }
}

/// Where this node's containerd and pare-snapshotter are: the options every
/// command that looks an image up shares.
#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// containerd socket.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub address: std::path::PathBuf,
    /// containerd namespace.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// pare-snapshotter's state directory (where profiles/ is).
    #[arg(long, default_value = "/var/lib/pare")]
    pub root: std::path::PathBuf,
}

/// What to add to and remove from the profile's closure: the options of
/// `pare compact` and of an allowed set frozen by `pare mode`.
#[derive(Debug, clap::Args)]
pub struct RulesArgs {
    /// Also keep image paths matching this glob (repeatable).
    #[arg(long)]
    include: Vec<String>,
    /// Drop image paths matching this glob (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Keep this program with its ELF closure (repeatable).
    #[arg(long)]
    include_exec: Vec<String>,
}

impl RulesArgs {
    /// The rules these options give.
    pub fn rules(&self) -> pare_fs::policy::Rules {
        pare_fs::policy::Rules {
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            include_exec: self.include_exec.clone(),
        }
    }
}

impl NodeArgs {
    /// Runs `work` with a containerd client on a runtime of its own.
    fn with_client<T>(
        &self,
        work: impl AsyncFnOnce(&pare_tools::containerd::Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(async {
            let client =
                pare_tools::containerd::Client::connect(&self.address, &self.namespace).await?;
            work(&client).await
        })
    }

    /// The profile recorded on this node for `image`.
    fn profile_of(&self, image: &str) -> anyhow::Result<std::path::PathBuf> {
        self.with_client(async |client| {
            Ok(pare_tools::compact::profile_of(client, &self.root, image).await?)
        })
    }

    /// The chain of `image` and where its profile is (or would be) recorded
    /// on this node, whether or not it exists yet.
    fn profile_path_of(
        &self,
        image: &str,
    ) -> anyhow::Result<(pare_fs::id::ChainId, std::path::PathBuf)> {
        self.with_client(async |client| {
            let source = client.image(image).await?;
            let path = pare_fs::id::profile_path(&self.root, &source.top_chain_id);
            Ok((source.top_chain_id, path))
        })
    }
}
