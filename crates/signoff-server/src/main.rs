//! `signoff`: the gateway (`serve`, `demo`) and the command line that
//! manages the users of a signoff database.

mod backend;
mod check;
mod cli;
mod config;
mod display;
mod gateway;
mod listener;
mod log_output;
mod metrics;
mod outbound;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The gateway logs one line per request; the user commands only warn.
    let default_filter = match cli.command {
        cli::Command::Serve(_) | cli::Command::Demo(_) => "info",
        cli::Command::User(_)
        | cli::Command::Sessions(_)
        | cli::Command::Audit { .. }
        | cli::Command::AdminToken
        | cli::Command::Keys(_)
        | cli::Command::Rules(_)
        | cli::Command::Check(_) => "warn",
    };
    // The access log is buffered (log_output.rs); `log_flush` writes out
    // what is left when main returns.
    let (log, log_flush) = log_output::start();
    let colours = std::io::stderr().is_terminal();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SIGNOFF_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(log.clone())
        .with_timer(log_output::LineTime)
        .with_ansi(colours)
        .init();
    if !colours {
        log_output::write_access_lines_to(&log);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("signoff: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::run(cli));
    // Log lines before the error message below.
    log_flush.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signoff: {e:#}");
            ExitCode::FAILURE
        }
    }
}
