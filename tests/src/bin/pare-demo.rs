//! `make demo`: the pare story end to end on realistic images, with a
//! side-by-side table and an HTML report. Leaves nothing running or mounted.

use std::path::PathBuf;

use pare_tests::story::{self, AppResult, Options};
use pare_tools::compact::KeptOf;

fn main() {
    let mut opts = Options {
        workdir: story::default_workdir(),
        requests: 20,
        cold_runs: 5,
        html: Some(PathBuf::from("pare-report.html")),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--workdir" => opts.workdir = PathBuf::from(value()),
            "--requests" => opts.requests = value().parse().unwrap_or(20),
            "--cold-runs" => opts.cold_runs = value().parse().unwrap_or(5),
            "--html" => opts.html = Some(PathBuf::from(value())),
            other => {
                eprintln!(
                    "pare-demo: unknown argument {other}; known: --workdir DIR --requests N --cold-runs N --html FILE"
                );
                std::process::exit(2);
            }
        }
    }
    let result = story::run(&opts);
    story::cleanup(&opts.workdir);
    match result {
        Ok(apps) => table(&apps, &opts),
        Err(e) => {
            eprintln!("pare-demo: {e:#}");
            std::process::exit(1);
        }
    }
}

fn table(apps: &[AppResult], opts: &Options) {
    println!();
    println!(
        "{:<30} {:>22} {:>16} {:>12} {:>22}",
        "image", "bytes", "files", "packages", "cold start (ms)"
    );
    for app in apps {
        let s = &app.summary;
        let cell = |k: KeptOf| format!("{} -> {}", k.total, k.kept);
        let cold = match app.cold_start_ms {
            Some((a, b)) => format!("{a:.0} -> {b:.0}"),
            None => "-".into(),
        };
        println!(
            "{:<30} {:>22} {:>16} {:>12} {:>22}",
            app.image,
            cell(s.file_bytes),
            cell(s.files),
            s.packages.map_or_else(|| "-".into(), cell),
            cold
        );
    }
    for app in apps {
        println!("{}", app.summary);
    }
    if let Some(html) = &opts.html {
        println!("HTML report: {}", html.display());
    }
}
