//! Setup of a `wecom` (AI Bot) instance: scan-to-create ([`super::qr`], reference
//! `wecom-aibot.md` §8) or manual entry of the Bot ID and Secret, then a live check by connecting
//! the bot once — skipped when a gateway on this data dir already owns the connection, because a
//! second connection would kick it (§1.1).

use std::time::Duration;

use gateway_core::adapter::InstanceSpec;
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use super::checks::{connect_once, running_gateway};
use super::prompt::Question;
use super::qr::{render_qr, PollOutcome, QrClient};
use super::yaml_edit::{to_value, Fields};
use super::{after_failure, field, str_of, SetupError, Wizard};

/// The adapter kind.
pub const KIND: &str = "wecom";
/// The keys this step writes (others under `extra` are kept as they were).
pub const MANAGED: &[&str] = &["bot_id", "secret"];
/// How long the connection check may take (the subscribe ACK deadline is 20 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(25);

fn check_bot_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(char::is_whitespace) || s.len() > 128 {
        Err("the Bot ID is one word without spaces, shown on the bot's page".into())
    } else {
        Ok(())
    }
}

fn check_secret(s: &str) -> Result<(), String> {
    if super::is_env_ref(s) {
        return Ok(());
    }
    if s.is_empty() || s.chars().any(char::is_whitespace) || s.len() > 256 {
        Err("the Secret is one word without spaces, shown once when the bot is created".into())
    } else {
        Ok(())
    }
}

/// Asks for (or creates) the bot's credentials and returns the adapter keys.
pub async fn configure(
    w: &mut Wizard<'_>,
    name: &str,
    existing: &Map<String, Value>,
) -> Result<Fields, SetupError> {
    let mut current = (str_of(existing, "bot_id"), str_of(existing, "secret"));
    let mut attempt = 0;
    loop {
        attempt += 1;
        let method = w.prompter.select(
            &Question::new("wecom_method", "How do you want to connect the bot?"),
            &[
                (
                    "scan",
                    "Scan a QR code with the WeCom app to create a new bot (recommended)".into(),
                ),
                (
                    "manual",
                    "Enter the Bot ID and Secret of an existing bot".into(),
                ),
            ],
            usize::from(current.0.is_some()),
        )?;
        let mut creds = None;
        if method == "scan" {
            creds = scan(w).await;
        }
        let (bot_id, secret) = match creds {
            Some(c) => c,
            None => manual(w, &current)?,
        };
        let mut fields: Fields = vec![
            field("bot_id", bot_id.as_str()),
            field("secret", secret.as_str()),
        ];
        if let Some(url) = &w.overrides.websocket_url {
            fields.push(field("websocket_url", url.as_str()));
        } else if let Some(url) = str_of(existing, "websocket_url") {
            fields.push(field("websocket_url", url));
        }
        match check_bot(w, name, &fields).await {
            Ok(()) => return Ok(fields),
            Err(reason) => {
                w.prompter
                    .say(&format!("✗ The bot could not connect: {reason}"));
                match after_failure(w, "bot_failed", attempt)? {
                    "keep" => return Ok(fields),
                    "retry" => current = (Some(bot_id), Some(secret)),
                    _ => {
                        return Err(SetupError::Rejected(format!(
                            "the bot could not connect ({reason}); nothing was written"
                        )))
                    }
                }
            }
        }
    }
}

fn manual(
    w: &mut Wizard<'_>,
    current: &(Option<String>, Option<String>),
) -> Result<(String, String), SetupError> {
    w.prompter.say(
        "In the WeCom app or admin console: Workspace → Smart Robot (智能机器人) → Create → \
         API mode (API模式), then copy the Bot ID and the Secret.",
    );
    let bot_id = w.prompter.input(
        &Question::new("bot_id", "Bot ID").default(current.0.clone()),
        &check_bot_id,
    )?;
    let secret = w.prompter.secret(
        &Question::new("bot_secret", "Bot Secret").default(current.1.clone()),
        &check_secret,
    )?;
    Ok((bot_id, secret))
}

