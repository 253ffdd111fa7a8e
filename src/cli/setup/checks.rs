//! Live checks shared by `gateway setup` and `gateway doctor`: `gettoken` for callback apps
//! (reference `wecom-callback.md` §5.1), "is a gateway already running on this data dir"
//! (`<data_dir>/admin.json` whose listen address answers), and connecting an instance once
//! through its adapter (the AI Bot's subscribe) when that is safe.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gateway_core::adapter::{AdapterContext, InstanceSpec};
use gateway_core::health::HealthReporter;
use gateway_core::memory_store::MemoryStore;
use gateway_core::policy::AccessConfig;
use gateway_core::{AdapterError, Admission, InboundMessage, InboundSink};
use router::admin::AdminInfo;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// Largest body read from a credential endpoint.
const MAX_BODY: usize = 64 * 1024;

/// What WeCom said about a set of credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredCheck {
    /// Accepted (an access token was issued).
    Accepted,
    /// Refused with an error code.
    Rejected {
        /// WeCom's `errcode`.
        errcode: i64,
        /// WeCom's `errmsg` with a description of the code when we know it.
        message: String,
    },
    /// No answer (offline, DNS, timeout) or not a WeCom answer; nothing is known.
    Unreachable(String),
}

/// The result of one `gettoken` call.
#[derive(Debug, Clone)]
pub struct TokenCheck {
    /// The verdict.
    pub check: CredCheck,
    /// The server's `Date` header, for clock-skew checks.
    pub server_date: Option<DateTime<Utc>>,
}

/// An HTTP client for the checks. Proxies from the environment are honoured (WeCom may only be
/// reachable through one); loopback addresses bypass them.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default()
}

/// Parses an HTTP `Date` header.
pub fn server_date(headers: &reqwest::header::HeaderMap) -> Option<DateTime<Utc>> {
    let raw = headers.get(reqwest::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(raw)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// `GET {api_base}/cgi-bin/gettoken?corpid=..&corpsecret=..`. The secret never appears in the
/// result: request errors are reported without their URL.
pub async fn gettoken(
    http: &reqwest::Client,
    api_base: &str,
    corp_id: &str,
    secret: &SecretString,
    timeout: Duration,
) -> TokenCheck {
    let unreachable = |m: String| TokenCheck {
        check: CredCheck::Unreachable(m),
        server_date: None,
    };
    let url = match reqwest::Url::parse_with_params(
        &format!("{}/cgi-bin/gettoken", api_base.trim_end_matches('/')),
        &[("corpid", corp_id), ("corpsecret", secret.expose_secret())],
    ) {
        Ok(u) => u,
        Err(_) => return unreachable(format!("`{api_base}` is not a URL")),
    };
    let resp = match http.get(url).timeout(timeout).send().await {
        Ok(r) => r,
        Err(e) => return unreachable(e.without_url().to_string()),
    };
    let date = server_date(resp.headers());
    let status = resp.status();
    let body = match resp.bytes().await {
        Ok(b) if b.len() <= MAX_BODY => b,
        Ok(_) => return unreachable("the answer is too large".into()),
        Err(e) => return unreachable(e.without_url().to_string()),
    };
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return TokenCheck {
                check: CredCheck::Unreachable(format!("not a WeCom answer (HTTP {status})")),
                server_date: date,
            }
        }
    };
    let errcode = v.get("errcode").and_then(Value::as_i64).unwrap_or(0);
    let check = if errcode == 0 && v.get("access_token").and_then(Value::as_str).is_some() {
        CredCheck::Accepted
    } else if errcode == 0 {
        CredCheck::Unreachable(format!("no access_token in the answer (HTTP {status})"))
    } else {
        let errmsg = v.get("errmsg").and_then(Value::as_str).unwrap_or_default();
        let message = match wecom_common::describe(errcode) {
            Some(d) => format!("{errmsg} — {d}"),
            None => errmsg.to_string(),
        };
        CredCheck::Rejected { errcode, message }
    };
    TokenCheck {
        check,
        server_date: date,
    }
}

/// The gateway running on `data_dir`, if its admin file exists and its listen address answers
/// `/health` within two seconds.
pub async fn running_gateway(data_dir: &Path) -> Option<AdminInfo> {
    let info = AdminInfo::read(data_dir)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let answered = client
        .get(format!("http://{}/health", info.listen))
        .send()
        .await
        .is_ok();
    answered.then_some(info)
}

/// Refuses every inbound message, so that a platform keeps it for the real gateway.
struct Refuse;

#[async_trait]
impl InboundSink for Refuse {
    async fn submit(&self, _message: InboundMessage) -> Result<Admission, AdapterError> {
        Err(AdapterError::Shutdown)
    }
}

/// Why [`connect_once`] did not connect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The kind has no factory in this build's registry.
    #[error("this build has no `{0}` adapter registered")]
    NotRegistered(String),
    /// The factory refused the settings.
    #[error("invalid settings: {0}")]
    Config(String),
    /// The platform refused or did not answer.
    #[error("{0}")]
    Failed(String),
}

/// Builds the instance through its registered factory and connects it once (for the AI Bot:
/// one subscribe), then disconnects. Only call this when no running gateway owns the instance:
/// a bot has one live connection and a second one kicks the first.
pub async fn connect_once(
    registry: &router::Registry,
    spec: &InstanceSpec,
    extra: &Map<String, Value>,
    timeout: Duration,
) -> Result<(), ConnectError> {
    let factory = registry
        .get(&spec.kind)
        .ok_or_else(|| ConnectError::NotRegistered(spec.kind.clone()))?;
    let mut extra = extra.clone();
    // The router strips the access-policy keys before the factory sees them.
    let _ = AccessConfig::from_extra(&mut extra);
    let adapter = factory.build(spec, Value::Object(extra)).map_err(|errs| {
        ConnectError::Config(
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let ctx = AdapterContext {
        instance: spec.name.clone(),
        data_dir: spec.data_dir.join(&spec.name),
        inbound: Arc::new(Refuse),
        store: Arc::new(MemoryStore::new()),
        health: HealthReporter::new(&spec.name, &spec.kind),
        shutdown: CancellationToken::new(),
    };
    let result = match tokio::time::timeout(timeout, adapter.connect(ctx.clone())).await {
        Err(_) => Err(ConnectError::Failed(format!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
        Ok(Err(e)) => Err(ConnectError::Failed(e.to_string())),
        Ok(Ok(())) => Ok(()),
    };
    ctx.shutdown.cancel();
    adapter.disconnect().await;
    result
}
