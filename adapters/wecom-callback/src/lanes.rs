//! Per-sender lanes over a bounded worker pool: one sender's jobs run in arrival order, one at a
//! time, while different senders run in parallel, so a slow media download (or any slow job)
//! of one user never holds up another (wecom-callback reference §4.2).
//!
//! Two bounds: `capacity` jobs may wait or run at once in total (a caller that finds no room
//! gets `None` from [`Lanes::try_reserve`] and answers "busy"), and at most `workers` jobs run
//! at the same moment. Each sender with work has one drain task; it exists only while the
//! sender's queue is non-empty, so idle senders cost nothing.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Processes one job.
pub(crate) type Work<J> = Arc<dyn Fn(J) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A place in the lanes, reserved before the job is journaled so that a full gateway refuses
/// before writing anything.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Returned to the capacity when the job is done (or dropped).
    _permit: OwnedSemaphorePermit,
}

/// The lanes; cheap to clone.
pub(crate) struct Lanes<J> {
    inner: Arc<Inner<J>>,
}

impl<J> Clone for Lanes<J> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<J> std::fmt::Debug for Lanes<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("free", &self.inner.capacity.available_permits())
            .finish_non_exhaustive()
    }
}

struct Inner<J> {
    capacity: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    /// Waiting jobs per sender; a sender is present exactly while its drain task runs.
    queues: Mutex<HashMap<String, VecDeque<(J, Slot)>>>,
    work: Work<J>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl<J: Send + 'static> Lanes<J> {
    /// Lanes holding at most `capacity` jobs, running at most `workers` at once, each with
    /// `work`. Drain tasks run on `tasks` and stop between jobs once `stop` is cancelled.
    pub(crate) fn new(
        capacity: usize,
        workers: usize,
        work: Work<J>,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                capacity: Arc::new(Semaphore::new(capacity.max(1))),
                workers: Arc::new(Semaphore::new(workers.max(1))),
                queues: Mutex::new(HashMap::new()),
                work,
                tasks,
                stop,
            }),
        }
    }

    /// A place for one more job, or `None` when the lanes are full.
    pub(crate) fn try_reserve(&self) -> Option<Slot> {
        self.inner
            .capacity
            .clone()
            .try_acquire_owned()
            .ok()
            .map(|p| Slot { _permit: p })
    }

    /// Waits for a place (used when re-queueing journaled jobs at start).
    pub(crate) async fn reserve(&self) -> Option<Slot> {
        self.inner
            .capacity
            .clone()
            .acquire_owned()
            .await
            .ok()
            .map(|p| Slot { _permit: p })
    }

    /// Queues `job` behind `sender`'s earlier jobs; starts the sender's drain task if idle.
    pub(crate) fn push(&self, sender: &str, job: J, slot: Slot) {
        let start = {
            let mut queues = self.inner.queues.lock().unwrap_or_else(|p| p.into_inner());
            match queues.get_mut(sender) {
                Some(q) => {
                    q.push_back((job, slot));
                    false
                }
                None => {
                    queues.insert(sender.to_string(), VecDeque::from([(job, slot)]));
                    true
                }
            }
        };
        if start {
            let (inner, sender) = (self.inner.clone(), sender.to_string());
            self.inner.tasks.spawn(drain(inner, sender));
        }
    }

    /// Jobs waiting (not yet started) now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.inner
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(VecDeque::len)
            .sum()
    }
}

/// Runs one sender's jobs in order until its queue is empty (or the lanes stop).
async fn drain<J: Send + 'static>(inner: Arc<Inner<J>>, sender: String) {
    loop {
        let next = {
            let mut queues = inner.queues.lock().unwrap_or_else(|p| p.into_inner());
            let Some(q) = queues.get_mut(&sender) else {
                return;
            };
            match q.pop_front() {
                Some(item) => Some(item),
                None => {
                    queues.remove(&sender);
                    None
                }
            }
        };
        let Some((job, slot)) = next else { return };
        let permit = tokio::select! {
            // Stop first: the job stays journaled and runs at the next start.
            biased;
            () = inner.stop.cancelled() => return,
            p = inner.workers.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        if inner.stop.is_cancelled() {
            return;
        }
        (inner.work)(job).await;
        drop(permit);
        drop(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::mpsc;

    /// A test job: (sender, sequence number).
    type TestJob = (String, u32);

    fn lanes(
        capacity: usize,
        workers: usize,
    ) -> (Lanes<TestJob>, mpsc::UnboundedReceiver<TestJob>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let work: Work<(String, u32)> = Arc::new(move |job: (String, u32)| {
            let tx = tx.clone();
            Box::pin(async move {
                // "slow" takes 10 s; everyone else is instant.
                if job.0 == "slow" {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                let _ = tx.send(job);
            })
        });
        let l = Lanes::new(
            capacity,
            workers,
            work,
            TaskTracker::new(),
            CancellationToken::new(),
        );
        (l, rx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_sender_does_not_hold_up_the_others_and_order_is_kept() {
        let (l, mut rx) = lanes(64, 4);
        for i in 0..3 {
            l.push("slow", ("slow".into(), i), l.try_reserve().unwrap());
        }
        for i in 0..5 {
            l.push("fast", ("fast".into(), i), l.try_reserve().unwrap());
        }
        let start = tokio::time::Instant::now();
        for i in 0..5 {
            assert_eq!(rx.recv().await.unwrap(), ("fast".into(), i));
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        for i in 0..3 {
            assert_eq!(rx.recv().await.unwrap(), ("slow".into(), i));
        }
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert_eq!(l.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_is_bounded_and_freed_after_each_job() {
        let (l, mut rx) = lanes(2, 1);
        let a = l.try_reserve().unwrap();
        let b = l.try_reserve().unwrap();
        assert!(l.try_reserve().is_none(), "a third job must be refused");
        l.push("u", ("u".into(), 1), a);
        l.push("v", ("v".into(), 2), b);
        rx.recv().await.unwrap();
        rx.recv().await.unwrap();
        tokio::task::yield_now().await;
        assert!(l.try_reserve().is_some());
    }
}
