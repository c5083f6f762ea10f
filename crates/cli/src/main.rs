//! `ironclaw`: command-line client of the ironclawd daemon (HTTP/WebSocket only).

mod args;
mod client;
mod commands;
mod config;
mod output;
mod term;
mod typed;

use std::io::Write;

use clap::Parser;

fn main() {
    // Behave like a normal Unix tool when piped into `head`.
    // SAFETY: setting a signal disposition at startup, before any threads.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = args::Cli::parse(); // usage errors exit 2 here
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            commands::report_error(&e);
            client::exit_code_for_error(&e)
        }
    };
    let _ = std::io::stdout().flush();
    // Exit without waiting for blocking stdin readers still parked in read().
    std::process::exit(code);
}
