//! The durable queue of asynchronous invocations and their configurations.
//!
//! An event is a row from the moment it is accepted (the caller's 202 comes after the
//! commit) until it succeeds; one that fails for good stays, `failed`, to be seen. A row is
//! `queued` (waiting for `not_before_ms`) or `running`; a server that stops with events
//! running puts them back in the queue when it starts, so each is delivered at least once.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

/// One asynchronous invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncEvent {
    pub request_id: String,
    pub function: String,
    /// A version or alias, as the caller gave it.
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    /// Epoch milliseconds.
    pub enqueued_ms: i64,
    pub not_before_ms: i64,
    /// Attempts that ended in a function error.
    pub attempts: u32,
    /// How many destination hops led to this event (0 for one a caller sent).
    pub depth: u32,
}

/// How an event ended badly.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// `RetriesExhausted` or `EventAgeExceeded`.
    pub condition: String,
    /// The last response (an error document), if the function answered.
    pub response: Option<Vec<u8>>,
    /// The last error, for a person.
    pub error: String,
}

/// Events of one function by state, and the oldest one's age.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventCounts {
    pub function: String,
    pub queued: u64,
    /// Queued after at least one failed attempt.
    pub retrying: u64,
    pub running: u64,
    pub failed: u64,
    /// When the oldest unfinished event was accepted (epoch ms).
    pub oldest_ms: Option<i64>,
}

/// `PutFunctionEventInvokeConfig`'s settings for a function (qualifier `$LATEST`, a
/// version or an alias).
#[derive(Debug, Clone, PartialEq)]
pub struct EventInvokeConfig {
    pub function: String,
    pub qualifier: String,
    pub max_retry_attempts: u32,
    pub max_event_age_s: u32,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub last_modified_ms: i64,
}

/// What ending an event, firing a rule or publishing to the bus sends on, written in the
/// same transaction: asynchronous invocations and queue messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outbox {
    pub events: Vec<AsyncEvent>,
    /// (queue, body).
    pub messages: Vec<(String, String)>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.messages.is_empty()
    }
}

/// Writes an outbox within the caller's transaction; messages to a queue that no longer
/// exists are dropped (and logged).
pub(crate) fn write_outbox(
    tx: &rusqlite::Connection,
    outbox: &Outbox,
    now_ms: i64,
) -> Result<(), StoreError> {
    insert_events(tx, &outbox.events)?;
    if outbox.messages.is_empty() {
        return Ok(());
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO queue_messages (id, queue, body, sent_ms, visible_at_ms)
         SELECT ?1, ?2, ?3, ?4, ?4 WHERE EXISTS (SELECT 1 FROM queues WHERE name = ?2)",
    )?;
    for (queue, body) in &outbox.messages {
        let id = uuid::Uuid::new_v4().to_string();
        if insert.execute(params![id, queue, body, now_ms])? == 0 {
            tracing::warn!(%queue, "a message for a queue that no longer exists was dropped");
        }
    }
    Ok(())
}

