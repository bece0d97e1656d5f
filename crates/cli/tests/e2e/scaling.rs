//! Concurrency controls and what they show: reserved concurrency under load, scale-up
//! pacing, `/metrics` read by a Prometheus parser, and `ember sim` agreeing with the live
//! server on the same trace.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use crate::require_sandbox;
use crate::support::{Api, EMBER, Response, Server};

/// Why `/metrics` cannot be parsed here, if it cannot.
pub(crate) fn parser_unavailable() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then_some(
        "the Prometheus parser is not installed (python3 -m pip install prometheus_client)",
    )
}

/// Every sample of `/metrics`, parsed by the Prometheus client's OpenMetrics parser.
pub(crate) async fn scrape(api: &Api) -> Vec<Value> {
    let r = api.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text"),
        "{:?}",
        r.header("content-type")
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/fixtures/openmetrics.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&r.body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "/metrics did not parse: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        r.text()
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The value of one sample, 0 if absent.
pub(crate) fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
        .map_or(0.0, |s| s["value"].as_f64().unwrap())
}

async fn put_concurrency(api: &Api, name: &str, n: i64) -> Response {
    api.request(
        Method::PUT,
        &format!("/2017-10-31/functions/{name}/concurrency"),
        &[],
        Bytes::from(json!({ "ReservedConcurrentExecutions": n }).to_string()),
    )
    .await
}

/// Fires `n` calls at once and returns their responses.
async fn burst(api: &Api, name: &str, n: usize, payload: Value) -> Vec<Response> {
    let calls: Vec<_> = (0..n)
        .map(|_| {
            let api = api.clone();
            let name = name.to_owned();
            let payload = payload.clone();
            tokio::spawn(async move { api.invoke(&name, payload).await })
        })
        .collect();
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.unwrap());
    }
    out
}

fn statuses(responses: &[Response]) -> (usize, Vec<String>) {
    let ok = responses.iter().filter(|r| r.status == 200).count();
    let reasons = responses
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| {
            assert_eq!(r.status, 429, "{}", r.text());
            assert_eq!(r.error_type(), "TooManyRequestsException");
            assert!(r.header("retry-after").is_some(), "no Retry-After");
            r.json()["Reason"].as_str().unwrap().to_owned()
        })
        .collect();
    (ok, reasons)
}

