//! AWS's official runtime interface clients, unchanged, as `provided` functions: Python's
//! `awslambdaric`, Node's `aws-lambda-ric` and Rust's `lambda_runtime`. Each package is
//! deployed with `ember deploy`, answers, and reports a handler error in Lambda's shape.
//!
//! The clients come from this host: `awslambdaric` from the `python3` on `PATH` (vendored
//! into the package by `fixtures/vendor.py`), `aws-lambda-ric` from
//! `target/test-deps/node_modules`
//! (`npm install --prefix target/test-deps aws-lambda-ric`),
//! and the Rust function is this crate's example `lambda_runtime_fn`, which `cargo test`
//! builds. CI installs the first two.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::require_sandbox;
use crate::support::{EMBER, Server, cli};

/// The handler every client runs, in its language: echoes the event, or fails with an
/// `InvalidEvent` error when the event has `fail`.
const PYTHON_APP: &str = r#"
class InvalidEvent(Exception):
    pass


def handler(event, context):
    if "fail" in event:
        raise InvalidEvent("the event asked to fail")
    return {"echo": event, "request_id": context.aws_request_id}
"#;

const NODE_APP: &str = r#"
export const handler = async (event, context) => {
  if ("fail" in event) {
    const err = new Error("the event asked to fail");
    err.name = "InvalidEvent";
    throw err;
  }
  return { echo: event, request_id: context.awsRequestId };
};
"#;

/// Deploys `dir` as a `provided` function and checks the answers and the error shape.
async fn deploy_and_check(server: &Server, name: &str, dir: &Path) {
    let (code, _, stderr) = cli(
        &server.url,
        &[
            "deploy",
            dir.to_str().unwrap(),
            "--name",
            name,
            "--runtime",
            "provided.al2023",
            "--memory",
            "256",
        ],
    );
    assert_eq!(code, 0, "deploy {name}: {stderr}");
    let api = server.api();
    for round in 0..2 {
        let r = api.invoke(name, json!({ "round": round })).await;
        assert_eq!(r.status, 200, "{name}: {}", r.text());
        assert_eq!(
            r.header("x-amz-function-error"),
            None,
            "{name}: {}",
            r.text()
        );
        let body = r.json();
        assert_eq!(body["echo"], json!({ "round": round }), "{name}: {body}");
        assert_eq!(
            body["request_id"].as_str(),
            r.header("x-amzn-requestid"),
            "{name}: {body}"
        );
    }
    let r = api.invoke_tail(name, json!({ "fail": true })).await;
    assert_eq!(r.status, 200, "{name}: {}", r.text());
    assert_eq!(r.header("x-amz-function-error"), Some("Handled"), "{name}");
    let err = r.json();
    assert_eq!(err["errorType"], "InvalidEvent", "{name}: {err}");
    assert_eq!(
        err["errorMessage"], "the event asked to fail",
        "{name}: {err}"
    );
    // The environment survived its handler's error.
    let (idle, busy) = api.environments(name).await;
    assert_eq!((idle, busy), (1, 0), "{name}");
}

#[tokio::test(flavor = "multi_thread")]
async fn python_awslambdaric_runs_unchanged() {
    require_sandbox!();
    let dir = tempfile::tempdir().unwrap();
    let vendor = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/fixtures/vendor.py"
        ))
        .arg(dir.path())
        .arg("awslambdaric")
        .output()
        .expect("run python3");
    if vendor.status.code() == Some(3) {
        eprintln!(
            "skipped: {}",
            String::from_utf8_lossy(&vendor.stdout).trim()
        );
        return;
    }
    assert!(vendor.status.success(), "{vendor:?}");
    std::fs::write(dir.path().join("app.py"), PYTHON_APP).unwrap();
    write_bootstrap(
        dir.path(),
        "export PYTHONPATH=/var/task\nexec /usr/bin/python3 -m awslambdaric app.handler\n",
    );
    let server = Server::start(&[]);
    deploy_and_check(&server, "awslambdaric", dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_aws_lambda_ric_runs_unchanged() {
    require_sandbox!();
    let modules = node_modules();
    if !modules.join("aws-lambda-ric").exists() {
        eprintln!(
            "skipped: no aws-lambda-ric in {}: npm install --prefix target/test-deps aws-lambda-ric",
            modules.display()
        );
        return;
    }
    if !Path::new("/usr/bin/node").exists() {
        eprintln!("skipped: /usr/bin/node is missing (apt-get install nodejs)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // What the client needs at run time: its entry point and its built code, with the
    // native part (`dist/rapid-client.node`); not the C++ sources it ships for rebuilding.
    let client = modules.join("aws-lambda-ric");
    let packaged = dir.path().join("node_modules/aws-lambda-ric");
    for part in ["bin", "dist"] {
        copy_tree(&client.join(part), &packaged.join(part));
    }
    std::fs::copy(client.join("package.json"), packaged.join("package.json")).unwrap();
    std::fs::write(dir.path().join("app.mjs"), NODE_APP).unwrap();
    write_bootstrap(
        dir.path(),
        "exec /usr/bin/node /var/task/node_modules/aws-lambda-ric/bin/index.mjs app.handler\n",
    );
    let server = Server::start(&[]);
    deploy_and_check(&server, "aws-lambda-ric", dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_lambda_runtime_runs_unchanged() {
    require_sandbox!();
    // `cargo test` builds the package's examples before it runs any test.
    let binary = Path::new(EMBER)
        .with_file_name("examples")
        .join("lambda_runtime_fn");
    assert!(binary.exists(), "{} was not built", binary.display());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&binary, dir.path().join("bootstrap")).unwrap();
    let server = Server::start(&[]);
    deploy_and_check(&server, "lambda-runtime", dir.path()).await;
}

fn write_bootstrap(dir: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("bootstrap");
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Where the Node client is installed: `$EMBER_TEST_NODE_MODULES`, or the workspace's
/// `target/test-deps/node_modules`.
fn node_modules() -> PathBuf {
    std::env::var_os("EMBER_TEST_NODE_MODULES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-deps/node_modules")
        })
}

/// Copies a directory tree, keeping modes and symbolic links.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}
