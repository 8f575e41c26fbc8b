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
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = cli::run(args) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
