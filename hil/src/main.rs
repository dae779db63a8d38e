use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    hil::cli::run(hil::cli::Cli::parse()).await
}
