//! Logging setup: `tracing` to stderr, human or JSON, filtered by `RUST_LOG` (default `info`).
//!
//! Wire-level crates are capped at `info` whatever `RUST_LOG` says: at `trace` some of them print
//! whole frames and headers, which would carry bot secrets and access tokens into the log.

use tracing_subscriber::EnvFilter;

use crate::LogFormat;

/// Crates whose debug/trace output may contain raw frames or headers.
const WIRE_CRATES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "hyper",
    "hyper_util",
    "reqwest",
    "h2",
    "rustls",
    "axum",
];

/// Installs the global subscriber; `default_level` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_level: &str) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    for krate in WIRE_CRATES {
        if let Ok(d) = format!("{krate}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
