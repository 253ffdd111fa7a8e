//! From an accepted callback to the router (wecom-callback reference §3 "answer within 5 s",
//! §4.2 asynchronous processing, §4.4 dedup, §5.4 media; DESIGN.md "Delivery guarantee").
//!
//! The HTTP handler calls [`Intake::accept`], which
//!
//! 1. reserves a place in the bounded lanes (none left: 503, WeCom retries later, nothing was
//!    recorded);
//! 2. journals the decrypted callback with [`StateStore::intake_accept`]: dedup and journal are
//!    **one** record written in one transaction, so a callback id is "seen" only if its journal
//!    entry exists;
//! 3. queues it in its sender's lane.
//!
//! Steps 2 and 3 run on a task of their own: a client that goes away (WeCom's 5 s timeout, a
//! proxy reset) cannot cut the accept in half. The handler waits for the result up to
//! [`ACCEPT_DEADLINE`]; a store slower than that gets a retryable 503, and whatever the store
//! did meanwhile is consistent: either the callback is journaled (WeCom's retry is then a
//! duplicate and acknowledged) or nothing was recorded (the retry is accepted as new).
//!
//! Lanes (`lanes.rs`) keep one sender's callbacks in order while other senders run in parallel
//! on a bounded pool, so one user's slow download delays nobody else. A worker fetches media,
//! builds the [`InboundMessage`], submits it to the router (which journals it in its inbox) and
//! marks the intake entry done. Entries still pending at start are queued again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use gateway_core::{
    AdapterContext, AdapterError, Admission, Attachment, ChatAddress, Content, InboundMessage,
    IntakeEntry, MediaKind, NoLog, PlatformEvent, Sender, StateStore, StoreError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use wecom_common::media::detect_media_type;
use wecom_common::xml::parse_message;

use crate::config::{AppConfig, ReplyFormat};
use crate::inbound::{self, Body};
use crate::lanes::{Lanes, Work};
use crate::outbound::Outbound;
use crate::routing::{Recipient, Routes};

/// Callbacks that may wait or be processed at once, over all senders.
pub const QUEUE_CAPACITY: usize = 256;
/// Callbacks processed (media fetched, handed to the router) at the same moment.
pub const WORKERS: usize = 16;
/// How long the HTTP handler waits for the journal write before answering 503: well inside
/// WeCom's 5-second budget, so the retry comes from WeCom and not from a timeout.
pub const ACCEPT_DEADLINE: Duration = Duration::from_secs(3);
/// A user gets the welcome text at most once per this period.
const WELCOME_TTL: Duration = Duration::from_secs(24 * 3600);
/// Downloaded media older than this is deleted at startup: long enough for any resumed turn,
/// short enough that the media folder does not grow without bound.
pub const MEDIA_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Attempts to hand a message to the router when the store is busy.
const SUBMIT_ATTEMPTS: u32 = 3;

/// One journaled callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Dedup key and message id.
    pub id: String,
    /// The app that received it.
    pub app: String,
    /// Sender (its lane).
    pub user: String,
    /// The decrypted XML.
    pub xml: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

/// What became of a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Journaled and queued.
    Queued,
    /// Seen before (a WeCom retry): acknowledged, not processed again.
    Duplicate,
}

/// Why a callback could not be accepted right now. Every variant means "ask WeCom to retry".
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// Every place in the lanes is taken.
    #[error("the processing queue is full")]
    Busy,
    /// The journal write did not finish within [`ACCEPT_DEADLINE`].
    #[error("the journal write is taking too long")]
    Slow,
    /// The store failed; nothing was recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The intake journal scope of `instance`.
pub fn journal_scope(instance: &str) -> String {
    format!("wecom_callback/{instance}")
}

/// The key-value namespace where versions before the intake journal kept their journal.
fn legacy_journal_ns(instance: &str) -> String {
    format!("wecom_callback/{instance}/journal")
}

/// The accepting side, used by the HTTP handlers.
#[derive(Debug, Clone)]
pub struct Intake {
    scope: String,
    store: Arc<dyn StateStore>,
    lanes: Lanes<Job>,
    tasks: tokio_util::task::TaskTracker,
    deadline: Duration,
}

