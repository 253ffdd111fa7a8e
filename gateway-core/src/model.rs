//! The normalised message model: what every adapter turns its platform's frames into, and what
//! the router, the session engine and the agent bridge work with.
//!
//! Everything here is `Serialize + Deserialize` because accepted inbound messages are journaled in
//! the store's inbox before they are acknowledged (a restart resumes them from there).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Whether a conversation is a one-to-one chat or a group chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatKind {
    /// A direct message with one user.
    Dm,
    /// A group chat.
    Group,
}

impl ChatKind {
    /// The lowercase name used in session keys and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatKind::Dm => "dm",
            ChatKind::Group => "group",
        }
    }
}

/// Where a message came from or where a reply goes, within one platform instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatAddress {
    /// DM or group.
    pub kind: ChatKind,
    /// The conversation id. For DMs on platforms without a chat id (WeCom AI Bot) this is the
    /// peer's user id.
    pub chat_id: String,
}

impl ChatAddress {
    /// A DM with `user_id`.
    pub fn dm(user_id: impl Into<String>) -> Self {
        Self {
            kind: ChatKind::Dm,
            chat_id: user_id.into(),
        }
    }

    /// The group chat `chat_id`.
    pub fn group(chat_id: impl Into<String>) -> Self {
        Self {
            kind: ChatKind::Group,
            chat_id: chat_id.into(),
        }
    }

    /// True for a group chat.
    pub fn is_group(&self) -> bool {
        self.kind == ChatKind::Group
    }
}

/// The author of an inbound message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sender {
    /// Stable platform user id (for `wecom_callback`: `corp_id:user_id`).
    pub user_id: String,
    /// Display name when the platform provides one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

impl Sender {
    /// A sender known only by id.
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            display_name: None,
        }
    }
}

/// The kind of a media attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// A picture.
    Image,
    /// Any file.
    File,
    /// A voice note.
    Voice,
    /// A video clip.
    Video,
}

impl MediaKind {
    /// The lowercase name used in notices and the echo backend.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::File => "file",
            MediaKind::Voice => "voice",
            MediaKind::Video => "video",
        }
    }
}

/// A media item that the adapter has already downloaded (and decrypted) to a local file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// What kind of media it is.
    pub kind: MediaKind,
    /// Local path of the decrypted bytes (under the gateway's data dir).
    pub path: PathBuf,
    /// File name shown to the agent (the platform's name, or one derived from the type).
    pub name: String,
    /// MIME type detected from the bytes or declared by the platform.
    pub mime: String,
    /// Size in bytes of the local file.
    pub size: u64,
}

/// A referenced (quoted) message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The quoted text, if any.
    #[serde(default)]
    pub text: String,
    /// Media carried by the quoted message, already downloaded.
    #[serde(default)]
    pub attachments: Vec<Attachment>,
}

/// A typed platform event that is not a user message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PlatformEvent {
    /// The user opened the chat with the bot / app.
    EnterChat,
    /// The user followed the app.
    Subscribe,
    /// The user unfollowed the app.
    Unsubscribe,
    /// A menu click (`key` is the menu key).
    MenuClick {
        /// The menu key.
        key: String,
    },
    /// A menu link was opened.
    MenuView {
        /// The URL opened.
        url: String,
    },
    /// A button on a template card was pressed.
    TemplateCard {
        /// The card's task id, when present.
        task_id: String,
        /// The button or event key.
        key: String,
    },
    /// Thumbs up/down or similar feedback on a reply.
    Feedback {
        /// The feedback id from the platform.
        id: String,
        /// Feedback type code as the platform sent it.
        kind: String,
    },
    /// Anything else, kept by name.
    Other {
        /// The platform's event name.
        name: String,
    },
}

/// The typed content of an inbound message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Plain text.
    Text {
        /// The text, with a leading `@bot` mention already stripped in groups.
        text: String,
    },
    /// A single media item (image, file, voice, video) with optional caption or transcript.
    Media {
        /// Caption, or the platform's voice transcript.
        #[serde(default)]
        text: String,
        /// The media itself.
        attachment: Attachment,
    },
    /// A voice message: the platform's transcript, and the audio itself when the platform
    /// delivered it (downloaded like any media).
    Voice {
        /// The platform's speech-to-text transcript (may be empty).
        #[serde(default)]
        transcript: String,
        /// The audio, when available.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attachment: Option<Attachment>,
    },
    /// Text mixed with media items, in order.
    Mixed {
        /// The concatenated text parts.
        text: String,
        /// Media items in the order they appeared.
        attachments: Vec<Attachment>,
    },
    /// A shared location.
    Location {
        /// Latitude in degrees.
        latitude: f64,
        /// Longitude in degrees.
        longitude: f64,
        /// Place label.
        #[serde(default)]
        label: String,
    },
    /// A shared link or article.
    Link {
        /// Title.
        title: String,
        /// Description.
        #[serde(default)]
        description: String,
        /// URL.
        url: String,
    },
    /// A platform event.
    Event(PlatformEvent),
}

/// One accepted message from a platform, normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The platform instance name (the key under `platforms:`).
    pub instance: String,
    /// The platform message id (used for dedup and as the inbox key).
    pub message_id: String,
    /// Who sent it.
    pub sender: Sender,
    /// The conversation.
    pub chat: ChatAddress,
    /// What it says.
    pub content: Content,
    /// The message it quotes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quote: Option<Quote>,
    /// When the platform says it was sent (or when it was received).
    pub received_at: DateTime<Utc>,
    /// Adapter-private reply context (for example the WeCom `req_id`). Opaque to the router;
    /// persisted with the message so a resumed turn can still try to reply in place.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub reply_context: serde_json::Value,
}

