//! Frames of the AI Bot long connection (reference `wecom-aibot-official.md`, which supersedes
//! `wecom-aibot.md`): the command vocabulary (§2), lenient parsing of what the server sends
//! (§1.1, §3) and builders for every frame we send, shaped as the official SDK sends them (§2.1
//! subscribe, §2.2 ping, §2.3 stream, §2.4 welcome, §2.6 proactive send, §2.7 upload).
//!
//! Every answer carries `errcode`/`errmsg` at the top level and is correlated only by
//! `headers.req_id` (§1.2); success is `errcode == 0` exactly. Minted ids follow the SDK's
//! `<prefix>_<ms>_<hex8>` (§1.3).

use gateway_core::MediaKind;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};

/// Command names (`cmd`) of the protocol.
pub mod cmd {
    /// Authenticate right after the socket opens.
    pub const SUBSCRIBE: &str = "aibot_subscribe";
    /// Application-level heartbeat.
    pub const PING: &str = "ping";
    /// Passive reply on an inbound callback's `req_id`.
    pub const RESPOND_MSG: &str = "aibot_respond_msg";
    /// Welcome reply to an `enter_chat` event.
    pub const RESPOND_WELCOME: &str = "aibot_respond_welcome_msg";
    /// Proactive send to a chat id or user id.
    pub const SEND_MSG: &str = "aibot_send_msg";
    /// Chunked upload, step 1.
    pub const UPLOAD_INIT: &str = "aibot_upload_media_init";
    /// Chunked upload, one chunk.
    pub const UPLOAD_CHUNK: &str = "aibot_upload_media_chunk";
    /// Chunked upload, last step.
    pub const UPLOAD_FINISH: &str = "aibot_upload_media_finish";
    /// Inbound user message.
    pub const MSG_CALLBACK: &str = "aibot_msg_callback";
    /// Legacy alias of [`MSG_CALLBACK`].
    pub const LEGACY_CALLBACK: &str = "aibot_callback";
    /// Inbound event (enter_chat, template_card_event, feedback_event, disconnected_event).
    pub const EVENT_CALLBACK: &str = "aibot_event_callback";
}

/// The seed content of a stream: the client renders it as the animated "thinking" bubble.
pub const THINK_SEED: &str = "<think></think>";

/// True when `text` has something WeCom shows: a closing frame without a visible character
/// leaves the thinking animation up (§4 "The final frame must be visible").
pub fn has_visible(text: &str) -> bool {
    let shown = text.replace(THINK_SEED, "");
    shown.chars().any(|c| {
        !c.is_whitespace()
            && !c.is_control()
            && !matches!(
                c,
                '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}' | '\u{00AD}'
            )
    })
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Not JSON even after escaping raw control characters.
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object.
    #[error("frame is not a JSON object")]
    NotObject,
}

/// A frame received from the server, with the fields every frame may carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// `cmd`, empty for responses and ACKs.
    pub cmd: String,
    /// `headers.req_id`, empty when missing.
    pub req_id: String,
    /// Top-level `errcode`; `None` when absent or null (which counts as failure, §1.2).
    pub errcode: Option<i64>,
    /// Top-level `errmsg`, empty when absent.
    pub errmsg: String,
    /// `body`, `Null` when absent.
    pub body: Value,
}