impl Intake {
    /// Journals and queues a callback (see the module docs for the order and why).
    pub async fn accept(&self, job: Job) -> Result<Accepted, IntakeError> {
        let slot = self.lanes.try_reserve().ok_or(IntakeError::Busy)?;
        let payload = serde_json::to_string(&job)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a job: {e}")))?;
        let entry = IntakeEntry {
            scope: self.scope.clone(),
            id: job.id.clone(),
            payload,
            received_at: job.received_at,
        };
        let (store, lanes) = (self.store.clone(), self.lanes.clone());
        // Owned by the tracker, not by the request: it runs to the end even if the client
        // disconnects or the deadline below passes.
        let accept = self.tasks.spawn(async move {
            if store.intake_accept(&entry).await? {
                let user = job.user.clone();
                lanes.push(&user, job, slot);
                Ok(Accepted::Queued)
            } else {
                Ok(Accepted::Duplicate)
            }
        });
        match tokio::time::timeout(self.deadline, accept).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(IntakeError::Store(StoreError::Backend(format!(
                "the journal task failed: {join}"
            )))),
            Err(_) => Err(IntakeError::Slow),
        }
    }
}

/// Everything a worker needs to turn a job into a router message.
#[derive(Debug)]
pub struct Processor {
    /// The router side.
    pub ctx: AdapterContext,
    /// Apps and the user→app map.
    pub routes: Arc<Routes>,
    /// Sending (welcome texts) and the REST client (media).
    pub outbound: Arc<Outbound>,
}

/// Starts the lanes; returns the intake for the HTTP handlers. Workers stop when `stop` is
/// cancelled, between jobs; unprocessed jobs stay journaled for the next start.
///
/// The journal of earlier runs is read here, before the caller starts serving: a callback
/// accepted from now on is never mistaken for a leftover and processed twice.
pub async fn start(
    processor: Arc<Processor>,
    tasks: &tokio_util::task::TaskTracker,
    stop: &CancellationToken,
) -> Intake {
    let p = processor.clone();
    let work: Work<Job> = Arc::new(move |job: Job| {
        let p = p.clone();
        Box::pin(async move { p.process(job).await })
    });
    let lanes = Lanes::new(QUEUE_CAPACITY, WORKERS, work, tasks.clone(), stop.clone());
    let intake = Intake {
        scope: journal_scope(&processor.ctx.instance),
        store: processor.ctx.store.clone(),
        lanes: lanes.clone(),
        tasks: tasks.clone(),
        deadline: ACCEPT_DEADLINE,
    };
    let scope = intake.scope.clone();
    let store = processor.ctx.store.clone();
    let instance = processor.ctx.instance.clone();
    migrate_legacy_journal(store.as_ref(), &instance, &scope).await;
    let entries = match store.intake_pending(&scope).await {
        Ok(e) => e,
        Err(e) => {
            warn!(instance = %instance, error = %e, "Could not read the callback journal; unfinished callbacks wait for the next start.");
            Vec::new()
        }
    };
    if !entries.is_empty() {
        info!(instance = %instance, count = entries.len(), "Resuming journaled callbacks.");
    }
    // Re-queue them in the background: waiting for room in the lanes must not delay startup.
    let stop = stop.clone();
    tasks.spawn(async move {
        for entry in entries {
            let Ok(job) = serde_json::from_str::<Job>(&entry.payload) else {
                warn!(instance = %instance, "Dropping an unreadable journal entry.");
                let _ = store.intake_done(&scope, &entry.id, Utc::now()).await;
                continue;
            };
            let slot = tokio::select! {
                () = stop.cancelled() => return,
                s = lanes.reserve() => match s { Some(s) => s, None => return },
            };
            let user = job.user.clone();
            lanes.push(&user, job, slot);
        }
    });
    intake
}

/// Moves callbacks journaled by an older version (in the key-value space) into the intake
/// journal, so an upgrade loses none of them.
async fn migrate_legacy_journal(store: &dyn StateStore, instance: &str, scope: &str) {
    let ns = legacy_journal_ns(instance);
    let Ok(entries) = store.kv_list(&ns, "").await else {
        return;
    };
    for (key, value) in entries {
        if let Ok(job) = serde_json::from_str::<Job>(&value) {
            let entry = IntakeEntry {
                scope: scope.to_string(),
                id: job.id.clone(),
                payload: value.clone(),
                received_at: job.received_at,
            };
            if store.intake_accept(&entry).await.is_err() {
                continue;
            }
        }
        let _ = store.kv_delete(&ns, &key).await;
    }
}

