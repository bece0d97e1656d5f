//! What a failing function gets, and that the server shrugs it off.

use serde_json::json;

use crate::support::{Server, zip_files};
use crate::{require_backend, require_sandbox};

pub async fn a_handler_exception_is_a_handled_error_and_keeps_the_environment(
    isolation: &'static str,
) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(isolation, "oops", json!({})).await;
    let before = api.invoke("oops", json!({})).await.json();
    let r = api.invoke_tail("oops", json!({ "action": "raise" })).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Handled"));
    let err = r.json();
    assert_eq!(err["errorType"], "ValueError");
    assert_eq!(err["errorMessage"], "boom");
    let trace = err["stackTrace"].as_array().unwrap();
    assert!(
        trace
            .iter()
            .any(|f| f.as_str().unwrap().contains("/var/task/app.py")),
        "{trace:?}"
    );
    assert!(
        r.log_tail().contains("[ERROR] ValueError: boom"),
        "{}",
        r.log_tail()
    );
    assert_eq!(
        api.invoke("oops", json!({})).await.json()["env_id"],
        before["env_id"]
    );
}

pub async fn a_timeout_kills_the_environment_and_reports_unhandled(isolation: &'static str) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(isolation, "slow", json!({ "Timeout": 1 }))
        .await;
    let before = api.invoke("slow", json!({})).await.json();
    let started = std::time::Instant::now();
    let r = api
        .invoke_tail("slow", json!({ "action": "sleep", "seconds": 30 }))
        .await;
    assert!(
        started.elapsed().as_secs() < 10,
        "the timeout did not stop the call"
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert!(
        r.json()["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Task timed out after 1.00 seconds"),
        "{}",
        r.text()
    );
    let log = r.log_tail();
    let timeout_at = log
        .find("Task timed out after 1.00 seconds")
        .expect("timeout line");
    assert!(timeout_at < log.find("REPORT").unwrap(), "{log}");
    let after = api.invoke_tail("slow", json!({})).await;
    assert_ne!(
        after.json()["env_id"],
        before["env_id"],
        "the timed-out environment was reused"
    );
    assert!(after.log_tail().contains("Init Duration"));
}

pub async fn a_crashing_runtime_is_unhandled_and_the_next_call_starts_cold(
    isolation: &'static str,
) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(isolation, "crash", json!({})).await;
    let r = api
        .invoke("crash", json!({ "action": "exit", "code": 3 }))
        .await;
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "Runtime.ExitError");
    assert!(
        r.json()["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Runtime exited with error: exit status 3"),
        "{}",
        r.text()
    );
    let r = api.invoke("crash", json!({ "action": "segv" })).await;
    assert!(
        r.json()["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("signal: segmentation fault"),
        "{}",
        r.text()
    );
    let ok = api.invoke("crash", json!({})).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["count"], 1, "the crashed environment was reused");
    let left = server
        .wait_cgroups(1, std::time::Duration::from_secs(5))
        .await;
    assert_eq!(left, 1, "crashed environments' cgroups were left behind");
}

pub async fn running_out_of_memory_is_reported_as_killed_and_only_hurts_the_function(
    isolation: &'static str,
) {
    require_backend!(isolation);
    let mut server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen_on(
        isolation,
        "hog",
        json!({ "MemorySize": 128, "Timeout": 30 }),
    )
    .await;
    let r = api.invoke_tail("hog", json!({ "action": "oom" })).await;
    assert_eq!(
        r.header("x-amz-function-error"),
        Some("Unhandled"),
        "{}",
        r.text()
    );
    assert!(
        r.json()["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Runtime exited with error: signal: killed"),
        "{}",
        r.text()
    );
    assert!(r.log_tail().contains("(out of memory)"), "{}", r.log_tail());
    assert!(server.is_running());
    assert_eq!(api.invoke("hog", json!({})).await.json()["count"], 1);
    assert_eq!(
        server
            .wait_cgroups(1, std::time::Duration::from_secs(5))
            .await,
        1
    );
}

