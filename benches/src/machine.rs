//! What a bench ran on, for its report: date, kernel, CPUs and tool versions.

use std::process::Command;

use serde_json::{Value, json};

/// The machine and the versions of the tools a bench drove.
#[derive(Debug, Clone)]
pub struct Machine {
    /// When the bench ran, `YYYY-MM-DD HH:MM UTC`.
    pub date: String,
    /// The kernel release.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// The first line of `TOOL --version` for each tool asked for.
    pub tools: Vec<(String, String)>,
    /// The 1, 5 and 15 minute load averages when described.
    pub load: String,
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg`.
pub fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Machine {
    /// Describes this machine and the versions of `tools`.
    pub fn describe(tools: &[&str]) -> Machine {
        Machine {
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            kernel: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            tools: tools
                .iter()
                .map(|t| (t.to_string(), first_line(t, &["--version"])))
                .collect(),
            load: load_average(),
        }
    }

    /// One line for a report header.
    pub fn summary(&self) -> String {
        let tools: Vec<String> = self.tools.iter().map(|(_, v)| v.clone()).collect();
        format!(
            "{}: kernel {}, {} CPUs, load average {}; {}",
            self.date,
            self.kernel,
            self.cpus,
            self.load,
            tools.join("; ")
        )
    }

    /// The same as JSON.
    pub fn to_json(&self) -> Value {
        let tools: serde_json::Map<String, Value> = self
            .tools
            .iter()
            .map(|(t, v)| (t.clone(), json!(v)))
            .collect();
        json!({
            "date": self.date,
            "kernel": self.kernel,
            "cpus": self.cpus,
            "load_average": self.load,
            "tools": tools,
        })
    }
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("{cmd}: unknown"))
}
