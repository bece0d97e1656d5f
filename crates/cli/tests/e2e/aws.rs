//! The Lambda API as the AWS tools see it: the AWS CLI v1 and boto3, unchanged, against
//! Ember's endpoint.

use std::process::Command;

use crate::require_sandbox;
use crate::support::{KITCHEN, Server, zip_files};

/// Why the AWS tools cannot run here, if they cannot.
fn aws_tools_unavailable() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import awscli, boto3"])
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then_some("the AWS CLI and boto3 are not installed (python3 -m pip install awscli boto3)")
}

macro_rules! require_aws_tools {
    () => {
        require_sandbox!();
        if let Some(why) = aws_tools_unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn boto3(server: &Server, scenario: &str) {
    boto3_with(server, scenario, &[]);
}

/// Runs a boto3 scenario with extra environment (`SUITE_KEY_ID`, `SUITE_SECRET`, …).
fn boto3_with(server: &Server, scenario: &str, env: &[(&str, &str)]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/fixtures/boto3_suite.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(scenario)
        .env("EMBER_ENDPOINT", &server.url)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "boto3 scenario {scenario} failed:\n{stdout}\n{stderr}"
    );
    eprint!("{stdout}");
}

/// Runs `aws lambda …` (the CLI v1 from PyPI) against the server.
fn aws(server: &Server, args: &[&str]) -> (i32, String, String) {
    aws_as(server, ("test", "test"), args)
}

/// Runs `aws lambda …` with the given (key id, secret).
fn aws_as(server: &Server, creds: (&str, &str), args: &[&str]) -> (i32, String, String) {
    aws_service(server, creds, "lambda", args)
}

/// Runs `aws SERVICE …` against the server.
fn aws_service(
    server: &Server,
    (id, secret): (&str, &str),
    service: &str,
    args: &[&str],
) -> (i32, String, String) {
    let out = Command::new("python3")
        .args([
            "-m",
            "awscli",
            "--endpoint-url",
            &server.url,
            "--output",
            "json",
            service,
        ])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok_json(result: (i32, String, String)) -> serde_json::Value {
    let (code, out, err) = result;
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_creates_waits_invokes_updates_and_deletes() {
    require_aws_tools!();
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("fn.zip");
    std::fs::write(&zip, zip_files(&[("app.py", KITCHEN.as_bytes(), 0o644)])).unwrap();
    let fileb = format!("fileb://{}", zip.display());
    let created = ok_json(aws(
        &server,
        &[
            "create-function",
            "--function-name",
            "cli",
            "--runtime",
            "python3.11",
            "--role",
            "r",
            "--handler",
            "app.handler",
            "--zip-file",
            &fileb,
            "--environment",
            "Variables={GREETING=hello}",
        ],
    ));
    assert_eq!(
        created["FunctionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:cli"
    );
    assert_eq!(
        aws(
            &server,
            &["wait", "function-active", "--function-name", "cli"]
        )
        .0,
        0
    );

    let out = dir.path().join("out.json");
    let result = ok_json(aws(
        &server,
        &[
            "invoke",
            "--function-name",
            "cli",
            "--payload",
            r#"{"k":"v"}"#,
            "--log-type",
            "Tail",
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(result["StatusCode"], 200);
    assert_eq!(result["ExecutedVersion"], "$LATEST");
    let log = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        result["LogResult"].as_str().unwrap(),
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&log).contains("REPORT RequestId:"));
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        (body["event"]["k"].as_str(), body["greeting"].as_str()),
        (Some("v"), Some("hello"))
    );

    let failed = ok_json(aws(
        &server,
        &[
            "invoke",
            "--function-name",
            "cli",
            "--payload",
            r#"{"action":"raise"}"#,
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(failed["FunctionError"], "Handled");

    ok_json(aws(
        &server,
        &[
            "update-function-configuration",
            "--function-name",
            "cli",
            "--timeout",
            "9",
        ],
    ));
    assert_eq!(
        aws(
            &server,
            &["wait", "function-updated", "--function-name", "cli"]
        )
        .0,
        0
    );
    let updated = ok_json(aws(
        &server,
        &[
            "update-function-code",
            "--function-name",
            "cli",
            "--zip-file",
            &fileb,
            "--publish",
        ],
    ));
    assert_eq!(updated["Version"], "1");
    assert_eq!(updated["Timeout"], 9);

    // By ARN, percent-encoded in the path by the CLI, and by NAME:QUALIFIER.
    let arn = "arn:aws:lambda:us-east-1:000000000000:function:cli:1";
    let by_arn = ok_json(aws(
        &server,
        &["invoke", "--function-name", arn, out.to_str().unwrap()],
    ));
    assert_eq!(by_arn["ExecutedVersion"], "1");
    let config = ok_json(aws(
        &server,
        &["get-function-configuration", "--function-name", "cli:1"],
    ));
    assert_eq!(
        (config["Version"].as_str(), config["FunctionArn"].as_str()),
        (Some("1"), Some(arn))
    );

    let (code, _, err) = aws(&server, &["get-function", "--function-name", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("(ResourceNotFoundException)"), "{err}");
    let (code, _, err) = aws(
        &server,
        &[
            "update-function-configuration",
            "--function-name",
            "cli",
            "--memory-size",
            "20000",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("(InvalidParameterValueException)")
            && err.contains("between 128 and 10240 MB"),
        "{err}"
    );

    assert_eq!(
        aws(&server, &["delete-function", "--function-name", "cli"]).0,
        0
    );
    assert_eq!(
        ok_json(aws(&server, &["list-functions"]))["Functions"],
        serde_json::json!([])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_lifecycle_with_waiters_tags_pagination_and_settings() {
    require_aws_tools!();
    let server = Server::start(&[]);
    boto3(&server, "lifecycle");
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_versions_aliases_and_weighted_routing() {
    require_aws_tools!();
    let server = Server::start(&[]);
    boto3(&server, "versions_and_aliases");
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_provisioned_concurrency_is_ready_before_traffic_and_spills_over() {
    require_aws_tools!();
    let server = Server::start(&[]);
    boto3(&server, "provisioned_concurrency");
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_sends_events_and_manages_their_settings() {
    require_aws_tools!();
    let server = Server::start(&[]);
    boto3(&server, "async_events");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_invokes_asynchronously() {
    require_aws_tools!();
    let server = Server::start(&[]);
    server
        .api()
        .create_kitchen("later", serde_json::json!({}))
        .await;
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("out.json");
    let result = ok_json(aws(
        &server,
        &[
            "invoke",
            "--function-name",
            "later",
            "--invocation-type",
            "Event",
            "--payload",
            r#"{"action":"print","text":"from the cli"}"#,
            out.to_str().unwrap(),
        ],
    ));
    assert_eq!(result["StatusCode"], 202);
    let api = server.api();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let log = api.get("/ember/v1/functions/later/logs").await.text();
        if log.contains("from the cli") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event never ran: {log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_layers_are_laid_over_opt_in_order() {
    require_aws_tools!();
    let server = Server::start(&[]);
    boto3(&server, "layers");
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_raises_the_typed_exceptions() {
    require_aws_tools!();
    let server = Server::start(&[]);
    boto3(&server, "typed_errors");
}

#[tokio::test(flavor = "multi_thread")]
async fn boto3_sees_throttling_as_too_many_requests() {
    require_aws_tools!();
    let server = Server::start(&["--account-concurrency", "1"]);
    boto3(&server, "throttled");
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_and_aliases_survive_a_restart() {
    require_sandbox!();
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let mut server = Server::start_in(&data, &[]);
    let api = server.api();
    api.create_kitchen("keep", serde_json::json!({ "Publish": true, "Environment": { "Variables": { "GREETING": "v1" } } })).await;
    api.update_configuration(
        "keep",
        serde_json::json!({ "Environment": { "Variables": { "GREETING": "latest" } } }),
    )
    .await;
    let body = serde_json::json!({ "Name": "stable", "FunctionVersion": "1" });
    let r = api
        .request(
            hyper::Method::POST,
            "/2015-03-31/functions/keep/aliases",
            &[],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    server.stop();

    let server = Server::start_in(&data, &[]);
    let api = server.api();
    let r = api.invoke("keep:stable", serde_json::json!({})).await;
    assert_eq!(r.header("x-amz-executed-version"), Some("1"));
    assert_eq!(r.json()["greeting"], "v1");
    assert_eq!(
        api.invoke("keep", serde_json::json!({})).await.json()["greeting"],
        "latest"
    );
}

/// Creates an access key through the `ember` CLI; returns (id, secret).
fn create_key(server: &Server) -> (String, String) {
    let (code, out, err) = crate::support::cli(&server.url, &["keys", "create"]);
    assert_eq!(code, 0, "{out}{err}");
    let value = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_owned()
    };
    (value("AWS_ACCESS_KEY_ID"), value("AWS_SECRET_ACCESS_KEY"))
}

#[tokio::test(flavor = "multi_thread")]
async fn once_a_key_exists_only_requests_signed_by_it_pass() {
    require_aws_tools!();
    let server = Server::start(&[]);
    let (id, secret) = create_key(&server);

    // Unsigned: refused, and the refusal says what to do.
    let r = server.api().get("/2015-03-31/functions").await;
    assert_eq!(
        (r.status, r.error_type()),
        (403, "UnrecognizedClientException")
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("ember keys create")
    );
    // Health stays open for probes.
    assert_eq!(server.api().get("/ember/v1/health").await.status, 200);

    // The same boto3 scenarios, every request signed.
    let signed = [
        ("SUITE_KEY_ID", id.as_str()),
        ("SUITE_SECRET", secret.as_str()),
    ];
    boto3_with(&server, "lifecycle", &signed);
    boto3_with(&server, "typed_errors", &signed);

    // Wrong secret, unknown key.
    boto3_with(
        &server,
        "bad_signature",
        &[
            ("SUITE_KEY_ID", &id),
            ("SUITE_SECRET", "wrong"),
            ("SUITE_EXPECT", "InvalidSignatureException"),
        ],
    );
    boto3_with(
        &server,
        "bad_signature",
        &[
            ("SUITE_KEY_ID", "EMBRUNKNOWN"),
            ("SUITE_SECRET", "x"),
            ("SUITE_EXPECT", "UnrecognizedClientException"),
        ],
    );

    // The ember CLI signs with the same credentials.
    let out = Command::new(crate::support::EMBER)
        .args(["ls"])
        .env("EMBER_ENDPOINT", &server.url)
        .env("EMBER_ACCESS_KEY_ID", &id)
        .env("EMBER_SECRET_ACCESS_KEY", &secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("page-2"));

    // The secret is sealed at rest.
    let db = std::fs::read(server.data_dir.join("ember.db")).unwrap();
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is stored in clear"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn function_urls_are_managed_by_boto3_and_honour_their_auth_type() {
    require_aws_tools!();
    let server = Server::start(&[]);
    let (id, secret) = create_key(&server);
    boto3_with(
        &server,
        "function_urls",
        &[
            ("SUITE_KEY_ID", id.as_str()),
            ("SUITE_SECRET", secret.as_str()),
        ],
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_aliases_layers_and_throttling_work_signed() {
    require_aws_tools!();
    let server = Server::start(&["--account-concurrency", "1"]);
    let (id, secret) = create_key(&server);
    let signed = [
        ("SUITE_KEY_ID", id.as_str()),
        ("SUITE_SECRET", secret.as_str()),
    ];
    boto3_with(&server, "versions_and_aliases", &signed);
    boto3_with(&server, "layers", &signed);
    boto3_with(&server, "throttled", &signed);
    // The AWS CLI, signed with the key, and refused with another secret.
    let list = ok_json(aws_as(&server, (&id, &secret), &["list-functions"]));
    assert!(list["Functions"].as_array().is_some_and(|f| !f.is_empty()));
    let (code, _, err) = aws_as(&server, (&id, "not-the-secret"), &["list-functions"]);
    assert_ne!(code, 0);
    assert!(err.contains("(InvalidSignatureException)"), "{err}");
}

#[test]
fn a_server_will_not_listen_beyond_loopback_without_keys() {
    if let Some(why) = crate::support::sandbox_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let refused = Command::new(crate::support::EMBER)
        .args(["server", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without access keys"),
        "{err}"
    );

    // With a key (made on loopback first), the same server starts.
    let mut local = Server::start_in(&data, &[]);
    create_key(&local);
    local.stop();
    let mut public = std::process::Command::new(crate::support::EMBER)
        .args(["server", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(public.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(
        line.starts_with("Ember is listening on http://0.0.0.0:"),
        "{line}"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(public.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    public.wait().unwrap();
}

fn sqs(server: &Server, args: &[&str]) -> (i32, String, String) {
    aws_service(server, ("test", "test"), "sqs", args)
}

/// A successful `aws sqs …`'s JSON; the CLI prints nothing for an empty answer.
fn sqs_ok(server: &Server, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = sqs(server, args);
    assert_eq!(code, 0, "{out}{err}");
    if out.trim().is_empty() {
        return serde_json::json!({});
    }
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_aws_cli_drives_queues_with_visibility_long_polling_and_a_dead_letter_queue() {
    require_aws_tools!();
    let server = Server::start(&[]);
    sqs_ok(&server, &["create-queue", "--queue-name", "dead"]);
    let policy = r#"{"VisibilityTimeout":"30","RedrivePolicy":"{\"deadLetterTargetArn\":\"arn:aws:sqs:us-east-1:000000000000:dead\",\"maxReceiveCount\":\"2\"}"}"#;
    let url = sqs_ok(
        &server,
        &[
            "create-queue",
            "--queue-name",
            "jobs",
            "--attributes",
            policy,
        ],
    )["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(url.ends_with("/000000000000/jobs"), "{url}");
    let dead = sqs_ok(&server, &["get-queue-url", "--queue-name", "dead"])["QueueUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let (code, _, err) = sqs(&server, &["get-queue-url", "--queue-name", "nope"]);
    assert!(code != 0 && err.contains("NonExistentQueue"), "{err}");

    sqs_ok(
        &server,
        &[
            "send-message",
            "--queue-url",
            &url,
            "--message-body",
            "poison",
        ],
    );
    let receive = |wait: &str| {
        sqs_ok(
            &server,
            &[
                "receive-message",
                "--queue-url",
                &url,
                "--wait-time-seconds",
                wait,
            ],
        )
    };
    // Received: invisible to the next receiver until it is made visible again.
    let first = receive("0");
    let receipt = first["Messages"][0]["ReceiptHandle"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(first["Messages"][0]["Body"], "poison");
    assert_eq!(
        first["Messages"][0]["Attributes"]["ApproximateReceiveCount"],
        "1"
    );
    assert_eq!(receive("0"), serde_json::json!({}));
    sqs_ok(
        &server,
        &[
            "change-message-visibility",
            "--queue-url",
            &url,
            "--receipt-handle",
            &receipt,
            "--visibility-timeout",
            "0",
        ],
    );
    let second = receive("0");
    assert_eq!(
        second["Messages"][0]["Attributes"]["ApproximateReceiveCount"],
        "2"
    );
    // The first receipt is stale now.
    let (code, _, err) = sqs(
        &server,
        &[
            "delete-message",
            "--queue-url",
            &url,
            "--receipt-handle",
            &receipt,
        ],
    );
    assert!(code != 0 && err.contains("ReceiptHandleIsInvalid"), "{err}");
    let receipt = second["Messages"][0]["ReceiptHandle"]
        .as_str()
        .unwrap()
        .to_owned();
    sqs_ok(
        &server,
        &[
            "change-message-visibility",
            "--queue-url",
            &url,
            "--receipt-handle",
            &receipt,
            "--visibility-timeout",
            "0",
        ],
    );
    // Received twice already: it goes to the dead-letter queue instead of a third time.
    assert_eq!(receive("0"), serde_json::json!({}));
    let moved = sqs_ok(&server, &["receive-message", "--queue-url", &dead]);
    assert_eq!(moved["Messages"][0]["Body"], "poison");

    // Long polling: a receive that waits gets a message sent while it waits.
    let sender = {
        let url = url.clone();
        let server_url = server.url.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            Command::new("python3")
                .args([
                    "-m",
                    "awscli",
                    "--endpoint-url",
                    &server_url,
                    "sqs",
                    "send-message",
                ])
                .args(["--queue-url", &url, "--message-body", "late"])
                .env("AWS_ACCESS_KEY_ID", "test")
                .env("AWS_SECRET_ACCESS_KEY", "test")
                .env("AWS_DEFAULT_REGION", "us-east-1")
                .output()
                .unwrap()
        })
    };
    let waited = receive("10");
    assert_eq!(waited["Messages"][0]["Body"], "late", "{waited}");
    assert!(sender.join().unwrap().status.success());

    let batch = sqs_ok(
        &server,
        &[
            "send-message-batch",
            "--queue-url",
            &url,
            "--entries",
            "Id=a,MessageBody=one",
            "Id=b,MessageBody=two",
        ],
    );
    assert_eq!(batch["Successful"].as_array().unwrap().len(), 2);
    let attrs = sqs_ok(
        &server,
        &[
            "get-queue-attributes",
            "--queue-url",
            &url,
            "--attribute-names",
            "All",
        ],
    );
    assert_eq!(attrs["Attributes"]["ApproximateNumberOfMessages"], "2");
    assert_eq!(
        attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"],
        "1"
    );
    sqs_ok(&server, &["purge-queue", "--queue-url", &url]);
    let attrs = sqs_ok(
        &server,
        &[
            "get-queue-attributes",
            "--queue-url",
            &url,
            "--attribute-names",
            "All",
        ],
    );
    assert_eq!(attrs["Attributes"]["ApproximateNumberOfMessages"], "0");
    let (code, _, _) = sqs(&server, &["delete-queue", "--queue-url", &url]);
    assert_eq!(code, 0);
    let listed = sqs_ok(&server, &["list-queues"]);
    assert_eq!(listed["QueueUrls"], serde_json::json!([dead]));
}
