//! Process identity that survives pid reuse: a pid and the kernel's start
//! time of that process (field 22 of `/proc/<pid>/stat`).

use serde::{Deserialize, Serialize};

/// One process, as the kernel started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot; tells a reused pid apart.
    pub start_ticks: u64,
}

impl ProcessId {
    /// This process.
    pub fn current() -> Option<ProcessId> {
        let pid = std::process::id() as i32;
        Some(ProcessId {
            pid,
            start_ticks: stat_of(pid)?.start_ticks,
        })
    }

    /// True while the process runs (a zombie or a new process under the same
    /// pid does not count).
    pub fn is_alive(&self) -> bool {
        stat_of(self.pid)
            .is_some_and(|s| s.start_ticks == self.start_ticks && s.state != 'Z' && s.state != 'X')
    }

    /// Sends `signal`; false when the process is gone.
    pub fn signal(&self, signal: rustix::process::Signal) -> bool {
        if !self.is_alive() {
            return false;
        }
        rustix::process::Pid::from_raw(self.pid)
            .is_some_and(|pid| rustix::process::kill_process(pid, signal).is_ok())
    }
}

struct Stat {
    state: char,
    start_ticks: u64,
}

fn stat_of(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`; the command name (field 2) may hold spaces and
/// parentheses, so fields are counted from its closing parenthesis.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // Field 3 is the state; the start time is field 22.
    let start_ticks = fields.nth(22 - 4)?.parse().ok()?;
    Some(Stat { state, start_ticks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let text = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 10 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_eq!((stat.state, stat.start_ticks), ('S', 987654));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::current().unwrap();
        assert!(me.is_alive());
        let reused = ProcessId {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.is_alive());
    }
}
