//! One text frame of the AI Bot long connection (wecom-aibot reference §1.1, §3): the lenient
//! frame reader `Incoming::parse`, then the inbound message and event parsers and the command
//! parser that the adapter runs on a callback. Checks: no panic, the typed frame's accessors
//! agree with each other, the header fields survive a round trip through JSON, and the parsed
//! message keeps the documented shape (sender present, text trimmed, media with a source).
#![no_main]

use gateway_core::commands;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use wecom::inbound::{parse_event, parse_message};
use wecom::protocol::Incoming;

fuzz_target!(|data: &[u8]| {
    // WebSocket text frames are UTF-8 (the socket layer refuses anything else).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(frame) = Incoming::parse(text) else {
        return;
    };
    assert_eq!(frame.code(), frame.errcode.unwrap_or(-1));
    assert_eq!(frame.is_success(), frame.errcode == Some(0));
    assert!(!frame.is_message() || frame.is_callback());
    assert!(frame.event_type().is_none_or(|t| !t.is_empty()));

    let rebuilt = json!({
        "cmd": frame.cmd,
        "headers": { "req_id": frame.req_id },
        "errcode": frame.errcode,
        "errmsg": frame.errmsg,
    });
    let again = Incoming::parse(&rebuilt.to_string()).expect("a rebuilt frame parses");
    assert_eq!(
        (&again.cmd, &again.req_id, again.errcode, &again.errmsg),
        (&frame.cmd, &frame.req_id, frame.errcode, &frame.errmsg)
    );
    assert_eq!(again.body, Value::Null);

    if let Some(msg) = parse_message(&frame) {
        let origin = &msg.origin;
        assert!(!origin.sender.is_empty() && origin.sender == origin.sender.trim());
        assert!(!origin.msgid.is_empty());
        assert!(!origin.chat.chat_id.is_empty());
        // Trimmed, and in groups without the leading `@bot` mentions.
        assert_eq!(msg.text, msg.text.trim());
        assert!(!origin.chat.is_group() || !msg.text.starts_with('@'));
        let quoted = msg.quote.iter().flat_map(|q| q.media.iter());
        for m in msg.media.iter().chain(quoted) {
            assert!(m.url.is_some() || m.base64.is_some());
        }
        if let Some(q) = &msg.quote {
            assert!(!q.text.is_empty() || !q.media.is_empty());
        }
        let _ = commands::parse(&msg.text, origin.chat.is_group());
    }
    if let Some(event) = parse_event(&frame) {
        assert_ne!(frame.event_type(), Some("disconnected_event"));
        assert!(!event.origin.sender.is_empty());
    }
});
