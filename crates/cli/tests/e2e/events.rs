//! Asynchronous invocations: the durable queue, retries under one request id, destination
//! records, and delivery across a `kill -9` of the server.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use crate::require_sandbox;
use crate::support::{Api, Response, Server, zip_files};

/// Fails its first two attempts of each request id (in one warm environment), then
/// answers; prints each attempt.
const FLAKY: &str = r#"
SEEN = {}

def handler(event, context):
    n = SEEN.get(context.aws_request_id, 0) + 1
    SEEN[context.aws_request_id] = n
    print("ATTEMPT %s %d" % (context.aws_request_id, n))
    if event.get("always_fail") or n <= 2:
        raise RuntimeError("attempt %d fails" % n)
    return {"ok": n}
"#;

/// Prints every event it gets on one line, for the test to read back.
const RECORDER: &str = r#"
import json

def handler(event, context):
    print("RECORD " + json.dumps(event))
"#;

/// Prints the request id, then works a little.
const WORKER: &str = r#"
import time

def handler(event, context):
    print("SEEN %s" % context.aws_request_id)
    time.sleep(event.get("seconds", 0))
"#;

async fn create_python(api: &Api, name: &str, code: &str) {
    let zip = zip_files(&[("app.py", code.as_bytes(), 0o644)]);
    let r = api
        .create(
            name,
            &zip,
            json!({ "Runtime": "python3.11", "Handler": "app.handler", "Timeout": 10 }),
        )
        .await;
    assert_eq!(r.status, 201, "create {name}: {}", r.text());
}

async fn invoke_event(api: &Api, name: &str, payload: Value) -> String {
    let r = api
        .invoke_with(name, payload, &[("x-amz-invocation-type", "Event")])
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r.body.is_empty());
    r.header("x-amzn-requestid").unwrap().to_owned()
}

async fn put_config(api: &Api, name: &str, config: Value) -> Response {
    api.request(
        Method::PUT,
        &format!("/2019-09-25/functions/{name}/event-invoke-config"),
        &[],
        Bytes::from(config.to_string()),
    )
    .await
}

fn arn(name: &str) -> String {
    format!("arn:aws:lambda:us-east-1:000000000000:function:{name}")
}

async fn log(api: &Api, name: &str) -> String {
    api.get(&format!("/ember/v1/functions/{name}/logs?bytes=10000000"))
        .await
        .text()
}

