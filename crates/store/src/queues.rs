//! Durable message queues (an SQS-compatible subset): messages stay until deleted; a
//! received message is invisible for its visibility timeout and then received again; one
//! received too often moves to the queue's dead-letter queue.

use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: String,
    pub created_ms: i64,
    pub visibility_s: u32,
    pub retention_s: u32,
    pub delay_s: u32,
    pub wait_s: u32,
    /// The redrive policy: the dead-letter queue's name and the receives before a move.
    pub dead_letter: Option<(String, u32)>,
}

/// A message as a receiver gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub id: String,
    pub body: String,
    pub receipt: String,
    pub sent_ms: i64,
    pub receive_count: u32,
    pub first_receive_ms: i64,
}

/// Messages of a queue by visibility, now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QueueCounts {
    pub visible: u64,
    /// Received and not yet deleted or visible again.
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
}

/// A queue feeding a function in batches.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceMapping {
    pub uuid: String,
    pub queue: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub batch_size: u32,
    /// Seconds to gather a fuller batch before invoking.
    pub window_s: u32,
    pub enabled: bool,
    /// `FunctionResponseTypes: ["ReportBatchItemFailures"]`.
    pub report_failures: bool,
    /// Batches of this mapping running at once.
    pub max_concurrency: u32,
    pub last_modified_ms: i64,
}

fn queue(row: &rusqlite::Row<'_>) -> rusqlite::Result<Queue> {
    let dlq: Option<String> = row.get(6)?;
    let max: Option<u32> = row.get(7)?;
    Ok(Queue {
        name: row.get(0)?,
        created_ms: row.get(1)?,
        visibility_s: row.get(2)?,
        retention_s: row.get(3)?,
        delay_s: row.get(4)?,
        wait_s: row.get(5)?,
        dead_letter: dlq.zip(max),
    })
}

const QUEUE_COLUMNS: &str = "name, created_ms, visibility_s, retention_s, delay_s, wait_s, dead_letter_queue, max_receive_count";

impl Store {
    /// Creates a queue; `false` if one of that name exists.
    pub fn create_queue(&self, q: &Queue) -> Result<bool, StoreError> {
        let (dlq, max) = q.dead_letter.clone().unzip();
        Ok(self.conn().execute(
            "INSERT INTO queues (name, created_ms, visibility_s, retention_s, delay_s, wait_s, dead_letter_queue, max_receive_count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(name) DO NOTHING",
            params![q.name, q.created_ms, q.visibility_s, q.retention_s, q.delay_s, q.wait_s, dlq, max],
        )? > 0)
    }