pub async fn init_failures_report_the_runtime_error_type(isolation: &'static str) {
    require_backend!(isolation);
    let server = Server::start(&[]);
    let api = server.api();
    let cases: &[(&str, &[u8], &str, &str)] = &[
        (
            "missing-module",
            b"x = 1\n",
            "nothere.handler",
            "Runtime.ImportModuleError",
        ),
        (
            "bad-import",
            b"import does_not_exist\n",
            "app.handler",
            "Runtime.ImportModuleError",
        ),
        (
            "syntax",
            b"def handler(:\n",
            "app.handler",
            "Runtime.UserCodeSyntaxError",
        ),
        (
            "no-handler",
            b"x = 1\n",
            "app.handler",
            "Runtime.HandlerNotFound",
        ),
        (
            "raises",
            b"raise RuntimeError('init went wrong')\n",
            "app.handler",
            "RuntimeError",
        ),
        (
            "exits",
            b"import os\nos._exit(7)\n",
            "app.handler",
            "Runtime.ExitError",
        ),
    ];
    for (name, source, handler, expected) in cases {
        let zip = zip_files(&[("app.py", source, 0o644)]);
        let r = api
            .create(
                name,
                &zip,
                json!({ "Runtime": "python3", "Handler": handler }),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        api.isolate(name, isolation).await;
        let r = api.invoke_tail(name, json!({})).await;
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(
            r.header("x-amz-function-error"),
            Some("Unhandled"),
            "{name}"
        );
        assert_eq!(r.json()["errorType"], *expected, "{name}: {}", r.text());
        assert!(
            r.log_tail().contains("INIT_REPORT Status: error"),
            "{name}: {}",
            r.log_tail()
        );
        assert_eq!(
            api.environments(name).await,
            (0, 0),
            "{name}: a failed environment was kept"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn payload_and_response_limits_are_enforced() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("limits", json!({ "MemorySize": 512 }))
        .await;
    let big = api.invoke("limits", json!({ "action": "big" })).await;
    assert_eq!(big.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(big.json()["errorType"], "Function.ResponseSizeTooLarge");
    let payload = json!({ "blob": "x".repeat(6 * 1024 * 1024) });
    let r = api.invoke("limits", payload).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.error_type(), "RequestTooLargeException");
    let r = api
        .request(
            hyper::Method::POST,
            "/2015-03-31/functions/limits/invocations",
            &[],
            "not json",
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.error_type(), "InvalidRequestContentException");
    // The environment survived all of it.
    let last = api.invoke("limits", json!({})).await;
    assert_eq!(last.json()["count"], 2, "{}", last.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_that_dies_while_idle_is_discarded_not_handed_to_the_next_caller() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("flaky", json!({})).await;
    // The handler answers, then a background thread kills the runtime.
    let r = api.invoke("flaky", json!({ "action": "die_later" })).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), None);
    let counts = api
        .wait_environments("flaky", std::time::Duration::from_secs(10), |c| c == (0, 0))
        .await;
    assert_eq!(counts, (0, 0), "the dead environment is still in the pool");
    let next = api.invoke("flaky", json!({})).await;
    assert_eq!(next.header("x-amz-function-error"), None, "{}", next.text());
    assert_eq!(next.json()["count"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn init_is_limited_to_ten_seconds() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    let zip = zip_files(&[(
        "app.py",
        b"import time\ntime.sleep(60)\ndef handler(e, c):\n    return 1\n",
        0o644,
    )]);
    let r = api
        .create(
            "sleepy",
            &zip,
            json!({ "Runtime": "python3", "Handler": "app.handler", "Timeout": 60 }),
        )
        .await;
    assert_eq!(r.status, 201);
    let started = std::time::Instant::now();
    let r = api.invoke("sleepy", json!({})).await;
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_secs(10) && took < std::time::Duration::from_secs(20),
        "{took:?}"
    );
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "Sandbox.Timedout", "{}", r.text());
    assert!(
        r.json()["errorMessage"]
            .as_str()
            .unwrap()
            .contains("init timed out after 10.00 seconds")
    );
    assert_eq!(
        server
            .wait_cgroups(0, std::time::Duration::from_secs(5))
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_flooding_its_output_is_capped_and_only_it_pays() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("flood", json!({ "MemorySize": 512, "Timeout": 60 }))
        .await;
    api.create_kitchen("quiet", json!({})).await;
    // 30 MB of output in one invocation, while another function keeps answering.
    let flood = {
        let api = api.clone();
        tokio::spawn(async move {
            api.invoke_tail("flood", json!({ "action": "flood", "lines": 30_000 }))
                .await
        })
    };
    for _ in 0..5 {
        assert_eq!(api.invoke("quiet", json!({})).await.status, 200);
    }
    let r = flood.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), None, "{}", r.text());
    let tail = r.log_tail();
    assert!(tail.contains("bytes of output were dropped]"), "{tail}");
    let log = std::fs::metadata(server.data_dir.join("logs/flood.log"))
        .unwrap()
        .len();
    assert!(log < 2 * 1024 * 1024, "the log grew to {log} bytes");
    let read = api
        .get("/ember/v1/functions/flood/logs?bytes=100000000")
        .await
        .text();
    assert_eq!(
        read.matches("the rest is dropped]").count(),
        1,
        "one marker per invocation"
    );
    // The next invocation may log again.
    let again = api
        .invoke_tail("flood", json!({ "action": "print", "text": "still heard" }))
        .await;
    assert!(
        again.log_tail().contains("still heard"),
        "{}",
        again.log_tail()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_outright_leaves_no_firewall_table_once_another_starts() {
    if let Some(why) = crate::support::egress_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let mut killed = Server::start(&[]);
    let table = killed.egress_table();
    let tables = crate::support::nft_tables();
    assert!(tables.contains(&table), "{table} not among {tables:?}");
    // Killed outright, the server could not remove its table: every packet the host sends
    // would go through it for good.
    killed.kill();
    assert!(crate::support::nft_tables().contains(&table));
    let mut next = Server::start(&[]);
    let tables = crate::support::nft_tables();
    assert!(!tables.contains(&table), "{table} still among {tables:?}");
    assert!(tables.contains(&next.egress_table()), "{tables:?}");
    // A server stopped the usual way removes its own.
    next.stop();
    assert!(!crate::support::nft_tables().contains(&next.egress_table()));
}
