//! The `openai` backend: any OpenAI-compatible Chat Completions endpoint (OpenAI, DeepSeek,
//! Qwen/DashScope, vLLM, Ollama, llama.cpp server).
//!
//! Request: `POST {base_url}/chat/completions` with `stream: true`; messages are the system
//! prompt, the history as `user`/`assistant` turns, then the current message (images inline as
//! `data:` URLs in `image_url` parts when `vision` is on, every other attachment described in
//! text). Answer: Server-Sent Events whose `data` is a chunk with `choices[0].delta.content`,
//! ended by `data: [DONE]`; a server that ignores `stream` and answers one JSON completion is
//! accepted too. A stream that ends without `[DONE]` (or a `finish_reason`) is an error, never a
//! silently truncated answer.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use gateway_core::store::Role;
use gateway_core::{Attachment, ConfigError, MediaKind};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, OpenAiConfig};
use crate::driver::{spawn_turn, Emitter};
use crate::headers::ResolvedHeaders;
use crate::lines::SseParser;
use crate::transport::{self, MAX_JSON_BODY_BYTES, MAX_LINE_BYTES};
use crate::{AgentBackend, AgentError, AgentStream, AgentTurn};

/// The OpenAI-compatible backend.
pub struct OpenAiBackend {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    url: String,
    model: String,
    system_prompt: Option<String>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    vision: bool,
    max_image_bytes: u64,
    headers: ResolvedHeaders,
    timeout: Duration,
    max_retries: u32,
}

impl fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        // The API key lives only inside the (sensitive) Authorization header: names only here.
        f.debug_struct("OpenAiBackend")
            .field("url", &i.url)
            .field("model", &i.model)
            .field("vision", &i.vision)
            .field("headers", &i.headers)
            .field("timeout", &i.timeout)
            .field("max_retries", &i.max_retries)
            .finish_non_exhaustive()
    }
}

impl OpenAiBackend {
    /// Builds the backend, reading the API key and `${NAME}` header references from the process
    /// environment.
    pub fn new(cfg: &OpenAiConfig) -> Result<Self, Vec<ConfigError>> {
        Self::with_env(cfg, &|name| std::env::var(name).ok())
    }

    /// Builds the backend with `lookup` standing in for the environment (for tests and for
    /// callers that resolve variables themselves).
    pub fn with_env(
        cfg: &OpenAiConfig,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut errors = AgentConfig::OpenAi(cfg.clone()).validate();
        let key = match &cfg.api_key_env {
            Some(name) => match lookup(name) {
                Some(v) if !v.trim().is_empty() => Some(SecretString::from(v.trim().to_string())),
                _ => {
                    errors.push(ConfigError::new(
                        "api_key_env",
                        format!("the environment variable {name} is not set"),
                    ));
                    None
                }
            },
            None => None,
        };
        let headers = ResolvedHeaders::resolve(&cfg.headers, key, lookup)
            .map_err(|e| errors.extend(e))
            .ok();
        let client = transport::client(Duration::from_secs(cfg.connect_timeout_secs))
            .map_err(|e| errors.push(ConfigError::new("", e)))
            .ok();
        let (Some(headers), Some(client), true) = (headers, client, errors.is_empty()) else {
            return Err(errors);
        };
        let base = cfg.base_url.trim_end_matches('/');
        let url = if base.ends_with("/chat/completions") {
            base.to_string()
        } else {
            format!("{base}/chat/completions")
        };
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                url,
                model: cfg.model.clone(),
                system_prompt: cfg.system_prompt.clone().filter(|s| !s.trim().is_empty()),
                temperature: cfg.temperature,
                max_tokens: cfg.max_tokens,
                vision: cfg.vision,
                max_image_bytes: cfg.max_image_bytes,
                headers,
                timeout: Duration::from_secs(cfg.timeout_secs),
                max_retries: cfg.max_retries,
            }),
        })
    }
}

#[async_trait]
impl AgentBackend for OpenAiBackend {
    fn name(&self) -> &str {
        "openai"
    }

    async fn start(
        &self,
        turn: AgentTurn,
        cancel: CancellationToken,
    ) -> Result<AgentStream, AgentError> {
        let inner = Arc::clone(&self.inner);
        Ok(spawn_turn(
            "openai",
            self.inner.timeout,
            cancel,
            move |em| async move { inner.run(turn, em).await },
        ))
    }
}

