//! The guarded downloader against a real HTTP server on 127.0.0.1:0: the size cap (announced and
//! streamed), redirects, status errors, and the private-address guard.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use wecom_common::net::{download_capped, guarded_client, DownloadError, DEFAULT_DOWNLOAD_CAP};

const CAP: u64 = 100_000;

async fn serve() -> String {
    let app = Router::new()
        .route("/small", get(|| async { small() }))
        .route("/exact", get(|| async { vec![1u8; CAP as usize] }))
        .route("/announced", get(|| async { vec![2u8; CAP as usize + 1] }))
        .route("/endless", get(|| async { endless() }))
        .route("/redirect", get(|| async { Redirect::temporary("/small") }))
        .route("/loop", get(|| async { Redirect::temporary("/loop") }))
        .route("/missing", get(|| async { StatusCode::NOT_FOUND }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.ok();
    });
    format!("127.0.0.1:{}", addr.port())
}

fn small() -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/png"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"pic.png\"",
            ),
        ],
        b"\x89PNG\r\n\x1a\nrest".to_vec(),
    )
        .into_response()
}

/// A chunked body without Content-Length that never ends: only the client's cap stops it.
fn endless() -> Response {
    let chunks = futures::stream::repeat_with(|| Ok::<_, Infallible>(Bytes::from(vec![3u8; 8192])));
    Body::from_stream(chunks).into_response()
}

#[tokio::test]
async fn downloads_within_the_cap_with_headers() {
    let host = serve().await;
    let client = guarded_client(true, Duration::from_secs(10)).unwrap();
    let got = client
        .fetch_capped(&format!("http://{host}/small"), CAP)
        .await
        .unwrap();
    assert_eq!(got.bytes, b"\x89PNG\r\n\x1a\nrest");
    assert_eq!(got.content_type.as_deref(), Some("image/png"));
    assert_eq!(got.filename.as_deref(), Some("pic.png"));
    let exact = download_capped(&client, &format!("http://{host}/exact"), CAP)
        .await
        .unwrap();
    assert_eq!(exact.len() as u64, CAP);
    let redirected = download_capped(&client, &format!("http://{host}/redirect"), CAP).await;
    assert_eq!(redirected.unwrap(), b"\x89PNG\r\n\x1a\nrest");
}

#[tokio::test]
async fn bodies_over_the_cap_are_refused() {
    let host = serve().await;
    let client = guarded_client(true, Duration::from_secs(10)).unwrap();
    let announced = download_capped(&client, &format!("http://{host}/announced"), CAP).await;
    assert!(
        matches!(announced, Err(DownloadError::TooLarge { cap: CAP })),
        "{announced:?}"
    );
    let streamed = download_capped(&client, &format!("http://{host}/endless"), CAP).await;
    assert!(
        matches!(streamed, Err(DownloadError::TooLarge { cap: CAP })),
        "{streamed:?}"
    );
    // The default cap also stops the endless body.
    let endless = format!("http://{host}/endless");
    let default = download_capped(&client, &endless, DEFAULT_DOWNLOAD_CAP).await;
    assert!(matches!(default, Err(DownloadError::TooLarge { .. })));
}

#[tokio::test]
async fn status_errors_and_redirect_loops_fail() {
    let host = serve().await;
    let client = guarded_client(true, Duration::from_secs(10)).unwrap();
    let missing = download_capped(&client, &format!("http://{host}/missing"), CAP).await;
    assert!(
        matches!(missing, Err(DownloadError::Status(404))),
        "{missing:?}"
    );
    let looping = download_capped(&client, &format!("http://{host}/loop"), CAP).await;
    assert!(
        matches!(looping, Err(DownloadError::Http(_))),
        "{looping:?}"
    );
    let bad = download_capped(&client, "file:///etc/passwd", CAP).await;
    assert!(matches!(bad, Err(DownloadError::BadUrl)));
    assert!(matches!(
        download_capped(&client, "not a url", CAP).await,
        Err(DownloadError::BadUrl)
    ));
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let host = serve().await;
    let port = host.rsplit(':').next().unwrap();
    let guarded = guarded_client(false, Duration::from_secs(10)).unwrap();
    // A literal loopback IP never reaches the resolver; the URL check stops it.
    let literal = download_capped(&guarded, &format!("http://{host}/small"), CAP).await;
    assert!(matches!(&literal, Err(DownloadError::Blocked { host }) if host == "127.0.0.1"));
    // A name that resolves to loopback is stopped by the resolver.
    let named = download_capped(&guarded, &format!("http://localhost:{port}/small"), CAP).await;
    assert!(
        matches!(&named, Err(DownloadError::Blocked { host }) if host == "localhost"),
        "{named:?}"
    );
    // The same URLs work with allow_private, so the refusals above are the guard's doing.
    let open = guarded_client(true, Duration::from_secs(10)).unwrap();
    assert!(
        download_capped(&open, &format!("http://localhost:{port}/small"), CAP)
            .await
            .is_ok()
    );
}
