//! Ember's Node.js runtime: handler styles, module kinds, context, logs and errors.

use serde_json::json;

use crate::require_sandbox;
use crate::support::{Server, zip_files};

macro_rules! require_node {
    () => {
        require_sandbox!();
        if !std::path::Path::new("/usr/bin/node").exists() {
            eprintln!("skipped: /usr/bin/node is missing (apt-get install nodejs)");
            return;
        }
    };
}

async fn deploy(
    api: &crate::support::Api,
    name: &str,
    files: &[(&str, &[u8], u32)],
    handler: &str,
) -> crate::support::Response {
    api.create(
        name,
        &zip_files(files),
        json!({ "Runtime": "nodejs20.x", "Handler": handler }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn commonjs_esm_callback_and_nested_handlers_all_answer() {
    require_node!();
    let server = Server::start(&[]);
    let api = server.api();
    let cjs = br#"
let count = 0;
const greet = require('greet');
exports.handler = async (event, context) => {
  count += 1;
  console.log('saw', event.n);
  return { count, greeting: greet('node'), fn: context.functionName, mem: context.memoryLimitInMB,
           arn: context.invokedFunctionArn, id: context.awsRequestId, left: context.getRemainingTimeInMillis() };
};
"#;
    let module = b"module.exports = (who) => `hello ${who}`;\n";
    let r = deploy(
        &api,
        "cjs",
        &[
            ("app.js", cjs, 0o644),
            ("node_modules/greet/index.js", module, 0o644),
        ],
        "app.handler",
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let first = api.invoke_tail("cjs", json!({ "n": 7 })).await;
    let body = first.json();
    assert_eq!(
        (body["count"].as_u64(), body["greeting"].as_str()),
        (Some(1), Some("hello node")),
        "{body}"
    );
    assert_eq!(
        (body["fn"].as_str(), body["mem"].as_str()),
        (Some("cjs"), Some("128"))
    );
    assert_eq!(
        body["arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:cjs"
    );
    assert_eq!(body["id"].as_str(), first.header("x-amzn-requestid"));
    assert!(body["left"].as_u64().unwrap() > 1000);
    let line = first
        .log_tail()
        .lines()
        .find(|l| l.contains("saw"))
        .unwrap_or_default()
        .to_owned();
    let parts: Vec<&str> = line.split('\t').collect();
    assert_eq!(
        (parts.len(), parts[1], parts[2], parts[3]),
        (4, body["id"].as_str().unwrap(), "INFO", "saw 7"),
        "{line}"
    );
    assert_eq!(
        api.invoke("cjs", json!({})).await.json()["count"],
        2,
        "module state did not survive"
    );

    let esm = b"export const handler = async (event) => ({ esm: true, event });\n";
    assert_eq!(
        deploy(&api, "esm", &[("index.mjs", esm, 0o644)], "index.handler")
            .await
            .status,
        201
    );
    assert_eq!(
        api.invoke("esm", json!({ "x": 1 })).await.json(),
        json!({ "esm": true, "event": { "x": 1 } })
    );

    let callback = b"exports.go = (event, context, callback) => { setTimeout(() => callback(null, { late: event.v }), 20); };\n";
    assert_eq!(
        deploy(
            &api,
            "cb",
            &[("src/lib/fn.js", callback, 0o644)],
            "src/lib/fn.go"
        )
        .await
        .status,
        201
    );
    assert_eq!(
        api.invoke("cb", json!({ "v": 3 })).await.json(),
        json!({ "late": 3 })
    );

    let promise = b"exports.handler = (event) => Promise.resolve(event.v * 2);\n";
    assert_eq!(
        deploy(
            &api,
            "promise",
            &[("app.js", promise, 0o644)],
            "app.handler"
        )
        .await
        .status,
        201
    );
    assert_eq!(api.invoke("promise", json!({ "v": 21 })).await.json(), 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn node_errors_have_lambdas_shapes() {
    require_node!();
    let server = Server::start(&[]);
    let api = server.api();
    let throwing =
        b"class BadInput extends Error { constructor(m) { super(m); this.name = 'BadInput'; } }\n\
exports.handler = async (event) => { if (event.cb) return; throw new BadInput('no good'); };\n\
exports.viaCallback = (event, context, callback) => callback(new TypeError('bad type'));\n";
    assert_eq!(
        deploy(
            &api,
            "throws",
            &[("app.js", throwing, 0o644)],
            "app.handler"
        )
        .await
        .status,
        201
    );
    let r = api.invoke_tail("throws", json!({})).await;
    assert_eq!(r.header("x-amz-function-error"), Some("Handled"));
    let err = r.json();
    assert_eq!(
        (err["errorType"].as_str(), err["errorMessage"].as_str()),
        (Some("BadInput"), Some("no good"))
    );
    assert!(
        err["trace"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("/var/task/app.js")),
        "{err}"
    );
    assert!(
        r.log_tail().contains("\tERROR\tBadInput: no good"),
        "{}",
        r.log_tail()
    );

    assert_eq!(
        deploy(
            &api,
            "cb-err",
            &[("app.js", throwing, 0o644)],
            "app.viaCallback"
        )
        .await
        .status,
        201
    );
    assert_eq!(
        api.invoke("cb-err", json!({})).await.json()["errorType"],
        "TypeError"
    );

    let cases: &[(&str, &[u8], &str, &str)] = &[
        (
            "missing",
            b"",
            "nothere.handler",
            "Runtime.ImportModuleError",
        ),
        (
            "bad-require",
            b"require('nope-not-installed');",
            "app.handler",
            "Runtime.ImportModuleError",
        ),
        (
            "syntax",
            b"exports.handler = async (e => {",
            "app.handler",
            "Runtime.UserCodeSyntaxError",
        ),
        (
            "no-export",
            b"exports.other = 1;",
            "app.handler",
            "Runtime.HandlerNotFound",
        ),
        (
            "init-throws",
            b"throw new RangeError('at init');",
            "app.handler",
            "RangeError",
        ),
    ];
    for (name, source, handler, expected) in cases {
        assert_eq!(
            deploy(&api, name, &[("app.js", source, 0o644)], handler)
                .await
                .status,
            201
        );
        let r = api.invoke(name, json!({})).await;
        assert_eq!(
            r.header("x-amz-function-error"),
            Some("Unhandled"),
            "{name}"
        );
        assert_eq!(r.json()["errorType"], *expected, "{name}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_invocations_in_one_node_environment_log_under_their_own_request_ids() {
    require_node!();
    let server = Server::start(&[]);
    let api = server.api();
    let code = br#"
const envId = Math.random().toString(36).slice(2);
export const handler = async (event, context) => {
  console.log('begin', context.awsRequestId);
  await new Promise((r) => setTimeout(r, 300));
  console.log('end', context.awsRequestId);
  return { env: envId, id: context.awsRequestId };
};
"#;
    let r = deploy(&api, "conc", &[("app.mjs", code, 0o644)], "app.handler").await;
    assert_eq!(r.status, 201, "{}", r.text());
    let settings = api
        .request(
            hyper::Method::PUT,
            "/ember/v1/functions/conc/settings",
            &[],
            serde_json::to_vec(&json!({ "MaxConcurrency": 3 })).unwrap(),
        )
        .await;
    assert_eq!(settings.status, 200, "{}", settings.text());
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.invoke("conc", json!({})).await })
        })
        .collect();
    let mut envs = std::collections::BTreeSet::new();
    let mut ids = Vec::new();
    for call in calls {
        let r = call.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        envs.insert(r.json()["env"].as_str().unwrap().to_owned());
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(envs.len(), 1, "three calls, one environment: {envs:?}");
    let log = api.get("/ember/v1/functions/conc/logs").await.text();
    for id in &ids {
        // Each line's request-id column is the invocation that printed it, interleaved or not.
        for word in ["begin", "end"] {
            let line = format!("\t{id}\tINFO\t{word} {id}");
            assert!(log.contains(&line), "no {line:?} in\n{log}");
        }
    }
}