impl InboundMessage {
    /// The user-visible text of the message: text content, caption, or a rendering of
    /// location/link content. Events yield an empty string.
    pub fn text(&self) -> String {
        match &self.content {
            Content::Text { text }
            | Content::Media { text, .. }
            | Content::Mixed { text, .. }
            | Content::Voice {
                transcript: text, ..
            } => text.clone(),
            Content::Location {
                latitude,
                longitude,
                label,
            } => format!("[location] {label} ({latitude}, {longitude})").replace("  ", " "),
            Content::Link {
                title,
                description,
                url,
            } => {
                if description.is_empty() {
                    format!("[link] {title}\n{url}")
                } else {
                    format!("[link] {title}\n{description}\n{url}")
                }
            }
            Content::Event(_) => String::new(),
        }
    }

    /// Every attachment of the message, including those of a quoted message.
    pub fn attachments(&self) -> Vec<Attachment> {
        let mut out = match &self.content {
            Content::Media { attachment, .. } => vec![attachment.clone()],
            Content::Voice { attachment, .. } => attachment.iter().cloned().collect(),
            Content::Mixed { attachments, .. } => attachments.clone(),
            _ => Vec::new(),
        };
        if let Some(q) = &self.quote {
            out.extend(q.attachments.iter().cloned());
        }
        out
    }

    /// What kind of message this is, as the agent sees it: `text`, `voice`, `media`, `mixed`,
    /// `location`, `link` or `event`.
    pub fn kind_name(&self) -> &'static str {
        match &self.content {
            Content::Text { .. } => "text",
            Content::Voice { .. } => "voice",
            Content::Media { .. } => "media",
            Content::Mixed { .. } => "mixed",
            Content::Location { .. } => "location",
            Content::Link { .. } => "link",
            Content::Event(_) => "event",
        }
    }

    /// True when this is a platform event rather than a user message.
    pub fn is_event(&self) -> bool {
        matches!(self.content, Content::Event(_))
    }
}

/// A proactive destination, parsed from `user:ID`, `group:ID`, `party:ID`, `tag:ID`, `@all`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Target {
    /// One user (DM).
    User(String),
    /// A group chat.
    Group(String),
    /// A department (callback apps).
    Party(String),
    /// A tag (callback apps).
    Tag(String),
    /// Everyone visible to the app.
    All,
}

impl Target {
    /// Parses `user:ID` (also a bare `ID`), `group:ID`, `party:ID`, `tag:ID` or `@all`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("@all") {
            return Ok(Target::All);
        }
        let (prefix, id) = match s.split_once(':') {
            Some((p, id)) => (p.to_ascii_lowercase(), id.trim()),
            None => ("user".to_string(), s),
        };
        if id.is_empty() {
            return Err(format!("target `{s}` has an empty id"));
        }
        match prefix.as_str() {
            "user" => Ok(Target::User(id.into())),
            "group" | "chat" => Ok(Target::Group(id.into())),
            "party" | "dept" => Ok(Target::Party(id.into())),
            "tag" => Ok(Target::Tag(id.into())),
            // `corp:user` style ids (wecom_callback) have no known prefix: keep them whole.
            _ => Ok(Target::User(s.into())),
        }
    }

    /// The target that reaches a chat address.
    pub fn from_chat(chat: &ChatAddress) -> Self {
        match chat.kind {
            ChatKind::Dm => Target::User(chat.chat_id.clone()),
            ChatKind::Group => Target::Group(chat.chat_id.clone()),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::User(id) => write!(f, "user:{id}"),
            Target::Group(id) => write!(f, "group:{id}"),
            Target::Party(id) => write!(f, "party:{id}"),
            Target::Tag(id) => write!(f, "tag:{id}"),
            Target::All => f.write_str("@all"),
        }
    }
}

/// An outbound message for `send`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboundMessage {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// Markdown in the platform's dialect.
    Markdown {
        /// The markdown source.
        text: String,
    },
}

impl OutboundMessage {
    /// Plain text.
    pub fn text(t: impl Into<String>) -> Self {
        OutboundMessage::Text { text: t.into() }
    }

    /// Markdown.
    pub fn markdown(t: impl Into<String>) -> Self {
        OutboundMessage::Markdown { text: t.into() }
    }

    /// The body, whatever the format.
    pub fn body(&self) -> &str {
        match self {
            OutboundMessage::Text { text } | OutboundMessage::Markdown { text } => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_and_without_prefix() {
        assert_eq!(
            Target::parse("alice").unwrap(),
            Target::User("alice".into())
        );
        assert_eq!(
            Target::parse("USER:bob").unwrap(),
            Target::User("bob".into())
        );
        assert_eq!(
            Target::parse("group:wrX").unwrap(),
            Target::Group("wrX".into())
        );
        assert_eq!(Target::parse("party:2").unwrap(), Target::Party("2".into()));
        assert_eq!(Target::parse("tag:7").unwrap(), Target::Tag("7".into()));
        assert_eq!(Target::parse("@all").unwrap(), Target::All);
        assert_eq!(
            Target::parse("ww123:zhang").unwrap(),
            Target::User("ww123:zhang".into())
        );
        assert!(Target::parse("user:").is_err());
        assert_eq!(Target::parse("group:wrX").unwrap().to_string(), "group:wrX");
    }
}
