//! The gateway's own HTTP listener (`gateway.listen`): `GET /health` (JSON) and `GET /metrics`
//! (Prometheus text), and the local admin endpoint `POST /admin/send` (see `admin.rs`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use gateway_core::session::SessionEngine;
use serde_json::json;

use crate::shared::Shared;

/// What the HTTP handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Shared pipeline state.
    pub shared: Arc<Shared>,
    /// The session engine (for load gauges).
    pub engine: SessionEngine,
    /// Bearer token of `/admin/*` (see `admin.rs`).
    pub admin_token: Arc<String>,
}

/// The router of the health/metrics listener.
pub fn app(state: HttpState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/admin/send", axum::routing::post(crate::admin::send))
        .route(
            "/admin/outbox/retry",
            axum::routing::post(crate::admin::outbox_retry),
        )
        .with_state(state)
}

/// `200` when every instance is connected, `503` otherwise; the body always lists each instance.
async fn health(State(st): State<HttpState>) -> impl IntoResponse {
    let mut instances: Vec<_> = st
        .shared
        .instances
        .values()
        .map(|i| i.health.snapshot())
        .collect();
    instances.sort_by(|a, b| a.instance.cmp(&b.instance));
    let up = instances.iter().filter(|h| h.state.is_up()).count();
    let status = if up == instances.len() {
        "ok"
    } else if up > 0 {
        "degraded"
    } else {
        "down"
    };
    let (running, queued) = st.engine.load();
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": status,
        "instances": instances,
        "turns_running": running,
        "messages_queued": queued,
    });
    (code, Json(body))
}

async fn metrics(State(st): State<HttpState>) -> impl IntoResponse {
    let (running, queued) = st.engine.load();
    let mut gauges = vec![
        (
            "gateway_turns_running",
            "Agent turns running now.",
            vec![],
            running as f64,
        ),
        (
            "gateway_messages_queued",
            "Messages waiting behind a running turn.",
            vec![],
            queued as f64,
        ),
    ];
    let mut names: Vec<_> = st.shared.instances.values().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    for inst in names {
        let h = inst.health.snapshot();
        gauges.push((
            "gateway_instance_up",
            "1 when the platform instance is connected.",
            vec![("instance", inst.name.clone())],
            if h.state.is_up() { 1.0 } else { 0.0 },
        ));
    }
    for inst in st.shared.instances.values() {
        let h = inst.health.snapshot();
        gauges.push((
            "gateway_instance_reconnects",
            "Reconnects since start.",
            vec![("instance", inst.name.clone())],
            h.reconnects as f64,
        ));
    }
    let text = st.shared.metrics.render(&gauges);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
