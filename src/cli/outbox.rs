//! `gateway outbox list | retry | drop <id>…`: the replies and notices that are not delivered
//! yet (DESIGN.md "Delivery guarantee"). `list` and `drop` work on the state database directly,
//! whether or not a gateway runs; `retry` asks the running gateway to retry at once.

use std::path::Path;
use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;
use router::admin::AdminInfo;

use super::{data_dir_of, open_store};

/// Outbox actions.
#[derive(Debug, Subcommand)]
pub enum OutboxAction {
    /// List undelivered replies: where they go, how far they got, why they are waiting.
    List,
    /// Ask the running gateway to retry every undelivered reply now (also those past the
    /// automatic attempt limit). Without a running gateway they are retried when it starts.
    Retry,
    /// Give up on replies: remove them from the outbox (their messages count as answered).
    Drop {
        /// Entry ids, as shown by `list`.
        #[arg(required = true)]
        ids: Vec<i64>,
    },
}

/// Runs an outbox action.
pub async fn outbox(file: Option<&Path>, action: OutboxAction) -> anyhow::Result<ExitCode> {
    let data_dir = data_dir_of(file)?;
    if let OutboxAction::Retry = action {
        return retry(&data_dir).await;
    }
    let store = open_store(&data_dir)?;
    let code = match action {
        OutboxAction::List => {
            let entries = store.outbox_pending(None).await?;
            if entries.is_empty() {
                println!("The outbox is empty: every reply was delivered.");
            }
            for e in &entries {
                let total = e.parts.len().max(1);
                let preview: String = e.text.chars().take(60).collect();
                let preview = preview.replace('\n', " ");
                println!(
                    "{id}  {inst}  to {target}  {state}  parts {done}/{total}  attempts {att}  since {at}",
                    id = e.id,
                    inst = e.instance,
                    target = e.target,
                    state = e.state.as_str(),
                    done = e.parts_done,
                    att = e.attempts,
                    at = e.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
                );
                println!("    text: {preview}");
                if !e.last_error.is_empty() {
                    println!("    last error: {}", e.last_error);
                }
            }
            ExitCode::SUCCESS
        }
        OutboxAction::Drop { ids } => {
            let mut missing = 0;
            for id in ids {
                match store.outbox_get(id).await? {
                    Some(e) => {
                        store
                            .outbox_done(id, e.inbox_id.as_deref(), Utc::now())
                            .await?;
                        println!("Dropped {id} (to {}).", e.target);
                    }
                    None => {
                        eprintln!("No outbox entry {id} (see `gateway outbox list`).");
                        missing += 1;
                    }
                }
            }
            if missing > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        OutboxAction::Retry => ExitCode::SUCCESS,
    };
    store.close().await?;
    Ok(code)
}

async fn retry(data_dir: &Path) -> anyhow::Result<ExitCode> {
    let Some(info) = AdminInfo::read(data_dir) else {
        println!(
            "No gateway is running for {}; undelivered replies are retried when it starts.",
            data_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    let client = reqwest::Client::builder().no_proxy().build()?;
    let resp = client
        .post(format!("http://{}/admin/outbox/retry", info.listen))
        .bearer_auth(&info.token)
        .send()
        .await;
    match resp {
        Ok(r) if r.status().is_success() => {
            println!("The running gateway (pid {}) is retrying its undelivered replies; see `gateway outbox list`.", info.pid);
            Ok(ExitCode::SUCCESS)
        }
        Ok(r) => {
            eprintln!("The running gateway refused: {}", r.status());
            Ok(ExitCode::from(1))
        }
        Err(e) if e.is_connect() => {
            println!(
                "No gateway answers at {}; undelivered replies are retried when it starts.",
                info.listen
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("Could not reach the running gateway: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
