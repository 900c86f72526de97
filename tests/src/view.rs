//! `pare mount` run as a child process for tests: started, waited for, and
//! always unmounted and reaped, even when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::prereq::pare_bin;

/// `pare mount` running as a child; unmounts and reaps it when dropped.
pub struct PareMount {
    child: Option<Child>,
    mountpoint: PathBuf,
}

impl PareMount {
    /// Mounts `lowerdirs` (topmost first) on `mountpoint`, journaling to `profile`,
    /// with `extra` arguments, and waits until the mount is there.
    pub fn start_with(lowerdirs: &[&Path], mountpoint: &Path, profile: Option<&Path>, extra: &[&str]) -> PareMount {
        let dirs: Vec<String> = lowerdirs.iter().map(|d| d.display().to_string()).collect();
        let mut cmd = Command::new(pare_bin());
        cmd.arg("mount").args(extra);
        if let Some(profile) = profile {
            cmd.arg("--profile").arg(profile);
        }
        let child = cmd
            .arg(dirs.join(":"))
            .arg(mountpoint)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn pare mount");
        PareMount::wait_for(child, mountpoint)
    }

    /// Mounts `lowerdirs` on `mountpoint` journaling to `profile`.
    pub fn start(lowerdirs: &[&Path], mountpoint: &Path, profile: &Path) -> PareMount {
        PareMount::start_with(lowerdirs, mountpoint, Some(profile), &[])
    }

    fn wait_for(child: Child, mountpoint: &Path) -> PareMount {
        let mount = PareMount {
            child: Some(child),
            mountpoint: mountpoint.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pare_fs::view::is_mountpoint(&std::fs::canonicalize(mountpoint).unwrap()) {
            assert!(Instant::now() < deadline, "pare mount did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        mount
    }

    /// Unmounts like an operator would and expects a clean exit.
    pub fn stop(mut self) {
        let status = Command::new("umount").arg(&self.mountpoint).status().unwrap();
        assert!(status.success(), "umount failed");
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(status.success(), "pare mount exited with {status}");
    }
}

impl PareMount {
    /// Kills the daemon with SIGKILL and detaches the dead mount.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL pare mount");
            child.wait().expect("reap pare mount");
            let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
        }
    }
}

impl Drop for PareMount {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("umount").arg("-l").arg(&self.mountpoint).status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

