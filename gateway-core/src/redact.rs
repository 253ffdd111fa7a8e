//! Secret scrubbing for everything the gateway shows, logs, stores or serves.
//!
//! Two layers, applied together by [`scrub`]:
//! - **Known values**: every configured secret (platform secrets, agent API keys, header values,
//!   a command backend's `env` values) and every credential learnt at run time (access tokens)
//!   is [`register`]ed once; each occurrence is replaced by `[redacted]`.
//! - **Shapes**: text that *looks* like a credential whatever its value — a secret-bearing query
//!   parameter (`access_token=…`, `corpsecret=…`, `key=…`), a `Bearer …` token, an
//!   `Authorization:`/`X-…-Key:` header line, the password of a `user:password@host` URL. This
//!   catches what an upstream API or a proxy echoes back, which no registry could know.
//!
//! The registry is process-wide because the log writer, the health board and the notice
//! formatter all need it and none of them is handed the config. It is bounded
//! ([`MAX_SECRETS`]): when full, the oldest run-time value goes first; configured ones stay.

use std::borrow::Cow;
use std::sync::{OnceLock, RwLock};

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not registered: replacing every "1" because some header is
/// `X-Version: 1` would garble text and hide nothing.
pub const MIN_SECRET_LEN: usize = 6;

/// At most this many values are remembered.
pub const MAX_SECRETS: usize = 512;

/// Query parameters (and `name=value` pairs) whose value is a credential.
const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "corpsecret",
    "secret",
    "client_secret",
    "refresh_token",
    "token",
    "key",
    "api_key",
    "apikey",
    "password",
    "passwd",
    "encodingaeskey",
    "encoding_aes_key",
    "suite_access_token",
    "provider_access_token",
];

/// Header names whose value is a credential (matched case-insensitively, then `:` or `=`).
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-key",
    "x-auth-token",
    "x-access-token",
    "cookie",
    "set-cookie",
];

/// Words of a credential that are not themselves secret (`Bearer <token>`).
const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "digest", "token"];

#[derive(Default)]
struct Registry {
    /// Configured values: kept for the life of the process.
    pinned: Vec<String>,
    /// Values learnt at run time, oldest first.
    learnt: std::collections::VecDeque<String>,
}

