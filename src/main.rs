//! The `gateway` binary: the CLI over the router. Subcommands: `run`, `check`, `platforms`,
//! `chat`, `pairing`, `sessions`, `send`, `setup`, `doctor`, `service`.
//!
//! This is the only place that names concrete adapters (one registry line each, in
//! [`registry`]), and the only place that uses `anyhow`.

mod cli;
mod console;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// A plugin-based gateway that puts AI agents into chat platforms (WeCom first).
#[derive(Debug, Parser)]
#[command(name = "gateway", version, about)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
    /// Config file, for the subcommands that read one; accepted before the subcommand
    /// (`gateway -c FILE check`) as well as after it (`gateway check -c FILE`).
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Moves a `-c` given before the subcommand into the subcommand's own `-c`. Both given and
    /// different is an error: which one was meant cannot be guessed.
    fn merge_config(&mut self) -> Result<(), String> {
        let Some(top) = self.config.take() else {
            return Ok(());
        };
        let slot = match &mut self.command {
            Command::Run { config }
            | Command::Check { config }
            | Command::Chat { config, .. }
            | Command::Pairing { config, .. }
            | Command::Sessions { config, .. }
            | Command::Outbox { config, .. } => config,
            Command::Sandbox(a) => &mut a.config,
            Command::Send(a) => &mut a.config,
            Command::Setup(a) => &mut a.config,
            Command::Doctor(a) => &mut a.config,
            Command::Service {
                action: cli::service::ServiceAction::Print { config, .. },
            } => config,
            // Reads no config file.
            Command::Platforms => return Ok(()),
        };
        match slot {
            Some(sub) if *sub != top => Err(format!(
                "-c is given twice ({} before the subcommand, {} after it); give it once",
                top.display(),
                sub.display()
            )),
            _ => {
                *slot = Some(top);
                Ok(())
            }
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway: connect every enabled platform instance and answer messages.
    Run {
        /// Config file (default: $GATEWAY_CONFIG, ./config.yaml, ~/.config/gateway/config.yaml).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print every problem at once (exit 2 on error).
    Check {
        /// Config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// List the registered platform kinds and their config keys.
    Platforms,
    /// Talk to the configured agent from the terminal (platform `console`).
    Chat {
        /// Config file (optional: without one, the built-in echo agent answers).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Send one message, print the reply and exit.
        #[arg(long)]
        once: Option<String>,
    },
    /// Manage pairing requests and approved users.
    Pairing {
        /// Config file (for the data dir).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: cli::pairing::PairingAction,
    },
    /// Try it all with no account: an emulated WeCom, a gateway with both adapters, a chat.
    Sandbox(cli::sandbox::SandboxArgs),
    /// Send a proactive message (through the running gateway when there is one).
    Send(cli::send::SendArgs),
    /// Inspect and reset conversation sessions.
    Sessions {
        /// Config file (for the data dir).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: cli::sessions::SessionsAction,
    },
    /// List, retry or drop undelivered replies.
    Outbox {
        /// Config file (for the data dir).
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: cli::outbox::OutboxAction,
    },
    /// Add or edit a platform instance and the agent backend (interactive wizard).
    Setup(Box<cli::setup::SetupArgs>),
    /// Check config, data dir, ports, network, credentials, clock and agent; print the fixes.
    Doctor(cli::doctor::DoctorArgs),
    /// Run the gateway as a service.
    Service {
        #[command(subcommand)]
        action: cli::service::ServiceAction,
    },
}

/// The adapter registry of this binary.
pub fn registry() -> router::Registry {
    router::Registry::new()
        .register(std::sync::Arc::new(wecom::WeComFactory))
        .register(std::sync::Arc::new(wecom_callback::WeComCallbackFactory))
}

fn main() -> ExitCode {
    // Two rustls providers may be compiled in through dependencies; without an explicit choice
    // the first TLS connection panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut cli = Cli::parse();
    if let Err(e) = cli.merge_config() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // The terminal chats keep stderr for warnings; everything else logs at info.
    let level = match cli.command {
        Command::Chat { .. } | Command::Sandbox(_) => "warn",
        _ => "info",
    };
    logging::init(cli.log_format, level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::stderr_line(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run { config } => cli::run::run(config.as_deref()).await,
            Command::Check { config } => cli::run::check(config.as_deref()),
            Command::Platforms => cli::run::platforms(),
            Command::Chat { config, once } => cli::chat::chat(config.as_deref(), once).await,
            Command::Send(args) => cli::send::send(args).await,
            Command::Sandbox(args) => cli::sandbox::sandbox(args).await,
            Command::Pairing { config, action } => {
                cli::pairing::pairing(config.as_deref(), action).await
            }
            Command::Sessions { config, action } => {
                cli::sessions::sessions(config.as_deref(), action).await
            }
            Command::Outbox { config, action } => {
                cli::outbox::outbox(config.as_deref(), action).await
            }
            Command::Setup(args) => cli::setup::setup(*args, registry()).await,
            Command::Doctor(args) => cli::doctor::doctor(args, registry()).await,
            Command::Service { action } => cli::service::service(action),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            logging::stderr_line(&format!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
