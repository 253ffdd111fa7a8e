//! Parsing of inbound callbacks into typed messages and events (reference
//! `wecom-aibot-official.md` §3.1 messages and their fields, §3.2 events, §0 items 19 and 22), and building the
//! router's [`InboundMessage`] once media is downloaded.
//!
//! Deliberate differences from hermes: videos are downloaded (peers drop them), group detection
//! reads `chattype` only, and a failed download becomes a visible line in the text instead of
//! silently vanishing.

use chrono::{DateTime, TimeZone, Utc};
use gateway_core::commands::strip_leading_mentions;
use gateway_core::model::Quote;
use gateway_core::{
    Attachment, ChatAddress, Content, InboundMessage, MediaKind, PlatformEvent, Sender,
};
use serde_json::Value;

use crate::protocol::{str_at, Incoming};

/// A media item referenced by a callback, not yet downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    /// What the message says it is.
    pub kind: MediaKind,
    /// Download URL (valid for about five minutes).
    pub url: Option<String>,
    /// Per-URL AES key.
    pub aeskey: Option<String>,
    /// Inline content (base64, possibly a data URL).
    pub base64: Option<String>,
    /// File name, when the message gives one.
    pub name: Option<String>,
}

/// A quoted message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedQuote {
    /// Its text.
    pub text: String,
    /// Its media.
    pub media: Vec<MediaRef>,
}

/// A shared article.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLink {
    /// Title.
    pub title: String,
    /// Digest or description.
    pub description: String,
    /// Article URL.
    pub url: String,
}

/// Where a callback came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The reply handle.
    pub req_id: String,
    /// Dedup key: `msgid`, else `req_id`, else random.
    pub msgid: String,
    /// The conversation.
    pub chat: ChatAddress,
    /// The sender's user id.
    pub sender: String,
    /// When it was sent, if the body says.
    pub sent_at: Option<DateTime<Utc>>,
}

/// A parsed message callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMessage {
    /// Where it came from.
    pub origin: Origin,
    /// `msgtype`.
    pub msgtype: String,
    /// The sender's own text (leading `@mentions` stripped in groups).
    pub text: String,
    /// The sender's own media, in order.
    pub media: Vec<MediaRef>,
    /// A shared article.
    pub link: Option<ParsedLink>,
    /// The quoted message.
    pub quote: Option<ParsedQuote>,
}

impl ParsedMessage {
    /// True when the message is plain text without quote or media (eligible for merging).
    pub fn is_plain_text(&self) -> bool {
        self.msgtype == "text"
            && self.media.is_empty()
            && self.quote.is_none()
            && self.link.is_none()
    }
}

/// A parsed event callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// Where it came from.
    pub origin: Origin,
    /// The event.
    pub event: PlatformEvent,
}

fn origin(frame: &Incoming) -> Option<Origin> {
    let body = &frame.body;
    let sender = str_at(body, &["from", "userid"])?.to_owned();
    let is_group = str_at(body, &["chattype"]).is_some_and(|t| t.eq_ignore_ascii_case("group"));
    let chat = if is_group {
        ChatAddress::group(str_at(body, &["chatid"]).unwrap_or(&sender))
    } else {
        ChatAddress::dm(&sender)
    };
    let msgid = str_at(body, &["msgid"])
        .map(str::to_owned)
        .or_else(|| {
            body.get("msgid")
                .and_then(Value::as_i64)
                .map(|n| n.to_string())
        })
        .or_else(|| (!frame.req_id.is_empty()).then(|| frame.req_id.clone()))
        .unwrap_or_else(crate::protocol::random_hex32);
    let sent_at = body
        .get("create_time")
        .and_then(Value::as_i64)
        .and_then(|t| Utc.timestamp_opt(t, 0).single());
    Some(Origin {
        req_id: frame.req_id.clone(),
        msgid,
        chat,
        sender,
        sent_at,
    })
}

fn media_ref(kind: MediaKind, v: &Value) -> Option<MediaRef> {
    let url = str_at(v, &["url"]).map(str::to_owned);
    let base64 = str_at(v, &["base64"]).map(str::to_owned);
    if url.is_none() && base64.is_none() {
        return None;
    }
    Some(MediaRef {
        kind,
        url,
        aeskey: str_at(v, &["aeskey"]).map(str::to_owned),
        base64,
        name: str_at(v, &["filename"])
            .or_else(|| str_at(v, &["name"]))
            .map(str::to_owned),
    })
}

