//! Frames of the AI Bot long connection: the command vocabulary (reference `wecom-aibot.md` §0),
//! lenient parsing of what the server sends (§1.1, §3.1) and builders for every frame we send
//! (§1.2 subscribe, §2 ping, §4.2 markdown, §4.3 stream, §4.4 upload, §4.5 media, §4.9 welcome).
//!
//! Every response and ACK carries `errcode`/`errmsg` at the top level and is correlated only by
//! `headers.req_id` (§9 item 1); nothing here looks at a response's `cmd`.

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

/// Appended to a final stream frame whose content equals the previous frame: the server drops
/// a final frame identical to the last intermediate one (§4.3).
pub const ZERO_WIDTH_SPACE: char = '\u{200B}';

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
    /// Top-level `errcode`; `None` when absent or null (which counts as success).
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

    /// The error code, 0 when absent.
    pub fn code(&self) -> i64 {
        self.errcode.unwrap_or(0)
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
    /// The JSON text sent on the socket.
    pub fn to_json(&self) -> String {
        json!({ "cmd": self.cmd, "headers": { "req_id": self.req_id }, "body": self.body })
            .to_string()
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

/// A fresh request id, `<prefix>-<32 hex>` (the server treats it as opaque, §1.2).
pub fn new_req_id(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex32())
}

/// A fresh stream id, `stream_<16 hex>`.
pub fn new_stream_id() -> String {
    format!("stream_{:016x}", rand::random::<u64>())
}

/// The subscribe frame (§1.2). `device_id` stays the same across reconnects and restarts.
pub fn subscribe(bot_id: &str, secret: &SecretString, device_id: &str) -> Outgoing {
    Outgoing {
        cmd: cmd::SUBSCRIBE,
        req_id: new_req_id("subscribe"),
        body: json!({
            "bot_id": bot_id,
            "secret": secret.expose_secret(),
            "device_id": device_id,
        }),
    }
}

/// An application-level ping (§2).
pub fn ping() -> Outgoing {
    Outgoing {
        cmd: cmd::PING,
        req_id: new_req_id("ping"),
        body: json!({}),
    }
}

/// One stream frame on the inbound `req_id` (§4.3). `content` is cumulative for the bubble.
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

/// A markdown passive reply (§4.2).
pub fn markdown_reply(req_id: &str, content: &str) -> Outgoing {
    Outgoing {
        cmd: cmd::RESPOND_MSG,
        req_id: req_id.to_owned(),
        body: json!({ "msgtype": "markdown", "markdown": { "content": content } }),
    }
}

/// A proactive markdown send (§4.2); `chatid` is a group chat id or, for DMs, the user id.
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

/// A passive media reply `{msgtype: T, T: {media_id}}` (§4.5).
pub fn media_reply(req_id: &str, kind: MediaKind, media_id: &str) -> Outgoing {
    let t = media_type_name(kind);
    Outgoing {
        cmd: cmd::RESPOND_MSG,
        req_id: req_id.to_owned(),
        body: json!({ "msgtype": t, t: { "media_id": media_id } }),
    }
}

/// A proactive media send (§4.5).
pub fn media_send(chatid: &str, kind: MediaKind, media_id: &str) -> Outgoing {
    let t = media_type_name(kind);
    Outgoing {
        cmd: cmd::SEND_MSG,
        req_id: new_req_id(cmd::SEND_MSG),
        body: json!({ "chatid": chatid, "msgtype": t, t: { "media_id": media_id } }),
    }
}

/// The welcome reply to an `enter_chat` event (§4.9).
pub fn welcome(req_id: &str, text: &str) -> Outgoing {
    Outgoing {
        cmd: cmd::RESPOND_WELCOME,
        req_id: req_id.to_owned(),
        body: json!({ "msgtype": "text", "text": { "content": text } }),
    }
}

/// Upload step 1 (§4.4).
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

/// Upload step 2..n: one chunk, 0-based index, standard base64 (§4.4).
pub fn upload_chunk(upload_id: &str, index: usize, base64_data: String) -> Outgoing {
    Outgoing {
        cmd: cmd::UPLOAD_CHUNK,
        req_id: new_req_id(cmd::UPLOAD_CHUNK),
        body: json!({ "upload_id": upload_id, "chunk_index": index, "base64_data": base64_data }),
    }
}

/// Upload last step (§4.4).
pub fn upload_finish(upload_id: &str) -> Outgoing {
    Outgoing {
        cmd: cmd::UPLOAD_FINISH,
        req_id: new_req_id(cmd::UPLOAD_FINISH),
        body: json!({ "upload_id": upload_id }),
    }
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
        assert!(!ack.is_callback());

        let ok = Incoming::parse(r#"{"headers":{"req_id":"r2"}}"#).unwrap();
        assert_eq!(ok.errcode, None);
        assert_eq!(ok.code(), 0);

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

    #[test]
    fn frames_have_the_documented_shapes() {
        let s = subscribe("bot", &SecretString::from("sec"), "dev");
        let v: Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(v["cmd"], "aibot_subscribe");
        assert!(v["headers"]["req_id"]
            .as_str()
            .unwrap()
            .starts_with("subscribe-"));
        assert_eq!(
            v["body"],
            json!({"bot_id":"bot","secret":"sec","device_id":"dev"})
        );
        assert!(
            !format!("{s:?}").contains("sec\""),
            "Debug must not print the body"
        );

        let f = stream_frame("r", "stream_1", "hi", true);
        assert!(f.is_final_stream());
        assert!(!stream_frame("r", "s", "hi", false).is_final_stream());
        let m = media_reply("r", MediaKind::Image, "m1");
        assert_eq!(m.body, json!({"msgtype":"image","image":{"media_id":"m1"}}));
        let p = media_send("c", MediaKind::File, "m2");
        assert_eq!(
            p.body,
            json!({"chatid":"c","msgtype":"file","file":{"media_id":"m2"}})
        );
        assert_eq!(new_stream_id().len(), "stream_".len() + 16);
    }
}
