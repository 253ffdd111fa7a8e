//! Runs one turn's work in a task owned by its stream, enforcing the contract of
//! [`crate::AgentBackend::start`] for every backend in one place:
//!
//! - the time limit ends the turn with `Err(Timeout)` and the cancellation token with
//!   `Err(Cancelled)`; either way the work future is dropped, which drops the HTTP response or
//!   the child process (spawned with `kill_on_drop`);
//! - dropping the stream aborts the task, with the same effect;
//! - the stream yields deltas, then exactly one `Final` or `Err`, then ends — a task that dies
//!   without an answer still ends the stream with an error.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

use crate::{AgentError, AgentEvent, AgentStream};

/// Deltas buffered between the backend and a slow consumer; beyond this the backend waits.
const CHANNEL_CAPACITY: usize = 64;

/// Where a backend's work sends its deltas.
#[derive(Debug)]
pub(crate) struct Emitter {
    tx: mpsc::Sender<Result<AgentEvent, AgentError>>,
    deadline: Instant,
}

impl Emitter {
    /// When the turn's time limit runs out (for decisions such as "is a retry worth it").
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Sends one delta; empty pieces are skipped. Fails with `Cancelled` when the consumer has
    /// dropped the stream (the task is being aborted anyway).
    pub(crate) async fn delta(&self, text: impl Into<String>) -> Result<(), AgentError> {
        let text = text.into();
        if text.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Ok(AgentEvent::Delta(text)))
            .await
            .map_err(|_| AgentError::Cancelled)
    }
}

/// Starts `work` in a task and returns the turn's stream. `work` gets an [`Emitter`] for deltas
/// and returns the final text.
pub(crate) fn spawn_turn<W, Fut>(
    backend: &'static str,
    timeout: Duration,
    cancel: CancellationToken,
    work: W,
) -> AgentStream
where
    W: FnOnce(Emitter) -> Fut,
    Fut: Future<Output = Result<String, AgentError>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let started = Instant::now();
    let deadline = started + timeout;
    let fut = work(Emitter {
        tx: tx.clone(),
        deadline,
    });
    let task = tokio::spawn(async move {
        let outcome = tokio::select! {
            // Checked first so a turn cancelled at the same moment it finished reports the
            // cancellation the user asked for.
            biased;
            _ = cancel.cancelled() => Err(AgentError::Cancelled),
            // The time limit covers everything: queueing behind a persistent process, retries,
            // and a slow stream.
            _ = tokio::time::sleep_until(deadline) => Err(AgentError::Timeout(timeout)),
            // The work itself; dropped (and so stopped) when either branch above wins.
            result = fut => result,
        };
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match &outcome {
            Ok(_) => debug!(backend, elapsed_ms, "Agent turn finished."),
            Err(AgentError::Cancelled) => debug!(backend, elapsed_ms, "Agent turn cancelled."),
            Err(e) => warn!(backend, kind = e.kind(), elapsed_ms, error = %e, "Agent turn failed."),
        }
        // The consumer may be gone already; then there is nobody to tell.
        let _ = tx.send(outcome.map(AgentEvent::Final)).await;
    });
    Box::pin(TurnStream {
        rx,
        _task: AbortOnDropHandle::new(task),
        done: false,
    })
}

/// The stream half of a turn: reads the task's channel and aborts the task when dropped.
struct TurnStream {
    rx: mpsc::Receiver<Result<AgentEvent, AgentError>>,
    _task: AbortOnDropHandle<()>,
    /// A terminal item (`Final` or `Err`) has been yielded.
    done: bool,
}

impl Stream for TurnStream {
    type Item = Result<AgentEvent, AgentError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match ready!(self.rx.poll_recv(cx)) {
            Some(item) => {
                if !matches!(item, Ok(AgentEvent::Delta(_))) {
                    self.done = true;
                }
                Poll::Ready(Some(item))
            }
            // The task ended without sending its outcome (it panicked): still end with an error.
            None => {
                self.done = true;
                Poll::Ready(Some(Err(AgentError::Protocol(
                    "the backend ended the turn without an answer".into(),
                ))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    async fn collect(mut s: AgentStream) -> Vec<Result<AgentEvent, AgentError>> {
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            out.push(item);
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn deltas_then_one_final() {
        let s = spawn_turn(
            "test",
            Duration::from_secs(5),
            CancellationToken::new(),
            |em| async move {
                em.delta("a").await?;
                em.delta("").await?;
                em.delta("b").await?;
                Ok("ab".to_string())
            },
        );
        assert_eq!(
            collect(s).await,
            vec![
                Ok(AgentEvent::Delta("a".into())),
                Ok(AgentEvent::Delta("b".into())),
                Ok(AgentEvent::Final("ab".into()))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_and_cancel_end_the_stream() {
        let s = spawn_turn(
            "test",
            Duration::from_secs(5),
            CancellationToken::new(),
            |_| std::future::pending(),
        );
        assert_eq!(
            collect(s).await,
            vec![Err(AgentError::Timeout(Duration::from_secs(5)))]
        );

        let cancel = CancellationToken::new();
        let s = spawn_turn("test", Duration::from_secs(5), cancel.clone(), |_| {
            std::future::pending()
        });
        cancel.cancel();
        assert_eq!(collect(s).await, vec![Err(AgentError::Cancelled)]);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_stream_drops_the_work() {
        struct Flag(tokio::sync::mpsc::Sender<()>);
        impl Drop for Flag {
            fn drop(&mut self) {
                let _ = self.0.try_send(());
            }
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        let s = spawn_turn(
            "test",
            Duration::from_secs(5),
            CancellationToken::new(),
            |_| async move {
                let _flag = Flag(tx);
                std::future::pending::<Result<String, AgentError>>().await
            },
        );
        tokio::task::yield_now().await;
        drop(s);
        assert!(rx.recv().await.is_some());
    }
}
