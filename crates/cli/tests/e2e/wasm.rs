//! WebAssembly functions through the real server: deployed with the Lambda API and
//! `ember deploy`, invoked through Invoke and a function URL, with the limits and failures
//! every backend has (timeout, memory, traps, exit codes, logs, `/tmp`, isolation between
//! invocations).
//!
//! The fixtures are built here from source: C with Debian's `clang-14` for `wasm32-wasi`
//! (`fixtures/wasm/*.c`), a Python `wasi:http` component with `componentize-py`
//! (`fixtures/wasm/python/`, for the world in `fixtures/wasm/wit/`), and the WebAssembly
//! text of the engine's edge cases (`crates/sandbox-wasm/fixtures/*.wat`). Without clang or
//! componentize-py the tests skip, saying so; CI installs both.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use crate::support::{Api, Server, cli, zip_files};

/// Compiles `fixtures/wasm/<name>.c` to `wasm32-wasi`, once per test run.
fn build_c(name: &str) -> Result<Vec<u8>, String> {
    static BUILT: Mutex<BTreeMap<String, Result<PathBuf, String>>> = Mutex::new(BTreeMap::new());
    if let Some(why) = crate::support::sandbox_unavailable() {
        return Err(why.to_owned());
    }
    let mut built = BUILT.lock().unwrap();
    let path = built
        .entry(name.to_owned())
        .or_insert_with(|| {
            let source = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(format!("tests/e2e/fixtures/wasm/{name}.c"));
            let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-fixtures");
            std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
            let out = out_dir.join(format!("{name}.wasm"));
            let status = Command::new("clang-14")
                .args(["--target=wasm32-wasi", "-O2", "-s", "-o"])
                .arg(&out)
                .arg(&source)
                .status()
                .map_err(|e| {
                    format!(
                        "the C fixtures need clang-14 ({e}): apt-get install clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32"
                    )
                })?;
            if !status.success() {
                return Err(format!("clang-14 could not build {}", source.display()));
            }
            Ok(out)
        })
        .clone()?;
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Builds the Python `wasi:http` component (`fixtures/wasm/python/app.py`), once per run.
fn python_component() -> Result<Vec<u8>, String> {
    static BUILT: Mutex<Option<Result<PathBuf, String>>> = Mutex::new(None);
    if let Some(why) = crate::support::sandbox_unavailable() {
        return Err(why.to_owned());
    }
    let mut built = BUILT.lock().unwrap();
    let path = built
        .get_or_insert_with(|| {
            let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fixtures/wasm");
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-fixtures");
            // Built from a copy: the build leaves Python's bytecode beside the source.
            let source = dir.join("python");
            std::fs::create_dir_all(&source).map_err(|e| e.to_string())?;
            std::fs::copy(fixtures.join("python/app.py"), source.join("app.py"))
                .map_err(|e| e.to_string())?;
            let out = dir.join("python.wasm");
            let built = Command::new("componentize-py")
                .arg("-d")
                .arg(fixtures.join("wit"))
                .args(["-w", "http-handler", "componentize", "app", "-p"])
                .arg(&source)
                .arg("-o")
                .arg(&out)
                .output()
                .map_err(|e| {
                    format!("the Python component needs componentize-py ({e}): pip install componentize-py")
                })?;
            if !built.status.success() {
                return Err(format!(
                    "componentize-py could not build the Python component: {}",
                    String::from_utf8_lossy(&built.stderr)
                ));
            }
            Ok(out)
        })
        .clone()?;
    std::fs::read(path).map_err(|e| e.to_string())
}

async fn put_settings(api: &Api, name: &str, settings: Value) -> crate::support::Response {
    let path = format!("/ember/v1/functions/{name}/settings");
    api.request(Method::PUT, &path, &[], Bytes::from(settings.to_string()))
        .await
}

/// The kitchen module, or why this host cannot run these tests.
fn kitchen() -> Result<Vec<u8>, String> {
    build_c("kitchen")
}

/// The fixture `built` (the kitchen module by default), or a return from the test saying
/// why this host cannot build it.
macro_rules! require_wasm {
    () => {
        require_wasm!(kitchen())
    };
    ($built:expr) => {
        match $built {
            Ok(module) => module,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

/// Creates the wasm function `name` running the kitchen module.
async fn create_wasm(api: &Api, name: &str, module: &[u8], config: Value) {
    create_module(api, name, "kitchen.wasm", module, config).await;
}

/// Creates the wasm function `name` whose package holds `module` as `file` (its handler).
async fn create_module(api: &Api, name: &str, file: &str, module: &[u8], config: Value) {
    let zip = zip_files(&[(file, module, 0o644)]);
    let mut full = json!({ "Runtime": "wasm", "Handler": file });
    crate::support::merge(&mut full, config);
    let r = api.create(name, &zip, full).await;
    assert_eq!(r.status, 201, "create {name}: {}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_c_function_answers_in_a_fresh_instance_each_call_and_keeps_its_tmp() {
    let module = require_wasm!();
    let server = Server::start(&[]);
    let api = server.api();
    create_wasm(
        &api,
        "kitchen",
        &module,
        json!({ "Environment": { "Variables": { "GREETING": "hello" } }, "MemorySize": 256 }),
    )
    .await;
    let r = api.get("/ember/v1/functions/kitchen/settings").await;
    assert_eq!(r.json()["Isolation"], "wasm", "{}", r.text());

    let first = api.invoke_tail("kitchen", json!({ "n": 1 })).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let body = first.json();
    assert_eq!(body["event"], json!({ "n": 1 }));
    assert_eq!(body["greeting"], "hello");
    assert_eq!(body["name"], "kitchen");
    assert_eq!(body["memory"], "256");
    assert_eq!(body["argv0"], "/var/task/kitchen.wasm");
    assert!(
        first.log_tail().contains("Init Duration"),
        "{}",
        first.log_tail()
    );

    let second = api
        .invoke_tail("kitchen", json!({ "action": "print" }))
        .await;
    let log = second.log_tail();
    assert!(log.contains("START RequestId"), "{log}");
    assert!(log.contains("a line of output\nEND RequestId"), "{log}");
    assert!(log.contains("Max Memory Used: "), "{log}");
    assert!(
        !log.contains("Init Duration"),
        "the second call was not warm: {log}"
    );

    let third = api.invoke("kitchen", json!({})).await.json();
    // Nothing of an instance survives it: the global counter starts over every call, and
    // the random values differ; `/tmp` is the environment's, kept across its calls.
    assert_eq!(body["runs"], 1);
    assert_eq!(third["runs"], 1);
    assert_eq!(body["tmp_count"], 1);
    assert_eq!(third["tmp_count"], 3);
    assert_ne!(body["random"], third["random"]);

    // The function's own log has the same lines, in order.
    let (code, out, err) = cli(&server.url, &["logs", "kitchen"]);
    assert_eq!(code, 0, "{err}");
    let print = out
        .find("a line of output")
        .expect("the printed line is logged");
    let end = out[print..].find("END RequestId").expect("END after it");
    assert!(end > 0, "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_loop_times_out_on_time_and_the_next_call_is_fine() {
    let module = require_wasm!();
    let server = Server::start(&[]);
    let api = server.api();
    create_wasm(&api, "spinner", &module, json!({ "Timeout": 1 })).await;
    let started = Instant::now();
    let r = api
        .invoke_tail("spinner", json!({ "action": "spin" }))
        .await;
    let took = started.elapsed();
    assert_eq!(
        r.header("x-amz-function-error"),
        Some("Unhandled"),
        "{}",
        r.text()
    );
    assert_eq!(r.json()["errorType"], "Sandbox.Timedout", "{}", r.text());
    assert!(
        r.log_tail().contains("Task timed out after 1.00 seconds"),
        "{}",
        r.log_tail()
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took < Duration::from_secs(3), "stopped late: {took:?}");
    let r = api.invoke("spinner", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["runs"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_past_the_limit_is_refused_and_reported_as_out_of_memory() {
    let module = require_wasm!();
    let mut server = Server::start(&[]);
    let api = server.api();
    create_wasm(&api, "hog", &module, json!({ "MemorySize": 128 })).await;
    let r = api.invoke_tail("hog", json!({ "action": "oom" })).await;
    assert_eq!(
        r.header("x-amz-function-error"),
        Some("Unhandled"),
        "{}",
        r.text()
    );
    let error = r.json();
    assert_eq!(error["errorType"], "Runtime.OutOfMemory", "{error}");
    assert!(
        error["errorMessage"].as_str().unwrap().contains("128 MB"),
        "{error}"
    );
    let log = r.log_tail();
    assert!(log.contains("malloc failed after"), "{log}");
    assert!(log.contains("Runtime.OutOfMemory\nEND RequestId"), "{log}");
    let used: u64 = log
        .split("Max Memory Used: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|mb| mb.parse().ok())
        .expect("a Max Memory Used figure");
    assert!(
        (100..=128).contains(&used),
        "Max Memory Used: {used} MB\n{log}"
    );
    assert!(server.is_running());
    let r = api.invoke("hog", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn traps_and_exit_codes_are_unhandled_errors_that_keep_the_environment() {
    let module = require_wasm!();
    let server = Server::start(&[]);
    let api = server.api();
    create_wasm(&api, "kitchen", &module, json!({})).await;
    let r = api
        .invoke_tail("kitchen", json!({ "action": "exit" }))
        .await;
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "Runtime.ExitError", "{}", r.text());
    assert!(
        r.json()["errorMessage"]
            .as_str()
            .unwrap()
            .ends_with("Runtime exited with error: exit status 3"),
        "{}",
        r.text()
    );
    assert!(r.log_tail().contains("exiting with 3"), "{}", r.log_tail());

    let divide = include_str!("../../../sandbox-wasm/fixtures/divide.wat");
    create_module(&api, "divide", "divide.wat", divide.as_bytes(), json!({})).await;
    for _ in 0..2 {
        let r = api.invoke_tail("divide", json!({})).await;
        assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
        let error = r.json();
        assert_eq!(error["errorType"], "Runtime.Trap", "{error}");
        assert!(
            error["errorMessage"]
                .as_str()
                .unwrap()
                .contains("integer divide by zero"),
            "{error}"
        );
    }
    // A trap ends the instance, not the environment: both calls used the same one.
    assert_eq!(api.environments("divide").await, (1, 0));
    // Through a function URL, a trap is the gateway error every runtime's failure is.
    create_module(&api, "web", "divide.wat", divide.as_bytes(), json!({})).await;
    let r = crate::urls::put_url(&api, Method::POST, json!({ "AuthType": "NONE" })).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .request(Method::GET, "/url/web/", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["Message"], "Internal Server Error", "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn tmp_is_bounded_by_ephemeral_storage_and_nothing_else_of_the_host_is_visible() {
    let module = require_wasm!();
    let server = Server::start(&[]);
    let api = server.api();
    create_wasm(
        &api,
        "filler",
        &module,
        json!({ "EphemeralStorage": { "Size": 512 }, "Timeout": 60 }),
    )
    .await;
    let r = api.invoke("filler", json!({ "action": "fill_tmp" })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let filled = r.json();
    let written = filled["written_mb"].as_u64().unwrap();
    assert!((500..=512).contains(&written), "{filled}");
    assert_eq!(filled["error"], "No space left on device", "{filled}");

    let r = api
        .invoke("filler", json!({ "action": "look_around" }))
        .await;
    assert_eq!(
        r.json(),
        json!({ "root": false, "passwd": false, "own_module": true }),
        "only /tmp and the package are visible"
    );

    // Another function's /tmp is its own.
    create_wasm(&api, "other", &module, json!({})).await;
    api.invoke("filler", json!({})).await;
    let other = api.invoke("other", json!({})).await.json();
    assert_eq!(other["tmp_count"], 1, "{other}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_modules_are_refused_at_deploy_with_the_reason() {
    let module = require_wasm!();
    let server = Server::start(&[]);
    let api = server.api();
    // (function, the package's files, what the refusal says)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a [u8], u32)], &'a str);
    let cases: &[Case] = &[
        (
            "not-wasm",
            &[("app.wasm", b"\0asm\x01\0\0\0\x01", 0o644)],
            "not valid WebAssembly",
        ),
        (
            "missing",
            &[("other.wasm", &module, 0o644)],
            "no readable module at app.wasm",
        ),
        (
            "sockets",
            &[(
                "app.wasm",
                br#"(module (import "env" "connect" (func (param i32))) (func (export "_start")))"#,
                0o644,
            )],
            "imports what Ember does not provide",
        ),
        (
            "no-entry",
            &[("app.wasm", br#"(module (func (export "main")))"#, 0o644)],
            "not a WASI command: it exports no `_start` function",
        ),
    ];
    for (name, files, reason) in cases {
        let zip = zip_files(files);
        let r = api
            .create(
                name,
                &zip,
                json!({ "Runtime": "wasm", "Handler": "app.wasm" }),
            )
            .await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert_eq!(r.error_type(), "InvalidParameterValueException");
        assert!(r.text().contains(reason), "{name}: {}", r.text());
    }
    let r = api
        .create(
            "on-gvisor",
            &zip_files(&[("app.wasm", &module, 0o644)]),
            json!({ "Runtime": "wasm", "Handler": "app.wasm", "Isolation": "gvisor" }),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn ember_deploy_and_a_function_url_serve_a_wasm_function() {
    let module = require_wasm!();
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kitchen.wasm"), &module).unwrap();
    let (code, out, err) = cli(
        &server.url,
        &["deploy", dir.path().to_str().unwrap(), "--name", "web"],
    );
    // A package whose one file is a .wasm module is a wasm function running it.
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("(wasm kitchen.wasm,"), "{out}");
    let (code, out, err) = cli(&server.url, &["invoke", "web", "--payload", r#"{"k":"v"}"#]);
    assert_eq!(code, 0, "{err}");
    let answer: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(answer["event"], json!({ "k": "v" }));

    let api = server.api();
    let r = crate::urls::put_url(&api, Method::POST, json!({ "AuthType": "NONE" })).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .request(Method::GET, "/url/web/orders/7?x=1", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The command got the HTTP API 2.0 event on stdin and its JSON answer is the body.
    let body = r.json();
    assert_eq!(body["event"]["rawPath"], "/orders/7", "{body}");
    assert_eq!(body["event"]["requestContext"]["http"]["method"], "GET");
    assert_eq!(body["runs"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_starts_every_instance_initialized_and_with_fresh_entropy() {
    let _kitchen = require_wasm!();
    let module = build_c("preinit").expect("clang-14 built the kitchen, so it builds this");
    let server = Server::start(&[]);
    let api = server.api();
    create_module(&api, "web", "preinit.wasm", &module, json!({})).await;
    // Calls at once (so more than one environment) and one after the other, through
    // Invoke and through a function URL.
    let call = || api.invoke("web", json!({}));
    let (a, b, c, d) = tokio::join!(call(), call(), call(), call());
    let mut answers: Vec<Value> = [a, b, c, d].iter().map(|r| r.json()).collect();
    for _ in 0..2 {
        answers.push(api.invoke("web", json!({})).await.json());
    }
    let r = crate::urls::put_url(&api, Method::POST, json!({ "AuthType": "NONE" })).await;
    assert_eq!(r.status, 201, "{}", r.text());
    for _ in 0..2 {
        let r = api
            .request(Method::GET, "/url/web/", &[], Bytes::new())
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        answers.push(r.json());
    }
    let mut random = std::collections::HashSet::new();
    for answer in &answers {
        // Initialized once, when the version was deployed: no instance runs it again.
        assert_eq!(answer["preinitialized"], true, "{answer}");
        assert_eq!(answer["init_runs"], 1, "{answer}");
        assert_eq!(answer["primes"], 17984, "{answer}");
        random.insert(answer["random"].as_u64().unwrap());
    }
    assert_eq!(
        random.len(),
        answers.len(),
        "instances restored from one snapshot drew the same random numbers: {answers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_http_component_answers_through_invoke_and_a_function_url() {
    let component = require_wasm!(python_component());
    let server = Server::start(&[]);
    let api = server.api();
    create_module(&api, "web", "app.wasm", &component, json!({})).await;

    // An event that is not an HTTP request is POSTed to /events; the body is the result.
    let first = api.invoke_tail("web", json!({ "order": 7 })).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let answer = first.json();
    assert_eq!(answer["method"], "POST", "{answer}");
    assert_eq!(answer["path"], "/events");
    assert_eq!(
        serde_json::from_str::<Value>(answer["body"].as_str().unwrap()).unwrap(),
        json!({ "order": 7 })
    );
    assert!(
        first
            .log_tail()
            .contains("python handled POST /events\nEND RequestId"),
        "{}",
        first.log_tail()
    );
    // A fresh instance each call: the handler's call counter is 1 every time, and the
    // random values differ.
    let second = api.invoke("web", json!({ "order": 8 })).await.json();
    assert_eq!(answer["calls"], 1);
    assert_eq!(second["calls"], 1);
    assert_ne!(answer["random"], second["random"]);

    // An HTTP event sent to Invoke is that request, and the answer is the response document.
    let event = json!({
        "version": "2.0",
        "rawPath": "/items/7",
        "rawQueryString": "a=1",
        "headers": { "x-greeting": "hi" },
        "requestContext": { "http": { "method": "PUT" } },
        "body": "cGF5bG9hZA==",
        "isBase64Encoded": true
    });
    let doc = api.invoke("web", event).await.json();
    assert_eq!(doc["statusCode"], 200, "{doc}");
    assert_eq!(doc["headers"]["x-handled-by"], "python");
    assert_eq!(doc["cookies"], json!(["seen=1"]));
    let echoed: Value = serde_json::from_str(doc["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["path"], "/items/7?a=1");
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["greeting"], "hi");
    assert_eq!(echoed["body"], "payload");

    // Through a function URL: the request in, the handler's response out.
    let r = crate::urls::put_url(&api, Method::POST, json!({ "AuthType": "NONE" })).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api
        .request(
            Method::POST,
            "/url/web/orders?x=1",
            &[("x-greeting", "hello"), ("cookie", "a=1; b=2")],
            Bytes::from_static(b"made to order"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-handled-by"), Some("python"));
    assert_eq!(r.header("set-cookie"), Some("seen=1"));
    let body = r.json();
    assert_eq!(body["method"], "POST");
    assert_eq!(body["path"], "/orders?x=1");
    assert_eq!(body["greeting"], "hello");
    assert_eq!(body["cookie"], "a=1; b=2");
    assert_eq!(body["body"], "made to order");

    // The handler's failures: an exception is an error with what Python printed in the
    // log, a status of 400 or more fails an Invoke that was not an HTTP request; the
    // environment serves the next call.
    let raised = api
        .invoke_tail(
            "web",
            json!({
                "version": "2.0", "rawPath": "/raise", "rawQueryString": "",
                "requestContext": { "http": { "method": "GET" } }
            }),
        )
        .await;
    assert_eq!(raised.status, 200, "{}", raised.text());
    assert_eq!(raised.header("x-amz-function-error"), Some("Unhandled"));
    assert!(
        raised.log_tail().contains("asked to fail"),
        "{}",
        raised.log_tail()
    );
    let r = api
        .request(Method::GET, "/url/web/raise", &[], Bytes::new())
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    let refused = api.invoke("web", json!({ "status": 404 })).await;
    assert_eq!(refused.header("x-amz-function-error"), Some("Unhandled"));
    let error = refused.json();
    assert_eq!(error["errorType"], "HttpError", "{error}");
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .contains("404 Not Found"),
        "{error}"
    );
    let after = api.invoke("web", json!({})).await.json();
    assert_eq!(after["calls"], 1, "{after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_handler_asking_for_it_keeps_its_instance_between_calls() {
    let component = require_wasm!(python_component());
    let server = Server::start(&[]);
    let api = server.api();
    create_module(&api, "web", "app.wasm", &component, json!({})).await;
    let r = put_settings(&api, "web", json!({ "ReuseInstance": true })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ReuseInstance"], true);

    // One instance serves the environment's calls: the handler's counter goes on.
    let mut calls = Vec::new();
    for _ in 0..3 {
        calls.push(api.invoke("web", json!({})).await.json()["calls"].clone());
    }
    assert_eq!(calls, [json!(1), json!(2), json!(3)]);
    // An instance that failed is not used again.
    let raised = api
        .invoke(
            "web",
            json!({
                "version": "2.0", "rawPath": "/raise", "rawQueryString": "",
                "requestContext": { "http": { "method": "GET" } }
            }),
        )
        .await;
    assert_eq!(raised.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(api.invoke("web", json!({})).await.json()["calls"], 1);
    assert_eq!(api.invoke("web", json!({})).await.json()["calls"], 2);

    // Off again: a fresh instance each call.
    let r = put_settings(&api, "web", json!({ "ReuseInstance": false })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    for _ in 0..2 {
        assert_eq!(api.invoke("web", json!({})).await.json()["calls"], 1);
    }

    // Only an HTTP handler can keep its instance; only a wasm function can ask.
    let kitchen = require_wasm!();
    create_wasm(&api, "kitchen", &kitchen, json!({})).await;
    let r = put_settings(&api, "kitchen", json!({ "ReuseInstance": true })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let refused = api.invoke("kitchen", json!({})).await;
    assert!(
        refused
            .text()
            .contains("ReuseInstance needs a wasi:http/incoming-handler"),
        "{} {}",
        refused.status,
        refused.text()
    );
    let zip = zip_files(&[("app.py", b"def handler(e, c):\n    return 1\n", 0o644)]);
    let r = api
        .create(
            "py",
            &zip,
            json!({ "Runtime": "python3.11", "Handler": "app.handler" }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = put_settings(&api, "py", json!({ "ReuseInstance": true })).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text()
            .contains("ReuseInstance applies to wasm functions only"),
        "{}",
        r.text()
    );
}

/// Another host for outgoing requests: a network namespace joined to this one by a veth
/// pair, with an HTTP server in it. Removed when dropped.
struct OtherHost {
    namespace: String,
    link: String,
    server: std::process::Child,
    /// Its address, and this host's address on the link.
    address: String,
    local: String,
    port: u16,
    _files: tempfile::TempDir,
}

impl OtherHost {
    async fn start() -> OtherHost {
        let id = std::process::id() % 10_000;
        let namespace = format!("ember-wasm-{id}");
        let link = format!("ewh{id}");
        let peer = format!("ewp{id}");
        let subnet = 16 + id % 200;
        let (local, address) = (format!("10.251.{subnet}.1"), format!("10.251.{subnet}.2"));
        let ip = |args: &[&str]| {
            let status = Command::new("ip").args(args).status().unwrap();
            assert!(status.success(), "ip {args:?}");
        };
        let _ = Command::new("ip")
            .args(["netns", "del", &namespace])
            .status();
        let _ = Command::new("ip").args(["link", "del", &link]).status();
        ip(&["netns", "add", &namespace]);
        ip(&["link", "add", &link, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &namespace]);
        ip(&["addr", "add", &format!("{local}/30"), "dev", &link]);
        ip(&["link", "set", &link, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &namespace, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{address}/30"), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("hello.txt"), "hello from another host").unwrap();
        let port = 18_080;
        let server = Command::new("ip")
            .args(["netns", "exec", &namespace, "python3", "-m", "http.server"])
            .arg(port.to_string())
            .args(["--bind", &address, "--directory"])
            .arg(files.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect((address.as_str(), port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "the other host's server did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        OtherHost {
            namespace,
            link,
            server,
            address,
            local,
            port,
            _files: files,
        }
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = Command::new("ip")
            .args(["link", "del", &self.link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .status();
    }
}

/// What the Python handler fetched from `url` on its way through an Invoke.
async fn fetched_by(api: &Api, url: &str) -> Value {
    let event = json!({
        "version": "2.0", "rawPath": "/fetch", "rawQueryString": "",
        "headers": { "x-fetch": url },
        "requestContext": { "http": { "method": "GET" } }
    });
    let doc = api.invoke("web", event).await.json();
    assert_eq!(doc["statusCode"], 200, "{doc}");
    let body: Value = serde_json::from_str(doc["body"].as_str().unwrap()).unwrap();
    body["fetched"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_component_with_egress_reaches_other_hosts_and_never_this_one() {
    let component = require_wasm!(python_component());
    if let Some(why) = crate::support::egress_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let other = OtherHost::start().await;
    let server = Server::start(&[]);
    let api = server.api();
    let api_port = server.url.rsplit(':').next().unwrap().to_owned();
    create_module(&api, "web", "app.wasm", &component, json!({})).await;
    let remote = format!("http://{}:{}/hello.txt", other.address, other.port);

    // Without egress, an outgoing request is refused.
    let refused = fetched_by(&api, &remote).await;
    assert_eq!(refused, json!({ "error": "ErrorCode_HttpRequestDenied" }));

    let r = put_settings(&api, "web", json!({ "Network": "egress" })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = fetched_by(&api, &remote).await;
    assert_eq!(
        answer,
        json!({ "status": 200, "body": "hello from another host" })
    );
    // This host's own addresses, Ember's API among them, stay out of reach.
    for own in [
        format!("http://127.0.0.1:{api_port}/ember/v1/functions"),
        format!("http://localhost:{api_port}/ember/v1/functions"),
        format!("http://{}:{api_port}/ember/v1/functions", other.local),
    ] {
        let answer = fetched_by(&api, &own).await;
        assert_eq!(
            answer,
            json!({ "error": "ErrorCode_DestinationIpProhibited" }),
            "{own}"
        );
    }
}
