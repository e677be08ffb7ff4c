//! Tracing: JSON lines to stdout, and to daily files under `LOG_PATH` through
//! a non-blocking writer (no synchronous file writes on the request path).

use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Install the global subscriber. Keep the returned guards alive for the
/// life of the program: dropping them flushes the writers.
/// The log filter's variable (read here, not by `config`).
pub const LOG_FILTER: &str = "RUST_LOG";

pub fn init(log_path: Option<&Path>) -> Vec<WorkerGuard> {
    let filter = EnvFilter::try_from_env(LOG_FILTER).unwrap_or_else(|_| EnvFilter::new("info"));
    let mut guards = Vec::new();
    let (stdout, guard) = tracing_appender::non_blocking(std::io::stdout());
    guards.push(guard);
    let stdout_layer = fmt::layer()
        .json()
        .with_current_span(false)
        .with_writer(stdout)
        .boxed();
    let file_layer = log_path.map(|dir| {
        let (writer, guard) = tracing_appender::non_blocking(tracing_appender::rolling::daily(
            dir,
            "wxkf-manager.log",
        ));
        guards.push(guard);
        fmt::layer()
            .json()
            .with_current_span(false)
            .with_writer(writer)
            .boxed()
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stdout_layer)
        .with(file_layer)
        .try_init();
    guards
}
