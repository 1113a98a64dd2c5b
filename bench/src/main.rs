//! The `ringmq-bench` command: parses arguments and hands them to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ringmq_bench::cli::Cli::parse();
    match ringmq_bench::execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ringmq-bench: {err}");
            ExitCode::FAILURE
        }
    }
}