impl Incoming {
    /// Parses a text frame. Strict JSON first; WeCom sometimes puts raw control characters in
    /// strings (§1.1), so a failed parse is retried with those escaped.
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(first) => serde_json::from_str(&escape_control_chars(text))
                .map_err(|_| FrameError::NotJson(first.to_string()))?,
        };
        Self::from_value(value)
    }

    /// Builds from an already parsed JSON value.
    pub fn from_value(mut value: Value) -> Result<Self, FrameError> {
        let obj = value.as_object_mut().ok_or(FrameError::NotObject)?;
        let cmd = obj
            .get("cmd")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let req_id = obj
            .get("headers")
            .and_then(|h| h.get("req_id"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let errcode = obj.get("errcode").and_then(|v| match v {
            Value::Number(n) => n.as_i64(),
            // Some gateways stringify numbers; accept "0" as well as 0.
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        });
        let errmsg = obj
            .get("errmsg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let body = obj.remove("body").unwrap_or(Value::Null);
        Ok(Self {
            cmd,
            req_id,
            errcode,
            errmsg,
            body,
        })
    }

    /// True for callbacks and events (frames the server pushes, as opposed to answers).
    pub fn is_callback(&self) -> bool {
        matches!(
            self.cmd.as_str(),
            cmd::MSG_CALLBACK | cmd::LEGACY_CALLBACK | cmd::EVENT_CALLBACK
        )
    }

    /// True for a message callback (either spelling).
    pub fn is_message(&self) -> bool {
        matches!(self.cmd.as_str(), cmd::MSG_CALLBACK | cmd::LEGACY_CALLBACK)
    }

    /// True for an answer that reports success: `errcode` present and exactly 0 (§1.2).
    pub fn is_success(&self) -> bool {
        self.errcode == Some(0)
    }

    /// The error code of a failed answer; an answer without one reads as -1.
    pub fn code(&self) -> i64 {
        self.errcode.unwrap_or(-1)
    }

    /// The event type of an event callback: `body.event.eventtype`, falling back to
    /// `body.event_type` (the field hermes reads; §3.6 warns it is usually not there).
    pub fn event_type(&self) -> Option<&str> {
        self.body
            .get("event")
            .and_then(|e| e.get("eventtype"))
            .and_then(Value::as_str)
            .or_else(|| self.body.get("event_type").and_then(Value::as_str))
            .filter(|s| !s.is_empty())
    }
}

/// Escapes raw control characters inside JSON strings so a lenient second parse can succeed.
fn escape_control_chars(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            } else if (c as u32) < 0x20 {
                out.push_str(&format!("\\u{:04x}", c as u32));
                continue;
            }
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    out
}

/// A frame we send: `{cmd, headers: {req_id}, body}`.
#[derive(Clone, PartialEq)]
pub struct Outgoing {
    /// The command.
    pub cmd: &'static str,
    /// The correlation id (the inbound `req_id` for passive replies).
    pub req_id: String,
    /// The body.
    pub body: Value,
}

impl std::fmt::Debug for Outgoing {
    // The body may hold the secret (subscribe) or message text: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("cmd", &self.cmd)
            .field("req_id", &self.req_id)
            .finish_non_exhaustive()
    }
}

impl Outgoing {
    /// The JSON text sent on the socket; a frame without a body (ping) has no `body` key.
    pub fn to_json(&self) -> String {
        if self.body.is_null() {
            json!({ "cmd": self.cmd, "headers": { "req_id": self.req_id } }).to_string()
        } else {
            json!({ "cmd": self.cmd, "headers": { "req_id": self.req_id }, "body": self.body })
                .to_string()
        }
    }

    /// True for a stream frame with `finish: true`.
    pub fn is_final_stream(&self) -> bool {
        self.body.get("msgtype").and_then(Value::as_str) == Some("stream")
            && self.body.pointer("/stream/finish").and_then(Value::as_bool) == Some(true)
    }
}

/// 32 random lowercase hex characters.
pub fn random_hex32() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A fresh id in the SDK's format, `<prefix>_<ms>_<hex8>` (§1.3): the prefix names the
/// command, the middle is the Unix time in milliseconds, the end 4 random bytes in hex.
pub fn new_req_id(prefix: &str) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{prefix}_{ms}_{:08x}", rand::random::<u32>())
}

/// A fresh stream id, `stream_<ms>_<hex8>` (§1.3): one per inbound message (§4).
pub fn new_stream_id() -> String {
    new_req_id("stream")
}

/// The subscribe frame (§2.1): `bot_id` and `secret`, nothing else.
pub fn subscribe(bot_id: &str, secret: &SecretString) -> Outgoing {
    Outgoing {
        cmd: cmd::SUBSCRIBE,
        req_id: new_req_id(cmd::SUBSCRIBE),
        body: json!({
            "bot_id": bot_id,
            "secret": secret.expose_secret(),
        }),
    }
}

/// An application-level ping (§2.2); it has no `body`.
pub fn ping() -> Outgoing {
    Outgoing {
        cmd: cmd::PING,
        req_id: new_req_id(cmd::PING),
        body: Value::Null,
    }
}

