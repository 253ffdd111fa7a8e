//! `gateway chat [--once TEXT]`: talk to the configured agent from the terminal through the same
//! session and history path as a platform (instance `console`).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use chrono::Utc;
use gateway_core::adapter::InstanceSpec;
use gateway_core::clock::TokioClock;
use gateway_core::policy::AccessConfig;
use gateway_core::{ChatAddress, Content, InboundMessage, Sender};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{load_config, open_store};
use crate::console::{ConsoleAdapter, ConsoleEvent};

/// The console's instance name.
const INSTANCE: &str = "console";

/// Runs the chat. Without a config file the built-in defaults apply (echo agent, ./data).
pub async fn chat(file: Option<&Path>, once: Option<String>) -> anyhow::Result<ExitCode> {
    let cfg = if file.is_some() || router::config::find_config_file(None).is_ok() {
        match load_config(file) {
            Ok((cfg, _)) => cfg,
            Err(f) => return Ok(f.report()),
        }
    } else {
        router::GatewayConfig::default()
    };
    let agent = super::build_agent(&cfg.agent)?;
    let store = open_store(&cfg.gateway.data_dir)?;
    let (tx, mut rx) = mpsc::channel(64);
    let console = ConsoleAdapter::new(tx);
    let plan = router::InstancePlan {
        spec: InstanceSpec {
            name: INSTANCE.into(),
            kind: INSTANCE.into(),
            home_channel: None,
            data_dir: cfg.gateway.data_dir.clone(),
        },
        access: AccessConfig::default(),
        adapter: console.clone(),
    };
    let gateway = router::Gateway::new(cfg, vec![plan], agent, store, TokioClock::shared());
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(gateway.run(None, shutdown.clone()));
    let ctx = console.context().await;

    let user = std::env::var("USER").unwrap_or_else(|_| "you".into());
    let mut seq = 0u64;
    let mut send = |text: String| {
        seq += 1;
        let msg = InboundMessage {
            instance: INSTANCE.into(),
            message_id: format!(
                "{}-{seq}",
                Utc::now().timestamp_nanos_opt().unwrap_or_default()
            ),
            sender: Sender::new(user.clone()),
            chat: ChatAddress::dm(user.clone()),
            content: Content::Text { text },
            quote: None,
            received_at: Utc::now(),
            reply_context: serde_json::Value::Null,
        };
        let ctx = ctx.clone();
        async move { ctx.submit(msg).await }
    };

    if let Some(text) = once {
        send(text).await?;
        let code = loop {
            match rx.recv().await {
                Some(ConsoleEvent::Final(t)) => {
                    println!("{t}");
                    break ExitCode::SUCCESS;
                }
                Some(ConsoleEvent::Notice(t)) => eprintln!("{t}"),
                Some(ConsoleEvent::Update(_)) => {}
                None => break ExitCode::FAILURE,
            }
        };
        shutdown.cancel();
        let _ = run.await;
        return Ok(code);
    }

    eprintln!("Chatting with the agent (platform `console`). /help lists commands; Ctrl-D quits.");
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let Some(line) = lines.next_line().await? else {
            break;
        };
        if line.trim().is_empty() {
            continue;
        }
        send(line).await?;
        // Print the reply as it streams: each update extends the text already shown.
        let mut shown = 0usize;
        loop {
            match rx.recv().await {
                Some(ConsoleEvent::Update(t)) => {
                    if t.len() >= shown && t.is_char_boundary(shown) {
                        print!("{}", &t[shown..]);
                        shown = t.len();
                        let _ = std::io::stdout().flush();
                    }
                }
                Some(ConsoleEvent::Final(t)) => {
                    if t.len() >= shown && t.is_char_boundary(shown) && t.starts_with(&t[..shown]) {
                        println!("{}", &t[shown..]);
                    } else {
                        println!("\n{t}");
                    }
                    break;
                }
                Some(ConsoleEvent::Notice(t)) => println!("{t}"),
                None => break,
            }
        }
    }
    shutdown.cancel();
    let _ = run.await;
    Ok(ExitCode::SUCCESS)
}
