//! The shipped systemd unit and the behaviour it relies on. This machine's
//! PID 1 is not systemd, so the unit is checked with `systemd-analyze verify`
//! and what it relies on is tested directly: view servers sit in process
//! groups of their own, ignore SIGHUP and survive signals to the daemon's
//! group; the daemon tells `$NOTIFY_SOCKET` it is ready only once recovery
//! has adopted the running views and its socket answers.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use pare_tests::containerd::run_with_timeout;
use pare_tests::images::MTIME;
use pare_tests::mounts::Scratch;
use pare_tests::node::{PareNode, import_tools_image};
use pare_tests::oci::Layer;
use pare_tests::prereq::{Need, PARE_NODE, privileged};
use pare_tests::snapshotter::snapshotter_bin;
use rustix::process::{Pid, Signal};

const UNIT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/pare-snapshotter.service"
);
const IMAGE: &str = "docker.io/pare-tests/systemd:v1";

/// `key=value` settings of the unit, in order.
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn privileged_the_shipped_unit_verifies_and_keeps_view_servers_across_restarts() -> Result<()> {
    if !privileged(
        "privileged_the_shipped_unit_verifies_and_keeps_view_servers_across_restarts",
        &[Need::Command("systemd-analyze")],
    ) {
        return Ok(());
    }
    let unit = std::fs::read_to_string(UNIT)?;
    let set = settings(&unit);
    let get = |key: &str| -> Vec<&str> {
        set.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    ensure!(get("Type") == ["notify"], "Type {:?}", get("Type"));
    ensure!(
        get("KillMode") == ["process"],
        "KillMode {:?}",
        get("KillMode")
    );
    ensure!(
        get("OOMPolicy") == ["continue"],
        "OOMPolicy {:?}",
        get("OOMPolicy")
    );
    ensure!(
        get("RequiredBy").is_empty() && get("Requires").is_empty() && get("BindsTo").is_empty()
    );
    ensure!(get("Before") == ["containerd.service"]);
    ensure!(
        get("WantedBy")
            .iter()
            .any(|w| w.split(' ').any(|u| u == "containerd.service"))
    );
    ensure!(
        get("MountFlags").is_empty()
            && get("PrivateTmp").is_empty()
            && get("ProtectSystem").is_empty(),
        "the unit must stay in the host's mount namespace"
    );
    // verify needs ExecStart to exist: point it at the built binary.
    let scratch = Scratch::new()?;
    let copy = scratch.path().join("pare-snapshotter.service");
    std::fs::write(
        &copy,
        unit.replace(
            "/usr/local/bin/pare-snapshotter",
            &snapshotter_bin().display().to_string(),
        ),
    )?;
    let out = run_with_timeout(
        Command::new("systemd-analyze").arg("verify").arg(&copy),
        Duration::from_secs(60),
    )?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {} {said}",
        out.status
    );
    Ok(())
}

fn pgid(pid: i32) -> Result<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &stat[stat.rfind(')').context("stat")? + 2..];
    rest.split(' ')
        .nth(2)
        .context("pgrp")?
        .parse()
        .context("pgrp")
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[test]
fn privileged_view_servers_survive_the_daemons_group_signals_and_readiness_follows_recovery()
-> Result<()> {
    if !privileged(
        "privileged_view_servers_survive_the_daemons_group_signals_and_readiness_follows_recovery",
        PARE_NODE,
    ) {
        return Ok(());
    }
    let mut node = PareNode::start()?;
    node.checked(|node| {
        let mut app = Layer::new(MTIME);
        app.dir("app", 0o755);
        app.file("app/keep.txt", "keep\n", 0o644);
        import_tools_image(node, IMAGE, &[], &app)?;
        let scratch = node.scratch.path().to_path_buf();
        let pare = &mut node.pare;
        let ctr = node.containerd.ctr();
        ctr.run_detached(IMAGE, "sleeper", "pare", &["sleep", "600"])?;
        let servers = pare.view_servers();
        ensure!(servers.len() == 1, "one view server: {servers:?}");
        let server = servers[0];
        let daemon = pare.pid().context("daemon runs")? as i32;
        ensure!(
            pgid(server)? == server,
            "the view server leads its own process group"
        );
        ensure!(pgid(daemon)? != pgid(server)?);

        // SIGHUP (a closing terminal) does not stop a view server.
        rustix::process::kill_process(Pid::from_raw(server).context("pid")?, Signal::HUP)?;
        // SIGTERM to the daemon's whole process group (a terminal's ^C, or a
        // unit that signals more than its main process) stops the daemon only.
        rustix::process::kill_process_group(Pid::from_raw(daemon).context("pid")?, Signal::TERM)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while alive(daemon) {
            ensure!(Instant::now() < deadline, "the daemon ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = pare.terminate(); // reaps the exited child
        std::thread::sleep(Duration::from_millis(200));
        ensure!(
            alive(server),
            "the view server died with the daemon's group"
        );
        let exec = ctr.ctr(&[
            "tasks",
            "exec",
            "--exec-id",
            "probe",
            "sleeper",
            "cat",
            "/app/keep.txt",
        ])?;
        ensure!(
            exec.stdout == b"keep\n",
            "the running container still reads its image: {exec:?}"
        );

        // Readiness: READY=1 only after the running view was adopted and the
        // socket answers.
        let notify_path = scratch.join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path)?;
        notify.set_read_timeout(Some(Duration::from_secs(30)))?;
        pare.set_env("NOTIFY_SOCKET", &notify_path.display().to_string());
        pare.restart()?;
        let mut buf = [0u8; 256];
        let n = notify.recv(&mut buf).context("no readiness notification")?;
        ensure!(
            buf[..n].starts_with(b"READY=1\n"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        let log = pare.log_text();
        let adopted = log
            .rfind("view adopted")
            .context("the restart adopted the view")?;
        let serving = log.rfind("serving").context("serving logged")?;
        ensure!(adopted < serving, "adopted before serving");
        ensure!(std::os::unix::net::UnixStream::connect(pare.socket()).is_ok());
        ensure!(
            pare.view_servers() == [server],
            "the same view server serves on"
        );
        ctr.remove("sleeper")?;
        Ok(())
    })?;
    node.stop()
}
