//! `pare profile`: inspect, list and merge profile journals.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use pare_fs::profile::settle::{SettleState, settle_path};
use pare_fs::profile::{self, merge};
use serde::Serialize;

/// The JSON shape of `pare profile show --json` (DESIGN.md contract).
#[derive(Serialize)]
struct ShowJson<'a> {
    image: Option<&'a str>,
    /// Records were lost while the journal was written.
    incomplete: bool,
    entries: &'a [profile::Entry],
    /// Names looked up that the image does not have.
    absent: &'a [profile::Entry],
}

/// Inspect profiles.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Print a profile's entries in first-access order.
    Show {
        /// Print JSON: {"image": ..., "incomplete": bool, "entries": [{"path", "first_access_ns", "accesses"}], "absent": [same]}.
        #[arg(long)]
        json: bool,
        /// Where to look an image up (to find its profile).
        #[command(flatten)]
        node: super::NodeArgs,
        /// A profile journal file, or an image name known to containerd.
        target: String,
    },
    /// List the profiles recorded on this node.
    List {
        /// The snapshotter's state directory.
        #[arg(long, default_value = "/var/lib/pare")]
        root: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Fold IMAGE's misses into its profile, as accesses of their kinds.
    ///
    /// The misses files are set aside (`.accepted-<secs>`). The allowed set
    /// is not changed: it is frozen again, with the accepted paths, at the
    /// next `pare mode IMAGE audit|enforce`. Fails while a learn view
    /// records the profile.
    Accept {
        #[command(flatten)]
        node: super::NodeArgs,
        /// The image.
        image: String,
    },
    /// Merge profiles of one image (runs, nodes): earliest first access, union of kinds.
    ///
    /// The output is written atomically, and is incomplete when any input is.
    /// It cannot be the journal of a running view.
    Merge {
        /// Output journal.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Input journals.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
}

pub fn run(cmd: ProfileCommand) -> anyhow::Result<()> {
    match cmd {
        ProfileCommand::Show { json, node, target } => {
            let file = if Path::new(&target).exists() {
                PathBuf::from(&target)
            } else {
                node.profile_of(&target)?
            };
            show(json, &file)
        }
        ProfileCommand::List { root, json } => list(&root, json),
        ProfileCommand::Accept { node, image } => {
            let (chain, profile) = node.profile_path_of(&image)?;
            accept(&image, &chain, &profile)
        }
        ProfileCommand::Merge { output, inputs } => {
            let mut profiles = Vec::new();
            for input in inputs {
                let p = read_warn(&input)?;
                profiles.push((input, p));
            }
            let merged = merge::merge(&profiles)?;
            merge::write(&merged, &output)?;
            eprintln!(
                "merged {} profiles into {}: {} paths{}",
                profiles.len(),
                output.display(),
                merged.entries.len(),
                if merged.incomplete {
                    " (incomplete: an input lost records)"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}

/// Folds the misses of the profile at `profile` into it through the
/// profile's own writer, then sets the misses files aside.
fn accept(image: &str, chain: &pare_fs::id::ChainId, profile: &Path) -> anyhow::Result<()> {
    let files = pare_fs::policy::misses_files(profile)?;
    let misses = pare_tools::misses::merged(pare_tools::misses::read_all(profile)?);
    if misses.is_empty() {
        println!("{image}: no misses to accept");
        return Ok(());
    }
    let recorder = match profile::Recorder::open(
        profile,
        Some(chain.to_string()),
        std::time::Duration::from_millis(10),
    ) {
        Ok(recorder) => recorder,
        Err(profile::RecorderError::Busy { path }) => anyhow::bail!(
            "cannot accept the misses of {image} yet: a learn view records its profile {} (a container started while the image was in learn mode still runs); nothing was changed, accept again once it stopped",
            path.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot add to the profile {}", profile.display()));
        }
    };
    let handle = recorder.handle();
    for miss in &misses {
        let rel: std::sync::Arc<Path> = std::sync::Arc::from(miss.path.rel());
        handle.record(&rel, miss.kind);
    }
    drop(handle);
    recorder.finish()?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for file in files {
        let mut aside = file.clone().into_os_string();
        aside.push(format!(".accepted-{secs}"));
        std::fs::rename(&file, &aside)
            .with_context(|| format!("cannot set {} aside", file.display()))?;
    }
    println!(
        "{image}: {} misses accepted into {}; the allowed set is frozen again at the next `pare mode {image} audit|enforce`",
        misses.len(),
        profile.display()
    );
    Ok(())
}

fn read_warn(file: &Path) -> anyhow::Result<profile::Profile> {
    let profile = profile::read(file)?;
    if profile.torn_tail_bytes > 0 {
        tracing::warn!(
            profile = %file.display(),
            bytes = profile.torn_tail_bytes,
            "ignored a torn last record (the writer was killed mid-write)"
        );
    }
    if profile.incomplete {
        tracing::warn!(
            profile = %file.display(),
            "the profile is incomplete: records were lost while it was written"
        );
    }
    Ok(profile)
}

/// Prints `text` on stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        done => done.context("cannot write to stdout"),
    }
}

fn show(json: bool, file: &Path) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let profile = read_warn(file)?;
    if json {
        let out = ShowJson {
            image: profile.header.image.as_deref(),
            incomplete: profile.incomplete,
            entries: &profile.entries,
            absent: &profile.absent,
        };
        return emit(&(serde_json::to_string_pretty(&out)? + "\n"));
    }
    let mut text = String::new();
    writeln!(
        text,
        "image: {}",
        profile.header.image.as_deref().unwrap_or("(unknown)")
    )?;
    if profile.incomplete {
        writeln!(
            text,
            "incomplete: records were lost while this profile was written"
        )?;
    }
    for entry in profile.entries.iter().chain(&profile.absent) {
        let kinds: Vec<&str> = entry.accesses.iter().map(|k| k.name()).collect();
        writeln!(
            text,
            "{:>12.3} ms  {:<22} {}",
            entry.first_access_ns as f64 / 1e6,
            kinds.join(","),
            entry.path
        )?;
    }
    writeln!(
        text,
        "{} paths, {} absent names",
        profile.entries.len(),
        profile.absent.len()
    )?;
    emit(&text)
}

#[derive(Serialize)]
struct Listed {
    chain: String,
    file: PathBuf,
    entries: usize,
    last_access_unix_ns: u64,
    incomplete: bool,
    /// `learning` or `settled` (from the snapshotter's settle state).
    state: &'static str,
    /// Learn containers the snapshotter counted.
    containers: u64,
    /// When the image settled, in ns since the Unix epoch.
    settled_unix_ns: Option<u64>,
}

/// When `p`'s latest first access happened, in ns since the Unix epoch
/// (saturating: headers and records are untrusted).
fn last_access_unix_ns(p: &profile::Profile) -> u64 {
    let last = p.entries.iter().map(|e| e.first_access_ns).max();
    p.header.created_unix_ns.saturating_add(last.unwrap_or(0))
}

/// True for files beside profiles that are not journals: merge temporaries,
/// journals set aside as corrupt, frozen allowed sets, misses files (also
/// once accepted) and their writers' locks.
fn not_a_journal(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy());
    path.extension().is_some_and(|e| {
        ["pare-tmp", "allowed", "misses", "lock", "settle"].contains(&e.to_string_lossy().as_ref())
    }) || name.as_deref().is_some_and(|n| n.contains(".settle.tmp-"))
        || name.is_some_and(|n| n.contains(".corrupt-") || n.contains(".accepted-"))
}

fn list(root: &Path, json: bool) -> anyhow::Result<()> {
    let dir = pare_fs::id::profiles_dir(root);
    let mut rows = Vec::new();
    let read = std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for entry in read {
        let path = entry?.path();
        if not_a_journal(&path) {
            continue;
        }
        match profile::read(&path) {
            Ok(p) => {
                let settle = SettleState::read(&settle_path(&path)).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "ignoring an unusable settle state");
                    None
                });
                let settle = settle.unwrap_or_default();
                rows.push(Listed {
                    chain: p.header.image.clone().unwrap_or_else(|| "(unknown)".into()),
                    entries: p.entries.len(),
                    last_access_unix_ns: last_access_unix_ns(&p),
                    incomplete: p.incomplete,
                    file: path,
                    state: if settle.is_settled() {
                        "settled"
                    } else {
                        "learning"
                    },
                    containers: settle.containers,
                    settled_unix_ns: settle.settled_unix_ns,
                });
            }
            Err(e) => tracing::warn!(error = %e, "skipping an unreadable profile"),
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.last_access_unix_ns));
    if json {
        return emit(&(serde_json::to_string_pretty(&rows)? + "\n"));
    }
    use std::fmt::Write as _;
    let mut text = String::new();
    writeln!(
        text,
        "{:<73} {:>8}  {:<23}  {:<8}  {:>10}  {:<19}  COMPLETE",
        "CHAIN", "PATHS", "LAST FIRST-ACCESS (UTC)", "STATE", "CONTAINERS", "SETTLED (UTC)"
    )?;
    for r in &rows {
        writeln!(
            text,
            "{:<73} {:>8}  {:<23}  {:<8}  {:>10}  {:<19}  {}",
            r.chain,
            r.entries,
            utc(r.last_access_unix_ns),
            r.state,
            r.containers,
            r.settled_unix_ns.map_or_else(|| "-".to_string(), utc),
            if r.incomplete {
                "no (records were lost)"
            } else {
                "yes"
            }
        )?;
    }
    emit(&text)
}