/// Waits (at most `limit`) until the function's log satisfies `done`; returns the log.
async fn wait_log(api: &Api, name: &str, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = log(api, name).await;
        if done(&text) || tokio::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The destination records the recorder printed, by source request id.
fn records(log: &str) -> BTreeMap<String, Value> {
    log.lines()
        .filter_map(|l| l.strip_prefix("RECORD "))
        .map(|r| serde_json::from_str::<Value>(r).unwrap_or_else(|e| panic!("{e}: {r}")))
        .map(|r| {
            let id = r["requestContext"]["requestId"]
                .as_str()
                .unwrap()
                .to_owned();
            (id, r)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_events_keep_their_request_id_and_end_at_their_destination() {
    require_sandbox!();
    let server = Server::start(&["--event-retry-delay", "200ms"]);
    let api = server.api();
    create_python(&api, "flaky", FLAKY).await;
    create_python(&api, "recorder", RECORDER).await;
    // One environment at a time, so every attempt finds the count of the ones before.
    let r = api
        .request(
            Method::PUT,
            "/2017-10-31/functions/flaky/concurrency",
            &[],
            Bytes::from(json!({ "ReservedConcurrentExecutions": 1 }).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Bad settings are refused, each saying what to fix.
    let r = put_config(&api, "flaky", json!({ "MaximumRetryAttempts": 3 })).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = put_config(&api, "flaky", json!({ "MaximumEventAgeInSeconds": 30 })).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let missing = json!({ "DestinationConfig": { "OnSuccess": { "Destination": arn("nope") } } });
    let r = put_config(&api, "flaky", missing).await;
    assert!(
        r.status == 400 && r.text().contains("does not exist"),
        "{}",
        r.text()
    );
    let r = put_config(
        &api,
        "flaky",
        json!({ "DestinationConfig": {
            "OnSuccess": { "Destination": arn("recorder") },
            "OnFailure": { "Destination": arn("recorder") }
        } }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["MaximumRetryAttempts"], 2);
    assert_eq!(r.json()["FunctionArn"], format!("{}:$LATEST", arn("flaky")));

    let payload = json!({ "order": 42 });
    let ok = invoke_event(&api, "flaky", payload.clone()).await;
    let failing = invoke_event(&api, "flaky", json!({ "always_fail": true })).await;
    let recorded = wait_log(&api, "recorder", Duration::from_secs(30), |l| {
        records(l).len() >= 2
    })
    .await;
    let records = records(&recorded);

    // Failed twice, then succeeded: three runs under one request id, then OnSuccess.
    let flaky_log = log(&api, "flaky").await;
    for n in 1..=3 {
        assert!(
            flaky_log.contains(&format!("ATTEMPT {ok} {n}")),
            "{flaky_log}"
        );
    }
    assert_eq!(
        flaky_log
            .matches(&format!("START RequestId: {ok} "))
            .count(),
        3
    );
    let success = &records[&ok];
    assert_eq!(success["version"], "1.0");
    assert_eq!(success["requestContext"]["condition"], "Success");
    assert_eq!(success["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(
        success["requestContext"]["functionArn"],
        format!("{}:$LATEST", arn("flaky"))
    );
    assert_eq!(success["requestPayload"], payload);
    assert_eq!(success["responseContext"]["statusCode"], 200);
    assert_eq!(success["responseContext"]["executedVersion"], "$LATEST");
    assert_eq!(success["responsePayload"], json!({ "ok": 3 }));

    // Always failing: the first run and two retries, then OnFailure with the last error.
    assert_eq!(
        flaky_log
            .matches(&format!("START RequestId: {failing} "))
            .count(),
        3
    );
    let failure = &records[&failing];
    assert_eq!(failure["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(failure["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(failure["responseContext"]["functionError"], "Handled");
    assert_eq!(failure["responsePayload"]["errorType"], "RuntimeError");
    assert_eq!(
        failure["responsePayload"]["errorMessage"],
        "attempt 3 fails"
    );
    assert_eq!(failure["requestPayload"], json!({ "always_fail": true }));

    // What is left shows: the failed event, nothing queued or running.
    let events = api.get("/ember/v1/events").await.json();
    let flaky = events["Functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["Function"] == "flaky")
        .unwrap_or_else(|| panic!("{events}"));
    assert_eq!(
        (&flaky["Queued"], &flaky["Running"], &flaky["Failed"]),
        (&json!(0), &json!(0), &json!(1)),
        "{flaky}"
    );
    let (code, out, err) = crate::support::cli(&server.url, &["events"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("flaky ")), "{out}");
    match crate::scaling::parser_unavailable() {
        Some(why) => eprintln!("the /metrics part is skipped: {why}"),
        None => {
            let samples = crate::scaling::scrape(&api).await;
            let failed = [("function", "flaky"), ("state", "failed")];
            assert_eq!(
                crate::scaling::sample(&samples, "ember_events", &failed),
                1.0
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_delivered_at_least_once_across_a_kill_9_of_the_server() {
    require_sandbox!();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut server = Server::start_in(&data, &[]);
    let api = server.api();
    create_python(&api, "worker", WORKER).await;
    // Two at a time, so most of the events are still queued when the server dies.
    let r = api
        .request(
            Method::PUT,
            "/2017-10-31/functions/worker/concurrency",
            &[],
            Bytes::from(json!({ "ReservedConcurrentExecutions": 2 }).to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(invoke_event(&api, "worker", json!({ "i": i, "seconds": 0.2 })).await);
    }
    // Some have run, some are running, the rest are queued: kill the server outright.
    wait_log(&api, "worker", Duration::from_secs(30), |l| {
        l.matches("SEEN ").count() >= 3
    })
    .await;
    server.kill();
    let before = std::fs::read_dir(&data).is_ok();
    assert!(before);

    let server = Server::start_in(&data, &[]);
    let api = server.api();
    let all = wait_log(&api, "worker", Duration::from_secs(60), |l| {
        ids.iter().all(|id| l.contains(&format!("SEEN {id}")))
    })
    .await;
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !all.contains(&format!("SEEN {id}")))
        .collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
}

/// Prints the scheduled time of each scheduled event it gets.
const TICKER: &str = r#"
def handler(event, context):
    print("TICK %s %s" % (event["time"], event["detail-type"]))
"#;

/// An EventBridge JSON-protocol call.
async fn events_call(api: &Api, operation: &str, body: Value) -> Response {
    let target = format!("AWSEvents.{operation}");
    api.request(
        Method::POST,
        "/",
        &[
            ("x-amz-target", target.as_str()),
            ("content-type", "application/x-amz-json-1.1"),
        ],
        Bytes::from(body.to_string()),
    )
    .await
}

/// Epoch seconds of `2026-11-22T17:00:02Z`.
fn epoch_seconds(time: &str) -> i64 {
    let n = |range: std::ops::Range<usize>| time[range].parse::<i64>().unwrap();
    let days = ember_core::time::days_from_civil(n(0..4), n(5..7) as u32, n(8..10) as u32);
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// The scheduled times in a ticker's log, in order of arrival.
fn ticks(log: &str) -> Vec<i64> {
    log.lines()
        .filter_map(|l| l.strip_prefix("TICK "))
        .map(|l| {
            let (time, kind) = l.split_once(' ').unwrap();
            assert_eq!(kind, "Scheduled Event");
            epoch_seconds(time)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_every_period_and_once_for_what_it_missed_while_down() {
    require_sandbox!();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut server = Server::start_in(&data, &[]);
    let api = server.api();
    create_python(&api, "ticker", TICKER).await;
    let bad = events_call(
        &api,
        "PutRule",
        json!({ "Name": "bad", "ScheduleExpression": "cron(0 12 * * * *)" }),
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["__type"], "ValidationException");
    let r = events_call(
        &api,
        "PutRule",
        json!({ "Name": "every2s", "ScheduleExpression": "rate(2 seconds)" }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["RuleArn"],
        "arn:aws:events:us-east-1:000000000000:rule/every2s"
    );
    let r = events_call(
        &api,
        "PutTargets",
        json!({ "Rule": "every2s", "Targets": [
            { "Id": "t", "Arn": arn("ticker") },
            { "Id": "nope", "Arn": arn("missing") }
        ] }),
    )
    .await;
    assert_eq!(r.json()["FailedEntryCount"], 1, "{}", r.text());

    // Three firings, each for the next 2-second slot.
    let first = ticks(
        &wait_log(&api, "ticker", Duration::from_secs(20), |l| {
            ticks(l).len() >= 3
        })
        .await,
    );
    assert!(first.len() >= 3, "{first:?}");
    for pair in first.windows(2) {
        assert_eq!(pair[1] - pair[0], 2, "not every period: {first:?}");
    }

    // Down for 5 s (two or three slots): the missed firings collapse into one at the
    // restart, whose time may fall just before or just after the restart. A tick names
    // its slot to the second, so only ticks whose whole second lies inside the outage
    // are counted as fired for it.
    server.stop();
    let wall_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let stopped = wall_ms();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted = wall_ms();
    let server = Server::start_in(&data, &[]);
    let api = server.api();
    let log = wait_log(&api, "ticker", Duration::from_secs(20), |l| {
        ticks(l).iter().filter(|t| **t * 1000 > restarted).count() >= 2
    })
    .await;
    let during: Vec<i64> = ticks(&log)
        .into_iter()
        .filter(|t| *t * 1000 > stopped && (*t + 1) * 1000 <= restarted)
        .collect();
    assert!(
        during.len() <= 1,
        "missed slots fired one by one: {during:?}"
    );
    let later: Vec<i64> = ticks(&log)
        .into_iter()
        .filter(|t| *t * 1000 > restarted)
        .collect();
    assert!(later.len() >= 2, "{later:?}");
    let all = ticks(&log);
    let mut sorted = all.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), all.len(), "a time fired twice: {all:?}");
}

/// Waits until none of `function`'s events is queued or running.
async fn drained(api: &Api, function: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = api.get("/ember/v1/events").await.json();
        let left: u64 = events["Functions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["Function"] == function)
            .map(|f| {
                ["Queued", "Retrying", "Running"]
                    .iter()
                    .map(|k| f[*k].as_u64().unwrap())
                    .sum::<u64>()
            })
            .sum();
        if left == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn published_events_reach_only_the_rules_whose_pattern_they_match() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    create_python(&api, "big-orders", RECORDER).await;
    create_python(&api, "all-shop", RECORDER).await;
    let pattern = json!({
        "source": ["shop.orders"],
        "detail": { "total": [{ "numeric": [">", 100] }], "state": [{ "anything-but": "TEST" }] }
    });
    for (rule, pattern, target) in [
        ("big", pattern.to_string(), "big-orders"),
        (
            "shop",
            json!({ "source": [{ "prefix": "shop." }] }).to_string(),
            "all-shop",
        ),
    ] {
        let r = events_call(
            &api,
            "PutRule",
            json!({ "Name": rule, "EventPattern": pattern }),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = events_call(
            &api,
            "PutTargets",
            json!({ "Rule": rule, "Targets": [{ "Id": "1", "Arn": arn(target) }] }),
        )
        .await;
        assert_eq!(r.json()["FailedEntryCount"], 0, "{}", r.text());
    }
    let bad = events_call(
        &api,
        "PutRule",
        json!({ "Name": "bad", "EventPattern": json!({ "source": "x" }).to_string() }),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.text());

    let entry = |source: &str, total: f64, state: &str| {
        json!({
            "Source": source,
            "DetailType": "Order Placed",
            "Detail": json!({ "total": total, "state": state }).to_string(),
        })
    };
    let r = events_call(
        &api,
        "PutEvents",
        json!({ "Entries": [
            entry("shop.orders", 250.0, "NEW"),   // both rules
            entry("shop.orders", 20.0, "NEW"),    // shop only: too small
            entry("shop.orders", 500.0, "TEST"),  // shop only: a test order
            entry("bank.payments", 900.0, "NEW"), // neither
            { "Source": "shop.orders", "DetailType": "Order Placed", "Detail": "not json" },
        ] }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(out["FailedEntryCount"], 1, "{out}");
    assert!(out["Entries"][0]["EventId"].is_string());
    assert_eq!(out["Entries"][4]["ErrorCode"], "InvalidArgument");

    drained(&api, "big-orders").await;
    drained(&api, "all-shop").await;
    let totals = |log: String| -> Vec<f64> {
        let mut t: Vec<f64> = log
            .lines()
            .filter_map(|l| l.strip_prefix("RECORD "))
            .map(|r| serde_json::from_str::<Value>(r).unwrap())
            .map(|e| {
                assert_eq!(e["detail-type"], "Order Placed");
                e["detail"]["total"].as_f64().unwrap()
            })
            .collect();
        t.sort_by(f64::total_cmp);
        t
    };
    assert_eq!(totals(log(&api, "big-orders").await), [250.0]);
    assert_eq!(totals(log(&api, "all-shop").await), [20.0, 250.0, 500.0]);
}

/// Reports the records whose body starts with "fail" as failed on their first receive.
const BATCHER: &str = r#"
def handler(event, context):
    failures = []
    for r in event["Records"]:
        count = int(r["attributes"]["ApproximateReceiveCount"])
        print("GOT %s %d %s" % (r["body"], count, r["eventSource"]))
        if r["body"].startswith("fail") and count == 1:
            failures.append({"itemIdentifier": r["messageId"]})
    return {"batchItemFailures": failures}
"#;

async fn sqs_call(api: &Api, operation: &str, body: Value) -> Value {
    let target = format!("AmazonSQS.{operation}");
    let r = api
        .request(
            Method::POST,
            "/",
            &[
                ("x-amz-target", target.as_str()),
                ("content-type", "application/x-amz-json-1.0"),
            ],
            Bytes::from(body.to_string()),
        )
        .await;
    assert_eq!(r.status, 200, "{operation}: {}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_mapping_retries_only_the_records_reported_as_failed() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    create_python(&api, "batcher", BATCHER).await;
    let url = sqs_call(
        &api,
        "CreateQueue",
        json!({ "QueueName": "work", "Attributes": { "VisibilityTimeout": "1" } }),
    )
    .await["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let entries: Vec<Value> = ["ok1", "ok2", "fail1", "fail2"]
        .iter()
        .map(|b| json!({ "Id": b, "MessageBody": b }))
        .collect();
    let sent = sqs_call(
        &api,
        "SendMessageBatch",
        json!({ "QueueUrl": url, "Entries": entries }),
    )
    .await;
    assert_eq!(sent["Successful"].as_array().unwrap().len(), 4);

    let bad = api
        .request(
            Method::POST,
            "/2015-03-31/event-source-mappings",
            &[],
            Bytes::from(json!({ "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:nope", "FunctionName": "batcher" }).to_string()),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let r = api
        .request(
            Method::POST,
            "/2015-03-31/event-source-mappings",
            &[],
            Bytes::from(
                json!({
                    "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:work",
                    "FunctionName": "batcher",
                    "BatchSize": 10,
                    "FunctionResponseTypes": ["ReportBatchItemFailures"]
                })
                .to_string(),
            ),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.text());
    let uuid = r.json()["UUID"].as_str().unwrap().to_owned();
    assert_eq!(r.json()["State"], "Enabled");

    wait_log(&api, "batcher", Duration::from_secs(30), |l| {
        l.contains("GOT fail1 2") && l.contains("GOT fail2 2")
    })
    .await;
    // Wait until the retried records are deleted too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let a = sqs_call(
            &api,
            "GetQueueAttributes",
            json!({ "QueueUrl": url, "AttributeNames": ["All"] }),
        )
        .await;
        let left = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
        ]
        .iter()
        .map(|k| {
            a["Attributes"][*k]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum::<u64>();
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{a}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = log(&api, "batcher").await;
    for ok in ["ok1", "ok2"] {
        assert_eq!(
            seen.matches(&format!("GOT {ok} ")).count(),
            1,
            "{ok} ran again:\n{seen}"
        );
    }
    for failed in ["fail1", "fail2"] {
        assert_eq!(
            seen.matches(&format!("GOT {failed} ")).count(),
            2,
            "{failed}:\n{seen}"
        );
    }
    assert!(seen.contains("GOT ok1 1 aws:sqs"));

    // The queue's depth is in /metrics: empty now.
    match crate::scaling::parser_unavailable() {
        Some(why) => eprintln!("the /metrics part is skipped: {why}"),
        None => {
            let samples = crate::scaling::scrape(&api).await;
            let visible = [("queue", "work"), ("state", "visible")];
            assert!(
                samples.iter().any(|s| s["name"] == "ember_queue_messages"
                    && s["labels"]["queue"] == "work"
                    && s["labels"]["state"] == "visible"),
                "no depth for the queue in /metrics"
            );
            assert_eq!(
                crate::scaling::sample(&samples, "ember_queue_messages", &visible),
                0.0
            );
        }
    }
    let listed = api
        .get("/2015-03-31/event-source-mappings?FunctionName=batcher")
        .await
        .json();
    assert_eq!(listed["EventSourceMappings"][0]["UUID"], uuid.as_str());
    let gone = api
        .request(
            Method::DELETE,
            &format!("/2015-03-31/event-source-mappings/{uuid}"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(gone.status, 202);
}

fn queue_arn(name: &str) -> String {
    format!("arn:aws:sqs:us-east-1:000000000000:{name}")
}

/// The body of the next message of a queue, waiting up to 20 s for one.
async fn next_message(api: &Api, url: &str) -> Value {
    let got = sqs_call(
        api,
        "ReceiveMessage",
        json!({ "QueueUrl": url, "WaitTimeSeconds": 20 }),
    )
    .await;
    let body = got["Messages"][0]["Body"]
        .as_str()
        .unwrap_or_else(|| panic!("no message in {url}: {got}"));
    serde_json::from_str(body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn destinations_can_be_queues_and_the_bus_and_rules_can_target_queues() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    create_python(&api, "boom", FLAKY).await;
    create_python(&api, "fine", RECORDER).await;
    let mut urls = Vec::new();
    for q in ["failed", "results", "dead"] {
        let created = sqs_call(&api, "CreateQueue", json!({ "QueueName": q })).await;
        urls.push(created["QueueUrl"].as_str().unwrap().to_owned());
    }
    let bus = "arn:aws:events:us-east-1:000000000000:event-bus/default";
    // A dead-letter queue on the function itself; an unknown one is refused.
    let bad = api
        .update_configuration(
            "boom",
            json!({ "DeadLetterConfig": { "TargetArn": queue_arn("nowhere") } }),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let r = api
        .update_configuration(
            "boom",
            json!({ "DeadLetterConfig": { "TargetArn": queue_arn("dead") } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["DeadLetterConfig"]["TargetArn"], queue_arn("dead"));
    let r = put_config(
        &api,
        "boom",
        json!({ "MaximumRetryAttempts": 0, "DestinationConfig": { "OnFailure": { "Destination": queue_arn("failed") } } }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put_config(
        &api,
        "fine",
        json!({ "DestinationConfig": { "OnSuccess": { "Destination": bus } } }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = put_config(
        &api,
        "fine",
        json!({ "DestinationConfig": { "OnSuccess": { "Destination": queue_arn("absent") } } }),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let pattern = json!({ "source": ["lambda"], "detail-type": [{ "prefix": "Lambda Function Invocation Result" }] });
    let r = events_call(
        &api,
        "PutRule",
        json!({ "Name": "results", "EventPattern": pattern.to_string() }),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = events_call(
        &api,
        "PutTargets",
        json!({ "Rule": "results", "Targets": [{ "Id": "q", "Arn": queue_arn("results") }] }),
    )
    .await;
    assert_eq!(r.json()["FailedEntryCount"], 0, "{}", r.text());

    let failing = invoke_event(&api, "boom", json!({ "always_fail": true })).await;
    let record = next_message(&api, &urls[0]).await;
    assert_eq!(record["requestContext"]["requestId"], failing.as_str());
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(record["responseContext"]["functionError"], "Handled");
    // The dead-letter queue gets the event itself.
    assert_eq!(
        next_message(&api, &urls[2]).await,
        json!({ "always_fail": true })
    );

    let fine = invoke_event(&api, "fine", json!({ "n": 1 })).await;
    let event = next_message(&api, &urls[1]).await;
    assert_eq!(event["source"], "lambda");
    assert_eq!(
        event["detail-type"],
        "Lambda Function Invocation Result - Success"
    );
    assert_eq!(
        event["detail"]["requestContext"]["requestId"],
        fine.as_str()
    );
    assert_eq!(event["detail"]["requestContext"]["condition"], "Success");
    assert_eq!(event["detail"]["requestPayload"], json!({ "n": 1 }));
}
