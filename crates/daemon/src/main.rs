//! ironclawd: the IronClaw daemon.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // git's pre-receive hook of a deploy repository runs us in hook mode.
    if std::env::args().nth(1).as_deref() == Some("deploy-hook") {
        let code = ironclaw_daemon::deploy::hook::hook_main();
        return std::process::ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // glibc gives each thread that meets contention on the heap an arena of
    // its own (up to 8 per core) and keeps what is freed in each: with 200
    // concurrent chat sessions that, more than live data, grew the RSS.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets a tunable, under the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let args = ironclaw_daemon::config::Args::parse();
    let json = std::env::var("IRONCLAW_LOG_FORMAT").is_ok_and(|v| v == "json");
    let filter = tracing_subscriber::EnvFilter::try_from_env("IRONCLAW_LOG")
        .unwrap_or_else(|_| "info".into());
    if json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    match ironclaw_daemon::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ironclawd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
