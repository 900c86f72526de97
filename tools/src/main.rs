//! `pare`: mount a profiling view of image layers and inspect profiles.

mod cmd;
mod logging;

use clap::Parser;

fn main() {
    let cli = cmd::Cli::parse();
    logging::init(cli.log_level.as_deref());
    if let Err(err) = cmd::run(cli) {
        eprintln!("pare: {}", chain(&err));
        std::process::exit(1);
    }
}

/// One sentence: the error and its causes, outermost first.
fn chain(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}
