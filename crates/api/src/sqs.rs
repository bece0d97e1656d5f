//! Queues over SQS's JSON protocol (`POST /` with `X-Amz-Target: AmazonSQS.<Operation>`):
//! `CreateQueue`, `GetQueueUrl`, `ListQueues`, `SendMessage`, `SendMessageBatch`,
//! `ReceiveMessage` (visibility timeout, long polling), `DeleteMessage`,
//! `DeleteMessageBatch`, `ChangeMessageVisibility`, `GetQueueAttributes`, `PurgeQueue`,
//! `DeleteQueue`, and a redrive policy to a dead-letter queue after `maxReceiveCount`.
//!
//! A queue's URL is `http://HOST/ACCOUNT/NAME`; its ARN `arn:aws:sqs:REGION:ACCOUNT:NAME`.

use std::time::Duration;

use axum::http::HeaderMap;
use ember_events::md5_hex;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{ApiError, Registry};

/// Longest message, as on SQS.
const MESSAGE_BYTES: usize = 256 * 1024;

fn no_queue(name: &str) -> ApiError {
    ApiError::Queue {
        kind: "QueueDoesNotExist",
        code: "AWS.SimpleQueueService.NonExistentQueue",
        message: format!("The specified queue does not exist: {name}"),
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::Queue {
        kind: "InvalidParameterValue",
        code: "InvalidParameterValue",
        message: message.into(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| invalid(format!("the request is not valid: {e}")))
}

fn queue_url(headers: &HeaderMap, account: &str, name: &str) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:9000");
    format!("http://{host}/{account}/{name}")
}

/// The queue a `QueueUrl` names (its last path segment).
fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

fn attribute(
    attrs: &Map<String, Value>,
    name: &str,
    range: (u32, u32),
    default: u32,
) -> Result<u32, ApiError> {
    match attrs.get(name) {
        None => Ok(default),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse().ok())
            .filter(|n| (range.0..=range.1).contains(n))
            .ok_or_else(|| {
                invalid(format!(
                    "{name} must be a number from {} to {} (got {v})",
                    range.0, range.1
                ))
            }),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateIn {
    queue_name: String,
    #[serde(default)]
    attributes: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct QueueIn {
    queue_url: Option<String>,
    queue_name: Option<String>,
    queue_name_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendIn {
    queue_url: String,
    message_body: Option<String>,
    delay_seconds: Option<u32>,
    #[serde(default)]
    entries: Vec<SendEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendEntry {
    id: String,
    message_body: String,
    delay_seconds: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveIn {
    queue_url: String,
    max_number_of_messages: Option<u32>,
    visibility_timeout: Option<u32>,
    wait_time_seconds: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiptIn {
    queue_url: String,
    receipt_handle: Option<String>,
    visibility_timeout: Option<u32>,
    #[serde(default)]
    entries: Vec<ReceiptEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiptEntry {
    id: String,
    receipt_handle: String,
}

/// What a receive asks for, checked; the long-poll wait happens in [`receive`].
pub(crate) struct ReceiveRequest {
    queue: ember_store::Queue,
    max: usize,
    visibility_ms: i64,
    wait: Duration,
}

/// Runs one operation that does not wait. `ReceiveMessage` is only checked here and
/// returned for [`receive`].
pub(crate) fn operation(
    registry: &Registry,
    headers: &HeaderMap,
    op: &str,
    body: &[u8],
) -> Result<Result<Value, ReceiveRequest>, ApiError> {
    let store = registry.store();
    let config = registry.dispatcher().config();
    let now = ember_events::now_ms();
    let existing = |url: &str| -> Result<ember_store::Queue, ApiError> {
        let name = queue_name(url);
        store.queue(name)?.ok_or_else(|| no_queue(name))
    };
    let out = match op {
        "CreateQueue" => {
            let input: CreateIn = parse(body)?;
            let name = input.queue_name;
            let valid = (1..=80).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(invalid(format!(
                    "queue name {name:?} must be 1 to 80 letters, digits, '-' or '_' (FIFO queues are not supported)"
                )));
            }
            let a = &input.attributes;
            let dead_letter = match a.get("RedrivePolicy").and_then(Value::as_str) {
                None => None,
                Some(policy) => {
                    let policy: Value = serde_json::from_str(policy)
                        .map_err(|_| invalid("RedrivePolicy must be a JSON document"))?;
                    let target = policy["deadLetterTargetArn"].as_str().unwrap_or("");
                    let dlq = target.rsplit(':').next().unwrap_or("").to_owned();
                    let max = policy["maxReceiveCount"]
                        .as_u64()
                        .or_else(|| policy["maxReceiveCount"].as_str()?.parse().ok())
                        .filter(|n| (1..=1000).contains(n))
                        .ok_or_else(|| {
                            invalid("RedrivePolicy.maxReceiveCount must be from 1 to 1000")
                        })?;
                    store.queue(&dlq)?.ok_or_else(|| no_queue(target))?;
                    Some((dlq, max as u32))
                }
            };
            let queue = ember_store::Queue {
                name: name.clone(),
                created_ms: now,
                visibility_s: attribute(a, "VisibilityTimeout", (0, 43_200), 30)?,
                retention_s: attribute(a, "MessageRetentionPeriod", (60, 1_209_600), 345_600)?,
                delay_s: attribute(a, "DelaySeconds", (0, 900), 0)?,
                wait_s: attribute(a, "ReceiveMessageWaitTimeSeconds", (0, 20), 0)?,
                dead_letter,
            };
            if !store.create_queue(&queue)? {
                let old = store.queue(&name)?.ok_or_else(|| no_queue(&name))?;
                let same = ember_store::Queue {
                    created_ms: old.created_ms,
                    ..queue.clone()
                } == old;
                if !same && !a.is_empty() {
                    return Err(ApiError::Queue {
                        kind: "QueueNameExists",
                        code: "QueueAlreadyExists",
                        message: format!("A queue named {name} exists with different attributes"),
                    });
                }
            }
            json!({ "QueueUrl": queue_url(headers, &config.account, &name) })
        }
        "GetQueueUrl" => {
            let input: QueueIn = parse(body)?;
            let name = input.queue_name.unwrap_or_default();
            store.queue(&name)?.ok_or_else(|| no_queue(&name))?;
            json!({ "QueueUrl": queue_url(headers, &config.account, &name) })
        }
        "ListQueues" => {
            let input: QueueIn = parse(body)?;
            let urls: Vec<String> = store
                .queues()?
                .iter()
                .filter(|q| {
                    input
                        .queue_name_prefix
                        .as_deref()
                        .is_none_or(|p| q.name.starts_with(p))
                })
                .map(|q| queue_url(headers, &config.account, &q.name))
                .collect();
            json!({ "QueueUrls": urls })
        }
        "DeleteQueue" | "PurgeQueue" => {
            let input: QueueIn = parse(body)?;
            let q = existing(input.queue_url.as_deref().unwrap_or(""))?;
            if op == "DeleteQueue" {
                store.delete_queue(&q.name)?;
            } else {
                store.purge_queue(&q.name)?;
            }
            json!({})
        }
        "GetQueueAttributes" => {
            let input: QueueIn = parse(body)?;
            let q = existing(input.queue_url.as_deref().unwrap_or(""))?;
            let counts = store.queue_counts(&q.name, now)?;
            let mut attrs = json!({
                "QueueArn": format!("arn:aws:sqs:{}:{}:{}", config.region, config.account, q.name),
                "ApproximateNumberOfMessages": counts.visible.to_string(),
                "ApproximateNumberOfMessagesNotVisible": counts.in_flight.to_string(),
                "ApproximateNumberOfMessagesDelayed": counts.delayed.to_string(),
                "VisibilityTimeout": q.visibility_s.to_string(),
                "MessageRetentionPeriod": q.retention_s.to_string(),
                "DelaySeconds": q.delay_s.to_string(),
                "ReceiveMessageWaitTimeSeconds": q.wait_s.to_string(),
                "CreatedTimestamp": (q.created_ms / 1000).to_string(),
            });
            if let Some((dlq, max)) = &q.dead_letter {
                attrs["RedrivePolicy"] = json!({
                    "deadLetterTargetArn": format!("arn:aws:sqs:{}:{}:{dlq}", config.region, config.account),
                    "maxReceiveCount": max,
                })
                .to_string()
                .into();
            }
            json!({ "Attributes": attrs })
        }
        "SendMessage" | "SendMessageBatch" => {
            let input: SendIn = parse(body)?;
            let q = existing(&input.queue_url)?;
            let entries: Vec<SendEntry> = if op == "SendMessage" {
                vec![SendEntry {
                    id: String::new(),
                    message_body: input
                        .message_body
                        .ok_or_else(|| invalid("MessageBody is required"))?,
                    delay_seconds: input.delay_seconds,
                }]
            } else {
                if input.entries.is_empty() || input.entries.len() > 10 {
                    return Err(invalid("a batch has 1 to 10 entries"));
                }
                input.entries
            };
            let mut rows = Vec::new();
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for e in entries {
                let delay = e.delay_seconds.unwrap_or(q.delay_s);
                if e.message_body.is_empty() || e.message_body.len() > MESSAGE_BYTES || delay > 900
                {
                    if op == "SendMessage" {
                        return Err(invalid(format!(
                            "a message body is 1 byte to {MESSAGE_BYTES} bytes and a delay at most 900 s"
                        )));
                    }
                    failed.push(json!({ "Id": e.id, "SenderFault": true, "Code": "InvalidParameterValue",
                        "Message": "a message body is 1 byte to 256 KB and a delay at most 900 s" }));
                    continue;
                }
                let id = uuid::Uuid::new_v4().to_string();
                done.push(json!({ "Id": e.id, "MessageId": id, "MD5OfMessageBody": md5_hex(&e.message_body) }));
                rows.push((id, e.message_body, now + i64::from(delay) * 1000));
            }
            store.send_messages(&q.name, &rows, now)?;
            if op == "SendMessage" {
                let mut one = done.remove(0);
                one.as_object_mut().map(|o| o.remove("Id"));
                one
            } else {
                json!({ "Successful": done, "Failed": failed })
            }
        }
        "ReceiveMessage" => {
            let input: ReceiveIn = parse(body)?;
            let q = existing(&input.queue_url)?;
            let max = input.max_number_of_messages.unwrap_or(1);
            if !(1..=10).contains(&max) {
                return Err(invalid("MaxNumberOfMessages must be from 1 to 10"));
            }
            let wait = input.wait_time_seconds.unwrap_or(q.wait_s);
            if wait > 20 {
                return Err(invalid("WaitTimeSeconds must be from 0 to 20"));
            }
            let visibility = input.visibility_timeout.unwrap_or(q.visibility_s);
            return Ok(Err(ReceiveRequest {
                queue: q,
                max: max as usize,
                visibility_ms: i64::from(visibility) * 1000,
                wait: Duration::from_secs(u64::from(wait)),
            }));
        }
        "DeleteMessage" | "ChangeMessageVisibility" => {
            let input: ReceiptIn = parse(body)?;
            let q = existing(&input.queue_url)?;
            let receipt = input.receipt_handle.unwrap_or_default();
            let found = if op == "DeleteMessage" {
                store.delete_message(&q.name, &receipt)?
            } else {
                let visible_at = now + i64::from(input.visibility_timeout.unwrap_or(0)) * 1000;
                store.change_visibility(&q.name, &receipt, visible_at)?
            };
            if !found {
                return Err(ApiError::Queue {
                    kind: "ReceiptHandleIsInvalid",
                    code: "ReceiptHandleIsInvalid",
                    message: "The receipt handle is not the message's latest (it was received again or deleted)".into(),
                });
            }
            json!({})
        }
        "DeleteMessageBatch" => {
            let input: ReceiptIn = parse(body)?;
            let q = existing(&input.queue_url)?;
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for e in input.entries {
                if store.delete_message(&q.name, &e.receipt_handle)? {
                    done.push(json!({ "Id": e.id }));
                } else {
                    failed.push(
                        json!({ "Id": e.id, "SenderFault": true, "Code": "ReceiptHandleIsInvalid",
                        "Message": "The receipt handle is not the message's latest" }),
                    );
                }
            }
            json!({ "Successful": done, "Failed": failed })
        }
        other => {
            return Err(ApiError::UnknownOperation {
                method: "POST".into(),
                path: format!("/ (X-Amz-Target: AmazonSQS.{other})"),
            });
        }
    };
    Ok(Ok(out))
}

/// `ReceiveMessage`: what is visible now, or, with a wait, the first messages to become
/// visible within it.
pub(crate) async fn receive(
    registry: std::sync::Arc<Registry>,
    request: ReceiveRequest,
) -> Result<Value, ApiError> {
    let deadline = tokio::time::Instant::now() + request.wait;
    let request = std::sync::Arc::new(request);
    loop {
        let r = std::sync::Arc::clone(&request);
        let got = crate::functions::blocking(&registry, move |reg| {
            Ok(reg
                .store()
                .receive(&r.queue, r.max, r.visibility_ms, ember_events::now_ms())?)
        })
        .await?;
        if !got.is_empty() || tokio::time::Instant::now() >= deadline {
            let messages: Vec<Value> = got
                .iter()
                .map(|m| {
                    json!({
                        "MessageId": m.id,
                        "ReceiptHandle": m.receipt,
                        "MD5OfBody": md5_hex(&m.body),
                        "Body": m.body,
                        "Attributes": {
                            "ApproximateReceiveCount": m.receive_count.to_string(),
                            "SentTimestamp": m.sent_ms.to_string(),
                            "ApproximateFirstReceiveTimestamp": m.first_receive_ms.to_string(),
                        },
                    })
                })
                .collect();
            return Ok(if messages.is_empty() {
                json!({})
            } else {
                json!({ "Messages": messages })
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_and_queue_names_are_what_the_sdks_expect() {
        assert_eq!(md5_hex("hello"), "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(
            queue_name("http://127.0.0.1:9000/000000000000/jobs"),
            "jobs"
        );
        assert_eq!(queue_name("http://h/000000000000/jobs/"), "jobs");
    }
}
