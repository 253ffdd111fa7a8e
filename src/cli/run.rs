//! `gateway run`, `gateway check` and `gateway platforms`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use gateway_core::clock::TokioClock;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{load_config, open_store};

/// Runs the gateway until SIGINT/SIGTERM, then drains and exits 0.
pub async fn run(file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let (cfg, plans) = match load_config(file) {
        Ok(x) => x,
        Err(f) => return Ok(f.report()),
    };
    let agent = super::build_agent(&cfg.agent)?;
    // Held until the process exits (the kernel releases it even after SIGKILL).
    let _lock = match lock_data_dir(&cfg.gateway.data_dir)? {
        Ok(lock) => lock,
        Err(message) => {
            crate::logging::stderr_line(&message);
            return Ok(ExitCode::from(1));
        }
    };
    let store = open_store(&cfg.gateway.data_dir)?;
    let listener = match tokio::net::TcpListener::bind(&cfg.gateway.listen).await {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            crate::logging::stderr_line(&gateway_core::error::address_in_use_hint(
                &cfg.gateway.listen,
                "gateway.listen",
            ));
            return Ok(ExitCode::from(1));
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot listen on {} (gateway.listen)", cfg.gateway.listen)
            })
        }
    };
    info!(listen = %cfg.gateway.listen, instances = plans.len(), agent = %agent.name(), "Gateway starting.");
    if plans.is_empty() {
        tracing::warn!("No platform instance is enabled; only /health and /metrics will answer. Run `gateway setup` to add one.");
    }
    let gateway = router::Gateway::new(cfg, plans, agent, store, TokioClock::shared());
    gateway.warn_open_policies();
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_watch(shutdown.clone()));
    match gateway.run(Some(listener), shutdown).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // Already logged where it happened, with its hint.
        Err(_) => Ok(ExitCode::from(1)),
    }
}

/// The lock file inside a data dir.
const LOCK_FILE: &str = "gateway.lock";

/// Takes the exclusive lock that makes a data dir one gateway's: a second `gateway run` on it
/// would share the journals and, on exit, remove the first one's `admin.json`. `Ok(Err(text))`
/// names the gateway that holds it.
fn lock_data_dir(dir: &Path) -> anyhow::Result<Result<std::fs::File, String>> {
    use std::io::Write as _;
    super::create_data_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = router::admin::AdminInfo::read(dir)
                .map(|a| format!(" (pid {}, listening on {})", a.pid, a.listen))
                .or_else(|| {
                    std::fs::read_to_string(&path)
                        .ok()
                        .map(|pid| pid.trim().to_string())
                        .filter(|pid| !pid.is_empty())
                        .map(|pid| format!(" (pid {pid})"))
                })
                .unwrap_or_default();
            return Ok(Err(format!(
                "Another gateway{holder} already runs on the data dir {}. Stop it first, or give \
                 this one its own gateway.data_dir.",
                dir.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
    }
    // For the message above when the holder published no admin file.
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(Ok(file))
}

/// Cancels `token` on SIGINT or SIGTERM. The token is cancelled before anything is logged: the
/// shutdown must not depend on a log line getting out.
async fn signal_watch(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("Cannot install signal handlers; stop the gateway with SIGKILL.");
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        token.cancel();
        info!("{name} received; draining.");
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        token.cancel();
    }
}

/// Validates the config; prints every problem; exit 2 when there is one.
pub fn check(file: Option<&Path>) -> anyhow::Result<ExitCode> {
    match load_config(file) {
        Ok((cfg, plans)) => {
            println!(
                "Configuration OK: {} platform instance(s) enabled{}, agent backend `{}`.",
                plans.len(),
                if plans.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({})",
                        plans
                            .iter()
                            .map(|p| format!("{} [{}]", p.spec.name, p.spec.kind))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                agent_bridge::build_backend(&cfg.agent)
                    .map(|b| b.name().to_string())
                    .unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => Ok(f.report()),
    }
}

/// Prints the registered platform kinds and their keys.
pub fn platforms() -> anyhow::Result<ExitCode> {
    use std::fmt::Write as _;
    let registry = crate::registry();
    let mut out = String::new();
    for f in registry.factories() {
        let _ = writeln!(out, "{} — {}", f.kind(), f.description());
        for k in f.config_keys() {
            let mut notes = Vec::new();
            if k.required {
                notes.push("required".to_string());
            }
            if k.secret {
                notes.push("secret".to_string());
            }
            if let Some(env) = k.env {
                notes.push(format!("env {env}"));
            }
            if let Some(d) = k.default {
                notes.push(format!("default {d}"));
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join(", "))
            };
            let _ = writeln!(out, "  {:<26} {}{notes}", k.name, k.doc);
        }
        let policy = gateway_core::policy::POLICY_KEYS.join(", ");
        let _ = writeln!(out, "  access policy keys: {policy}");
        for (env, key) in f.policy_env() {
            let _ = writeln!(out, "    {key} also from env {env}");
        }
    }
    if out.is_empty() {
        out.push_str("No platform kinds are registered in this build.\n");
    }
    write_stdout(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a closed pipe (`gateway platforms | head`) is not an error.
fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
