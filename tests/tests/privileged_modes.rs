//! Per-image modes under a real containerd and pare-snapshotter: learn
//! records, audit serves everything and lists what the allowed set lacks,
//! enforce hides it, and accepting the misses lets the next enforce show it.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pare_tests::node::{PareNode, app_layer, import_tools_image};
use pare_tests::poll::{eventually, wait_for};
use pare_tests::prereq::{PARE_NODE, privileged};

const IMAGE: &str = "docker.io/pare-tests/modes:v1";

/// The misses of IMAGE as `pare misses --json` prints them.
fn misses(node: &PareNode) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(
        &node.pare(&["misses", "--json", IMAGE])?,
    )?)
}

#[test]
fn privileged_learn_audit_enforce_and_accept() -> Result<()> {
    if !privileged("privileged_learn_audit_enforce_and_accept", PARE_NODE) {
        return Ok(());
    }
    let mut node = PareNode::start()?;
    node.checked(|node| {
        let app = app_layer(&["a", "b", "c"]);
        import_tools_image(node, IMAGE, &[], &app)?;
        let ctr = node.ctr();

        // learn: the profile grows with what the workload uses. One learn
        // container keeps running (its view records the profile).
        ctr.run_detached(IMAGE, "learn-long", "pare", &["sleep", "600"])?;
        let out = ctr.run(
            IMAGE,
            "learn-1",
            "pare",
            &["sh", "-c", "cat /app/a; ls /app"],
        )?;
        ensure!(out == "a\na\nb\nc\n", "{out:?}");

        // audit: everything is served; what the allowed set lacks is a miss.
        let set = node.pare(&["mode", IMAGE, "audit"])?;
        ensure!(set.contains("audit"), "{set}");
        let out = ctr.run(IMAGE, "audit-1", "pare", &["cat", "/app/a", "/app/b"])?;
        ensure!(out == "a\nb\n", "audit serves everything: {out:?}");
        let seen = wait_for(Duration::from_secs(20), "the miss of /app/b", || {
            let listed = misses(node)?;
            let found = listed["misses"].as_array().and_then(|all| {
                all.iter()
                    .find(|m| m["path"] == "/app/b" && m["kind"] == "read")
                    .cloned()
            });
            Ok(found)
        })?;
        let containers: Vec<&str> = seen["processes"]
            .as_array()
            .context("processes")?
            .iter()
            .filter_map(|p| p["container"].as_str())
            .collect();
        ensure!(containers == ["audit-1"], "who asked: {seen}");
        ensure!(misses(node)?["mode"] == "audit");
        ensure!(
            !misses(node)?["misses"]
                .as_array()
                .context("misses")?
                .iter()
                .any(|m| m["path"] == "/app/a"),
            "/app/a is allowed"
        );

        // enforce: names outside the allowed set do not exist.
        node.pare(&["mode", IMAGE, "enforce"])?;
        let listed = node.pare(&["mode", "--json"])?;
        let modes: serde_json::Value = serde_json::from_str(&listed)?;
        ensure!(
            modes[0]["image"] == IMAGE && modes[0]["mode"] == "enforce",
            "{listed}"
        );
        let out = ctr.run(IMAGE, "enforce-1", "pare", &["ls", "/app"])?;
        ensure!(out == "a\n", "only the allowed name is listed: {out:?}");
        let err = ctr
            .run(IMAGE, "enforce-2", "pare", &["cat", "/app/b"])
            .expect_err("/app/b is hidden in enforce mode");
        ensure!(
            format!("{err:#}").contains("No such file"),
            "the error: {err:#}"
        );
        let out = ctr.run(IMAGE, "enforce-3", "pare", &["cat", "/app/a"])?;
        ensure!(out == "a\n", "{out:?}");

        // accept refuses, changing nothing, while a learn view records.
        let err = node
            .pare(&["profile", "accept", IMAGE])
            .expect_err("the learn view of learn-long holds the profile");
        ensure!(
            format!("{err:#}").contains("a learn view records its profile"),
            "{err:#}"
        );
        ensure!(
            misses(node)?["misses"]
                .as_array()
                .is_some_and(|all| all.iter().any(|m| m["path"] == "/app/b")),
            "the misses are kept"
        );
        ctr.remove("learn-long")?;

        // accept: the misses join the profile; the next enforce shows /app/b.
        // The learn view may still hold the profile until its snapshot is
        // collected.
        eventually(Duration::from_secs(30), "pare profile accept", || {
            Ok(node.pare(&["profile", "accept", IMAGE]).is_ok())
        })?;
        let left = misses(node)?;
        ensure!(
            left["misses"].as_array().is_some_and(Vec::is_empty),
            "accepted misses are set aside: {left}"
        );
        node.pare(&["mode", IMAGE, "enforce"])?;
        let out = ctr.run(IMAGE, "enforce-4", "pare", &["cat", "/app/a", "/app/b"])?;
        ensure!(out == "a\nb\n", "{out:?}");
        let out = ctr.run(IMAGE, "enforce-5", "pare", &["ls", "/app"])?;
        ensure!(out == "a\nb\n", "/app/c stays hidden: {out:?}");
        Ok(())
    })?;
    node.stop()
}
