//! `gateway sessions list | reset <key>`.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::{data_dir_of, open_store};

/// Session actions.
#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// List sessions with their ids and last activity.
    List,
    /// Reset a session: the next message starts a new conversation.
    Reset {
        /// The session key, as shown by `list`.
        key: String,
    },
}

/// Runs a sessions action against the state database.
pub async fn sessions(file: Option<&Path>, action: SessionsAction) -> anyhow::Result<ExitCode> {
    let store = open_store(&data_dir_of(file)?)?;
    let code = match action {
        SessionsAction::List => {
            let list = store.session_list().await?;
            if list.is_empty() {
                println!("No sessions.");
            }
            for s in list {
                println!(
                    "{}  session={}  turns={}  last={}",
                    s.key,
                    s.session_id,
                    s.turns,
                    s.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
            ExitCode::SUCCESS
        }
        SessionsAction::Reset { key } => {
            if store.session_delete(&key).await? {
                println!("Session {key} reset; the next message starts a new conversation.");
                ExitCode::SUCCESS
            } else {
                eprintln!("No session with key {key} (see `gateway sessions list`).");
                ExitCode::from(1)
            }
        }
    };
    store.close().await?;
    Ok(code)
}
