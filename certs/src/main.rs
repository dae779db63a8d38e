use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = certs::Cli::parse();
    match certs::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("certs: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
