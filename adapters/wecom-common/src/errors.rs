//! WeCom error codes seen by both adapters (wecom-callback reference §5.5; wecom-aibot reference
//! §1.4, §4.3, §6.6) with a classification that tells callers what to do about each one.

use std::time::Duration;

use gateway_core::AdapterError;

/// What a WeCom `errcode` means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// `0`: success.
    Ok,
    /// The access token is invalid, expired or missing: evict it, fetch a new one, retry once.
    TokenExpired,
    /// Too many calls (or WeCom is busy): back off and retry later.
    RateLimited,
    /// The AI Bot reply or stream window of this `req_id` is over: send proactively instead.
    StreamExpired,
    /// The AI Bot connection lost its subscription: forget cached `req_id`s, resubscribe.
    Resubscribe,
    /// The server's egress IP is not in the app's trusted-IP list.
    UntrustedIp,
    /// Credentials were refused (secret, CorpID, bot id).
    AuthFailed,
    /// The AI Bot cannot proactively send there (groups, or `stream` on some clients).
    GroupProactiveForbidden,
    /// A stream finalize raced a newer frame; the content is already shown (benign).
    VersionConflict,
    /// Anything else: a request problem that retrying will not fix.
    Other,
}

impl ErrorClass {
    /// Whether the same request may succeed later (after a token refresh or a pause).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::TokenExpired | ErrorClass::RateLimited)
    }

    /// A pause to respect before retrying, where the limit implies one: the per-chat and
    /// per-member limits are per minute.
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            ErrorClass::RateLimited => Some(Duration::from_secs(60)),
            _ => None,
        }
    }
}

/// `(errcode, meaning)`, sorted by code for binary search.
const CODES: &[(i64, &str)] = &[
    (-1, "system busy; retry later"),
    (0, "ok"),
    (
        6000,
        "version conflict: a newer stream frame won; the content is already shown",
    ),
    (
        40001,
        "invalid credential: bad corp secret, or the access token is invalid",
    ),
    (40003, "invalid UserID"),
    (40007, "invalid media_id"),
    (40008, "invalid message type"),
    (40013, "invalid CorpID or bot secret"),
    (40014, "invalid access_token"),
    (41001, "access_token missing"),
    (42001, "access_token expired"),
    (
        42039,
        "template card button keys missing, invalid or repeated",
    ),
    (44004, "text content is empty"),
    (45002, "content too large"),
    (45009, "API call frequency exceeded"),
    (45033, "too many concurrent calls"),
    (
        60011,
        "no privilege: the user is outside the app's visible range",
    ),
    (
        60020,
        "the server's IP address is not in the app's trusted IP list",
    ),
    (81013, "all recipients are invalid"),
    (
        600039,
        "not supported here: AI Bots cannot send proactively into groups (or use stream)",
    ),
    (846604, "the reply window of this req_id has expired"),
    (
        846607,
        "rate limit: at most 30 messages per minute per chat",
    ),
    (846608, "the stream update window has expired"),
    (846609, "the connection is no longer subscribed"),
];

/// What WeCom means by `code`, if the code is known.
pub fn describe(code: i64) -> Option<&'static str> {
    CODES
        .binary_search_by_key(&code, |&(c, _)| c)
        .ok()
        .map(|i| CODES[i].1)
}

/// Classifies a WeCom `errcode`.
pub fn classify(code: i64) -> ErrorClass {
    match code {
        0 => ErrorClass::Ok,
        40001 | 40014 | 41001 | 42001 => ErrorClass::TokenExpired,
        -1 | 45009 | 45033 | 846607 => ErrorClass::RateLimited,
        846604 | 846608 => ErrorClass::StreamExpired,
        846609 => ErrorClass::Resubscribe,
        60020 => ErrorClass::UntrustedIp,
        40013 => ErrorClass::AuthFailed,
        600039 => ErrorClass::GroupProactiveForbidden,
        6000 => ErrorClass::VersionConflict,
        _ => ErrorClass::Other,
    }
}

/// Turns a non-zero WeCom answer into the core error type: refused credentials become
/// [`AdapterError::Auth`] with a hint; everything else is [`AdapterError::Platform`] with the
/// raw payload kept and `retry_after` set for rate limits.
pub fn to_adapter_error(code: i64, errmsg: &str, raw: impl Into<String>) -> AdapterError {
    let class = classify(code);
    let message = if errmsg.is_empty() {
        describe(code).unwrap_or("unknown error")
    } else {
        errmsg
    };
    match class {
        ErrorClass::AuthFailed => AdapterError::Auth {
            message: format!("{message} (errcode {code})"),
            hint: "check the CorpID / bot id and the secret".into(),
        },
        ErrorClass::UntrustedIp => AdapterError::Auth {
            message: format!("{message} (errcode {code})"),
            hint: "add this server's public IP to the app's trusted IP list".into(),
        },
        _ => AdapterError::Platform {
            code,
            message: message.to_owned(),
            raw: raw.into(),
            retry_after: class.retry_after(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_unique() {
        assert!(CODES.windows(2).all(|w| w[0].0 < w[1].0));
        for &(code, text) in CODES {
            assert_eq!(describe(code), Some(text));
        }
        assert_eq!(describe(12345), None);
    }

    #[test]
    fn classification_table() {
        let table = [
            (0, ErrorClass::Ok),
            (40001, ErrorClass::TokenExpired),
            (40014, ErrorClass::TokenExpired),
            (42001, ErrorClass::TokenExpired),
            (41001, ErrorClass::TokenExpired),
            (45009, ErrorClass::RateLimited),
            (45033, ErrorClass::RateLimited),
            (-1, ErrorClass::RateLimited),
            (846607, ErrorClass::RateLimited),
            (846604, ErrorClass::StreamExpired),
            (846608, ErrorClass::StreamExpired),
            (846609, ErrorClass::Resubscribe),
            (60020, ErrorClass::UntrustedIp),
            (40013, ErrorClass::AuthFailed),
            (600039, ErrorClass::GroupProactiveForbidden),
            (6000, ErrorClass::VersionConflict),
            (60011, ErrorClass::Other),
            (81013, ErrorClass::Other),
            (99999, ErrorClass::Other),
        ];
        for (code, class) in table {
            assert_eq!(classify(code), class, "{code}");
        }
        assert!(ErrorClass::TokenExpired.is_retryable());
        assert!(ErrorClass::RateLimited.is_retryable());
        assert!(!ErrorClass::Other.is_retryable());
        assert!(!ErrorClass::StreamExpired.is_retryable());
    }

    #[test]
    fn adapter_errors_keep_the_raw_payload_and_retry_hint() {
        let raw = r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#;
        match to_adapter_error(45009, "api freq out of limit", raw) {
            AdapterError::Platform {
                code,
                raw: r,
                retry_after,
                ..
            } => {
                assert_eq!(code, 45009);
                assert_eq!(r, raw);
                assert_eq!(retry_after, Some(Duration::from_secs(60)));
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = to_adapter_error(60011, "", "{}");
        assert!(!e.is_retryable());
        assert!(e.to_string().contains("no privilege"));
        assert!(matches!(
            to_adapter_error(40013, "invalid secret", ""),
            AdapterError::Auth { .. }
        ));
        assert!(
            matches!(to_adapter_error(60020, "", ""), AdapterError::Auth { hint, .. } if hint.contains("IP"))
        );
    }
}