fn registry() -> &'static RwLock<Registry> {
    static REGISTRY: OnceLock<RwLock<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Remembers a configured secret (and each of its words, so the token of `Bearer <token>` is
/// caught on its own). Short or empty values are ignored.
pub fn register(secret: &str) {
    insert(secret, true);
}

/// Remembers a credential learnt at run time (an access token); evicted first when full.
pub fn register_runtime(secret: &str) {
    insert(secret, false);
}

fn insert(secret: &str, pinned: bool) {
    let candidates: Vec<&str> = std::iter::once(secret.trim())
        .chain(
            secret
                .split_whitespace()
                .filter(|w| !AUTH_SCHEMES.iter().any(|s| s.eq_ignore_ascii_case(w))),
        )
        .filter(|c| c.len() >= MIN_SECRET_LEN)
        .collect();
    if candidates.is_empty() {
        return;
    }
    let Ok(mut reg) = registry().write() else {
        return;
    };
    for c in candidates {
        if reg.pinned.iter().any(|s| s == c) || reg.learnt.iter().any(|s| s == c) {
            continue;
        }
        if pinned {
            if reg.pinned.len() < MAX_SECRETS {
                reg.pinned.push(c.to_string());
                // Longest first, so a whole value goes before one of its words.
                reg.pinned.sort_by_key(|s| std::cmp::Reverse(s.len()));
            }
        } else {
            while reg.pinned.len() + reg.learnt.len() >= MAX_SECRETS && !reg.learnt.is_empty() {
                reg.learnt.pop_front();
            }
            if reg.pinned.len() + reg.learnt.len() < MAX_SECRETS {
                reg.learnt.push_back(c.to_string());
            }
        }
    }
}

/// `text` with every registered secret and every credential-shaped part replaced.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if let Ok(reg) = registry().read() {
        for s in reg.pinned.iter().chain(reg.learnt.iter()) {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), REDACTED));
            }
        }
    }
    match scrub_shapes(&out) {
        Cow::Borrowed(_) => out,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

/// [`scrub`] for an owned string (no copy when nothing matched).
pub fn scrub_string(text: String) -> String {
    match scrub(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(s) => s,
    }
}

/// Only the shape rules (no registry): for text built from config values that must stay
/// readable, such as a URL shown by `gateway check`.
pub fn scrub_shapes(text: &str) -> Cow<'_, str> {
    // Cheap pre-check: every rule needs one of these bytes.
    let b = text.as_bytes();
    if !b
        .iter()
        .any(|&c| c == b'=' || c == b'@' || c == b':' || c == b' ')
    {
        return Cow::Borrowed(text);
    }
    let mut spans: Vec<(usize, usize)> = Vec::new();
    find_params(text, &mut spans);
    find_bearer(text, &mut spans);
    find_headers(text, &mut spans);
    find_userinfo(text, &mut spans);
    if spans.is_empty() {
        return Cow::Borrowed(text);
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in spans {
        if end <= at {
            continue;
        }
        let start = start.max(at);
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Where a credential value ends: at a separator that neither a token nor a URL parameter holds.
fn value_end(text: &str, start: usize, stop_at_space: bool) -> usize {
    text[start..]
        .char_indices()
        .find(|&(_, c)| {
            matches!(
                c,
                '&' | '"' | '\'' | '<' | '>' | ',' | ';' | ':' | '#' | ')' | ']' | '}' | '\\'
            ) || c.is_control()
                || (stop_at_space && c.is_whitespace())
        })
        .map_or(text.len(), |(i, _)| start + i)
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// `name=value` with a secret-bearing name, not part of a longer word (`max_token=5` stays).
fn find_params(text: &str, spans: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    for (eq, _) in text.match_indices('=') {
        let mut start = eq;
        while start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            start -= 1;
        }
        if start > 0 && is_word_byte(bytes[start - 1]) {
            continue;
        }
        let name = &text[start..eq];
        if name.is_empty() || !SECRET_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(name)) {
            continue;
        }
        let vstart = eq + 1;
        if text[vstart..].starts_with(REDACTED) {
            continue;
        }
        let vend = value_end(text, vstart, true);
        if vend > vstart {
            spans.push((vstart, vend));
        }
    }
}

/// `Bearer <token>` / `Basic <credentials>`, any case.
fn find_bearer(text: &str, spans: &mut Vec<(usize, usize)>) {
    let lower = text.to_ascii_lowercase();
    for scheme in ["bearer ", "basic "] {
        for (i, _) in lower.match_indices(scheme) {
            if i > 0 && is_word_byte(lower.as_bytes()[i - 1]) {
                continue;
            }
            let mut vstart = i + scheme.len();
            while text.as_bytes().get(vstart) == Some(&b' ') {
                vstart += 1;
            }
            let vend = value_end(text, vstart, true);
            if vend > vstart && text[vstart..vend] != *REDACTED {
                spans.push((vstart, vend));
            }
        }
    }
}

/// `Authorization: …`, `"x-api-key": "…"`, `x-key=…`: the value up to the end of the line or
/// the closing quote.
fn find_headers(text: &str, spans: &mut Vec<(usize, usize)>) {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    for name in SECRET_HEADERS {
        for (i, _) in lower.match_indices(name) {
            if i > 0 && is_word_byte(bytes[i - 1]) {
                continue;
            }
            let mut j = i + name.len();
            if j < bytes.len() && is_word_byte(bytes[j]) {
                continue;
            }
            // An optional closing quote of a JSON key, then `:` or `=`.
            if matches!(bytes.get(j), Some(b'"') | Some(b'\'')) {
                j += 1;
            }
            while bytes.get(j) == Some(&b' ') {
                j += 1;
            }
            if !matches!(bytes.get(j), Some(b':') | Some(b'=')) {
                continue;
            }
            j += 1;
            while bytes.get(j) == Some(&b' ') {
                j += 1;
            }
            let quoted = matches!(bytes.get(j), Some(b'"') | Some(b'\''));
            if quoted {
                j += 1;
            }
            // A header value runs to the end of the line (it may hold spaces: `Bearer x`);
            // a quoted one to its quote.
            let end = text[j..]
                .char_indices()
                .find(|&(_, c)| c == '\r' || c == '\n' || (quoted && (c == '"' || c == '\'')))
                .map_or(text.len(), |(k, _)| j + k);
            let value = text[j..end].trim_end();
            if !value.is_empty() && value != REDACTED {
                spans.push((j, j + value.len()));
            }
        }
    }
}

/// The password of `scheme://user:password@host`.
fn find_userinfo(text: &str, spans: &mut Vec<(usize, usize)>) {
    for (i, _) in text.match_indices("://") {
        let start = i + 3;
        let end = text[start..]
            .char_indices()
            .find(|&(_, c)| {
                matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>') || c.is_whitespace()
            })
            .map_or(text.len(), |(k, _)| start + k);
        let authority = &text[start..end];
        let Some(at) = authority.rfind('@') else {
            continue;
        };
        let userinfo = &authority[..at];
        if let Some(colon) = userinfo.find(':') {
            let pstart = start + colon + 1;
            let pend = start + at;
            if pend > pstart {
                spans.push((pstart, pend));
            }
        }
    }
}

/// A raw protocol string (a message type, an event name) made safe for a log line: control
/// characters escaped and the length capped, so a crafted value cannot forge log lines.
pub fn printable(raw: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for (n, c) in raw.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_and_their_words_are_replaced() {
        register("Bearer reg-test-token-123");
        register("abc"); // too short: ignored
        assert_eq!(
            scrub("sent reg-test-token-123 and abc"),
            "sent [redacted] and abc"
        );
    }

    #[test]
    fn runtime_values_are_bounded_and_evicted_oldest_first() {
        for n in 0..(MAX_SECRETS + 10) {
            register_runtime(&format!("runtime-evict-{n:06}"));
        }
        let reg = registry().read().unwrap();
        assert!(reg.pinned.len() + reg.learnt.len() <= MAX_SECRETS);
        assert!(!reg.learnt.iter().any(|s| s == "runtime-evict-000000"));
        assert!(reg
            .learnt
            .iter()
            .any(|s| *s == format!("runtime-evict-{:06}", MAX_SECRETS + 9)));
    }

    #[test]
    fn secret_query_parameters_are_replaced_wherever_they_stand() {
        let url = "POST https://qyapi.weixin.qq.com/cgi-bin/message/send?access_token=AT-1x_y&debug=1 failed";
        assert_eq!(
            scrub_shapes(url),
            "POST https://qyapi.weixin.qq.com/cgi-bin/message/send?access_token=[redacted]&debug=1 failed"
        );
        assert_eq!(
            scrub_shapes("gettoken?corpid=ww1&corpsecret=S3cr3t: 40001"),
            "gettoken?corpid=ww1&corpsecret=[redacted]: 40001"
        );
        assert_eq!(
            scrub_shapes("{\"url\":\"/send?key=abc-def\"}"),
            "{\"url\":\"/send?key=[redacted]\"}"
        );
        // Already replaced (by a registered value): left as it is.
        assert_eq!(
            scrub_shapes("corpsecret=[redacted])"),
            "corpsecret=[redacted])"
        );
        // Not a credential: part of a longer name.
        assert_eq!(
            scrub_shapes("max_token=5 keyword=x"),
            "max_token=5 keyword=x"
        );
    }

    #[test]
    fn bearer_tokens_and_header_lines_are_replaced() {
        assert_eq!(
            scrub_shapes("upstream said: Authorization: Bearer sk-live-123\nnext"),
            "upstream said: Authorization: [redacted]\nnext"
        );
        assert_eq!(
            scrub_shapes("{\"headers\":{\"x-key\":\"k-9 9\",\"authorization\":\"bearer t\"}}"),
            "{\"headers\":{\"x-key\":\"[redacted]\",\"authorization\":\"[redacted]\"}}"
        );
        assert_eq!(
            scrub_shapes("token is bearer abc.def"),
            "token is bearer [redacted]"
        );
        assert_eq!(scrub_shapes("X-Api-Key=zzz"), "X-Api-Key=[redacted]");
        // Words that merely contain a header name stay.
        assert_eq!(scrub_shapes("no cookies: none"), "no cookies: none");
    }

    #[test]
    fn url_passwords_are_replaced_and_users_kept() {
        assert_eq!(
            scrub_shapes("proxy http://bob:hunter2@10.0.0.1:3128/ refused"),
            "proxy http://bob:[redacted]@10.0.0.1:3128/ refused"
        );
        assert_eq!(
            scrub_shapes("http://bob@host/ and https://host/path"),
            "http://bob@host/ and https://host/path"
        );
    }

    #[test]
    fn clean_text_is_not_copied() {
        assert!(matches!(scrub_shapes("hello world"), Cow::Borrowed(_)));
        assert!(matches!(scrub("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn printable_escapes_control_characters_and_caps_length() {
        assert_eq!(
            printable("text\n2026 INFO forged"),
            "text\\n2026 INFO forged"
        );
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(printable(&"x".repeat(100)).chars().count(), 65);
    }
}
