//! `mimic completions SHELL`: a completion script for bash, zsh or fish, generated from the
//! command line's own definition.
use anyhow::Result;
use clap::CommandFactory;

#[derive(clap::Args)]
pub struct Args {
    /// The shell to complete in.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn run(a: Args) -> Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "mimic", &mut std::io::stdout());
    Ok(())
}