/// Inserts events as queued, within the caller's transaction.
pub(crate) fn insert_events(
    tx: &rusqlite::Connection,
    events: &[AsyncEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO async_events
            (request_id, function, qualifier, payload, enqueued_ms, not_before_ms, attempts, depth, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued')",
    )?;
    for e in events {
        insert.execute(params![
            e.request_id,
            e.function,
            e.qualifier,
            e.payload,
            e.enqueued_ms,
            e.not_before_ms,
            e.attempts,
            e.depth
        ])?;
    }
    Ok(())
}

fn event(row: &rusqlite::Row<'_>) -> rusqlite::Result<AsyncEvent> {
    Ok(AsyncEvent {
        request_id: row.get(0)?,
        function: row.get(1)?,
        qualifier: row.get(2)?,
        payload: row.get(3)?,
        enqueued_ms: row.get(4)?,
        not_before_ms: row.get(5)?,
        attempts: row.get(6)?,
        depth: row.get(7)?,
    })
}

/// A change to the event queue; see [`Store::write_events`].
#[derive(Debug)]
pub enum EventWrite {
    /// Accepts events (all or none).
    Enqueue(Vec<AsyncEvent>),
    /// Ends an event that succeeded; `then` (a destination) is written with it.
    Succeed { request_id: String, then: Outbox },
    /// Ends an event that failed for good: it stays, `failed`, with why; `then` (a
    /// destination, a dead-letter queue) is written with it.
    Fail {
        request_id: String,
        failure: Failure,
        then: Outbox,
    },
    /// Puts a running event back in the queue until `not_before_ms`, with its function
    /// errors so far and the last response.
    RetryLater {
        request_id: String,
        attempts: u32,
        not_before_ms: i64,
        error: String,
        response: Option<Vec<u8>>,
    },
}

fn apply(tx: &rusqlite::Connection, write: &EventWrite, now_ms: i64) -> Result<(), StoreError> {
    match write {
        EventWrite::Enqueue(events) => insert_events(tx, events),
        EventWrite::Succeed { request_id, then } => {
            write_outbox(tx, then, now_ms)?;
            tx.prepare_cached("DELETE FROM async_events WHERE request_id = ?1")?
                .execute([request_id])?;
            Ok(())
        }
        EventWrite::Fail {
            request_id,
            failure: f,
            then,
        } => {
            write_outbox(tx, then, now_ms)?;
            tx.prepare_cached(
                "UPDATE async_events
                 SET state = 'failed', condition = ?2, last_error = ?3,
                     last_response = COALESCE(?4, last_response), finished_ms = ?5
                 WHERE request_id = ?1",
            )?
            .execute(params![
                request_id,
                f.condition,
                f.error,
                f.response,
                now_ms
            ])?;
            Ok(())
        }
        EventWrite::RetryLater {
            request_id,
            attempts,
            not_before_ms,
            error,
            response,
        } => {
            tx.prepare_cached(
                "UPDATE async_events
                 SET state = 'queued', attempts = ?2, not_before_ms = ?3, last_error = ?4,
                     last_response = COALESCE(?5, last_response)
                 WHERE request_id = ?1",
            )?
            .execute(params![
                request_id,
                attempts,
                not_before_ms,
                error,
                response
            ])?;
            Ok(())
        }
    }
}

const EVENT_COLUMNS: &str =
    "request_id, function, qualifier, payload, enqueued_ms, not_before_ms, attempts, depth";

impl Store {
    /// Takes up to `limit` events due at `now_ms`, oldest first, and marks them running;
    /// with when the next queued event is due (epoch ms), if any is left.
    pub fn claim_due(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<(Vec<AsyncEvent>, Option<i64>), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let due: Vec<AsyncEvent> = {
            let mut select = tx.prepare_cached(&format!(
                "SELECT {EVENT_COLUMNS} FROM async_events
                 WHERE state = 'queued' AND not_before_ms <= ?1
                 ORDER BY not_before_ms LIMIT ?2"
            ))?;
            let rows = select.query_map(params![now_ms, limit as i64], event)?;
            rows.collect::<Result<_, _>>()?
        };
        {
            let mut mark = tx.prepare_cached(
                "UPDATE async_events SET state = 'running' WHERE request_id = ?1",
            )?;
            for e in &due {
                mark.execute([&e.request_id])?;
            }
        }
        let next: Option<i64> = tx
            .prepare_cached("SELECT MIN(not_before_ms) FROM async_events WHERE state = 'queued'")?
            .query_row([], |row| row.get(0))?;
        tx.commit()?;
        Ok((due, next))
    }

    /// Writes an outbox in its own transaction.
    pub fn deliver(&self, outbox: &Outbox, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        write_outbox(&tx, outbox, now_ms)?;
        tx.commit()?;
        Ok(())
    }

    /// Applies writes of the event queue in one transaction — one commit for all, the
    /// cost that dominates a small write — each in its own savepoint, so that one that
    /// fails leaves the others in. Returns each write's own result; `Err` only if the
    /// transaction itself could not be committed (then none of them is).
    pub fn write_events(
        &self,
        writes: &[EventWrite],
        now_ms: i64,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut conn = self.conn();
        let mut tx = conn.transaction()?;
        if let [write] = writes {
            // Alone in its transaction: no savepoint needed.
            let result = apply(&tx, write, now_ms);
            if result.is_ok() {
                tx.commit()?;
            }
            return Ok(vec![result]);
        }
        let mut results = Vec::with_capacity(writes.len());
        for write in writes {
            let mut sp = tx.savepoint()?;
            let result = apply(&sp, write, now_ms);
            if result.is_ok() {
                sp.commit()?;
            } else {
                sp.rollback()?;
            }
            results.push(result);
        }
        tx.commit()?;
        Ok(results)
    }

    /// Puts every running event back in the queue: at startup, after a stop that left
    /// some running. Returns how many.
    pub fn requeue_running(&self) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE async_events SET state = 'queued' WHERE state = 'running'",
            [],
        )?)
    }

    /// Event counts per function.
    pub fn event_counts(&self) -> Result<Vec<EventCounts>, StoreError> {
        let conn = self.conn();
        let mut select = conn.prepare_cached(
            "SELECT function,
                    SUM(state = 'queued' AND attempts = 0),
                    SUM(state = 'queued' AND attempts > 0),
                    SUM(state = 'running'),
                    SUM(state = 'failed'),
                    MIN(CASE WHEN state != 'failed' THEN enqueued_ms END)
             FROM async_events GROUP BY function ORDER BY function",
        )?;
        let rows = select.query_map([], |row| {
            Ok(EventCounts {
                function: row.get(0)?,
                queued: row.get::<_, i64>(1)? as u64,
                retrying: row.get::<_, i64>(2)? as u64,
                running: row.get::<_, i64>(3)? as u64,
                failed: row.get::<_, i64>(4)? as u64,
                oldest_ms: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One event's state (`queued`, `running`, `failed`), if it is still on record.
    #[cfg(test)]
    pub fn event_state(&self, request_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT state FROM async_events WHERE request_id = ?1",
                [request_id],
                |row| row.get(0),
            )
            .optional()?)
    }

    pub fn put_event_invoke_config(&self, c: &EventInvokeConfig) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO event_invoke_configs
                (function, qualifier, max_retry_attempts, max_event_age_s, on_success, on_failure, last_modified_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(function, qualifier) DO UPDATE SET
                max_retry_attempts = excluded.max_retry_attempts,
                max_event_age_s = excluded.max_event_age_s,
                on_success = excluded.on_success,
                on_failure = excluded.on_failure,
                last_modified_ms = excluded.last_modified_ms",
            params![
                c.function,
                c.qualifier,
                c.max_retry_attempts,
                c.max_event_age_s,
                c.on_success,
                c.on_failure,
                c.last_modified_ms
            ],
        )?;
        Ok(())
    }

    /// Removes a configuration; whether there was one.
    pub fn delete_event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM event_invoke_configs WHERE function = ?1 AND qualifier = ?2",
            [function, qualifier],
        )? > 0)
    }

    /// The configurations of one function, or of all for `None`.
    pub fn event_invoke_configs(
        &self,
        function: Option<&str>,
    ) -> Result<Vec<EventInvokeConfig>, StoreError> {
        let conn = self.conn();
        let mut select = conn.prepare_cached(&format!(
            "{CONFIG_COLUMNS} WHERE ?1 IS NULL OR function = ?1 ORDER BY function, qualifier"
        ))?;
        let rows = select.query_map([function], config_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// One function's configuration for one qualifier.
    pub fn event_invoke_config(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<EventInvokeConfig>, StoreError> {
        let conn = self.conn();
        let mut select = conn.prepare_cached(&format!(
            "{CONFIG_COLUMNS} WHERE function = ?1 AND qualifier = ?2"
        ))?;
        Ok(select
            .query_row([function, qualifier], config_row)
            .optional()?)
    }
}

const CONFIG_COLUMNS: &str = "SELECT function, qualifier, max_retry_attempts, max_event_age_s, \
     on_success, on_failure, last_modified_ms FROM event_invoke_configs";

fn config_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<EventInvokeConfig> {
    Ok(EventInvokeConfig {
        function: row.get(0)?,
        qualifier: row.get(1)?,
        max_retry_attempts: row.get(2)?,
        max_event_age_s: row.get(3)?,
        on_success: row.get(4)?,
        on_failure: row.get(5)?,
        last_modified_ms: row.get(6)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, at: i64) -> AsyncEvent {
        AsyncEvent {
            request_id: id.into(),
            function: "f".into(),
            qualifier: None,
            payload: b"{}".to_vec(),
            enqueued_ms: at,
            not_before_ms: at,
            attempts: 0,
            depth: 0,
        }
    }

    #[test]
    fn events_are_claimed_when_due_retried_and_requeued_after_a_stop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let accepted = store
            .write_events(
                &[EventWrite::Enqueue(vec![event("a", 100), event("b", 200)])],
                0,
            )
            .unwrap();
        assert!(accepted[0].is_ok());
        let (due, next) = store.claim_due(150, 10).unwrap();
        assert_eq!(next, Some(200));
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].request_id, "a");
        // Claimed once: not handed out again while running.
        assert!(store.claim_due(150, 10).unwrap().0.is_empty());
        let retry = EventWrite::RetryLater {
            request_id: "a".into(),
            attempts: 1,
            not_before_ms: 300,
            error: "boom".into(),
            response: Some(b"{\"e\":1}".to_vec()),
        };
        let results = store.write_events(&[retry], 200).unwrap();
        assert!(results[0].is_ok());
        let (due, next) = store.claim_due(300, 10).unwrap();
        assert_eq!(next, None);
        assert_eq!(
            due.iter()
                .map(|e| e.request_id.as_str())
                .collect::<Vec<_>>(),
            ["b", "a"]
        );
        assert_eq!(due[1].attempts, 1);
        // A stop with both running: both come back.
        assert_eq!(store.requeue_running().unwrap(), 2);
        let counts = store.event_counts().unwrap();
        assert_eq!((counts[0].queued, counts[0].retrying), (1, 1));
        store.claim_due(300, 10).unwrap();
        let then = Outbox {
            events: vec![event("c", 400)],
            messages: Vec::new(),
        };
        let failure = Failure {
            condition: "RetriesExhausted".into(),
            response: None,
            error: "boom".into(),
        };
        // One commit; the duplicate event fails alone and takes nothing else with it.
        let results = store
            .write_events(
                &[
                    EventWrite::Succeed {
                        request_id: "b".into(),
                        then,
                    },
                    EventWrite::Enqueue(vec![event("d", 400), event("a", 400)]),
                    EventWrite::Fail {
                        request_id: "a".into(),
                        failure,
                        then: Outbox::default(),
                    },
                ],
                500,
            )
            .unwrap();
        assert!(results[0].is_ok() && results[2].is_ok());
        assert!(results[1].is_err(), "a duplicate request id was accepted");
        assert_eq!(store.event_state("d").unwrap(), None);
        assert_eq!(store.event_state("b").unwrap(), None);
        assert_eq!(store.event_state("a").unwrap().as_deref(), Some("failed"));
        assert_eq!(store.event_state("c").unwrap().as_deref(), Some("queued"));
    }
}
