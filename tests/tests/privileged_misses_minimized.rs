//! A minimized image that lacks what its workload needs, run under
//! pare-snapshotter (learn mode): the names it looked up and does not have
//! are journaled as `absent`, and `pare misses` lists those its source image
//! has, and only those.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pare_tests::node::{PareNode, app_layer, import_tools_image};
use pare_tests::poll::wait_for;
use pare_tests::prereq::{PARE_NODE, privileged};

const IMAGE: &str = "docker.io/pare-tests/lacking:v1";
const MINIMIZED: &str = "docker.io/pare-tests/lacking:v1-pare";

#[test]
fn privileged_misses_names_what_a_minimized_image_lacks() -> Result<()> {
    if !privileged(
        "privileged_misses_names_what_a_minimized_image_lacks",
        PARE_NODE,
    ) {
        return Ok(());
    }
    let mut node = PareNode::start()?;
    node.checked(|node| {
        let app = app_layer(&["a", "b"]);
        let built = import_tools_image(node, IMAGE, &[], &app)?;
        let ctr = node.ctr();

        let out = ctr.run(IMAGE, "learn", "pare", &["sh", "-c", "cat /app/a"])?;
        ensure!(out == "a\n", "{out:?}");
        let compacted: serde_json::Value =
            serde_json::from_str(&node.pare(&["compact", "--json", "--tag", MINIMIZED, IMAGE])?)?;
        let source = compacted["manifest_digest"].as_str().context("digest")?;
        ensure!(
            source != built.manifest_digest.to_string(),
            "a new image: {compacted}"
        );

        // The minimized image has no /app/b and no ls: the workload fails
        // on both, and looks up a name neither image has.
        let workload = "cat /app/a; cat /app/b; ls /app; test -e /app/never; echo done";
        let out = ctr.run(MINIMIZED, "minimized", "pare", &["sh", "-c", workload])?;
        ensure!(
            out == "a\ndone\n",
            "the minimized image lacks /app/b and ls: {out:?}"
        );

        let listed = wait_for(Duration::from_secs(20), "the absent /app/b", || {
            let listed: serde_json::Value =
                serde_json::from_str(&node.pare(&["misses", "--json", MINIMIZED])?)?;
            let has_b = listed["misses"]
                .as_array()
                .is_some_and(|all| all.iter().any(|m| m["path"] == "/app/b"));
            Ok(has_b.then_some(listed))
        })?;
        ensure!(
            listed["source_image"] == built.manifest_digest.to_string(),
            "the source image is named: {listed}"
        );
        let misses = listed["misses"].as_array().context("misses")?;
        let paths: Vec<&str> = misses.iter().filter_map(|m| m["path"].as_str()).collect();
        ensure!(
            misses.iter().all(|m| m["kind"] == "absent"),
            "only absent names: {listed}"
        );
        ensure!(
            paths.contains(&"/usr/bin/ls"),
            "the shell's search for ls: {paths:?}"
        );
        for never in ["/app/a", "/app/never", "/usr/local/bin/ls"] {
            ensure!(
                !paths.contains(&never),
                "{never} is not a name the minimized image lacks: {paths:?}"
            );
        }

        // The text form says the same.
        let text = node.pare(&["misses", MINIMIZED])?;
        ensure!(
            text.lines()
                .any(|l| l.starts_with("absent") && l.contains("/app/b")),
            "{text}"
        );
        ensure!(text.contains("lacks"), "{text}");

        // The source image itself lacks nothing: it was never compacted.
        let source_listed: serde_json::Value =
            serde_json::from_str(&node.pare(&["misses", "--json", IMAGE])?)?;
        ensure!(
            source_listed.get("source_image").is_none()
                && source_listed["misses"]
                    .as_array()
                    .is_some_and(Vec::is_empty),
            "{source_listed}"
        );
        Ok(())
    })?;
    node.stop()
}
