//! Running containers survive pare-snapshotter's restarts: three containers
//! loop (each step resolves a name never resolved before, reads that file and
//! execs a binary) while the daemon is SIGKILLed, SIGTERMed, and replaced by
//! another copy of its binary; every loop finishes without an error, a new
//! container starts after each restart on the same shared view, and the
//! profile records names first touched after each restart.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use pare_tests::containerd::Ctr;
use pare_tests::images::MTIME;
use pare_tests::node::{PareNode, import_tools_image};
use pare_tests::oci::Layer;
use pare_tests::prereq::{PARE_NODE, privileged};
use pare_tests::snapshotter::snapshotter_bin;

const IMAGE: &str = "docker.io/pare-tests/restart:v1";
const LOOPS: usize = 3;
/// Files per loop: more than the steps a loop takes, so every step's name is new.
const FILES: usize = 2000;

/// The loop each container runs: `/app/loop.sh N` until `/out/stop` exists.
const LOOP: &str = r#"#!/bin/sh
c=$1
k=0
while [ ! -e /out/stop ]; do
  f=/data/c$c/f$k
  v=$(cat "$f") || { echo "FAIL read $f" >> /out/$c.log; exit 1; }
  [ "$v" = "c$c-$k" ] || { echo "FAIL content $f: $v" >> /out/$c.log; exit 1; }
  /usr/bin/true || { echo "FAIL exec true at $k" >> /out/$c.log; exit 1; }
  k=$((k+1))
  [ $k -lt 2000 ] || { echo "FAIL out of fresh names" >> /out/$c.log; exit 1; }
  echo $k > /out/$c.step.tmp && mv /out/$c.step.tmp /out/$c.step
  sleep 0.05
done
echo "DONE $k" >> /out/$c.log
"#;

fn app_layer() -> Layer {
    let mut app = Layer::new(MTIME);
    app.dir("app", 0o755);
    app.file("app/loop.sh", LOOP, 0o755);
    app.file("app/keep.txt", "keep\n", 0o644);
    app.dir("data", 0o755);
    app.dir("out", 0o755);
    for c in 0..LOOPS {
        app.dir(&format!("data/c{c}"), 0o755);
        for k in 0..FILES {
            app.file(&format!("data/c{c}/f{k}"), format!("c{c}-{k}\n"), 0o644);
        }
    }
    app
}

