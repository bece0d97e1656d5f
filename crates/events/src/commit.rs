//! Group commit for the event queue. Accepting, ending and requeuing events are small
//! writes whose cost is mostly the commit; one thread applies every write that arrived
//! while the previous commit ran, in one transaction, and answers each caller when that
//! transaction is committed — so a caller still learns of its write only once it is durable.

use std::sync::Arc;
use std::sync::mpsc;

use ember_store::{EventWrite, Store};
use tokio::sync::oneshot;

use crate::{EventError, now_ms};

/// Most writes in one transaction.
const MAX_BATCH: usize = 256;

type Job = (EventWrite, oneshot::Sender<Result<(), EventError>>);

pub(crate) struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    /// Starts the commit thread; it ends when the committer is dropped.
    pub fn start(store: Arc<Store>) -> std::io::Result<Committer> {
        let (jobs, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("ember-events-commit".into())
            .spawn(move || run(&store, &queue))?;
        Ok(Committer { jobs })
    }

    /// Applies a write; returns once it is committed.
    pub async fn write(&self, write: EventWrite) -> Result<(), EventError> {
        let (reply, committed) = oneshot::channel();
        let stopped = || EventError::Task("the event queue's commit thread has stopped".into());
        self.jobs.send((write, reply)).map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())?
    }
}

fn run(store: &Store, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match store.write_events(&writes, now_ms()) {
            Ok(results) => {
                for (result, reply) in results.into_iter().zip(replies) {
                    let _ = reply.send(result.map_err(EventError::from));
                }
            }
            Err(e) => {
                let why = ember_core::error_chain(&e);
                tracing::error!(error = %why, writes = writes.len(), "could not commit writes to the event queue");
                for reply in replies {
                    let _ = reply.send(Err(EventError::Commit(why.clone())));
                }
            }
        }
    }
}
