//! The `http` backend: a generic webhook. The turn is POSTed as JSON ([`crate::wire`], schema
//! version 1) to `url` with the configured headers (values may reference `${NAME}` environment
//! variables). The answer is one of:
//!
//! - `application/json`: `{"text": "..."}` or `{"reply": "..."}`; `{"error": "..."}` fails the
//!   turn with the agent's message;
//! - `text/event-stream`: events `data: {"delta": "..."}`, ended by `data: {"final": "..."}`
//!   (the full answer) or `data: [DONE]` (the answer is the deltas joined);
//!   `data: {"error": "..."}` fails the turn;
//! - `text/plain`: the body is the answer.
//!
//! Failures before the first response byte (connection errors, 429, 5xx) are retried like the
//! `openai` backend's; a stream that ends without `final` or `[DONE]` is an error.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gateway_core::ConfigError;
use reqwest::header::{HeaderValue, ACCEPT, CONTENT_TYPE};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, HttpConfig};
use crate::driver::{spawn_turn, Emitter};
use crate::headers::ResolvedHeaders;
use crate::lines::SseParser;
use crate::transport::{self, MAX_JSON_BODY_BYTES, MAX_LINE_BYTES, MAX_REPLY_BYTES};
use crate::wire::TurnRequest;
use crate::{AgentBackend, AgentError, AgentStream, AgentTurn};

/// The webhook backend.
pub struct HttpBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: String,
    headers: ResolvedHeaders,
    timeout: Duration,
    max_retries: u32,
    next_turn: AtomicU64,
}

impl fmt::Debug for HttpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        // The URL's query may carry a token: show scheme, host and path only.
        let url = reqwest::Url::parse(&i.url)
            .map(|u| {
                format!(
                    "{}://{}{}",
                    u.scheme(),
                    u.host_str().unwrap_or(""),
                    u.path()
                )
            })
            .unwrap_or_default();
        f.debug_struct("HttpBackend")
            .field("url", &url)
            .field("headers", &i.headers)
            .field("timeout", &i.timeout)
            .field("max_retries", &i.max_retries)
            .finish_non_exhaustive()
    }
}

impl HttpBackend {
    /// Builds the backend, resolving `${NAME}` in header values from the process environment.
    pub fn new(cfg: &HttpConfig) -> Result<Self, Vec<ConfigError>> {
        Self::with_env(cfg, &|name| std::env::var(name).ok())
    }

    /// Builds the backend with `lookup` standing in for the environment.
    pub fn with_env(
        cfg: &HttpConfig,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut errors = AgentConfig::Http(cfg.clone()).validate();
        let headers = ResolvedHeaders::resolve(&cfg.headers, None, lookup)
            .map_err(|e| errors.extend(e))
            .ok();
        let client = transport::client(Duration::from_secs(cfg.connect_timeout_secs))
            .map_err(|e| errors.push(ConfigError::new("", e)))
            .ok();
        let (Some(headers), Some(client), true) = (headers, client, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                url: cfg.url.clone(),
                headers,
                timeout: Duration::from_secs(cfg.timeout_secs),
                max_retries: cfg.max_retries,
                next_turn: AtomicU64::new(1),
            }),
        })
    }
}

#[async_trait]
impl AgentBackend for HttpBackend {
    fn name(&self) -> &str {
        "http"
    }

    async fn start(
        &self,
        turn: AgentTurn,
        cancel: CancellationToken,
    ) -> Result<AgentStream, AgentError> {
        let inner = Arc::clone(&self.inner);
        let turn_id = format!("turn-{}", inner.next_turn.fetch_add(1, Ordering::Relaxed));
        Ok(spawn_turn(
            "http",
            self.inner.timeout,
            cancel,
            move |em| async move { inner.run(&turn_id, &turn, em).await },
        ))
    }
}