fn step(out: &Path, c: usize) -> u64 {
    std::fs::read_to_string(out.join(format!("{c}.step")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn failures(out: &Path) -> Vec<String> {
    (0..LOOPS)
        .filter_map(|c| std::fs::read_to_string(out.join(format!("{c}.log"))).ok())
        .flat_map(|t| t.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| l.starts_with("FAIL"))
        .collect()
}

/// Waits until every loop is `ahead` steps past `from`, failing on a loop error.
fn wait_progress(out: &Path, from: &[u64], ahead: u64, what: &str) -> Result<Vec<u64>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let fails = failures(out);
        ensure!(fails.is_empty(), "a loop failed {what}: {fails:?}");
        let now: Vec<u64> = (0..LOOPS).map(|c| step(out, c)).collect();
        if now.iter().zip(from).all(|(n, f)| *n >= f + ahead) {
            return Ok(now);
        }
        ensure!(
            Instant::now() < deadline,
            "loops did not progress {what}: steps {now:?}, from {from:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Runs a fresh container once containerd has redialed the restarted daemon.
fn run_new_container(ctr: &Ctr, id: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    loop {
        attempt += 1;
        match ctr.run(
            IMAGE,
            &format!("{id}-{attempt}"),
            "pare",
            &["cat", "/app/keep.txt"],
        ) {
            Ok(out) => {
                ensure!(out == "keep\n", "new container printed {out:?}");
                return Ok(());
            }
            Err(e) if format!("{e:#}").contains("unavailable") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e.context(format!("new container {id}"))),
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Restart {
    Kill,
    Term,
    Upgrade,
}

#[test]
fn privileged_running_containers_survive_kill_term_and_upgrade_of_the_snapshotter() -> Result<()> {
    if !privileged(
        "privileged_running_containers_survive_kill_term_and_upgrade_of_the_snapshotter",
        PARE_NODE,
    ) {
        return Ok(());
    }
    let mut node = PareNode::start()?;
    node.checked(run)?;
    node.stop()
}

fn run(node: &mut PareNode) -> Result<()> {
    let image = import_tools_image(node, IMAGE, &["mv"], &app_layer())?;
    let chain = image.top_chain_id().context("layers")?.to_string();
    let ctr = node.ctr();
    let scratch = node.scratch.path().to_path_buf();
    let pare = &mut node.pare;
    let out: PathBuf = scratch.join("out");
    std::fs::create_dir(&out)?;
    let mount = format!("type=bind,src={},dst=/out,options=rbind:rw", out.display());
    for c in 0..LOOPS {
        ctr.run_with(
            &["--detach", "--mount", &mount],
            IMAGE,
            &format!("loop-{c}"),
            "pare",
            &["/app/loop.sh", &c.to_string()],
        )?;
    }
    let mut steps = wait_progress(&out, &[0; LOOPS], 5, "before any restart")?;
    let views = pare.mounted_views();
    ensure!(views.len() == 1, "one shared view, found {views:?}");
    let servers = pare.view_servers();
    ensure!(servers.len() == 1, "one view server, found {servers:?}");

    let upgraded = scratch.join("pare-snapshotter-upgraded");
    let mut restarted_at = Vec::new();
    for (i, how) in [Restart::Kill, Restart::Term, Restart::Upgrade]
        .into_iter()
        .enumerate()
    {
        match how {
            Restart::Kill => pare.kill()?,
            Restart::Term => pare.terminate()?,
            Restart::Upgrade => {
                pare.terminate()?;
                std::fs::copy(snapshotter_bin(), &upgraded)?;
            }
        }
        // The containers keep going while no daemon runs at all.
        steps = wait_progress(
            &out,
            &steps,
            5,
            &format!("while the daemon was down after {how:?}"),
        )?;
        match how {
            Restart::Upgrade => pare.restart_with(&upgraded)?,
            _ => pare.restart()?,
        }
        restarted_at.push(unix_ns());
        run_new_container(&ctr, &format!("new-{i}"))?;
        steps = wait_progress(&out, &steps, 5, &format!("after the restart after {how:?}"))?;
        ensure!(
            pare.mounted_views().len() == 1 && pare.view_servers() == servers,
            "after {how:?} the same view server serves every container: {:?} vs {servers:?}",
            pare.view_servers()
        );
    }
    std::fs::write(out.join("stop"), b"")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    for c in 0..LOOPS {
        loop {
            let log = std::fs::read_to_string(out.join(format!("{c}.log"))).unwrap_or_default();
            ensure!(!log.contains("FAIL"), "loop {c} failed: {log}");
            if log.contains("DONE") {
                break;
            }
            if Instant::now() > deadline {
                bail!("loop {c} did not finish: {log:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for c in 0..LOOPS {
        ctr.remove(&format!("loop-{c}"))?;
    }

    // The profile kept recording across every restart: names first resolved
    // after each restart are in it, with their times.
    let profile = pare_fs::profile::read(&pare.root().join("profiles").join(&chain))?;
    let created = profile.header.created_unix_ns;
    for (i, at) in restarted_at.iter().enumerate() {
        let later = profile
            .entries
            .iter()
            .filter(|e| e.path.to_string().starts_with("/data/c"))
            .filter(|e| created.saturating_add(e.first_access_ns) > *at)
            .count();
        ensure!(
            later >= LOOPS,
            "restart {i}: only {later} data files first touched after it"
        );
    }
    // With its last container gone, the view stops and its server exits.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !pare.mounted_views().is_empty() || !pare.view_servers().is_empty() {
        ensure!(
            Instant::now() < deadline,
            "the view outlived its last container: {:?}",
            pare.mounted_views()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
