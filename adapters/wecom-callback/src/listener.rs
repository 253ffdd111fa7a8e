//! The callback listener's connection handling: a cap on open connections with load shedding
//! beyond it, a header timeout (which is also the keep-alive idle timeout: hyper arms it
//! whenever it waits for a request head), a body timeout, and an accept loop that survives
//! running out of file descriptors.
//!
//! The callback port faces the internet. Without these, 1,000 sockets that open and send
//! nothing are held for ever, and at the process's file limit new connections — WeCom's own
//! among them — are refused. WeCom waits 5 s for an answer and retries, so a connection over
//! the cap is answered `503` at once (WeCom retries it) rather than queued.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// Time to receive a request head, and how long an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// Time to receive a request body once its head arrived (applied by the handler, which
    /// reads the body).
    pub body_timeout: Duration,
    /// How long a shutdown waits for connections still being served.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Connections being refused at once; beyond this they are closed without an answer (a flood
/// must not turn the refusals themselves into the resource drain).
const MAX_SHEDDING: usize = 64;

/// The answer to a connection over the cap.
const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n\
content-length: 5\r\nretry-after: 1\r\nconnection: close\r\n\r\nbusy\n";

/// After an accept error (typically `EMFILE`), the pause before accepting again, so the loop
/// does not spin while descriptors are short.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` with `limits` until `stop` is cancelled, then lets the open
/// connections finish their requests (up to `drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
    instance: &str,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shedding = Arc::new(Semaphore::new(MAX_SHEDDING));
    let mut accept_errors = 0u64;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_errors += 1;
                // Logged on the first error and then every 100th: a flood must not flood the log.
                if accept_errors % 100 == 1 {
                    warn!(instance = %instance, error = %e, errors = accept_errors,
                        "The callback listener cannot accept connections (out of file descriptors? raise LimitNOFILE).");
                }
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            shed(stream, &shedding, instance);
            continue;
        };
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            serve_connection(stream, app, limits, stop).await;
            drop(permit);
        });
    }
    // Every permit back means every connection is done.
    let all = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, open.acquire_many(all))
        .await
        .is_err()
    {
        debug!(instance = %instance, "Callback connections still open at shutdown were dropped.");
    }
}

/// One HTTP/1.1 connection; a stop ends it after its current request.
async fn serve_connection(stream: TcpStream, app: Router, limits: Limits, stop: CancellationToken) {
    let service = TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                debug!(error = %e, "Callback connection ended with an error.");
            }
        }
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Answers `503` to a connection over the cap and closes it, in the background and bounded.
fn shed(mut stream: TcpStream, shedding: &Arc<Semaphore>, instance: &str) {
    let Ok(permit) = Arc::clone(shedding).try_acquire_owned() else {
        // Even the refusals are saturated: close at once.
        drop(stream);
        return;
    };
    debug!(instance = %instance, "Callback connection over the cap answered 503.");
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = stream.write_all(SHED_RESPONSE).await;
            let _ = stream.shutdown().await;
        })
        .await;
        drop(permit);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post};
    use tokio::io::AsyncReadExt as _;
    use tokio::time::Instant;

    const LIMITS: Limits = Limits {
        max_connections: 2,
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(10),
        drain_timeout: Duration::from_secs(5),
    };

    /// A listener on a free port serving a tiny app; returns its address and stop token.
    async fn start(limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", get(|| async { "hello" }))
            .route("/echo", post(|body: String| async move { body }));
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, app, limits, stop.clone(), "test"));
        (addr, stop)
    }

    /// Reads until the peer closes; returns what arrived.
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_that_sends_no_complete_head_is_closed_after_the_header_timeout() {
        let (addr, _stop) = start(LIMITS).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        let t0 = Instant::now();
        read_to_close(&mut s).await;
        let held = t0.elapsed();
        assert!(
            held >= LIMITS.header_timeout && held < LIMITS.header_timeout + Duration::from_secs(1),
            "held for {held:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
        let (addr, _stop) = start(LIMITS).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let t0 = Instant::now();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("hello"), "{answer}");
        assert!(t0.elapsed() >= LIMITS.header_timeout, "{:?}", t0.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn connections_over_the_cap_are_answered_503_and_a_freed_slot_serves_again() {
        let (addr, _stop) = start(LIMITS).await;
        // Two silent sockets take both slots...
        let mut held = Vec::new();
        for _ in 0..LIMITS.max_connections {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET").await.unwrap();
            held.push(s);
        }
        // ...(the server has accepted them once a request on a third is refused)...
        let mut extra = TcpStream::connect(addr).await.unwrap();
        let refused = read_to_close(&mut extra).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
        // ...and once they time out, a new connection is served.
        for s in &mut held {
            read_to_close(s).await;
        }
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_accept_loop_and_idle_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let app = Router::new().route("/", get(|| async { "hello" }));
        let server = tokio::spawn(serve(listener, app, LIMITS, stop.clone(), "test"));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut first = [0u8; 12];
        s.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        let t0 = Instant::now();
        stop.cancel();
        server.await.unwrap();
        assert!(t0.elapsed() < LIMITS.header_timeout, "{:?}", t0.elapsed());
        read_to_close(&mut s).await;
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }
}