/// Text, media and link of a message-shaped object (a body, or a `quote`).
fn extract(obj: &Value) -> (String, Vec<MediaRef>, Option<ParsedLink>) {
    let msgtype = str_at(obj, &["msgtype"]).unwrap_or("");
    let mut texts: Vec<String> = Vec::new();
    let mut media = Vec::new();
    let mut link = None;
    match msgtype {
        "mixed" => {
            let items = obj.pointer("/mixed/msg_item").and_then(Value::as_array);
            for item in items.into_iter().flatten() {
                match str_at(item, &["msgtype"]) {
                    Some("text") => {
                        texts.extend(str_at(item, &["text", "content"]).map(str::to_owned))
                    }
                    Some("image") => media.extend(
                        item.get("image")
                            .and_then(|i| media_ref(MediaKind::Image, i)),
                    ),
                    _ => {}
                }
            }
        }
        "voice" => {
            texts.extend(str_at(obj, &["voice", "content"]).map(str::to_owned));
            media.extend(
                obj.get("voice")
                    .and_then(|v| media_ref(MediaKind::Voice, v)),
            );
        }
        "file" => media.extend(obj.get("file").and_then(|f| media_ref(MediaKind::File, f))),
        "video" => media.extend(
            obj.get("video")
                .and_then(|v| media_ref(MediaKind::Video, v)),
        ),
        "appmsg" => {
            let app = obj.get("appmsg").unwrap_or(&Value::Null);
            let title = str_at(app, &["title"]).map(str::to_owned);
            let item = app
                .get("file")
                .and_then(|f| media_ref(MediaKind::File, f))
                .or_else(|| {
                    app.get("image")
                        .and_then(|i| media_ref(MediaKind::Image, i))
                });
            match item {
                Some(mut m) => {
                    // The title of a file card is its file name.
                    if m.name.is_none() {
                        m.name = title;
                    }
                    media.push(m);
                }
                None => {
                    let url = str_at(app, &["url"]).or_else(|| str_at(app, &["content_url"]));
                    let description =
                        str_at(app, &["digest"]).or_else(|| str_at(app, &["description"]));
                    if title.is_some() || url.is_some() {
                        link = Some(ParsedLink {
                            title: title.unwrap_or_default(),
                            description: description.unwrap_or_default().to_owned(),
                            url: url.unwrap_or_default().to_owned(),
                        });
                    }
                }
            }
        }
        _ => {}
    }
    if msgtype != "mixed" {
        texts.extend(str_at(obj, &["text", "content"]).map(str::to_owned));
        // An image may ride along any message type (§3.5).
        media.extend(
            obj.get("image")
                .and_then(|i| media_ref(MediaKind::Image, i)),
        );
    }
    (texts.join("\n"), media, link)
}

/// Parses a message callback; `None` when it has no sender.
pub fn parse_message(frame: &Incoming) -> Option<ParsedMessage> {
    let origin = origin(frame)?;
    let body = &frame.body;
    let msgtype = str_at(body, &["msgtype"]).unwrap_or("").to_owned();
    let (mut text, media, link) = extract(body);
    if origin.chat.is_group() {
        text = strip_leading_mentions(&text).to_owned();
    } else {
        text = text.trim().to_owned();
    }
    let quote = body.get("quote").filter(|q| q.is_object()).map(|q| {
        let (qtext, qmedia, qlink) = extract(q);
        let qtext = match qlink {
            Some(l) if qtext.is_empty() => [l.title, l.description, l.url]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => qtext,
        };
        ParsedQuote {
            text: qtext,
            media: qmedia,
        }
    });
    let quote = quote.filter(|q| !q.text.is_empty() || !q.media.is_empty());
    Some(ParsedMessage {
        origin,
        msgtype,
        text,
        media,
        link,
        quote,
    })
}

/// Parses an event callback; `None` when it has no sender or is the take-over event (handled
/// by the session).
pub fn parse_event(frame: &Incoming) -> Option<ParsedEvent> {
    let origin = origin(frame)?;
    let name = frame.event_type()?.to_owned();
    let event_obj = frame.body.get("event").unwrap_or(&Value::Null);
    let event = match name.as_str() {
        "enter_chat" => PlatformEvent::EnterChat,
        "template_card_event" => {
            let card = event_obj.get("template_card_event").unwrap_or(&Value::Null);
            PlatformEvent::TemplateCard {
                task_id: str_at(card, &["task_id"]).unwrap_or("").to_owned(),
                key: str_at(card, &["event_key"]).unwrap_or("").to_owned(),
            }
        }
        "feedback_event" => {
            let fb = event_obj.get("feedback_event").unwrap_or(&Value::Null);
            let kind = match fb.get("type") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            PlatformEvent::Feedback {
                id: str_at(fb, &["id"]).unwrap_or("").to_owned(),
                kind,
            }
        }
        "disconnected_event" => return None,
        _ => PlatformEvent::Other { name },
    };
    Some(ParsedEvent { origin, event })
}

/// What became of one media reference.
#[derive(Debug, Clone)]
pub enum Fetched {
    /// Downloaded, decrypted and stored.
    Ok(Attachment),
    /// Could not be fetched; the text says so instead.
    Failed(MediaKind),
}