/// The scan-to-create flow; `None` falls back to manual entry (the reason was said).
async fn scan(w: &mut Wizard<'_>) -> Option<(String, String)> {
    let client = QrClient::new(w.http.clone(), &w.qr_base);
    let p = w.prompter.progress("Asking WeCom for a QR code…");
    let session = match client.generate().await {
        Ok(s) => {
            p.finish("QR code ready.");
            s
        }
        Err(e) => {
            p.finish("No QR code.");
            w.prompter.say(&format!(
                "Scan-to-create is not available ({e}). Enter the bot's credentials instead."
            ));
            return None;
        }
    };
    match render_qr(&session.auth_url) {
        Ok(qr) => w.prompter.say(&qr),
        Err(e) => w
            .prompter
            .say(&format!("({e}; open the link below instead)")),
    }
    w.prompter.say(&format!(
        "Scan this code with the WeCom app and confirm to create the bot.\n\
         Cannot scan? Open this page instead: {}",
        client.fallback_url(&session)
    ));
    let minutes = w.qr_timing.deadline.as_secs().div_ceil(60);
    let p = w
        .prompter
        .progress(&format!("Waiting for the scan (up to {minutes} min)…"));
    let outcome = client
        .poll(&session, w.qr_timing, &mut |n| {
            p.set_message(&format!("Waiting for the scan… ({n} checks)"));
        })
        .await;
    match outcome {
        PollOutcome::Created { bot_id, secret } => {
            p.finish("Bot created.");
            w.prompter
                .say(&format!("✓ The bot was created: Bot ID {bot_id}."));
            Some((bot_id, secret.expose_secret().to_string()))
        }
        PollOutcome::NoBotInfo => {
            p.finish("No bot information.");
            w.prompter.say(
                "⚠ WeCom reported success but sent no Bot ID and Secret, so the bot was not \
                 actually created. Create it by hand and enter its credentials.",
            );
            None
        }
        PollOutcome::TimedOut => {
            p.finish("Timed out.");
            w.prompter.say(&format!(
                "No scan within {minutes} min. Enter the bot's credentials by hand instead."
            ));
            None
        }
    }
}

/// Connects the bot once when that is safe and wanted. `Err` carries the reason it failed.
async fn check_bot(w: &mut Wizard<'_>, name: &str, fields: &Fields) -> Result<(), String> {
    if !w.verify {
        return Ok(());
    }
    if let Some(info) = running_gateway(&w.data_dir).await {
        w.prompter.say(&format!(
            "Not testing the bot now: a gateway is running on this data dir (pid {}, {}) and a \
             second connection would disconnect its bot. Restart it to use the new settings.",
            info.pid, info.listen
        ));
        return Ok(());
    }
    let go = match w.bot_check {
        Some(b) => b,
        None => w
            .prompter
            .confirm(
                &Question::new(
                    "bot_check",
                    "Test the credentials by connecting the bot once? (If this bot is live on \
                     another machine, that connection will be dropped.)",
                ),
                true,
            )
            .map_err(|e| e.to_string())?,
    };
    if !go {
        return Ok(());
    }
    // `${NAME}` references are written as they are; the bot is tested with their values.
    let extra = match super::resolve(w, to_value(fields)) {
        Ok(Value::Object(extra)) => extra,
        Ok(_) => return Ok(()),
        Err(e) => {
            w.prompter.say(&format!("Not testing the bot now: {e}."));
            return Ok(());
        }
    };
    let spec = InstanceSpec {
        name: name.to_string(),
        kind: KIND.to_string(),
        home_channel: None,
        data_dir: w.data_dir.clone(),
    };
    let p = w.prompter.progress("Connecting the bot once…");
    let r = connect_once(w.registry, &spec, &extra, CONNECT_TIMEOUT).await;
    match r {
        Ok(()) => {
            p.finish("Connected.");
            w.prompter.say("✓ WeCom accepted the bot's credentials.");
            Ok(())
        }
        Err(super::checks::ConnectError::NotRegistered(kind)) => {
            p.finish("Skipped.");
            w.prompter.say(&format!(
                "Not testing the bot: this build has no `{kind}` adapter registered."
            ));
            Ok(())
        }
        Err(e) => {
            p.finish("Failed.");
            Err(e.to_string())
        }
    }
}
