//! The container bench's output: the table and the JSON.

use std::time::Duration;

use pare_benches::machine::{Machine, load_average};
use serde_json::json;

use crate::cases::{Column, State, Workload};
use crate::{Args, Bench};

/// A ratio of medians and the largest value aimed for, if any.
pub struct Ratio {
    /// Its name in the JSON output.
    pub key: &'static str,
    /// Its heading in the table.
    pub heading: &'static str,
    pub value: Option<f64>,
    pub target: Option<f64>,
}

impl Ratio {
    /// `1.023 (<= 1.05: met)`, `... MISSED`, or the bare ratio without a target.
    pub fn verdict(&self) -> String {
        match (self.value, self.target) {
            (None, _) => String::new(),
            (Some(r), Some(t)) if r <= t => format!("{r:.3} (<= {t}: met)"),
            (Some(r), Some(t)) => format!("{r:.3} (<= {t}: MISSED)"),
            (Some(r), None) => format!("{r:.3}"),
        }
    }
}

pub fn print_table(args: &Args, machine: &Machine, bench: &Bench) {
    println!("pare container bench, {}", machine.summary());
    println!(
        "{} cold runs, {} warm runs per case and column; ctr run --rm wall time",
        args.runs, args.warm_runs
    );
    println!();
    print!("{:<38}", "seconds: median (min)");
    for column in Column::ALL {
        print!("{:>16}", column.label());
    }
    println!();
    for w in Workload::ALL {
        for state in State::ALL {
            print!("{:<38}", format!("{}, {}", w.label(), state.label()));
            for column in Column::ALL {
                let cell = bench
                    .summary((w, state, column))
                    .map(|s| format!("{:.3} ({:.3})", s.median, s.min));
                print!("{:>16}", cell.unwrap_or_default());
            }
            println!();
        }
    }
    println!();
    print!("{:<52}", "ratio of medians (target)");
    for ratio in bench.ratios(Workload::True, State::Cold) {
        print!("{:>24}", ratio.heading);
    }
    println!();
    for w in Workload::ALL {
        for state in State::ALL {
            let diagnostic = if w.has_target() { "" } else { " (diagnostic)" };
            print!(
                "{:<52}",
                format!("{}, {}{diagnostic}", w.label(), state.label())
            );
            for ratio in bench.ratios(w, state) {
                print!("{:>24}", ratio.verdict());
            }
            println!();
        }
    }
    println!();
    for state in State::ALL {
        let mounts: Vec<String> = Column::PARE
            .iter()
            .map(|&c| {
                let n = bench.view_mounts.get(&(state, c)).unwrap_or(&0);
                format!("{} {n}", c.mode())
            })
            .collect();
        println!(
            "pare views mounted, {}: {}",
            state.label(),
            mounts.join(", ")
        );
    }
    let misses: Vec<String> = bench
        .misses
        .iter()
        .map(|((image, c), n)| format!("{} {} {n}", image.name(), c.mode()))
        .collect();
    println!("misses journaled (pare misses): {}", misses.join(", "));
    let outputs: Vec<String> = bench
        .outputs
        .iter()
        .map(|(w, out)| format!("{}: {out:?}", w.key()))
        .collect();
    println!(
        "every run printed as its workload's first: {}",
        outputs.join("; ")
    );
    println!("load average at the end: {}", load_average());
}

pub fn to_json(args: &Args, machine: &Machine, bench: &Bench) -> serde_json::Value {
    let mut cases = Vec::new();
    for w in Workload::ALL {
        for state in State::ALL {
            let columns: serde_json::Map<_, _> = Column::ALL
                .iter()
                .filter_map(|&c| {
                    let summary = bench.summary((w, state, c))?;
                    let samples: Vec<f64> = bench.samples[&(w, state, c)]
                        .iter()
                        .map(Duration::as_secs_f64)
                        .collect();
                    let value = json!({
                        "median_s": summary.median,
                        "min_s": summary.min,
                        "samples_s": samples,
                    });
                    Some((c.key().to_string(), value))
                })
                .collect();
            let mut case = json!({
                "workload": w.key(),
                "mode": state.key(),
                "snapshotters": columns,
            });
            for ratio in bench.ratios(w, state) {
                case[ratio.key] = json!(ratio.value);
                case[format!("target_{}", ratio.key)] = json!(ratio.target);
            }
            cases.push(case);
        }
    }
    let mut view_mounts = serde_json::Map::new();
    for ((state, column), n) in &bench.view_mounts {
        let entry = view_mounts.entry(state.key()).or_insert_with(|| json!({}));
        entry[column.mode().name()] = json!(n);
    }
    let mut misses = serde_json::Map::new();
    for ((image, column), n) in &bench.misses {
        let entry = misses.entry(image.name()).or_insert_with(|| json!({}));
        entry[column.mode().name()] = json!(n);
    }
    let outputs: serde_json::Map<_, _> = bench
        .outputs
        .iter()
        .map(|(w, out)| (w.key().to_string(), json!(out)))
        .collect();
    json!({
        "bench": "containers",
        "machine": machine.to_json(),
        "runs": args.runs,
        "warm_runs": args.warm_runs,
        "cases": cases,
        "pare_view_mounts": view_mounts,
        "misses": misses,
        "outputs": outputs,
        "load_average_at_end": load_average(),
    })
}