fn failure_line(kind: MediaKind) -> String {
    format!("[{} could not be downloaded]", kind.as_str())
}

/// Builds the router's message. `own` and `quoted` are the fetched media of the message and of
/// its quote, in order; `reply_context` is stored with the message.
pub fn build_message(
    instance: &str,
    parsed: &ParsedMessage,
    own: Vec<Fetched>,
    quoted: Vec<Fetched>,
    reply_context: Value,
) -> Option<InboundMessage> {
    let mut text = parsed.text.clone();
    let mut attachments = Vec::new();
    for f in own {
        match f {
            Fetched::Ok(a) => attachments.push(a),
            Fetched::Failed(kind) => push_line(&mut text, &failure_line(kind)),
        }
    }
    let quote = parsed.quote.as_ref().map(|q| {
        let mut qtext = q.text.clone();
        let mut qatt = Vec::new();
        for f in quoted {
            match f {
                Fetched::Ok(a) => qatt.push(a),
                Fetched::Failed(kind) => push_line(&mut qtext, &failure_line(kind)),
            }
        }
        Quote {
            text: qtext,
            attachments: qatt,
        }
    });
    // The router hands the agent the message text only, so the quoted text is appended as a
    // markdown quote; the structured quote stays on the message too.
    if let Some(q) = &quote {
        if !q.text.is_empty() {
            let quoted: Vec<String> = q.text.lines().map(|l| format!("> {l}")).collect();
            if text.is_empty() {
                text = quoted.join("\n");
            } else {
                text = format!("{text}\n\n{}", quoted.join("\n"));
            }
        }
    }
    let content = if let Some(l) = &parsed.link {
        Content::Link {
            title: l.title.clone(),
            description: l.description.clone(),
            url: l.url.clone(),
        }
    } else if parsed.msgtype == "voice" && (!text.is_empty() || !attachments.is_empty()) {
        // Kept as voice: the agent learns the text is a transcript, with the audio if sent.
        Content::Voice {
            transcript: text,
            attachment: attachments.pop(),
        }
    } else if parsed.msgtype == "mixed" || attachments.len() > 1 {
        Content::Mixed { text, attachments }
    } else if let Some(a) = attachments.pop() {
        Content::Media {
            text,
            attachment: a,
        }
    } else if text.is_empty() && quote.as_ref().is_none_or(|q| q.attachments.is_empty()) {
        return None;
    } else {
        Content::Text { text }
    };
    Some(InboundMessage {
        instance: instance.to_owned(),
        message_id: parsed.origin.msgid.clone(),
        sender: Sender::new(&parsed.origin.sender),
        chat: parsed.origin.chat.clone(),
        content,
        quote,
        received_at: parsed.origin.sent_at.unwrap_or_else(Utc::now),
        reply_context,
    })
}

/// Builds the router's message for an event.
pub fn build_event(instance: &str, parsed: &ParsedEvent, reply_context: Value) -> InboundMessage {
    InboundMessage {
        instance: instance.to_owned(),
        message_id: parsed.origin.msgid.clone(),
        sender: Sender::new(&parsed.origin.sender),
        chat: parsed.origin.chat.clone(),
        content: Content::Event(parsed.event.clone()),
        quote: None,
        received_at: parsed.origin.sent_at.unwrap_or_else(Utc::now),
        reply_context,
    }
}

