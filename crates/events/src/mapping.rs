//! Event source mappings: a poller that reads a queue in batches and invokes a function
//! with them, SQS-style.
//!
//! Each enabled mapping runs up to `max_concurrency` batches at once. A batch is up to
//! `batch_size` messages received with the queue's visibility timeout; with a batching
//! window the poller waits (up to the window) for a full batch. The function gets
//! `{"Records": [...]}` in the SQS record shape. When it succeeds, the batch is deleted —
//! all of it, or, with `ReportBatchItemFailures`, all but the `batchItemFailures` it
//! names; when it fails (or is throttled), nothing is deleted and the messages come back
//! after their visibility timeout, to be retried or moved to the dead-letter queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use ember_core::arn::Qualifier;
use ember_dispatch::InvokeRequest;
use ember_store::{Received, SourceMapping, Store};
use serde_json::{Value, json};

use crate::{Inner, now_ms};

/// How often idle mappings look at their queue.
const POLL: Duration = Duration::from_millis(100);

/// What each mapping is doing.
#[derive(Default)]
pub(crate) struct Pollers {
    /// Batches running, by mapping.
    running: Mutex<HashMap<String, u32>>,
    /// When each mapping last started a batch (epoch ms), for the batching window.
    last: Mutex<HashMap<String, i64>>,
}

/// The SQS record of a received message.
pub fn record(m: &Received, queue_arn: &str, region: &str) -> Value {
    json!({
        "messageId": m.id,
        "receiptHandle": m.receipt,
        "body": m.body,
        "attributes": {
            "ApproximateReceiveCount": m.receive_count.to_string(),
            "SentTimestamp": m.sent_ms.to_string(),
            "SenderId": "ember",
            "ApproximateFirstReceiveTimestamp": m.first_receive_ms.to_string(),
        },
        "messageAttributes": {},
        "md5OfBody": crate::md5_hex(&m.body),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    })
}

/// The message ids a response reports as failed; `None` when the response does not use
/// the partial-failure shape (then the whole batch succeeded).
pub fn reported_failures(response: &[u8]) -> Option<Vec<String>> {
    let doc: Value = serde_json::from_slice(response).ok()?;
    let items = doc.get("batchItemFailures")?.as_array()?;
    Some(
        items
            .iter()
            .filter_map(|i| i.get("itemIdentifier")?.as_str().map(str::to_owned))
            .collect(),
    )
}

