//! Lingering views under a real containerd: sequential containers of an
//! image share one view mount; the view goes after the linger time, and at
//! shutdown.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use pare_tests::mounts::Scratch;
use pare_tests::node::{PareNode, app_layer, import_tools_image};
use pare_tests::poll::wait_for;
use pare_tests::prereq::{PARE_NODE, privileged};

const IMAGE: &str = "docker.io/pare-tests/linger:v1";
const LINGER: Duration = Duration::from_secs(3);

/// How many views were mounted so far (each view server logs its mount,
/// with its serving threads).
fn mounted(node: &PareNode) -> usize {
    node.pare
        .log_text()
        .lines()
        .filter(|l| l.contains("view mounted") && l.contains("threads"))
        .count()
}

/// True once the removal of container `id`'s snapshot left its view
/// lingering (containerd's garbage collection removes it after `ctr run
/// --rm` returns; from the snapshotter's log).
fn left_lingering(node: &PareNode, id: &str) -> bool {
    let key = format!("/{id}\"");
    node.pare
        .log_text()
        .lines()
        .any(|l| l.contains("view lingers after its last container") && l.contains(&key))
}

#[test]
fn privileged_views_linger_between_sequential_containers() -> Result<()> {
    let name = "privileged_views_linger_between_sequential_containers";
    if !privileged(name, PARE_NODE) {
        return Ok(());
    }
    let args = ["--linger-seconds", "3"];
    let mut node = PareNode::start_with_pare_args(Scratch::new()?, &args)?;
    node.checked(|node| {
        import_tools_image(node, IMAGE, &[], &app_layer(&["a"]))?;
        let ctr = node.ctr();
        for i in 1..=2 {
            let out = ctr.run(IMAGE, &format!("seq-{i}"), "pare", &["cat", "/app/a"])?;
            ensure!(out == "a\n", "{out:?}");
        }
        ensure!(
            mounted(node) == 1,
            "two sequential containers, one view mount"
        );
        // Once containerd removed the second container, the view lingers.
        let idle = wait_for(Duration::from_secs(20), "the last container gone", || {
            Ok(left_lingering(node, "seq-2").then(Instant::now))
        })?;
        ensure!(node.pare.mounted_views().len() == 1, "it lingers");
        wait_for(Duration::from_secs(20), "the view to go", || {
            Ok(node.pare.mounted_views().is_empty().then_some(()))
        })?;
        ensure!(
            idle.elapsed() >= LINGER - Duration::from_millis(500),
            "not before its linger time: gone {:?} after its last container",
            idle.elapsed()
        );

        // A lingering view goes at shutdown.
        let out = ctr.run(IMAGE, "seq-3", "pare", &["cat", "/app/a"])?;
        ensure!(out == "a\n", "{out:?}");
        ensure!(mounted(node) == 2);
        wait_for(Duration::from_secs(20), "the last container gone", || {
            Ok(left_lingering(node, "seq-3").then_some(()))
        })?;
        node.pare.terminate()?;
        ensure!(
            node.pare.mounted_views().is_empty(),
            "lingering views are unmounted at shutdown: {:?}",
            node.pare.mounted_views()
        );
        // Up again, for the node's own stop.
        node.pare.restart()
    })?;
    node.stop()
}
