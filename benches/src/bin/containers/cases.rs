//! The container bench's rows and columns: the workloads, the states a run
//! starts in, and the columns (overlayfs, pare in learn, audit, enforce, and
//! pare with the image settled).

use std::process::Command;

use pare_benches::images::BenchImage;
use pare_benches::node::{Node, Snapshotter};
use pare_fs::policy::Mode;
use pare_tests::containerd::Ctr;

/// What runs in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// `true` in the tools image: the fixed cost of a container.
    True,
    /// A Python interpreter importing a few standard modules, in the Debian image.
    Python,
    /// Not a container: `ctr snapshots prepare` of a rootfs snapshot on the
    /// python image (pare mounts the view here), to split out that cost.
    Prepare,
}

/// The python workload: imports a few standard modules and prints what some
/// of them compute, so that the answers of all columns can be compared.
const IMPORT: &str = "import json,sqlite3,hashlib,email,http.client,decimal,asyncio; \
                      print(sqlite3.sqlite_version, hashlib.sha256(b'pare').hexdigest()[:12], \
                      decimal.Decimal(1) / 7)";

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::True, Workload::Python, Workload::Prepare];

    /// The workloads that run a container.
    pub const CONTAINERS: [Workload; 2] = [Workload::True, Workload::Python];

    pub fn image(self) -> BenchImage {
        match self {
            Workload::True => BenchImage::Tools,
            Workload::Python | Workload::Prepare => BenchImage::Python,
        }
    }

    /// What the container runs.
    pub fn argv(self) -> &'static [&'static str] {
        match self {
            Workload::True => &["true"],
            Workload::Python => &["python3", "-c", IMPORT],
            Workload::Prepare => &[],
        }
    }

    /// The timed command in `column`: `ctr run --rm` of container `id`, or
    /// `ctr snapshots prepare id parent` for [`Workload::Prepare`].
    pub fn command(self, node: &Node, id: &str, column: Column, parent: &str) -> Command {
        let snapshotter = column.snapshotter().name();
        if self == Workload::Prepare {
            let args = [
                "snapshots",
                "--snapshotter",
                snapshotter,
                "prepare",
                id,
                parent,
            ];
            return node.ctr_command(&args);
        }
        let image = self.image().reference(column.mode());
        let mut args = vec!["run", "--rm", "--snapshotter", snapshotter, &image, id];
        args.extend_from_slice(self.argv());
        node.ctr_command(&args)
    }

    /// Removes what [`Workload::command`] left (`ctr run --rm` leaves nothing).
    pub fn clean(self, ctr: &Ctr, id: &str, column: Column) -> anyhow::Result<()> {
        if self == Workload::Prepare {
            let snapshotter = column.snapshotter().name();
            ctr.ctr(&["snapshots", "--snapshotter", snapshotter, "rm", id])?;
        }
        Ok(())
    }

    pub fn label(self) -> &'static str {
        match self {
            Workload::True => "tools: true",
            Workload::Python => "python: import",
            Workload::Prepare => "python: snapshot prepare",
        }
    }

    /// False for the diagnostic rows, which have no target.
    pub fn has_target(self) -> bool {
        self != Workload::Prepare
    }

    pub fn key(self) -> &'static str {
        match self {
            Workload::True => "true",
            Workload::Python => "python-import",
            Workload::Prepare => "python-snapshot-prepare",
        }
    }
}

/// The state a run starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// Kernel caches dropped, no view mounted.
    Cold,
    /// Page cache warm; the image has no other container (pare mounts its view).
    Warm,
    /// Page cache warm and another container of the image runs (its view is up).
    InUse,
}

impl State {
    pub const ALL: [State; 3] = [State::Cold, State::Warm, State::InUse];

    pub fn label(self) -> &'static str {
        match self {
            State::Cold => "cold",
            State::Warm => "warm",
            State::InUse => "warm, in use",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            State::Cold => "cold",
            State::Warm => "warm",
            State::InUse => "warm-in-use",
        }
    }

    /// The largest pare/overlayfs ratio of the medians we aim for while
    /// learning.
    pub fn target(self) -> f64 {
        match self {
            State::Cold => 1.15,
            State::Warm | State::InUse => 1.05,
        }
    }

    /// The largest settled/overlayfs ratio of the medians we aim for: a
    /// settled image costs what overlayfs does.
    pub fn settled_target(self) -> f64 {
        1.02
    }

    /// The largest audit/learn and enforce/learn ratio of the medians we aim
    /// for: judging may not cost more than learning, warm.
    pub fn judged_target(self) -> Option<f64> {
        match self {
            State::Cold => None,
            State::Warm | State::InUse => Some(1.05),
        }
    }
}

