use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    distls::app::main_with(distls::cli::Cli::parse())
}