impl Inner {
    async fn run(&self, turn: AgentTurn, em: Emitter) -> Result<String, AgentError> {
        let body = serde_json::to_vec(&self.request_body(&turn).await)
            .map_err(|e| AgentError::Protocol(format!("cannot encode the request: {e}")))?;
        let body = bytes::Bytes::from(body);
        let make = || {
            self.client
                .post(&self.url)
                .headers(self.headers.map().clone())
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body.clone())
        };
        let resp = transport::send_with_retry(
            "openai",
            make,
            self.max_retries,
            em.deadline(),
            &self.headers,
        )
        .await?;
        if transport::media_type(&resp).contains("json") {
            let body = transport::read_body(resp, MAX_JSON_BODY_BYTES).await?;
            return parse_completion(&body);
        }
        read_stream(resp, &em).await
    }

    /// The Chat Completions request for `turn`.
    async fn request_body(&self, turn: &AgentTurn) -> Value {
        let mut messages = Vec::with_capacity(turn.history.len() + 2);
        if let Some(prompt) = &self.system_prompt {
            messages.push(json!({"role": "system", "content": prompt}));
        }
        for h in &turn.history {
            let role = match h.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(json!({"role": role, "content": h.text}));
        }
        messages.push(json!({"role": "user", "content": self.user_content(turn).await}));
        let mut body = json!({"model": self.model, "messages": messages, "stream": true});
        if let Some(t) = self.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(m) = self.max_tokens {
            body["max_tokens"] = json!(m);
        }
        body
    }

    /// The current message: plain text, or text plus `image_url` parts for a vision model.
    async fn user_content(&self, turn: &AgentTurn) -> Value {
        let mut text = turn.text.clone();
        let mut images = Vec::new();
        for a in &turn.attachments {
            let inline = if self.vision && a.kind == MediaKind::Image {
                self.data_url(a).await
            } else {
                Err("")
            };
            match inline {
                Ok(url) => images.push(json!({"type": "image_url", "image_url": {"url": url}})),
                Err(why) => {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&describe_attachment(a, why));
                }
            }
        }
        if images.is_empty() {
            return Value::String(text);
        }
        let mut parts = Vec::with_capacity(images.len() + 1);
        if !text.is_empty() {
            parts.push(json!({"type": "text", "text": text}));
        }
        parts.extend(images);
        Value::Array(parts)
    }

    /// The image as a `data:` URL, or why it is described instead.
    async fn data_url(&self, a: &Attachment) -> Result<String, &'static str> {
        if a.size > self.max_image_bytes {
            return Err("too large to show");
        }
        let file = tokio::fs::File::open(&a.path)
            .await
            .map_err(|_| "could not be read")?;
        let mut bytes = Vec::new();
        // Read one byte past the cap so a file that grew since `size` was taken is still refused.
        file.take(self.max_image_bytes + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|_| "could not be read")?;
        if bytes.len() as u64 > self.max_image_bytes {
            return Err("too large to show");
        }
        let mime = if a.mime.starts_with("image/") {
            a.mime.as_str()
        } else {
            "image/jpeg"
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        Ok(format!("data:{mime};base64,{b64}"))
    }
}

/// A one-line description of an attachment the model cannot see.
fn describe_attachment(a: &Attachment, why: &str) -> String {
    let note = if why.is_empty() {
        String::new()
    } else {
        format!(", {why}")
    };
    format!(
        "[attached {}: {} ({}, {} bytes{note})]",
        a.kind.as_str(),
        a.name,
        a.mime,
        a.size
    )
}

/// One streamed chunk (only the fields we use).
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
}

/// Reads the event stream, forwarding deltas; returns the whole answer.
async fn read_stream(mut resp: reqwest::Response, em: &Emitter) -> Result<String, AgentError> {
    let mut parser = SseParser::new(MAX_LINE_BYTES);
    let mut reply = String::new();
    let mut finished = false;
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
            let chunk: Chunk = serde_json::from_str(data)
                .map_err(|e| AgentError::Protocol(format!("malformed stream event: {e}")))?;
            if let Some(err) = chunk.error {
                return Err(AgentError::Agent(error_message(&err)));
            }
            let Some(choice) = chunk.choices.into_iter().next() else {
                continue;
            };
            if let Some(piece) = choice.delta.and_then(|d| d.content) {
                transport::append_reply(&mut reply, &piece)?;
                em.delta(piece).await?;
            }
            finished |= choice.finish_reason.is_some();
        }
        if eof {
            break;
        }
    }
    // Some servers close after the last chunk without `[DONE]`; a `finish_reason` says the
    // answer is complete. Without either, the answer was cut off.
    if finished {
        Ok(reply)
    } else {
        Err(AgentError::Protocol(
            "the stream ended before [DONE]".into(),
        ))
    }
}

/// The answer of a non-streamed completion (`choices[0].message.content`).
fn parse_completion(body: &[u8]) -> Result<String, AgentError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| AgentError::Protocol(format!("malformed completion: {e}")))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        return Err(AgentError::Agent(error_message(err)));
    }
    let message = v
        .pointer("/choices/0/message")
        .ok_or_else(|| AgentError::Protocol("the completion has no choices[0].message".into()))?;
    match message.get("content") {
        Some(Value::String(s)) => Ok(s.clone()),
        // A refusal or tool call without content: an empty answer, not a malformed one.
        Some(Value::Null) | None => Ok(String::new()),
        Some(_) => Err(AgentError::Protocol(
            "choices[0].message.content is not text".into(),
        )),
    }
}

/// The human-readable part of an OpenAI-style `error` value (an object with `message`, or a
/// bare string).
fn error_message(err: &Value) -> String {
    let msg = match err {
        Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| other.to_string()),
    };
    crate::error::shorten(&msg, 500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_errors_parse() {
        let ok = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}]}"#;
        assert_eq!(parse_completion(ok).unwrap(), "hi");
        let err = br#"{"error":{"message":"model not found","type":"invalid_request_error"}}"#;
        assert_eq!(
            parse_completion(err).unwrap_err(),
            AgentError::Agent("model not found".into())
        );
        assert!(matches!(
            parse_completion(b"{}"),
            Err(AgentError::Protocol(_))
        ));
        assert!(matches!(
            parse_completion(b"<html>"),
            Err(AgentError::Protocol(_))
        ));
    }

    #[test]
    fn attachments_are_described() {
        let a = Attachment {
            kind: MediaKind::File,
            path: "/tmp/x.pdf".into(),
            name: "x.pdf".into(),
            mime: "application/pdf".into(),
            size: 12,
        };
        assert_eq!(
            describe_attachment(&a, ""),
            "[attached file: x.pdf (application/pdf, 12 bytes)]"
        );
    }
}
