//! The emulator's media host: serves AES-encrypted media over plain HTTP on 127.0.0.1, the way
//! WeCom's CDN serves the URLs in AI Bot callbacks (reference `wecom-aibot-official.md` §7).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

/// One hosted body.
#[derive(Debug, Clone)]
pub(crate) struct Hosted {
    pub bytes: Vec<u8>,
    pub content_type: String,
    pub filename: Option<String>,
}

/// Hosted bodies by id.
pub(crate) type Library = Arc<Mutex<HashMap<String, Hosted>>>;

async fn serve_media(State(lib): State<Library>, Path(id): Path<String>) -> Response {
    let item = lib
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .cloned();
    match item {
        Some(h) => {
            let mut resp =
                ([(header::CONTENT_TYPE, h.content_type.clone())], h.bytes).into_response();
            if let Some(name) = h.filename {
                if let Ok(v) = format!("attachment; filename=\"{name}\"").parse() {
                    resp.headers_mut().insert(header::CONTENT_DISPOSITION, v);
                }
            }
            resp
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Starts the media host on 127.0.0.1:0; it stops when `stop` is cancelled.
pub(crate) async fn start(lib: Library, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/media/{id}", get(serve_media))
        .with_state(lib);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(addr)
}
