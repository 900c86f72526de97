//! The rollout workflow on the Debian Python image under a real containerd:
//! learn with one workload; audit lets a second workload that touches more
//! run and names the module files it used with its container; enforce makes
//! the second fail with ModuleNotFoundError while the first gives the same
//! answer, `ls /bin` shows only kept names and `/bin/sh` is gone unless
//! included; after `pare profile accept` and enforce again, the second runs.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use pare_fs::id::{ChainId, profile_path};
use pare_fs::policy::{AllowedSet, allowed_path};
use pare_tests::debian;
use pare_tests::node::PareNode;
use pare_tests::oci::{Image, ImageConfig};
use pare_tests::poll::{eventually, wait_for};
use pare_tests::prereq::{DEBIAN, PARE_NODE, privileged};

const IMAGE: &str = "docker.io/pare-tests/rollout-python:bookworm";

/// What the workload learned on does, and its answer.
const FIRST: &str =
    "import json, hashlib; print(json.dumps({'sha': hashlib.sha256(b'pare').hexdigest()[:12]}))";
/// A workload that needs modules the first never loaded.
const SECOND: &str = "import xml.dom.minidom; print(xml.dom.minidom.parseString('<rollout/>').documentElement.tagName)";
/// Whether the image has a shell, asked without one.
const HAS_SH: &str = "import os; print(os.path.exists('/bin/sh'))";

/// Kept beside the profile in enforce mode: `ls` and `/bin` (the workload
/// never went through it: `python3` is found in `/usr/bin` first), to look.
const WITH_LS: [&str; 4] = ["--include-exec", "/usr/bin/ls", "--include", "/bin"];

#[test]
fn privileged_rollout_learn_audit_enforce_accept() -> Result<()> {
    let name = "privileged_rollout_learn_audit_enforce_accept";
    if !(privileged(name, PARE_NODE) && privileged(name, DEBIAN)) {
        return Ok(());
    }
    let base = debian::dir_layer(&debian::rootfs()?)?;
    let mut node = PareNode::start()?;
    node.checked(|node| {
        let tar = node.scratch.path().join("python.tar");
        let built = Image::new()
            .built_layer(base)
            .config(ImageConfig {
                cmd: vec!["python3".into()],
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ],
                ..ImageConfig::default()
            })
            .write_oci_archive(IMAGE, &tar)?;
        let chain = ChainId::of(
            &built
                .layers
                .iter()
                .map(|l| l.diff_id.clone())
                .collect::<Vec<_>>(),
        )
        .context("the image has layers")?;
        let ctr = node.ctr();
        ctr.import(&tar, "pare")?;
        let python = |id: &str, code: &str| ctr.run(IMAGE, id, "pare", &["python3", "-c", code]);

        // learn
        let answer = python("learn", FIRST)?;
        ensure!(answer.starts_with("{\"sha\": "), "{answer:?}");

        // audit: the second workload runs, and its module files are misses
        // with the container that read them.
        node.pare(&["mode", IMAGE, "audit"])?;
        ensure!(python("audit-first", FIRST)? == answer);
        ensure!(python("audit-second", SECOND)? == "rollout\n");
        let minidom = wait_for(
            Duration::from_secs(20),
            "the misses of xml.dom.minidom",
            || {
                let listed: serde_json::Value =
                    serde_json::from_str(&node.pare(&["misses", "--json", IMAGE])?)?;
                let found = listed["misses"].as_array().and_then(|all| {
                    all.iter()
                        .find(|m| {
                            m["path"]
                                .as_str()
                                .is_some_and(|p| p.ends_with("/xml/dom/minidom.py"))
                        })
                        .cloned()
                });
                Ok(found)
            },
        )?;
        let containers: Vec<&str> = minidom["processes"]
            .as_array()
            .context("processes")?
            .iter()
            .filter_map(|p| p["container"].as_str())
            .collect();
        ensure!(containers == ["audit-second"], "who read it: {minidom}");

        // enforce: the second workload fails, the first answers the same.
        let mut enforce = vec!["mode", IMAGE, "enforce"];
        enforce.extend_from_slice(&WITH_LS);
        node.pare(&enforce)?;
        let err = python("enforce-second", SECOND).expect_err("xml is hidden in enforce mode");
        ensure!(
            format!("{err:#}").contains("ModuleNotFoundError"),
            "the error: {err:#}"
        );
        ensure!(python("enforce-first", FIRST)? == answer);
        ensure!(
            python("enforce-sh", HAS_SH)? == "False\n",
            "/bin/sh is hidden"
        );

        // `ls /bin` lists exactly the allowed set's names there.
        let listed = ctr.run(IMAGE, "enforce-ls", "pare", &["ls", "/bin/"])?;
        let shown: BTreeSet<&str> = listed.lines().collect();
        let allowed = AllowedSet::read(&allowed_path(&profile_path(node.pare.root(), &chain)))?;
        let bin = if built_bin_is_link(&allowed) {
            "/usr/bin/"
        } else {
            "/bin/"
        };
        let kept: BTreeSet<String> = allowed
            .paths()
            .iter()
            .filter_map(|p| p.to_string().strip_prefix(bin).map(String::from))
            .filter(|rest| !rest.contains('/'))
            .collect();
        let kept: BTreeSet<&str> = kept.iter().map(String::as_str).collect();
        ensure!(
            shown == kept,
            "ls {bin} shows {shown:?}, the allowed set keeps {kept:?}"
        );
        for name in ["python3", "ls"] {
            ensure!(shown.contains(name), "{name} is kept: {shown:?}");
        }
        for name in ["sh", "dash", "bash", "apt-get", "dpkg"] {
            ensure!(!shown.contains(name), "{name} is not kept: {shown:?}");
        }

        // accept the misses, enforce again (with a shell included): the
        // second workload runs.
        // The learn view may still hold the profile until its snapshot is collected.
        eventually(Duration::from_secs(30), "pare profile accept", || {
            Ok(node.pare(&["profile", "accept", IMAGE]).is_ok())
        })?;
        let mut enforce = vec!["mode", IMAGE, "enforce", "--include-exec", "/bin/sh"];
        enforce.extend_from_slice(&WITH_LS);
        node.pare(&enforce)?;
        ensure!(python("accepted-second", SECOND)? == "rollout\n");
        ensure!(python("accepted-first", FIRST)? == answer);
        ensure!(
            python("accepted-sh", HAS_SH)? == "True\n",
            "/bin/sh is included"
        );
        Ok(())
    })?;
    node.stop()
}

/// True when the allowed set keeps `/bin` as a symlink (merged /usr), so
/// `ls /bin/` lists `/usr/bin`.
fn built_bin_is_link(allowed: &AllowedSet) -> bool {
    allowed.paths().iter().any(|p| p.to_string() == "/bin")
        && allowed
            .paths()
            .iter()
            .any(|p| p.to_string().starts_with("/usr/bin/"))
        && !allowed
            .paths()
            .iter()
            .any(|p| p.to_string().starts_with("/bin/"))
}
