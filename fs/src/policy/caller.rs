//! Who asked: the process behind a FUSE request's pid, its command line, and
//! the container its cgroup names.

use std::path::Path;

use super::MissProcess;

/// Longest command line kept, in bytes.
const MAX_COMMAND: usize = 4096;

/// The process behind the pid of a FUSE request (a thread id: the kernel
/// sends the asking thread's). Read from `/proc`; a process already gone has
/// an empty command and no container.
pub fn resolve(pid: u32) -> MissProcess {
    resolve_in(Path::new("/proc"), pid)
}

pub(super) fn resolve_in(proc_root: &Path, tid: u32) -> MissProcess {
    let dir = proc_root.join(tid.to_string());
    let pid = std::fs::read_to_string(dir.join("status"))
        .ok()
        .and_then(|status| tgid(&status))
        .unwrap_or(tid);
    let command = std::fs::read(dir.join("cmdline"))
        .ok()
        .map(|bytes| command_line(&bytes))
        .filter(|c| !c.is_empty())
        .or_else(|| {
            // Kernel threads have no command line; `ps` shows their name in brackets.
            let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
            Some(format!("[{}]", comm.trim_end()))
        })
        .unwrap_or_default();
    let container = std::fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|text| container_of_cgroup(&text));
    MissProcess {
        pid,
        command,
        container,
    }
}

/// The thread group (process) id in a `/proc/PID/status` text.
fn tgid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// A `/proc/PID/cmdline` as one line: arguments separated by spaces.
fn command_line(bytes: &[u8]) -> String {
    let bytes = &bytes[..bytes.len().min(MAX_COMMAND)];
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    let spaced: Vec<u8> = bytes
        .iter()
        .map(|b| if *b == 0 { b' ' } else { *b })
        .collect();
    String::from_utf8_lossy(&spaced).into_owned()
}

/// The container id a `/proc/PID/cgroup` text names, where the cgroup path
/// shows one: containerd's default path `/<namespace>/<container-id>`, or a
/// systemd-driver unit `cri-containerd-<id>.scope` or `docker-<id>.scope`.
pub fn container_of_cgroup(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .find_map(container_of_path)
        .map(str::to_string)
}

fn container_of_path(path: &str) -> Option<&str> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let last = *parts.last()?;
    for prefix in ["cri-containerd-", "docker-"] {
        if let Some(id) = last
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".scope"))
        {
            return (!id.is_empty()).then_some(id);
        }
    }
    let systemd_unit = |p: &&str| {
        [".slice", ".scope", ".service", ".mount", ".socket"]
            .iter()
            .any(|suffix| p.ends_with(suffix))
    };
    let plain = parts.len() == 2 && !parts.iter().any(|p| *p == ".." || systemd_unit(p));
    plain.then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_come_from_the_cgroup_path_forms() {
        let id = "4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b";
        let cases: [(String, Option<&str>); 11] = [
            ("0::/default/web-1\n".into(), Some("web-1")),
            ("0::/k8s.io/abc123\n".into(), Some("abc123")),
            (
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-{id}.scope\n"
                ),
                Some(id),
            ),
            (format!("0::/system.slice/docker-{id}.scope\n"), Some(id)),
            (
                format!(
                    "12:pids:/system.slice/docker-{id}.scope\n11:memory:/system.slice/docker-{id}.scope\n"
                ),
                Some(id),
            ),
            ("12:pids:/user.slice\n0::/default/db\n".into(), Some("db")),
            ("0::/system.slice/containerd.service\n".into(), None),
            ("0::/user.slice/user-0.slice/session-3.scope\n".into(), None),
            ("0::/init.scope\n".into(), None),
            ("0::/\n".into(), None),
            ("0::/../default/x\n".into(), None),
        ];
        for (text, want) in cases {
            assert_eq!(container_of_cgroup(&text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn command_lines_have_spaces_for_nuls() {
        assert_eq!(command_line(b"sh\0-c\0ls\0"), "sh -c ls");
        assert_eq!(command_line(b"sleep\0"), "sleep");
        assert_eq!(command_line(b""), "");
    }

    #[test]
    fn a_thread_resolves_to_its_process() {
        let proc_root = tempfile::tempdir().unwrap();
        let dir = proc_root.path().join("43");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("status"), "Name:\tworker\nTgid:\t42\nPid:\t43\n").unwrap();
        std::fs::write(dir.join("cmdline"), b"sh\0-c\0ls\0").unwrap();
        std::fs::write(dir.join("cgroup"), "0::/default/web-1\n").unwrap();
        assert_eq!(
            resolve_in(proc_root.path(), 43),
            MissProcess {
                pid: 42,
                command: "sh -c ls".into(),
                container: Some("web-1".into()),
            }
        );
    }

    #[test]
    fn a_kernel_thread_shows_its_name_and_a_gone_process_nothing() {
        let proc_root = tempfile::tempdir().unwrap();
        let dir = proc_root.path().join("7");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("cmdline"), b"").unwrap();
        std::fs::write(dir.join("comm"), "kworker/0:1\n").unwrap();
        assert_eq!(resolve_in(proc_root.path(), 7).command, "[kworker/0:1]");
        let gone = resolve_in(proc_root.path(), 99);
        assert_eq!(
            (gone.pid, gone.command.as_str(), gone.container),
            (99, "", None)
        );
    }

    #[test]
    fn this_process_resolves_to_itself() {
        let me = resolve(std::process::id());
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(me.pid, std::process::id());
        assert_eq!(me.command, command_line(&cmdline));
    }
}
