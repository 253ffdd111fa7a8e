//! The writer thread: the one place that touches the database connection.
//!
//! Callers (async tasks) send commands over a bounded channel and await a oneshot reply, so the
//! async runtime never blocks on SQLite. The thread takes a command, then everything already
//! queued behind it (up to a cap), and runs the lot in ONE transaction — group commit: a burst
//! of hot-path writes (inbox, dedup, history) from many chats shares one commit. Replies go out
//! only after the commit, so a caller that sees `Ok` knows its write is durable.
//!
//! Each command runs inside its own savepoint: a failing command is rolled back alone and gets
//! its own error, while the rest of the batch still commits. If the transaction itself cannot
//! begin or commit (another process holds the lock past the busy timeout, disk full), every
//! command of the batch gets that error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gateway_core::store::StoreResult;
use gateway_core::StoreError;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::sql_err;

/// Whether a command writes; a batch of reads only needs a deferred (read) transaction, which
/// never waits for another process's write lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads only.
    Read,
    /// Writes.
    Write,
}

/// Why a whole batch failed; copied into every command's reply.
#[derive(Debug)]
pub(crate) enum Failure {
    Busy(String),
    Backend(String),
    Closed,
}

impl Failure {
    fn from_error(e: StoreError) -> Self {
        match e {
            StoreError::Busy(m) => Failure::Busy(m),
            StoreError::Closed => Failure::Closed,
            other => Failure::Backend(other.to_string()),
        }
    }

    fn to_error(&self) -> StoreError {
        match self {
            Failure::Busy(m) => StoreError::Busy(m.clone()),
            Failure::Backend(m) => StoreError::Backend(m.clone()),
            Failure::Closed => StoreError::Closed,
        }
    }
}

/// One queued command, type-erased so a single channel carries every operation.
pub(crate) trait Job: Send {
    /// Whether it writes.
    fn access(&self) -> Access;
    /// Runs the command inside the open transaction and keeps its result; false if it failed.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Sends the reply: the kept result when the batch committed, else the batch's failure.
    fn finish(self: Box<Self>, failure: Option<&Failure>);
}

/// A closure over the connection plus the channel for its result.
pub(crate) struct Op<T, F> {
    access: Access,
    f: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> Op<T, F> {
    /// A command running `f` and answering on `reply`.
    pub(crate) fn new(access: Access, f: F, reply: oneshot::Sender<StoreResult<T>>) -> Self {
        Self {
            access,
            f: Some(f),
            result: None,
            reply,
        }
    }
}

impl<T, F> Job for Op<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> StoreResult<T> + Send,
{
    fn access(&self) -> Access {
        self.access
    }

    fn run(&mut self, conn: &Connection) -> bool {
        let result = match self.f.take() {
            Some(f) => f(conn),
            None => Err(StoreError::Backend("store command ran twice".into())),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, failure: Option<&Failure>) {
        let result = match failure {
            Some(failure) => Err(failure.to_error()),
            None => self
                .result
                .unwrap_or_else(|| Err(StoreError::Backend("store command was not run".into()))),
        };
        // The caller may have stopped waiting (its future was dropped); nothing to do then.
        let _ = self.reply.send(result);
    }
}

/// What travels over the channel.
pub(crate) enum Msg {
    /// A command.
    Job(Box<dyn Job>),
    /// Finish what is queued before this, close the connection, answer, and stop.
    Close(oneshot::Sender<StoreResult<()>>),
}

/// Counters behind `SqliteStore::stats`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) transactions: AtomicU64,
    pub(crate) commands: AtomicU64,
}

/// The thread's body. Returns when the store is closed or dropped (the channel's only sender
/// goes away, after the queued commands have run).
pub(crate) fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Msg>,
    counters: Arc<Counters>,
    batch_max: usize,
) {
    let mut close_reply = None;
    while let Some(first) = rx.blocking_recv() {
        let mut jobs: Vec<Box<dyn Job>> = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Job(job) => jobs.push(job),
                Msg::Close(reply) => {
                    close_reply = Some(reply);
                    break;
                }
            }
            // Take only what is already queued: never wait for more, so a lone command is
            // committed at once and latency stays one transaction.
            if jobs.len() < batch_max {
                next = rx.try_recv().ok();
            }
        }
        if !jobs.is_empty() {
            run_batch(&conn, jobs, &counters);
        }
        if close_reply.is_some() {
            break;
        }
    }

    // Refuse whatever raced in behind the close request.
    rx.close();
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Job(job) => job.finish(Some(&Failure::Closed)),
            Msg::Close(reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    let result = shutdown(conn);
    if let Err(e) = &result {
        tracing::warn!(error = %e, "Closing the store failed.");
    }
    if let Some(reply) = close_reply {
        let _ = reply.send(result);
    }
}

/// Runs `jobs` in one transaction and answers them all.
fn run_batch(conn: &Connection, mut jobs: Vec<Box<dyn Job>>, counters: &Counters) {
    let writes = jobs.iter().any(|j| j.access() == Access::Write);
    let outcome = transaction(conn, &mut jobs, writes);
    counters.transactions.fetch_add(1, Ordering::Relaxed);
    counters
        .commands
        .fetch_add(jobs.len() as u64, Ordering::Relaxed);
    let failure = match outcome {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!(commands = jobs.len(), error = %e, "Store transaction failed.");
            Some(Failure::from_error(e))
        }
    };
    for job in jobs {
        job.finish(failure.as_ref());
    }
}

/// Begin, run every job in its own savepoint, commit. On error the transaction is rolled back.
fn transaction(conn: &Connection, jobs: &mut [Box<dyn Job>], writes: bool) -> StoreResult<()> {
    // IMMEDIATE takes the write lock up front, so a busy database fails (after the busy
    // timeout) here, before any work, rather than at the first write or at commit.
    let begin = if writes {
        "BEGIN IMMEDIATE"
    } else {
        "BEGIN DEFERRED"
    };
    exec(conn, begin)?;
    let result = jobs
        .iter_mut()
        .try_for_each(|job| run_job(conn, job.as_mut()))
        .and_then(|()| exec(conn, "COMMIT"));
    if result.is_err() && !conn.is_autocommit() {
        // Best effort: the error being reported is the one that matters.
        let _ = exec(conn, "ROLLBACK");
    }
    result
}

/// Runs one job in a savepoint. The job's own failure is kept in the job and rolled back
/// alone; only a failure of the savepoint statements themselves aborts the batch.
fn run_job(conn: &Connection, job: &mut dyn Job) -> StoreResult<()> {
    if job.access() == Access::Read {
        job.run(conn);
        return Ok(());
    }
    exec(conn, "SAVEPOINT job")?;
    if !job.run(conn) {
        exec(conn, "ROLLBACK TO job")?;
    }
    exec(conn, "RELEASE job")
}

/// Executes a parameterless statement through the statement cache.
fn exec(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(sql_err)
}

/// Lets SQLite refresh its planner statistics, then closes the connection (which checkpoints
/// the WAL when it is the last connection to the file).
fn shutdown(conn: Connection) -> StoreResult<()> {
    if let Err(e) = conn.execute_batch("PRAGMA optimize") {
        tracing::debug!(error = %e, "PRAGMA optimize failed on close.");
    }
    conn.close().map_err(|(_, e)| sql_err(e))?;
    tracing::debug!("Store closed.");
    Ok(())
}
