//! Deploy, invoke, warm reuse, scaling out, reclaim, retire, restart.

use std::time::Duration;

use serde_json::json;

use crate::support::{Server, provided_zip};
use crate::{require_backend, require_sandbox};

#[tokio::test(flavor = "multi_thread")]
async fn python_function_deploys_and_answers_with_lambda_context() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen(
        "hello",
        json!({ "Environment": { "Variables": { "GREETING": "hi" } }, "MemorySize": 256 }),
    )
    .await;
    let r = api.invoke("hello", json!({ "name": "Ember" })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-amz-executed-version"), Some("$LATEST"));
    assert_eq!(r.header("x-amz-function-error"), None);
    let body = r.json();
    assert_eq!(body["event"], json!({ "name": "Ember" }));
    assert_eq!(body["greeting"], "hi");
    assert_eq!(body["function_name"], "hello");
    assert_eq!(body["memory"], "256");
    assert_eq!(
        body["arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:hello"
    );
    assert_eq!(body["task_root"], "/var/task");
    assert_eq!(body["runtime_api"], "127.0.0.1:9001");
    assert_eq!(body["request_id"].as_str(), r.header("x-amzn-requestid"));
    // The client context reaches the handler, decoded.
    let context = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        r#"{"custom": {"k": "v\nw"}}"#,
    );
    let r = api
        .invoke_with("hello", json!({}), &[("x-amz-client-context", &context)])
        .await;
    assert_eq!(
        r.json()["client_context"],
        json!({ "custom": { "k": "v\nw" } }),
        "{}",
        r.text()
    );
    let remaining = body["remaining_ms"].as_u64().unwrap();
    assert!(
        remaining > 2000 && remaining <= 3000,
        "remaining {remaining}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn provided_function_runs_its_own_bootstrap() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    let r = api
        .create(
            "custom",
            &provided_zip(),
            json!({ "Runtime": "provided.al2023", "Handler": "my.handler" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["Runtime"], "provided.al2023");
    let r = api.invoke("custom", json!({ "n": 1 })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({ "echo": { "n": 1 }, "count": 1, "handler": "my.handler" })
    );
    // The runtime's own error report is a handled function error.
    let r = api.invoke("custom", json!({ "fail": true })).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Handled"));
    assert_eq!(r.json()["errorType"], "CustomError");
    // The same process answers again.
    assert_eq!(api.invoke("custom", json!({})).await.json()["count"], 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn second_call_reuses_the_warm_environment_without_init_duration() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("warm", json!({})).await;
    let first = api.invoke_tail("warm", json!({})).await;
    let second = api.invoke_tail("warm", json!({})).await;
    assert_eq!(
        first.json()["env_id"],
        second.json()["env_id"],
        "a new environment was started"
    );
    assert_eq!(
        second.json()["count"],
        2,
        "module-level state did not survive"
    );
    let (cold_log, warm_log) = (first.log_tail(), second.log_tail());
    assert!(cold_log.contains("Init Duration: "), "{cold_log}");
    assert!(!warm_log.contains("Init Duration"), "{warm_log}");
    for log in [&cold_log, &warm_log] {
        assert!(log.starts_with("START RequestId: "), "{log}");
        assert!(log.contains("END RequestId: "), "{log}");
        assert!(
            log.contains("\tBilled Duration: ") && log.contains("\tMax Memory Used: "),
            "{log}"
        );
    }
    assert_eq!(api.environments("warm").await, (1, 0));
    // Ember's own endpoints take ARNs too.
    let arn = "arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Awarm";
    let r = api
        .get(&format!("/ember/v1/functions/{arn}/environments"))
        .await;
    assert_eq!(r.json()["Idle"], 1, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_get_separate_environments() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("busy", json!({})).await;
    let sleep = json!({ "action": "sleep", "seconds": 0.5 });
    let (a, b) = tokio::join!(
        api.invoke("busy", sleep.clone()),
        api.invoke("busy", sleep.clone())
    );
    assert_eq!((a.status, b.status), (200, 200));
    // Sleeping returns the default document; each environment has its own id.
    assert_ne!(a.json()["env_id"], b.json()["env_id"]);
    assert_eq!(api.environments("busy").await, (2, 0));
    // Sequential calls then keep to the most recently used environment, leaving the other
    // to go cold (least recently used first would alternate between them).
    let first = api.invoke("busy", json!({})).await.json()["env_id"].clone();
    for _ in 0..3 {
        assert_eq!(api.invoke("busy", json!({})).await.json()["env_id"], first);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_environment_idle_past_its_keep_alive_is_reclaimed_and_the_next_call_starts_cold() {
    require_sandbox!();
    let server = Server::start(&["--keep-alive", "300ms"]);
    let api = server.api();
    api.create_kitchen("short", json!({})).await;
    let first = api.invoke("short", json!({})).await.json();
    let counts = api
        .wait_environments("short", Duration::from_secs(10), |(idle, _)| idle == 0)
        .await;
    assert_eq!(counts, (0, 0), "the idle environment was not reclaimed");
    let again = api.invoke_tail("short", json!({})).await;
    assert_ne!(again.json()["env_id"], first["env_id"]);
    assert!(again.log_tail().contains("Init Duration"));
}

#[tokio::test(flavor = "multi_thread")]
async fn changing_the_configuration_retires_old_environments() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen(
        "cfg",
        json!({ "Environment": { "Variables": { "GREETING": "one" } } }),
    )
    .await;
    let before = api.invoke("cfg", json!({})).await.json();
    assert_eq!(before["greeting"], "one");
    let r = api
        .update_configuration(
            "cfg",
            json!({ "Environment": { "Variables": { "GREETING": "two" } } }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = api.invoke("cfg", json!({})).await.json();
    assert_eq!(after["greeting"], "two");
    assert_ne!(after["env_id"], before["env_id"]);
    let counts = api
        .wait_environments("cfg", Duration::from_secs(5), |c| c == (1, 0))
        .await;
    assert_eq!(counts, (1, 0), "the retired environment is still counted");
    // Once the server says nothing is being torn down, only the new environment is left.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = api.get("/ember/v1/stats").await.json();
        if stats["EnvironmentsDestroying"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still destroying after 10 s: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(server.environment_cgroups(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_during_an_invocation_retires_that_environment_when_it_finishes() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("mid", json!({ "Timeout": 10 })).await;
    let slow = {
        let api = api.clone();
        tokio::spawn(async move {
            api.invoke("mid", json!({ "action": "sleep", "seconds": 1 }))
                .await
        })
    };
    api.wait_environments("mid", Duration::from_secs(5), |(_, busy)| busy == 1)
        .await;
    assert_eq!(
        api.update_configuration("mid", json!({ "Description": "v2" }))
            .await
            .status,
        200
    );
    let slow = slow.await.unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(
        api.environments("mid").await,
        (0, 0),
        "the old-generation environment went back to the pool"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restarting_the_server_keeps_every_function() {
    require_sandbox!();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut server = Server::start_in(&data, &[]);
    let api = server.api();
    api.create_kitchen("keep", json!({ "MemorySize": 512 }))
        .await;
    let r = api
        .create("keep2", &provided_zip(), json!({ "Runtime": "provided" }))
        .await;
    assert_eq!(r.status, 201);
    api.invoke("keep", json!({})).await;
    assert_eq!(server.environment_cgroups(), 1);
    server.stop();
    assert!(
        !server.has_instance_cgroup(),
        "shutdown left the server's cgroups behind"
    );

    let server = Server::start_in(&data, &[]);
    let api = server.api();
    let list = api.get("/2015-03-31/functions").await.json();
    let names: Vec<&str> = list["Functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["FunctionName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["keep", "keep2"]);
    assert_eq!(
        api.get("/2015-03-31/functions/keep/configuration")
            .await
            .json()["MemorySize"],
        512
    );
    assert_eq!(
        api.invoke("keep", json!({ "x": 1 })).await.json()["event"],
        json!({ "x": 1 })
    );
    assert_eq!(api.invoke("keep2", json!({})).await.json()["count"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_account_concurrency_limit_throttles_with_429() {
    require_sandbox!();
    let server = Server::start(&["--account-concurrency", "1"]);
    let api = server.api();
    api.create_kitchen("one", json!({ "Timeout": 10 })).await;
    let slow = {
        let api = api.clone();
        tokio::spawn(async move {
            api.invoke("one", json!({ "action": "sleep", "seconds": 1 }))
                .await
        })
    };
    api.wait_environments("one", Duration::from_secs(5), |(_, busy)| busy == 1)
        .await;
    let throttled = api.invoke("one", json!({})).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.error_type(), "TooManyRequestsException");
    assert_eq!(
        throttled.json()["Reason"],
        "ConcurrentInvocationLimitExceeded"
    );
    assert_eq!(slow.await.unwrap().status, 200);
    assert_eq!(api.invoke("one", json!({})).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn control_plane_round_trip_get_list_update_code_delete() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen(
        "crud",
        json!({ "Description": "first", "Timeout": 7, "EphemeralStorage": { "Size": 1024 } }),
    )
    .await;
    let got = api.get("/2015-03-31/functions/crud").await.json();
    let config = &got["Configuration"];
    assert_eq!(config["Description"], "first");
    assert_eq!(config["Timeout"], 7);
    assert_eq!(config["EphemeralStorage"]["Size"], 1024);
    assert_eq!(config["State"], "Active");
    let code_url = got["Code"]["Location"].as_str().unwrap().to_owned();
    let path = code_url.splitn(4, '/').nth(3).unwrap();
    let zip = api.get(&format!("/{path}")).await;
    assert_eq!(zip.status, 200);
    assert_eq!(zip.body.len() as u64, config["CodeSize"].as_u64().unwrap());

    // New code replaces the handler's behaviour.
    let new_code =
        crate::support::zip_files(&[("app.py", b"def handler(e, c):\n    return 'v2'\n", 0o644)]);
    let body = json!({ "ZipFile": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &new_code) });
    let r = api
        .request(
            hyper::Method::PUT,
            "/2015-03-31/functions/crud/code",
            &[],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_ne!(r.json()["CodeSha256"], config["CodeSha256"]);
    assert_eq!(api.invoke("crud", json!({})).await.json(), "v2");

    let r = api
        .request(
            hyper::Method::DELETE,
            "/2015-03-31/functions/crud",
            &[],
            bytes::Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = api.invoke("crud", json!({})).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_type(), "ResourceNotFoundException");
    assert_eq!(
        api.get("/2015-03-31/functions").await.json()["Functions"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_hangs_up_does_not_cancel_the_invocation_or_leak_its_environment() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("hangup", json!({ "Timeout": 10 })).await;
    let call = api.invoke("hangup", json!({ "action": "sleep", "seconds": 1 }));
    // Give up on the call while it runs: the connection closes under it.
    let gave_up = tokio::time::timeout(Duration::from_millis(300), call).await;
    assert!(gave_up.is_err(), "the call finished early");
    // The invocation runs to its end and its environment returns to the pool.
    let counts = api
        .wait_environments("hangup", Duration::from_secs(10), |c| c == (1, 0))
        .await;
    assert_eq!(counts, (1, 0));
    assert_eq!(server.environment_cgroups(), 1);
    assert_eq!(api.invoke("hangup", json!({})).await.json()["count"], 2);
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    if let Some(why) = crate::support::sandbox_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let server = Server::start(&[]);
    let out = std::process::Command::new(crate::support::EMBER)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another Ember server is using the data directory"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_version_keeps_its_warm_environment() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("ver", json!({ "Publish": true })).await;
    let first = api.invoke("ver:1", json!({})).await.json();
    let second = api.invoke("ver:1", json!({})).await.json();
    assert_eq!(
        first["env_id"], second["env_id"],
        "version 1's environment was not reused"
    );
    assert_eq!(second["count"], 2);
}

pub async fn frozen_idle_environments_run_nothing_between_invocations(isolation: &'static str) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(isolation, "frozen", json!({ "MemorySize": 512 }))
        .await;
    api.create_kitchen_on(isolation, "running", json!({ "MemorySize": 512 }))
        .await;
    let r = api
        .request(
            hyper::Method::PUT,
            "/ember/v1/functions/frozen/settings",
            &[],
            r#"{"FreezeIdle": true}"#,
        )
        .await;
    assert_eq!(r.json()["FreezeIdle"], true, "{}", r.text());
    let ticker = json!({ "action": "ticker" });
    let ticks = |r: crate::support::Response| r.json()["ticks"].as_u64().unwrap();
    let frozen_before = ticks(api.invoke("frozen", ticker.clone()).await);
    let running_before = ticks(api.invoke("running", ticker.clone()).await);
    // A background thread ticks every 5 ms; let half a second pass with both idle.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let frozen_after = api.invoke("frozen", ticker.clone()).await;
    let running_after = ticks(api.invoke("running", ticker.clone()).await);
    let frozen_delta = ticks(frozen_after) - frozen_before;
    assert!(
        running_after - running_before > 30,
        "the unfrozen ticker barely ran: {}",
        running_after - running_before
    );
    assert!(
        frozen_delta < 10,
        "the frozen environment ran {frozen_delta} ticks while idle"
    );
    // Still the same, working environment after thawing.
    assert_eq!(api.invoke("frozen", json!({})).await.status, 200);
    assert_eq!(api.environments("frozen").await, (1, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn lines_from_concurrent_environments_never_interleave_in_the_log() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    // Each line goes out in two writes (the text, then its newline), as Python's
    // unbuffered print does, with a pause between: another environment's output must not
    // land inside the line.
    let code = br#"
import sys, time

def handler(event, context):
    for _ in range(50):
        sys.stdout.write(event["c"] * 3000)
        time.sleep(0.002)
        sys.stdout.write("\n")
"#;
    let zip = crate::support::zip_files(&[("app.py", code, 0o644)]);
    let r = api
        .create(
            "writer",
            &zip,
            json!({ "Runtime": "python3.11", "Handler": "app.handler", "Timeout": 30 }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let calls: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|c| {
            let api = api.clone();
            tokio::spawn(async move { api.invoke("writer", json!({ "c": c })).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().status, 200);
    }
    let log = api
        .get("/ember/v1/functions/writer/logs?bytes=100000000")
        .await
        .text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("START ") && !l.starts_with("END ") && !l.starts_with("REPORT "))
        .collect();
    assert_eq!(lines.len(), 150, "lines were split or merged");
    for line in lines {
        let first = line.chars().next().unwrap();
        assert!(
            line.len() == 3000 && line.chars().all(|ch| ch == first),
            "a mixed line: {}…",
            &line[..80.min(line.len())]
        );
    }
}

/// `Server-Timing` as a map from stage to milliseconds, in the header's order.
fn stages(header: Option<&str>) -> Vec<(String, f64)> {
    header
        .expect("no Server-Timing header")
        .split(", ")
        .map(|entry| {
            let (name, dur) = entry.split_once(";dur=").expect("a stage without dur");
            (name.to_owned(), dur.parse().expect("a duration"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cold_start_reports_where_its_time_went_stage_by_stage() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    let code = b"import time\ntime.sleep(0.2)\n\ndef handler(event, context):\n    time.sleep(0.05)\n    return event\n";
    let zip = crate::support::zip_files(&[("app.py", code, 0o644)]);
    let r = api
        .create(
            "staged",
            &zip,
            json!({ "Runtime": "python3", "Handler": "app.handler" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    let t = std::time::Instant::now();
    let cold = api.invoke("staged", json!({})).await;
    let round_trip_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(cold.status, 200, "{}", cold.text());
    let cold = stages(cold.header("server-timing"));
    let names: Vec<&str> = cold.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "placement",
            "sandbox",
            "runtime-init",
            "code-init",
            "handler"
        ]
    );
    let ms = |name: &str| cold.iter().find(|(n, _)| n == name).unwrap().1;
    // The module's 200 ms sleep is the code's init, not the runtime's start or the handler.
    assert!(ms("code-init") >= 200.0, "{cold:?}");
    assert!(
        ms("runtime-init") > 0.0 && ms("runtime-init") < 200.0,
        "{cold:?}"
    );
    assert!(ms("sandbox") > 0.0, "{cold:?}");
    assert!(ms("handler") >= 50.0 && ms("handler") < 200.0, "{cold:?}");
    let total: f64 = cold.iter().map(|(_, d)| d).sum();
    assert!(
        total <= round_trip_ms,
        "{cold:?} add up to more than {round_trip_ms} ms"
    );

    let warm = api.invoke("staged", json!({})).await;
    let warm = stages(warm.header("server-timing"));
    let names: Vec<&str> = warm.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["placement", "handler"], "a warm call has no init");
    assert!(warm[1].1 >= 50.0, "{warm:?}");
}