impl Processor {
    /// Turns one job into a router message, submits it, and marks its journal entry done.
    pub async fn process(&self, job: Job) {
        let scope = journal_scope(&self.ctx.instance);
        if let Some(msg) = self.message_for(&job).await {
            match self.submit(msg).await {
                Ok(()) => {}
                // Left pending: the next start tries again.
                Err(()) => return,
            }
        }
        if let Err(e) = self
            .ctx
            .store
            .intake_done(&scope, &job.id, Utc::now())
            .await
        {
            debug!(error = %e, "Could not mark a journal entry done; the router dedups the message if it comes again.");
        }
    }

    async fn message_for(&self, job: &Job) -> Option<InboundMessage> {
        let instance = &self.ctx.instance;
        let Some(app) = self.routes.by_name(&job.app).cloned() else {
            warn!(instance = %instance, app = %job.app, "Dropping a journaled callback of an app that is no longer configured.");
            return None;
        };
        let xml = match parse_message(&job.xml) {
            Ok(m) => m,
            Err(e) => {
                warn!(instance = %instance, error = %e, "Dropping a journaled callback that no longer parses.");
                return None;
            }
        };
        let parsed = inbound::parse(&xml, &app.corp_id, app.agent_id);
        let scoped = format!("{}:{}", app.corp_id, parsed.user);
        let mut context = json!({"app": app.name, "user": parsed.user, "agent_id": app.agent_id});
        let content = match parsed.body {
            Body::Text { content } => Content::Text { text: content },
            Body::Media {
                kind,
                media_id,
                format,
                name,
                caption,
            } => {
                match self.fetch_media(&app, &job.id, kind, &media_id, format, name).await {
                    Ok(attachment) if kind == MediaKind::Voice => Content::Voice {
                        transcript: caption,
                        attachment: Some(attachment),
                    },
                    Ok(attachment) => Content::Media { text: caption, attachment },
                    Err(reason) => Content::Text {
                        text: format!(
                            "[The user sent a {} that could not be downloaded from WeCom: {reason}]",
                            kind.as_str()
                        ),
                    },
                }
            }
            Body::Location {
                latitude,
                longitude,
                label,
                scale,
            } => {
                context["scale"] = json!(scale);
                Content::Location {
                    latitude,
                    longitude,
                    label,
                }
            }
            Body::Link {
                title,
                description,
                url,
                pic_url,
            } => {
                context["pic_url"] = json!(pic_url);
                Content::Link {
                    title,
                    description,
                    url,
                }
            }
            Body::Event { event, fields } => {
                context["fields"] = json!(fields);
                Content::Event(event)
            }
            Body::LogOnly { what } => {
                info!(instance = %instance, app = %app.name, what = %gateway_core::redact::printable(&what), "Callback acknowledged without a turn.");
                return None;
            }
        };
        let received_at = (parsed.create_time > 0)
            .then(|| Utc.timestamp_opt(parsed.create_time, 0).single())
            .flatten()
            .unwrap_or(job.received_at);
        Some(InboundMessage {
            instance: instance.clone(),
            message_id: job.id.clone(),
            sender: Sender {
                user_id: scoped.clone(),
                display_name: Some(parsed.user),
            },
            chat: ChatAddress::dm(scoped),
            content,
            quote: None,
            received_at,
            reply_context: context,
        })
    }

    /// Submits with a few retries on store errors; `Err` leaves the job journaled.
    async fn submit(&self, msg: InboundMessage) -> Result<(), ()> {
        let mut attempt = 0;
        let admission = loop {
            attempt += 1;
            match self.ctx.submit(msg.clone()).await {
                Ok(a) => break a,
                Err(e) if attempt < SUBMIT_ATTEMPTS && e.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(e) if e.is_retryable() || matches!(e, AdapterError::Store(_)) => {
                    warn!(instance = %msg.instance, error = %e, "Could not hand a callback to the router; it stays journaled for the next start.");
                    return Err(());
                }
                Err(e) => {
                    // Not a passing condition: keeping it would repeat the failure at every start.
                    warn!(instance = %msg.instance, error = %e, "The router refused a callback; dropping it.");
                    return Ok(());
                }
            }
        };
        debug!(instance = %msg.instance, ?admission, "Callback submitted.");
        if !admission.passed_policy() {
            return Ok(());
        }
        let app_name = msg.reply_context["app"].as_str().unwrap_or_default();
        let Some(app) = self.routes.by_name(app_name).cloned() else {
            return Ok(());
        };
        self.routes.remember(&msg.sender.user_id, &app).await;
        if matches!(msg.content, Content::Event(PlatformEvent::EnterChat))
            && admission != Admission::Duplicate
        {
            self.welcome(&app, &msg).await;
        }
        Ok(())
    }

