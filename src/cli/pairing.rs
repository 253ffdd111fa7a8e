//! `gateway pairing list | approve | revoke | clear-pending`: the operator's side of pairing.
//! Works while the gateway runs (SQLite WAL lets both processes use the database); an approval
//! takes effect on the user's next message.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use gateway_core::clock::TokioClock;
use gateway_core::pairing::{ApproveError, PairingEngine};

use super::{data_dir_of, open_store};

/// Pairing actions.
#[derive(Debug, Subcommand)]
pub enum PairingAction {
    /// Show pending requests (with the request ids you can approve) and approved users.
    List {
        /// Only this platform instance.
        instance: Option<String>,
    },
    /// Approve a pending request by the code the user received or by its request id.
    Approve {
        /// Platform instance (e.g. `wecom`).
        instance: String,
        /// The 8-character code, or the request id shown by `list`.
        code: String,
    },
    /// Remove an approved user.
    Revoke {
        /// Platform instance.
        instance: String,
        /// The user id.
        user: String,
    },
    /// Drop every pending request of an instance.
    ClearPending {
        /// Platform instance.
        instance: String,
    },
}

/// Runs a pairing action against the state database.
pub async fn pairing(file: Option<&Path>, action: PairingAction) -> anyhow::Result<ExitCode> {
    let store = open_store(&data_dir_of(file)?)?;
    let engine = PairingEngine::new(store.clone(), TokioClock::shared());
    let code = match action {
        PairingAction::List { instance } => {
            let list = engine.list(instance.as_deref()).await?;
            if list.pending.is_empty() {
                println!("No pending pairing requests.");
            } else {
                println!("Pending (approve with: gateway pairing approve <instance> <request id or code>):");
                for p in &list.pending {
                    println!(
                        "  {:<12} request {:<8} user {}{}  expires {}",
                        p.instance,
                        p.request_id,
                        p.user_id,
                        p.user_name
                            .as_deref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default(),
                        p.expires_at.format("%H:%M UTC")
                    );
                }
            }
            if list.approved.is_empty() {
                println!("No approved users.");
            } else {
                println!("Approved:");
                for a in &list.approved {
                    println!(
                        "  {:<12} user {}{}  since {}",
                        a.instance,
                        a.user_id,
                        a.user_name
                            .as_deref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default(),
                        a.approved_at.format("%Y-%m-%d %H:%M UTC")
                    );
                }
            }
            ExitCode::SUCCESS
        }
        PairingAction::Approve { instance, code } => match engine.approve(&instance, &code).await {
            Ok(u) => {
                println!(
                    "Approved {} on {}; their next message reaches the agent.",
                    u.user_id, u.instance
                );
                ExitCode::SUCCESS
            }
            Err(e @ (ApproveError::NoMatch { .. } | ApproveError::LockedOut { .. })) => {
                eprintln!("Not approved: {e}.");
                ExitCode::from(1)
            }
            Err(e) => return Err(e.into()),
        },
        PairingAction::Revoke { instance, user } => {
            if engine.revoke(&instance, &user).await? {
                println!("Revoked {user} on {instance}.");
                ExitCode::SUCCESS
            } else {
                eprintln!("{user} is not approved on {instance}.");
                ExitCode::from(1)
            }
        }
        PairingAction::ClearPending { instance } => {
            let n = engine.clear_pending(&instance).await?;
            println!("Cleared {n} pending request(s) on {instance}.");
            ExitCode::SUCCESS
        }
    };
    store.close().await?;
    Ok(code)
}