pub(crate) async fn poller(inner: Arc<Inner>) {
    loop {
        if inner.stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let store = Arc::clone(&inner.store);
        let mappings = tokio::task::spawn_blocking(move || store.mappings())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        for mapping in mappings.into_iter().filter(|m| m.enabled) {
            let busy = inner
                .pollers
                .running
                .lock()
                .expect("pollers lock")
                .get(&mapping.uuid)
                .copied()
                .unwrap_or(0);
            if busy >= mapping.max_concurrency {
                continue;
            }
            let inner = Arc::clone(&inner);
            // One poll per mapping per tick; a batch runs in its own task.
            tokio::spawn(async move { poll(inner, mapping).await });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Receives one batch for `mapping` if one is ready, and runs it.
async fn poll(inner: Arc<Inner>, mapping: SourceMapping) {
    {
        let mut running = inner.pollers.running.lock().expect("pollers lock");
        let n = running.entry(mapping.uuid.clone()).or_default();
        if *n >= mapping.max_concurrency {
            return;
        }
        *n += 1;
    }
    // A full batch suggests more are waiting: take them now rather than a tick later,
    // up to a bound so that a changed or deleted mapping is seen again soon.
    for _ in 0..FULL_BATCHES_IN_A_ROW {
        if !run_batch(&inner, &mapping).await
            || inner.stopping.load(std::sync::atomic::Ordering::Relaxed)
        {
            break;
        }
    }
    let mut running = inner.pollers.running.lock().expect("pollers lock");
    if let Some(n) = running.get_mut(&mapping.uuid) {
        *n -= 1;
    }
}

fn receive_batch(
    store: &Store,
    mapping: &SourceMapping,
    last_ms: i64,
) -> Option<(ember_store::Queue, Vec<Received>)> {
    let queue = store.queue(&mapping.queue).ok()??;
    let now = now_ms();
    if mapping.window_s > 0 {
        let counts = store.queue_counts(&queue.name, now).ok()?;
        let waited = now - last_ms >= i64::from(mapping.window_s) * 1000;
        if counts.visible < u64::from(mapping.batch_size) && !waited {
            return None;
        }
    }
    let got = store
        .receive(
            &queue,
            mapping.batch_size as usize,
            i64::from(queue.visibility_s) * 1000,
            now,
        )
        .ok()?;
    (!got.is_empty()).then_some((queue, got))
}

/// Batches one poll may run back to back while each comes back full.
const FULL_BATCHES_IN_A_ROW: usize = 16;

/// Runs one batch, if one is ready; whether it was a full batch that was processed.
async fn run_batch(inner: &Arc<Inner>, mapping: &SourceMapping) -> bool {
    let last = inner
        .pollers
        .last
        .lock()
        .expect("pollers lock")
        .get(&mapping.uuid)
        .copied()
        .unwrap_or(0);
    let batch = {
        let store = Arc::clone(&inner.store);
        let m = mapping.clone();
        tokio::task::spawn_blocking(move || receive_batch(&store, &m, last))
            .await
            .ok()
            .flatten()
    };
    let Some((queue, messages)) = batch else {
        return false;
    };
    let full = messages.len() >= mapping.batch_size as usize;
    inner
        .pollers
        .last
        .lock()
        .expect("pollers lock")
        .insert(mapping.uuid.clone(), now_ms());
    let config = inner.dispatcher.config();
    let queue_arn = format!(
        "arn:aws:sqs:{}:{}:{}",
        config.region, config.account, queue.name
    );
    let records: Vec<Value> = messages
        .iter()
        .map(|m| record(m, &queue_arn, &config.region))
        .collect();
    let payload = json!({ "Records": records }).to_string();
    let qualifier = mapping
        .qualifier
        .as_deref()
        .and_then(|q| Qualifier::parse(q).ok());
    let result = inner
        .dispatcher
        .invoke(
            &mapping.function,
            qualifier.as_ref(),
            InvokeRequest {
                payload: Bytes::from(payload),
                wait_for_capacity: Some(crate::CAPACITY_WAIT),
                ..Default::default()
            },
        )
        .await;
    let done: Vec<String> = match result {
        Ok(r) if r.function_error.is_none() => {
            let failed = if mapping.report_failures {
                reported_failures(&r.body).unwrap_or_default()
            } else {
                Vec::new()
            };
            messages
                .iter()
                .filter(|m| !failed.contains(&m.id))
                .map(|m| m.receipt.clone())
                .collect()
        }
        Ok(_) => {
            tracing::warn!(function = %mapping.function, queue = %queue.name, "a batch failed; its messages return after their visibility timeout");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(function = %mapping.function, queue = %queue.name, error = %ember_core::error_chain(&e), "a batch could not run");
            Vec::new()
        }
    };
    if done.is_empty() {
        return false;
    }
    let store = Arc::clone(&inner.store);
    let name = queue.name.clone();
    let deleted = tokio::task::spawn_blocking(move || {
        for receipt in &done {
            store.delete_message(&name, receipt)?;
        }
        Ok::<(), ember_store::StoreError>(())
    })
    .await;
    if !matches!(deleted, Ok(Ok(()))) {
        tracing::error!(queue = %queue.name, "could not delete a processed batch; it will run again");
        return false;
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_failures_are_read_from_the_response() {
        let body =
            br#"{"batchItemFailures": [{"itemIdentifier": "m2"}, {"itemIdentifier": "m5"}]}"#;
        assert_eq!(
            reported_failures(body),
            Some(vec!["m2".into(), "m5".into()])
        );
        assert_eq!(
            reported_failures(br#"{"batchItemFailures": []}"#),
            Some(vec![])
        );
        assert_eq!(reported_failures(br#"{"ok": true}"#), None);
        assert_eq!(reported_failures(b"null"), None);
    }
}
