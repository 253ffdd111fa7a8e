//! The decrypted inner message or event (wecom-callback reference §2.4): `parse_message`, then
//! the adapter's classification `wecom_callback::inbound::parse`, as the callback server runs
//! them. Checks: no panic, the documented bounds, and a round trip — the fields written back
//! as a flat document parse to the same fields.
#![no_main]

use gateway_fuzz::{AGENT_ID, CORP_ID};
use libfuzzer_sys::fuzz_target;
use wecom_callback::inbound::{self, Body};
use wecom_common::xml::{parse_message, MAX_ELEMENTS};

/// Escapes text content; the parser resolves the predefined entities back.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A name (or dotted path) of XML name characters, as every WeCom element has.
fn is_name(path: &str) -> bool {
    let mut chars = path.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '.' | '-'))
}

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(msg) = parse_message(xml) else {
        return;
    };
    let fields = msg.fields();
    assert!(fields.len() < MAX_ELEMENTS);
    for (path, value) in fields {
        assert_eq!(msg.get_all(path).next(), msg.get(path));
        assert!(msg.get_all(path).any(|v| v == value));
    }
    assert!(msg.to_map().len() <= fields.len());

    // Every field as a direct child of a fresh root: the same (path, text) pairs come back.
    // Only for names made of XML name characters: the reader does not validate names, and one
    // such as `"` cannot be written back as a tag.
    if fields.iter().all(|(path, _)| is_name(path)) {
        let mut flat = String::from("<xml>");
        for (path, value) in fields {
            flat.push_str(&format!("<{path}>{}</{path}>", escape(value)));
        }
        flat.push_str("</xml>");
        let again = parse_message(&flat).unwrap_or_else(|e| panic!("{flat:?} did not parse: {e}"));
        assert_eq!(again.fields(), fields, "round trip through {flat:?}");
    }

    let parsed = inbound::parse(&msg, CORP_ID, AGENT_ID);
    assert!(parsed.id.starts_with(&format!("{CORP_ID}:{AGENT_ID}:")));
    assert_eq!(parsed.user, parsed.user.trim());
    match &parsed.body {
        Body::Media { media_id, .. } => assert!(!media_id.is_empty()),
        Body::Location {
            latitude,
            longitude,
            ..
        } => assert!(latitude.is_finite() && longitude.is_finite()),
        Body::LogOnly { .. } => {}
        _ => assert!(!parsed.user.is_empty() && parsed.user != "sys"),
    }
});