/// Where and how a case runs: on overlayfs, or on pare with the image's
/// variant in one mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    /// containerd's overlayfs snapshotter, on the learn variant.
    Overlayfs,
    /// pare, the image variant in learn mode.
    Learn,
    /// pare, the image variant in audit mode.
    Audit,
    /// pare, the image variant in enforce mode.
    Enforce,
    /// The settling pare-snapshotter, the learn variant settled (it ran
    /// there once, untimed): plain overlay, no view.
    Settled,
}

impl Column {
    /// Every column, in the order runs are interleaved and printed.
    pub const ALL: [Column; 5] = [
        Column::Overlayfs,
        Column::Learn,
        Column::Audit,
        Column::Enforce,
        Column::Settled,
    ];

    /// The columns on pare.
    pub const PARE: [Column; 3] = [Column::Learn, Column::Audit, Column::Enforce];

    pub fn snapshotter(self) -> Snapshotter {
        match self {
            Column::Overlayfs => Snapshotter::Overlayfs,
            Column::Learn | Column::Audit | Column::Enforce => Snapshotter::Pare,
            Column::Settled => Snapshotter::PareSettled,
        }
    }

    /// The mode of the image variant the column runs (overlayfs runs the
    /// learn variant: the same image as pare in learn).
    pub fn mode(self) -> Mode {
        match self {
            Column::Overlayfs | Column::Learn | Column::Settled => Mode::Learn,
            Column::Audit => Mode::Audit,
            Column::Enforce => Mode::Enforce,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Column::Overlayfs => "overlayfs",
            Column::Learn => "pare",
            Column::Audit => "pare audit",
            Column::Enforce => "pare enforce",
            Column::Settled => "pare settled",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Column::Overlayfs => "overlayfs",
            Column::Learn => "pare",
            Column::Audit => "pare-audit",
            Column::Enforce => "pare-enforce",
            Column::Settled => "pare-settled",
        }
    }
}

/// The pare column of a pare-snapshotter "view mounted" line, from the name
/// of its mountpoint: `views/sha256-<hex>` in learn,
/// `views/sha256-<hex>.<mode>-<12hex>` judged.
pub fn mounted_column(line: &str) -> Option<Column> {
    let (_, rest) = line.split_once("/views/sha256-")?;
    let name = rest
        .split(|c: char| c.is_whitespace() || c == '\x1b')
        .next()?;
    match name.split_once('.') {
        None => Some(Column::Learn),
        Some((_, judged)) if judged.starts_with("audit-") => Some(Column::Audit),
        Some((_, judged)) if judged.starts_with("enforce-") => Some(Column::Enforce),
        Some(_) => None,
    }
}

/// The cases of one round of `state`, in run order.
pub fn cases(state: State) -> impl Iterator<Item = (Workload, State, Column)> {
    Workload::ALL
        .into_iter()
        .flat_map(move |w| Column::ALL.into_iter().map(move |c| (w, state, c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounted_views_are_told_apart_by_their_mountpoint_names() {
        let line = |mountpoint: &str| {
            format!(
                "INFO view mounted view=sha256:ab (audit 0123456789ab) mountpoint={mountpoint} layers=3 profiled=true"
            )
        };
        let cases = [
            ("/r/views/sha256-ab", Some(Column::Learn)),
            ("/r/views/sha256-ab.audit-0123456789ab", Some(Column::Audit)),
            (
                "/r/views/sha256-ab.enforce-0123456789ab",
                Some(Column::Enforce),
            ),
            ("/r/views/sha256-ab.off-0123456789ab", None),
            ("/r/elsewhere/ab", None),
        ];
        for (mountpoint, column) in cases {
            assert_eq!(mounted_column(&line(mountpoint)), column, "{mountpoint}");
        }
        let ansi = "\x1b[3mmountpoint\x1b[0m\x1b[2m=\x1b[0m/r/views/sha256-ab\x1b[0m \x1b[3mlayers";
        assert_eq!(mounted_column(ansi), Some(Column::Learn));
    }
}