fn push_line(text: &mut String, line: &str) {
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(line);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frame(body: Value) -> Incoming {
        Incoming::from_value(
            json!({"cmd":"aibot_msg_callback","headers":{"req_id":"r1"},"body":body}),
        )
        .unwrap()
    }

    #[test]
    fn text_dm_and_group_with_mention() {
        let dm = parse_message(&frame(
            json!({"msgid":"m","chattype":"single","from":{"userid":"u"},
            "msgtype":"text","text":{"content":"  hi  "}}),
        ))
        .unwrap();
        assert_eq!(dm.origin.chat, ChatAddress::dm("u"));
        assert_eq!(dm.text, "hi");
        assert!(dm.is_plain_text());
        let g = parse_message(&frame(json!({"msgid":"m","chattype":"GROUP","chatid":"g1",
            "from":{"userid":"u"},"msgtype":"text","text":{"content":"@Bot /stop"}})))
        .unwrap();
        assert_eq!(g.origin.chat, ChatAddress::group("g1"));
        assert_eq!(g.text, "/stop");
        // A chatid alone does not make a group (§3.3: chattype decides).
        let dm2 = parse_message(&frame(
            json!({"chattype":"single","chatid":"x","from":{"userid":"u"},
            "msgtype":"text","text":{"content":"@a b"}}),
        ))
        .unwrap();
        assert_eq!(dm2.origin.chat, ChatAddress::dm("u"));
        assert_eq!(dm2.text, "@a b");
        assert_eq!(dm2.origin.msgid, "r1", "msgid falls back to req_id");
        assert!(parse_message(&frame(json!({"msgtype":"text"}))).is_none());
    }

    #[test]
    fn mixed_voice_video_appmsg_and_quote() {
        let m = parse_message(&frame(
            json!({"chattype":"single","from":{"userid":"u"},"msgtype":"mixed",
            "mixed":{"msg_item":[{"msgtype":"text","text":{"content":"part1"}},
                {"msgtype":"image","image":{"url":"http://x/1","aeskey":"k"}},
                {"msgtype":"text","text":{"content":" part2 "}}]}}),
        ))
        .unwrap();
        assert_eq!(m.text, "part1\npart2");
        assert_eq!(m.media.len(), 1);
        let v = parse_message(&frame(
            json!({"chattype":"single","from":{"userid":"u"},"msgtype":"voice",
            "voice":{"content":"spoken"},"quote":{"msgtype":"text","text":{"content":"quoted"}}}),
        ))
        .unwrap();
        assert_eq!(
            (v.text.as_str(), v.quote.unwrap().text.as_str()),
            ("spoken", "quoted")
        );
        let vid = parse_message(&frame(
            json!({"chattype":"single","from":{"userid":"u"},"msgtype":"video",
            "video":{"url":"http://x/v","aeskey":"k"}}),
        ))
        .unwrap();
        assert_eq!(vid.media[0].kind, MediaKind::Video);
        let app = parse_message(&frame(
            json!({"chattype":"single","from":{"userid":"u"},"msgtype":"appmsg",
            "appmsg":{"title":"Q3.pdf","file":{"url":"http://x/f","aeskey":"k"}}}),
        ))
        .unwrap();
        assert_eq!(
            (app.media[0].kind, app.media[0].name.as_deref()),
            (MediaKind::File, Some("Q3.pdf"))
        );
        let art = parse_message(&frame(
            json!({"chattype":"single","from":{"userid":"u"},"msgtype":"appmsg",
            "appmsg":{"title":"T","digest":"D","url":"https://e/a"}}),
        ))
        .unwrap();
        assert_eq!(art.link.unwrap().description, "D");
        let q = parse_message(&frame(json!({"chattype":"single","from":{"userid":"u"},"msgtype":"text",
            "text":{"content":"see"},"quote":{"msgtype":"appmsg","appmsg":{"title":"T","image":{"base64":"AA=="}}}}))).unwrap();
        assert_eq!(q.quote.unwrap().media[0].kind, MediaKind::Image);
    }

    #[test]
    fn events_are_typed() {
        let ev = |e: Value| {
            Incoming::from_value(json!({"cmd":"aibot_event_callback","headers":{"req_id":"e"},
                "body":{"msgid":"x","chattype":"single","from":{"userid":"u"},"msgtype":"event","event":e}}))
            .unwrap()
        };
        assert_eq!(
            parse_event(&ev(json!({"eventtype":"enter_chat"})))
                .unwrap()
                .event,
            PlatformEvent::EnterChat
        );
        let card = parse_event(&ev(json!({"eventtype":"template_card_event",
            "template_card_event":{"task_id":"t1","event_key":"deny"}})))
        .unwrap();
        assert_eq!(
            card.event,
            PlatformEvent::TemplateCard {
                task_id: "t1".into(),
                key: "deny".into()
            }
        );
        let fb = parse_event(&ev(
            json!({"eventtype":"feedback_event","feedback_event":{"id":"f","type":2}}),
        ))
        .unwrap();
        assert_eq!(
            fb.event,
            PlatformEvent::Feedback {
                id: "f".into(),
                kind: "2".into()
            }
        );
        assert!(parse_event(&ev(json!({"eventtype":"disconnected_event"}))).is_none());
    }

    #[test]
    fn failed_media_is_visible_and_quotes_are_folded_into_the_text() {
        let p = parse_message(&frame(
            json!({"chattype":"single","from":{"userid":"u"},"msgtype":"text",
            "text":{"content":"hello"},"quote":{"msgtype":"text","text":{"content":"a\nb"}}}),
        ))
        .unwrap();
        let m = build_message("i", &p, vec![], vec![], Value::Null).unwrap();
        assert_eq!(m.text(), "hello\n\n> a\n> b");
        assert_eq!(m.quote.unwrap().text, "a\nb");
        let img = parse_message(&frame(
            json!({"chattype":"single","from":{"userid":"u"},"msgtype":"image",
            "image":{"url":"http://x"}}),
        ))
        .unwrap();
        let m = build_message(
            "i",
            &img,
            vec![Fetched::Failed(MediaKind::Image)],
            vec![],
            Value::Null,
        )
        .unwrap();
        assert_eq!(m.text(), "[image could not be downloaded]");
    }
}
