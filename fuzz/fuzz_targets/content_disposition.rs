//! The `Content-Disposition` header of a media download (`wecom_common::net::disposition_filename`,
//! used by both adapters; RFC 6266 with RFC 5987 `filename*`). The name ends up in a file name
//! shown to the agent, so the checks are about safety: no panic, never a path separator, never
//! empty, `.` or `..`, no surrounding whitespace; and a round trip — a name sent percent-encoded
//! in `filename*` comes back as its last path component.
#![no_main]

use libfuzzer_sys::fuzz_target;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use wecom_common::net::disposition_filename;

/// What a safe file name looks like.
fn check(name: &str) {
    assert!(!name.is_empty());
    assert!(!name.contains(['/', '\\']), "path separator in {name:?}");
    assert!(name != "." && name != "..");
    assert_eq!(name, name.trim());
}

fuzz_target!(|data: &[u8]| {
    // Header values reach us as bytes; reqwest's `to_str` keeps visible ASCII only, but a
    // lossy view is the stricter test.
    let value = String::from_utf8_lossy(data);
    if let Some(name) = disposition_filename(&value) {
        check(&name);
    }

    // The input as a file name sent by a well-behaved server.
    let header = format!(
        "attachment; filename=\"fallback.bin\"; filename*=UTF-8''{}",
        utf8_percent_encode(&value, NON_ALPHANUMERIC)
    );
    let last = value.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let expected = (!last.is_empty() && last != "." && last != "..").then(|| last.to_owned());
    let got = disposition_filename(&header);
    assert_eq!(got, expected, "header {header:?}");
    if let Some(name) = got {
        check(&name);
    }
});