    /// Sends the app's welcome text, at most once a day per user.
    async fn welcome(&self, app: &AppConfig, msg: &InboundMessage) {
        let Some(text) = &app.welcome_text else {
            return;
        };
        let scope = format!("wecom_callback/{}/welcome", self.ctx.instance);
        match self
            .ctx
            .store
            .dedup_check(&scope, &msg.sender.user_id, Utc::now(), WELCOME_TTL)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                debug!(error = %e, "Welcome bookkeeping failed; not sending it.");
                return;
            }
        }
        let user = msg.reply_context["user"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if let Err(e) = self
            .outbound
            .send_text(app, &Recipient::User(user), text, ReplyFormat::Text, &NoLog)
            .await
        {
            warn!(instance = %self.ctx.instance, app = %app.name, error = %e, "Could not send the welcome text.");
        }
    }

    /// Fetches media with `media/get` into `<data_dir>/media/`; the error text is for the agent.
    async fn fetch_media(
        &self,
        app: &AppConfig,
        id: &str,
        kind: MediaKind,
        media_id: &str,
        format: Option<String>,
        name: Option<String>,
    ) -> Result<Attachment, String> {
        let body = self
            .outbound
            .api()
            .get_media(&app.name, media_id)
            .await
            .map_err(|e| self.outbound.failure(app, "media/get", e).to_string())?;
        let (_, detected_mime, detected_ext) = detect_media_type(&body.bytes);
        let declared = body
            .content_type
            .as_deref()
            .map(|c| c.split(';').next().unwrap_or("").trim().to_owned())
            .filter(|c| !c.is_empty() && c != "application/octet-stream");
        let mime = if detected_mime == "application/octet-stream" {
            declared.unwrap_or_else(|| detected_mime.to_owned())
        } else {
            detected_mime.to_owned()
        };
        let ext = match (kind, format.as_deref()) {
            (MediaKind::Voice, Some(f)) if f.chars().all(|c| c.is_ascii_alphanumeric()) => {
                f.to_owned()
            }
            _ if detected_ext != "bin" => detected_ext.to_owned(),
            _ => name
                .as_deref()
                .or(body.filename.as_deref())
                .and_then(|n| n.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()))
                .filter(|e| e.len() <= 8 && e.chars().all(|c| c.is_ascii_alphanumeric()))
                .unwrap_or_else(|| "bin".to_owned()),
        };
        let display = name
            .or(body.filename)
            .map(|n| sanitize(&n))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("{}.{ext}", kind.as_str()));
        let dir = self.ctx.data_dir.join("media");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| format!("cannot create the media folder ({})", e.kind()))?;
        let path: PathBuf = dir.join(format!("{}.{ext}", sanitize(id)));
        tokio::fs::write(&path, &body.bytes)
            .await
            .map_err(|e| format!("cannot save the file ({})", e.kind()))?;
        info!(instance = %self.ctx.instance, app = %app.name, kind = kind.as_str(), bytes = body.bytes.len(), "Fetched inbound media.");
        Ok(Attachment {
            kind,
            path,
            name: display,
            mime,
            size: body.bytes.len() as u64,
        })
    }
}

/// Deletes files in `dir` last modified more than `older_than` ago; returns how many.
pub async fn prune_media(dir: &std::path::Path, older_than: Duration) -> usize {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return 0;
    };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let Ok(meta) = entry.metadata().await else {
            continue;
        };
        let old = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > older_than);
        if meta.is_file() && old && tokio::fs::remove_file(entry.path()).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A file-name-safe version of `s`: ASCII letters, digits, `.`, `-`, `_`, CJK kept; the rest `_`.
fn sanitize(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(120)
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    cleaned.trim_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn old_media_is_pruned_and_new_media_kept() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.jpg");
        std::fs::write(&old, b"x").unwrap();
        let week_ago = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(week_ago)
            .unwrap();
        std::fs::write(dir.path().join("new.jpg"), b"y").unwrap();
        assert_eq!(prune_media(dir.path(), MEDIA_RETENTION).await, 1);
        assert!(!old.exists() && dir.path().join("new.jpg").exists());
        assert_eq!(
            prune_media(&dir.path().join("missing"), MEDIA_RETENTION).await,
            0
        );
    }

    #[test]
    fn names_are_sanitised_for_the_file_system() {
        assert_eq!(sanitize("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitize("ww1:100:42"), "ww1_100_42");
        assert_eq!(sanitize("报告.pdf"), "报告.pdf");
    }
}
