//! Builders for the callback bodies the fake openws server pushes (reference
//! `wecom-aibot-official.md` §3.1 message fields, §3.2 events): who is talking where ([`Chat`])
//! and what they sent ([`Msg`]).

use serde_json::{json, Map, Value};

/// The conversation a pushed message belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chat {
    /// A single chat with `user` (no `chatid` in the body, `chattype: single`).
    Dm {
        /// The sender's user id.
        user: String,
    },
    /// A group chat `chat_id`, message from `user`.
    Group {
        /// The group's chat id.
        chat_id: String,
        /// The sender's user id.
        user: String,
    },
}

impl Chat {
    /// A DM with `user`.
    pub fn dm(user: &str) -> Self {
        Chat::Dm {
            user: user.to_owned(),
        }
    }

    /// A message from `user` in group `chat_id`.
    pub fn group(chat_id: &str, user: &str) -> Self {
        Chat::Group {
            chat_id: chat_id.to_owned(),
            user: user.to_owned(),
        }
    }

    /// The sender.
    pub fn user(&self) -> &str {
        match self {
            Chat::Dm { user } | Chat::Group { user, .. } => user,
        }
    }

    /// The id proactive sends use: the group chat id, or the user id for DMs.
    pub fn chat_id(&self) -> &str {
        match self {
            Chat::Dm { user } => user,
            Chat::Group { chat_id, .. } => chat_id,
        }
    }

    /// True for a group.
    pub fn is_group(&self) -> bool {
        matches!(self, Chat::Group { .. })
    }

    /// Writes `chatid`, `chattype` and `from` into a body.
    pub(crate) fn fill(&self, body: &mut Map<String, Value>) {
        match self {
            Chat::Dm { user } => {
                body.insert("chattype".into(), json!("single"));
                body.insert("from".into(), json!({ "userid": user }));
            }
            Chat::Group { chat_id, user } => {
                body.insert("chattype".into(), json!("group"));
                body.insert("chatid".into(), json!(chat_id));
                body.insert("from".into(), json!({ "userid": user }));
            }
        }
    }
}

/// A media reference as WeCom sends it: a download URL with its per-URL AES key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    /// Where the encrypted bytes are served.
    pub url: String,
    /// The unpadded base64 key (as WeCom sends it).
    pub aeskey: String,
}

/// The message part of a callback body: `msgtype` plus its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub(crate) fields: Map<String, Value>,
    pub(crate) msgid: Option<String>,
}

impl Msg {
    fn of(msgtype: &str, key: &str, value: Value) -> Self {
        let mut fields = Map::new();
        fields.insert("msgtype".into(), json!(msgtype));
        fields.insert(key.into(), value);
        Self {
            fields,
            msgid: None,
        }
    }

    /// `msgtype: text`.
    pub fn text(content: &str) -> Self {
        Self::of("text", "text", json!({ "content": content }))
    }

    /// `msgtype: image` with a URL and key.
    pub fn image(media: &MediaRef) -> Self {
        Self::of(
            "image",
            "image",
            json!({ "url": media.url, "aeskey": media.aeskey }),
        )
    }

    /// `msgtype: image` with inline base64 (optionally a data URL).
    pub fn image_base64(b64: &str) -> Self {
        Self::of("image", "image", json!({ "base64": b64 }))
    }

    /// `msgtype: file`.
    pub fn file(media: &MediaRef, filename: &str) -> Self {
        Self::of(
            "file",
            "file",
            json!({ "url": media.url, "aeskey": media.aeskey, "filename": filename }),
        )
    }

    /// `msgtype: video`.
    pub fn video(media: &MediaRef) -> Self {
        Self::of(
            "video",
            "video",
            json!({ "url": media.url, "aeskey": media.aeskey }),
        )
    }

    /// `msgtype: voice` with the server's transcript.
    pub fn voice(transcript: &str) -> Self {
        Self::of("voice", "voice", json!({ "content": transcript }))
    }

    /// `msgtype: mixed` from `items` (each a [`Msg::text`] or [`Msg::image`]).
    pub fn mixed(items: Vec<Msg>) -> Self {
        let items: Vec<Value> = items
            .into_iter()
            .map(|m| {
                let t = m.msgtype().to_owned();
                json!({ "msgtype": t, t.clone(): m.fields.get(&t).cloned().unwrap_or(Value::Null) })
            })
            .collect();
        Self::of("mixed", "mixed", json!({ "msg_item": items }))
    }

    /// `msgtype: appmsg` carrying a file (how PDFs and Office files arrive, §3.3).
    pub fn appmsg_file(media: &MediaRef, title: &str) -> Self {
        Self::of(
            "appmsg",
            "appmsg",
            json!({ "title": title, "file": { "url": media.url, "aeskey": media.aeskey } }),
        )
    }

    /// `msgtype: appmsg` carrying an image.
    pub fn appmsg_image(media: &MediaRef, title: &str) -> Self {
        Self::of(
            "appmsg",
            "appmsg",
            json!({ "title": title, "image": { "url": media.url, "aeskey": media.aeskey } }),
        )
    }

    /// `msgtype: appmsg`, a shared article.
    pub fn article(title: &str, digest: &str, url: &str) -> Self {
        Self::of(
            "appmsg",
            "appmsg",
            json!({ "title": title, "digest": digest, "url": url }),
        )
    }

    /// Adds a `quote` of `quoted` (its msgtype and fields).
    pub fn quoting(mut self, quoted: Msg) -> Self {
        self.fields
            .insert("quote".into(), Value::Object(quoted.fields));
        self
    }

    /// Fixes the `msgid` (to push duplicates); a random one is used otherwise.
    pub fn with_msgid(mut self, msgid: &str) -> Self {
        self.msgid = Some(msgid.to_owned());
        self
    }

    /// The message type.
    pub fn msgtype(&self) -> &str {
        self.fields
            .get("msgtype")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}
