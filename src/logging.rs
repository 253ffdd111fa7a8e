//! Logging setup: `tracing` to stderr, human or JSON, filtered by `RUST_LOG` (default `info`).
//!
//! - Wire-level crates are capped at `info` whatever `RUST_LOG` says: at `trace` some of them
//!   print whole frames and headers, which would carry bot secrets and access tokens.
//! - Every line passes through [`gateway_core::redact::scrub`] on its way out, so a secret that
//!   reaches a log field anyway (an upstream error echoing its request URL) is replaced.
//! - Colour only on a terminal, and never with `NO_COLOR` set: escapes in files, pipes and
//!   journald are noise.
//! - A failed write is dropped silently: logging must never take a task down with it (the
//!   signal watcher logs, and stderr may be a closed pipe).

use std::io::{IsTerminal as _, Write};

use tracing_subscriber::fmt::MakeWriter;
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

/// Whether log lines get colour: stderr is a terminal and `NO_COLOR` is unset or empty.
pub fn use_colour() -> bool {
    colour_for(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// The rule behind [`use_colour`] (<https://no-color.org>: any non-empty value disables colour).
fn colour_for(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

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
        .with_ansi(use_colour())
        .log_internal_errors(false)
        .with_writer(ScrubbedStderr);
    let _ = match format {
        LogFormat::Human => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Makes a [`LineWriter`] per event.
#[derive(Debug, Clone, Copy)]
struct ScrubbedStderr;

impl<'a> MakeWriter<'a> for ScrubbedStderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter(Vec::new())
    }
}

/// Collects one formatted event, then scrubs and writes it to stderr in one call when dropped.
#[derive(Debug)]
struct LineWriter(Vec<u8>);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        let clean = gateway_core::redact::scrub(&text);
        // Ignored on purpose: see the module docs.
        let _ = std::io::stderr().lock().write_all(clean.as_bytes());
    }
}

/// Prints one line to stderr, scrubbed of secrets; a closed stderr is not an error (unlike
/// `eprintln!`, which panics).
pub fn stderr_line(text: &str) {
    let clean = gateway_core::redact::scrub(text);
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(clean.as_bytes());
    let _ = err.write_all(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        use std::ffi::OsStr;
        assert!(colour_for(true, None));
        assert!(colour_for(true, Some(OsStr::new(""))));
        assert!(!colour_for(true, Some(OsStr::new("1"))));
        assert!(!colour_for(false, None));
    }
}