/// One stream frame on the inbound `req_id` (§2.3). `content` is the whole text so far.
pub fn stream_frame(req_id: &str, stream_id: &str, content: &str, finish: bool) -> Outgoing {
    Outgoing {
        cmd: cmd::RESPOND_MSG,
        req_id: req_id.to_owned(),
        body: json!({
            "msgtype": "stream",
            "stream": { "id": stream_id, "finish": finish, "content": content },
        }),
    }
}

/// A proactive markdown send (§2.6); `chatid` is a group chat id or, for DMs, the user id.
pub fn markdown_send(chatid: &str, content: &str) -> Outgoing {
    Outgoing {
        cmd: cmd::SEND_MSG,
        req_id: new_req_id(cmd::SEND_MSG),
        body: json!({ "chatid": chatid, "msgtype": "markdown", "markdown": { "content": content } }),
    }
}

/// The WeCom `msgtype` of an uploaded media kind.
pub fn media_type_name(kind: MediaKind) -> &'static str {
    kind.as_str()
}

/// A proactive media send (§2.6), groups included.
pub fn media_send(chatid: &str, kind: MediaKind, media_id: &str) -> Outgoing {
    let t = media_type_name(kind);
    Outgoing {
        cmd: cmd::SEND_MSG,
        req_id: new_req_id(cmd::SEND_MSG),
        body: json!({ "chatid": chatid, "msgtype": t, t: { "media_id": media_id } }),
    }
}

/// The welcome reply to an `enter_chat` event (§2.4), within 5 s.
pub fn welcome(req_id: &str, text: &str) -> Outgoing {
    Outgoing {
        cmd: cmd::RESPOND_WELCOME,
        req_id: req_id.to_owned(),
        body: json!({ "msgtype": "text", "text": { "content": text } }),
    }
}

/// Upload step 1 (§2.7).
pub fn upload_init(
    kind: MediaKind,
    filename: &str,
    total_size: u64,
    total_chunks: usize,
    md5_hex: &str,
) -> Outgoing {
    Outgoing {
        cmd: cmd::UPLOAD_INIT,
        req_id: new_req_id(cmd::UPLOAD_INIT),
        body: json!({
            "type": media_type_name(kind),
            "filename": filename,
            "total_size": total_size,
            "total_chunks": total_chunks,
            "md5": md5_hex,
        }),
    }
}

/// Upload step 2..n: one chunk, 0-based index, standard base64 (§2.7); every try of a chunk
/// gets a fresh `req_id`.
pub fn upload_chunk(upload_id: &str, index: usize, base64_data: String) -> Outgoing {
    Outgoing {
        cmd: cmd::UPLOAD_CHUNK,
        req_id: new_req_id(cmd::UPLOAD_CHUNK),
        body: json!({ "upload_id": upload_id, "chunk_index": index, "base64_data": base64_data }),
    }
}

/// Upload last step (§2.7).
pub fn upload_finish(upload_id: &str) -> Outgoing {
    Outgoing {
        cmd: cmd::UPLOAD_FINISH,
        req_id: new_req_id(cmd::UPLOAD_FINISH),
        body: json!({ "upload_id": upload_id }),
    }
}

/// The chat a callback came from, as `aibot_send_msg` names it: the group's `chatid`, else the
/// sender's user id (§2.6).
pub fn chat_of(body: &Value) -> Option<String> {
    str_at(body, &["chatid"])
        .or_else(|| str_at(body, &["from", "userid"]))
        .map(str::to_owned)
}

