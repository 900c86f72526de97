//! `pare`: the command line. `mount` serves a profiling view of layer
//! directories, `compact` builds the minimized image of an image from its
//! layers and profile, `report` compares an image with its minimized one, and
//! `profile` shows, lists and merges profiles. This file parses the arguments,
//! sets up logging and prints errors; the subcommands are in `cmd/`, their
//! logic in the `pare_tools` library.

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