#[tokio::test(flavor = "multi_thread")]
async fn reserved_concurrency_guarantees_and_caps_each_function_under_load() {
    require_sandbox!();
    let server = Server::start(&["--account-concurrency", "4", "--unreserved-min", "1"]);
    let api = server.api();
    api.create_kitchen("capped", json!({ "Timeout": 10 })).await;
    api.create_kitchen("shared", json!({ "Timeout": 10 })).await;

    let r = put_concurrency(&api, "capped", 2).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ReservedConcurrentExecutions"], 2);
    let got = api.get("/2019-09-30/functions/capped/concurrency").await;
    assert_eq!(got.json(), json!({ "ReservedConcurrentExecutions": 2 }));
    let function = api.get("/2015-03-31/functions/capped").await.json();
    assert_eq!(function["Concurrency"]["ReservedConcurrentExecutions"], 2);
    let settings = api.get("/2016-08-19/account-settings").await.json();
    assert_eq!(
        settings["AccountLimit"]["UnreservedConcurrentExecutions"],
        2
    );

    // Reserving 2 more would leave the other functions less than their minimum of 1.
    let refused = put_concurrency(&api, "shared", 2).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error_type(), "InvalidParameterValueException");
    assert!(refused.text().contains("at most 1"), "{}", refused.text());
    assert_eq!(put_concurrency(&api, "shared", -1).await.status, 400);

    // Five calls each at once: each function gets exactly its slice, the rest get 429.
    let watch = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..60 {
                most = most.max(api.environments("capped").await.1);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            most
        })
    };
    let slow = json!({ "action": "sleep", "seconds": 1.5 });
    let (capped, shared) = tokio::join!(
        burst(&api, "capped", 5, slow.clone()),
        burst(&api, "shared", 5, slow.clone())
    );
    let (ok, reasons) = statuses(&capped);
    assert_eq!(ok, 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r == "ReservedFunctionConcurrentInvocationLimitExceeded")
    );
    let (ok, reasons) = statuses(&shared);
    assert_eq!(ok, 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r == "ConcurrentInvocationLimitExceeded")
    );
    assert!(
        watch.await.unwrap() <= 2,
        "more busy environments than reserved"
    );

    // 0 disables the function; deleting the reservation enables it again.
    assert_eq!(put_concurrency(&api, "capped", 0).await.status, 200);
    let (ok, reasons) = statuses(&[api.invoke("capped", json!({})).await]);
    assert_eq!(ok, 0);
    assert_eq!(
        reasons,
        ["ReservedFunctionConcurrentInvocationLimitExceeded"]
    );
    let deleted = api
        .request(
            Method::DELETE,
            "/2017-10-31/functions/capped/concurrency",
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(deleted.status, 204);
    assert_eq!(api.invoke("capped", json!({})).await.status, 200);
    let got = api.get("/2019-09-30/functions/capped/concurrency").await;
    assert_eq!(got.json(), json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reservation_survives_a_restart() {
    require_sandbox!();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut server = Server::start_in(&data, &["--unreserved-min", "10"]);
    let api = server.api();
    api.create_kitchen("kept", json!({})).await;
    assert_eq!(put_concurrency(&api, "kept", 7).await.status, 200);
    server.stop();
    let server = Server::start_in(&data, &["--unreserved-min", "10"]);
    let got = server
        .api()
        .get("/2019-09-30/functions/kept/concurrency")
        .await;
    assert_eq!(got.json(), json!({ "ReservedConcurrentExecutions": 7 }));
}

#[tokio::test(flavor = "multi_thread")]
async fn pacing_spaces_new_environments_at_the_configured_rate() {
    require_sandbox!();
    // A burst of 2, then 2 new environments a second; calls wait for their turn.
    let server = Server::start(&[
        "--scale-burst",
        "2",
        "--scale-refill",
        "2",
        "--scale-period",
        "1s",
        "--scale-wait",
        "10s",
    ]);
    let api = server.api();
    api.create_kitchen("paced", json!({ "Timeout": 20 })).await;
    let responses = burst(
        &api,
        "paced",
        6,
        json!({ "action": "sleep", "seconds": 2.5 }),
    )
    .await;
    let mut starts: Vec<f64> = responses
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["started_at"].as_f64().unwrap()
        })
        .collect();
    starts.sort_by(f64::total_cmp);
    // Six environments, each needing its own: two at once, then one every half second.
    for (k, start) in starts.iter().enumerate().skip(2) {
        let earliest = (k as f64 - 1.0) * 0.5 - 0.05;
        assert!(
            start - starts[0] >= earliest,
            "environment {k} started {:.3} s after the first, before the pace allows ({earliest:.2} s)",
            start - starts[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn beyond_the_pace_a_spike_waits_for_a_warm_environment_or_gets_429() {
    require_sandbox!();
    if let Some(why) = parser_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    // One new environment a minute: a spike must make do with the one it has.
    let server = Server::start(&[
        "--scale-burst",
        "1",
        "--scale-refill",
        "1",
        "--scale-period",
        "60s",
        "--scale-wait",
        "5s",
    ]);
    let api = server.api();
    api.create_kitchen("spiky", json!({})).await;
    let responses = burst(
        &api,
        "spiky",
        4,
        json!({ "action": "sleep", "seconds": 0.2 }),
    )
    .await;
    assert!(
        responses.iter().all(|r| r.status == 200),
        "the spike was not absorbed"
    );
    let samples = scrape(&api).await;
    assert_eq!(
        sample(
            &samples,
            "ember_cold_starts_total",
            &[("function", "spiky")]
        ),
        1.0
    );
    assert!(
        sample(
            &samples,
            "ember_scale_up_waits_total",
            &[("function", "spiky")]
        ) >= 1.0
    );

    // Without a wait, the second concurrent call is refused at once.
    let server = Server::start(&[
        "--scale-burst",
        "1",
        "--scale-refill",
        "1",
        "--scale-period",
        "60s",
        "--scale-wait",
        "0s",
    ]);
    let api = server.api();
    api.create_kitchen("spiky", json!({})).await;
    let responses = burst(&api, "spiky", 2, json!({ "action": "sleep", "seconds": 1 })).await;
    let (ok, reasons) = statuses(&responses);
    assert_eq!(ok, 1);
    assert_eq!(reasons, ["FunctionInvocationRateLimitExceeded"]);
    let refused = responses.iter().find(|r| r.status == 429).unwrap();
    let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_parse_and_count_the_calls_made() {
    require_sandbox!();
    if let Some(why) = parser_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("m", json!({ "Timeout": 1 })).await;
    // cold, warm, handled error, timeout (kills the environment), cold, crash, cold.
    for payload in [
        json!({}),
        json!({}),
        json!({ "action": "raise" }),
        json!({ "action": "sleep", "seconds": 3 }),
        json!({}),
        json!({ "action": "exit" }),
        json!({}),
    ] {
        assert_eq!(api.invoke("m", payload).await.status, 200);
    }
    assert_eq!(put_concurrency(&api, "m", 0).await.status, 200);
    assert_eq!(api.invoke("m", json!({})).await.status, 429);

    let s = scrape(&api).await;
    let m = [("function", "m")];
    assert_eq!(sample(&s, "ember_invocations_total", &m), 7.0);
    assert_eq!(sample(&s, "ember_cold_starts_total", &m), 3.0);
    for (kind, n) in [
        ("handled", 1.0),
        ("timeout", 1.0),
        ("crashed", 1.0),
        ("out_of_memory", 0.0),
    ] {
        assert_eq!(
            sample(
                &s,
                "ember_errors_total",
                &[("function", "m"), ("kind", kind)]
            ),
            n,
            "{kind}"
        );
    }
    assert_eq!(
        sample(
            &s,
            "ember_throttles_total",
            &[
                ("function", "m"),
                (
                    "reason",
                    "ReservedFunctionConcurrentInvocationLimitExceeded"
                )
            ]
        ),
        1.0
    );
    assert_eq!(sample(&s, "ember_duration_seconds_count", &m), 7.0);
    assert_eq!(sample(&s, "ember_init_duration_seconds_count", &m), 3.0);
    assert_eq!(sample(&s, "ember_concurrent_executions", &m), 0.0);
    assert_eq!(
        sample(
            &s,
            "ember_environments",
            &[("function", "m"), ("state", "idle")]
        ),
        1.0
    );
    assert_eq!(
        sample(
            &s,
            "ember_environments",
            &[("function", "m"), ("state", "busy")]
        ),
        0.0
    );
}

/// A trace for several functions with idle gaps well inside and well beyond a 3 s
/// keep-alive, and calls that arrive together (so that some need a second environment).
fn agreement_trace() -> Vec<(f64, String, f64)> {
    let mut calls = Vec::new();
    for f in 0..6u32 {
        let name = format!("sim{f}");
        let mut t = f64::from(f) * 0.05;
        for cycle in 0..6u32 {
            for group in 0..4u32 {
                let together = 1 + (f + cycle + group) % 2;
                for _ in 0..together {
                    calls.push((t * 1000.0, name.clone(), 50.0));
                }
                // Three gaps of 0.6 s (warm), then 4.5 s (beyond the keep-alive).
                t += if group < 3 { 0.6 } else { 4.5 };
            }
        }
    }
    calls.sort_by(|a, b| a.0.total_cmp(&b.0));
    calls
}

#[tokio::test(flavor = "multi_thread")]
async fn the_simulator_and_the_live_server_count_the_same_cold_starts() {
    require_sandbox!();
    if let Some(why) = parser_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let calls = agreement_trace();
    assert!(calls.len() >= 200);
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("trace.csv");
    let mut csv = String::from("at_ms,function,duration_ms\n");
    for (at, name, duration) in &calls {
        csv.push_str(&format!("{at:.1},{name},{duration}\n"));
    }
    std::fs::write(&path, csv).unwrap();

    let out = Command::new(EMBER)
        .args([
            "sim",
            "run",
            "--policy",
            "fixed",
            "--keep-alive",
            "3s",
            "--json",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let simulated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let simulated_cold = simulated["fixed"]["total"]["cold_starts"].as_u64().unwrap();

    let server = Server::start(&["--keep-alive", "3s"]);
    let api = server.api();
    for f in 0..6 {
        api.create_kitchen(&format!("sim{f}"), json!({})).await;
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(200);
    let replay: Vec<_> = calls
        .into_iter()
        .map(|(at, name, duration)| {
            let api = api.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(start + Duration::from_secs_f64(at / 1000.0)).await;
                let r = api
                    .invoke(
                        &name,
                        json!({ "action": "sleep", "seconds": duration / 1000.0 }),
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
            })
        })
        .collect();
    for call in replay {
        call.await.unwrap();
    }
    let samples = scrape(&api).await;
    let live_cold: f64 = (0..6)
        .map(|f| {
            sample(
                &samples,
                "ember_cold_starts_total",
                &[("function", &format!("sim{f}"))],
            )
        })
        .sum();
    assert_eq!(
        live_cold as u64, simulated_cold,
        "live vs simulated cold starts"
    );
}

async fn put_settings(api: &Api, name: &str, settings: Value) -> Response {
    api.request(
        Method::PUT,
        &format!("/ember/v1/functions/{name}/settings"),
        &[],
        Bytes::from(settings.to_string()),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_can_choose_its_own_keep_alive() {
    require_sandbox!();
    let server = Server::start(&["--keep-alive", "10m"]);
    let api = server.api();
    api.create_kitchen("brief", json!({})).await;
    let bad = put_settings(&api, "brief", json!({ "KeepAlive": "forever" })).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("fixed:DURATION"), "{}", bad.text());
    let ok = put_settings(&api, "brief", json!({ "KeepAlive": "fixed:1s" })).await;
    assert_eq!(ok.json()["KeepAlive"], "fixed:1s");
    assert_eq!(api.invoke("brief", json!({})).await.status, 200);
    assert_eq!(api.environments("brief").await, (1, 0));
    // Reclaimed after its own second, not the server's ten minutes.
    let counts = api
        .wait_environments("brief", Duration::from_secs(10), |(idle, _)| idle == 0)
        .await;
    assert_eq!(counts, (0, 0));
    let back = put_settings(&api, "brief", json!({ "KeepAlive": "server" })).await;
    assert_eq!(back.json()["KeepAlive"], "server");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_adaptive_policy_learns_a_period_and_prewarms_ahead_of_it() {
    require_sandbox!();
    if let Some(why) = parser_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    // Time compressed: 300 ms bins; a call every 3 s is cold under the 1 s fallback
    // until ten idle times are known, then finds an environment pre-warmed for it.
    let server = Server::start(&[
        "--keep-alive-policy",
        "adaptive",
        "--adaptive-bin",
        "300ms",
        "--keep-alive",
        "1s",
    ]);
    let api = server.api();
    api.create_kitchen("periodic", json!({})).await;
    let start = tokio::time::Instant::now();
    let mut cold = Vec::new();
    for call in 0..14u32 {
        tokio::time::sleep_until(start + Duration::from_secs(3 * u64::from(call))).await;
        let r = api.invoke_tail("periodic", json!({})).await;
        assert_eq!(r.status, 200);
        cold.push(r.log_tail().contains("Init Duration"));
        if call >= 11 {
            // Released right after the call: nothing idles until the pre-warm.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(api.environments("periodic").await, (0, 0), "call {call}");
        }
    }
    assert!(cold[..10].iter().all(|c| *c), "learning: {cold:?}");
    assert!(cold[11..].iter().all(|c| !c), "after learning: {cold:?}");
    let samples = scrape(&api).await;
    assert!(
        sample(
            &samples,
            "ember_prewarms_total",
            &[("function", "periodic")]
        ) >= 3.0
    );
}

async fn put_provisioned(api: &Api, name: &str, qualifier: &str, n: i64) -> Response {
    api.request(
        Method::PUT,
        &format!("/2019-09-30/functions/{name}/provisioned-concurrency?Qualifier={qualifier}"),
        &[],
        Bytes::from(json!({ "ProvisionedConcurrentExecutions": n }).to_string()),
    )
    .await
}

/// Polls a provisioned concurrency configuration until its status is `status`.
async fn wait_provisioned(api: &Api, name: &str, qualifier: &str, status: &str) -> Value {
    let path =
        format!("/2019-09-30/functions/{name}/provisioned-concurrency?Qualifier={qualifier}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let config = api.get(&path).await.json();
        if config["Status"] == status || tokio::time::Instant::now() > deadline {
            return config;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish(api: &Api, name: &str) -> String {
    let r = api
        .request(
            Method::POST,
            &format!("/2015-03-31/functions/{name}/versions"),
            &[],
            Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["Version"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioned_concurrency_is_kept_counted_limited_and_restored_after_a_restart() {
    require_sandbox!();
    if let Some(why) = parser_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut server = Server::start_in(&data, &["--keep-alive", "1s"]);
    let api = server.api();
    api.create_kitchen("warm", json!({ "Timeout": 10 })).await;
    let version = publish(&api, "warm").await;

    // Within the reserved concurrency only.
    assert_eq!(put_concurrency(&api, "warm", 2).await.status, 200);
    let over = put_provisioned(&api, "warm", &version, 3).await;
    assert_eq!(over.status, 400, "{}", over.text());
    assert!(
        over.text().contains("reserved concurrency of 2"),
        "{}",
        over.text()
    );
    let configured = std::time::Instant::now();
    let r = put_provisioned(&api, "warm", &version, 2).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let ready = wait_provisioned(&api, "warm", &version, "READY").await;
    assert_eq!(
        ready["AllocatedProvisionedConcurrentExecutions"], 2,
        "{ready}"
    );
    // Nor can the reservation drop below what is provisioned.
    let below = put_concurrency(&api, "warm", 1).await;
    assert_eq!(below.status, 400, "{}", below.text());
    assert!(
        below.text().contains("provisioned concurrency (2)"),
        "{}",
        below.text()
    );

    // Never reclaimed: well past the 1 s keep-alive, both are still there.
    let invoked = api.invoke(&format!("warm:{version}"), json!({})).await;
    assert_eq!(
        invoked.json()["initialization_type"],
        "provisioned-concurrency"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(api.environments("warm").await, (2, 0));
    // Billed while configured: 2 × 128 MB for at least the 2.5 s above (less one scan),
    // at most since the configuration was put; the call at the provisioned duration rate.
    let usage = api.get("/ember/v1/usage?Function=warm").await.json();
    let row = usage["Usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Version"] == version.as_str())
        .unwrap_or_else(|| panic!("{usage}"));
    let kept = row["ProvisionedGbSeconds"].as_f64().unwrap();
    let most = 2.0 * 0.125 * configured.elapsed().as_secs_f64();
    assert!(
        (0.5..=most).contains(&kept),
        "{kept} GB-s, at most {most}: {row}"
    );
    assert!(
        row["ProvisionedDurationGbSeconds"].as_f64().unwrap() > 0.0,
        "{row}"
    );
    assert_eq!(row["GbSeconds"], 0.0, "{row}");
    let samples = scrape(&api).await;
    let warm = [("function", "warm")];
    assert_eq!(
        sample(&samples, "ember_provisioned_concurrency", &warm),
        2.0
    );
    assert_eq!(
        sample(&samples, "ember_provisioned_utilization", &warm),
        0.0
    );
    assert_eq!(
        sample(&samples, "ember_provisioned_invocations_total", &warm),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            "ember_environments",
            &[("function", "warm"), ("state", "provisioned")]
        ),
        2.0
    );

    // Shrinking destroys the idle surplus.
    assert_eq!(put_provisioned(&api, "warm", &version, 1).await.status, 202);
    let counts = api
        .wait_environments("warm", Duration::from_secs(10), |(idle, _)| idle == 1)
        .await;
    assert_eq!(counts, (1, 0));

    // After a restart the configuration is back and its environment starts before any call.
    server.stop();
    let server = Server::start_in(&data, &["--keep-alive", "1s"]);
    let api = server.api();
    let ready = wait_provisioned(&api, "warm", &version, "READY").await;
    assert_eq!(
        ready["RequestedProvisionedConcurrentExecutions"], 1,
        "{ready}"
    );
    assert_eq!(
        ready["AllocatedProvisionedConcurrentExecutions"], 1,
        "{ready}"
    );
    let r = api.invoke_tail(&format!("warm:{version}"), json!({})).await;
    assert!(!r.log_tail().contains("Init Duration"), "{}", r.log_tail());
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioned_concurrency_that_cannot_initialize_is_failed_with_the_reason() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("broken", json!({ "Handler": "missing.handler" }))
        .await;
    let version = publish(&api, "broken").await;
    assert_eq!(
        put_provisioned(&api, "broken", &version, 1).await.status,
        202
    );
    let failed = wait_provisioned(&api, "broken", &version, "FAILED").await;
    assert_eq!(failed["Status"], "FAILED", "{failed}");
    assert_eq!(failed["AllocatedProvisionedConcurrentExecutions"], 0);
    let reason = failed["StatusReason"].as_str().unwrap();
    assert!(
        reason.contains("FUNCTION_ERROR_INIT_FAILURE")
            && reason.contains("Runtime.ImportModuleError"),
        "{reason}"
    );
    assert_eq!(api.environments("broken").await, (0, 0));
}

/// The sum of `Billed Duration` over a function's REPORT lines, and how many there are.
async fn billed_in_log(api: &Api, name: &str) -> (u64, u64) {
    let log = api
        .get(&format!("/ember/v1/functions/{name}/logs?bytes=10000000"))
        .await
        .text();
    log.lines()
        .filter(|l| l.starts_with("REPORT "))
        .map(|l| {
            let billed = l.split("Billed Duration: ").nth(1).unwrap();
            billed.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .fold((0, 0), |(sum, n), ms| (sum + ms, n + 1))
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_and_stats_count_what_ran_and_usage_is_kept_across_a_restart() {
    require_sandbox!();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let args = ["--price-gb-second", "0.001"];
    let mut server = Server::start_in(&data, &args);
    let api = server.api();
    api.create_kitchen("metered", json!({ "MemorySize": 256, "Timeout": 10 }))
        .await;
    let sleep = json!({ "action": "sleep", "seconds": 0.3 });
    for r in burst(&api, "metered", 3, sleep.clone()).await {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        api.invoke("metered", json!({ "action": "raise" }))
            .await
            .header("x-amz-function-error"),
        Some("Handled")
    );

    let (billed, reports) = billed_in_log(&api, "metered").await;
    assert_eq!(reports, 4);
    assert!(billed >= 900, "{billed}");
    let usage = api.get("/ember/v1/usage?Function=metered").await.json();
    let rows = usage["Usage"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{usage}");
    let row = &rows[0];
    assert_eq!(row["Version"], "$LATEST");
    assert_eq!(row["Requests"], 4);
    assert_eq!(row["BilledMs"], billed);
    let gb_seconds = row["GbSeconds"].as_f64().unwrap();
    assert!(
        (gb_seconds - billed as f64 / 1000.0 * 0.25).abs() < 1e-9,
        "{row}"
    );
    let cost = row["Cost"].as_f64().unwrap();
    assert!(
        (cost - (4.0 / 1e6 * 0.2 + gb_seconds * 0.001)).abs() < 1e-12,
        "{row}"
    );
    assert_eq!(usage["Total"]["Requests"], 4);

    let stats = api.get("/ember/v1/stats?Function=metered").await.json();
    let f = &stats["Functions"][0];
    assert_eq!(f["Function"], "metered");
    assert_eq!(f["Invocations"], 4);
    assert_eq!(f["Errors"], 1);
    assert_eq!(f["ColdStarts"], 3);
    assert_eq!(f["Environments"]["Idle"], 3);
    let peak = f["Concurrency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .max();
    assert_eq!(peak, Some(3), "{f}");
    let missing = api.get("/ember/v1/stats?Function=nope").await;
    assert_eq!(missing.status, 404);

    let (code, out, err) = crate::support::cli(&server.url, &["stats", "metered"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().nth(1).unwrap().starts_with("metered "), "{out}");
    let (code, out, err) = crate::support::cli(&server.url, &["usage"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("TOTAL") && out.contains("$LATEST"), "{out}");

    // One more call, then a restart: the usage is on the record.
    assert_eq!(api.invoke("metered", json!({})).await.status, 200);
    server.stop();
    let server = Server::start_in(&data, &args);
    let usage = server
        .api()
        .get("/ember/v1/usage?Function=metered")
        .await
        .json();
    assert_eq!(usage["Total"]["Requests"], 5, "{usage}");
}

async fn put_settings_ok(api: &Api, name: &str, settings: Value) {
    let r = put_settings(api, name, settings).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn one_environment_serves_up_to_its_max_concurrency_at_once() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("multi", json!({ "Timeout": 10 })).await;
    for bad in [0, 65] {
        let r = put_settings(&api, "multi", json!({ "MaxConcurrency": bad })).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("between 1 and 64"), "{}", r.text());
    }
    put_settings_ok(&api, "multi", json!({ "MaxConcurrency": 4 })).await;

    // Five at once: four share one environment, running together; the fifth needs another.
    let sleep = json!({ "action": "sleep", "seconds": 0.6 });
    let answers = burst(&api, "multi", 5, sleep).await;
    let mut by_env: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        assert_eq!(body["request_id"], r.header("x-amzn-requestid").unwrap());
        by_env
            .entry(body["env_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(body["started_at"].as_f64().unwrap());
    }
    let mut sizes: Vec<usize> = by_env.values().map(Vec::len).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 4], "{by_env:?}");
    let together = by_env.values().find(|v| v.len() == 4).unwrap();
    let spread = together.iter().cloned().fold(f64::MIN, f64::max)
        - together.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        spread < 0.5,
        "the four did not run at the same time: {together:?}"
    );
    let counts = api
        .wait_environments("multi", Duration::from_secs(5), |(_, busy)| busy == 0)
        .await;
    assert_eq!(counts, (2, 0));
    let stats = api.get("/ember/v1/stats?Function=multi").await.json();
    assert_eq!(stats["Functions"][0]["ColdStarts"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_retires_a_shared_environment_without_failing_its_other_calls() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("shared", json!({ "Timeout": 1 })).await;
    put_settings_ok(&api, "shared", json!({ "MaxConcurrency": 2 })).await;
    let slow = {
        let api = api.clone();
        tokio::spawn(async move {
            api.invoke("shared", json!({ "action": "sleep", "seconds": 5 }))
                .await
        })
    };
    api.wait_environments("shared", Duration::from_secs(10), |(_, busy)| busy == 1)
        .await;
    let quick = api
        .invoke("shared", json!({ "action": "sleep", "seconds": 0.1 }))
        .await;
    assert_eq!(quick.status, 200, "{}", quick.text());
    assert_eq!(quick.header("x-amz-function-error"), None);
    let slow = slow.await.unwrap();
    assert_eq!(slow.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(slow.json()["errorType"], "Sandbox.Timedout");
    // Retired with its last call, not returned to the pool.
    let counts = api
        .wait_environments("shared", Duration::from_secs(10), |c| c == (0, 0))
        .await;
    assert_eq!(counts, (0, 0));
    let next = api.invoke("shared", json!({})).await;
    assert_eq!(next.status, 200);
}
