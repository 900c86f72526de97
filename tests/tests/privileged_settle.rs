//! Settling under a real containerd: after `--settle-after` learn containers
//! in a row without a new first access, an image's new containers run on a
//! plain overlay of its layers (no view) with the same output; the state
//! survives a restart of the snapshotter; a sampled container (here every
//! second) that touches a new file grows the profile and unsettles the image.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pare_tests::mounts::Scratch;
use pare_tests::node::{PareNode, app_layer, import_tools_image};
use pare_tests::poll::{eventually, wait_for};
use pare_tests::prereq::{PARE_NODE, pare_bin, privileged};

const IMAGE: &str = "docker.io/pare-tests/settle:v1";

/// The image's row of `pare profile list --json` (the node has one image).
fn image_row(node: &PareNode) -> Result<Option<serde_json::Value>> {
    let out = std::process::Command::new(pare_bin())
        .args(["profile", "list", "--json", "--root"])
        .arg(node.pare.root())
        .output()?;
    ensure!(
        out.status.success(),
        "pare profile list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(rows.as_array().and_then(|all| all.first()).cloned())
}

/// The image's row of `pare profile list --json`, once it has counted
/// `containers` containers.
fn counted(node: &PareNode, containers: u64) -> Result<serde_json::Value> {
    wait_for(
        Duration::from_secs(30),
        &format!("{containers} containers counted"),
        || Ok(image_row(node)?.filter(|r| r["containers"] == containers)),
    )
}

#[test]
fn privileged_settled_images_run_on_plain_overlayfs_but_for_a_sample() -> Result<()> {
    let name = "privileged_settled_images_run_on_plain_overlayfs_but_for_a_sample";
    if !privileged(name, PARE_NODE) {
        return Ok(());
    }
    let args = ["--settle-after", "2", "--sample-rate", "0.5"];
    let mut node = PareNode::start_with_pare_args(Scratch::new()?, &args)?;
    node.checked(|node| {
        import_tools_image(node, IMAGE, &[], &app_layer(&["a", "b"]))?;
        let ctr = node.ctr();
        // Every container does the same; the detached ones then wait.
        let run = ["sh", "-c", "cat /app/a; sleep 0"];
        let wait = ["sh", "-c", "cat /app/a; sleep 600"];

        // Learning: the first container grows the profile, two more do not.
        for (i, want_state) in [(1, "learning"), (2, "learning"), (3, "settled")] {
            let out = ctr.run(IMAGE, &format!("learn-{i}"), "pare", &run)?;
            ensure!(out == "a\n", "{out:?}");
            let row = counted(node, i)?;
            ensure!(row["state"] == want_state, "after {i}: {row}");
        }
        let row = counted(node, 3)?;
        ensure!(row["settled_unix_ns"].as_u64().is_some(), "{row}");

        // The state is kept across a restart of the snapshotter.
        node.pare.terminate()?;
        node.pare.restart()?;
        // containerd redials the restarted snapshotter with backoff.
        eventually(
            Duration::from_secs(30),
            "containerd to reach pare again",
            || {
                Ok(ctr
                    .ctr(&["snapshots", "--snapshotter", "pare", "ls"])
                    .is_ok())
            },
        )?;

        // Settled: the first start of the sample learns (a view is mounted
        // for it), the second runs on plain overlayfs with the same output.
        ctr.run_detached(IMAGE, "sampled", "pare", &wait)?;
        ensure!(
            node.pare.mounted_views().len() == 1,
            "a sampled container gets a view: {:?}",
            node.pare.mounted_views()
        );
        ctr.run_detached(IMAGE, "settled", "pare", &wait)?;
        ensure!(
            node.pare.mounted_views().len() == 1,
            "a settled image's container gets no view of its own: {:?}",
            node.pare.mounted_views()
        );
        let mounts = ctr.ctr(&[
            "snapshots",
            "--snapshotter",
            "pare",
            "mounts",
            "/mnt",
            "settled",
        ])?;
        let mounts = String::from_utf8(mounts.stdout)?;
        ensure!(
            mounts.contains("lowerdir=") && !mounts.contains("/views/"),
            "a plain overlay of the layer directories: {mounts}"
        );
        let exec = [
            "tasks",
            "exec",
            "--exec-id",
            "check",
            "settled",
            "cat",
            "/app/a",
        ];
        let out = String::from_utf8(ctr.ctr(&exec)?.stdout)?;
        ensure!(out == "a\n", "the same file on plain overlayfs: {out:?}");
        ctr.remove("settled")?;
        ctr.remove("sampled")?;
        let row = counted(node, 4)?;
        ensure!(
            row["state"] == "settled",
            "the sampled container added nothing: {row}"
        );

        // The next start is sampled and touches a new file: the image learns again.
        let out = ctr.run(IMAGE, "sampled-new", "pare", &["cat", "/app/b"])?;
        ensure!(out == "b\n", "{out:?}");
        let row = wait_for(Duration::from_secs(30), "the image unsettled", || {
            Ok(image_row(node)?.filter(|r| r["state"] == "learning"))
        })?;
        ensure!(row["settled_unix_ns"].is_null(), "{row}");
        let shown: serde_json::Value =
            serde_json::from_str(&node.pare(&["profile", "show", "--json", IMAGE])?)?;
        let paths: Vec<&str> = shown["entries"]
            .as_array()
            .context("entries")?
            .iter()
            .filter_map(|e| e["path"].as_str())
            .collect();
        ensure!(paths.contains(&"/app/b"), "{paths:?}");
        ctr.run_detached(IMAGE, "learning-again", "pare", &["sleep", "600"])?;
        ensure!(
            node.pare.mounted_views().len() == 1,
            "learning again, a container gets a view: {:?}",
            node.pare.mounted_views()
        );
        ctr.remove("learning-again")?;
        Ok(())
    })?;
    node.stop()
}