    pub fn queue(&self, name: &str) -> Result<Option<Queue>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE name = ?1"),
                [name],
                queue,
            )
            .optional()?)
    }

    pub fn queues(&self) -> Result<Vec<Queue>, StoreError> {
        let conn = self.conn();
        let mut select =
            conn.prepare_cached(&format!("SELECT {QUEUE_COLUMNS} FROM queues ORDER BY name"))?;
        let rows = select.query_map([], queue)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_queue(&self, name: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM queues WHERE name = ?1", [name])?
            > 0)
    }

    pub fn purge_queue(&self, name: &str) -> Result<usize, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM queue_messages WHERE queue = ?1", [name])?)
    }

    /// Adds messages `(id, body, visible_at_ms)` sent at `now_ms`, all or none.
    pub fn send_messages(
        &self,
        queue: &str,
        messages: &[(String, String, i64)],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO queue_messages (id, queue, body, sent_ms, visible_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (id, body, visible_at) in messages {
                insert.execute(params![id, queue, body, now_ms, visible_at])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Receives up to `max` visible messages at `now_ms`, hiding them for `visibility_ms`.
    /// Messages past their retention are dropped, and ones already received
    /// `max_receive_count` times move to the dead-letter queue first.
    pub fn receive(
        &self,
        q: &Queue,
        max: usize,
        visibility_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<Received>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let expired = now_ms - i64::from(q.retention_s) * 1000;
        tx.execute(
            "DELETE FROM queue_messages WHERE queue = ?1 AND sent_ms < ?2",
            params![q.name, expired],
        )?;
        if let Some((dlq, max_receives)) = &q.dead_letter {
            // A message stays with the dead-letter queue's own clock from now.
            tx.execute(
                "UPDATE queue_messages SET queue = ?2, receive_count = 0, receipt = NULL,
                        first_receive_ms = NULL, visible_at_ms = ?4
                 WHERE queue = ?1 AND visible_at_ms <= ?4 AND receive_count >= ?3
                   AND EXISTS (SELECT 1 FROM queues WHERE name = ?2)",
                params![q.name, dlq, max_receives, now_ms],
            )?;
        }
        let due: Vec<(String, String, i64, u32, Option<i64>)> = {
            let mut select = tx.prepare_cached(
                "SELECT id, body, sent_ms, receive_count, first_receive_ms FROM queue_messages
                 WHERE queue = ?1 AND visible_at_ms <= ?2 ORDER BY sent_ms, id LIMIT ?3",
            )?;
            let rows = select.query_map(params![q.name, now_ms, max as i64], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                ))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(due.len());
        {
            let mut mark = tx.prepare_cached(
                "UPDATE queue_messages SET visible_at_ms = ?2, receive_count = receive_count + 1,
                        first_receive_ms = COALESCE(first_receive_ms, ?3), receipt = ?4
                 WHERE id = ?1",
            )?;
            for (id, body, sent_ms, count, first) in due {
                let receipt = format!("{id}.{}", uuid::Uuid::new_v4().simple());
                mark.execute(params![id, now_ms + visibility_ms, now_ms, receipt])?;
                out.push(Received {
                    id,
                    body,
                    receipt,
                    sent_ms,
                    receive_count: count + 1,
                    first_receive_ms: first.unwrap_or(now_ms),
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Deletes a received message by its latest receipt; whether it was there.
    pub fn delete_message(&self, queue: &str, receipt: &str) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2",
            [queue, receipt],
        )? > 0)
    }

    /// Makes a received message visible again at `visible_at_ms`.
    pub fn change_visibility(
        &self,
        queue: &str,
        receipt: &str,
        visible_at_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(self.conn().execute(
            "UPDATE queue_messages SET visible_at_ms = ?3 WHERE queue = ?1 AND receipt = ?2",
            params![queue, receipt, visible_at_ms],
        )? > 0)
    }

    pub fn put_mapping(&self, m: &SourceMapping) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO event_source_mappings
                (uuid, queue, function, qualifier, batch_size, window_s, enabled, report_failures, max_concurrency, last_modified_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(uuid) DO UPDATE SET
                function = excluded.function, qualifier = excluded.qualifier,
                batch_size = excluded.batch_size, window_s = excluded.window_s,
                enabled = excluded.enabled, report_failures = excluded.report_failures,
                max_concurrency = excluded.max_concurrency, last_modified_ms = excluded.last_modified_ms",
            params![
                m.uuid, m.queue, m.function, m.qualifier, m.batch_size, m.window_s, m.enabled,
                m.report_failures, m.max_concurrency, m.last_modified_ms
            ],
        )?;
        Ok(())
    }

    pub fn delete_mapping(&self, uuid: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()
            .execute("DELETE FROM event_source_mappings WHERE uuid = ?1", [uuid])?
            > 0)
    }

    pub fn mappings(&self) -> Result<Vec<SourceMapping>, StoreError> {
        let conn = self.conn();
        let mut select = conn.prepare_cached(
            "SELECT uuid, queue, function, qualifier, batch_size, window_s, enabled, report_failures, max_concurrency, last_modified_ms
             FROM event_source_mappings ORDER BY uuid",
        )?;
        let rows = select.query_map([], |row| {
            Ok(SourceMapping {
                uuid: row.get(0)?,
                queue: row.get(1)?,
                function: row.get(2)?,
                qualifier: row.get(3)?,
                batch_size: row.get(4)?,
                window_s: row.get(5)?,
                enabled: row.get(6)?,
                report_failures: row.get(7)?,
                max_concurrency: row.get(8)?,
                last_modified_ms: row.get(9)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn queue_counts(&self, queue: &str, now_ms: i64) -> Result<QueueCounts, StoreError> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(SUM(visible_at_ms <= ?2), 0),
                    COALESCE(SUM(visible_at_ms > ?2 AND receipt IS NOT NULL), 0),
                    COALESCE(SUM(visible_at_ms > ?2 AND receipt IS NULL), 0)
             FROM queue_messages WHERE queue = ?1",
            params![queue, now_ms],
            |row| {
                Ok(QueueCounts {
                    visible: row.get::<_, i64>(0)? as u64,
                    in_flight: row.get::<_, i64>(1)? as u64,
                    delayed: row.get::<_, i64>(2)? as u64,
                })
            },
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, dead_letter: Option<(&str, u32)>) -> Queue {
        Queue {
            name: name.into(),
            created_ms: 0,
            visibility_s: 30,
            retention_s: 345_600,
            delay_s: 0,
            wait_s: 0,
            dead_letter: dead_letter.map(|(n, c)| (n.into(), c)),
        }
    }

    #[test]
    fn received_messages_hide_come_back_and_move_to_the_dead_letter_queue() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let dlq = q("dlq", None);
        let main = q("main", Some(("dlq", 2)));
        assert!(store.create_queue(&dlq).unwrap() && store.create_queue(&main).unwrap());
        assert!(!store.create_queue(&main).unwrap());
        store
            .send_messages(
                "main",
                &[
                    ("m1".into(), "one".into(), 0),
                    ("m2".into(), "two".into(), 5_000),
                ],
                0,
            )
            .unwrap();
        // m2 is delayed until 5 s.
        let got = store.receive(&main, 10, 1000, 0).unwrap();
        assert_eq!(
            got.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["m1"]
        );
        assert!(
            store.receive(&main, 10, 1000, 500).unwrap().is_empty(),
            "hidden while in flight"
        );
        let again = store.receive(&main, 1, 1000, 1000).unwrap();
        assert_eq!((again[0].id.as_str(), again[0].receive_count), ("m1", 2));
        // An old receipt no longer deletes it.
        assert!(!store.delete_message("main", &got[0].receipt).unwrap());
        // Received twice: the third time it goes to the dead-letter queue instead.
        let third = store.receive(&main, 10, 1000, 6000).unwrap();
        assert_eq!(
            third.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["m2"]
        );
        let dead = store.receive(&dlq, 10, 1000, 6000).unwrap();
        assert_eq!((dead[0].id.as_str(), dead[0].receive_count), ("m1", 1));
        assert!(store.delete_message("main", &third[0].receipt).unwrap());
        assert_eq!(
            store.queue_counts("main", 6000).unwrap(),
            QueueCounts::default()
        );
    }
}
