//! The outer callback POST body (wecom-callback reference §2.1): `parse_envelope` on raw bytes,
//! as the callback server calls it. It must never panic, must agree with `parse_message` on the
//! same text, and whatever `Encrypt` it yields must go through `decrypt` without a panic.
#![no_main]

use gateway_fuzz::crypto;
use libfuzzer_sys::fuzz_target;
use wecom_common::xml::{parse_envelope, parse_message, XmlError, DEFAULT_BODY_CAP};

fuzz_target!(|data: &[u8]| {
    let envelope = parse_envelope(data, DEFAULT_BODY_CAP);
    // A small cap must refuse before parsing, whatever the body is.
    if !data.is_empty() {
        assert_eq!(
            parse_envelope(data, data.len() - 1),
            Err(XmlError::TooLarge {
                len: data.len(),
                cap: data.len() - 1
            })
        );
    }
    let Ok(text) = std::str::from_utf8(data) else {
        assert_eq!(envelope, Err(XmlError::NotUtf8));
        return;
    };
    match (parse_message(text), &envelope) {
        (Ok(msg), Ok(env)) => {
            assert_eq!(msg.get("Encrypt"), Some(env.encrypt.as_str()));
            assert_eq!(msg.to_user_name(), env.to_user_name.as_deref());
            assert_eq!(msg.agent_id(), env.agent_id.as_deref());
        }
        (Ok(msg), Err(e)) => {
            assert!(msg.get("Encrypt").is_none(), "envelope refused: {e}");
            assert_eq!(*e, XmlError::MissingField("Encrypt"));
        }
        (Err(a), Err(b)) => assert_eq!(&a, b),
        (Err(e), Ok(_)) => panic!("envelope parsed but the document did not: {e}"),
    }
    if let Ok(env) = envelope {
        let _ = crypto().decrypt(&env.encrypt);
    }
});