/// Reads a string at a JSON path of object keys; empty strings count as missing.
pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    cur.as_str().map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_acks_callbacks_and_events() {
        let ack = Incoming::parse(
            r#"{"headers":{"req_id":"r1"},"errcode":40013,"errmsg":"invalid secret"}"#,
        )
        .unwrap();
        assert_eq!(
            (ack.cmd.as_str(), ack.req_id.as_str(), ack.code()),
            ("", "r1", 40013)
        );
        assert!(!ack.is_callback() && !ack.is_success());

        // Success is errcode 0 exactly: an answer without one is a failure (§1.2).
        let bare = Incoming::parse(r#"{"headers":{"req_id":"r2"}}"#).unwrap();
        assert_eq!(bare.errcode, None);
        assert!(!bare.is_success());
        assert_eq!(bare.code(), -1);
        let ok = Incoming::parse(r#"{"headers":{"req_id":"r3"},"errcode":0}"#).unwrap();
        assert!(ok.is_success());

        let legacy =
            Incoming::parse(r#"{"cmd":"aibot_callback","headers":{"req_id":"x"},"body":{}}"#)
                .unwrap();
        assert!(legacy.is_message() && legacy.is_callback());

        let ev = Incoming::parse(
            r#"{"cmd":"aibot_event_callback","headers":{"req_id":"e"},"body":{"event":{"eventtype":"disconnected_event"}}}"#,
        )
        .unwrap();
        assert_eq!(ev.event_type(), Some("disconnected_event"));
        let legacy_field =
            Incoming::parse(r#"{"cmd":"aibot_event_callback","body":{"event_type":"enter_chat"}}"#)
                .unwrap();
        assert_eq!(legacy_field.event_type(), Some("enter_chat"));
    }

    #[test]
    fn raw_control_characters_are_tolerated() {
        let text = "{\"cmd\":\"aibot_msg_callback\",\"body\":{\"text\":{\"content\":\"a\tb\nc\"}}}";
        let f = Incoming::parse(text).unwrap();
        assert_eq!(str_at(&f.body, &["text", "content"]), Some("a\tb\nc"));
        assert!(matches!(Incoming::parse("[1]"), Err(FrameError::NotObject)));
        assert!(matches!(
            Incoming::parse("nope"),
            Err(FrameError::NotJson(_))
        ));
    }

    /// `<prefix>_<ms>_<hex8>`.
    fn sdk_shaped(id: &str, prefix: &str) -> bool {
        let Some(rest) = id.strip_prefix(prefix).and_then(|r| r.strip_prefix('_')) else {
            return false;
        };
        let Some((ms, hex)) = rest.split_once('_') else {
            return false;
        };
        ms.len() >= 13
            && ms.bytes().all(|b| b.is_ascii_digit())
            && hex.len() == 8
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    #[test]
    fn frames_have_the_shapes_the_official_sdk_sends() {
        let s = subscribe("bot", &SecretString::from("sec"));
        let v: Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(v["cmd"], "aibot_subscribe");
        assert!(sdk_shaped(
            v["headers"]["req_id"].as_str().unwrap(),
            "aibot_subscribe"
        ));
        assert_eq!(v["body"], json!({"bot_id":"bot","secret":"sec"}));
        assert!(
            !format!("{s:?}").contains("sec\""),
            "Debug must not print the body"
        );

        let p: Value = serde_json::from_str(&ping().to_json()).unwrap();
        assert_eq!(p["cmd"], "ping");
        assert!(p.get("body").is_none(), "a ping has no body: {p}");
        assert!(sdk_shaped(p["headers"]["req_id"].as_str().unwrap(), "ping"));

        let f = stream_frame("r", "stream_1", "hi", true);
        assert!(f.is_final_stream());
        assert!(!stream_frame("r", "s", "hi", false).is_final_stream());
        let m = media_send("c", MediaKind::File, "m2");
        assert_eq!(m.cmd, "aibot_send_msg");
        assert!(sdk_shaped(&m.req_id, "aibot_send_msg"));
        assert_eq!(
            m.body,
            json!({"chatid":"c","msgtype":"file","file":{"media_id":"m2"}})
        );
        assert!(sdk_shaped(&new_stream_id(), "stream"));
        assert!(sdk_shaped(
            &upload_chunk("u", 0, String::new()).req_id,
            "aibot_upload_media_chunk"
        ));
        assert_ne!(new_req_id("x"), new_req_id("x"));
    }

    #[test]
    fn visible_means_something_wecom_shows() {
        assert!(has_visible("ok"));
        assert!(has_visible(" 好 "));
        for invisible in [
            "",
            "  \n\t",
            "\u{200B}",
            "\u{FEFF}\u{2060} ",
            THINK_SEED,
            "<think></think>\n",
        ] {
            assert!(!has_visible(invisible), "{invisible:?}");
        }
    }
}