impl Inner {
    async fn run(
        &self,
        turn_id: &str,
        turn: &AgentTurn,
        em: Emitter,
    ) -> Result<String, AgentError> {
        let body = TurnRequest::new(turn_id, turn)
            .to_json_line()
            .map_err(|e| AgentError::Protocol(format!("cannot encode the request: {e}")))?;
        let body = bytes::Bytes::from(body);
        let make = || {
            self.client
                .post(&self.url)
                .headers(self.headers.map().clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .header(
                    ACCEPT,
                    HeaderValue::from_static("application/json, text/event-stream, text/plain"),
                )
                .body(body.clone())
        };
        let resp = transport::send_with_retry(
            "http",
            make,
            self.max_retries,
            em.deadline(),
            &self.headers,
        )
        .await?;
        let media = transport::media_type(&resp);
        if media == "text/event-stream" {
            return read_stream(resp, &em).await;
        }
        if media.starts_with("text/") {
            let body = transport::read_body(resp, MAX_REPLY_BYTES).await?;
            return String::from_utf8(body)
                .map_err(|_| AgentError::Protocol("the text answer is not UTF-8".into()));
        }
        let body = transport::read_body(resp, MAX_JSON_BODY_BYTES).await?;
        parse_json_reply(&body)
    }
}

/// A JSON answer or SSE event of the webhook protocol.
#[derive(Deserialize, Default)]
struct Reply {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    reply: Option<String>,
    #[serde(default)]
    delta: Option<String>,
    #[serde(rename = "final", default)]
    final_text: Option<String>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl Reply {
    fn error_message(&self) -> Option<String> {
        self.error.as_ref().filter(|e| !e.is_null()).map(|e| {
            let msg = e
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    e.get("message")
                        .and_then(|m| m.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| e.to_string());
            crate::error::shorten(&msg, 500)
        })
    }
}

/// The answer of a JSON reply.
fn parse_json_reply(body: &[u8]) -> Result<String, AgentError> {
    let reply: Reply = serde_json::from_slice(body)
        .map_err(|e| AgentError::Protocol(format!("malformed JSON answer: {e}")))?;
    if let Some(msg) = reply.error_message() {
        return Err(AgentError::Agent(msg));
    }
    reply
        .text
        .or(reply.reply)
        .or(reply.final_text)
        .ok_or_else(|| {
            AgentError::Protocol("the JSON answer has neither `text` nor `reply`".into())
        })
}

/// Reads a webhook event stream, forwarding deltas; returns the final answer.
async fn read_stream(mut resp: reqwest::Response, em: &Emitter) -> Result<String, AgentError> {
    let mut parser = SseParser::new(MAX_LINE_BYTES);
    let mut reply = String::new();
    loop {
        let (events, eof) = match transport::next_chunk(&mut resp).await? {
            Some(chunk) => (parser.push(&chunk), false),
            None => (parser.finish().map(|last| last.into_iter().collect()), true),
        };
        for data in events.map_err(|e| AgentError::Protocol(e.to_string()))? {
            let data = data.trim();
            if data == "[DONE]" {
                return Ok(reply);
            }
            let event: Reply = serde_json::from_str(data)
                .map_err(|e| AgentError::Protocol(format!("malformed stream event: {e}")))?;
            if let Some(msg) = event.error_message() {
                return Err(AgentError::Agent(msg));
            }
            if let Some(text) = event.final_text {
                if text.len() > MAX_REPLY_BYTES {
                    return Err(AgentError::Protocol(format!(
                        "the answer exceeds {MAX_REPLY_BYTES} bytes"
                    )));
                }
                return Ok(text);
            }
            if let Some(piece) = event.delta {
                transport::append_reply(&mut reply, &piece)?;
                em.delta(piece).await?;
            }
        }
        if eof {
            return Err(AgentError::Protocol(
                "the stream ended before a `final` event or [DONE]".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_replies_parse() {
        assert_eq!(parse_json_reply(br#"{"text":"a"}"#).unwrap(), "a");
        assert_eq!(parse_json_reply(br#"{"reply":"b"}"#).unwrap(), "b");
        assert_eq!(
            parse_json_reply(br#"{"error":{"message":"quota"}}"#).unwrap_err(),
            AgentError::Agent("quota".into())
        );
        assert!(matches!(
            parse_json_reply(br#"{"other":1}"#),
            Err(AgentError::Protocol(_))
        ));
        assert!(matches!(
            parse_json_reply(b"not json"),
            Err(AgentError::Protocol(_))
        ));
    }
}
