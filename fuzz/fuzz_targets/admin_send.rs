//! The JSON body of `POST /admin/send` (`router::admin::SendRequest`, deserialised as axum's
//! `Json` extractor does) and the target address it carries (`gateway_core::Target::parse`).
//! Checks: no panic; an accepted body survives a serialise → deserialise round trip; an accepted
//! target prints as an address that parses back to the same target.
#![no_main]

use gateway_core::Target;
use libfuzzer_sys::fuzz_target;
use router::admin::SendRequest;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = serde_json::from_slice::<SendRequest>(data) else {
        return;
    };
    let json = serde_json::to_value(&req).expect("an accepted request serialises");
    let again: SendRequest = serde_json::from_value(json.clone()).expect("and reads back");
    assert_eq!(serde_json::to_value(&again).expect("serialises"), json);

    if let Ok(target) = Target::parse(&req.to) {
        let printed = target.to_string();
        assert_eq!(
            Target::parse(&printed),
            Ok(target),
            "printed as {printed:?}"
        );
    }
});
