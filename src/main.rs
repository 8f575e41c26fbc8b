//! `mimic`: train MimIC heads, compile them into ONNX, run and benchmark the result.
mod cli;
mod hugepages;

use clap::Parser;

fn main() {
    hugepages::reexec_with_huge_pages();
    let args = cli::Cli::parse();
    let filter = match args.verbose {
        0 => "warn,mimic=info",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_ansi(colour_on_stderr())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(cli::exit_code(&e));
    }
}

/// Colour only for a terminal, and never with `NO_COLOR` set (https://no-color.org).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
