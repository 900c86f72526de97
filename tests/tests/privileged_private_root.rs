//! Nothing under pare-snapshotter's root leaks to other users of the host,
//! and the view's `nosuid,nodev` costs containers nothing: inside a container
//! setuid binaries and device nodes work as on the stock overlayfs snapshotter.

use std::process::Command;

use anyhow::{Context, Result, ensure};
use pare_tests::containerd::run_with_timeout;
use pare_tests::images::MTIME;
use pare_tests::node::{PareNode, import_tools_image, tools_image};
use pare_tests::oci::Layer;
use pare_tests::prereq::{Need, PARE_NODE, privileged};

const IMAGE: &str = "docker.io/pare-tests/private:v1";

fn needs() -> Vec<Need> {
    let mut needs = PARE_NODE.to_vec();
    needs.push(Need::Command("setpriv"));
    needs
}

/// `cmd` run by a shell as `nobody` (uid and gid 65534, no groups): exit
/// status and stderr. (The shell runs it: setpriv's own exec of a program
/// happens before it has dropped every privilege.)
fn as_nobody(cmd: &[&str]) -> Result<(bool, String)> {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["sh", "-c", "exec \"$@\"", "sh"])
        .args(cmd);
    let out = run_with_timeout(&mut c, std::time::Duration::from_secs(30))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn privileged_nothing_under_the_root_is_reachable_by_other_users_while_containers_run() -> Result<()>
{
    if !privileged(
        "privileged_nothing_under_the_root_is_reachable_by_other_users_while_containers_run",
        &needs(),
    ) {
        return Ok(());
    }
    let mut node = PareNode::start()?;
    // The directories above the root are open to all, as /var/lib is.
    for dir in [
        node.scratch.path().to_path_buf(),
        node.scratch.path().join("pare"),
    ] {
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    node.checked(|node| {
        let mut app = Layer::new(MTIME);
        app.dir("app", 0o755);
        app.file("app/secret.txt", "secret\n", 0o644);
        let image = import_tools_image(node, IMAGE, &[], &app)?;
        let chain = image.top_chain_id().context("layers")?.to_string();
        let ctr = node.ctr();
        ctr.run_detached(IMAGE, "sleeper", "pare", &["sleep", "600"])?;
        let pare = &node.pare;

        let root = std::fs::canonicalize(pare.root())?;
        let view = pare
            .mounted_views()
            .into_iter()
            .next()
            .context("the container's view is mounted")?;
        let profile = root.join("profiles").join(&chain);
        let secret_layer = std::fs::read_dir(root.join("snapshots"))?
            .flatten()
            .map(|e| e.path().join("fs/app/secret.txt"))
            .find(|p| p.exists())
            .context("the layer holding the secret")?;
        let attempts: Vec<(&str, Vec<String>)> = vec![
            (
                "list the root",
                vec!["ls".into(), root.display().to_string()],
            ),
            ("list a view", vec!["ls".into(), view.display().to_string()]),
            (
                "read through a view",
                vec![
                    "cat".into(),
                    view.join("app/secret.txt").display().to_string(),
                ],
            ),
            (
                "execute through a view",
                vec![view.join("usr/bin/true").display().to_string()],
            ),
            (
                "read a layer",
                vec!["cat".into(), secret_layer.display().to_string()],
            ),
            (
                "read a profile",
                vec!["cat".into(), profile.display().to_string()],
            ),
            (
                "read the metadata",
                vec!["cat".into(), root.join("metadata.db").display().to_string()],
            ),
        ];
        for (what, cmd) in &attempts {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            // Root can (so the path is right and the check can fail)...
            let mut as_root = Command::new(args[0]);
            as_root.args(&args[1..]);
            let out = run_with_timeout(&mut as_root, std::time::Duration::from_secs(30))?;
            ensure!(out.status.success(), "root cannot {what}: {out:?}");
            // ...nobody cannot.
            let (ok, stderr) = as_nobody(&args)?;
            ensure!(
                !ok && stderr.contains("Permission denied"),
                "nobody could {what} ({args:?}): ok={ok} {stderr}"
            );
        }
        let mount = pare_fs::mountinfo::mount_at(&view).context("view mount")?;
        ensure!(
            mount.has_option("nosuid") && mount.has_option("nodev") && mount.has_option("ro"),
            "view mount options {}",
            mount.options
        );
        ctr.remove("sleeper")?;
        Ok(())
    })?;
    node.stop()
}

#[test]
fn privileged_setuid_binaries_and_device_nodes_work_in_containers_on_the_view() -> Result<()> {
    if !privileged(
        "privileged_setuid_binaries_and_device_nodes_work_in_containers_on_the_view",
        &needs(),
    ) {
        return Ok(());
    }
    let mut node = PareNode::start()?;
    node.checked(|node| {
    let mut app = Layer::new(MTIME);
    app.dir("app", 0o755);
    let id = std::fs::read(pare_tests::prereq::which("id").context("id")?)?;
    app.file("app/suid-id", id, 0o4755).owner(0, 0);
    app.char_dev("app/null", 1, 3, 0o666);
    let tarball = node.scratch.path().join("image.tar");
    tools_image(IMAGE, &["setpriv"], &app, &tarball)?;
    let ctr = node.ctr();
    ctr.import(&tarball, "pare")?;
    ctr.import(&tarball, "overlayfs")?;
    let script = "setpriv --reuid=65534 --regid=65534 --clear-groups sh -c '/app/suid-id -u'; \
                  setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'echo x > /app/null && echo device-ok'";
    let mut outputs = Vec::new();
    for snapshotter in ["overlayfs", "pare"] {
        // Kubernetes' default (allowPrivilegeEscalation): no_new_privs off.
        let out = ctr.run_with(
            &["--rm", "--allow-new-privs"],
            IMAGE,
            &format!("suid-{snapshotter}"),
            snapshotter,
            &["sh", "-c", script],
        )?;
        outputs.push(out);
    }
    ensure!(
        outputs[0] == "0\ndevice-ok\n",
        "on overlayfs the setuid binary runs as root and the device opens: {:?}",
        outputs[0]
    );
    ensure!(
        outputs[1] == outputs[0],
        "pare's view behaves like overlayfs: {:?} vs {:?}",
        outputs[1],
        outputs[0]
    );
    Ok(())
    })?;
    node.stop()
}
