//! The `ember` CLI, as a user types it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::require_sandbox;
use crate::support::{EMBER, KITCHEN, Server, cli};

#[tokio::test(flavor = "multi_thread")]
async fn deploy_invoke_list_get_logs_and_remove_through_the_cli() {
    require_sandbox!();
    let server = Server::start(&[]);
    let url = server.url.clone();
    let dir = tempfile::tempdir().unwrap();
    let fn_dir = dir.path().join("greeter");
    std::fs::create_dir(&fn_dir).unwrap();
    std::fs::write(fn_dir.join("app.py"), KITCHEN).unwrap();

    let (code, out, err) = cli(
        &url,
        &[
            "deploy",
            fn_dir.to_str().unwrap(),
            "--memory",
            "256",
            "--env",
            "GREETING=hey",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("deployed greeter"), "{out}");

    let (code, out, err) = cli(
        &url,
        &[
            "invoke",
            "greeter",
            "--payload",
            r#"{"action":"print","text":"printed-by-the-function"}"#,
            "--log",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("printed-by-the-function") && err.contains("REPORT RequestId"),
        "{err}"
    );
    let (code, out, _) = cli(&url, &["invoke", "greeter"]);
    assert_eq!(code, 0);
    let body: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(body["greeting"], "hey");
    assert_eq!(body["memory"], "256");

    // Redeploying with a new setting updates the function in place.
    let (code, _, err) = cli(
        &url,
        &["deploy", fn_dir.to_str().unwrap(), "--timeout", "9"],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = cli(&url, &["get", "greeter"]);
    let config: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (config["Timeout"].as_u64(), config["MemorySize"].as_u64()),
        (Some(9), Some(256))
    );

    let (code, out, _) = cli(&url, &["ls"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[1].starts_with("greeter"),
        "{out}"
    );

    let (code, out, _) = cli(&url, &["logs", "greeter"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("printed-by-the-function") && out.matches("START RequestId").count() == 2,
        "{out}"
    );

    let (code, out, _) = cli(&url, &["rm", "greeter"]);
    assert_eq!((code, out.trim()), (0, "deleted greeter"));
    let (code, _, err) = cli(&url, &["invoke", "greeter"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: ResourceNotFoundException: Function not found"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_streams_new_output_as_it_is_written() {
    require_sandbox!();
    let server = Server::start(&[]);
    let api = server.api();
    api.create_kitchen("chatty", serde_json::json!({})).await;
    let mut follower = Command::new(EMBER)
        .args(["logs", "chatty", "--follow"])
        .env("EMBER_ENDPOINT", &server.url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("REPORT");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    // The follower is connected once the server answers its request; invoke until it sees
    // the output (its subscription may start after the first call's lines).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        api.invoke(
            "chatty",
            serde_json::json!({ "action": "print", "text": "live line" }),
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    follower.kill().unwrap();
    follower.wait().unwrap();
    let seen = reader.join().unwrap();
    assert!(seen.iter().any(|l| l == "live line"), "{seen:?}");
    assert!(
        seen.last().unwrap().starts_with("REPORT RequestId"),
        "{seen:?}"
    );
}

#[test]
fn client_errors_are_one_line_and_exit_non_zero() {
    // Nothing listens on this port: the CLI says so in one line.
    let (code, _, err) = cli("http://127.0.0.1:1", &["ls"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("could not reach the Ember server"), "{err}");
    let (code, _, err) = cli("http://127.0.0.1:1", &["deploy", "/does/not/exist"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: cannot read /does/not/exist"),
        "{err}"
    );
}
