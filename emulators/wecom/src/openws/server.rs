//! The fake openws server's sockets: accepts WebSocket connections on 127.0.0.1:0, feeds every
//! client frame to [`State::handle`] and writes what it answers (with the configured ACK delay),
//! and carries out drops, kicks and closes.

use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::state::{ConnState, Out, State, Write};

/// State shared by the server tasks and the test-facing handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub state: Mutex<State>,
    /// Woken whenever a frame arrives or a connection opens or closes.
    pub changed: Notify,
}

impl Shared {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Accepts connections until `stop` is cancelled.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        // As a server answering small frames at once would be: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(serve_io(tcp, shared, stop));
    }
}

/// Serves one client over any byte stream (TCP, or an in-memory duplex for paused-time tests).
pub(crate) async fn serve_io<S>(io: S, shared: Arc<Shared>, stop: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok(ws) = tokio_tungstenite::accept_async(io).await else {
        return;
    };
    serve(ws, shared, stop).await;
}

async fn serve<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    // The emulator is a test tool: its per-connection write queue is unbounded so that pushes
    // from synchronous test code never block or fail.
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let conn = {
        let mut st = shared.lock();
        let id = st.next_conn;
        st.next_conn += 1;
        st.conns.insert(
            id,
            ConnState {
                bot: None,
                tx: tx.clone(),
            },
        );
        id
    };
    shared.changed.notify_waiters();
    let done = CancellationToken::new();

    let writer_done = done.clone();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Text(t) => {
                    if sink.send(Message::text(t)).await.is_err() {
                        break;
                    }
                }
                Out::Close => {
                    let _ = sink.send(Message::Close(None)).await;
                    let _ = sink.close().await;
                    break;
                }
                Out::Drop => break,
                Out::Ping => {
                    if sink
                        .send(Message::Ping(b"emulator".to_vec().into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        writer_done.cancel();
        sink
    });

    loop {
        tokio::select! {
            () = done.cancelled() => break,
            () = stop.cancelled() => break,
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    let writes = shared.lock().handle(conn, t.as_str(), Instant::now());
                    shared.changed.notify_waiters();
                    dispatch(&shared, writes);
                }
                Some(Ok(Message::Binary(b))) => {
                    let text = String::from_utf8_lossy(&b).into_owned();
                    let writes = shared.lock().handle(conn, &text, Instant::now());
                    shared.changed.notify_waiters();
                    dispatch(&shared, writes);
                }
                Some(Ok(Message::Pong(_))) => {
                    shared.lock().pongs += 1;
                    shared.changed.notify_waiters();
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    shared.lock().closed(conn);
    shared.changed.notify_waiters();
    drop(tx);
    // Dropping both halves closes the TCP connection; a `Drop` leaves no close frame.
    if let Ok(sink) = writer.await {
        drop(sink);
    }
    drop(stream);
}

/// Sends writes, delayed ones from their own task so the reader keeps going.
fn dispatch(shared: &Arc<Shared>, writes: Vec<Write>) {
    for w in writes {
        let tx = shared.lock().conns.get(&w.conn).map(|c| c.tx.clone());
        let Some(tx) = tx else { continue };
        if w.delay.is_zero() {
            let _ = tx.send(w.out);
        } else {
            tokio::spawn(async move {
                tokio::time::sleep(w.delay).await;
                let _ = tx.send(w.out);
            });
        }
    }
}
