//! What the `openai` and `http` backends share on the wire: the HTTP client, sending with
//! retries (429, 5xx and connection failures before the first response byte, exponential backoff,
//! `Retry-After` honoured), and turning failures into typed, secret-free [`AgentError`]s.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{RequestBuilder, Response};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::error::{is_retryable_status, truncate_bytes, BODY_EXCERPT_BYTES};
use crate::headers::ResolvedHeaders;
use crate::AgentError;

/// First retry delay; doubled on each further attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest delay between attempts, whether computed or asked for with `Retry-After`.
const BACKOFF_CAP: Duration = Duration::from_secs(60);
/// How long reading an error body may take before we give up on its excerpt.
const ERROR_BODY_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest SSE line or event accepted from an agent service.
pub(crate) const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Longest non-streamed JSON answer accepted.
pub(crate) const MAX_JSON_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Longest answer text accepted, however it arrives.
pub(crate) const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

/// Builds the shared HTTP client of one backend.
pub(crate) fn client(connect_timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .user_agent(concat!("gateway-agent-bridge/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Sends the request built by `make`, retrying retryable failures up to `max_retries` times as
/// long as the wait fits before `deadline`. Returns a response with a success status.
pub(crate) async fn send_with_retry(
    backend: &'static str,
    make: impl Fn() -> RequestBuilder,
    max_retries: u32,
    deadline: Instant,
    headers: &ResolvedHeaders,
) -> Result<Response, AgentError> {
    let mut attempt: u32 = 0;
    loop {
        let error = match make().send().await {
            Ok(resp) if resp.status().is_success() => return Ok(resp),
            Ok(resp) => http_error(resp, headers).await,
            Err(e) => AgentError::Unreachable(describe(&e)),
        };
        let retryable = match &error {
            AgentError::Http { status, .. } => is_retryable_status(*status),
            AgentError::Unreachable(_) => true,
            _ => false,
        };
        if !retryable || attempt >= max_retries {
            return Err(error);
        }
        let wait = error
            .retry_after()
            .unwrap_or_else(|| backoff(attempt))
            .min(BACKOFF_CAP);
        // Waiting past the time limit would only turn a clear error into a timeout.
        if Instant::now() + wait >= deadline {
            debug!(
                backend,
                kind = error.kind(),
                "Not retrying: the turn's time limit is near."
            );
            return Err(error);
        }
        attempt += 1;
        info!(
            backend,
            attempt,
            kind = error.kind(),
            wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            "Retrying agent request."
        );
        tokio::time::sleep(wait).await;
    }
}

/// The delay before retry number `attempt + 1`.
fn backoff(attempt: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP)
}

/// A typed error for a non-success response, with a scrubbed excerpt of its body.
async fn http_error(mut resp: Response, headers: &ResolvedHeaders) -> AgentError {
    let status = resp.status().as_u16();
    let retry_after = parse_retry_after(resp.headers());
    let mut body = Vec::new();
    // Bounded in size and time: the excerpt is for the log, not worth waiting on.
    let _ = tokio::time::timeout(ERROR_BODY_TIMEOUT, async {
        while body.len() < BODY_EXCERPT_BYTES * 4 {
            match resp.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
    })
    .await;
    // Scrub before cutting, so a secret straddling the cut cannot survive in part.
    let text = headers
        .scrub(&String::from_utf8_lossy(&body))
        .replace(['\r', '\n'], " ");
    let body_excerpt = truncate_bytes(text.trim(), BODY_EXCERPT_BYTES).to_string();
    AgentError::Http {
        status,
        body_excerpt,
        retry_after,
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
pub(crate) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

/// A description of a transport error without the URL (a webhook URL may carry a token).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "the connection failed while reading"
    } else {
        "the request failed"
    };
    // The innermost cause is the useful part ("Connection refused (os error 111)").
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(s) = source {
        innermost = Some(s);
        source = s.source();
    }
    match innermost {
        Some(cause) => format!("{what}: {cause}"),
        None => what.to_string(),
    }
}

/// The response's media type, lowercased, without parameters.
pub(crate) fn media_type(resp: &Response) -> String {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// The next chunk of a streamed body; a broken connection is a cut-off answer.
pub(crate) async fn next_chunk(resp: &mut Response) -> Result<Option<Bytes>, AgentError> {
    resp.chunk()
        .await
        .map_err(|e| AgentError::Protocol(format!("the answer was cut off ({})", describe(&e))))
}

/// The whole body, at most `max` bytes.
pub(crate) async fn read_body(mut resp: Response, max: usize) -> Result<Vec<u8>, AgentError> {
    let mut body = Vec::new();
    while let Some(chunk) = next_chunk(&mut resp).await? {
        if body.len() + chunk.len() > max {
            return Err(AgentError::Protocol(format!(
                "the answer exceeds {max} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Appends a delta to the answer so far, enforcing [`MAX_REPLY_BYTES`].
pub(crate) fn append_reply(reply: &mut String, delta: &str) -> Result<(), AgentError> {
    if reply.len() + delta.len() > MAX_REPLY_BYTES {
        return Err(AgentError::Protocol(format!(
            "the answer exceeds {MAX_REPLY_BYTES} bytes"
        )));
    }
    reply.push_str(delta);
    Ok(())
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), BACKOFF_CAP);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h), None);
    }
}
