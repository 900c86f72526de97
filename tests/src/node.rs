//! A private node for tests: pare-snapshotter and a containerd that has it
//! plugged in, under one scratch directory, torn down in the right order
//! (containers, then views, then files) however the test ends; and images of
//! the host's tools with an application layer on top.

use std::path::Path;

use anyhow::Result;

use crate::containerd::{Containerd, Ctr};
use crate::images::MTIME;
use crate::mounts::Scratch;
use crate::oci::{BuiltImage, DEFAULT_TOOLS, Image, Layer, host_tools_layer};
use crate::snapshotter::PareSnapshotter;

/// pare-snapshotter and containerd. Fields drop in order: containerd (its
/// containers) first, then pare (its views), then the files.
pub struct PareNode {
    /// containerd, with `[proxy_plugins.pare]`.
    pub containerd: Containerd,
    /// pare-snapshotter.
    pub pare: PareSnapshotter,
    /// Everything both keep on disk.
    pub scratch: Scratch,
}

impl PareNode {
    /// Starts both in a fresh scratch directory.
    pub fn start() -> Result<PareNode> {
        PareNode::start_in(Scratch::new()?)
    }

    /// Starts both in `scratch`, where the test may have prepared pare's root
    /// (`scratch/pare/root`) already.
    pub fn start_in(scratch: Scratch) -> Result<PareNode> {
        PareNode::start_with_pare_args(scratch, &[])
    }

    /// Like [`PareNode::start_in`], with more pare-snapshotter arguments.
    pub fn start_with_pare_args(scratch: Scratch, args: &[&str]) -> Result<PareNode> {
        let pare = PareSnapshotter::start_with_args(
            &scratch.path().join("pare"),
            &crate::snapshotter::snapshotter_bin(),
            args,
        )?;
        let containerd = Containerd::start(
            &scratch.path().join("containerd"),
            &pare.containerd_config(),
        )?;
        Ok(PareNode {
            containerd,
            pare,
            scratch,
        })
    }

    /// `pare ARGS... --address --namespace --root` against this node: its
    /// stdout, or an error with its stderr.
    pub fn pare(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new(crate::prereq::pare_bin())
            .args(args)
            .arg("--address")
            .arg(self.containerd.address())
            .args(["--namespace", crate::containerd::NAMESPACE])
            .arg("--root")
            .arg(self.pare.root())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "pare {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// `ctr` bound to the containerd.
    pub fn ctr(&self) -> Ctr {
        self.containerd.ctr()
    }

    /// The tails of both daemons' logs, for an error's context.
    pub fn logs(&self) -> String {
        let text = self.pare.log_text();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- containerd (tail) ---\n{}\n--- pare-snapshotter (tail) ---\n{}",
            self.containerd.log_tail(30),
            lines[lines.len().saturating_sub(80)..].join("\n")
        )
    }

    /// Runs `f`; on failure adds both daemons' logs to the error.
    pub fn checked(&mut self, f: impl FnOnce(&mut PareNode) -> Result<()>) -> Result<()> {
        let result = f(self);
        result.map_err(|e| e.context(self.logs()))
    }

    /// Stops containerd, then pare-snapshotter, both cleanly.
    pub fn stop(self) -> Result<()> {
        self.containerd.stop()?;
        self.pare.stop()
    }
}

/// An application layer of `/app` holding one small file per name, each
/// holding its name and a newline (`/app/a` holds `a\n`).
pub fn app_layer(names: &[&str]) -> Layer {
    let mut app = Layer::new(MTIME);
    app.dir("app", 0o755);
    for name in names {
        app.file(&format!("app/{name}"), format!("{name}\n"), 0o644);
    }
    app
}

/// An image named `name` of the host's tools ([`DEFAULT_TOOLS`] and `extra`)
/// with `app` on top, written as an OCI archive to `tarball`.
pub fn tools_image(name: &str, extra: &[&str], app: &Layer, tarball: &Path) -> Result<BuiltImage> {
    let mut tools = DEFAULT_TOOLS.to_vec();
    tools.extend_from_slice(extra);
    Image::new()
        .layer(&host_tools_layer(MTIME, &tools)?)?
        .layer(app)?
        .write_oci_archive(name, tarball)
}

/// [`tools_image`] imported into the node's containerd with the `pare`
/// snapshotter; the archive goes into the node's scratch directory.
pub fn import_tools_image(
    node: &PareNode,
    name: &str,
    extra: &[&str],
    app: &Layer,
) -> Result<BuiltImage> {
    let file = name.replace(['/', ':'], "_");
    let tarball = node.scratch.path().join(format!("{file}.tar"));
    let built = tools_image(name, extra, app, &tarball)?;
    node.ctr().import(&tarball, "pare")?;
    Ok(built)
}