/// `YYYY-MM-DD HH:MM:SS` of a Unix time in ns.
fn utc(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pare_fs::profile::journal::{self, FLAG_INCOMPLETE, Header};

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_700_000_000_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(utc(u64::MAX), "2554-07-21 23:34:33");
    }

    fn journal(created: u64, flags: u16, records: &[(u64, &[u8])]) -> profile::Profile {
        let mut bytes = journal::encode_header(
            &Header {
                image: Some("sha256:x".into()),
                created_unix_ns: created,
                writer: "t".into(),
            },
            flags,
        );
        for (ns, path) in records {
            journal::encode_record(&mut bytes, *ns, 1, path);
        }
        profile::read_bytes(Path::new("t"), &bytes).unwrap()
    }

    #[test]
    fn last_access_saturates_on_hostile_timestamps() {
        type Records<'a> = &'a [(u64, &'a [u8])];
        let cases: [(u64, Records, u64); 4] = [
            (10, &[], 10),
            (10, &[(5, b"/a"), (7, b"/b")], 17),
            (u64::MAX, &[(u64::MAX, b"/a")], u64::MAX),
            (1, &[(u64::MAX, b"/a")], u64::MAX),
        ];
        for (created, records, want) in cases {
            let p = journal(created, 0, records);
            assert_eq!(last_access_unix_ns(&p), want, "{created} {records:?}");
        }
    }

    #[test]
    fn show_json_says_whether_the_profile_is_incomplete() {
        for (flags, want) in [(0, false), (FLAG_INCOMPLETE, true)] {
            let p = journal(0, flags, &[(1, b"/a")]);
            let out = ShowJson {
                image: p.header.image.as_deref(),
                incomplete: p.incomplete,
                entries: &p.entries,
                absent: &p.absent,
            };
            let json = serde_json::to_value(&out).unwrap();
            assert_eq!(json["incomplete"], serde_json::Value::Bool(want));
            assert_eq!(json["image"], "sha256:x");
            assert_eq!(json["entries"][0]["path"], "/a");
        }
    }

    #[test]
    fn list_skips_temporaries_set_aside_journals_and_policy_files() {
        let cases = [
            ("sha256-abc", false),
            ("sha256:abc", false),
            ("sha256:abc.allowed", true),
            ("sha256:abc.misses", true),
            ("sha256:abc.enforce-0123456789ab.misses", true),
            ("sha256:abc.enforce-0123456789ab.2.misses", true),
            ("sha256:abc.enforce-0123456789ab.misses.lock", true),
            ("sha256:abc.settle", true),
            ("sha256:abc.settle.tmp-42", true),
            (
                "sha256:abc.audit-0123456789ab.misses.accepted-1700000000",
                true,
            ),
            ("sha256-abc.pare-tmp", true),
            ("sha256-abc.corrupt-1700000000", true),
            ("sha256-abc.corrupt-1700000000.2", true),
        ];
        for (name, skipped) in cases {
            assert_eq!(not_a_journal(Path::new(name)), skipped, "{name}");
        }
    }
}
