//! Group commit: one writer task takes every pending write (all rooms, one tick) into one transaction, and answers each caller when it is durable.

use tokio::sync::{mpsc, oneshot};

use crate::{Store, StoreError, Write};

/// Writes waiting for one commit; the answer says whether they are durable.
struct Pending {
    writes: Vec<Write>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// A handle to the store's single writer.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Pending>,
}

impl GroupCommit {
    /// Starts the writer; it stops when every handle is dropped. At most `max_writes`
    /// writes go into one transaction (a bound on how long one commit holds the others).
    pub fn start(store: Store, max_writes: usize) -> GroupCommit {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx, max_writes.max(1)));
        GroupCommit { tx }
    }

    /// Resolves once `writes` are committed, with those queued beside them.
    pub async fn write(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                writes,
                done: Some(done),
            })
            .map_err(|_| StoreError::Stopped)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Commit(e)),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    /// Queues `writes` without waiting: they commit in order with everything else.
    pub fn write_later(&self, writes: Vec<Write>) {
        let _ = self.tx.send(Pending { writes, done: None });
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Pending>, max_writes: usize) {
    while let Some(first) = rx.recv().await {
        let mut writes = first.writes;
        let mut waiting: Vec<_> = first.done.into_iter().collect();
        while writes.len() < max_writes {
            let Ok(more) = rx.try_recv() else { break };
            writes.extend(more.writes);
            waiting.extend(more.done);
        }
        let result = store.write(&writes).await.map_err(|e| e.to_string());
        if let Err(error) = &result {
            tracing::error!(%error, writes = writes.len(), "store commit failed");
        }
        for done in waiting {
            let _ = done.send(result.clone());
        }
    }
}
