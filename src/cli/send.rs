//! `gateway send`: proactive messages for scripts and cron. With a gateway running, the message
//! goes through it (its admin endpoint), because a second WeCom bot connection would kick the
//! live one; with none running, `send` connects the instance itself, sends, and disconnects.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gateway_core::adapter::AdapterContext;
use gateway_core::health::HealthReporter;
use gateway_core::{AdapterError, Admission, InboundMessage, InboundSink};
use router::admin::{send_via, AdminInfo, SendRequest};
use tokio_util::sync::CancellationToken;

use super::{load_config, open_store};

/// Arguments of `gateway send`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("body").required(true).args(["text", "markdown", "file"])))]
pub struct SendArgs {
    /// Config file.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// Platform instance name (the key under `platforms:`).
    #[arg(long)]
    pub platform: String,
    /// Destination: user:ID (default), group:ID, party:ID, tag:ID or @all.
    #[arg(long)]
    pub to: String,
    /// Plain text.
    #[arg(long)]
    pub text: Option<String>,
    /// Markdown.
    #[arg(long)]
    pub markdown: Option<String>,
    /// A file to send (images, voice and video are sent as such when the platform allows).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// Inbound messages arriving during a direct send are refused, so the platform keeps them for
/// the real gateway (they are not acknowledged).
struct Refuse;

#[async_trait]
impl InboundSink for Refuse {
    async fn submit(&self, _message: InboundMessage) -> Result<Admission, AdapterError> {
        Err(AdapterError::Shutdown)
    }
}

/// Runs `gateway send`. Exit 0 on delivery, 1 when the platform refused or was unreachable,
/// 2 for a config or argument problem.
pub async fn send(args: SendArgs) -> anyhow::Result<ExitCode> {
    let (cfg, plans) = match load_config(args.config.as_deref()) {
        Ok(x) => x,
        Err(f) => return Ok(f.report()),
    };
    let req = SendRequest {
        platform: args.platform.clone(),
        to: args.to.clone(),
        text: args.text.clone(),
        markdown: args.markdown.clone(),
        file: args.file.as_deref().map(absolute),
    };
    if let Some(info) = AdminInfo::read(&cfg.gateway.data_dir) {
        match through_gateway(&info, &req).await {
            Ok(()) => {
                println!(
                    "Sent to {} on {} (through the running gateway, pid {}).",
                    req.to, req.platform, info.pid
                );
                return Ok(ExitCode::SUCCESS);
            }
            Err(Through::Refused(msg)) => {
                crate::logging::stderr_line(&format!("Not sent: {msg}"));
                return Ok(ExitCode::from(1));
            }
            Err(Through::NotRunning) => {
                tracing::debug!("The admin file is stale; sending directly.");
            }
        }
    }
    let Some(plan) = plans.into_iter().find(|p| p.spec.name == req.platform) else {
        eprintln!(
            "No enabled platform instance named `{}` in the config.",
            req.platform
        );
        return Ok(ExitCode::from(2));
    };
    let store = open_store(&cfg.gateway.data_dir)?;
    let ctx = AdapterContext {
        instance: plan.spec.name.clone(),
        data_dir: cfg.gateway.data_dir.join(&plan.spec.name),
        inbound: Arc::new(Refuse),
        store: store.clone(),
        health: HealthReporter::new(&plan.spec.name, &plan.spec.kind),
        shutdown: CancellationToken::new(),
    };
    let adapter = plan.adapter;
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        adapter.connect_outbound(ctx.clone()),
    )
    .await;
    let result = match connected {
        Err(_) => Err(format!("could not connect {} within 30 s", req.platform)),
        Ok(Err(e)) => Err(format!("could not connect {}: {e}", req.platform)),
        Ok(Ok(())) => send_via(adapter.as_ref(), &req)
            .await
            .map_err(|e| e.to_string()),
    };
    ctx.shutdown.cancel();
    adapter.disconnect().await;
    store.close().await?;
    match result {
        Ok(()) => {
            println!("Sent to {} on {}.", req.to, req.platform);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            crate::logging::stderr_line(&format!("Not sent: {e}"));
            Ok(ExitCode::from(1))
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

enum Through {
    /// No gateway answered at the published address.
    NotRunning,
    /// The running gateway refused or failed to send.
    Refused(String),
}

async fn through_gateway(info: &AdminInfo, req: &SendRequest) -> Result<(), Through> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .map_err(|e| Through::Refused(e.to_string()))?;
    let resp = client
        .post(format!("http://{}/admin/send", info.listen))
        .bearer_auth(&info.token)
        .json(req)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Err(Through::NotRunning),
        Err(e) => return Err(Through::Refused(e.to_string())),
    };
    if resp.status().is_success() {
        return Ok(());
    }
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let msg = body["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| status.to_string());
    Err(Through::Refused(msg))
}
